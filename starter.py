"""`python starter.py`: start and inspect schedules, and run jobs ad hoc.

    start [--file F]          validate the whole schedules file, then start (or update) its loops
    update [--file F]         apply changed specs in the file to running loops (counts kept)
    list [--json]             name, spec, next fire, fires so far, status
    describe NAME [--json]    counts, skips by reason, last 10 fires, next 10 fire times
    pause NAME [--note T] | resume NAME [--note T] | trigger NAME | delete NAME
    preview (--cron EXPR | --every DUR) [--tz TZ] [--start-at ISO] [--after ISO] [--count N]
    run sync-products [--dry-run] [--batch-size N] [--json]
                              one sync now (like `medusa exec`), with a progress bar

The CLI only talks to Temporal; the worker does the work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from config import ConfigError, Settings, exit_on_user_error, load_settings
from models import (
    PauseRequest,
    ScheduleInput,
    ScheduleSpec,
    ScheduleSummary,
    ScheduleView,
    SyncProductsInput,
    SyncReport,
)
from schedules_file import DEFAULT_FILE, field_error, load_schedules, sync_products_args
from temporal_client import ServerUnavailable, connect, exit_process, worker_polling
from workflows.schedule import ScheduleWorkflow
from workflows.sync_products import SyncProductsWorkflow
from workflows.timemath import Timing, parse_timezone

QUERY_TIMEOUT = 5.0
console = Console()
err_console = Console(stderr=True)


# --- talking to Temporal ---------------------------------------------------------------------


def schedule_id(name: str) -> str:
    return f"schedule/{name}"


async def _status(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionStatus | None:
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return desc.status


async def _query_view(handle: WorkflowHandle[Any, Any]) -> ScheduleView | None:
    try:
        return await handle.query(
            "describe", result_type=ScheduleView, rpc_timeout=timedelta(seconds=QUERY_TIMEOUT)
        )
    except RPCError:
        return None


async def apply_spec(handle: WorkflowHandle[Any, Any], spec: ScheduleSpec) -> str:
    """A running loop gets the file's spec if it changed (counts kept); else nothing happens."""
    view = await handle.query(
        "describe", result_type=ScheduleView, rpc_timeout=timedelta(seconds=QUERY_TIMEOUT)
    )
    if view.spec.model_dump(mode="json") == spec.model_dump(mode="json"):
        return f"{spec.name}: already running as {handle.id}; unchanged"
    try:
        result = await handle.execute_update("update", spec, result_type=str)
    except WorkflowUpdateFailedError as exc:
        raise ConfigError(f"{spec.name}: update refused: {exc.cause}") from None
    return f"{spec.name}: {result} (counts kept)"


async def start_schedules(
    client: Client, specs: list[ScheduleSpec], task_queue: str, *, start_new: bool = True
) -> list[str]:
    """Start what is not running; update running loops whose spec changed."""
    lines = []
    for spec in specs:
        handle = client.get_workflow_handle(schedule_id(spec.name))
        status = await _status(handle)
        if status == WorkflowExecutionStatus.RUNNING:
            lines.append(await apply_spec(handle, spec))
            continue
        if status == WorkflowExecutionStatus.COMPLETED:
            summary = await client.get_workflow_handle(
                handle.id, result_type=ScheduleSummary
            ).result()
            lines.append(
                f"{spec.name}: already finished ({summary.reason}, {summary.fires} fires); "
                "not restarted"
            )
            continue
        if not start_new:
            lines.append(f"{spec.name}: not running; `starter.py start` starts it")
            continue
        try:
            await client.start_workflow(
                ScheduleWorkflow.run,
                ScheduleInput(spec=spec),
                id=handle.id,
                task_queue=task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            )
        except WorkflowAlreadyStartedError:
            lines.append(f"{spec.name}: already running as {handle.id}; nothing started")
            continue
        lines.append(f"{spec.name}: started as {handle.id} ({spec.describe()})")
    return lines


class ScheduleRow(BaseModel):
    """One line of `list` (and one object of `list --json`)."""

    name: str
    status: str
    spec: str | None = None
    next_fire: datetime | None = None
    fires: int | None = None


async def list_schedules(
    client: Client, names: list[str], *, ask_worker: bool
) -> list[ScheduleRow]:
    """Schedules named in the file plus any others the server knows, newest run each.

    Spec, next fire and counts come from the loop's `describe` query, which needs a worker.
    """
    seen = dict.fromkeys(names)
    async for wf in client.list_workflows("WorkflowType = 'ScheduleWorkflow'"):
        seen.setdefault(wf.id.removeprefix("schedule/"))
    rows = []
    for name in seen:
        handle = client.get_workflow_handle(schedule_id(name))
        status = await _status(handle)
        row = ScheduleRow(
            name=name, status=status.name.lower().replace("_", " ") if status else "not started"
        )
        if status == WorkflowExecutionStatus.RUNNING and ask_worker:
            view = await _query_view(handle)
            if view is None:
                row.status = "running (no worker answered)"
            else:
                row.spec = view.spec.describe()
                row.next_fire = view.next_fires[0] if view.next_fires else None
                row.fires = view.state.fires
        elif status == WorkflowExecutionStatus.COMPLETED:
            summary = await client.get_workflow_handle(
                handle.id, result_type=ScheduleSummary
            ).result()
            row.fires = summary.fires
            row.status = f"completed: {summary.reason}"
        rows.append(row)
    return rows


async def run_sync(
    client: Client, inp: SyncProductsInput, *, task_queue: str, quiet: bool
) -> SyncReport:
    wf_id = f"sync-products/adhoc-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
    handle = await client.start_workflow(
        SyncProductsWorkflow.run, inp, id=wf_id, task_queue=task_queue
    )
    if quiet:
        return await handle.result()
    result = asyncio.ensure_future(handle.result())
    with Progress(
        TextColumn(f"[bold]sync-products{' (dry run)' if inp.dry_run else ''}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("batches · {task.fields[counts]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("sync", total=None, counts="starting")
        while not result.done():
            try:
                r = await handle.query(
                    "progress", result_type=SyncReport, rpc_timeout=timedelta(seconds=2)
                )
                bar.update(
                    task,
                    total=r.batches or None,
                    completed=r.batches_done,
                    counts=f"fetched {r.fetched} · created {r.created} · updated {r.updated}",
                )
            except RPCError:
                pass
            await asyncio.wait([result], timeout=0.2)
    err_console.print(f"workflow {wf_id} (see it in the Web UI)")
    return result.result()


def report_table(r: SyncReport) -> Table:
    table = Table(title=f"sync-products: {r.status}{' (dry run)' if r.dry_run else ''}")
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    for key in ("fetched", "created", "updated", "unchanged", "failed", "batches", "duration_s"):
        table.add_row(key, str(getattr(r, key)))
    for b in r.failed_batches:
        table.add_row("failed batch", f"offset {b.offset}: {b.error}")
    for p in r.failed_products:
        table.add_row("failed product", f"{p.external_id}: {p.error}")
    for kind, titles in r.examples.items():
        if titles:
            table.add_row(f"would {kind}", ", ".join(titles))
    return table


# --- commands --------------------------------------------------------------------------------


async def _client(settings: Settings, *, need_worker: bool) -> Client:
    client = await connect(settings)
    if need_worker and not await worker_polling(client, settings.temporal_task_queue):
        raise ServerUnavailable(
            f"no worker is polling task queue {settings.temporal_task_queue!r} "
            f"on {settings.temporal_address}: start one with `python worker.py` "
            "(`make run` starts one)"
        )
    return client


async def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    specs = load_schedules(args.file, settings)  # all validated before anything starts
    client = await _client(settings, need_worker=False)
    for line in await start_schedules(client, specs, settings.temporal_task_queue):
        console.print(line)
    if not await worker_polling(client, settings.temporal_task_queue):
        err_console.print(
            f"warning: no worker is polling {settings.temporal_task_queue!r} yet; "
            "the schedules wait for one (`python worker.py`)"
        )
    return 0


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    names = [s.name for s in load_schedules(args.file, settings)] if args.file.exists() else []
    client = await _client(settings, need_worker=False)
    worker = await worker_polling(client, settings.temporal_task_queue)
    if not worker:
        err_console.print(
            f"warning: no worker is polling {settings.temporal_task_queue!r}: showing status "
            "only; start one with `python worker.py` (`make run` starts one)"
        )
    rows = await list_schedules(client, names, ask_worker=worker)
    if args.json:
        print(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
        return 0
    table = Table(title=f"schedules on {settings.temporal_address}")
    for col in ("name", "spec", "next fire", "fires", "status"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            row.name,
            row.spec or "",
            f"{row.next_fire:%Y-%m-%d %H:%M:%SZ}" if row.next_fire else "",
            "" if row.fires is None else str(row.fires),
            row.status,
        )
    console.print(table)
    return 0


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if args.job != "sync-products":
        raise ConfigError(f"job: unknown job {args.job!r}; `run` takes sync-products")
    try:
        inp = SyncProductsInput.model_validate(
            sync_products_args(settings, batch_size=args.batch_size, dry_run=args.dry_run or None)
        )
    except ValidationError as exc:
        raise ConfigError(f"--{field_error(exc).replace('_', '-')}") from None
    client = await _client(settings, need_worker=True)
    report = await run_sync(client, inp, task_queue=settings.temporal_task_queue, quiet=args.json)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        console.print(report_table(report))
    return 0 if report.status == "completed" else 1


async def _running(client: Client, name: str) -> WorkflowHandle[Any, Any]:
    handle = client.get_workflow_handle(schedule_id(name))
    status = await _status(handle)
    if status != WorkflowExecutionStatus.RUNNING:
        state = "does not exist" if status is None else f"is {status.name.lower()}"
        raise ConfigError(f"name: schedule {name!r} {state}; `starter.py list` shows them")
    return handle


async def cmd_control(args: argparse.Namespace, settings: Settings) -> int:
    """pause / resume / trigger / delete: one Temporal Update each, refused with a reason."""
    client = await _client(settings, need_worker=True)
    handle = await _running(client, args.name)
    arg = [PauseRequest(note=args.note)] if args.command in ("pause", "resume") else []
    try:
        result = await handle.execute_update(args.command, *arg, result_type=str)
    except WorkflowUpdateFailedError as exc:
        raise ConfigError(f"{args.name}: {args.command} refused: {exc.cause}") from None
    console.print(f"{args.name}: {result}")
    return 0


async def cmd_update(args: argparse.Namespace, settings: Settings) -> int:
    specs = load_schedules(args.file, settings)
    client = await _client(settings, need_worker=True)
    for line in await start_schedules(client, specs, settings.temporal_task_queue, start_new=False):
        console.print(line)
    return 0


async def cmd_describe(args: argparse.Namespace, settings: Settings) -> int:
    client = await _client(settings, need_worker=True)
    handle = client.get_workflow_handle(schedule_id(args.name))
    status = await _status(handle)
    if status == WorkflowExecutionStatus.COMPLETED:
        summary = await client.get_workflow_handle(handle.id, result_type=ScheduleSummary).result()
        print(summary.model_dump_json(indent=2) if args.json else f"{args.name}: {summary}")
        return 0
    view = await handle.query("describe", result_type=ScheduleView) if status else None
    if view is None:
        await _running(client, args.name)  # raises the one-line error
        return 2
    if args.json:
        print(view.model_dump_json(indent=2))
        return 0
    st = view.state
    head = Table.grid(padding=(0, 2))
    for key, value in (
        ("schedule", f"{handle.id} runs `{view.spec.job}`"),
        ("spec", view.spec.describe()),
        ("state", f"paused: {st.note or 'no note'}" if st.paused else "active"),
        (
            "fires",
            f"{st.fires}" + (f" ({view.remaining} left)" if view.remaining is not None else ""),
        ),
        ("triggered", str(st.triggered)),
        ("failed", str(st.failed)),
        ("skipped", ", ".join(f"{k}: {v}" for k, v in st.skipped.items()) or "none"),
        ("next fires", "\n".join(f"{t:%Y-%m-%d %H:%M:%SZ}" for t in view.next_fires) or "none"),
    ):
        head.add_row(f"[bold]{key}", value)
    console.print(head)
    recent = Table(title="last fires")
    for col in ("scheduled", "actual", "outcome", "children"):
        recent.add_column(col)
    for r in st.recent:
        recent.add_row(
            f"{r.scheduled:%Y-%m-%d %H:%M:%SZ}",
            f"{r.actual:%Y-%m-%d %H:%M:%SZ}",
            r.outcome + (f" ({r.error})" if r.error else ""),
            "\n".join(r.children),
        )
    console.print(recent)
    return 0


async def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    """Next fire times from the same maths as the loop; needs no server."""
    try:
        tz = parse_timezone(args.tz)
        anchor = _aware(args.start_at, tz) if args.start_at else datetime.now(UTC)
        after = _aware(args.after, tz) if args.after else None
        timing = Timing.build(cron=args.cron, every=args.every, timezone=args.tz, anchor=anchor)
    except ValueError as exc:
        raise ConfigError(f"{_flag_of(exc, args)}: {exc}") from None
    times = [f"{t:%Y-%m-%dT%H:%M:%SZ}" for t in timing.upcoming(after, args.count)]
    print(json.dumps(times) if args.json else "\n".join(times))
    return 0


def _aware(text: str, tz: Any) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=tz)


def _flag_of(exc: ValueError, args: argparse.Namespace) -> str:
    text = str(exc)
    if "time zone" in text:
        return "--tz"
    if "isoformat" in text:
        return "--start-at/--after"
    return "--cron" if args.cron else "--every"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="starter.py", description="Scheduled jobs on Temporal.")
    sub = p.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="validate the schedules file, then start its loops")
    start.add_argument("--file", type=Path, default=DEFAULT_FILE)
    upd = sub.add_parser("update", help="apply changed specs in the file to running loops")
    upd.add_argument("--file", type=Path, default=DEFAULT_FILE)
    ls = sub.add_parser("list", help="show schedules: spec, next fire, fires, status")
    ls.add_argument("--file", type=Path, default=DEFAULT_FILE)
    ls.add_argument("--json", action="store_true")
    desc = sub.add_parser("describe", help="one schedule in full: counts, last fires, next fires")
    desc.add_argument("name")
    desc.add_argument("--json", action="store_true")
    for name, text in (
        ("pause", "stop firing (fires are recorded as skipped: paused)"),
        ("resume", "fire again"),
        ("trigger", "fire now, once (does not count toward the limit)"),
        ("delete", "end the loop; running jobs finish on their own"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("name")
        if name in ("pause", "resume"):
            cmd.add_argument("--note", default=None)
    pre = sub.add_parser("preview", help="print the next fire times of a cron or interval")
    what = pre.add_mutually_exclusive_group(required=True)
    what.add_argument("--cron")
    what.add_argument("--every")
    pre.add_argument("--tz", default="UTC")
    pre.add_argument("--start-at", default=None, help="ISO time; default now")
    pre.add_argument("--after", default=None, help="ISO time; fires strictly after it")
    pre.add_argument("--count", type=int, default=10, choices=range(1, 1001), metavar="N")
    pre.add_argument("--json", action="store_true")
    run = sub.add_parser("run", help="run a job now, ad hoc")
    run.add_argument("job", help="sync-products")
    run.add_argument("--dry-run", action="store_true", help="plan only, write nothing")
    run.add_argument("--batch-size", type=int, default=None)
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    return p.parse_args(argv)


COMMANDS = {
    "start": cmd_start,
    "update": cmd_update,
    "list": cmd_list,
    "describe": cmd_describe,
    "pause": cmd_control,
    "resume": cmd_control,
    "trigger": cmd_control,
    "delete": cmd_control,
    "preview": cmd_preview,
    "run": cmd_run,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def go() -> int:
        settings = load_settings()
        return asyncio.run(COMMANDS[args.command](args, settings))

    return int(exit_on_user_error(go))


if __name__ == "__main__":
    exit_process(main)
