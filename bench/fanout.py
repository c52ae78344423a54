"""Time one fire of a large fan-out (the `numbers` expansion, N `echo` jobs) on a dev server.

A fire with thousands of inputs goes loop -> FanOutWorkflow -> one FanOutPageWorkflow per 500
inputs -> one job each. This measures what that costs and whether it stays inside Temporal's
limits: wall time from starting the loop to the fan-out's completion, how fast jobs start (from
their visibility start times) and finish, the largest history of any workflow involved (the
50k-event limit is the one that matters), and this process's peak RSS (the worker runs here).

Starts its own Temporal dev server and worker (nothing else needs to run); one task queue per
size. Beside each size, the reference: the same N jobs started straight from a client (a plain
loop of `client.start_workflow`, and 50 starts at once; no schedule loop), with the ratios.

With --workers K the fan-out runs twice per size, on worker processes (`python worker.py`, as a
deploy runs them): once on one worker with the SQLite database, and once on K workers, each with
its own DATA_DIR, sharing one PostgreSQL that this script starts from the machine's binaries.
Prints one table.
Usage: .venv/bin/python bench/fanout.py [--sizes 1000 10000] [--no-raw] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.client import Client, WorkflowHandle  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from activities.expansion import PAGE_SIZE  # noqa: E402  (the `numbers` inputs are tiny)
from bench.devserver import start_dev_server  # noqa: E402
from bench.workers import start_workers, stop_workers, wait_for_pollers, worker_env  # noqa: E402
from client.codec import Keyring  # noqa: E402
from client.loops import control  # noqa: E402
from client.settings import Settings  # noqa: E402
from devtools.pg import MissingPrerequisite, PgError, start_local  # noqa: E402
from scheduling.spec import ScheduleSpec  # noqa: E402
from worker import build_worker  # noqa: E402
from workflows.echo import EchoJobWorkflow  # noqa: E402
from workflows.fanout import FanOutWorkflow  # noqa: E402
from workflows.models import FanOutResult, ScheduleInput  # noqa: E402
from workflows.schedule import ScheduleWorkflow  # noqa: E402

JOB_SAMPLE = 20
RAW_IN_FLIGHT = (1, 50)  # a plain loop, and a script that starts 50 at once
TUNING: dict[str, Any] = {"max_concurrent_workflow_tasks": 50}


@dataclass
class Row:
    inputs: int
    completed: int = 0
    failed: int = 0
    wall_s: float = 0.0
    started_per_s: float = 0.0
    completed_per_s: float = 0.0
    max_history: int = 0
    max_history_of: str = ""
    peak_rss_mb: float = 0.0
    note: str = ""
    kind: str = "fan-out"


def peak_rss_mb() -> float:
    """This process's peak resident set (the worker included): KiB on Linux, bytes on macOS."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


async def history_length(client: Client, wf_id: str) -> int:
    desc = await client.get_workflow_handle(wf_id).describe()
    return desc.raw_description.workflow_execution_info.history_length


async def wait_for_fire(client: Client, loop_id: str, timeout: float) -> str:
    """The fan-out workflow's id, once the loop has recorded its first fire."""
    handle = client.get_workflow_handle_for(ScheduleWorkflow.run, loop_id)
    deadline = time.perf_counter() + timeout
    while True:
        view = await handle.query(ScheduleWorkflow.describe)
        if view.state.recent and view.state.recent[-1].children:
            return view.state.recent[-1].children[0]
        if view.state.recent and view.state.recent[-1].outcome != "started":
            raise RuntimeError(f"fire did not start: {view.state.recent[-1]}")
        if time.perf_counter() > deadline:
            raise TimeoutError("the loop did not fire")
        await asyncio.sleep(0.05)


async def start_span_s(client: Client, queue: str, n: int, timeout: float = 60) -> float:
    """Seconds between the first and the last job's start, from visibility (which may lag)."""
    query = f'WorkflowType = "EchoJobWorkflow" AND TaskQueue = "{queue}"'
    deadline = time.perf_counter() + timeout
    while (await client.count_workflows(query)).count < n:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"visibility shows fewer than {n} jobs after {timeout}s")
        await asyncio.sleep(0.5)
    starts = [wf.start_time async for wf in client.list_workflows(query, page_size=1000)]
    return (max(starts) - min(starts)).total_seconds()


@contextlib.contextmanager
def postgres(tmp: Path) -> Iterator[str]:
    """A PostgreSQL of its own for the run, from the machine's binaries; its database's URL.
    Durability off (fsync), as in the tests: this measures the workers, not the disk."""
    base = tmp / "postgres"
    base.mkdir()
    try:
        with start_local(base, needed_for="bench/fanout.py --workers") as pg:
            yield pg.create_database("bench", "bench", secrets.token_urlsafe(12))
    except (MissingPrerequisite, PgError) as exc:
        raise SystemExit(f"error: {exc}") from None


def queue_settings(tmp: Path, queue: str) -> Settings:
    """A worker of its own for one measurement: its task queue and application database."""
    return Settings(
        catalog_db=tmp / f"{queue}.db",
        temporal_task_queue=queue,
        session_secret="x" * 40,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def serving(
    env: WorkflowEnvironment, tmp: Path, queue: str, processes: list[dict[str, str]] | None
) -> AsyncIterator[None]:
    """A worker in this process (None), or one worker process per environment in `processes`."""
    if processes is None:
        async with build_worker(env.client, queue_settings(tmp, queue), **TUNING):
            yield
        return
    procs = start_workers(processes, tmp)
    try:
        await wait_for_pollers(env.client, queue, procs)
        yield
    finally:
        stop_workers(procs)


def process_envs(
    env: WorkflowEnvironment, tmp: Path, queue: str, keys: str, databases: list[str]
) -> list[dict[str, str]]:
    """One worker process per database URL, each with a DATA_DIR of its own (another machine)."""
    address = env.client.service_client.config.target_host
    shared = worker_env(address, queue, keys) | {"WORKER_MAX_CONCURRENT_WORKFLOW_TASKS": "50"}
    envs = []
    for i, url in enumerate(databases):
        data_dir = tmp / f"{queue}-{i}"
        data_dir.mkdir()
        envs.append(shared | {"DATA_DIR": str(data_dir), "APP_DATABASE_URL": url})
    return envs


async def run_size(
    env: WorkflowEnvironment,
    tmp: Path,
    n: int,
    timeout: float,
    workers: Callable[[str], list[dict[str, str]]] | None = None,
    kind: str = "fan-out",
) -> Row:
    """One fire of N jobs; `workers(queue)` gives the worker processes (None: in this one)."""
    client = env.client
    queue = f"bench-fanout-{n}-{uuid.uuid4().hex[:8]}"
    spec = ScheduleSpec(
        name=f"bench-{n}-{uuid.uuid4().hex[:6]}",
        job="echo",
        every="1d",
        expansion="numbers",
        args={"count": n},
    )
    row = Row(inputs=n, kind=kind)
    async with serving(env, tmp, queue, workers(queue) if workers else None):
        started = time.perf_counter()
        loop = await client.start_workflow(
            ScheduleWorkflow.run,
            ScheduleInput(spec=spec),
            id=f"schedule/{spec.name}",
            task_queue=queue,
        )
        base = await wait_for_fire(client, loop.id, timeout=60)
        fan_out = client.get_workflow_handle(base, result_type=FanOutResult)
        try:
            result = await asyncio.wait_for(fan_out.result(), timeout)
        except TimeoutError:
            progress = await fan_out.query(FanOutWorkflow.progress)
            row.completed, row.failed = progress.completed, progress.failed
            row.wall_s = time.perf_counter() - started
            row.note = f"timed out after {timeout:.0f}s: {progress.jobs} jobs started"
            await control(loop, ScheduleWorkflow.delete)
            row.peak_rss_mb = peak_rss_mb()
            return row
        row.wall_s = time.perf_counter() - started
        row.completed, row.failed = result.completed, result.failed
        if result.errors:
            row.note = f"errors: {next(iter(result.errors.items()))}"
        row.completed_per_s = n / row.wall_s
        span = await start_span_s(client, queue, n)
        row.started_per_s = n / span if span > 0 else float("inf")
        await control(loop, ScheduleWorkflow.delete)
        await loop.result()
    pages = [f"{base}/page-{p:04d}" for p in range(-(-n // PAGE_SIZE))]
    jobs = [f"{base}/n{i * n // JOB_SAMPLE:06d}" for i in range(min(JOB_SAMPLE, n))]
    ids = [loop.id, base, *pages, *jobs]
    lengths = await asyncio.gather(*(history_length(client, i) for i in ids))
    row.max_history, row.max_history_of = max(zip(lengths, ids, strict=True))
    row.peak_rss_mb = peak_rss_mb()
    return row


async def raw_size(
    env: WorkflowEnvironment, tmp: Path, n: int, timeout: float, in_flight: int
) -> Row:
    """The reference: the same N `echo` jobs started straight from a client, `in_flight` starts
    at once (1: a plain `for` loop of `client.start_workflow`), on a worker of the same options."""
    client = env.client
    queue = f"bench-raw-{n}-{uuid.uuid4().hex[:8]}"
    settings = queue_settings(tmp, queue)
    row = Row(inputs=n)
    slots = asyncio.Semaphore(in_flight)
    prefix = f"raw-{uuid.uuid4().hex[:6]}"

    async def start(i: int) -> WorkflowHandle[Any, Any]:
        async with slots:
            return await client.start_workflow(
                EchoJobWorkflow.run, {"n": i}, id=f"{prefix}/n{i:06d}", task_queue=queue
            )

    async with build_worker(client, settings, **TUNING):
        started = time.perf_counter()
        handles = await asyncio.gather(*(start(i) for i in range(n)))
        results = await asyncio.wait_for(
            asyncio.gather(*(h.result() for h in handles), return_exceptions=True), timeout
        )
        row.wall_s = time.perf_counter() - started
        row.failed = sum(isinstance(r, BaseException) for r in results)
        row.completed = n - row.failed
        row.completed_per_s = n / row.wall_s
        span = await start_span_s(client, queue, n)
        row.started_per_s = n / span if span > 0 else float("inf")
    lengths = await asyncio.gather(*(history_length(client, h.id) for h in handles[:JOB_SAMPLE]))
    row.max_history, row.max_history_of = max(lengths), f"{prefix}/… (a job)"
    row.peak_rss_mb = peak_rss_mb()
    row.note = f"raw {in_flight}: client.start_workflow per job, {in_flight} at once, no loop"
    row.kind = f"raw {in_flight}"
    return row


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'':>22} {'inputs':>7} {'completed':>9} {'failed':>6} {'wall s':>8} {'started/s':>9} "
        f"{'completed/s':>11} {'max history':>11}  {'of workflow':<44} {'peak RSS MB':>11}"
    )
    print(head)
    for r in rows:
        print(
            f"{r.kind:>22} {r.inputs:>7} {r.completed:>9} {r.failed:>6} {r.wall_s:>8.1f} "
            f"{r.started_per_s:>9.1f} {r.completed_per_s:>11.1f} {r.max_history:>11}  "
            f"{r.max_history_of:<44} {r.peak_rss_mb:>11.0f}"
        )
        if r.note and not r.kind.startswith("raw"):
            print(f"        note: {r.note}")
    fan = {r.inputs: r for r in rows if r.kind == "fan-out"}
    for raw in (r for r in rows if r.kind.startswith("raw")):
        if raw.inputs in fan and raw.started_per_s:
            ratio = fan[raw.inputs].started_per_s / raw.started_per_s
            done = fan[raw.inputs].completed_per_s / raw.completed_per_s
            print(
                f"{raw.inputs} jobs: fan-out / {raw.kind} start rate {ratio:.2f}x, "
                f"completion rate {done:.2f}x"
            )
    sides = [r for r in rows if r.kind.startswith(("SQLite", "PostgreSQL"))]
    for one, many in zip(sides[::2], sides[1::2], strict=True):
        print(
            f"{one.inputs} jobs: {many.kind} / {one.kind}: start rate "
            f"{many.started_per_s / one.started_per_s:.2f}x, completion rate "
            f"{many.completed_per_s / one.completed_per_s:.2f}x"
        )


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for each fire")
    p.add_argument("--no-raw", action="store_true", help="skip the raw start_workflow reference")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="K worker processes on one PostgreSQL, beside 1 worker process on SQLite",
    )
    a = p.parse_args()
    keys = Keyring.new_entry()
    rows = []
    with tempfile.TemporaryDirectory() as name, contextlib.ExitStack() as stack:
        tmp = Path(name)
        env = await start_dev_server(keys, tmp / "temporal.log")
        pg_url = stack.enter_context(postgres(tmp)) if a.workers else ""
        for n in a.sizes:
            if a.workers:
                sqlite_url = f"sqlite:///{tmp / f'sqlite-{n}.db'}"
                rows.append(
                    await run_size(
                        env,
                        tmp,
                        n,
                        a.timeout,
                        lambda q, u=sqlite_url: process_envs(env, tmp, q, keys, [u]),  # type: ignore[misc]
                        "SQLite, 1 worker",
                    )
                )
                rows.append(
                    await run_size(
                        env,
                        tmp,
                        n,
                        a.timeout,
                        lambda q: process_envs(env, tmp, q, keys, [pg_url] * a.workers),
                        f"PostgreSQL, {a.workers} workers",
                    )
                )
            else:
                rows.append(await run_size(env, tmp, n, a.timeout))
            if not a.no_raw:
                for in_flight in RAW_IN_FLIGHT:
                    rows.append(await raw_size(env, tmp, n, a.timeout, in_flight))
        await env.shutdown()
    print(
        f"one fire of the `numbers` expansion: N `echo` jobs in pages of {PAGE_SIZE}, 4 pages in "
        f"flight, 50 concurrent workflow tasks; max history over the loop, the fan-out, every "
        f"page and {JOB_SAMPLE} jobs; peak RSS is this process's (worker included), cumulative"
        + ("; worker processes' RSS not included" if a.workers else "")
    )
    print_table(rows)
    print(
        f"command: {' '.join([os.path.relpath(sys.executable, ROOT), *sys.argv])} · machine: "
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}"
    )


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # temporalio/sdk-python#300: skip interpreter teardown
