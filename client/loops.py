"""Talking to schedule loops through Temporal: start one, or give a running one a new spec.

Shared by `starter.py start|update`, `make run` and Ductape-style `schedule()`.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from client.connect import ServerUnavailable
from client.errors import ConfigError
from client.schedules_file import payload_problem
from scheduling.spec import ScheduleSpec, describe_spec
from workflows.models import ScheduleInput, ScheduleSummary, ScheduleView
from workflows.schedule import ScheduleWorkflow

QUERY_TIMEOUT = 5.0
UPDATE_TIMEOUT = timedelta(seconds=15)
START_CONCURRENCY = 32  # loops started (or checked) at once by `start` and `update`
UPDATE_ATTEMPTS = 5


def schedule_id(name: str) -> str:
    return f"schedule/{name}"


async def status_of(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionStatus | None:
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return desc.status


async def query_view(handle: WorkflowHandle[Any, Any]) -> ScheduleView | None:
    try:
        return await handle.query(
            ScheduleWorkflow.describe, rpc_timeout=timedelta(seconds=QUERY_TIMEOUT)
        )
    except RPCError:
        return None


def _dropped(exc: RPCError) -> bool:
    """The server dropped the update unapplied: its workflow task failed (WorkflowNotReady), or
    no answer came in time."""
    if exc.status == RPCStatusCode.DEADLINE_EXCEEDED:
        return True
    details = exc.grpc_status.details if exc.status == RPCStatusCode.FAILED_PRECONDITION else []
    return any(d.type_url.endswith("WorkflowNotReadyFailure") for d in details)


async def control(
    handle: WorkflowHandle[Any, Any], update: UpdateMethodMultiParam[..., str], *args: Any
) -> str:
    """Send one control update (pause, resume, trigger, update, delete) and return its answer.

    The server drops an update whose workflow task fails. That happens in normal running: a
    `delete` ends the loop, and if a job's completion reaches the loop in that same moment, the
    server refuses the ending and replays the task without the update. So a dropped update is
    sent again, under the same update id, which the server deduplicates: it is applied once. An
    update with no answer in time (a busy server) is sent again the same way.
    """
    update_id = f"{getattr(update, '__name__', 'update')}-{uuid.uuid4().hex[:12]}"

    async def send() -> str:
        return str(
            await handle.execute_update(update, args=args, id=update_id, rpc_timeout=UPDATE_TIMEOUT)
        )

    for attempt in range(UPDATE_ATTEMPTS - 1):
        try:
            return await send()
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            pass
        except RPCError as exc:
            if not _dropped(exc):
                raise
        await asyncio.sleep(0.2 * 2**attempt)
    return await send()


async def _running_view(handle: WorkflowHandle[Any, Any], spec: ScheduleSpec) -> ScheduleView:
    """The running loop's view. Only a worker answers a query: none polling is one line, and a
    busy one (replaying, or just started) is asked again before that."""
    for attempt in range(UPDATE_ATTEMPTS):
        try:
            return await handle.query(
                ScheduleWorkflow.describe, rpc_timeout=timedelta(seconds=QUERY_TIMEOUT)
            )
        except RPCError as exc:
            if exc.status == RPCStatusCode.FAILED_PRECONDITION and "poller" in exc.message:
                raise ServerUnavailable(
                    f"{spec.name}: running as {handle.id}, but no worker is polling its task "
                    "queue to compare or update it; start one with `python worker.py` and run "
                    "this again"
                ) from None
            if exc.status not in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                raise
        await asyncio.sleep(0.2 * 2**attempt)
    raise ServerUnavailable(
        f"{spec.name}: running as {handle.id}, but its worker did not answer in "
        f"{UPDATE_ATTEMPTS} tries; check the worker (its log) and run this again"
    )


async def apply_spec(handle: WorkflowHandle[Any, Any], spec: ScheduleSpec) -> str:
    """A running loop gets the file's spec if it changed (counts kept); else nothing happens."""
    view = await _running_view(handle, spec)
    if view.spec.model_dump(mode="json") == spec.model_dump(mode="json"):
        return f"{spec.name}: already running as {handle.id}; unchanged"
    try:
        result = await control(handle, ScheduleWorkflow.update, spec)
    except WorkflowUpdateFailedError as exc:
        raise ConfigError(f"{spec.name}: update refused: {exc.cause}") from None
    return f"{spec.name}: {result} (counts kept)"


async def start_schedules(
    client: Client,
    specs: list[ScheduleSpec],
    task_queue: str,
    *,
    start_new: bool = True,
    memo: dict[str, Any] | None = None,
) -> list[str]:
    """Start what is not running (with `memo`, e.g. a Ductape job's identity); update running
    loops whose spec changed.

    Every spec is checked first: one that no loop could carry stops them all, before any starts.
    """
    for spec in specs:
        problem = payload_problem(spec)
        if problem:
            raise ConfigError(f"schedule {spec.name!r}: {problem}")
    slots = asyncio.Semaphore(START_CONCURRENCY)

    async def one(spec: ScheduleSpec) -> str:
        async with slots:
            return await _start_one(client, spec, task_queue, start_new=start_new, memo=memo)

    # A few RPCs each, in flight at once (bounded): 1,000 loops start in seconds, not minutes.
    # The lines keep the file's order; the first refusal cancels the rest.
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(spec)) for spec in specs]
    except BaseExceptionGroup as failed:  # the first one, as if they had run in turn
        raise failed.exceptions[0] from None
    return [t.result() for t in tasks]


async def _start_one(
    client: Client,
    spec: ScheduleSpec,
    task_queue: str,
    *,
    start_new: bool,
    memo: dict[str, Any] | None,
) -> str:
    handle = client.get_workflow_handle(schedule_id(spec.name))
    status = await status_of(handle)
    if status == WorkflowExecutionStatus.RUNNING:
        return await apply_spec(handle, spec)
    if status == WorkflowExecutionStatus.COMPLETED:
        summary = await client.get_workflow_handle(handle.id, result_type=ScheduleSummary).result()
        return (
            f"{spec.name}: already finished ({summary.reason}, {summary.fires} fires); "
            "not restarted"
        )
    if not start_new:
        return f"{spec.name}: not running; `starter.py start` starts it"
    try:
        await client.start_workflow(
            ScheduleWorkflow.run,
            ScheduleInput(spec=spec),
            id=handle.id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            memo=memo,
            static_summary=f"schedule {spec.name}: `{spec.job}` on {describe_spec(spec)}",
        )
    except WorkflowAlreadyStartedError:
        return f"{spec.name}: already running as {handle.id}; nothing started"
    return f"{spec.name}: started as {handle.id} ({describe_spec(spec)})"
