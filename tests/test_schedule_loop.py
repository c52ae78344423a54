"""The schedule loop on the time-skipping server: hours and months of firing in milliseconds."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from client.settings import Settings
from scheduling.plan import fire_id
from scheduling.spec import ScheduleSpec
from worker import build_worker
from workflows.models import ScheduleInput, ScheduleSummary
from workflows.schedule import ScheduleWorkflow


def spec(**fields: Any) -> ScheduleSpec:
    return ScheduleSpec.model_validate(
        {"name": f"t-{uuid.uuid4().hex[:8]}", "job": "echo", **fields}
    )


async def start_loop(
    env: WorkflowEnvironment, settings: Settings, s: ScheduleSpec, **inp: Any
) -> WorkflowHandle[ScheduleWorkflow, ScheduleSummary]:
    """Start a schedule loop as the starter does, on the test's own task queue."""
    return await env.client.start_workflow(
        ScheduleWorkflow.run,
        ScheduleInput(spec=s, **inp),
        id=f"schedule/{s.name}",
        task_queue=settings.temporal_task_queue,
    )


async def run_loop(
    env: WorkflowEnvironment,
    settings: Settings,
    s: ScheduleSpec,
    fires: list[datetime],
    **inp: Any,
) -> ScheduleSummary:
    """Run a loop to its end and check its children while the worker still runs them.

    (A child left with a pending task when the worker stops would hold the time-skipping
    server's clock still for every later test.)
    """
    async with build_worker(env.client, settings):
        summary = await (await start_loop(env, settings, s, **inp)).result()
        await assert_children(env.client, s.name, fires)
    return summary


async def child_status(client: Client, child_id: str) -> WorkflowExecutionStatus | None:
    try:
        return (await client.get_workflow_handle(child_id).describe()).status
    except RPCError:
        return None


async def assert_children(client: Client, name: str, fires: list[datetime]) -> None:
    """A child ran for each fire time, started at that time; waits for each to finish."""
    for fire in fires:
        child = client.get_workflow_handle(f"{name}/{fire_id(fire)}")
        with contextlib.suppress(WorkflowFailureError):
            await child.result()
        desc = await child.describe()
        assert abs(desc.start_time - fire) < timedelta(seconds=5), (fire, desc.start_time)


async def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> None:
    """Poll a condition (not a sleep standing in for one)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


HOUR = timedelta(hours=1)


async def future_midnight(env: WorkflowEnvironment, days: int = 1) -> datetime:
    now = await env.get_current_time()
    return (now + timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)


async def test_every_two_minutes_fires_at_exact_times_for_hours(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    start = await future_midnight(ts_env)
    fires = [start + timedelta(minutes=2 * k) for k in range(90)]  # three simulated hours
    s = spec(cron="*/2 * * * *", start_at=start, limit=90)
    summary = await run_loop(ts_env, settings, s, fires)
    assert (summary.fires, summary.reason) == (90, "limit reached")
    assert summary.last_fire == fires[-1]
    after_limit = fires[-1] + timedelta(minutes=2)
    assert await child_status(ts_env.client, f"{s.name}/{fire_id(after_limit)}") is None


async def test_every_interval_counts_elapsed_time_from_start(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    start = (await future_midnight(ts_env)) + timedelta(seconds=17)
    fires = [start + timedelta(seconds=90 * k) for k in range(4)]
    s = spec(every="90s", start_at=start, limit=4)
    summary = await run_loop(ts_env, settings, s, fires)
    assert summary.fires == 4 and summary.last_fire == fires[-1]


async def test_nothing_fires_before_start_at(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    start = (await future_midnight(ts_env)) + timedelta(minutes=30)
    fires = [start + timedelta(minutes=30), start + timedelta(minutes=90)]
    s = spec(cron="0 * * * *", start_at=start, limit=2)
    summary = await run_loop(ts_env, settings, s, fires)
    assert summary.last_fire == fires[-1]
    before = start - timedelta(minutes=30)
    assert await child_status(ts_env.client, f"{s.name}/{fire_id(before)}") is None


async def test_limit_three_starts_exactly_three_children_then_completes(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    start = await future_midnight(ts_env)
    fires = [start + timedelta(minutes=k) for k in range(4)]
    s = spec(cron="* * * * *", start_at=start, limit=3)
    summary = await run_loop(ts_env, settings, s, fires[:3])
    assert summary.fires == 3 and summary.reason == "limit reached"
    loop = ts_env.client.get_workflow_handle(f"schedule/{s.name}")
    assert (await loop.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert await child_status(ts_env.client, f"{s.name}/{fire_id(fires[3])}") is None


async def test_failing_jobs_never_stop_the_schedule(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    start = await future_midnight(ts_env)
    fires = [start + timedelta(minutes=10 * k) for k in range(3)]
    s = spec(every="10m", start_at=start, limit=3, args={"fail": True})
    summary = await run_loop(ts_env, settings, s, fires)
    assert summary.fires == 3
    for fire in fires:
        status = await child_status(ts_env.client, f"{s.name}/{fire_id(fire)}")
        assert status == WorkflowExecutionStatus.FAILED


async def test_continue_as_new_keeps_the_count(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    start = await future_midnight(ts_env)
    fires = [start + timedelta(hours=k) for k in range(5)]
    s = spec(every="1h", start_at=start, limit=5)
    summary = await run_loop(ts_env, settings, s, fires, fires_per_run=2)
    assert summary.fires == 5 and summary.reason == "limit reached"
    loop = ts_env.client.get_workflow_handle(f"schedule/{s.name}")
    first_run = (await loop.describe()).raw_description.workflow_execution_info.first_run_id
    first = ts_env.client.get_workflow_handle(loop.id, run_id=first_run)
    assert (await first.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW


async def test_a_worker_replaced_mid_sleep_carries_on(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    start = (await ts_env.get_current_time()).replace(microsecond=0)
    fires = [start + timedelta(hours=k) for k in range(3)]
    s = spec(every="1h", start_at=start, limit=3)
    handle = await start_loop(ts_env, settings, s)

    async def fired_once() -> bool:
        return (await handle.query(ScheduleWorkflow.describe)).state.fires == 1

    # no sticky cache: the test server does not time out a dead worker's sticky queue
    async with build_worker(ts_env.client, settings, max_cached_workflows=0):
        await wait_for(fired_once)
        await assert_children(ts_env.client, s.name, fires[:1])
    # the first worker is gone while the loop sleeps an hour; a new one takes over
    async with build_worker(ts_env.client, settings):
        summary = await handle.result()
        await assert_children(ts_env.client, s.name, fires)
    assert summary.fires == 3


async def test_continue_as_new_keeps_every_run_small(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    """History stays bounded whatever the schedule's age: a run ends at `fires_per_run` fires or
    `max_history_events` events, whichever comes first, and the counts carry over exactly.
    (The defaults, 100 fires and 400 events, bound a run the same way at a larger size.)"""
    start = await future_midnight(ts_env)
    s = spec(every="1m", start_at=start, limit=200)
    async with build_worker(ts_env.client, settings):
        handle = await start_loop(ts_env, settings, s, fires_per_run=30, max_history_events=100)
        run_id = handle.result_run_id
        summary = await handle.result()
        await assert_children(ts_env.client, s.name, [start + timedelta(minutes=199)])
    assert summary.fires == 200 and summary.last_fire == start + timedelta(minutes=199)
    sizes = []
    while run_id:
        history = await ts_env.client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        sizes.append(len(history.events))
        last = history.events[-1]
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    # each run ends on the first wake past 100 events: one fire's worth of events over at most
    assert len(sizes) >= 200 // 30 and max(sizes) <= 130, (len(sizes), sizes)


def transition(zone: str, year: int, forward: bool) -> datetime:
    """The instant a zone's clocks go forward (or back) in a year, found from tzdata alone."""
    tz = ZoneInfo(zone)
    t = datetime(year, 1, 1, tzinfo=UTC)
    while t.year == year:
        before, after = t.astimezone(tz).utcoffset(), (t + HOUR).astimezone(tz).utcoffset()
        assert before is not None and after is not None
        if (after > before) == forward and after != before:
            # the change falls within this hour: find its minute
            while t.astimezone(tz).utcoffset() == before:
                t += timedelta(minutes=1)
            return t
        t += HOUR
    raise AssertionError(f"no {'forward' if forward else 'backward'} change in {zone} {year}")


# Each case: the zone's next-year change T and the expected fires as offsets from T, worked out
# from the DST rule by hand (not by the code under test). Next year's dates stay in the future.
M = timedelta(minutes=1)
DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("cron", "tz", "forward", "expected"),
    [
        # wall-clock job, spring forward: 02:30 the day before, 03:00 (= T) on the day, 02:30 after
        ("30 2 * * *", "America/New_York", True, [-DAY + 30 * M, timedelta(0), DAY - 30 * M]),
        # wall-clock job, fall back (T = 02:00 EDT = 01:00 EST): 01:30 only at its first occurrence
        ("30 1 * * *", "America/New_York", False, [-30 * M, DAY + 30 * M]),
        # stepped job, fall back: the repeated 01:xx hour fires twice
        ("*/30 1 * * *", "America/New_York", False, [-HOUR, -30 * M, timedelta(0), 30 * M]),
        # Berlin spring forward (T = 02:00 CET), every two hours: 02:00 does not exist
        ("0 */2 * * *", "Europe/Berlin", True, [-2 * HOUR, HOUR]),
        # Sydney spring forward: 02:30 runs at 03:00 (= T)
        ("30 2 * * *", "Australia/Sydney", True, [timedelta(0), DAY - 30 * M]),
        # Lord Howe moves 30 minutes: 02:15 inside the gap runs at 02:30 (= T)
        ("15 2 * * *", "Australia/Lord_Howe", True, [timedelta(0), DAY - 15 * M]),
    ],
)
async def test_daylight_saving_through_the_real_loop(
    ts_env: WorkflowEnvironment,
    settings: Settings,
    cron: str,
    tz: str,
    forward: bool,
    expected: list[timedelta],
) -> None:
    """The loop itself (not only the core) fires at the DST-rule instants, in a real worker."""
    now = await ts_env.get_current_time()
    change = transition(tz, now.year + 1, forward)
    fires = [change + offset for offset in expected]
    s = spec(cron=cron, timezone=tz, start_at=fires[0] - HOUR, limit=len(fires))
    summary = await run_loop(ts_env, settings, s, fires)
    assert summary.fires == len(fires) and summary.last_fire == fires[-1]


async def test_end_at_completes_the_loop(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    start = await future_midnight(ts_env)
    fires = [start + timedelta(hours=k) for k in range(3)]
    s = spec(every="1h", start_at=start, end_at=start + timedelta(hours=2, minutes=30))
    summary = await run_loop(ts_env, settings, s, fires)
    assert (summary.fires, summary.reason) == (3, "end_at passed")
