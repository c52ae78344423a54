"""`make run` as a user runs it: the whole stack up, the schedule filling the catalog, Ctrl-C,
and a second run resuming the same schedule. Uses its own ports and data directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.devstack import port_free
from tests.dev_stack import (
    READY_TIMEOUT_S,
    ROOT,
    STOP_TIMEOUT_S,
    Stack,
    free_ports,
    stack_environment,
)


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], list[int]]]:
    ports = free_ports(5)
    env = stack_environment(tmp_path / "data", SYNC_PRODUCTS_SCHEDULE="*/2 * * * * *")
    yield env, ports


# The demo connections: acme syncs every product, globex beauty, initech groceries.
DEMO_COUNTS = {"acme": 194, "globex": 5, "initech": 27}


def catalog_counts(path: Path) -> dict[str, int]:
    """Products per connection (tenant) in the catalog."""
    if not path.exists():
        return {}
    with sqlite3.connect(path) as conn:
        try:
            rows = conn.execute("SELECT tenant, count(*) FROM products GROUP BY tenant")
            return {tenant: int(n) for tenant, n in rows}
        except sqlite3.OperationalError:
            return {}


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


def assert_the_cli_finds_the_stack(banner: str, env: dict[str, str], port: int) -> None:
    """On other ports than the default: the banner says how another shell reaches the stack,
    and `starter.py` in it (TEMPORAL_ADDRESS unset) finds it alone and says so."""
    assert f"export TEMPORAL_ADDRESS=127.0.0.1:{port}" in banner
    assert "connections       3 enabled:" in banner
    assert "TEMPORAL_ADDRESS" not in env
    run = subprocess.run(
        [sys.executable, "starter.py", "list", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == f"using Temporal at 127.0.0.1:{port}, which `make run` started\n"
    assert "sync-products" in [r["name"] for r in json.loads(run.stdout)]


def assert_private(data_dir: Path) -> None:
    """The data directory and what holds histories, keys and the catalog: the owner's only."""
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("temporal.db", "catalog.db", "payload.keys", "connections.key"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name


def assert_no_secret_in_argv(pid: int) -> None:
    """`ps` shows every user each process's command line: no API key or token goes there."""
    for child in descendants(pid):
        try:
            argv = (Path("/proc") / str(child) / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        assert "demo-key-" not in argv and "MIRROR_ADMIN_TOKEN" not in argv, argv


def assert_ui_decodes_through_the_codec_server(ui_port: int, codec_port: int) -> None:
    """The Web UI is told the codec endpoint, and that endpoint answers the UI's origin."""
    ui_settings = httpx.get(f"http://127.0.0.1:{ui_port}/api/v1/settings", timeout=10).json()
    endpoint = ui_settings["Codec"]["Endpoint"]
    assert endpoint == f"http://127.0.0.1:{codec_port}"
    origin = f"http://localhost:{ui_port}"
    reply = httpx.options(f"{endpoint}/decode", headers={"Origin": origin}, timeout=10)
    assert reply.status_code == 204 and reply.headers["access-control-allow-origin"] == origin


def test_make_run_fills_the_catalog_stops_cleanly_and_resumes(
    stack_env: tuple[dict[str, str], list[int]],
) -> None:
    env, ports = stack_env
    catalog = Path(env["DATA_DIR"]) / "catalog.db"
    stack = Stack(env, ports)
    try:
        banner = stack.read_until("ready;")
        assert "sync-products: started as schedule/sync-products" in banner
        assert f"http://localhost:{ports[1]}" in banner
        deadline = time.monotonic() + READY_TIMEOUT_S
        while catalog_counts(catalog) != DEMO_COUNTS:  # one job per connection, every 2 s
            assert time.monotonic() < deadline, f"catalog not filled: {catalog_counts(catalog)}"
            time.sleep(0.2)
        fires_before = schedule_row(env, ports[0])["fires"]
        assert isinstance(fires_before, int) and fires_before >= 1
        metrics = httpx.get(f"http://127.0.0.1:{ports[3]}/metrics", timeout=5).text
        assert "schedjobs_fires{" in metrics and 'schedule="sync-products"' in metrics
        assert_private(Path(env["DATA_DIR"]))
        assert_no_secret_in_argv(stack.proc.pid)
        assert_ui_decodes_through_the_codec_server(ports[1], ports[4])
        assert_the_cli_finds_the_stack(banner, env, ports[0])
    finally:
        out = stack.stop()
    assert "stopped temporal" in out and "stopped worker" in out and "stopped mirror" in out
    assert "stopped codec-server" in out
    for port in ports:  # everything it started is gone (TIME_WAIT after our requests is fine)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))

    disable = [sys.executable, "starter.py", "connections", "disable", "globex"]
    subprocess.run(disable, cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)
    stack = Stack(env, ports)
    try:
        banner = stack.read_until("ready;")
        assert "connections       2 enabled (1 disabled):" in banner
        assert "sync-products: already running" in banner  # same loop, no duplicate
        row = schedule_row(env, ports[0])
        assert isinstance(row["fires"], int) and row["fires"] >= fires_before  # no lost counts
    finally:
        stack.stop()
    assert catalog_counts(catalog) == DEMO_COUNTS


def test_a_busy_port_is_one_line_naming_it(stack_env: tuple[dict[str, str], list[int]]) -> None:
    env, ports = stack_env
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports[0]))
        holder.listen()
        stack = Stack(env, ports)
        stack.proc.wait(timeout=60)
        out = stack.output()
    assert stack.proc.returncode == 2
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines == [
        f"error: port {ports[0]} (Temporal gRPC) is busy: stop what holds it, "
        "or set --port, or TEMPORAL_ADDRESS to use your server"
    ]


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc."""
    parents: dict[int, int] = {}
    for proc_stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = proc_stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(proc_stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        kids = {p for p, pp in parents.items() if pp == parent} - found
        found |= kids
        todo.extend(kids)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def ports_free(ports: list[int]) -> bool:
    """Whether a new run could serve on them (connections of killed processes may linger in
    TIME_WAIT, which only a bind without SO_REUSEADDR minds; servers set it)."""
    return all(port_free("127.0.0.1", port) for port in ports)


def proc_text(pid: int, what: str) -> str:
    return Path(f"/proc/{pid}/{what}").read_bytes().replace(b"\0", b" ").decode(errors="replace")


@pytest.mark.parametrize("how", ["terminal closed (SIGHUP)", "Ctrl-C twice"])
def test_everything_stops_when_the_terminal_closes_or_on_a_double_ctrl_c(
    stack_env: tuple[dict[str, str], list[int]], how: str
) -> None:
    env, ports = stack_env
    stack = Stack(env, ports)
    children: set[int] = set()
    try:
        banner = stack.read_until("ready;")
        children = descendants(stack.proc.pid)
        assert len(children) >= 3, children  # the server, the mirror, the worker
        if how.startswith("terminal"):
            check_mirror_admin_token(banner, children)
            stack.proc.send_signal(signal.SIGHUP)
        else:
            stack.proc.send_signal(signal.SIGINT)
            time.sleep(0.1)  # while it stops the first process: a second Ctrl-C
            stack.proc.send_signal(signal.SIGINT)
        stack.proc.wait(timeout=STOP_TIMEOUT_S)
        deadline = time.monotonic() + 10
        while [pid for pid in children if alive(pid)] or not ports_free(ports):
            assert time.monotonic() < deadline, (
                f"left behind: {[p for p in children if alive(p)]}, ports free: "
                f"{ports_free(ports)}\n{stack.output()}"
            )
            time.sleep(0.1)
    finally:
        for pid in children | descendants(stack.proc.pid):  # nothing outlives a failed test
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if stack.proc.poll() is None:
            stack.proc.kill()
            stack.proc.wait()
    if how == "Ctrl-C twice":
        assert "killed temporal" in stack.output()  # not waited for: killed


def check_mirror_admin_token(banner: str, children: set[int]) -> None:
    """The banner shows how to use the mirror's admin API; only the mirror was given the token,
    and not in its command line (which any local process can read)."""
    (line,) = [line for line in banner.splitlines() if "mirror admin" in line]
    header, url = line.split("'")[1], line.split()[-1]
    name, _, value = header.partition(": ")
    token = value.removeprefix("Bearer ")
    assert name == "Authorization" and token != value and url.endswith("/__mirror/faults")
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={name: value}, timeout=10).status_code == 200
    holders = [pid for pid in children if token in proc_text(pid, "environ")]
    assert len(holders) == 1 and "devtools.mirror" in proc_text(holders[0], "cmdline")
    assert not [pid for pid in children if token in proc_text(pid, "cmdline")]
