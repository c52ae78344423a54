"""Workers on many machines: two worker processes with their own DATA_DIRs and one PostgreSQL,
on the dev server. What one side writes (the CLI's connections, a fire's expansion pages) the
other side's fires and pages use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from client.loops import control
from client.settings import Settings
from devtools.mirror import Mirror
from jobs.sync_products import SyncReport
from scheduling.plan import fire_id
from tests.conftest import (
    ROOT,
    TEST_CONNECTIONS_KEY,
    TEST_SESSION_SECRET,
    rows_of,
    worker_process,
)
from tests.test_fanout import KEYS, settled
from tests.test_schedule_loop import spec, start_loop, wait_for
from workflows.models import FanOutResult, ScheduleInput
from workflows.schedule import ScheduleWorkflow

JOBS = 600  # more than one page (500): the fan-out reads its pages back from the database


async def page_loaders(env: WorkflowEnvironment, page_ids: list[str]) -> set[str]:
    """The identities of the workers whose `load_expansion_page` attempts started."""
    found = set()
    for wf_id in page_ids:
        async for event in env.client.get_workflow_handle(wf_id).fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                found.add(event.activity_task_started_event_attributes.identity)
    return found


async def test_two_workers_with_their_own_data_dirs_share_one_postgresql(
    dev_env: WorkflowEnvironment, mirror: Mirror, pg_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        app_database_url=pg_url,  # type: ignore[arg-type]
        dummyjson_base_url=mirror.url,
        temporal_task_queue=f"test-{uuid.uuid4().hex[:12]}",
        session_secret=TEST_SESSION_SECRET,  # type: ignore[arg-type]
        connections_key=TEST_CONNECTIONS_KEY,  # type: ignore[arg-type]
    )
    side_a, side_b = tmp_path / "a", tmp_path / "b"
    for side in (side_a, side_b):
        side.mkdir()

    # Machine A: the CLI adds the connections (into PostgreSQL; nothing under its DATA_DIR).
    mirror.set_api_keys(KEYS.values())
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOG_DB")} | {
        "APP_DATABASE_URL": pg_url,
        "CONNECTIONS_KEY": TEST_CONNECTIONS_KEY,
        "DATA_DIR": str(side_a / "data"),
    }
    for cid, scope in (("acme", "beauty"), ("globex", "beauty"), ("initech", "furniture")):
        added = subprocess.run(
            [sys.executable, "starter.py", "connections", "add", "--id", cid, "--name", cid]
            + ["--scope", scope, "--api-key", "-"],
            input=KEYS[cid],
            env=cli_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stderr

    # Worker A alone expands a 600-input fire into pages in PostgreSQL, and dies (SIGKILL) the
    # moment they are there; worker B, which never saw A's DATA_DIR, runs the fan-out's pages.
    worker_a = worker_process(dev_env, settings, side_a)
    worker_b = None
    try:
        s = spec(every="1d", expansion="numbers", args={"count": JOBS})
        # The loop's task that worker A dies in is retried after its task timeout: 2 s, not 10.
        loop = await dev_env.client.start_workflow(
            ScheduleWorkflow.run,
            ScheduleInput(spec=s),
            id=f"schedule/{s.name}",
            task_queue=settings.temporal_task_queue,
            task_timeout=timedelta(seconds=2),
        )

        async def pages_stored() -> bool:
            return rows_of(settings.database, "SELECT count(*) FROM expansion_pages") == [(2,)]

        await wait_for(pages_stored, timeout=60)
        worker_a.send_signal(signal.SIGKILL)
        worker_a.wait()
        worker_b = worker_process(dev_env, settings, side_b)
        await wait_for(lambda: settled(loop), timeout=120)
        view = await loop.query(ScheduleWorkflow.describe)
        (fire,) = [r for r in view.state.recent if r.outcome == "started"]
        base = f"{s.name}/{fire_id(fire.scheduled)}"
        result = await dev_env.client.get_workflow_handle(base, result_type=FanOutResult).result()
        assert (result.jobs, result.completed, result.failed) == (JOBS, JOBS, 0)
        loaders = await page_loaders(dev_env, [f"{base}/page-{p:04d}" for p in range(2)])
        assert any(i.startswith(f"{worker_b.pid}@") for i in loaders), loaders

        # A per-connection fire served by B uses the connections A's CLI added, with their keys.
        sync = spec(job="sync-products", every="1h", args={"batch_size": 5})
        sync_loop = await start_loop(dev_env, settings, sync)
        await wait_for(lambda: settled(sync_loop), timeout=60)
        sync_view = await sync_loop.query(ScheduleWorkflow.describe)
        (sync_fire,) = [r for r in sync_view.state.recent if r.outcome == "started"]
        reports = [
            await dev_env.client.get_workflow_handle(c, result_type=SyncReport).result()
            for c in sync_fire.children
        ]
        for handle in (loop, sync_loop):
            await control(handle, ScheduleWorkflow.delete)
    finally:
        for proc in (worker_a, worker_b):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    assert [(r.status, r.created) for r in reports] == [("completed", 5)] * 3
    assert set(mirror.requests_by_key) == set(KEYS.values())
    tenants = rows_of(
        settings.database, "SELECT tenant, count(*) FROM products GROUP BY tenant ORDER BY tenant"
    )
    assert tenants == [("acme", 5), ("globex", 5), ("initech", 5)]
    for side in (side_a, side_b):  # each machine's own directory holds no application state
        assert not (side / "data" / "catalog.db").exists()
