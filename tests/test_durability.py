"""Durability on the real dev server: a server restart while a schedule sleeps."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from config import Settings
from models import ScheduleInput, ScheduleSummary
from tests.conftest import BIN, SEARCH_ATTRIBUTES
from tests.test_schedule_loop import spec, wait_for
from worker import build_worker
from workflows.schedule import ScheduleWorkflow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def dev_server(db: Path, port: int) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        dev_server_database_filename=str(db),
        port=port,
        search_attributes=SEARCH_ATTRIBUTES,
    )


async def test_server_restart_while_sleeping_fires_on_time_with_counts_intact(
    tmp_path: Path, settings: Settings
) -> None:
    db, port = tmp_path / "temporal.db", free_port()
    env = await dev_server(db, port)
    begin = (await env.get_current_time()).replace(microsecond=0) + timedelta(seconds=1)
    s = spec(every="8s", start_at=begin, limit=2)
    handle = await env.client.start_workflow(
        ScheduleWorkflow.run,
        ScheduleInput(spec=s),
        id=f"schedule/{s.name}",
        task_queue=settings.temporal_task_queue,
    )

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
            second = begin + timedelta(seconds=8)
            child = await env.client.get_workflow_handle(
                f"{s.name}/{second:%Y%m%dT%H%M%SZ}"
            ).describe()
    finally:
        await env.shutdown()
    assert summary.fires == 2 and summary.missed == 0  # count kept across the restart
    assert abs(child.start_time - second) < timedelta(seconds=2)  # and on time
