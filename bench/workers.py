"""Worker processes for the benchmarks: `python worker.py` as a deploy runs it, each with its
own log and, when asked, its own data directory and application database."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography.fernet import Fernet
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

ROOT = Path(__file__).resolve().parent.parent


def worker_env(address: str, queue: str, keys: str) -> dict[str, str]:
    """What every worker of one run shares: server, task queue, payload keys and secrets."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(
            ("SYNC_PRODUCTS_", "TEMPORAL_", "GRACEFUL_", "PAYLOAD_", "APP_DATABASE_", "CATALOG_")
        )
    }
    env.update(
        TEMPORAL_ADDRESS=address,
        TEMPORAL_NAMESPACE="default",
        TEMPORAL_TASK_QUEUE=queue,
        PAYLOAD_KEYS=keys,
        PAYLOAD_ENCRYPTION="true",
        SESSION_SECRET=secrets.token_urlsafe(32),
        CONNECTIONS_KEY=Fernet.generate_key().decode(),
        GRACEFUL_SHUTDOWN_TIMEOUT="2s",
    )
    return env


def start_workers(envs: list[dict[str, str]], logs: Path) -> list[subprocess.Popen[bytes]]:
    """One worker process per environment, logging to `logs`/worker-<i>.log."""
    procs = []
    for i, env in enumerate(envs):
        with (logs / f"worker-{i}.log").open("ab") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(ROOT / "worker.py")],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                )
            )
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each by PID, then SIGKILL whatever is left after 15 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_for_pollers(
    client: Client, queue: str, procs: list[subprocess.Popen[bytes]], timeout: float = 90
) -> None:
    """Until every process polls the queue; a process that exits first ends the run."""
    deadline = time.monotonic() + timeout
    while True:
        dead = [p.pid for p in procs if p.poll() is not None]
        if dead:
            raise SystemExit(f"error: worker process(es) {dead} exited; see their logs")
        resp = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        if len({p.identity for p in resp.pollers}) >= len(procs):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {len(procs)} workers not polling after {timeout:.0f}s")
        await asyncio.sleep(0.5)
