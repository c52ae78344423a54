"""`start_schedules` starts many loops at once, bounded, and still reports them in the file's
order: what `starter.py start` prints for a file of 40 loops (more than run at once)."""

from __future__ import annotations

import uuid

from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from client.loops import START_CONCURRENCY, schedule_id, start_schedules, status_of
from scheduling.spec import ScheduleSpec


async def test_many_loops_start_at_once_and_are_reported_in_order(
    dev_env: WorkflowEnvironment,
) -> None:
    tag = uuid.uuid4().hex[:6]
    specs = [
        ScheduleSpec(name=f"s{tag}-{i}", job="echo", every="1h")
        for i in range(START_CONCURRENCY + 8)
    ]
    queue = f"q-{tag}"  # no worker: starting needs none
    lines = await start_schedules(dev_env.client, specs, queue)
    assert [line.split(":")[0] for line in lines] == [s.name for s in specs]
    assert all("started as" in line for line in lines)
    for spec in (specs[0], specs[-1]):
        handle = dev_env.client.get_workflow_handle(schedule_id(spec.name))
        assert await status_of(handle) == WorkflowExecutionStatus.RUNNING
