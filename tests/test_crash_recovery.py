"""A worker that dies or is stopped mid-batch, on the real dev server with a worker process:
SIGKILL costs seconds (heartbeats), not the batch's minute; SIGTERM costs no retry (graceful
shutdown); and a batch committed by an attempt that was lost is counted once."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from temporalio import activity
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.catalog import SqliteCatalog
from activities.dummyjson import DummyJSONClient
from activities.models import BatchRequest, BatchResult
from activities.sync_products import SyncProductsActivities
from client.settings import Settings
from devtools.mirror import Faults, Mirror
from jobs.sync_products import SyncProductsInput, SyncReport
from tests.conftest import worker_process
from tests.test_sync_products import rows
from worker import build_worker
from workflows.sync_products import BATCH_TIMEOUT, SyncProductsWorkflow

LATENCY_MS = 2000  # every /products answer: a batch is in flight long enough to kill its worker
BIG_BATCHES = 100  # 194 products: two batches (offsets 0 and 100), both in flight at once


async def until(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def start_sync(
    env: WorkflowEnvironment, settings: Settings, **kwargs: object
) -> WorkflowHandle[SyncProductsWorkflow, SyncReport]:
    return await env.client.start_workflow(
        SyncProductsWorkflow.run,
        SyncProductsInput.model_validate(kwargs),
        id=f"sync-crash-{uuid.uuid4().hex[:8]}",
        task_queue=settings.temporal_task_queue,
    )


async def batches_in_flight(mirror: Mirror) -> None:
    """The count has been answered and both batches' pages are being served (slowly)."""
    await until(lambda: mirror.stats["requests"] >= 3)


@dataclass
class ActivityRun:
    """One activity of a workflow, from its history: scheduled, the attempt that ended it."""

    name: str
    scheduled: datetime
    started: datetime
    attempt: int
    identity: str
    last_timeout: TimeoutType.ValueType  # why the attempt before failed (unspecified: none)
    completed: bool


async def activity_runs(
    handle: WorkflowHandle[SyncProductsWorkflow, SyncReport],
) -> list[ActivityRun]:
    scheduled: dict[int, tuple[str, datetime]] = {}
    runs: dict[int, ActivityRun] = {}
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = (attrs.activity_type.name, event.event_time.ToDatetime())
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            s = event.activity_task_started_event_attributes
            name, at = scheduled[s.scheduled_event_id]
            runs[s.scheduled_event_id] = ActivityRun(
                name=name,
                scheduled=at,
                started=event.event_time.ToDatetime(),
                attempt=s.attempt,
                identity=s.identity,
                last_timeout=s.last_failure.timeout_failure_info.timeout_type,
                completed=False,
            )
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            runs[event.activity_task_completed_event_attributes.scheduled_event_id].completed = True
    return list(runs.values())


async def test_a_worker_killed_mid_batch_is_replaced_within_seconds(
    dev_env: WorkflowEnvironment, settings: Settings, mirror: Mirror, tmp_path: Path
) -> None:
    mirror.set_faults(Faults(latency_ms=LATENCY_MS))
    proc = worker_process(dev_env, settings, tmp_path)
    try:
        handle = await start_sync(dev_env, settings, batch_size=BIG_BATCHES)
        await batches_in_flight(mirror)
    finally:
        proc.kill()  # SIGKILL: no shutdown, no goodbye to the server
        proc.wait()
    killed = time.monotonic()
    async with build_worker(dev_env.client, settings):  # the worker that takes over
        # (with only the batch's start-to-close timeout, its retry would start after 60 s)
        report = await asyncio.wait_for(handle.result(), 40)
    took = time.monotonic() - killed
    assert report.status == "completed"
    assert (report.created, report.updated, report.unchanged) == (194, 0, 0)

    batches = [r for r in await activity_runs(handle) if r.name == "sync_products_batch"]
    assert len(batches) == 2
    for b in batches:  # each was retried by the new worker once the heartbeats stopped
        assert b.completed and b.attempt == 2
        assert b.last_timeout == TimeoutType.TIMEOUT_TYPE_HEARTBEAT
        assert not b.identity.startswith(f"{proc.pid}@")
        assert b.started - b.scheduled < timedelta(seconds=15)  # not BATCH_TIMEOUT (60 s)
    # heartbeat timeout, retry interval, the slow page again, the dead worker's sticky timeout
    assert took < 20, f"the sync took {took:.1f}s after the kill"
    assert timedelta(seconds=60) <= BATCH_TIMEOUT  # what it would have cost


async def test_sigterm_lets_the_batches_in_flight_finish_on_that_worker(
    dev_env: WorkflowEnvironment, settings: Settings, mirror: Mirror, tmp_path: Path
) -> None:
    """A deploy's SIGTERM: the worker stops polling, finishes what it runs (attempt 1 succeeds,
    no attempt 2) and exits 0; another worker carries on with the rest of the sync."""
    mirror.set_faults(Faults(latency_ms=LATENCY_MS))
    proc = worker_process(dev_env, settings, tmp_path)
    try:
        handle = await start_sync(dev_env, settings, batch_size=BIG_BATCHES)
        await batches_in_flight(mirror)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0
    async with build_worker(dev_env.client, settings):
        report = await asyncio.wait_for(handle.result(), 60)
    assert report.status == "completed" and report.created == 194

    # (the removal of products gone from the source runs after, on the next worker)
    runs = [r for r in await activity_runs(handle) if r.name != "remove_missing_products"]
    assert [r.name for r in runs] == ["count_source_products"] + ["sync_products_batch"] * 2
    for r in runs:
        assert r.completed and r.attempt == 1
        assert r.identity.startswith(f"{proc.pid}@")  # finished by the worker that was stopped


async def test_a_second_sigterm_stops_the_worker_at_once(
    dev_env: WorkflowEnvironment, settings: Settings, mirror: Mirror, tmp_path: Path
) -> None:
    mirror.set_faults(Faults(latency_ms=10_000))
    log = tmp_path / "worker.log"
    proc = worker_process(dev_env, settings, tmp_path, log=log)
    try:
        handle = await start_sync(dev_env, settings, batch_size=BIG_BATCHES)
        await until(lambda: mirror.stats["requests"] >= 1)  # the count is in flight
        proc.send_signal(signal.SIGTERM)
        await until(lambda: "Beginning worker shutdown" in log.read_text(errors="replace"))
        assert proc.poll() is None  # waiting for the running activity
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        mirror.set_faults(Faults())
    assert code == 1
    await handle.terminate()


class LosesEachFirstAttemptAfterCommit(SyncProductsActivities):
    """Each batch's first attempt commits, then is lost, as when its worker is killed between
    the commit and telling Temporal: Temporal runs the batch again."""

    @activity.defn(name="sync_products_batch")
    def sync_products_batch(self, req: BatchRequest) -> BatchResult:
        result = super().sync_products_batch(req)
        if activity.info().attempt == 1:
            raise ApplicationError("worker lost after the commit")
        return result


async def test_a_batch_committed_by_a_lost_attempt_is_counted_once(
    dev_env: WorkflowEnvironment, settings: Settings, catalog: SqliteCatalog, mirror: Mirror
) -> None:
    acts = LosesEachFirstAttemptAfterCommit(DummyJSONClient(mirror.url), catalog)
    worker = Worker(
        dev_env.client,
        task_queue=settings.temporal_task_queue,
        workflows=[SyncProductsWorkflow],
        activities=[
            acts.count_source_products,
            acts.sync_products_batch,
            acts.remove_missing_products,
        ],
        activity_executor=ThreadPoolExecutor(max_workers=4),
    )
    async with worker:
        handle = await start_sync(dev_env, settings, retry_initial_interval_s=0.05)
        report = await handle.result()
    # the retries saw their batch in the catalog; without the stored outcome they would report
    # "created 0, unchanged 194" on an empty catalog
    assert report.status == "completed"
    assert (report.fetched, report.created, report.updated, report.unchanged) == (194, 194, 0, 0)
    batches = [r for r in await activity_runs(handle) if r.name == "sync_products_batch"]
    assert len(batches) == 13 and all(b.attempt == 2 for b in batches)
    assert rows(catalog, "SELECT count(*) AS n FROM products")[0]["n"] == 194
