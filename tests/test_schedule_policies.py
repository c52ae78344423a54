"""Overlap policies, after_completion and a real outage's catch-up, through the real loop.

Jitter and the catch-up window are decisions of the pure core (tests/test_scheduling.py).

Jobs are `echo` with `sleep_s`, so a fire's child is still running when the next fire comes.
The loop is observed with env.sleep + describe rather than awaiting its end.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio.testing import WorkflowEnvironment

from client.settings import Settings
from scheduling.plan import fire_id
from tests.test_fire_cost import events
from tests.test_schedule_loop import spec, start_loop, wait_for
from worker import build_worker
from workflows.models import ScheduleView
from workflows.schedule import ScheduleWorkflow

HOUR = timedelta(hours=1)


async def observe(
    env: WorkflowEnvironment,
    settings: Settings,
    until: timedelta,
    fired: int,
    fires_per_run: int = 100,
    **fields: Any,
) -> tuple[datetime, str, ScheduleView]:
    """Start a loop at a whole second, let `until` of schedule time pass, describe it once it
    has started `fired` fires.

    The wait matters on a busy machine: the test server may reach `until` between two tasks of
    a fire that is due before it (a cancel sent, the next child not yet started).
    """
    begin = (await env.get_current_time()).replace(microsecond=0) + timedelta(seconds=1)
    s = spec(start_at=begin, **fields)
    async with build_worker(env.client, settings):
        handle = await start_loop(env, settings, s, fires_per_run=fires_per_run)
        await env.sleep(until + timedelta(seconds=1))

        async def settled() -> bool:
            return (await handle.query(ScheduleWorkflow.describe)).state.fires >= fired

        await wait_for(settled)
        view = await handle.query(ScheduleWorkflow.describe)
        await handle.terminate("observed")
    return begin, s.name, view


async def started(env: WorkflowEnvironment, name: str, fire: datetime) -> tuple[datetime, str]:
    return await started_id(env, f"{name}/{fire_id(fire)}")


async def started_id(env: WorkflowEnvironment, child_id: str) -> tuple[datetime, str]:
    desc = await env.client.get_workflow_handle(child_id).describe()
    return desc.start_time, desc.status.name if desc.status else "?"


async def test_skip_drops_a_fire_while_the_previous_job_runs(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    begin, name, view = await observe(
        ts_env,
        settings,
        2 * HOUR + timedelta(minutes=5),
        fired=2,
        every="1h",
        args={"sleep_s": 4800},
    )
    # 0h runs until 1h20: the 1h fire is skipped; the 2h fire runs
    assert view.state.fires == 2 and view.state.skipped == {"overlap": 1}
    assert [r.outcome for r in view.state.recent] == ["started", "skipped: overlap", "started"]
    assert (await started(ts_env, name, begin + 2 * HOUR))[0] - (begin + 2 * HOUR) < timedelta(
        seconds=5
    )


async def test_buffer_one_runs_the_waiting_fire_when_the_job_finishes(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    begin, name, view = await observe(
        ts_env,
        settings,
        timedelta(minutes=170),
        fired=3,
        every="1h",
        overlap="buffer_one",
        args={"sleep_s": 4800},
    )
    # A: 0h-1h20. 1h buffered, starts at 1h20 (until 2h40). 2h buffered, starts at 2h40.
    assert view.state.fires == 3
    for fire, expected in ((HOUR, timedelta(minutes=80)), (2 * HOUR, timedelta(minutes=160))):
        start, _ = await started(ts_env, name, begin + fire)
        assert abs(start - (begin + expected)) < timedelta(seconds=5), (fire, start - begin)


async def test_allow_all_runs_fires_side_by_side(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    begin, name, view = await observe(
        ts_env,
        settings,
        HOUR + timedelta(minutes=5),
        fired=2,
        every="1h",
        overlap="allow_all",
        args={"sleep_s": 4800},
    )
    assert view.state.fires == 2 and view.state.skipped == {}
    assert len(view.state.running) == 2
    assert (await started(ts_env, name, begin))[1] == "RUNNING"


async def test_cancel_other_cancels_the_running_job(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    begin, name, view = await observe(
        ts_env,
        settings,
        HOUR + timedelta(minutes=5),
        fired=2,
        every="1h",
        overlap="cancel_other",
        args={"sleep_s": 4800},
    )
    assert view.state.fires == 2
    assert (await started(ts_env, name, begin))[1] == "CANCELED"
    assert (await started(ts_env, name, begin + HOUR))[1] == "RUNNING"
    assert list(view.state.running) == [f"{name}/{fire_id(begin + HOUR)}"]


async def test_after_completion_waits_every_after_the_job_finished(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    begin, name, view = await observe(
        ts_env,
        settings,
        timedelta(minutes=200),
        fired=3,
        every="1h",
        after_completion=True,
        args={"sleep_s": 1800},
    )
    # 0h runs 30 min; next at 1h30 (every after it finished), runs to 2h; next at 3h
    assert view.state.fires == 3
    for fire in (begin + timedelta(minutes=90), begin + timedelta(minutes=180)):
        start, _ = await started(ts_env, name, fire)
        assert abs(start - fire) < timedelta(seconds=5)


async def test_jitter_delays_each_fire_within_the_room_the_core_gives(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    """The loop delays fires by the core's jitter, drawn with `workflow.random()`."""
    begin, name, view = await observe(ts_env, settings, 4 * HOUR, fired=3, every="1h", jitter="2h")
    assert view.state.fires >= 3
    delays = [
        (await started(ts_env, name, begin + k * HOUR))[0] - (begin + k * HOUR) for k in range(3)
    ]
    assert all(timedelta(0) <= d < HOUR for d in delays), delays  # never up to the next fire
    assert len(set(delays)) > 1  # random, not a fixed offset


async def test_a_buffered_trigger_stays_a_trigger(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    """A manual trigger that buffer_one holds back runs later as what it is: `-manual` id, not
    counted toward the limit, the cursor left where the schedule is."""
    begin = (await ts_env.get_current_time()).replace(microsecond=0) + timedelta(seconds=1)
    s = spec(start_at=begin, every="1h", overlap="buffer_one", limit=5, args={"sleep_s": 4800})
    async with build_worker(ts_env.client, settings):
        handle = await start_loop(ts_env, settings, s)

        async def loop_state() -> Any:
            return (await handle.query(ScheduleWorkflow.describe)).state

        async def first_fire_running() -> bool:
            return (await loop_state()).fires == 1

        async def trigger_buffered() -> bool:
            return (await loop_state()).buffered is not None

        await wait_for(first_fire_running)
        await handle.execute_update(ScheduleWorkflow.trigger)
        await wait_for(trigger_buffered)
        # 0h runs until 1h20; the 1h fire finds the buffer taken; the trigger runs at 1h20
        await ts_env.sleep(timedelta(minutes=90))
        view = await handle.query(ScheduleWorkflow.describe)
        await handle.terminate("observed")
    state = view.state
    assert (state.fires, state.triggered, view.remaining) == (1, 1, 4)
    assert state.cursor == begin + HOUR and state.skipped == {"overlap": 1}
    ran = [r for r in state.recent if r.outcome == "started"]
    assert len(ran) == 2 and ran[1].children[0].endswith("-manual")
    start, _ = await started_id(ts_env, ran[1].children[0])
    assert abs(start - (begin + timedelta(minutes=80))) < timedelta(seconds=5)


async def _worker_away(
    env: WorkflowEnvironment, settings: Settings, **fields: Any
) -> tuple[datetime, ScheduleView]:
    """Dev server, real time: fire once, stop the worker ~7 s, start another one.

    The time-skipping server cannot do this: it stops its clock while a workflow task waits
    for a worker. So this is the one place a real sleep stands in for a real outage. The new
    worker comes exactly 1.5 s after a fire slot, so that slot is 1.5 s old on its return.
    """
    every = timedelta(seconds=3)
    begin = (await env.get_current_time()).replace(microsecond=0) + timedelta(seconds=1)
    s = spec(every="3s", start_at=begin, **fields)
    handle = await start_loop(env, settings, s)

    async def state() -> Any:
        return (await handle.query(ScheduleWorkflow.describe)).state

    async def fired_once() -> bool:
        """The first fire ran and its job reported back: no job of it is left for the next
        worker, where it could race the catch-up fire and make it an overlap skip."""
        st = await state()
        return bool(st.fires) and not st.running

    async with build_worker(env.client, settings, max_cached_workflows=0):
        await wait_for(fired_once)
    now = await env.get_current_time()
    slots = (now + timedelta(seconds=7) - begin) // every + 1
    slot = begin + slots * every  # the latest slot missed while away
    await asyncio.sleep((slot + timedelta(seconds=1.5) - now).total_seconds())
    async with build_worker(env.client, settings, max_cached_workflows=0):

        async def settled() -> bool:
            st = await state()
            return bool(st.missed) and any(r.scheduled >= slot for r in st.recent)

        await wait_for(settled)
        view = await handle.query(ScheduleWorkflow.describe)
        await handle.terminate("observed")
    return slot, view


async def test_catch_up_runs_only_the_latest_missed_fire(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    slot, view = await _worker_away(dev_env, settings)
    state = view.state
    assert state.skipped == {"missed": state.missed} and state.missed >= 2
    ran = [r for r in state.recent if r.outcome == "started"]
    assert ran[-1].scheduled == slot  # the latest missed slot ran, late, once
    assert timedelta(seconds=1.4) < ran[-1].actual - slot < timedelta(seconds=3)
    assert len(ran) == 2  # the first fire, then only that one: no burst


async def test_overlap_is_judged_across_continue_as_new(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    """Dev server, real time (the test server cannot continue-as-new past a running child):
    a new run after every fire still knows the previous fire's job is running."""
    begin = (await dev_env.get_current_time()).replace(microsecond=0) + timedelta(seconds=1)
    # 2 s of slack on either side, for a busy machine: 0 s runs until 6 s, so the 4 s fire (in a
    # new run) is skipped; the 8 s fire runs
    s = spec(every="4s", start_at=begin, limit=2, args={"sleep_s": 6})
    async with build_worker(dev_env.client, settings):
        summary = await (await start_loop(dev_env, settings, s, fires_per_run=1)).result()
        assert summary.fires == 2 and summary.skipped == {"overlap": 1}
        assert summary.last_fire == begin + timedelta(seconds=8)
        await dev_env.client.get_workflow_handle(
            f"{s.name}/{fire_id(begin + timedelta(seconds=8))}"
        ).result()
        # The first job outlived its run: asked to report, it signalled the run after it.
        first = await events(dev_env.client, f"{s.name}/{fire_id(begin)}")
    assert first["WORKFLOW_EXECUTION_SIGNALED"] == 1
    assert first["SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED"] == 1
