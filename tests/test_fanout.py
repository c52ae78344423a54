"""Fan-out on the dev server: one job per connection with its own key and catalog part, the key
never in any history, and a 501-input fire (two pages) far inside Temporal's limits."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.connections import NewConnection
from client.loops import control
from client.settings import Settings
from devtools.mirror import Faults, Mirror
from jobs.sync_products import SyncReport
from scheduling.plan import fire_id
from worker import build_worker
from workflows.models import FanOutResult
from workflows.schedule import ScheduleWorkflow

from .conftest import connection_store
from .test_schedule_loop import spec, start_loop, wait_for
from .test_secrets import payloads_in

KEYS = {"acme": "sk-acme-4f1c", "globex": "sk-globex-77ad", "initech": "sk-initech-9e02"}


async def history_text(client: Client, wf_id: str) -> str:
    """A workflow's whole history as `temporal workflow show --output json` gives it, plus every
    payload decrypted and decoded, so a search sees inputs, results and memos."""
    text = (await client.get_workflow_handle(wf_id).fetch_history()).to_json()
    found = [json_format.ParseDict(p, Payload()) for p in payloads_in(json.loads(text))]
    codec = client.data_converter.payload_codec
    plain = await codec.decode(found) if codec else found
    return text + "\n".join(p.data.decode("utf-8", "replace") for p in plain)


async def history_length(client: Client, wf_id: str) -> int:
    return (
        await client.get_workflow_handle(wf_id).describe()
    ).raw_description.workflow_execution_info.history_length


async def settled(handle: WorkflowHandle[Any, Any]) -> bool:
    """The loop fired and heard back from every job (a query that times out: not yet)."""
    try:
        view = await handle.query(ScheduleWorkflow.describe, rpc_timeout=timedelta(seconds=10))
    except RPCError:
        return False
    return view.state.fires >= 1 and not view.state.running


async def test_each_connection_syncs_with_its_own_key_into_its_own_part_of_the_catalog(
    dev_env: WorkflowEnvironment, settings: Settings, mirror: Mirror
) -> None:
    mirror.set_api_keys(KEYS.values())
    store = connection_store(settings)
    for cid, scope in (("acme", "beauty"), ("globex", "beauty"), ("initech", "furniture")):
        store.add(NewConnection(id=cid, name=cid, api_key=KEYS[cid], scope=scope))  # type: ignore[arg-type]
    store.add(NewConnection(id="umbrella", name="u", api_key="sk-wrong-0000", scope="groceries"))  # type: ignore[arg-type]
    s = spec(job="sync-products", every="1h", args={"batch_size": 2})
    async with build_worker(dev_env.client, settings):
        loop = await start_loop(dev_env, settings, s)
        await wait_for(lambda: settled(loop), timeout=60)
        view = await loop.query(ScheduleWorkflow.describe)
        await control(loop, ScheduleWorkflow.delete)
        await loop.result()
        (fire,) = [r for r in view.state.recent if r.outcome == "started"]
        # Read while the worker runs: a job signals its schedule just before it completes, so a
        # settled loop can still have jobs whose last task is yet to run.
        reports = {
            c.rsplit("/", 1)[1]: await dev_env.client.get_workflow_handle(
                c, result_type=SyncReport
            ).result()
            for c in fire.children
        }
    base = f"{s.name}/{fire_id(fire.scheduled)}"
    assert fire.children == [f"{base}/{c}" for c in ("acme", "globex", "initech", "umbrella")]
    for cid in ("acme", "globex", "initech"):
        assert reports[cid].status == "completed" and reports[cid].created == 5, cid
    # the wrong key: a 401 for that connection only, not retried, shown by the schedule
    bad = reports["umbrella"]
    assert bad.status == "failed" and bad.error is not None
    assert "connection umbrella" in bad.error and "HTTP 401" in bad.error
    assert view.state.job_errors == {f"{base}/umbrella": bad.error}
    assert mirror.stats["401"] == 1
    # each key was really sent, by its own connection's jobs only
    assert set(mirror.requests_by_key) == set(KEYS.values())
    # two connections with the same scope hold their own rows: nothing overwritten
    with sqlite3.connect(settings.catalog_path) as conn:
        rows = conn.execute("SELECT tenant, count(*) FROM products GROUP BY tenant").fetchall()
    assert dict(rows) == {"acme": 5, "globex": 5, "initech": 5}
    # no credential anywhere in any history: the inputs carry the connection id only
    for wf_id in [loop.id, *fire.children]:
        text = await history_text(dev_env.client, wf_id)
        assert '"connection_id"' in text  # the payloads were really searched
        for key in [*KEYS.values(), "sk-wrong-0000"]:
            assert key not in text, (key, wf_id)


async def first_attempt(client: Client, wf_id: str) -> int:
    """The attempt number of a workflow id's latest run (2 = Temporal ran it again)."""
    history = await client.get_workflow_handle(wf_id).fetch_history()
    return history.events[0].workflow_execution_started_event_attributes.attempt


async def test_retries_run_a_failed_sync_again_but_not_a_refused_key(
    dev_env: WorkflowEnvironment, settings: Settings, mirror: Mirror
) -> None:
    """`retries = 1`: acme's first attempt gets a 500 and syncs nothing, so Temporal runs the
    job again and it completes; umbrella's 401 cannot be fixed by running again, so it runs once.
    The loop hears once from each job: its end, after its last attempt."""
    mirror.set_api_keys([KEYS["acme"]])
    store = connection_store(settings)
    store.add(NewConnection(id="acme", name="a", api_key=KEYS["acme"], scope="beauty"))  # type: ignore[arg-type]
    store.add(NewConnection(id="umbrella", name="u", api_key="sk-wrong-0000", scope="beauty"))  # type: ignore[arg-type]
    mirror.set_faults(Faults(fail_next=1))  # one 500: acme's first request (401s come first)
    s = spec(job="sync-products", every="1h", retries=1, args={"max_retries": 0})
    async with build_worker(dev_env.client, settings):
        loop = await start_loop(dev_env, settings, s)
        await wait_for(lambda: settled(loop), timeout=60)
        view = await loop.query(ScheduleWorkflow.describe)
        history = (await loop.fetch_history()).events
        await control(loop, ScheduleWorkflow.delete)
        (fire,) = [r for r in view.state.recent if r.outcome == "started"]
        acme, umbrella = fire.children
        reports = [
            await dev_env.client.get_workflow_handle(c, result_type=SyncReport).result()
            for c in (acme, umbrella)
        ]
    assert mirror.stats["500"] == 1 and mirror.stats["401"] == 1
    assert reports[0].status == "completed" and reports[0].created == 5
    assert await first_attempt(dev_env.client, acme) == 2
    assert reports[1].status == "failed" and "HTTP 401" in (reports[1].error or "")
    assert await first_attempt(dev_env.client, umbrella) == 1
    assert view.state.job_errors == {umbrella: reports[1].error}
    ends = [e for e in history if e.HasField("child_workflow_execution_completed_event_attributes")]
    assert len(ends) == 2  # one per job, not one per attempt
    # A retried job's last attempt signals as well (an ask to report may have gone to the first).
    signals = [e for e in history if e.HasField("workflow_execution_signaled_event_attributes")]
    assert len(signals) == 1


async def test_failed_jobs_of_a_large_fire_reach_the_schedule(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    """Past 100 inputs the loop starts one fan-out workflow; its jobs' failures still show in
    `describe` (failed jobs), as a small fire's do."""
    s = spec(every="1h", expansion="numbers", args={"count": 120, "fail": True})
    async with build_worker(dev_env.client, settings):
        loop = await start_loop(dev_env, settings, s)
        await wait_for(lambda: settled(loop), timeout=60)
        view = await loop.query(ScheduleWorkflow.describe)
        await control(loop, ScheduleWorkflow.delete)
        (fire,) = [r for r in view.state.recent if r.outcome == "started"]
        (base,) = fire.children
        result = await dev_env.client.get_workflow_handle(base, result_type=FanOutResult).result()
    assert fire.jobs == 120 and view.state.job_failures == 1
    assert (result.jobs, result.completed, result.failed) == (120, 0, 120)
    (error,) = view.state.job_errors.values()
    assert error.startswith("120 of 120 jobs failed; first: ") and "asked to fail" in error


async def test_a_two_page_fire_starts_every_job_and_no_history_nears_the_limits(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    s = spec(every="1d", expansion="numbers", args={"count": 501})  # pages of 500 and 1
    query = f"WorkflowType = 'FanOutWorkflow' AND ScheduleName = '{s.name}'"
    async with build_worker(dev_env.client, settings, max_concurrent_workflow_tasks=50):
        loop = await start_loop(dev_env, settings, s)
        # Wait on the fan-out itself, found by its search attribute: a query to the loop would
        # queue behind 501 jobs' workflow tasks on the same task queue.
        found: list[Any] = []

        async def fan_out_started() -> bool:
            found[:] = [w async for w in dev_env.client.list_workflows(query)]
            return bool(found)

        await wait_for(fan_out_started, timeout=60)
        base = found[0].id
        result = await dev_env.client.get_workflow_handle(base, result_type=FanOutResult).result()
        await wait_for(lambda: settled(loop), timeout=60)
        view = await loop.query(ScheduleWorkflow.describe)
        await control(loop, ScheduleWorkflow.delete)
        await loop.result()
    (fire,) = [r for r in view.state.recent if r.outcome == "started"]
    assert base == f"{s.name}/{fire_id(fire.scheduled)}"
    assert fire.children == [base] and fire.jobs == 501  # the loop tracks one fan-out child
    assert (result.jobs, result.completed, result.failed) == (501, 501, 0)
    for n in (0, 499, 500):
        job = await dev_env.client.get_workflow_handle(f"{base}/n{n:06d}").result()
        assert job["args"] == {"n": n}
    pages = [f"{base}/page-{p:04d}" for p in range(2)]
    lengths = await asyncio.gather(
        *(history_length(dev_env.client, w) for w in [loop.id, base, *pages])
    )
    # 500 jobs a page: 3 events per job plus workflow tasks, a tenth of the 50k limit at most;
    # the loop and the fan-out workflow stay tiny whatever the fan-out
    assert max(lengths) < 5_000, lengths
    assert lengths[0] < 100 and lengths[1] < 100, lengths
    assert timedelta(0) <= fire.actual - fire.scheduled < timedelta(seconds=30)


async def test_a_cached_schedule_reuses_a_fresh_result_and_runs_again_after_the_ttl(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    """Fires 3 s apart, results fresh for 4 s: fires 1 and 3 run, fires 2 and 4 reuse them."""
    s = spec(every="3s", limit=4, cache="ping", cache_ttl="4s", args={"who": "ada"})
    async with build_worker(dev_env.client, settings):
        loop = await start_loop(dev_env, settings, s)
        summary = await loop.result()
        view = await loop.query(ScheduleWorkflow.describe)
    assert summary.fires == 4
    (cache_id,) = {c for r in view.state.recent for c in r.children}
    assert cache_id.startswith("cache/ping/")

    async def runs() -> int:  # visibility may lag a moment behind
        return len([w async for w in dev_env.client.list_workflows(f'WorkflowId = "{cache_id}"')])

    await wait_for(lambda: _at_least(runs, 2))
    assert await runs() == 2


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)
