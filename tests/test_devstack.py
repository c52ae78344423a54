"""`make run` as a user runs it: the whole stack up, the schedule filling the catalog, Ctrl-C,
and a second run resuming the same schedule. Uses its own ports and data directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 90


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], list[int]]]:
    ports = free_ports(3)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYNC_PRODUCTS_", "TEMPORAL_", "DUMMYJSON_", "CATALOG_"))
    }
    env.update(DATA_DIR=str(tmp_path / "data"), SYNC_PRODUCTS_SCHEDULE="*/2 * * * * *")
    yield env, ports


def devstack(env: dict[str, str], ports: list[int]) -> subprocess.Popen[str]:
    port, ui_port, mirror_port = ports
    return subprocess.Popen(
        [sys.executable, "devstack.py", "--port", str(port), "--ui-port", str(ui_port)]
        + ["--mirror-port", str(mirror_port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], marker: str) -> str:
    seen = []
    deadline = time.monotonic() + READY_TIMEOUT_S
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} from devstack:\n{''.join(seen)}")


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out


def catalog_count(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM products").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def schedule_row(env: dict[str, str], port: int) -> dict[str, object]:
    """`starter.py list --json`'s sync-products row, once the worker answers for it."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while (row := _list_row(env, port))["fires"] is None:  # the new worker's first poll
        assert time.monotonic() < deadline, row
        time.sleep(0.2)
    return row


def _list_row(env: dict[str, str], port: int) -> dict[str, object]:
    run = subprocess.run(
        [sys.executable, "starter.py", "list", "--json"],
        cwd=ROOT,
        env={**env, "TEMPORAL_ADDRESS": f"127.0.0.1:{port}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    (row,) = [r for r in json.loads(run.stdout) if r["name"] == "sync-products"]
    return row


def test_make_run_fills_the_catalog_stops_cleanly_and_resumes(
    stack_env: tuple[dict[str, str], list[int]],
) -> None:
    env, ports = stack_env
    catalog = Path(env["DATA_DIR"]) / "catalog.db"
    proc = devstack(env, ports)
    try:
        banner = read_until(proc, "ready;")
        assert "sync-products: started as schedule/sync-products" in banner
        assert f"http://localhost:{ports[1]}" in banner
        deadline = time.monotonic() + READY_TIMEOUT_S
        while catalog_count(catalog) < 194:  # the schedule fires every 2 s
            assert time.monotonic() < deadline, "catalog not filled"
            time.sleep(0.2)
        fires_before = schedule_row(env, ports[0])["fires"]
        assert isinstance(fires_before, int) and fires_before >= 1
    finally:
        out = stop(proc)
    assert "stopped temporal" in out and "stopped worker" in out and "stopped mirror" in out
    for port in ports:  # everything it started is gone
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))

    proc = devstack(env, ports)
    try:
        banner = read_until(proc, "ready;")
        assert "sync-products: already running" in banner  # same loop, no duplicate
        row = schedule_row(env, ports[0])
        assert isinstance(row["fires"], int) and row["fires"] >= fires_before  # no lost counts
    finally:
        stop(proc)
    assert catalog_count(catalog) == 194


def test_a_busy_port_is_one_line_naming_it(stack_env: tuple[dict[str, str], list[int]]) -> None:
    env, ports = stack_env
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports[0]))
        holder.listen()
        proc = devstack(env, ports)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines == [
        f"error: port {ports[0]} (Temporal gRPC) is busy: stop what holds it, "
        "or set --port, or TEMPORAL_ADDRESS to use your server"
    ]
