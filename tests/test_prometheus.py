"""A real Prometheus (Debian's `prometheus`) scrapes a worker's METRICS_ADDRESS while two schedules
fire: PromQL gives the fire lateness per schedule, and every query of the Grafana dashboard in
deploy/grafana evaluates against what the worker really exports, so a renamed metric or label fails
here rather than as a blank panel. The compose stack's Prometheus config is checked by promtool."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from client.settings import Settings
from jobs.sync_products import SyncProductsInput
from scheduling.spec import ScheduleSpec
from tests.conftest import ROOT, worker_process
from tests.prometheus import Prometheus, PromQLError, Series, finite, start_prometheus
from tests.test_cli import free_port
from workflows.models import ScheduleInput
from workflows.schedule import ScheduleWorkflow
from workflows.sync_products import SyncProductsWorkflow

DASHBOARD = ROOT / "deploy/grafana/dashboards/schedjobs.json"
PROMTOOL = "/usr/bin/promtool"  # from the same Debian package
COMPOSE_PROMETHEUS = ROOT / "deploy/prometheus/prometheus.yml"
DATA_DEADLINE_S = 150.0  # from the first fire to every panel having data, on a loaded machine
LATENESS_P99 = (
    "histogram_quantile(0.99, sum by (le, schedule) (rate(schedjobs_fire_lateness_bucket[1m])))"
)
# The panel whose data comes only from the one sync run: its series exist, but never rise
# between two scrapes, so a rate() of them has no number.
ONE_OFF = "Activity latency"
# Grafana's own variables, as it would expand them: a rate window of several 1 s scrapes, a
# range as long as the test.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "5s", "__range": "5m"}


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: list[str]


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(board: dict[str, Any]) -> list[Panel]:
    """Every panel with queries, rows' nested panels included."""
    found: list[Panel] = []
    for panel in board["panels"]:
        for p in [panel, *panel.get("panels", [])]:
            exprs = [t["expr"] for t in p.get("targets", []) if t.get("expr")]
            if exprs:
                found.append(Panel(p["title"], exprs))
    return found


def metrics_read(expr: str) -> list[tuple[str, list[str]]]:
    """The metrics an expression reads, each with the labels it groups by (`le` for a
    histogram's buckets)."""
    labels = sorted(
        {
            label.strip()
            for group in re.findall(r"by \(([^)]*)\)", expr)
            for label in group.split(",")
        }
    )
    return [
        (m, [label for label in labels if label != "le" or m.endswith("_bucket")])
        for m in sorted(set(re.findall(r"\b(?:schedjobs|temporal)_\w+", expr)))
    ]


def expand(expr: str, variables: dict[str, str]) -> str:
    """`$name` and `${name}` replaced as Grafana does; a variable the test does not know fails."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in variables, f"{expr}: unknown variable ${name}"
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


@dataclass(frozen=True)
class Workload:
    """Two loops on the worker Prometheus scrapes: `steady` fires every 2 s (a 6-field cron) and
    its jobs succeed; `flaky` fires every second, its jobs run 1.5 s and fail, so the next fire is
    skipped (overlap) and each job counts as failed. One sync-products run adds activities."""

    steady: str
    flaky: str


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def prometheus(tmp_path: Path, metrics_port: int) -> Iterator[Prometheus]:
    yield from start_prometheus(tmp_path, [f"127.0.0.1:{metrics_port}"])


@pytest.fixture
async def workload(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    tmp_path: Path,
    metrics_port: int,
    prometheus: Prometheus,
) -> AsyncIterator[Workload]:
    """The worker (METRICS_ADDRESS) and the two loops, left firing while the test queries;
    afterwards the loops are terminated and the worker stopped."""
    tag = uuid.uuid4().hex[:6]
    load = Workload(steady=f"prom-steady-{tag}", flaky=f"prom-flaky-{tag}")
    specs = [
        ScheduleSpec(name=load.steady, job="echo", cron="*/2 * * * * *"),
        ScheduleSpec(name=load.flaky, job="echo", every="1s", args={"sleep_s": 1.5, "fail": True}),
    ]
    proc = worker_process(dev_env, settings, tmp_path, METRICS_ADDRESS=f"127.0.0.1:{metrics_port}")
    loops: list[WorkflowHandle[Any, Any]] = []
    try:
        for spec in specs:
            loops.append(
                await dev_env.client.start_workflow(
                    ScheduleWorkflow.run,
                    ScheduleInput(spec=spec),
                    id=f"schedule/{spec.name}",
                    task_queue=settings.temporal_task_queue,
                    execution_timeout=timedelta(minutes=5),  # a backstop; terminated below
                )
            )
        await dev_env.client.execute_workflow(
            SyncProductsWorkflow.run,
            SyncProductsInput(batch_size=100, dry_run=True),
            id=f"sync-products/prom-{tag}",
            task_queue=settings.temporal_task_queue,
            execution_timeout=timedelta(minutes=2),
        )
        yield load
    finally:
        for loop in loops:
            await loop.terminate("test over")
        proc.terminate()
        proc.wait(timeout=60)


async def poll(
    prom: Prometheus, exprs: list[str], ready: Callable[[list[Series]], bool] = bool
) -> dict[str, list[Series]]:
    """Query `exprs` until each one's numbers (NaN left out) are `ready` (default: any); a
    refused query fails at once, one not ready at the deadline fails naming it."""
    deadline = time.monotonic() + DATA_DEADLINE_S
    results: dict[str, list[Series]] = {}
    while True:
        for expr in exprs:
            results[expr] = await prom.query(expr)
        waiting = [e for e in exprs if not ready(finite(results[e]))]
        if not waiting:
            return results
        if time.monotonic() > deadline:
            shown = "\n".join(f"{e}\n  -> {results[e]}" for e in waiting)
            raise AssertionError(f"not there in {DATA_DEADLINE_S:.0f}s:\n{shown}\n({prom.log})")
        await asyncio.sleep(0.5)


def by_schedule(series: list[Series]) -> dict[str, float]:
    return {s.labels["schedule"]: s.value for s in finite(series)}


async def test_promql_gives_fire_lateness_per_schedule_and_every_dashboard_query_works(
    prometheus: Prometheus, workload: Workload
) -> None:
    mine = {workload.steady, workload.flaky}
    # The quantile per schedule, as an operator would ask Prometheus for it.
    lateness = await poll(prometheus, [LATENESS_P99], lambda s: len(s) == len(mine))
    p99 = by_schedule(lateness[LATENESS_P99])
    assert set(p99) == mine, p99
    assert all(0 < v < 60 for v in p99.values()), p99  # seconds, inside the buckets' range
    print(f"\n{LATENESS_P99}\n  -> {p99}")

    # Grafana's schedule variable (every value of the label, so a schedule whose fires are all
    # skipped is listed too) offers both loops.
    board = dashboard()
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+)\)", var["query"]["query"])
            assert m, f"variable {var['name']}: not label_values(label)"
            listed = await prometheus.label_values(m.group(1))
            assert mine <= set(listed), (var["name"], listed)

    # Every metric a panel reads is exported, with the labels the panel groups by.
    variables = {**GRAFANA_VARIABLES, "schedule": f"({workload.steady}|{workload.flaky})"}
    shown = panels(board)
    assert len(shown) >= 9, [p.title for p in shown]
    for shown_panel in shown:
        for expr in shown_panel.exprs:
            for metric, labels in metrics_read(expr):
                present = ", ".join(f'{label}!=""' for label in labels)
                count = await prometheus.query(f"count({metric}{{{present}}})")
                assert count, f"{shown_panel.title!r}: no {metric} with labels {labels} ({expr})"

    # Every query, variables expanded, is accepted by Prometheus, and all but the one-off
    # sync's activities (series, but no rate) answer with data.
    exprs = [expand(e, variables) for p in shown for e in p.exprs]
    waited = [
        expand(e, variables) for p in shown if not p.title.startswith(ONE_OFF) for e in p.exprs
    ]
    try:
        await poll(prometheus, waited)
        results = {e: finite(await prometheus.query(e)) for e in exprs}
    except PromQLError as exc:
        raise AssertionError(f"a dashboard query is refused by Prometheus: {exc}") from None
    answers = {p.title: [results[expand(e, variables)] for e in p.exprs] for p in shown}
    for title, series in answers.items():
        print(f"{title}: {[[(s.labels, round(s.value, 4)) for s in a] for a in series]}")

    def panel(prefix: str) -> list[list[Series]]:
        titles = [t for t in answers if t.startswith(prefix)]
        assert len(titles) == 1, f"panels starting {prefix!r}: {titles}"
        return answers[titles[0]]

    # The key panels: lateness p50 and p99, and fires, one series per schedule.
    for quantile in panel("Fire lateness"):
        assert set(by_schedule(quantile)) == mine, quantile
    (fires,) = panel("Fires per minute")
    assert set(by_schedule(fires)) == mine and all(s.value > 0 for s in fires), fires
    # The flaky loop's fires find its last job running; its jobs fail, the steady loop's do not.
    (skips,) = panel("Skipped fires")
    assert (workload.flaky, "overlap") in {
        (s.labels["schedule"], s.labels["reason"]) for s in skips
    }
    (failed,) = panel("Failed jobs")
    assert set(by_schedule(failed)) == {workload.flaky}, failed
    # The SDK's workflow task latency, for both kinds of workflow the loops run.
    (execution,) = panel("Workflow task execution")
    types = {s.labels["workflow_type"] for s in execution}
    assert {"ScheduleWorkflow", "EchoJobWorkflow"} <= types, execution


def test_the_compose_prometheus_config_is_valid() -> None:
    """deploy/prometheus/prometheus.yml, as the compose stack's Prometheus reads it, passes the
    same version's promtool (the scrape of the worker replicas by DNS included)."""
    if shutil.which(PROMTOOL) is None:
        pytest.fail(f"{PROMTOOL} is missing: apt-get install prometheus", pytrace=False)
    check = subprocess.run(
        [PROMTOOL, "check", "config", str(COMPOSE_PROMETHEUS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    text = COMPOSE_PROMETHEUS.read_text()
    assert "names: [worker]" in text and "port: 9464" in text, text
