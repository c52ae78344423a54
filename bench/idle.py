"""Worker memory for N idle schedule loops.

Starts its own dev server and one worker as a separate process (`python worker.py`, configured
by environment as a deploy runs it: TEMPORAL_ADDRESS, TEMPORAL_TASK_QUEUE, DATA_DIR, PAYLOAD_KEYS,
plus any --worker-env), waits for it to poll, then starts N loops of job `echo` every 1h with
`start_schedules` (what `starter.py start` runs). Each loop's first fire is an hour out
(`start_at`), so a loop's first workflow task plans and starts its timer and nothing else runs.

Then, without sleeping blindly: each loop is described until its first workflow task has
completed (history of 4+ events, no workflow task pending), then queried once (`describe`),
which brings any loop the worker no longer holds back into its workflow cache (the SDK keeps up
to 1,000 by default). Then the worker's VmRSS (now) and VmHWM (peak) are read from
/proc/<pid>/status, beside its VmRSS before any loop started. Every process started here is
stopped by its PID, on errors too.

Usage: .venv/bin/python bench/idle.py [--loops 1000] [--worker-env KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.client import Client  # noqa: E402

from bench.devserver import start_dev_server  # noqa: E402
from client.codec import Keyring  # noqa: E402
from client.connect import worker_polling  # noqa: E402
from client.errors import OneLineParser  # noqa: E402
from client.loops import QUERY_TIMEOUT, START_CONCURRENCY, schedule_id, start_schedules  # noqa: E402
from scheduling.spec import ScheduleSpec  # noqa: E402
from workflows.schedule import ScheduleWorkflow  # noqa: E402

READY_TIMEOUT_S = 60.0  # the worker polling
SETTLE_TIMEOUT_S = 600.0  # every loop's first workflow task done
POLL_S = 0.1
STOP_TIMEOUT_S = 30.0
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The worker's settings come from here only, not from this shell.
DROPPED = ("SYNC_PRODUCTS_", "TEMPORAL_", "GRACEFUL_", "PAYLOAD_", "MEDUSA_")
DROPPED_KEYS = ("DATA_DIR", "CATALOG_DB", "CONNECTIONS_KEY", "SESSION_SECRET")


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM, ... of a process, in MB (the kernel reports kB)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Vm") and value.strip().endswith("kB"):
            out[key] = int(value.split()[0]) / 1024
    return out


def tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def start_worker(
    address: str, queue: str, data_dir: Path, keys: str, extra: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(DROPPED) and k not in DROPPED_KEYS
    }
    env.update(
        TEMPORAL_ADDRESS=address,
        TEMPORAL_TASK_QUEUE=queue,
        DATA_DIR=str(data_dir),
        PAYLOAD_KEYS=keys,
        **extra,
    )
    out = log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")], env=env, cwd=ROOT, stdout=out, stderr=out
        )
    finally:
        out.close()  # the worker holds its own copy


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not gone after STOP_TIMEOUT_S; by its PID only."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f}s")
        await asyncio.sleep(POLL_S)


async def for_each(ids: list[str], fn: Callable[[str], Awaitable[Any]]) -> None:
    slots = asyncio.Semaphore(START_CONCURRENCY)

    async def one(wf_id: str) -> None:
        async with slots:
            await fn(wf_id)

    await asyncio.gather(*(one(i) for i in ids))


async def first_task_done(client: Client, wf_id: str) -> bool:
    """Started, scheduled, started, completed: at least 4 events, and no task pending."""
    raw = (await client.get_workflow_handle(wf_id).describe()).raw_description
    done = raw.workflow_execution_info.history_length >= 4
    return done and not raw.HasField("pending_workflow_task")


async def run(loops: int, extra: dict[str, str]) -> None:
    keys = Keyring.new_entry()
    queue = f"bench-idle-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server_log, worker_log = tmp / "temporal.log", tmp / "worker.log"
        env = await start_dev_server(keys, server_log)
        proc: subprocess.Popen[bytes] | None = None
        try:
            client = env.client
            address = client.service_client.config.target_host
            proc = start_worker(address, queue, tmp / "data", keys, extra, worker_log)
            worker = proc

            async def polling() -> bool:
                if worker.poll() is not None:
                    raise RuntimeError(
                        f"the worker exited ({worker.returncode}):\n{tail(worker_log)}"
                    )
                return await worker_polling(client, queue)

            await until("the worker polling", polling, READY_TIMEOUT_S)
            baseline = memory_mb(proc.pid)["VmRSS"]

            first = datetime.now(UTC) + timedelta(hours=1)
            specs = [
                ScheduleSpec(name=f"idle-{i:06d}", job="echo", every="1h", start_at=first)
                for i in range(loops)
            ]
            ids = [schedule_id(s.name) for s in specs]
            began = time.perf_counter()
            await start_schedules(client, specs, queue)
            start_s = time.perf_counter() - began

            async def settled(wf_id: str) -> None:
                await until(
                    f"{wf_id}'s first workflow task",
                    lambda: first_task_done(client, wf_id),
                    SETTLE_TIMEOUT_S,
                )

            await for_each(ids, settled)
            settle_s = time.perf_counter() - began

            async def query(wf_id: str) -> None:
                await client.get_workflow_handle(wf_id).query(
                    ScheduleWorkflow.describe, rpc_timeout=timedelta(seconds=QUERY_TIMEOUT * 6)
                )

            began = time.perf_counter()
            await for_each(ids, query)
            query_s = time.perf_counter() - began
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited ({proc.returncode}):\n{tail(worker_log)}")
            mem = memory_mb(proc.pid)
        finally:
            if proc is not None:
                stop(proc)
            await env.shutdown()

    extras = " ".join(f"{k}={v}" for k, v in extra.items()) or "none"
    print(
        f"{loops} idle loops (echo, every 1h, first fire in 1h) on one dev server, one worker "
        f"process; worker env extras: {extras}"
    )
    head = (
        f"{'loops':>6} {'start s':>8} {'settled s':>9} {'query s':>8} "
        f"{'baseline MB':>11} {'worker RSS MB':>13} {'peak MB':>8}"
    )
    print(head)
    print(
        f"{loops:>6} {start_s:>8.1f} {settle_s:>9.1f} {query_s:>8.1f} "
        f"{baseline:>11.0f} {mem['VmRSS']:>13.0f} {mem['VmHWM']:>8.0f}"
    )
    print(
        "start s: start_schedules; settled s: from the start until every loop's first workflow "
        "task is done; query s: one describe query of each loop; baseline: the worker's RSS "
        "before any loop"
    )


def parse_args() -> argparse.Namespace:
    p = OneLineParser(prog="bench/idle.py", description=__doc__.split("\n\n")[0])

    def loop_count(text: str) -> int:
        if not text.isdigit() or not 1 <= int(text) <= 100_000:
            raise argparse.ArgumentTypeError(f"{text!r}: use a whole number from 1 to 100000")
        return int(text)

    def env_pair(text: str) -> tuple[str, str]:
        key, sep, value = text.partition("=")
        if not sep or not ENV_KEY.match(key):
            raise argparse.ArgumentTypeError(f"{text!r}: use KEY=VALUE, e.g. FOO=1")
        return key, value

    p.add_argument("--loops", type=loop_count, default=1000, help="loops to start (1 to 100000)")
    p.add_argument(
        "--worker-env",
        type=env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra environment variable for the worker (repeatable)",
    )
    return p.parse_args()


if __name__ == "__main__":
    args = parse_args()
    code = 0
    try:
        asyncio.run(run(args.loops, dict(args.worker_env)))
    except (RuntimeError, TimeoutError) as exc:  # a worker that died, a wait that ran out
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except Exception:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # temporalio/sdk-python#300
