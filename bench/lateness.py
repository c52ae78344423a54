"""How late interval fires start: our schedule loops beside Temporal's native Schedules.

Starts its own Temporal dev server and K worker processes (`python worker.py`, one shared
DATA_DIR; this process only starts things and measures), then, at the same time, N of our loops
(`every`, job `echo`, started as `starter.py start` does) and N native Schedules
(`ScheduleIntervalSpec(every)` starting `EchoJobWorkflow` with `{}`), all on one task queue, so
the same echo job runs on both sides on the same workers. Both sides fire on the same grid: native
interval schedules are aligned to the epoch, and our loops get `start_at` on that grid too.

Lateness of a fire = its job's start time (visibility) minus its scheduled time (ours:
`ScheduledFireTime`, native: `TemporalScheduledStartTime`). Only fires scheduled in the window
[start, start + duration) count; the window starts on the first grid boundary an interval after
everything was created. The schedules keep firing through a grace period after the window (late
fires may start then), are deleted, and the jobs are read once visibility stops changing. A fire
that never started (skipped, missed) is counted in "run %", not in the lateness.

Prints one table (per side: schedules, interval, fires expected and run, p50 / p99 / max lateness,
the p99 ratio ours / native), the command and the machine; the worker logs stay in the temp dir.
Usage: .venv/bin/python bench/lateness.py [--loops 20] [--every 5s] [--duration 120]
       [--workers 1] [--only ours|native|both] [--grace S] [--task-queue Q]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.client import (  # noqa: E402
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleHandle,
    ScheduleIntervalSpec,
)
from temporalio.client import ScheduleSpec as NativeSpec  # noqa: E402
from temporalio.common import SearchAttributeKey  # noqa: E402

from bench.devserver import start_dev_server  # noqa: E402
from bench.workers import start_workers, stop_workers, wait_for_pollers, worker_env  # noqa: E402
from client.codec import Keyring  # noqa: E402
from client.loops import control, schedule_id, start_schedules  # noqa: E402
from scheduling.spec import ScheduleSpec  # noqa: E402
from scheduling.types import parse_duration  # noqa: E402
from workflows.children import SCHEDULE_NAME, SCHEDULED_FIRE_TIME  # noqa: E402
from workflows.models import ScheduleSummary  # noqa: E402
from workflows.schedule import ScheduleWorkflow  # noqa: E402

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OURS, NATIVE = "ours", "native"
SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
SCHEDULED_BY = SearchAttributeKey.for_keyword("TemporalScheduledById")
IN_FLIGHT = 32  # creations / deletions at once per side
T = TypeVar("T")


@dataclass
class Side:
    name: str
    schedules: int
    anchor: datetime  # the first fire of every schedule of this side's grid
    lateness: list[float] = field(default_factory=list)  # seconds, fires in the window
    expected: int = 0
    outside: int = 0  # jobs of fires outside the window (warm-up, grace)
    notes: list[str] = field(default_factory=list)


# --- arguments ---------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds, 0 or more")
    return value


def interval(text: str) -> timedelta:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < timedelta(seconds=1):
        raise argparse.ArgumentTypeError(f"{text!r} is under a second; use e.g. 5s")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--loops", type=positive_int, default=20, help="schedules per side")
    p.add_argument("--every", type=interval, default=interval("5s"), help="the interval, e.g. 5s")
    p.add_argument("--duration", type=seconds, default=120.0, help="measuring window, seconds")
    p.add_argument("--workers", type=positive_int, default=1, help="worker processes")
    p.add_argument("--only", choices=("ours", "native", "both"), default="both")
    p.add_argument(
        "--grace",
        type=seconds,
        default=None,
        help="seconds after the window for late fires to start (default: 2 intervals + 10 s)",
    )
    p.add_argument("--task-queue", default="bench-lateness")
    p.add_argument(
        "--work-ms",
        type=float,
        default=0,
        help="CPU ms each of our fires spends on the worker first (the `busy` expansion), to "
        "load the workers rather than the server (native Schedules cannot; use --only ours)",
    )
    a = p.parse_args(argv)
    if a.duration < a.every.total_seconds():
        every = a.every.total_seconds()
        p.error(f"argument --duration: {a.duration:g} s is shorter than --every ({every:g} s)")
    if not 0 <= a.work_ms <= 10_000:
        p.error("argument --work-ms: give 0 to 10000 (milliseconds of CPU per fire)")
    if a.work_ms and a.only != "ours":
        p.error(
            "argument --work-ms: native Schedules have no expansion to spend it in; add --only ours"
        )
    if not a.task_queue.strip() or len(a.task_queue) > 200:
        p.error("argument --task-queue: give a name of 1 to 200 characters")
    if a.grace is None:
        a.grace = 2 * a.every.total_seconds() + 10
    return a


# --- time grid ---------------------------------------------------------------------------------


def ceil_to_grid(t: datetime, every: timedelta, anchor: datetime = EPOCH) -> datetime:
    """The first `anchor + k*every` (k >= 0) at or after t."""
    if t <= anchor:
        return anchor
    return anchor + math.ceil((t - anchor) / every) * every


def fires_in(anchor: datetime, every: timedelta, start: datetime, end: datetime) -> int:
    """How many `anchor + k*every` (k >= 0) fall in [start, end)."""
    first = ceil_to_grid(start, every, anchor)
    return 0 if first >= end else math.ceil((end - first) / every)


def utcnow() -> datetime:
    return datetime.now(UTC)


async def sleep_until(t: datetime) -> None:
    await asyncio.sleep(max(0.0, (t - utcnow()).total_seconds()))


def say(text: str) -> None:
    print(f"[{utcnow():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


async def bounded(items: Sequence[T], fn: Callable[[T], Awaitable[Any]]) -> list[Any]:
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(item: T) -> Any:
        async with slots:
            return await fn(item)

    return await asyncio.gather(*(one(i) for i in items))


def log_counts(log_dir: Path) -> str:
    """ERROR, Traceback and WARNING lines in each worker's log and the dev server's."""
    parts = []
    for log in sorted(log_dir.glob("worker-*.log")):
        text = log.read_text(errors="replace").splitlines()
        errors = sum(" ERROR " in line for line in text)
        tracebacks = sum(line.startswith("Traceback") for line in text)
        warnings = sum(" WARNING " in line for line in text)
        parts.append(f"{log.name}: {errors} ERROR, {tracebacks} Traceback, {warnings} WARNING")
    server = log_dir / "temporal.log"
    if server.exists():
        text = server.read_text(errors="replace").splitlines()
        errors, warnings = (sum(f"level={v} " in line for line in text) for v in ("ERROR", "WARN"))
        parts.append(f"{server.name} (dev server): {errors} ERROR, {warnings} WARN")
    return "; ".join(parts)


# --- the two sides -----------------------------------------------------------------------------


def our_specs(
    n: int, every: timedelta, start_at: datetime, work_ms: float = 0
) -> list[ScheduleSpec]:
    """N loops of `echo`; with work_ms, each fire first spends that much CPU on the worker in the
    `busy` expansion (a local activity), still one job per fire."""
    secs = int(every.total_seconds())
    text = f"{secs}s" if secs == every.total_seconds() else str(every // timedelta(milliseconds=1))
    work = {"expansion": "busy", "args": {"work_ms": work_ms}} if work_ms else {}
    return [
        ScheduleSpec(name=f"ours-{i:04d}", job="echo", every=text, start_at=start_at, **work)
        for i in range(n)
    ]


async def create_native(client: Client, n: int, every: timedelta, queue: str) -> list[str]:
    async def one(i: int) -> str:
        sid = f"native-{i:04d}"
        await client.create_schedule(
            sid,
            Schedule(
                action=ScheduleActionStartWorkflow(
                    "EchoJobWorkflow", args=[{}], id=f"{sid}-job", task_queue=queue
                ),
                spec=NativeSpec(intervals=[ScheduleIntervalSpec(every=every)]),
            ),
        )
        return sid

    return list(await bounded(range(n), one))


async def stop_ours(client: Client, specs: list[ScheduleSpec]) -> list[str]:
    """Delete every loop (the `delete` update) and sum what their summaries say."""

    async def one(spec: ScheduleSpec) -> ScheduleSummary:
        handle = client.get_workflow_handle_for(ScheduleWorkflow.run, schedule_id(spec.name))
        await control(handle, ScheduleWorkflow.delete)
        return await handle.result()

    summaries: list[ScheduleSummary] = await bounded(specs, one)
    skipped: dict[str, int] = {}
    for s in summaries:
        for reason, count in s.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
    return [
        f"whole run: {sum(s.fires for s in summaries)} fires, "
        f"{sum(s.failed for s in summaries)} failed, {sum(s.missed for s in summaries)} missed, "
        f"skipped {skipped or 'none'}"
    ]


async def stop_native(client: Client, ids: list[str]) -> list[str]:
    """Describe, then delete every schedule; sum its action counts."""

    async def one(sid: str) -> tuple[int, int, int]:
        handle: ScheduleHandle = client.get_schedule_handle(sid)
        info = (await handle.describe()).info
        await handle.delete()
        return (
            info.num_actions,
            info.num_actions_skipped_overlap,
            info.num_actions_missed_catchup_window,
        )

    counts = await bounded(ids, one)
    actions, overlap, missed = (sum(c[i] for c in counts) for i in range(3))
    return [
        f"whole run: {actions} actions, {overlap} skipped (overlap), {missed} missed "
        "(catch-up window)"
    ]


async def settled_jobs(client: Client, queue: str, timeout: float = 120) -> list[Any]:
    """Every echo job on the queue, once visibility's count has stopped changing for 3 s."""
    query = f'WorkflowType = "EchoJobWorkflow" AND TaskQueue = "{queue}"'
    deadline = time.monotonic() + timeout
    last, stable_since = -1, time.monotonic()
    while True:
        count = (await client.count_workflows(query)).count
        if count != last:
            last, stable_since = count, time.monotonic()
        elif time.monotonic() - stable_since >= 3:
            break
        if time.monotonic() > deadline:
            say(f"visibility still changing after {timeout:.0f}s; reading what is there")
            break
        await asyncio.sleep(0.5)
    jobs = [wf async for wf in client.list_workflows(query, page_size=1000)]
    if len(jobs) != last:
        say(f"visibility counted {last} jobs but listed {len(jobs)}")
    return jobs


def classify(jobs: list[Any], sides: dict[str, Side], start: datetime, end: datetime) -> int:
    """Lateness of each job of a fire in [start, end), by side; returns jobs of neither side."""
    strays = 0
    for wf in jobs:
        attrs = wf.typed_search_attributes
        ours_at, native_at = attrs.get(SCHEDULED_FIRE_TIME), attrs.get(SCHEDULED_START)
        if ours_at is not None and attrs.get(SCHEDULE_NAME) and OURS in sides:
            side, scheduled = sides[OURS], ours_at
        elif native_at is not None and attrs.get(SCHEDULED_BY) and NATIVE in sides:
            side, scheduled = sides[NATIVE], native_at
        else:
            strays += 1
            continue
        if start <= scheduled < end:
            side.lateness.append((wf.start_time - scheduled).total_seconds())
        else:
            side.outside += 1
    return strays


# --- report ------------------------------------------------------------------------------------


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of all at or below it."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def print_table(sides: list[Side], every: timedelta, a: argparse.Namespace) -> None:
    print(
        f"lateness of interval fires (job start time - scheduled time), window {a.duration:g} s, "
        f"{a.workers} worker process(es), job `echo`, one dev server"
    )
    head = (
        f"{'side':7} {'schedules':>9} {'interval':>8} {'expected':>8} {'run':>6} {'run %':>6} "
        f"{'p50 s':>7} {'p99 s':>7} {'max s':>7}"
    )
    print(head)
    p99: dict[str, float] = {}
    for s in sides:
        late = sorted(s.lateness)
        pct = 100 * len(late) / s.expected if s.expected else 0.0
        if late:
            p50, p99[s.name], top = quantile(late, 0.5), quantile(late, 0.99), late[-1]
            figures = f"{p50:>7.3f} {p99[s.name]:>7.3f} {top:>7.3f}"
        else:
            figures = f"{'-':>7} {'-':>7} {'-':>7}"
        print(
            f"{s.name:7} {s.schedules:>9} {f'{every.total_seconds():g}s':>8} {s.expected:>8} "
            f"{len(late):>6} {pct:>5.1f}% {figures}"
        )
    if OURS in p99 and NATIVE in p99:
        ratio = p99[OURS] / p99[NATIVE] if p99[NATIVE] > 0 else float("inf")
        print(f"p99 ours / native: {ratio:.1f}x")
    for s in sides:
        for note in s.notes:
            print(f"  {s.name}: {note}")
    print(
        f"command: {' '.join([os.path.relpath(sys.executable, ROOT), *sys.argv])} · machine: "
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()} · ran {utcnow():%Y-%m-%d %H:%M}Z"
    )


# --- main --------------------------------------------------------------------------------------


async def measure(a: argparse.Namespace, tmp: Path) -> None:
    every: timedelta = a.every
    queue: str = a.task_queue
    keys = Keyring.new_entry()
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM stops it as Ctrl-C does: the `finally` below stops what was started.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    say(f"starting the dev server (its output: {tmp / 'temporal.log'})")
    env = await start_dev_server(keys, tmp / "temporal.log")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        client = env.client
        address = client.service_client.config.target_host
        data_dir = tmp / "data"
        data_dir.mkdir()
        shared = worker_env(address, queue, keys) | {
            "DATA_DIR": str(data_dir),
            "CATALOG_DB": str(data_dir / "catalog.db"),  # one database, as a deploy shares one
        }
        procs = start_workers([shared] * a.workers, data_dir.parent)
        say(f"dev server at {address}; workers {[p.pid for p in procs]}, logs in {tmp}")
        await wait_for_pollers(client, queue, procs)

        # Our loops start on the epoch grid too, on its first boundary a moment from now.
        start_at = ceil_to_grid(utcnow() + timedelta(seconds=2), every)
        sides: dict[str, Side] = {}
        specs: list[ScheduleSpec] = []
        creating: list[Awaitable[Any]] = []
        if a.only in (OURS, "both"):
            sides[OURS] = Side(OURS, a.loops, start_at)
            specs = our_specs(a.loops, every, start_at, a.work_ms)
            creating.append(start_schedules(client, specs, queue))
        if a.only in (NATIVE, "both"):
            sides[NATIVE] = Side(NATIVE, a.loops, EPOCH)  # offset 0: aligned to the epoch
            creating.append(create_native(client, a.loops, every, queue))
        began = time.monotonic()
        created = await asyncio.gather(*creating)
        native_ids: list[str] = created[-1] if NATIVE in sides else []
        done = utcnow()
        say(f"created {len(sides) * a.loops} schedules in {time.monotonic() - began:.1f}s")

        window_start = max(ceil_to_grid(done + every, every), start_at + every)
        window_end = window_start + timedelta(seconds=a.duration)
        stop_at = window_end + timedelta(seconds=a.grace)
        for side in sides.values():
            side.expected = side.schedules * fires_in(side.anchor, every, window_start, window_end)
        say(
            f"window {window_start:%H:%M:%S}Z to {window_end:%H:%M:%S}Z, then {a.grace:g}s "
            f"grace: stopping at {stop_at:%H:%M:%S}Z"
        )
        await sleep_until(stop_at)

        say("deleting the schedules")
        stopping: list[Awaitable[list[str]]] = []
        if OURS in sides:
            stopping.append(stop_ours(client, specs))
        if NATIVE in sides:
            stopping.append(stop_native(client, native_ids))
        for side, notes in zip(sides.values(), await asyncio.gather(*stopping), strict=True):
            side.notes.extend(notes)

        say("reading the jobs from visibility")
        jobs = await settled_jobs(client, queue)
        strays = classify(jobs, sides, window_start, window_end)
        for side in sides.values():
            side.notes.append(
                f"{len(side.lateness) + side.outside} jobs seen, {side.outside} outside the window"
            )
        if strays:
            say(f"{strays} echo jobs carried neither side's search attributes")
        stop_workers(procs)
        procs = []
        print_table(list(sides.values()), every, a)
        print(f"worker logs in {tmp}: {log_counts(tmp)}")
    finally:
        stop_workers(procs)
        await env.shutdown()


def main() -> int:
    a = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-lateness-"))  # kept: the worker logs
    try:
        asyncio.run(measure(a, tmp))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"interrupted; worker logs in {tmp}", file=sys.stderr)
        return 130
    except SystemExit as exc:  # a worker that did not come up: one line
        print(exc.code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # temporalio/sdk-python#300: skip interpreter teardown
