"""METRICS_ADDRESS: the worker process serves the SDK's Prometheus metrics, and a port it cannot
have stops it with one line before it connects."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment

from client.settings import Settings
from scheduling.spec import ScheduleSpec
from tests.conftest import worker_process
from tests.test_cli import free_port
from tests.worker_cli import run_worker
from workflows.echo import EchoJobWorkflow
from workflows.models import ScheduleInput
from workflows.schedule import ScheduleWorkflow

SCRAPE_DEADLINE_S = 30.0


def completed(text: str, task_queue: str, workflow_type: str) -> int:
    """The `temporal_workflow_completed` count of one workflow type on one task queue."""
    total = 0
    for line in text.splitlines():
        if line.startswith("temporal_workflow_completed{") and (
            f'task_queue="{task_queue}"' in line and f'workflow_type="{workflow_type}"' in line
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def loop_metric(text: str, metric: str, schedule: str, *labels: str) -> float:
    """The sum of one of the loop's series for one schedule (and the given labels)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(f"{metric}{{")
        and f'schedule="{schedule}"' in line
        and all(label in line for label in labels)
    )


async def scrape_until(url: str, check: Callable[[str], bool]) -> str:
    """GET the metrics page until `check(text)` holds and return it; fail at the deadline."""
    deadline = time.monotonic() + SCRAPE_DEADLINE_S
    last = ""
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                resp = await http.get(url)
                last = resp.text
                if resp.status_code == 200 and check(last):
                    return last
            except httpx.HTTPError:  # the worker is still starting: nothing listens yet
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never showed it in {SCRAPE_DEADLINE_S:.0f}s; last page:\n{last}")


async def test_the_worker_serves_prometheus_metrics(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "worker.log"
    proc = worker_process(dev_env, settings, tmp_path, log=log, METRICS_ADDRESS=f"127.0.0.1:{port}")
    try:
        result = await dev_env.client.execute_workflow(
            EchoJobWorkflow.run,
            {"greeting": "hi"},
            id=f"echo/metrics-{uuid.uuid4().hex[:8]}",
            task_queue=settings.temporal_task_queue,
            execution_timeout=timedelta(seconds=60),
        )
        assert result["args"] == {"greeting": "hi"}
        # A loop whose second and third fires find the first job running (skip).
        loop = f"metrics-{uuid.uuid4().hex[:8]}"
        s = ScheduleSpec(name=loop, job="echo", every="1s", limit=2, args={"sleep_s": 3})
        summary = await dev_env.client.execute_workflow(
            ScheduleWorkflow.run,
            ScheduleInput(spec=s),
            id=f"schedule/{loop}",
            task_queue=settings.temporal_task_queue,
            execution_timeout=timedelta(seconds=60),
        )
        assert summary.fires == 2 and summary.skipped["overlap"] >= 1
        queue = settings.temporal_task_queue
        text = await scrape_until(
            f"http://127.0.0.1:{port}/metrics",
            lambda t: (
                completed(t, queue, "EchoJobWorkflow") >= 1
                and loop_metric(t, "schedjobs_fires", loop) == 2
            ),
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    # The SDK's names, durations in seconds (no unit suffix); what the README lists.
    for name in (
        "temporal_workflow_task_schedule_to_start_latency_bucket",
        "temporal_workflow_task_execution_latency_bucket",
        "temporal_sticky_cache_size",
        "temporal_worker_task_slots_available",
    ):
        assert f"\n{name}{{" in text, name
    # The loop's own: fires, their lateness, skips by reason.
    assert loop_metric(text, "schedjobs_fire_lateness_count", loop) == 2
    assert loop_metric(text, "schedjobs_fires_skipped", loop, 'reason="overlap"') >= 1
    assert f"http://127.0.0.1:{port}/metrics" in log.read_text()  # the start-up line says where


def test_a_busy_metrics_port_is_one_line_before_connecting(tmp_path: Path) -> None:
    """The exporter binds when the worker makes its runtime, before it connects: with nothing at
    TEMPORAL_ADDRESS either, the one line is about METRICS_ADDRESS (exit 2), not the server."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        proc = run_worker(
            tmp_path / "data",
            TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",  # closed
            METRICS_ADDRESS=f"127.0.0.1:{busy}",
        )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: METRICS_ADDRESS='127.0.0.1:{busy}': cannot serve"), lines
    assert "in use" in lines[0] and "another ip:port, or to off" in lines[0], lines
