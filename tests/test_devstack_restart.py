"""`make run` keeps going when its worker dies: the server stays, a new worker is started (one
line saying so), and a `starter.py run` waiting on a sync at that moment still gets its report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from client.errors import UserError
from devtools.devstack import CONFIG_EXIT, WorkerRestarts
from tests.dev_stack import READY_TIMEOUT_S, ROOT, Stack, free_ports, stack_environment
from tests.test_devstack import catalog_counts, descendants, proc_text


def worker_pids(stack: Stack) -> list[int]:
    found = []
    for pid in descendants(stack.proc.pid):
        try:
            if "worker.py" in proc_text(pid, "cmdline"):
                found.append(pid)
        except OSError:
            continue  # gone meanwhile
    return found


def slow_mirror(banner: str, latency_ms: int) -> None:
    """Through the mirror's admin API, as the banner shows it: each page takes a while."""
    (line,) = [line for line in banner.splitlines() if "mirror admin" in line]
    name, _, value = line.split("'")[1].partition(": ")
    reply = httpx.put(
        line.split()[-1], headers={name: value}, json={"latency_ms": latency_ms}, timeout=10
    )
    assert reply.status_code == 200, reply.text


def test_a_killed_worker_is_restarted_and_a_waiting_run_completes(tmp_path: Path) -> None:
    # A schedule that does not fire during the test: the one sync is the CLI's.
    env = stack_environment(tmp_path / "data", SYNC_PRODUCTS_SCHEDULE="0 0 1 1 *")
    catalog = tmp_path / "data" / "catalog.db"
    stack = Stack(env, free_ports(5))
    run: subprocess.Popen[str] | None = None
    err = tmp_path / "run.err"
    try:
        banner = stack.read_until("ready;")
        slow_mirror(banner, 300)
        (first,) = worker_pids(stack)
        with err.open("w") as stderr:
            run = subprocess.Popen(
                [sys.executable, "starter.py", "run", "sync-products", "--connection", "acme"]
                + ["--batch-size", "5"],
                cwd=ROOT,
                env=env,  # no TEMPORAL_ADDRESS: it finds the stack
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not catalog_counts(catalog).get("acme"):  # mid-sync
            assert run.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        os.kill(first, signal.SIGKILL)
        stack.read_until("worker exited with code -9; restarting it in 0.5 s (restart 1)")
        out, _ = run.communicate(timeout=READY_TIMEOUT_S)
        assert run.returncode == 0, err.read_text()
        assert "sync-products: completed" in out
        assert "Traceback" not in err.read_text()
        assert catalog_counts(catalog).get("acme") == 194
        assert stack.proc.poll() is None, stack.output()  # the stack is still up
        (second,) = worker_pids(stack)
        assert second != first
    finally:
        if run is not None and run.poll() is None:
            run.kill()
            run.wait()
        out = stack.stop()
    assert "stopping the rest" not in out
    assert f"stopped worker (pid {second})" in out and "stopped temporal" in out


class TestWorkerRestarts:
    """The backoff and the cap, on a clock of our own."""

    def test_backoff_doubles_to_its_cap_and_resets_after_a_healthy_run(self) -> None:
        r = WorkerRestarts()
        delays = [r.after_exit(-9, ran_s=1, now=100.0 * k) for k in range(8)]  # apart: no cap
        assert delays == [0.5, 1, 2, 4, 8, 10, 10, 10]
        assert r.after_exit(-9, ran_s=WorkerRestarts.HEALTHY_S, now=900) == 0.5
        assert r.count == 9

    def test_the_sixth_exit_within_a_minute_stops_the_stack(self) -> None:
        r = WorkerRestarts()
        for k in range(5):
            r.after_exit(-9, ran_s=1, now=float(k))
        with pytest.raises(UserError, match=r"6th time within 60 s; not restarting it again"):
            r.after_exit(-9, ran_s=1, now=10.0)
        assert r.after_exit(-9, ran_s=1, now=70.0) == 10  # the first ones are a minute old

    def test_a_configuration_error_is_not_retried(self) -> None:
        with pytest.raises(UserError, match="code 2 .*stopping the rest"):
            WorkerRestarts().after_exit(CONFIG_EXIT, ran_s=0, now=0)
