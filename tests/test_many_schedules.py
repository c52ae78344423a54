"""Many loops stay manageable: `list` answers in seconds even when the worker does not, and
`delete` ends many loops in one command (names, `--all`, `--match GLOB`)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from client.connect import worker_polling
from client.loops import schedule_id, start_schedules
from client.settings import Settings
from scheduling.spec import ScheduleSpec
from tests.conftest import client_address, worker_process
from tests.test_cli import cli_env, one_line, starter
from worker import build_worker
from workflows.schedule import ScheduleWorkflow


async def _answering(client: Client, names: list[str], timeout: float = 90) -> None:
    """Until every loop's worker has run its first task (its query answers)."""
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            try:
                await client.get_workflow_handle(schedule_id(name)).query(ScheduleWorkflow.describe)
                break
            except Exception:
                assert time.monotonic() < deadline, f"{name} never answered"
                await asyncio.sleep(0.2)


async def test_list_answers_in_seconds_when_the_worker_does_not(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """A worker that polls but does not answer (stopped) costs `list` one short wait for all
    loops together, not a wait per loop; each row still says what the server knows."""
    prefix = f"stuck-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-{i:02}" for i in range(20)]
    specs = [ScheduleSpec(name=n, job="echo", every="1h") for n in names]
    worker = worker_process(dev_env, settings, tmp_path)
    try:
        await start_schedules(dev_env.client, specs, settings.temporal_task_queue)
        await _answering(dev_env.client, names)
        worker.send_signal(signal.SIGSTOP)
        assert await worker_polling(dev_env.client, settings.temporal_task_queue)
        env = cli_env(settings, client_address(dev_env.client))
        began = time.monotonic()
        code, out, err = await starter("list", "--json", "--file", "none.toml", env=env)
        took = time.monotonic() - began
        assert code == 0, err
        rows = {r["name"]: r for r in json.loads(out) if r["name"].startswith(prefix)}
        assert sorted(rows) == names
        assert {r["status"] for r in rows.values()} == {"running (no worker answered)"}
        # one query timeout (3 s) for all 20, plus the process; asked in turn it was 20 x 5 s
        assert took < 30, took
    finally:
        worker.send_signal(signal.SIGCONT)
        worker.terminate()
        worker.wait(30)
        for n in names:
            await dev_env.client.get_workflow_handle(schedule_id(n)).terminate("test done")


async def test_delete_takes_many_names_all_or_a_glob_and_sums_up(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    prefix = f"del-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-{kind}-{i}" for kind in ("a", "b", "c") for i in range(4)]
    elsewhere = ScheduleSpec(name=f"{prefix}-other", job="echo", every="1h")
    env = cli_env(settings, client_address(dev_env.client))
    await start_schedules(dev_env.client, [elsewhere], f"{settings.temporal_task_queue}-other")
    async with build_worker(dev_env.client, settings):
        specs = [ScheduleSpec(name=n, job="echo", every="1h") for n in names]
        await start_schedules(dev_env.client, specs, settings.temporal_task_queue)

        code, _, err = await starter("delete", env=env)
        assert code == 2 and "--all" in one_line(err)

        code, out, err = await starter("delete", names[0], names[1], env=env)
        assert code == 0, err
        assert out.splitlines()[-1] == "deleted 2 of 2 schedules"

        code, out, err = await starter("delete", "--match", f"{prefix}-b-*", env=env)
        assert code == 0, err
        assert out.splitlines()[-1] == "deleted 4 of 4 schedules"

        code, out, err = await starter("delete", "--all", env=env)
        assert code == 0, err
        assert out.splitlines()[-1] == "deleted 6 of 6 schedules"  # a-2, a-3 and the c's

        for name in names:
            handle = dev_env.client.get_workflow_handle(schedule_id(name))
            assert (await handle.result())["reason"] == "deleted"
        other = dev_env.client.get_workflow_handle(schedule_id(elsewhere.name))
        # a loop on another task queue (another worker's) is not this client's `--all`
        assert (await other.describe()).status == WorkflowExecutionStatus.RUNNING
        await other.terminate("test done")

        code, out, err = await starter("delete", names[0], f"{prefix}-nope", env=env)
        assert code == 2
        assert f"{names[0]}: delete refused: schedule '{names[0]}' is completed" in err
        assert out.splitlines()[-1] == "deleted 0 of 2 schedules; 2 refused (above)"
