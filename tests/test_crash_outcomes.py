"""What a batch did is committed with its write: a retry of a batch that an earlier attempt
committed reports that write instead of re-planning; old outcomes are pruned. Heartbeats run
while an activity works and stop with it. Activities called in-process, as a worker runs them."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from temporalio.testing import ActivityEnvironment

from activities.catalog import OUTCOME_RETENTION, BatchKey, SqliteCatalog
from activities.dummyjson import DummyJSONClient
from activities.models import BatchRequest, BatchResult
from activities.sync_products import SyncProductsActivities, heartbeating
from devtools.mirror import Mirror
from tests.test_sync_products import rows


@pytest.fixture
def acts(mirror: Mirror, catalog: SqliteCatalog) -> SyncProductsActivities:
    return SyncProductsActivities(DummyJSONClient(mirror.url), catalog)


def attempt(run_id: str, n: int) -> ActivityEnvironment:
    """The activity context of attempt `n` at a batch of sync run `run_id`."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, workflow_id="sync-products/x", workflow_run_id=run_id, attempt=n
    )
    return env


def batch(acts: SyncProductsActivities, env: ActivityEnvironment, **req: object) -> BatchResult:
    request = BatchRequest.model_validate({"offset": 15, "limit": 15, **req})
    result: BatchResult = env.run(acts.sync_products_batch, request)
    return result


def test_a_retry_after_a_committed_attempt_reports_that_write(
    acts: SyncProductsActivities, catalog: SqliteCatalog, mirror: Mirror
) -> None:
    first = batch(acts, attempt("run-1", 1))
    assert (first.fetched, first.created, first.unchanged) == (15, 15, 0)
    requests = len(mirror.log)

    # attempt 1's worker died after its commit: attempt 2 says what attempt 1 wrote, and does
    # not even fetch the page again
    assert batch(acts, attempt("run-1", 2)) == first
    assert len(mirror.log) == requests

    # another sync run plans afresh: the same products are unchanged now
    again = batch(acts, attempt("run-2", 1))
    assert (again.created, again.unchanged) == (0, 15)
    assert rows(catalog, "SELECT count(*) AS n FROM products")[0]["n"] == 15


def test_an_attempt_racing_a_lost_one_writes_nothing_and_reports_its_outcome(
    acts: SyncProductsActivities, catalog: SqliteCatalog
) -> None:
    """A retry that started before the lost attempt's commit (it fetched first, then waited for
    the write lock) finds the outcome inside its own transaction."""
    done = batch(acts, attempt("run-1", 1))
    called = []

    def outcome(plan: object) -> str:
        called.append(plan)
        return "never stored"

    stored = catalog.sync_batch_once(
        BatchKey("sync-products/x/run-1", 15), [], tenant="default", outcome=outcome
    )
    assert BatchResult.model_validate_json(stored) == done and not called


def test_a_dry_run_stores_no_outcome(acts: SyncProductsActivities, catalog: SqliteCatalog) -> None:
    plan = batch(acts, attempt("run-1", 1), dry_run=True)
    assert plan.created == 15 and plan.examples["create"]
    assert rows(catalog, "SELECT count(*) AS n FROM batch_outcomes")[0]["n"] == 0
    assert batch(acts, attempt("run-1", 2), dry_run=True) == plan  # planned again: the same


def test_outcomes_are_kept_for_the_retention_then_pruned(
    acts: SyncProductsActivities, catalog: SqliteCatalog
) -> None:
    batch(acts, attempt("old", 1), offset=0)
    batch(acts, attempt("recent", 1), offset=0)
    now = datetime.now(UTC)
    with catalog.db.transaction() as conn:
        for run, age in (
            ("old", OUTCOME_RETENTION + timedelta(minutes=1)),
            ("recent", timedelta(hours=1)),
        ):
            conn.execute(
                text("UPDATE batch_outcomes SET recorded_at = :at WHERE sync_run = :run"),
                {"at": (now - age).isoformat(), "run": f"sync-products/x/{run}"},
            )
    batch(acts, attempt("new", 1))  # a write prunes what is past the retention
    runs = {r["sync_run"] for r in rows(catalog, "SELECT sync_run FROM batch_outcomes")}
    assert runs == {"sync-products/x/recent", "sync-products/x/new"}


def test_heartbeats_run_while_the_block_does_and_stop_with_it() -> None:
    beats: list[float] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(time.monotonic())

    def slow_step() -> None:
        with heartbeating(every_s=0.05):
            time.sleep(0.5)  # a page that takes longer than a heartbeat interval

    env.run(slow_step)
    count = len(beats)
    assert count >= 5  # one at once, then every 0.05 s
    assert not [t for t in threading.enumerate() if t.name == "heartbeat"]
    time.sleep(0.2)
    assert len(beats) == count  # none after the activity ended


def test_heartbeating_outside_an_activity_does_nothing() -> None:
    with heartbeating(every_s=0.01):
        time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name == "heartbeat"]
