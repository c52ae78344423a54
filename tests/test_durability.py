"""Durability on the real dev server: a server restart while a schedule sleeps."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
from datetime import timedelta
from pathlib import Path

from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from client.settings import Settings
from scheduling.plan import fire_id
from tests.conftest import BIN, CONVERTER, SEARCH_ATTRIBUTES, STARTUP, worker_process
from tests.test_schedule_loop import spec, start_loop, wait_for
from worker import build_worker
from workflows.models import ScheduleSummary
from workflows.schedule import ScheduleWorkflow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def dev_server(db: Path, port: int) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        data_converter=CONVERTER,
        dev_server_existing_path=str(BIN / "temporal"),
        dev_server_database_filename=str(db),
        port=port,
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_startup_timeout=STARTUP,
    )


async def test_server_restart_while_sleeping_fires_on_time_with_counts_intact(
    tmp_path: Path, settings: Settings
) -> None:
    db, port = tmp_path / "temporal.db", free_port()
    env = await dev_server(db, port)
    begin = (await env.get_current_time()).replace(microsecond=0) + timedelta(seconds=1)
    s = spec(every="15s", start_at=begin, limit=2)  # room for the restart
    handle = await start_loop(env, settings, s)

    async def fired_once() -> bool:
        return (await handle.query(ScheduleWorkflow.describe)).state.fires == 1

    async with build_worker(env.client, settings, max_cached_workflows=0):
        await wait_for(fired_once)
    await env.shutdown()  # the server goes away mid-sleep, with its SQLite file

    env = await dev_server(db, port)
    try:
        async with build_worker(env.client, settings):
            loop = env.client.get_workflow_handle(f"schedule/{s.name}", result_type=ScheduleSummary)
            summary = await loop.result()
            second = begin + timedelta(seconds=15)
            child = await env.client.get_workflow_handle(
                f"{s.name}/{second:%Y%m%dT%H%M%SZ}"
            ).describe()
    finally:
        await env.shutdown()
    assert summary.fires == 2 and summary.missed == 0  # count kept across the restart
    # and on time: the dev server's timer queue may take a moment after a restart
    assert abs(child.start_time - second) < timedelta(seconds=3)


async def test_children_are_searchable_by_schedule_name_and_fire_time(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    """`temporal workflow list --query "ScheduleName='…'"` finds a schedule's runs."""
    begin = (await dev_env.get_current_time()).replace(microsecond=0) + timedelta(seconds=1)
    s = spec(every="1s", start_at=begin, limit=2)
    async with build_worker(dev_env.client, settings):
        await (await start_loop(dev_env, settings, s)).result()
    address = dev_env.client.service_client.config.target_host

    found: list[dict[str, object]] = []

    async def listed() -> bool:  # visibility is eventually consistent
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "temporal"),
            "workflow",
            "list",
            "--address",
            address,
            "--query",
            f"ScheduleName='{s.name}' AND ScheduledFireTime >= '{begin.isoformat()}'",
            "--output",
            "json",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        found[:] = json.loads(out or b"[]")
        return len(found) == 2

    await wait_for(listed)
    ids = sorted(str(row["execution"]["workflowId"]) for row in found)  # type: ignore[index]
    assert ids == [f"{s.name}/{fire_id(begin + timedelta(seconds=k))}" for k in (0, 1)]


async def test_a_worker_killed_during_fires_loses_and_doubles_nothing(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """kill -9 the worker process just as fires are due, twice; a new one takes over each time.
    Every slot then either ran exactly once or is recorded as skipped, with its reason: missed
    (the loop woke too late), or overlap (the job of the fire before, stuck on the dead worker
    until the new one took it, still ran)."""
    every = timedelta(seconds=3)
    begin = (await dev_env.get_current_time()).replace(microsecond=0) + timedelta(seconds=2)
    s = spec(every="3s", start_at=begin, limit=5)
    handle = await start_loop(dev_env, settings, s)

    def worker() -> subprocess.Popen[bytes]:
        return worker_process(dev_env, settings, tmp_path)

    proc = worker()
    try:
        for _ in range(2):
            view = await handle.query(ScheduleWorkflow.describe, rpc_timeout=timedelta(seconds=30))
            due = view.next_fires[0]
            # real time: the moment to kill is the fire itself
            await asyncio.sleep((due - await dev_env.get_current_time()).total_seconds() + 0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc = worker()
        summary = await asyncio.wait_for(handle.result(), 120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    assert summary.fires == 5
    slots = int((summary.last_fire - begin) / every) + 1  # type: ignore[operator]
    ran = 0
    for k in range(slots):
        child = dev_env.client.get_workflow_handle(f"{s.name}/{fire_id(begin + k * every)}")
        try:
            await child.describe()
        except RPCError:
            continue
        ran += 1
    assert ran == summary.fires  # each counted fire has its one child (ids cannot repeat)
    assert ran + sum(summary.skipped.values()) == slots  # every other slot is a recorded skip
    assert set(summary.skipped) <= {"missed", "overlap"}
