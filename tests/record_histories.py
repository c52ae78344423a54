"""Record workflow histories from real runs, for the replay tests (tests/test_replay.py).

    .venv/bin/python -m tests.record_histories      # writes the missing tests/histories/*.json

Runs on its own dev server, mirror and worker, a few seconds of real time. Record new histories
when you add a workflow or a code path. An existing file is never overwritten: it stands for
workflows started by older code, which must keep replaying (that is what `workflow.patched` is
for); delete a file yourself to record it anew.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.connections import NewConnection
from client.settings import Settings
from devtools.mirror import Faults, Mirror
from jobs.sessions import issue_token
from jobs.sync_products import SyncProductsInput
from scheduling.spec import ScheduleSpec, SessionRef
from tests.conftest import (
    BIN,
    SEARCH_ATTRIBUTES,
    STARTUP,
    TEST_CONNECTIONS_KEY,
    connection_store,
)
from worker import build_worker
from workflows.models import PauseRequest, ScheduleInput
from workflows.schedule import ScheduleWorkflow
from workflows.sync_products import SyncProductsWorkflow

OUT = Path(__file__).resolve().parent / "histories"


async def save(client: Client, name: str, workflow_id: str, run_id: str | None = None) -> None:
    if (OUT / f"{name}.json").exists():
        print(f"kept {name}.json (recorded by older code)")
        return
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    (OUT / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}.json ({len(history.events)} events)")


async def wait_fires(handle: WorkflowHandle, n: int) -> None:  # type: ignore[type-arg]
    while (await handle.query(ScheduleWorkflow.describe)).state.fires < n:
        await asyncio.sleep(0.1)


async def record(client: Client, settings: Settings, mirror: Mirror) -> None:
    q = settings.temporal_task_queue
    mirror.set_faults(Faults(fail_skips=[15], throttle_next=1, retry_after_s=0))
    await client.execute_workflow(
        SyncProductsWorkflow.run,
        SyncProductsInput(max_retries=1, retry_initial_interval_s=0.05),
        id="rec-sync-products",
        task_queue=q,
    )
    await save(client, "sync_products_partial", "rec-sync-products")

    # a loop that fires, is paused, skips, resumes, is triggered, updated, continues-as-new
    spec = ScheduleSpec(name="rec-loop", job="echo", every="1s", limit=5, args={"n": 1})
    handle = await client.start_workflow(
        ScheduleWorkflow.run,
        ScheduleInput(spec=spec, fires_per_run=3),
        id="schedule/rec-loop",
        task_queue=q,
    )
    first_run = handle.result_run_id
    await wait_fires(handle, 1)
    await handle.execute_update(ScheduleWorkflow.pause, PauseRequest(note="recording"))
    await asyncio.sleep(1.5)  # let a paused fire go by
    await handle.execute_update(ScheduleWorkflow.resume, PauseRequest())
    await handle.execute_update(ScheduleWorkflow.trigger)
    await handle.execute_update(ScheduleWorkflow.update, spec.model_copy(update={"every": "2s"}))
    await handle.result()
    await save(client, "schedule_first_run", "schedule/rec-loop", first_run)
    await save(client, "schedule_last_run", "schedule/rec-loop")

    # overlap: skip and cancel_other, with jobs that outlast the interval
    for policy in ("skip", "cancel_other"):
        spec = ScheduleSpec(
            name=f"rec-{policy}",
            job="echo",
            every="1s",
            limit=3,
            overlap=policy,
            args={"sleep_s": 1.5},
        )
        await client.execute_workflow(
            ScheduleWorkflow.run,
            ScheduleInput(spec=spec),
            id=f"schedule/rec-{policy}",
            task_queue=q,
            execution_timeout=timedelta(seconds=60),
        )
        await save(client, f"schedule_overlap_{policy.replace('_', '-')}", f"schedule/rec-{policy}")
    child = [w async for w in client.list_workflows("WorkflowType = 'EchoJobWorkflow'")][0]
    await client.get_workflow_handle(child.id).result()
    await save(client, "echo_job", child.id)
    await record_keyed(client, settings, mirror)


async def record_keyed(client: Client, settings: Settings, mirror: Mirror) -> None:
    """Since keyed expansion: per-connection fan-out, a large fan-out, cache and session."""
    q = settings.temporal_task_queue
    mirror.set_faults(Faults())
    mirror.set_api_keys(["rec-key-a", "rec-key-b"])
    store = connection_store(settings)
    for cid, scope in (("rec-a", "beauty"), ("rec-b", "furniture")):
        store.add(NewConnection(id=cid, name=cid, api_key=f"rec-key-{cid[-1]}", scope=scope))  # type: ignore[arg-type]

    spec = ScheduleSpec(name="rec-keyed", job="sync-products", every="1s", limit=2)
    handle = await client.start_workflow(
        ScheduleWorkflow.run, ScheduleInput(spec=spec), id="schedule/rec-keyed", task_queue=q
    )
    await handle.execute_update(ScheduleWorkflow.trigger)
    await handle.result()
    await save(client, "schedule_per_connection", handle.id)
    child = [w async for w in client.list_workflows("WorkflowId STARTS_WITH 'rec-keyed/'")][0]
    await client.get_workflow_handle(child.id).result()
    await save(client, "sync_products_connection", child.id)

    spec = ScheduleSpec(
        name="rec-fanout", job="echo", every="1h", limit=1, expansion="numbers", args={"count": 120}
    )
    await client.execute_workflow(
        ScheduleWorkflow.run, ScheduleInput(spec=spec), id="schedule/rec-fanout", task_queue=q
    )
    fan_out = [w async for w in client.list_workflows("WorkflowType = 'FanOutWorkflow'")][0]
    await client.get_workflow_handle(fan_out.id).result()
    await save(client, "schedule_fanout", "schedule/rec-fanout")
    await save(client, "fanout", fan_out.id)
    await save(client, "fanout_page", f"{fan_out.id}/page-0000")

    token = issue_token(settings.session_key(), "shop", {"user": 7}, timedelta(hours=1))
    spec = ScheduleSpec(
        name="rec-cached",
        job="echo",
        every="1s",
        limit=2,
        cache="rec",
        session=SessionRef(tag="shop", token=token),
        args={"user": "$Session{shop}{user}"},
    )
    await client.execute_workflow(
        ScheduleWorkflow.run, ScheduleInput(spec=spec), id="schedule/rec-cached", task_queue=q
    )
    await save(client, "schedule_cached_session", "schedule/rec-cached")
    cached = [w async for w in client.list_workflows("WorkflowId STARTS_WITH 'cache/rec/'")][0]
    await save(client, "echo_job_session", cached.id)
    await record_retries(client, settings, mirror)


async def save_attempts(client: Client, name: str, workflow_id: str) -> None:
    """Every run of a workflow id that Temporal retried: `<name>_attempt<N>.json`."""
    for run in [w async for w in client.list_workflows(f'WorkflowId = "{workflow_id}"')]:
        events = (
            await client.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history()
        ).events
        attempt = events[0].workflow_execution_started_event_attributes.attempt
        await save(client, f"{name}_attempt{attempt}", workflow_id, run.run_id)


async def record_retries(client: Client, settings: Settings, mirror: Mirror) -> None:
    """Since job retries: a job of a schedule fails its first attempt (untold) then completes;
    a sync that synced nothing raises to be run again."""
    q = settings.temporal_task_queue
    spec = ScheduleSpec(
        name="rec-retries", job="echo", every="1h", retries=1, args={"fail_attempts": 1}
    )
    handle = await client.start_workflow(
        ScheduleWorkflow.run, ScheduleInput(spec=spec), id="schedule/rec-retries", task_queue=q
    )
    while not (view := await handle.query(ScheduleWorkflow.describe)).state.recent or (
        view.state.running
    ):
        await asyncio.sleep(0.1)
    await handle.execute_update(ScheduleWorkflow.delete)
    await handle.result()
    await save(client, "schedule_job_retried", handle.id)
    (child,) = view.state.recent[-1].children
    await client.get_workflow_handle(child).result()
    await save_attempts(client, "echo_job_retried", child)

    mirror.set_faults(Faults(fail_next=1))
    await client.execute_workflow(
        SyncProductsWorkflow.run,
        SyncProductsInput(connection_id="rec-a", max_retries=0),
        id="rec-sync-rerun",
        task_queue=q,
        retry_policy=RetryPolicy(maximum_attempts=2, initial_interval=timedelta(seconds=0.1)),
    )
    await save_attempts(client, "sync_products_rerun", "rec-sync-rerun")


async def record_buffered_trigger(client: Client, settings: Settings) -> None:
    """buffer_one holds a manual trigger back; it runs as a trigger when the job ends. Jittered."""
    spec = ScheduleSpec(
        name="rec-buffered",
        job="echo",
        every="3s",
        jitter="500ms",
        limit=2,
        overlap="buffer_one",
        args={"sleep_s": 2},
    )
    handle = await client.start_workflow(
        ScheduleWorkflow.run,
        ScheduleInput(spec=spec),
        id="schedule/rec-buffered",
        task_queue=settings.temporal_task_queue,
    )
    await wait_fires(handle, 1)
    await handle.execute_update(ScheduleWorkflow.trigger)
    summary = await handle.result()
    assert summary.triggered == 1, summary
    await save(client, "schedule_buffered_trigger", "schedule/rec-buffered")


async def record_removal(client: Client, settings: Settings, mirror: Mirror) -> None:
    """A complete sync after the source stopped listing a product: removed from the catalog."""
    mirror.reset()
    mirror.remove_product(3)
    report = await client.execute_workflow(
        SyncProductsWorkflow.run,
        SyncProductsInput(retry_initial_interval_s=0.05),
        id="rec-sync-removed",
        task_queue=settings.temporal_task_queue,
    )
    assert report.status == "completed", report
    await save(client, "sync_products_removed", "rec-sync-removed")


async def record_cheap_fires(client: Client, settings: Settings) -> None:
    """Since cheap fires: jobs' ends by completion event, a job handed over across
    continue-as-new (asked to signal), the overlap check on it, a kept timer, a local expansion."""
    spec = ScheduleSpec(
        name="rec-cheap", job="echo", every="1s", limit=4, overlap="skip", args={"sleep_s": 2.5}
    )
    handle = await client.start_workflow(
        ScheduleWorkflow.run,
        ScheduleInput(spec=spec, fires_per_run=2),
        id="schedule/rec-cheap",
        task_queue=settings.temporal_task_queue,
    )
    first_run = handle.result_run_id
    await wait_fires(handle, 1)
    await handle.execute_update(ScheduleWorkflow.pause, PauseRequest(note="a wake"))
    await handle.execute_update(ScheduleWorkflow.resume, PauseRequest())
    await handle.result()
    await save(client, "schedule_cheap_first_run", "schedule/rec-cheap", first_run)
    await save(client, "schedule_cheap_last_run", "schedule/rec-cheap")
    async for job in client.list_workflows("WorkflowType = 'EchoJobWorkflow'"):
        if job.id.startswith("rec-cheap/"):
            events = (await client.get_workflow_handle(job.id).fetch_history()).events
            if any(e.HasField("workflow_execution_signaled_event_attributes") for e in events):
                await save(client, "echo_job_handed_over", job.id)
                break
    else:
        raise AssertionError("no job of rec-cheap ran across a continue-as-new")
    spec = ScheduleSpec(
        name="rec-cheap-expansion",
        job="echo",
        every="1s",
        limit=2,
        expansion="numbers",
        args={"count": 2},
    )
    await client.execute_workflow(
        ScheduleWorkflow.run,
        ScheduleInput(spec=spec),
        id="schedule/rec-cheap-expansion",
        task_queue=settings.temporal_task_queue,
    )
    await save(client, "schedule_cheap_expansion", "schedule/rec-cheap-expansion")


async def main() -> None:
    OUT.mkdir(exist_ok=True)
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_startup_timeout=STARTUP,
    )
    mirror = Mirror().start()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            dummyjson_base_url=mirror.url,
            catalog_db=Path(tmp) / "catalog.db",
            temporal_task_queue="record",
            session_secret="record-" + "x" * 32,
            connections_key=TEST_CONNECTIONS_KEY,  # type: ignore[arg-type]
        )
        async with build_worker(env.client, settings):
            await record(env.client, settings, mirror)
            await record_buffered_trigger(env.client, settings)
            await record_removal(env.client, settings, mirror)
            await record_cheap_fires(env.client, settings)
    mirror.stop()
    await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # temporalio/sdk-python#300
