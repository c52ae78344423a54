"""How long a sync stalls when its worker is killed: kill-to-recovery for N kills, mid-sync.

Starts its own dev server, a local mirror (with latency, so a batch takes a while) and one worker
process (`python worker.py`). Each round starts a sync of the 194 products, waits until a few
batches are done, kills the worker with SIGKILL and at once starts a new one (as `make run`
restarts it), then reads the times off the sync's history (server timestamps):

  batch      the first batch activity completed after the kill (on the new worker: the dead
             worker's batches time out on their heartbeat and are retried there)
  recovered  the first workflow task completed after that: the new worker has the workflow
             and counts the batch, and starts the next ones; what `starter.py run`'s progress
             bar shows moving again. This is "recovery".

Prints both as min / median / max over the rounds, and, per kill, what the workflow waited on:
`sticky` (its next task sat on the dead worker's sticky queue until STICKY_TIMEOUT) or `task`
(the kill landed inside a workflow task, which the server gives back after the workflow task
timeout: 10 s unless --task-timeout; it is set where the job is started). `--kill-at
completion` kills right after a batch completes (when the worker is most likely inside a
workflow task); `random` (the default) at a seeded random moment up to a second later.
Usage: .venv/bin/python bench/recovery.py [--kills 10] [--latency-ms 600] [--kill-at random]
       [--task-timeout S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.fernet import Fernet  # noqa: E402
from temporalio.api.enums.v1 import EventType, TimeoutType  # noqa: E402
from temporalio.api.history.v1 import HistoryEvent  # noqa: E402
from temporalio.client import Client, WorkflowHandle  # noqa: E402

from bench.devserver import start_dev_server  # noqa: E402
from bench.workers import start_workers, stop_workers, wait_for_pollers, worker_env  # noqa: E402
from devtools.mirror import Faults, Mirror  # noqa: E402
from jobs.sync_products import SyncProductsInput  # noqa: E402
from workflows.sync_products import SyncProductsWorkflow  # noqa: E402

BATCH = "sync_products_batch"
ROUND_TIMEOUT_S = 120.0


def _at(event: HistoryEvent) -> float:
    return event.event_time.ToMicroseconds() / 1e6


async def _history(handle: WorkflowHandle[Any, Any]) -> list[HistoryEvent]:
    return list((await handle.fetch_history()).events)


def _batches_done(events: list[HistoryEvent]) -> int:
    return sum(1 for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)


def waited_on(events: list[HistoryEvent], killed_at: float) -> str:
    """Which workflow task timeout the new worker waited for after the kill, if any."""
    kinds = {
        e.workflow_task_timed_out_event_attributes.timeout_type
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT and _at(e) > killed_at
    }
    names = {
        TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START: "sticky",
        TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE: "task",
    }
    return "+".join(sorted(names.get(k, str(k)) for k in kinds)) or "-"


def recovery(events: list[HistoryEvent], killed_at: float, dead: str) -> tuple[float, float] | None:
    """(first batch completed by another worker than `dead`'s identity, first workflow task
    completed after it), seconds after the kill; None while the workflow has not recovered."""
    batch_names = {
        e.event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == BATCH
    }
    by = {
        e.event_id: e.activity_task_started_event_attributes.identity
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    }
    batch_at = None
    for e in events:
        if _at(e) <= killed_at:
            continue
        attrs = e.activity_task_completed_event_attributes
        if (
            batch_at is None
            and e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            and attrs.scheduled_event_id in batch_names
            and by.get(attrs.started_event_id) != dead  # not one the dead worker just finished
        ):
            batch_at = _at(e)
        elif batch_at is not None and e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return batch_at - killed_at, _at(e) - killed_at
    return None


async def one_round(
    client: Client,
    queue: str,
    env: dict[str, str],
    logs: Path,
    worker: list[subprocess.Popen[bytes]],
    delay_s: float,
    task_timeout: timedelta | None,
) -> tuple[float, float, str]:
    handle = await client.start_workflow(
        SyncProductsWorkflow.run,
        SyncProductsInput(batch_size=5, delete_missing=False, tenant=uuid.uuid4().hex[:8]),
        id=f"recovery-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        task_timeout=task_timeout,
    )
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    while _batches_done(await _history(handle)) < 3:  # mid-sync: well under way
        assert time.monotonic() < deadline, "the sync did not start"
        await asyncio.sleep(0.1)
    await asyncio.sleep(delay_s)  # the moment of the kill within the sync
    (proc,) = worker
    dead = f"{proc.pid}@{socket.gethostname()}"  # the SDK's default worker identity
    killed_at = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    worker[:] = start_workers([env], logs)
    while (found := recovery(await _history(handle), killed_at, dead)) is None:
        assert time.monotonic() < deadline, "no recovery"
        await asyncio.sleep(0.2)
    await handle.terminate("measured")
    return (*found, waited_on(await _history(handle), killed_at))


def _row(name: str, values: list[float]) -> str:
    return (
        f"{name:<10} {min(values):6.1f} {statistics.median(values):8.1f} {max(values):6.1f}   "
        + " ".join(f"{v:.1f}" for v in values)
    )


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--latency-ms", type=int, default=600, help="the mirror's, per request")
    p.add_argument("--kill-at", choices=("random", "completion"), default="random")
    p.add_argument("--seed", type=int, default=20)
    p.add_argument(
        "--task-timeout", type=float, help="the sync's workflow task timeout, s (server: 10)"
    )
    a = p.parse_args()
    rng = random.Random(a.seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    keys = "bench:" + Fernet.generate_key().decode()
    server = await start_dev_server(keys, tmp / "temporal.log")
    mirror = Mirror(faults=Faults(latency_ms=a.latency_ms)).start()
    queue = f"recovery-{secrets.token_hex(4)}"
    address = server.client.service_client.config.target_host
    env = worker_env(address, queue, keys)
    env.update(DUMMYJSON_BASE_URL=mirror.url, CATALOG_DB=str(tmp / "catalog.db"))
    env.update(DATA_DIR=str(tmp), METRICS_ADDRESS="off")
    worker = start_workers([env], tmp)
    try:
        await wait_for_pollers(server.client, queue, worker)
        rows: list[tuple[float, float, str]] = []
        for k in range(a.kills):
            delay = rng.uniform(0, 1) if a.kill_at == "random" else 0.0
            task_timeout = timedelta(seconds=a.task_timeout) if a.task_timeout else None
            rows.append(
                await one_round(server.client, queue, env, tmp, worker, delay, task_timeout)
            )
            batch, recovered, why = rows[-1]
            print(
                f"kill {k + 1} (+{delay:.2f} s): batch {batch:.1f} s, recovered {recovered:.1f} s"
                f", waited on {why}",
                flush=True,
            )
    finally:
        stop_workers(worker)
        mirror.stop()
        await server.shutdown()
    print(
        f"\n{a.kills} worker kills mid-sync (mirror latency {a.latency_ms} ms, kill at "
        f"{a.kill_at}, workflow task timeout {a.task_timeout or 10:g} s), seconds:"
    )
    print(f"{'':<10} {'min':>6} {'median':>8} {'max':>6}   each")
    print(_row("batch", [r[0] for r in rows]))
    print(_row("recovered", [r[1] for r in rows]))
    print(f"logs: {tmp}")


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # the SDK's bridge threads can abort the interpreter's teardown
