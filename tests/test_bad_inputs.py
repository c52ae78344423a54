"""Every case of tests/bad_inputs.toml, run as a user would: a real `starter.py` (or devstack)
process with a fresh DATA_DIR and working directory. A bad input is one line on stderr naming the
field, exit 2, and nothing written: no new file anywhere in the case's directory.

Most cases fail before anything connects; TEMPORAL_ADDRESS points at a closed port, so a case that
wrongly gets that far fails differently (exit 1). They run in processes forked from a server that
imported the CLI once (ForkServer: the imports are most of a process's cost), four at a time.
Cases marked `server = true` run against the dev server with a worker, and also check that no
workflow appeared on the case's task queue.
"""

from __future__ import annotations

import json
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from client.settings import Settings
from tests.conftest import client_address
from tests.test_cli import free_port
from worker import build_worker

ROOT = Path(__file__).resolve().parent.parent
TABLE = Path(__file__).with_name("bad_inputs.toml")
_REPEAT = re.compile(r"<<(\d+)\*(.*?)>>", re.DOTALL)
PROCESS_TIMEOUT_S = 60
WORKERS = 4
MEMORY_CAP = 6 * 2**30  # an unbounded read (of /dev/zero) fails in the process, not the machine


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def expand(text: str) -> str:
    """`<<3000*[>>` is 3000 `[`: deep nesting and big inputs without a big table."""
    return _REPEAT.sub(lambda m: m.group(2) * int(m.group(1)), text)


@dataclass
class Case:
    id: str
    argv: list[str]
    expect: str  # the one stderr line contains this (the field's name)
    exit: int = 2
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # name -> text (`<<N*x>>` expanded)
    binary: dict[str, str] = field(default_factory=dict)  # name -> hex bytes
    dirs: list[str] = field(default_factory=list)
    stdin: str = ""
    server: bool = False  # needs the dev server and a worker
    stdout_has: str | None = None  # for the few cases that succeed: what stdout shows
    stdout_lacks: str | None = None
    writes: bool = False  # the command's job is to write (a case that succeeds on purpose)


def load_cases() -> list[Case]:
    return [Case(**raw) for raw in tomllib.loads(TABLE.read_text(encoding="utf-8"))["case"]]


CASES = load_cases()


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@dataclass
class Outcome:
    case: Case
    code: int
    out: str
    err: str
    new_files: set[str]

    def problems(self) -> list[str]:
        c, found = self.case, []
        if self.code != c.exit:
            found.append(f"exit {self.code}, expected {c.exit}")
        lines = [line for line in self.err.splitlines() if line.strip()]
        if c.exit != 0:
            if len(lines) != 1:
                found.append(f"{len(lines)} stderr lines, expected 1")
            elif c.expect not in lines[0]:
                found.append(f"stderr line lacks {c.expect!r}")
        if "Traceback" in self.err:
            found.append("traceback")
        if c.stdout_has is not None and c.stdout_has not in self.out:
            found.append(f"stdout lacks {c.stdout_has!r}")
        if c.stdout_lacks is not None and c.stdout_lacks in self.out:
            found.append(f"stdout has {c.stdout_lacks!r}")
        if self.new_files and not c.writes:
            found.append(f"wrote {sorted(self.new_files)}")
        return found

    def report(self) -> str:
        tail = (self.err.strip().splitlines() or [""])[-1][:300]
        return f"{self.case.id}: {'; '.join(self.problems())} | stderr: {tail!r}"


@dataclass
class Run:
    """One process to run: what a user would type, where, with which environment."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    stdin: str


Launcher = Callable[[Run], tuple[int, bytes, bytes]]


def fresh_process(run: Run) -> tuple[int, bytes, bytes]:
    """A new interpreter, exactly as a user starts it."""
    if run.argv[0] == "devstack":
        cmd = [sys.executable, "-m", "devtools.devstack", *run.argv[1:]]
    else:
        cmd = [sys.executable, str(ROOT / "starter.py"), *run.argv]
    try:
        proc = subprocess.run(
            cmd,
            env={**run.env, "PYTHONPATH": str(ROOT)},
            cwd=run.cwd,
            input=run.stdin.encode(),
            capture_output=True,
            timeout=PROCESS_TIMEOUT_S,
            preexec_fn=_cap_memory,
        )
    except subprocess.TimeoutExpired as exc:
        return -999, exc.stdout or b"", (exc.stderr or b"") + b"\n(timed out)"
    return proc.returncode, proc.stdout, proc.stderr


class ForkServer:
    """A process that imported the CLI once and forks a child per case (about 0.05 s instead of
    0.6 s of imports each, which for 200 cases on a busy 2-core machine is the difference).

    The child is a real process: its own argv, environment, working directory, stdin/stdout/
    stderr files, exit code and memory cap, entering through the same `cli()` functions as
    `python starter.py` and `python -m devtools.devstack`. Nothing in the CLI reads the
    environment or the working directory at import time. `test_forked_runs_match_fresh_ones`
    checks that a sample of cases gives the same result both ways.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path[:1] = [{str(ROOT)!r}]; "
                "from tests.test_bad_inputs import serve; serve()",
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __call__(self, run: Run) -> tuple[int, bytes, bytes]:
        out, err, stdin = (run.cwd.parent / f".{run.cwd.name}.{n}" for n in ("out", "err", "in"))
        stdin.write_text(run.stdin)
        request = {**asdict(run), "cwd": str(run.cwd), "stdin": str(stdin)}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({**request, "out": str(out), "err": str(err)}) + "\n")
        self.proc.stdin.flush()
        code = int(self.proc.stdout.readline())
        return code, out.read_bytes(), err.read_bytes()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def serve() -> None:
    """The fork server's loop: one JSON request a line in, one exit code a line out."""
    import starter
    from devtools import devstack

    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                os.chdir(req["cwd"])
                os.environ.clear()
                os.environ.update(req["env"])
                for fd, path, flags in (
                    (0, req["stdin"], os.O_RDONLY),
                    (1, req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                    (2, req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                ):
                    os.dup2(os.open(path, flags, 0o600), fd)
                _cap_memory()
                argv = req["argv"]
                if argv[0] == "devstack":
                    sys.argv = ["devstack.py", *argv[1:]]
                    devstack.cli()
                else:
                    sys.argv = [str(ROOT / "starter.py"), *argv]
                    starter.cli()
            finally:
                os._exit(70)  # cli() leaves through os._exit; this only on a crash before it
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                code = -999
                break
            time.sleep(0.005)
        print(code, flush=True)


def run_case(
    case: Case,
    base: Path,
    address: str,
    task_queue: str,
    extra: dict[str, str],
    launch: Launcher = fresh_process,
) -> Outcome:
    work = base / re.sub(r"[^A-Za-z0-9_.-]", "_", case.id)
    work.mkdir(parents=True)
    for name, text in case.files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)  # e.g. "data/payload.keys"
        (work / name).write_text(expand(text), encoding="utf-8")
    for name, hexed in case.binary.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(bytes.fromhex(hexed))
    for name in case.dirs:
        (work / name).mkdir()

    def sub(text: str) -> str:
        return text.replace("{tmp}", str(work))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_PRODUCTS_", "TEMPORAL_"))}
    for name in ("CATALOG_DB", "SESSION_SECRET", "CONNECTIONS_KEY", "DUMMYJSON_BASE_URL"):
        env.pop(name, None)
    env.update(
        DATA_DIR=str(work / "data"),
        TEMPORAL_ADDRESS=address,
        TEMPORAL_TASK_QUEUE=task_queue,
        DUMMYJSON_BASE_URL="http://127.0.0.1:9",  # devstack: never start a mirror
        **extra,
    )
    env.update({k: sub(v) for k, v in case.env.items()})
    before = tree(work)
    code, out, err = launch(Run([sub(expand(a)) for a in case.argv], env, work, case.stdin))
    return Outcome(
        case,
        code,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        tree(work) - before,
    )


def test_the_table_is_big_and_well_formed() -> None:
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES), "case ids are unique"
    assert all(c.expect or c.exit == 0 for c in CASES)


def test_every_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    """All cases that need no server, four processes at a time; every failure is reported."""
    address = f"127.0.0.1:{free_port()}"  # closed: a case that gets as far as connecting fails
    cases = [c for c in CASES if not c.server]
    servers: queue.Queue[ForkServer] = queue.Queue()
    for _ in range(WORKERS):
        servers.put(ForkServer())

    def one(case: Case) -> Outcome:
        server = servers.get()
        try:
            return run_case(case, tmp_path, address, "bad-inputs", {}, server)
        finally:
            servers.put(server)

    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            outcomes = list(pool.map(one, cases))
    finally:
        while not servers.empty():
            servers.get().close()
    failed = [o.report() for o in outcomes if o.problems()]
    assert not failed, f"{len(failed)} of {len(cases)} cases failed:\n" + "\n".join(failed)


async def _workflows_on(client: Client, task_queue: str) -> list[str]:
    return [wf.id async for wf in client.list_workflows(f"TaskQueue = '{task_queue}'")]


def _server_cases() -> Iterator[Any]:
    for case in CASES:
        if case.server:
            yield pytest.param(case, id=case.id)


@pytest.mark.parametrize("case", list(_server_cases()))
async def test_bad_input_starts_nothing_on_a_real_server(
    case: Case, dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """With a server and a worker there, still: one line, the exit code, and no workflow."""
    import asyncio

    address = client_address(dev_env.client)
    async with build_worker(dev_env.client, settings):
        outcome = await asyncio.to_thread(
            run_case,
            case,
            tmp_path,
            address,
            settings.temporal_task_queue,
            {"CONNECTIONS_KEY": settings.connections_secret()},
        )
    assert not outcome.problems(), outcome.report()
    if case.exit == 2:
        assert await _workflows_on(dev_env.client, settings.temporal_task_queue) == []
        for wf_id in ("schedule/good", "schedule/bad", "schedule/shop-prd-echo"):
            with pytest.raises(RPCError):  # not found: also when visibility lags
                await dev_env.client.get_workflow_handle(wf_id).describe()


# One case of each kind, run both ways: the fork server gives what a fresh interpreter gives.
SAMPLE = [
    "job-is-a-list",
    "file-dev-zero",
    "preview-count-zero",
    "connections-remove-missing",
    "session-empty-tag",
    "job-nested-3000",
    "env-task-queue-blank",
    "devstack-port-99999",
]


def test_forked_runs_match_fresh_ones(tmp_path: Path) -> None:
    by_id = {c.id: c for c in CASES}

    def seen(outcome: Outcome, base: Path) -> tuple[int, str, str]:
        return outcome.code, outcome.out, outcome.err.replace(str(base), "BASE")

    server = ForkServer()
    try:
        for case_id in SAMPLE:
            forked = run_case(by_id[case_id], tmp_path / "forked", "127.0.0.1:9", "q", {}, server)
            fresh = run_case(by_id[case_id], tmp_path / "fresh", "127.0.0.1:9", "q", {})
            assert not fresh.problems(), fresh.report()
            assert seen(forked, tmp_path / "forked") == seen(fresh, tmp_path / "fresh"), case_id
    finally:
        server.close()


def test_the_runner_passes_a_good_command(tmp_path: Path) -> None:
    """The runner itself: a good command passes every check, so a failure means the CLI."""
    good = Case(
        id="good-preview",
        argv=["preview", "--every", "1h", "--start-at", "2027-01-01T00:00:00Z", "--count", "1"],
        expect="",
        exit=0,
        stdout_has="2027-01-01T00:00:00Z",
    )
    outcome = run_case(good, tmp_path, "127.0.0.1:9", "q", {})
    assert not outcome.problems(), outcome.report()


def test_a_terminal_escape_in_a_connection_name_is_printed_escaped(tmp_path: Path) -> None:
    """A name may hold anything, but `connections list` must not send its escapes to the
    terminal (clearing the screen, recolouring, retitling the window)."""
    evil = "\x1b[2J\x1b]0;pwned\x07Acme"
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    env.pop("CATALOG_DB", None)
    add = ["connections", "add", "--id", "acme", "--name", evil, "--api-key", "k-1"]
    code, _, err = fresh_process(Run(add, env, tmp_path, ""))
    assert code == 0, err
    code, out, err = fresh_process(Run(["connections", "list"], env, tmp_path, ""))
    assert code == 0, err
    assert b"\x1b" not in out and b"\x07" not in out
    assert b"\\x1b[2J\\x1b]0;pwned\\x07Acme" in out
