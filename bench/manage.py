"""`starter.py list --json` and `starter.py delete --all` for N running loops, timed.

Starts its own dev server (with the search attributes the jobs carry) and one worker as a
separate process (`python worker.py`, as a deploy runs it), starts N loops of job `echo` every
1h with `start_schedules` (what `starter.py start` runs), waits until every loop's first
workflow task is done, then runs the real CLI as a user would: `list --json`, then
`delete --all`, each timed from process start to exit.

`--before N --before-rev REV` also times, on N other loops, the CLI of commit REV (checked out
from this repository into a temporary directory) as it was before: its `list --json`, and one
`delete NAME` process per loop (it took one name). Those are also scaled linearly to the main N,
labelled "extrapolated".

Usage: .venv/bin/python bench/manage.py [--loops 1000] [--before 100 --before-rev 9047c7d]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.client import Client  # noqa: E402
from temporalio.service import RPCError  # noqa: E402

from bench.devserver import start_dev_server  # noqa: E402
from bench.workers import start_workers, stop_workers, wait_for_pollers, worker_env  # noqa: E402
from client.codec import Keyring  # noqa: E402
from client.loops import schedule_id, start_schedules  # noqa: E402
from scheduling.spec import ScheduleSpec  # noqa: E402
from workflows.schedule import ScheduleWorkflow  # noqa: E402

QUEUE = "bench-manage"
SETTLE_TIMEOUT_S = 900.0


async def settled(client: Client, names: list[str]) -> None:
    """Until each loop has answered a query once (its first workflow task is done)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    slots = asyncio.Semaphore(32)

    async def one(name: str) -> None:
        async with slots:
            while True:
                try:
                    await client.get_workflow_handle(schedule_id(name)).query(
                        ScheduleWorkflow.describe, rpc_timeout=timedelta(seconds=10)
                    )
                    return
                except RPCError:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"error: {name} did not answer in time") from None
                    await asyncio.sleep(0.5)

    await asyncio.gather(*(one(n) for n in names))


def cli(
    env: dict[str, str], *args: str, root: Path = ROOT
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """starter.py of `root`, run as a user does; its wall time, from process start to exit."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(root / "starter.py"), *args],
        env=env,
        cwd=root,
        text=True,
        capture_output=True,
        timeout=3600,
    )
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(
            f"error: starter.py {' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}"
        )
    return took, done


def checkout(rev: str, into: Path) -> Path:
    """The tree of commit `rev` of this repository, written under `into`."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--loops", type=int, default=1000)
    p.add_argument("--before", type=int, default=0, metavar="N", help="old CLI, on N loops")
    p.add_argument("--before-rev", default=None, metavar="REV", help="the old CLI's commit")
    a = p.parse_args()
    if a.before and not a.before_rev:
        p.error("--before needs --before-rev (the commit whose CLI to time)")
    keys = Keyring.new_entry()
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        env_ = await start_dev_server(keys, logs / "server.log")
        address = env_.client.service_client.config.target_host
        base = worker_env(address, QUEUE, keys)
        workers = start_workers([{**base, "DATA_DIR": str(logs / "data")}], logs)
        cli_env = {**base, "DATA_DIR": str(logs / "cli"), "CATALOG_DB": str(logs / "c.db")}
        results: list[tuple[str, int, float, str]] = []
        try:
            await wait_for_pollers(env_.client, QUEUE, workers)
            if a.before:
                names = [f"old-{i:04}" for i in range(a.before)]
                specs = [ScheduleSpec(name=n, job="echo", every="1h") for n in names]
                await start_schedules(env_.client, specs, QUEUE)
                await settled(env_.client, names)
                old = checkout(a.before_rev, logs / "old")
                took, done = cli(cli_env, "list", "--json", "--file", "none.toml", root=old)
                answered = sum(r["status"] == "running" for r in json.loads(done.stdout))
                note = f"measured, {answered}/{a.before} rows answered"
                results.append(("before: list --json", a.before, took, note))
                scale = a.loops / a.before
                results.append(("before: list --json", a.loops, took * scale, "extrapolated"))
                began = time.perf_counter()
                for name in names:
                    cli(cli_env, "delete", name, root=old)
                took = time.perf_counter() - began
                results.append(("before: delete NAME x N", a.before, took, "measured"))
                results.append(("before: delete NAME x N", a.loops, took * scale, "extrapolated"))

            names = [f"loop-{i:04}" for i in range(a.loops)]
            specs = [ScheduleSpec(name=n, job="echo", every="1h") for n in names]
            began = time.perf_counter()
            await start_schedules(env_.client, specs, QUEUE)
            print(f"started {a.loops} loops in {time.perf_counter() - began:.1f}s", flush=True)
            await settled(env_.client, names)
            took, done = cli(cli_env, "list", "--json", "--file", str(logs / "none.toml"))
            rows = [r for r in json.loads(done.stdout) if r["name"].startswith("loop-")]
            answered = sum(r["status"] == "running" for r in rows)
            results.append(
                ("after: list --json", a.loops, took, f"{answered}/{len(rows)} rows answered")
            )
            took, done = cli(cli_env, "delete", "--all")
            results.append(("after: delete --all", a.loops, took, done.stdout.splitlines()[-1]))
        finally:
            stop_workers(workers)
            await env_.shutdown()
    cores = os.cpu_count()
    print(f"list/delete of N running loops: one dev server, one worker process, {cores} cores")
    print(f"{'what':26} {'N':>5} {'seconds':>8}  note")
    for what, n, seconds, note in results:
        print(f"{what:26} {n:>5} {seconds:>8.1f}  {note}")


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # temporalio/sdk-python#300
