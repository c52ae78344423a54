"""Talking to schedule loops through Temporal: start one, or give a running one a new spec.

Shared by `starter.py start|update`, `make run` and Ductape-style `schedule()`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecution,
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
from client.schedules_file import brief, payload_problem
from scheduling.spec import ScheduleSpec, describe_spec
from workflows.models import ScheduleInput, ScheduleSummary, ScheduleView
from workflows.schedule import ScheduleWorkflow

QUERY_TIMEOUT = 5.0
UPDATE_TIMEOUT = timedelta(seconds=15)
START_CONCURRENCY = 32  # loops started (or checked) at once by `start` and `update`
UPDATE_ATTEMPTS = 5
# `list` and `delete` ask this many loops at once; `list` gives each query this long, then
# shows what the server's visibility store knows instead (1,000 loops answer in seconds).
MANY_CONCURRENCY = 32
LIST_QUERY_TIMEOUT = 3.0
LOOP_TYPE = ScheduleWorkflow.__name__
T = TypeVar("T")


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
            static_summary=f"schedule {spec.name}: `{spec.job}` on {brief(describe_spec(spec))}",
        )
    except WorkflowAlreadyStartedError:
        return f"{spec.name}: already running as {handle.id}; nothing started"
    return f"{spec.name}: started as {handle.id} ({brief(describe_spec(spec))})"


async def bounded(limit: int, work: Iterable[Awaitable[T]]) -> list[T]:
    """Await every item, at most `limit` at once, results in the given order."""
    slots = asyncio.Semaphore(limit)

    async def one(item: Awaitable[T]) -> T:
        async with slots:
            return await item

    return list(await asyncio.gather(*(one(w) for w in work)))


async def loops_on_server(
    client: Client, task_queue: str | None = None
) -> dict[str, WorkflowExecution]:
    """Every loop the server's visibility store knows (on `task_queue`, if given), by name: the
    running run of each, else its newest (one list call per page, not a call per loop)."""
    newest: dict[str, WorkflowExecution] = {}
    query = f"WorkflowType = '{LOOP_TYPE}' AND ExecutionStatus != 'ContinuedAsNew'"
    if task_queue is not None:
        query += " AND TaskQueue = '" + task_queue.replace("\\", "\\\\").replace("'", "\\'") + "'"
    async for wf in client.list_workflows(query, page_size=1000):
        if not wf.id.startswith("schedule/"):
            continue
        name = wf.id.removeprefix("schedule/")
        seen = newest.get(name)
        if seen is None or _rank(wf) > _rank(seen):
            newest[name] = wf
    return newest


def _rank(wf: WorkflowExecution) -> tuple[bool, datetime]:
    return wf.status == WorkflowExecutionStatus.RUNNING, wf.start_time


class ScheduleRow(BaseModel):
    """One line of `list` (and one object of `list --json`)."""

    name: str
    status: str  # running, paused, completed: <why>, not started, ...
    note: str | None = None  # a paused schedule's note
    spec: str | None = None
    next_fire: datetime | None = None
    fires: int | None = None


def _status_name(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower().replace("_", " ") if status else "not started"


async def list_schedules(
    client: Client, names: list[str], *, ask_worker: bool
) -> list[ScheduleRow]:
    """Schedules named in the file plus any others the server knows, newest run each.

    Which loops exist and their status come from one visibility listing; spec, next fire and
    counts from each running loop's `describe` query (a worker answers it), asked
    MANY_CONCURRENCY at a time with a short timeout: a loop whose worker does not answer in
    time is shown with what the server knows, and marked so.
    """
    known = await loops_on_server(client)
    order = list(dict.fromkeys([*names, *sorted(known)]))

    async def row(name: str) -> ScheduleRow:
        handle = client.get_workflow_handle(schedule_id(name))
        wf = known.get(name)
        # A name from the file the listing does not show yet (visibility lags a start a
        # little) is asked about directly.
        status = wf.status if wf is not None else await status_of(handle)
        out = ScheduleRow(name=name, status=_status_name(status))
        if status == WorkflowExecutionStatus.RUNNING and ask_worker:
            view = await _quick_view(handle)
            if view is None:
                out.status = "running (no worker answered)"
            else:
                out.spec = describe_spec(view.spec)
                out.status = "paused" if view.state.paused else "running"
                out.note = view.state.note if view.state.paused else None
                out.next_fire = view.next_fires[0] if view.next_fires else None
                out.fires = view.state.fires
        elif status == WorkflowExecutionStatus.COMPLETED:
            summary = await client.get_workflow_handle(
                handle.id, result_type=ScheduleSummary
            ).result()
            out.fires = summary.fires
            out.status = f"completed: {summary.reason}"
        return out

    return await bounded(MANY_CONCURRENCY, (row(name) for name in order))


async def _quick_view(handle: WorkflowHandle[Any, Any]) -> ScheduleView | None:
    try:
        return await handle.query(
            ScheduleWorkflow.describe, rpc_timeout=timedelta(seconds=LIST_QUERY_TIMEOUT)
        )
    except RPCError:
        return None


async def running_names(client: Client, task_queue: str, pattern: str = "*") -> list[str]:
    """The running loops on `task_queue` (the one this client's worker serves) whose names
    match a shell glob (`--all` is `*`), sorted."""
    known = await loops_on_server(client, task_queue)
    return sorted(
        name
        for name, wf in known.items()
        if wf.status == WorkflowExecutionStatus.RUNNING and fnmatch.fnmatchcase(name, pattern)
    )


async def control_many(
    client: Client,
    names: list[str],
    act: Callable[[WorkflowHandle[Any, Any]], Awaitable[str]],
) -> list[tuple[str, str | Exception]]:
    """Run one control on many loops, MANY_CONCURRENCY at once; each name's answer or error
    (one loop's refusal does not stop the others)."""

    async def one(name: str) -> tuple[str, str | Exception]:
        handle = client.get_workflow_handle(schedule_id(name))
        try:
            status = await status_of(handle)
            if status != WorkflowExecutionStatus.RUNNING:
                state = "does not exist" if status is None else f"is {status.name.lower()}"
                return name, ConfigError(f"schedule {name!r} {state}")
            return name, await act(handle)
        except (
            WorkflowUpdateFailedError,
            WorkflowUpdateRPCTimeoutOrCancelledError,
            ConfigError,
            RPCError,
        ) as exc:
            return name, exc

    return await bounded(MANY_CONCURRENCY, (one(n) for n in names))
