"""What a fire costs Temporal, read from the loop's and its jobs' histories (time-skipping server).

A fire whose input is known runs no activity; a user expansion is one local activity; a job's end
reaches the loop as its completion event, with no signal either way; a wake that leaves the fire
time as it was keeps the timer. (The signal path after continue-as-new is in
test_schedule_policies.py: the test server cannot continue-as-new past a running child.)
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from client.loops import control
from client.settings import Settings
from scheduling.plan import fire_id
from tests.test_schedule_loop import child_status, spec, start_loop, wait_for
from worker import build_worker
from workflows.models import PauseRequest
from workflows.schedule import ScheduleWorkflow


async def events(client: Client, wf_id: str) -> Counter[str]:
    """How many events of each type the workflow's latest run has, by short name; markers also
    by kind (`MARKER:core_patch`, `MARKER:core_local_activity`)."""
    history = await client.get_workflow_handle(wf_id).fetch_history()
    counts = Counter(
        EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events
    )
    for e in history.events:
        if e.HasField("marker_recorded_event_attributes"):
            counts[f"MARKER:{e.marker_recorded_event_attributes.marker_name}"] += 1
    return counts


@pytest.mark.parametrize("sandbox", ["strict", "fast"])
async def test_a_fire_with_known_input_runs_no_activity_and_no_signal(
    ts_env: WorkflowEnvironment, settings: Settings, sandbox: str
) -> None:
    """Also with the workflow modules shared between runs (WORKFLOW_SANDBOX=fast, production)."""
    settings = settings.model_copy(update={"workflow_sandbox": sandbox})
    begin = (await ts_env.get_current_time()).replace(microsecond=0) + timedelta(seconds=1)
    s = spec(every="1h", start_at=begin, limit=3)
    async with build_worker(ts_env.client, settings):
        summary = await (await start_loop(ts_env, settings, s)).result()
        job = await events(ts_env.client, f"{s.name}/{fire_id(begin)}")
    loop = await events(ts_env.client, f"schedule/{s.name}")
    assert summary.fires == 3  # the loop ends at its third fire, maybe before that job does
    assert loop["ACTIVITY_TASK_SCHEDULED"] == 0 and loop["MARKER:core_local_activity"] == 0
    assert (
        loop["CHILD_WORKFLOW_EXECUTION_COMPLETED"] >= 2 and loop["WORKFLOW_EXECUTION_SIGNALED"] == 0
    )
    assert loop["TIMER_STARTED"] <= 3 and loop["TIMER_CANCELED"] == 0  # one per fire at most
    assert job["SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED"] == 0
    assert job["WORKFLOW_TASK_COMPLETED"] == 1


async def test_a_user_expansion_is_one_local_activity_per_fire(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    begin = (await ts_env.get_current_time()).replace(microsecond=0) + timedelta(seconds=1)
    s = spec(every="1h", start_at=begin, limit=2, expansion="numbers", args={"count": 3})
    async with build_worker(ts_env.client, settings):
        summary = await (await start_loop(ts_env, settings, s)).result()
    loop = await events(ts_env.client, f"schedule/{s.name}")
    assert summary.fires == 2
    assert loop["START_CHILD_WORKFLOW_EXECUTION_INITIATED"] == 6
    assert loop["ACTIVITY_TASK_SCHEDULED"] == 0 and loop["WORKFLOW_EXECUTION_SIGNALED"] == 0
    assert loop["MARKER:core_local_activity"] == 2


async def test_a_wake_that_keeps_the_fire_time_keeps_the_timer(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    now = (await ts_env.get_current_time()).replace(microsecond=0)
    s = spec(every="1d", start_at=now + timedelta(days=1))
    async with build_worker(ts_env.client, settings):
        handle = await start_loop(ts_env, settings, s)
        await control(handle, ScheduleWorkflow.pause, PauseRequest(note="a wake"))
        await control(handle, ScheduleWorkflow.resume, PauseRequest())
        await control(handle, ScheduleWorkflow.trigger)
        kept = await events(ts_env.client, handle.id)
        await control(
            handle,
            ScheduleWorkflow.update,
            s.model_copy(update={"start_at": now + timedelta(days=2)}),
        )
        moved = await events(ts_env.client, handle.id)
        await handle.terminate("test done")
    assert kept["WORKFLOW_EXECUTION_UPDATE_COMPLETED"] == 3
    assert kept["TIMER_STARTED"] == 1 and kept["TIMER_CANCELED"] == 0
    assert moved["TIMER_STARTED"] == 2 and moved["TIMER_CANCELED"] == 1


async def test_a_terminated_job_is_known_to_have_ended(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    """A terminated job sends no signal; its completion event still tells the loop, and the
    job is listed as failed. (Dev server: the test server records no such event.)"""
    begin = (await dev_env.get_current_time()).replace(microsecond=0) + timedelta(seconds=1)
    s = spec(every="1h", start_at=begin, args={"sleep_s": 7200})
    async with build_worker(dev_env.client, settings):
        handle = await start_loop(dev_env, settings, s)
        job = dev_env.client.get_workflow_handle(f"{s.name}/{fire_id(begin)}")

        async def job_running() -> bool:
            return await child_status(dev_env.client, job.id) == WorkflowExecutionStatus.RUNNING

        await wait_for(job_running)
        await job.terminate("by hand")

        async def ended() -> bool:
            return not (await handle.query(ScheduleWorkflow.describe)).state.running

        await wait_for(ended)
        state = (await handle.query(ScheduleWorkflow.describe)).state
        await handle.terminate("test done")
    assert state.job_errors == {job.id: "terminated"} and state.job_failures == 1
    assert state.fires == 1
