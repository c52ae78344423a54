"""`python starter.py`: start and inspect schedules, and run jobs ad hoc.

    start [--file F]                      validate the whole schedules file, then start its loops
    list [--json]                         name, spec, next fire, fires so far, status
    run sync-products [--dry-run] [--batch-size N] [--json]
                                          one sync now (like `medusa exec`), with a progress bar

The CLI only talks to Temporal; the worker does the work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from config import ConfigError, Settings, exit_on_user_error, load_settings
from models import (
    ScheduleInput,
    ScheduleSpec,
    ScheduleSummary,
    ScheduleView,
    SyncProductsInput,
    SyncReport,
)
from temporal_client import ServerUnavailable, connect, exit_process, worker_polling
from workflows.jobs import JOBS
from workflows.schedule import ScheduleWorkflow
from workflows.sync_products import SyncProductsWorkflow

DEFAULT_FILE = Path("schedules.toml")
QUERY_TIMEOUT = 5.0
console = Console()
err_console = Console(stderr=True)


# --- the schedules file ----------------------------------------------------------------------


def _field_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "schedule"
    return f"{field}: {err['msg'].removeprefix('Value error, ')}"


def sync_products_args(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The sync job's args: SYNC_PRODUCTS_* settings, then anything given explicitly."""
    args = {
        "batch_size": settings.sync_products_batch_size,
        "max_retries": settings.sync_products_max_retries,
        "dry_run": settings.sync_products_dry_run,
        **{k: v for k, v in overrides.items() if v is not None},
    }
    return SyncProductsInput.model_validate(args).model_dump(mode="json")


def load_schedules(path: Path, settings: Settings) -> list[ScheduleSpec]:
    """Read and validate the whole file; the first problem is a ConfigError naming the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such schedules file; pass --file PATH") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    entries = data.get("schedule", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no [[schedule]] entries; see README 'Schedules file'")
    specs: list[ScheduleSpec] = []
    for i, entry in enumerate(entries):
        label = f"{path}: schedule {entry.get('name', f'#{i + 1}')!r}"
        job = JOBS.get(entry.get("job", ""))
        if job is None:
            raise ConfigError(
                f"{label}: job: unknown job {entry.get('job')!r}; use one of {sorted(JOBS)}"
            )
        if entry.get("job") == "sync-products":
            if "cron" not in entry and "every" not in entry:
                entry = {**entry, "cron": settings.sync_products_schedule}
            try:
                entry = {**entry, "args": sync_products_args(settings, **entry.get("args", {}))}
            except ValidationError as exc:
                raise ConfigError(f"{label}: args.{_field_error(exc)}") from None
        try:
            spec = ScheduleSpec.model_validate(entry)
            spec.args = job.validate_args(spec.args)
        except ValidationError as exc:
            prefix = "" if exc.title == "ScheduleSpec" else "args."
            raise ConfigError(f"{label}: {prefix}{_field_error(exc)}") from None
        if not spec.timing(datetime.now(UTC)).can_fire():
            raise ConfigError(f"{label}: cron: {spec.cron!r} can never fire; fix it or add every")
        if any(s.name == spec.name for s in specs):
            raise ConfigError(f"{label}: name: used twice in the file")
        specs.append(spec)
    return specs


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


async def start_schedules(client: Client, specs: list[ScheduleSpec], task_queue: str) -> list[str]:
    lines = []
    for spec in specs:
        handle = client.get_workflow_handle(schedule_id(spec.name))
        status = await _status(handle)
        if status == WorkflowExecutionStatus.RUNNING:
            lines.append(f"{spec.name}: already running as {handle.id}; nothing started")
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
        raise ConfigError(f"--{_field_error(exc).replace('_', '-')}") from None
    client = await _client(settings, need_worker=True)
    report = await run_sync(client, inp, task_queue=settings.temporal_task_queue, quiet=args.json)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        console.print(report_table(report))
    return 0 if report.status == "completed" else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="starter.py", description="Scheduled jobs on Temporal.")
    sub = p.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="validate the schedules file, then start its loops")
    start.add_argument("--file", type=Path, default=DEFAULT_FILE)
    ls = sub.add_parser("list", help="show schedules: spec, next fire, fires, status")
    ls.add_argument("--file", type=Path, default=DEFAULT_FILE)
    ls.add_argument("--json", action="store_true")
    run = sub.add_parser("run", help="run a job now, ad hoc")
    run.add_argument("job", help="sync-products")
    run.add_argument("--dry-run", action="store_true", help="plan only, write nothing")
    run.add_argument("--batch-size", type=int, default=None)
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    return p.parse_args(argv)


COMMANDS = {"start": cmd_start, "list": cmd_list, "run": cmd_run}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def go() -> int:
        settings = load_settings()
        return asyncio.run(COMMANDS[args.command](args, settings))

    return int(exit_on_user_error(go))


if __name__ == "__main__":
    exit_process(main)
