"""`python starter.py`: start and inspect schedules, and run jobs ad hoc.

    start [--file F]          validate the whole schedules file, then start (or update) its loops
    update [--file F]         apply changed specs in the file to running loops (counts kept)
    list [--json]             name, spec, next fire, fires so far, status
    describe NAME [--json]    counts, skips by reason, last 10 fires, next 10 fire times
    pause NAME [--note T] | resume NAME [--note T] | trigger NAME
    delete NAME... | delete --all | delete --match GLOB
                              end loops, many at once (on TEMPORAL_TASK_QUEUE for --all/--match)
    preview (--cron EXPR | --every DUR) [--tz TZ] [--start-at ISO] [--after ISO] [--count N]
    run JOB [--args JSON|@FILE|-] [--json]
                              any registered job now (like `medusa exec`); sync-products also
                              takes [--connection ID] [--dry-run] [--batch-size N] and shows a
                              progress bar
    connections add|list|enable|disable|remove ...
                              API-key connections, written to CATALOG_DB directly (no Temporal)
    schedule --file job.json [--wait]
                              a Ductape-style job: repeating (a schedule loop) or one-off
    session create --tag T --data JSON [--ttl DUR]
                              a signed, expiring session token for `$Session{tag}{key}`

The CLI only talks to Temporal; the worker does the work.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import getpass
import json
import re
import sys
import tempfile
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.runtime import Runtime, TelemetryConfig
from temporalio.service import RPCError
from temporalio.workflow import UpdateMethodMultiParam

from activities.connections import (
    ConnectionExists,
    ConnectionNotFound,
    ConnectionStore,
    NewConnection,
)
from activities.db import SQLITE_FIX
from activities.expansion import INPUT_BYTES
from activities.schema import connections as connections_table
from client.connect import (
    ServerUnavailable,
    connect,
    exit_process,
    require_keys_of,
    with_keys,
    worker_polling,
)
from client.ductape import DuctapeJob, one_off_problem
from client.ductape import schedule as schedule_job
from client.errors import ConfigError, OneLineParser, exit_on_user_error, program_name
from client.loops import (
    control,
    control_many,
    list_schedules,
    running_names,
    schedule_id,
    start_schedules,
    status_of,
)
from client.render import (
    JobResult,
    fire_outcome,
    job_ids,
    lateness,
    status_text,
    unsure_jobs,
    utc_and_local,
)
from client.schedules_file import (
    DEFAULT_FILE,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    brief,
    field_error,
    input_problem,
    load_schedules,
    nested_too_deep,
    never_fires,
    payload_problem,
    read_input_file,
    shown,
    sync_products_args,
)
from client.settings import Settings, load_settings
from client.stack import NOTE, run_url, running_source, ui_url, use_running_stack
from client.waiting import lost_timeout, wait_for_result
from jobs.registry import JOBS
from jobs.sessions import issue_token
from jobs.sync_products import SyncProductsInput, SyncReport
from scheduling.cron import parse_cron
from scheduling.plan import Timing
from scheduling.spec import EARLIEST, LATEST, NAME_PATTERN, describe_spec
from scheduling.types import parse_duration, parse_timezone
from workflows.models import PauseRequest, ScheduleSummary, ScheduleView
from workflows.schedule import ScheduleWorkflow
from workflows.sync_products import SyncProductsWorkflow

T = TypeVar("T")
SQLITE_HEADER = b"SQLite format 3\x00"
PROBE_TIMEOUT_S = 3.0  # `run sync-products`: does the source want a key?
console = Console()
err_console = Console(stderr=True)


# --- talking to Temporal ---------------------------------------------------------------------


def adhoc_id(job: str) -> str:
    return f"{job}/adhoc-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"


async def start_job(
    client: Client, name: str, args: BaseModel | dict[str, Any], *, task_queue: str
) -> WorkflowHandle[Any, Any]:
    """One job now, outside any schedule, started as the loop starts its children: the
    registry's workflow by reference, its args model, the task queue."""
    job = JOBS[name]
    return await client.start_workflow(
        job.workflow.run,
        args,
        id=adhoc_id(name),
        task_queue=task_queue,
        static_summary=f"`{name}` run ad hoc",
    )


async def follow_sync(
    handle: WorkflowHandle[Any, Any], waiting: Coroutine[Any, Any, Any], *, dry_run: bool
) -> SyncReport:
    """Wait for a sync (`waiting`: its result), with a live progress bar on stderr."""
    result = asyncio.ensure_future(waiting)
    with Progress(
        TextColumn(f"[bold]sync-products{' (dry run)' if dry_run else ''}"),
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
                    SyncProductsWorkflow.progress, rpc_timeout=timedelta(seconds=2)
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
    report: SyncReport = result.result()
    return report


def report_table(r: SyncReport) -> Table:
    """Every count of the report, one per row, under a title that fits on one line."""
    title = f"sync-products: {r.status}{' (dry run)' if r.dry_run else ''}"
    table = Table(title=title, min_width=len(title) + 4, show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    if r.connection_id:
        table.add_row("connection", r.connection_id)
    verb = "would be " if r.dry_run else ""
    for key in ("fetched", "total", "created", "updated", "unchanged", "removed", "failed"):
        table.add_row(
            f"{verb}{key}" if key in ("created", "updated", "removed") else key,
            str(getattr(r, key)),
        )
    table.add_row("batches", f"{r.batches_done} of {r.batches}")
    table.add_row("duration", f"{r.duration_s:.1f}s")
    for b in r.failed_batches:
        table.add_row("failed batch", f"offset {b.offset}: {b.error}")
    for p in r.failed_products:
        table.add_row("failed product", f"{p.external_id}: {p.error}")
    for kind, titles in r.examples.items():
        if titles:
            table.add_row(f"would {kind}", ", ".join(titles))
    return table


# --- commands --------------------------------------------------------------------------------


@functools.cache
def _cli_runtime() -> Runtime:
    """The SDK runtime of the CLI, without the SDK core's console log: its retry warnings (a
    server restarting) went to stdout, into `--json`; the CLI says what happens in its own lines."""
    return Runtime(telemetry=TelemetryConfig(logging=None))


async def _client(settings: Settings, *, need_worker: bool) -> Client:
    """Connected, to the server the settings name, else to the one `make run` started."""
    note = use_running_stack(settings)
    if note is not None:  # one short line, on stderr: --json output stays clean
        where = settings.temporal_address
        print(f"using Temporal at {where}, which `make run` started", file=sys.stderr)
    try:
        client = await connect(settings, runtime=_cli_runtime(), make_keys=False)
    except ServerUnavailable as exc:
        if note is None:
            raise
        raise ServerUnavailable(
            f"{exc}; the address came from {settings.data_dir / NOTE}"
        ) from None
    if need_worker and not await worker_polling(client, settings.temporal_task_queue):
        raise ServerUnavailable(
            f"no worker is polling task queue {settings.temporal_task_queue!r} "
            f"on {settings.temporal_address}: start one with `python worker.py` "
            "(`make run` starts one)"
        )
    return with_keys(client, settings)  # the keys made (if none), once every check passed


async def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    specs = load_schedules(args.file, settings)  # all validated before anything starts
    client = await _client(settings, need_worker=False)
    for line in await start_schedules(client, specs, settings.temporal_task_queue):
        console.print(line, soft_wrap=True)  # one line each, however narrow the terminal
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
        table.add_column(col, no_wrap=col in ("name", "next fire"))
    for row in rows:
        table.add_row(
            row.name,
            brief(row.spec or ""),
            f"{row.next_fire:%Y-%m-%d %H:%M:%SZ}" if row.next_fire else "",
            "" if row.fires is None else str(row.fires),
            escape(status_text(True, row.note)) if row.status == "paused" else row.status,
        )
    console.print(table)
    return 0


# `run sync-products` flags: the job's args they set, and how each is named in an error.
SYNC_FLAGS = {"batch_size": "--batch-size", "dry_run": "--dry-run", "connection_id": "--connection"}


def _run_args(text: str | None) -> dict[str, Any]:
    """`--args JSON`, `--args @FILE` or `--args -` (stdin): an object, under the same bound as
    a schedule's args (a large input cannot go on a command line at all)."""
    if text is None:
        return {}
    if text == "-":
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(f"--args -: over {MAX_FILE_BYTES // 2**20} MB on stdin")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError("--args -: stdin is not UTF-8 text; save it as UTF-8") from None
    elif text.startswith("@"):
        text = read_input_file(Path(text[1:]), "args", "--args @")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"--args: not valid JSON ({exc.msg}); pass an object, like '{{\"sleep_s\": 1}}'"
        ) from None
    except RecursionError:
        raise ConfigError("--args: nested too deeply to read; flatten it") from None
    if not isinstance(value, dict):
        raise ConfigError(
            f"--args: pass a JSON object of the job's args, not a {type(value).__name__}"
        )
    if nested_too_deep(value):
        raise ConfigError(f"--args: nested more than {MAX_DEPTH} deep; flatten it")
    problem = input_problem(value)
    if problem:
        raise ConfigError(f"--args: {problem}")
    return value


def _sync_input(
    args: argparse.Namespace, given: dict[str, Any], settings: Settings
) -> SyncProductsInput:
    """SYNC_PRODUCTS_* settings, then --args, then the flags (a field set both ways: refused)."""
    flags = {
        "batch_size": args.batch_size,
        "dry_run": True if args.dry_run else None,
        "connection_id": args.connection,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    both = [k for k in flags if k in given]
    if both:
        raise ConfigError(f"{SYNC_FLAGS[both[0]]}: also set in --args; pass one")
    try:
        return SyncProductsInput.model_validate({**sync_products_args(settings), **given, **flags})
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        field = str(loc[0]) if loc else ""
        if field in flags:
            raise ConfigError(f"{SYNC_FLAGS[field]}: {exc.errors()[0]['msg']}") from None
        raise ConfigError(f"--args: {field_error(exc)}") from None


def _job_args(args: argparse.Namespace, given: dict[str, Any]) -> dict[str, Any]:
    """Any other job: only --args, validated against its model (the flags are the sync's)."""
    for field, flag in SYNC_FLAGS.items():
        if getattr(args, "connection" if field == "connection_id" else field):
            raise ConfigError(
                f"{flag}: only sync-products takes it; pass {args.job}'s args with --args JSON"
            )
    try:
        return JOBS[args.job].validate_args(given)
    except ValidationError as exc:
        raise ConfigError(f"--args: {field_error(exc)}") from None


def _worker_source(settings: Settings) -> str:
    """The source the worker that runs the job reads: `make run`'s (it leaves a note in
    DATA_DIR while it runs), else DUMMYJSON_BASE_URL as this process has it."""
    return running_source(settings.data_dir, settings.temporal_task_queue) or (
        settings.dummyjson_base_url
    )


async def _wants_a_key(source: str) -> bool:
    """One unauthenticated request, as the sync's first: does the source answer 401/403? Any
    other answer, or none, is the job's to report."""
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as http:
            response = await http.get(
                f"{source.rstrip('/')}/products", params={"limit": 1, "select": "id"}
            )
    except httpx.HTTPError:
        return False
    return response.status_code in (401, 403)


def where_to_see(settings: Settings, wf_id: str) -> str:
    """A run's page in the Web UI, or, for a server whose UI we do not know, its id."""
    ui = ui_url(settings)
    if ui is None:
        return (
            f"workflow {wf_id} (in your server's Web UI, namespace {settings.temporal_namespace})"
        )
    return run_url(ui, settings.temporal_namespace, wf_id)


def _print_result(result: Any, *, name: str, where: str, as_json: bool) -> None:
    dumped = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    text = json.dumps(dumped, indent=2, default=str)
    if not as_json:
        print(f"{name}: completed; see it at {where}", file=sys.stderr)
    print(text)


def _wait_for(
    client: Client, handle: WorkflowHandle[Any, Any], settings: Settings, lost_after: timedelta
) -> Coroutine[Any, Any, Any]:
    """The job's result, waited through worker and server restarts (client/waiting.py)."""
    return wait_for_result(
        client,
        handle,
        address=settings.temporal_address,
        where=where_to_see(settings, handle.id),
        lost_after=lost_after,
    )


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Any registered job now, ad hoc (like `medusa exec`); exit 0 only if it succeeded."""
    lost_after = lost_timeout()  # a bad setting refused before anything starts
    if args.job not in JOBS:
        raise ConfigError(
            f"job: unknown job {shown(args.job)}; registered jobs: {', '.join(sorted(JOBS))}"
        )
    given = _run_args(args.args)
    inp: BaseModel | dict[str, Any]
    if args.job == "sync-products":
        inp = sync = _sync_input(args, given, settings)
        store = _store_to_read(settings) if sync.connection_id else None
        if sync.connection_id and (store is None or not store.exists(sync.connection_id)):
            raise ConfigError(
                f"--connection: no connection {sync.connection_id!r}; `starter.py connections list`"
            )
    else:
        inp = _job_args(args, given)
    client = await _client(settings, need_worker=True)
    if isinstance(inp, SyncProductsInput) and inp.connection_id is None:
        source = _worker_source(settings)
        if await _wants_a_key(source):
            raise ConfigError(
                f"--connection: the source at {source} wants an API key; "
                "pass --connection ID (starter.py connections list)"
            )
    handle = await start_job(client, args.job, inp, task_queue=settings.temporal_task_queue)
    waiting = _wait_for(client, handle, settings, lost_after)
    try:
        if isinstance(inp, SyncProductsInput) and not args.json:
            result = await follow_sync(handle, waiting, dry_run=inp.dry_run)
        else:
            result = await waiting
    except WorkflowFailureError as exc:
        cause = exc.cause
        why = str(getattr(cause, "cause", None) or cause or exc)
        print(f"error: {handle.id} failed: {why.splitlines()[0]}", file=sys.stderr)
        return 1
    if not isinstance(result, SyncReport):
        _print_result(
            result, name=args.job, where=where_to_see(settings, handle.id), as_json=args.json
        )
        return 0
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(f"see it at {where_to_see(settings, handle.id)}", file=sys.stderr)  # one line
        console.print(report_table(result))
    return 0 if result.status == "completed" else 1


async def _running(client: Client, name: str) -> WorkflowHandle[Any, Any]:
    handle = client.get_workflow_handle(schedule_id(name))
    status = await status_of(handle)
    if status != WorkflowExecutionStatus.RUNNING:
        state = "does not exist" if status is None else f"is {status.name.lower()}"
        raise ConfigError(f"name: schedule {name!r} {state}; `starter.py list` shows them")
    await require_keys_of(client, handle.id)  # a control sent with other keys: refused here
    return handle


CONTROLS: dict[str, UpdateMethodMultiParam[..., str]] = {
    "pause": ScheduleWorkflow.pause,
    "resume": ScheduleWorkflow.resume,
    "trigger": ScheduleWorkflow.trigger,
    "delete": ScheduleWorkflow.delete,
}


def _check_name(name: str) -> None:
    """A schedule name as the file allows it, checked before anything connects."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ConfigError(
            f"name: {shown(name)} is not a schedule name; names are 1 to 63 of a-z 0-9 . _ - "
            "starting with a letter or digit (`starter.py list` shows them)"
        )


async def cmd_control(args: argparse.Namespace, settings: Settings) -> int:
    """pause / resume / trigger / delete: one Temporal Update each, refused with a reason."""
    _check_name(args.name)
    note_max = 500  # PauseRequest's
    if getattr(args, "note", None) is not None and len(args.note) > note_max:
        raise ConfigError(f"--note: {len(args.note)} characters; keep it to {note_max}")
    client = await _client(settings, need_worker=True)
    handle = await _running(client, args.name)
    arg = [PauseRequest(note=args.note)] if args.command in ("pause", "resume") else []
    try:
        result = await control(handle, CONTROLS[args.command], *arg)
    except WorkflowUpdateFailedError as exc:
        raise ConfigError(f"{args.name}: {args.command} refused: {exc.cause}") from None
    console.print(f"{args.name}: {result}")
    return 0


async def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    """End many loops at once (names, `--all` or `--match GLOB`), a bounded number in flight;
    a line per loop, then a summary line."""
    if bool(args.names) == bool(args.all or args.match is not None):
        raise ConfigError(
            "delete: give schedule names, or --all, or --match GLOB (one of them); "
            "`starter.py list` shows the names"
        )
    for name in args.names:
        _check_name(name)
    if args.match is not None and not args.match.strip():
        raise ConfigError("--match: an empty pattern; give a glob such as 'nightly-*'")
    client = await _client(settings, need_worker=True)
    names = list(dict.fromkeys(args.names)) or await running_names(
        client, settings.temporal_task_queue, args.match or "*"
    )
    if len(args.names) == 1:
        await _running(client, args.names[0])  # a lone name: its one-line error as before

    async def delete(handle: WorkflowHandle[Any, Any]) -> str:
        await require_keys_of(client, handle.id)  # a delete carries no payload to refuse
        return await control(handle, ScheduleWorkflow.delete)

    results = await control_many(client, names, delete)
    failed = 0
    for name, result in results:
        if isinstance(result, Exception):
            failed += 1
            why = str(result.cause if isinstance(result, WorkflowUpdateFailedError) else result)
            first = why.strip().splitlines()[0] if why.strip() else type(result).__name__
            err_console.print(f"error: {name}: delete refused: {first}", markup=False)
        else:
            console.print(f"{name}: {result}", markup=False)
    if len(names) != 1:
        what = f"matching {args.match!r}" if args.match is not None else "running"
        if not names:
            console.print(f"no {what} schedules; nothing deleted", markup=False)
        else:
            console.print(
                f"deleted {len(names) - failed} of {len(names)} schedules"
                + (f"; {failed} refused (above)" if failed else ""),
                markup=False,
            )
    return 2 if failed else 0


async def cmd_update(args: argparse.Namespace, settings: Settings) -> int:
    specs = load_schedules(args.file, settings)
    client = await _client(settings, need_worker=True)
    for line in await start_schedules(client, specs, settings.temporal_task_queue, start_new=False):
        console.print(line, soft_wrap=True)
    return 0


async def cmd_describe(args: argparse.Namespace, settings: Settings) -> int:
    _check_name(args.name)
    client = await _client(settings, need_worker=True)
    handle = client.get_workflow_handle(schedule_id(args.name))
    status = await status_of(handle)
    if status == WorkflowExecutionStatus.COMPLETED:
        summary = await client.get_workflow_handle(handle.id, result_type=ScheduleSummary).result()
        print(summary.model_dump_json(indent=2) if args.json else f"{args.name}: {summary}")
        return 0
    view = await handle.query(ScheduleWorkflow.describe) if status else None
    if view is None:
        await _running(client, args.name)  # raises the one-line error
        return 2
    checked = await _check_jobs(client, unsure_jobs(view.state))
    if args.json:
        shown = view.model_dump(mode="json")
        if shown["spec"].get("session"):  # a session token is a credential: never printed
            shown["spec"]["session"]["token"] = "(hidden)"
        for fire, record in zip(shown["state"]["recent"], view.state.recent, strict=True):
            fire["result"] = fire_outcome(record, view.state, checked)
        print(json.dumps(shown, indent=2))
        return 0
    _print_view(handle.id, view, checked)
    return 0


MAX_CHECKED = 100  # jobs of the last fires asked about one by one, at most


async def _check_jobs(client: Client, ids: list[str]) -> dict[str, JobResult]:
    """How jobs the loop's state cannot tell apart ended, from the server: completed, or not."""

    async def one(child: str) -> tuple[str, JobResult | None]:
        status = await status_of(client.get_workflow_handle(child))
        if status is None:
            return child, None
        if status == WorkflowExecutionStatus.RUNNING:
            return child, "running"
        return child, "completed" if status == WorkflowExecutionStatus.COMPLETED else "failed"

    found = await asyncio.gather(*(one(i) for i in ids[:MAX_CHECKED]))
    return {child: result for child, result in found if result is not None}


def _print_view(wf_id: str, view: ScheduleView, checked: dict[str, JobResult]) -> None:
    """`describe`: the counts first, each beside the list it counts."""
    st, tz = view.state, view.spec.timezone
    failed_jobs = f"{st.job_failures}" + (
        f" (the last {len(st.job_errors)} below)" if st.job_failures > len(st.job_errors) else ""
    )
    head = Table.grid(padding=(0, 2))
    for key, value in (
        ("schedule", f"{wf_id} runs `{view.spec.job}`"),
        ("spec", describe_spec(view.spec)),
        ("state", escape(status_text(st.paused, st.note)) if st.paused else "active"),
        (
            "fires",
            f"{st.fires}" + (f" ({view.remaining} left)" if view.remaining is not None else ""),
        ),
        ("triggered", str(st.triggered)),
        ("running jobs", str(len(st.running))),
        ("failed jobs", failed_jobs),
        (
            "failed fires",
            f"{st.failed} (the expansion failed: no job started)" if st.failed else "0",
        ),
        ("skipped", ", ".join(f"{k}: {v}" for k, v in st.skipped.items()) or "none"),
        ("next fires", "\n".join(utc_and_local(t, tz) for t in view.next_fires) or "none"),
    ):
        head.add_row(f"[bold]{key}", value)
    console.print(head)
    if st.recent:
        console.print(_recent_table(view, checked))
    else:
        console.print("last fires: none yet")
    if st.job_errors:
        failed = Table(title=f"failed jobs (the last {len(st.job_errors)} of {st.job_failures})")
        failed.add_column("job", no_wrap=True)
        failed.add_column("why", overflow="fold")
        for child_id, why in st.job_errors.items():
            failed.add_row(child_id, escape(why))
        console.print(failed)


def _recent_table(view: ScheduleView, checked: dict[str, JobResult]) -> Table:
    st, tz = view.state, view.spec.timezone
    keyed = any(job_ids(r.children) != "\n".join(r.children) for r in st.recent)
    how = f"a job's id: {view.spec.name}/<fire time, like 20270101T090000Z>/<key>"
    recent = Table(title="last fires", caption=how if keyed else None)
    recent.add_column("scheduled", no_wrap=True)
    recent.add_column("late", justify="right")
    recent.add_column("outcome")
    recent.add_column("jobs")
    for r in st.recent:
        recent.add_row(
            utc_and_local(r.scheduled, tz).replace("  ", "\n"),
            lateness(r.actual - r.scheduled),
            escape(fire_outcome(r, st, checked)),
            job_ids(r.children),
        )
    return recent


async def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    """Next fire times from the same code as the loop; needs no server.

    Without --start-at the schedule starts at --after (or now), so nothing is moved: the times
    printed are the first ones strictly after --after.
    """
    tz = _flag("--tz", parse_timezone, args.tz)
    after = _flag("--after", _aware, args.after, tz) if args.after else None
    anchor = _flag("--start-at", _aware, args.start_at, tz) if args.start_at else after
    if args.cron is not None:
        _flag("--cron", parse_cron, args.cron)
    else:
        _flag("--every", _every, args.every)
    timing = Timing.build(
        cron=args.cron, every=args.every, timezone=args.tz, anchor=anchor or datetime.now(UTC)
    )
    upcoming = list(timing.upcoming(after, args.count))
    if not upcoming:  # as `start` refuses it: a schedule that would never fire
        raise ConfigError(f"--cron: {args.cron!r} can never fire; fix it or add --every")
    if args.json:
        print(json.dumps([f"{t:%Y-%m-%dT%H:%M:%SZ}" for t in upcoming]))
    else:  # the zone's wall-clock time beside each
        print("\n".join(utc_and_local(t, args.tz, iso=True) for t in upcoming))
    return 0


def _flag(flag: str, parse: Callable[..., T], *values: Any) -> T:
    """A flag's value parsed, or one line naming the flag."""
    try:
        return parse(*values)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def _aware(text: str, tz: ZoneInfo) -> datetime:
    """An ISO 8601 time; without an offset it is wall-clock time in the zone. In the range a
    schedule's start_at may take, so the fire-time arithmetic cannot overflow."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 time; use e.g. 2027-01-01T09:00:00Z "
            "(without an offset it is in --tz)"
        ) from None
    value = value if value.tzinfo else value.replace(tzinfo=tz)
    if not _in_range(value):
        raise ValueError(f"{text!r} is out of range; use a time from {EARLIEST.year} to 8999")
    return value


def _in_range(value: datetime) -> bool:
    try:
        return EARLIEST <= value.astimezone(UTC) < LATEST
    except OverflowError:
        return False


def _every(text: str) -> timedelta:
    """As a schedule takes it: at least a second (fire ids have one-second resolution)."""
    every = parse_duration(text)
    if every < timedelta(seconds=1):
        raise ValueError(f"{text!r} is under a second; use 1s or more (a number is milliseconds)")
    return every


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} is out of range; use 1 to 1000")
    return value


_CONNECTION_FIXES = {
    "id": "use 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter or digit",
    "api_code": "use 1 to 63 lowercase letters, digits, '_' or '-' (default dummyjson)",
    "name": "give a display name of 1 to 200 characters",
    "api_key": "give the key (1 to 4096 printable ASCII characters: no line breaks or tabs), "
    "or `--api-key -` to read it from stdin",
    "scope": "use a DummyJSON category slug like 'smartphones', or leave it out for all products",
}


def _read_key(value: str) -> str:
    """`-` reads the key from stdin (no echo on a terminal), so it stays out of shell history."""
    if value != "-":
        return value
    if sys.stdin.isatty():
        return getpass.getpass("API key: ")
    return sys.stdin.readline().strip()


def _new_connection(args: argparse.Namespace) -> NewConnection:
    fields = {
        "id": args.id,
        "name": args.name,
        "api_key": _read_key(args.api_key),
        "scope": args.scope,
        "active": not args.inactive,
    }
    if args.api_code is not None:
        fields["api_code"] = args.api_code
    try:
        return NewConnection.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors(include_input=False)[0]
        field = str(err["loc"][0]) if err["loc"] else "id"
        value = "" if field == "api_key" else f" {shown(fields.get(field))}"  # never the key
        fix = _CONNECTION_FIXES.get(field, err["msg"])
        raise ConfigError(f"--{field.replace('_', '-')}{value}: {fix}") from None


def _catalog_error(settings: Settings, why: object) -> ConfigError:
    db = settings.database
    return ConfigError(f"{db.setting}={db.shown!r}: {why}; {SQLITE_FIX}")


def _probe_writable(directory: Path) -> None:
    """OSError unless a file can be made in `directory`, or (missing) in the first parent that
    exists, where mkdir would make it. Leaves nothing behind: an unnamed temporary file."""
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    with tempfile.TemporaryFile(dir=directory):
        pass


def _probe_database(settings: Settings) -> None:
    """An existing SQLite file must be a SQLite database: a regular file (not /dev/null) whose
    header says so (an empty file is an empty database). Read, not opened with sqlite3, which
    would leave -wal and -shm files."""
    path = settings.database.path
    if not path.is_file():
        raise _catalog_error(settings, "not a regular file")
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise _catalog_error(settings, f"cannot read it ({exc.strerror or exc})") from None
    if head and head != SQLITE_HEADER:
        raise _catalog_error(settings, "not a SQLite database")


def _secret_dir_ready(settings: Settings, name: str, variable: str) -> None:
    """Before anything is written: DATA_DIR can take the secret file `name` if it is to be made
    (the variable `variable` unset and no file yet)."""
    if getattr(settings, variable.lower()) is not None or (settings.data_dir / name).exists():
        return
    try:
        _probe_writable(settings.data_dir)
    except OSError as exc:
        raise ConfigError(
            f"DATA_DIR={str(settings.data_dir)!r}: cannot write {name} there "
            f"({exc.strerror or exc}); set DATA_DIR to a directory you can write, or set {variable}"
        ) from None


def _database_ready(settings: Settings) -> bool:
    """Every check on the application database, before any file is made: an existing SQLite
    file is a database, a missing one could be made, a PostgreSQL answers. False: a SQLite
    file that does not exist yet (nothing to read)."""
    db = settings.database
    if db.dialect != "sqlite":
        db.prepare()  # a refusing or unknown server: one line naming APP_DATABASE_URL
        return True
    if db.path.exists():
        _probe_database(settings)
        return True
    try:
        _probe_writable(db.path.parent)
    except OSError as exc:
        raise _catalog_error(settings, f"cannot create it ({exc.strerror or exc})") from None
    return False


def _stored_keys(settings: Settings) -> bool:
    """Whether the registry holds any connection (whose key a new secret would not open)."""
    with settings.database.transaction(write=False) as conn:
        return conn.execute(select(connections_table.c.id).limit(1)).first() is not None


def _no_secret(settings: Settings) -> ConfigError:
    return ConfigError(
        f"CONNECTIONS_KEY: unset, and there is no {settings.data_dir / 'connections.key'}, but "
        f"{settings.database.shown} holds connections sealed with a key; set CONNECTIONS_KEY "
        "(or DATA_DIR) to the one they were stored with"
    )


def _existing_store(settings: Settings) -> ConnectionStore | None:
    """The registry, read only; None (and nothing made) if it is a SQLite file that does not
    exist yet. Never makes a secret: without one, stored connections are an error."""
    secret = settings.existing_connections_secret()  # an empty or damaged file: one line
    if not _database_ready(settings):
        return None
    if secret is None:
        if _stored_keys(settings):
            raise _no_secret(settings)
        return None
    return ConnectionStore(settings.database, secret)


def _store_to_read(settings: Settings) -> ConnectionStore | None:
    """The registry a command reads (`run --connection`): None if the SQLite file is not made
    yet, but a database path that could never be one is named, not taken as "no connection"."""
    db = settings.database
    if db.dialect == "sqlite" and not db.path.exists():
        try:
            _probe_writable(db.path.parent)
        except OSError as exc:
            raise _catalog_error(settings, f"cannot open it ({exc.strerror or exc})") from None
        return None
    return _existing_store(settings)


def _store_for_writing(settings: Settings) -> ConnectionStore:
    """The registry, made if missing, once every path it needs is known to be writable and the
    database answers, so a bad database, DATA_DIR or key leaves no half-made files behind."""
    _secret_dir_ready(settings, "connections.key", "CONNECTIONS_KEY")
    secret = settings.existing_connections_secret()
    exists = _database_ready(settings)
    if secret is None and exists and _stored_keys(settings):
        raise _no_secret(settings)
    return ConnectionStore(settings.database, settings.connections_secret())


async def cmd_connections(args: argparse.Namespace, settings: Settings) -> int:
    """The connection registry, read and written here directly: a key never enters Temporal.

    Only `add` creates a SQLite database file (and DATA_DIR/connections.key); the other actions on a
    registry that does not exist yet find nothing and write nothing."""
    new = _new_connection(args) if args.action == "add" else None  # validated before any write
    store = _store_for_writing(settings) if new is not None else _existing_store(settings)
    return _connection_action(args, store, new, settings)


def _connection_action(
    args: argparse.Namespace,
    store: ConnectionStore | None,
    new: NewConnection | None,
    settings: Settings,
) -> int:
    if new is not None:
        assert store is not None
        replaced = args.replace and store.exists(new.id)
        try:
            store.add(new, replace=args.replace)
        except ConnectionExists as exc:
            raise ConfigError(f"--id: {exc}") from None
        console.print(f"connection {new.id} {'replaced' if replaced else 'added'}")
        return 0
    if args.action == "list":
        rows = [] if store is None else store.list(active_only=args.active)
        if args.json:
            dumped = [c.model_dump(mode="json", exclude={"api_key"}) for c in rows]
            print(json.dumps(dumped, indent=2))
            return 0
        table = Table(title=f"connections in {settings.database.shown}")
        for col in ("id", "api code", "name", "scope", "active", "updated"):
            table.add_column(col)
        for c in rows:  # never the key, not even masked
            table.add_row(
                c.id,
                c.api_code,
                escape(_printable(c.name)),
                c.scope or "all products",
                "yes" if c.active else "no",
                f"{c.updated_at:%Y-%m-%d %H:%M:%SZ}",
            )
        console.print(table)
        if not rows:
            err_console.print("no connections yet: `starter.py connections add` adds one")
        return 0
    try:
        if store is None:
            raise ConnectionNotFound(args.id)
        if args.action == "remove":
            if not store.remove(args.id):
                raise ConnectionNotFound(args.id)
            console.print(f"connection {args.id} removed")
            return 0
        active = args.action == "enable"
        before = store.require(args.id)
        store.set_active(args.id, active)
    except ConnectionNotFound:
        raise ConfigError(
            f"id: no connection {shown(args.id)}; `starter.py connections list` shows them"
        ) from None
    state = "enabled" if active else "disabled"
    already = " (it already was)" if before.active == active else ""
    console.print(f"connection {args.id} {state}{already}")
    return 0


def _printable(text: str) -> str:
    """Control characters (a terminal escape in a name) shown escaped, not sent to the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _connections_parser(sub: Any) -> None:
    conns = sub.add_parser("connections", help="API-key connections the jobs call sources with")
    actions = conns.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="register a connection (--replace to change one)")
    add.add_argument("--id", required=True, help="lowercase letters, digits, '_' or '-'")
    add.add_argument("--name", required=True, help="display name")
    add.add_argument("--api-key", required=True, help="the key, or - to read it from stdin")
    add.add_argument("--scope", default=None, help="DummyJSON category slug; default all")
    add.add_argument("--api-code", default=None, help="the integration (default dummyjson)")
    add.add_argument("--inactive", action="store_true", help="add it disabled")
    add.add_argument("--replace", action="store_true", help="overwrite an existing id")
    ls = actions.add_parser("list", help="all connections, with whether each is active")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--active", action="store_true", help="only the active ones (a fire's)")
    for name, text in (
        ("enable", "use it again"),
        ("disable", "mark it inactive; it is kept, with its key"),
        ("remove", "delete it and its key"),
    ):
        actions.add_parser(name, help=text).add_argument("id")


async def cmd_schedule(args: argparse.Namespace, settings: Settings) -> int:
    """A Ductape job file: validated whole, then started; `--wait` prints a one-off's result."""
    job = _ductape_job(args.file)
    lost_after = lost_timeout()
    client = await _client(settings, need_worker=False)
    done = await schedule_job(client, job, settings.temporal_task_queue)
    console.print(done.message)
    if args.wait and done.kind == "one-off":
        try:
            handle = client.get_workflow_handle(done.workflow_id)
            result = await _wait_for(client, handle, settings, lost_after)
        except WorkflowFailureError as exc:
            cause = exc.cause
            why = str(getattr(cause, "cause", None) or cause or exc)
            print(f"error: {done.workflow_id} failed: {why.splitlines()[0]}", file=sys.stderr)
            return 1
        print(json.dumps(result, indent=2, default=str))
        status = result.get("status") if isinstance(result, dict) else None
        if status not in (None, "completed"):  # a report that failed, as `run` exits: 1
            return 1
    return 0


# ScheduleSpec's fields as a Ductape job names them, in the checks made before it starts.
_DUCTAPE_FIELDS = {"args": "input", "end_at": "repeat.endDate", "cron": "repeat.cron"}


def _ductape_job(path: Path) -> DuctapeJob:
    """The job file read (bounded), parsed and checked as the loop or the server would, so a
    job that could not run is one line here and nothing starts."""
    try:
        data = json.loads(read_input_file(path, "job"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read; flatten it") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f'{path}: a job is a JSON object ({{"event": ...}}), not a {type(data).__name__}'
        )
    try:
        job = DuctapeJob.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {field_error(exc)}") from None
    if nested_too_deep(job.input):
        raise ConfigError(f"{path}: input: nested more than {MAX_DEPTH} deep; flatten it")
    if job.repeat is not None:
        spec = job.to_spec()
        problem = payload_problem(spec) or never_fires(spec, datetime.now(UTC))
        if problem:
            field, _, why = problem.partition(": ")
            raise ConfigError(f"{path}: {_DUCTAPE_FIELDS.get(field, field)}: {why}")
        return job
    if job.starts is not None and not _in_range(job.starts):
        raise ConfigError(
            f"{path}: start_at: {job.starts.isoformat()} is out of range; use 0 (now) or a time "
            f"from {EARLIEST.year} to 8999"
        )
    problem = one_off_problem(job, datetime.now(UTC))
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return job


async def cmd_session(args: argparse.Namespace, settings: Settings) -> int:
    """Issue a token; needs no server, only the secret the worker verifies with.

    Every flag is checked before the secret is read, since reading it may first make it."""
    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--data: not valid JSON ({exc.msg}); pass an object") from None
    except RecursionError:
        raise ConfigError("--data: nested too deeply to read; flatten it") from None
    if not isinstance(data, dict):
        raise ConfigError("--data: pass a JSON object, like '{\"user_id\": 42}'")
    if nested_too_deep(data):
        raise ConfigError(f"--data: nested more than {MAX_DEPTH} deep; flatten it")
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        raise ConfigError(f"--ttl: {exc}") from None
    if not args.tag:
        raise ConfigError(
            "--tag: session tag must not be empty; use the tag the job's session names"
        )
    _secret_dir_ready(settings, "session.secret", "SESSION_SECRET")
    try:
        secret = settings.session_key()
    except OSError as exc:
        raise ConfigError(
            f"DATA_DIR={str(settings.data_dir)!r}: cannot keep session.secret there "
            f"({exc.strerror or exc}); set DATA_DIR to a directory you can write"
        ) from None
    try:
        token = issue_token(secret, args.tag, data, ttl)
    except ValueError as exc:
        raise ConfigError(f"--tag: {exc}") from None
    print(token)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog=program_name("starter"), description="Scheduled jobs on Temporal.")
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
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("name")
        if name in ("pause", "resume"):
            cmd.add_argument("--note", default=None)
    dele = sub.add_parser(
        "delete",
        help="end loops (on TEMPORAL_TASK_QUEUE); their running jobs finish on their own",
    )
    dele.add_argument("names", nargs="*", metavar="NAME")
    which = dele.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every running loop on the task queue")
    which.add_argument("--match", default=None, metavar="GLOB", help="running loops named so")
    pre = sub.add_parser("preview", help="print the next fire times of a cron or interval")
    what = pre.add_mutually_exclusive_group(required=True)
    what.add_argument("--cron")
    what.add_argument("--every")
    pre.add_argument("--tz", default="UTC")
    pre.add_argument("--start-at", default=None, help="ISO time; default now")
    pre.add_argument("--after", default=None, help="ISO time; fires strictly after it")
    pre.add_argument("--count", type=_count, default=10, metavar="N", help="1 to 1000")
    pre.add_argument("--json", action="store_true")
    run = sub.add_parser("run", help="run a registered job now, ad hoc (like `medusa exec`)")
    run.add_argument("job", help=f"a registered job: {', '.join(sorted(JOBS))}")
    run.add_argument(
        "--args",
        default=None,
        metavar="JSON",
        help=f"the job's args, an object: JSON, @FILE or - (stdin); {INPUT_BYTES // 1024} KB max",
    )
    run.add_argument("--dry-run", action="store_true", help="sync-products: plan only")
    run.add_argument("--batch-size", type=int, default=None, help="sync-products: per batch")
    run.add_argument(
        "--connection", default=None, help="sync-products: as this connection (its key, scope)"
    )
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    _connections_parser(sub)
    sch = sub.add_parser("schedule", help="submit a Ductape-style job (JSON file)")
    sch.add_argument("--file", type=Path, required=True)
    sch.add_argument("--wait", action="store_true", help="one-off: wait and print its result")
    ses = sub.add_parser("session", help="session tokens for $Session{tag}{key} placeholders")
    ses_sub = ses.add_subparsers(dest="session_command", required=True)
    create = ses_sub.add_parser("create", help="print a signed, expiring token")
    create.add_argument("--tag", required=True)
    create.add_argument("--data", required=True, help="a JSON object: what placeholders read")
    create.add_argument("--ttl", default="1h", help="how long it is valid (30m, 1d, ...)")
    return p.parse_args(argv)


READ_ONLY = ("list", "describe", "preview")  # never make a secret file

COMMANDS = {
    "start": cmd_start,
    "update": cmd_update,
    "list": cmd_list,
    "describe": cmd_describe,
    "pause": cmd_control,
    "resume": cmd_control,
    "trigger": cmd_control,
    "delete": cmd_delete,
    "preview": cmd_preview,
    "run": cmd_run,
    "connections": cmd_connections,
    "schedule": cmd_schedule,
    "session": cmd_session,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def go() -> int:
        settings = load_settings()
        settings.read_only = args.command in READ_ONLY
        return asyncio.run(COMMANDS[args.command](args, settings))

    return int(exit_on_user_error(go))


def cli() -> None:
    """The `schedjobs` command."""
    exit_process(main)


if __name__ == "__main__":
    cli()
