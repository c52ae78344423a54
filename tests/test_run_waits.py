"""`starter.py run` waiting on a job while the dev server restarts under it (on its SQLite file,
as `make run`'s does): it keeps waiting and prints the result, or, past SERVER_LOST_TIMEOUT with
no server, gives up in one line; the job is not touched either way."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from client.settings import Settings
from tests.conftest import ROOT, worker_process, worker_ready
from tests.test_cli import cli_env
from tests.test_durability import dev_server, free_port

DEADLINE_S = 90.0


def start_run(env: dict[str, str], err: Path, *args: str) -> subprocess.Popen[str]:
    """`starter.py run echo` in the background; stdout piped (small), stderr to `err`."""
    with err.open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "starter.py", "run", "echo", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )


def wait_for_text(path: Path, text: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while text not in path.read_text():
        assert proc.poll() is None, f"exited {proc.returncode}: {path.read_text()}"
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.1)


async def server_and_worker(
    tmp_path: Path, settings: Settings
) -> tuple[Path, int, WorkflowEnvironment, subprocess.Popen[bytes]]:
    """A dev server on its own SQLite file and port (so it can be restarted), a worker polling."""
    db, port = tmp_path / "temporal.db", free_port()
    server = await dev_server(db, port)
    worker = worker_process(server, settings, tmp_path)
    await worker_ready(server.client, settings.temporal_task_queue, worker)
    return db, port, server, worker


async def wait_for_echo(env: WorkflowEnvironment, queue: str, run: subprocess.Popen[str]) -> str:
    """The id of the echo job the CLI started, once the server has it."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        async for wf in env.client.list_workflows(f'TaskQueue="{queue}"'):
            return wf.id
        assert run.poll() is None, f"the CLI exited with {run.returncode}"
        assert time.monotonic() < deadline, "the CLI started no job"
        await asyncio.sleep(0.1)


def finish(proc: subprocess.Popen[str]) -> str:
    try:
        out, _ = proc.communicate(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


async def test_run_keeps_waiting_through_a_server_restart(
    tmp_path: Path, settings: Settings
) -> None:
    db, port, server, worker = await server_and_worker(tmp_path, settings)
    address, err = f"127.0.0.1:{port}", tmp_path / "run.err"
    env = cli_env(settings, address, DATA_DIR=str(tmp_path / "data"))
    run = start_run(env, err, "--args", '{"sleep_s": 4}', "--json")
    try:
        await wait_for_echo(server, settings.temporal_task_queue, run)
        await server.shutdown()  # the server goes away mid-job, and stays away a while:
        # past the SDK's own retries (~10 s), which the CLI then says in one line
        wait_for_text(err, f"lost the Temporal server at {address}", run)
        server = await dev_server(db, port)
        out = finish(run)
    finally:
        worker.kill()
        worker.wait()
        await server.shutdown()
    text = err.read_text()
    assert run.returncode == 0, text
    assert out.startswith("{"), (out, text)
    assert json.loads(out)["args"] == {"sleep_s": 4}
    assert "Traceback" not in text
    assert f"the Temporal server at {address} is back; still waiting on echo/adhoc-" in text


async def test_run_gives_up_in_one_line_when_the_server_stays_away(
    tmp_path: Path, settings: Settings
) -> None:
    db, port, server, worker = await server_and_worker(tmp_path, settings)
    address, err = f"127.0.0.1:{port}", tmp_path / "run.err"
    env = cli_env(settings, address, DATA_DIR=str(tmp_path / "data"), SERVER_LOST_TIMEOUT="2s")
    run = start_run(env, err, "--args", '{"sleep_s": 60}')
    try:
        job = await wait_for_echo(server, settings.temporal_task_queue, run)
        await server.shutdown()
        out = finish(run)
    finally:
        worker.kill()
        worker.wait()
    lines = [line for line in err.read_text().splitlines() if line.strip()]
    assert run.returncode == 1, lines
    assert out == ""
    assert lines[-1].startswith(f"error: lost the Temporal server at {address} (no answer for ")
    assert lines[-1].endswith(
        f"the job goes on without this wait: see it at workflow {job} "
        "(in your server's Web UI, namespace default)"
    ), lines[-1]
    assert not [line for line in lines if "Traceback" in line]
    assert len(lines) == 2, lines  # "lost ..., waiting up to 2 s", then the error
