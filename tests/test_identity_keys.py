"""Connections written straight into SQLite, past `connections add`, on the dev server: an id that
is no valid key fails only its own job of a fire, naming it; a key that is no HTTP header value
fails its sync naming the connection, and no part of it reaches a report or a history."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.connections import NewConnection
from activities.dummyjson import BAD_KEY, DummyJSONClient, scrub
from client.loops import control
from client.settings import Settings
from devtools.mirror import Mirror
from jobs.sync_products import SyncProductsInput, SyncReport
from scheduling.plan import fire_id
from worker import build_worker
from workflows.schedule import ScheduleWorkflow
from workflows.sync_products import SyncProductsWorkflow

from .conftest import connection_store
from .test_fanout import history_text, settled
from .test_schedule_loop import spec, start_loop, wait_for

LEAKY_KEY = "sk_line1_9d2f\r\nX-Leak: sk_line2_71ab"
LEAKY_PARTS = ("sk_line1_9d2f", "sk_line2_71ab", "X-Leak")


def insert_raw(settings: Settings, connection_id: str, api_key: str) -> None:
    """A row as an older tool or a hand-made fix writes it: plain key, no model in the way (the
    worker's store seals the key when it opens the database)."""
    connection_store(settings)  # the schema
    with sqlite3.connect(settings.catalog_path) as conn:
        conn.execute(
            "INSERT INTO connections VALUES (?, 'dummyjson', 'Raw', ?, 'beauty', 1, ?, ?)",
            (connection_id, api_key, *["2026-01-01T00:00:00+00:00"] * 2),
        )


async def test_a_connection_id_that_is_no_key_fails_only_its_own_job(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    store = connection_store(settings)
    for cid in ("acme", "globex"):
        store.add(NewConnection(id=cid, name=cid, api_key=f"sk-{cid}", scope="beauty"))  # type: ignore[arg-type]
    insert_raw(settings, "../evil", "sk-evil")
    s = spec(job="sync-products", every="1h", args={"batch_size": 50})
    async with build_worker(dev_env.client, settings):
        loop = await start_loop(dev_env, settings, s)
        await wait_for(lambda: settled(loop), timeout=60)
        view = await loop.query(ScheduleWorkflow.describe)
        await control(loop, ScheduleWorkflow.delete)
        (fire,) = view.state.recent
        reports = [
            await dev_env.client.get_workflow_handle(c, result_type=SyncReport).result()
            for c in fire.children
        ]
    assert fire.outcome == "started" and view.state.failed == 0  # the fire itself ran
    base = f"{s.name}/{fire_id(fire.scheduled)}"
    bad_child, *good = fire.children
    assert good == [f"{base}/acme", f"{base}/globex"]
    assert bad_child.startswith(f"{base}/bad-id.evil."), bad_child
    bad, *synced = reports
    assert [(r.status, r.created) for r in synced] == [("completed", 5), ("completed", 5)]
    assert bad.status == "failed" and bad.created == 0 and bad.error is not None
    assert "connection '../evil': its id is not valid" in bad.error
    assert "`starter.py connections remove '../evil'`" in bad.error  # and how to mend it
    assert view.state.job_errors == {bad_child: bad.error}  # what `describe` lists


async def test_a_key_that_is_no_header_value_fails_its_sync_and_is_never_quoted(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    insert_raw(settings, "leaky", LEAKY_KEY)
    wf_id = f"sync-leaky-{uuid.uuid4().hex[:8]}"
    async with build_worker(dev_env.client, settings):
        report = await dev_env.client.execute_workflow(
            SyncProductsWorkflow.run,
            SyncProductsInput(connection_id="leaky", max_retries=2),
            id=wf_id,
            task_queue=settings.temporal_task_queue,
        )
        history = await history_text(dev_env.client, wf_id)
    assert report.status == "failed" and report.error is not None
    assert report.error.startswith("connection leaky: ")
    assert "connection 'leaky': its stored api_key is not valid" in report.error
    assert '"connection_id"' in history  # the payloads were really searched
    for text in (report.model_dump_json(), history):
        for part in LEAKY_PARTS:
            assert part not in text, part
    # refused for good at the first attempt: not retried with the key each time
    events = (await dev_env.client.get_workflow_handle(wf_id).fetch_history()).events
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert attempts == [1]


@pytest.mark.parametrize("key", [LEAKY_KEY, "sk_nul_0a1b\x00sk_after_nul", "sk_caf\u00e9_0a1b"])
def test_the_source_client_refuses_such_a_key_before_any_request(mirror: Mirror, key: str) -> None:
    """The store refuses these rows already; the HTTP client does not count on it."""
    client = DummyJSONClient(mirror.url, api_key=key)
    with pytest.raises(ApplicationError) as caught:
        client.count()
    error = caught.value
    assert error.non_retryable and error.type == "InvalidApiKey" and BAD_KEY in error.message
    assert error.__cause__ is None  # httpx's error quotes the header: it rides nowhere
    assert scrub(error.message, key) == error.message  # no rendering of the key in it
    assert mirror.stats["requests"] == 0  # nothing was sent


def test_scrub_removes_every_rendering_of_a_key() -> None:
    """The last line of defence for any error text that might quote the key."""
    h11_style = f"Illegal header value {('Bearer ' + LEAKY_KEY).encode()!r}"
    assert "sk_line1_9d2f" in h11_style  # what httpx raised with such a key
    for text in (h11_style, f"GET /x: {LEAKY_KEY!r}", f"raw {LEAKY_KEY} text"):
        assert all(part not in scrub(text, LEAKY_KEY) for part in LEAKY_PARTS), text
    assert scrub("GET /products: HTTP 500", "sk_fine_key") == "GET /products: HTTP 500"
