"""OTEL_EXPORTER_OTLP_ENDPOINT: a fire, its job and the job's activities form one trace, sent by
OTLP/HTTP to a real receiver on 127.0.0.1 (tests/otlp_receiver.py), from a real `python worker.py`
and a client traced as the starter's is (client/tracing.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from activities.connections import NewConnection
from client.loops import start_schedules
from client.settings import Settings
from devtools.mirror import Mirror
from scheduling.spec import ScheduleSpec
from tests.conftest import (
    CONVERTER,
    ROOT,
    TEST_CONNECTIONS_KEY,
    TEST_PAYLOAD_KEYS,
    TEST_SESSION_SECRET,
    client_address,
    connection_store,
    worker_process,
    worker_ready,
)
from tests.otlp_receiver import OtlpReceiver, Span
from tests.test_cli import cli_env, free_port, starter
from tests.test_logs import wait_for_log
from tests.worker_cli import run_worker

DEADLINE_S = 60.0
SHOP_KEY = "sk_trace_test_shop_key_0123456789"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start()
    yield r
    r.stop()


def tree(spans: list[Span]) -> str:
    """The spans as an indented tree (children in the order they were received)."""
    by_parent: dict[str, list[Span]] = {}
    ids = {s.span_id for s in spans}
    for s in spans:
        by_parent.setdefault(s.parent_id if s.parent_id in ids else "", []).append(s)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for s in by_parent.get(parent, []):
            lines.append(f"{'  ' * depth}{s.name}  [{s.service}]")
            walk(s.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)


def traced_client(
    env: WorkflowEnvironment, settings: Settings, endpoint: str
) -> tuple[Client, Any]:
    """A client traced as the starter's is (client/tracing.py), on the test's server."""
    from client.tracing import Tracing

    tracing = Tracing.from_settings(
        settings.model_copy(update={"otel_exporter_otlp_endpoint": endpoint}),
        default_service="schedjobs",
    )
    assert tracing is not None
    base = env.client
    client = Client(
        base.service_client,
        namespace=base.namespace,
        data_converter=CONVERTER,
        interceptors=tracing.interceptors,
    )
    return client, tracing


async def sync_completed(client: Client, queue: str) -> str:
    """The id of the sync job the loop started, once it has completed."""
    query = f'WorkflowType = "SyncProductsWorkflow" AND TaskQueue = "{queue}"'
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        async for wf in client.list_workflows(query):
            if wf.status == WorkflowExecutionStatus.COMPLETED:
                return wf.id
        await asyncio.sleep(0.2)
    raise AssertionError("the loop's sync job never completed")


async def test_a_fire_its_job_and_their_activities_are_one_trace(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    mirror: Mirror,
    receiver: OtlpReceiver,
    tmp_path: Path,
) -> None:
    # A connection with its own key (the default expansion: one sync per connection).
    mirror.set_api_keys([SHOP_KEY])
    connection_store(settings).add(
        NewConnection.model_validate({"id": "shop", "name": "Shop", "api_key": SHOP_KEY})
    )
    # Batched spans wait a minute: only the flush at the worker's stop can send them in time.
    log = tmp_path / "worker.log"
    proc = worker_process(
        dev_env,
        settings,
        tmp_path,
        log=log,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="60000",
    )
    client, tracing = traced_client(dev_env, settings, receiver.url)
    name = f"traced-{uuid.uuid4().hex[:8]}"
    spec = ScheduleSpec(name=name, job="sync-products", every="1h", limit=1, args={})
    try:
        await start_schedules(client, [spec], settings.temporal_task_queue)
        tracing.shutdown()  # the starter's span, sent as the CLI sends it before it exits
        job_id = await sync_completed(dev_env.client, settings.temporal_task_queue)
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0, log.read_text()
    spans = receiver.snapshot()
    shown = tree(spans)
    print(f"\nspans of {name} ({len(spans)}):\n{shown}")
    (root,) = [s for s in spans if s.name == "StartWorkflow:ScheduleWorkflow"]
    assert root.service == "schedjobs" and root.parent_id == ""
    # Everything the worker did for the loop, its fire and its job: in the starter's trace.
    names = {s.name for s in spans}
    for expected in (
        "RunWorkflow:ScheduleWorkflow",
        "StartActivity:expand_fire",
        "RunActivity:expand_fire",
        "StartChildWorkflow:SyncProductsWorkflow",
        "RunWorkflow:SyncProductsWorkflow",
        "StartActivity:count_source_products",
        "RunActivity:count_source_products",
        "StartActivity:sync_products_batch",
        "RunActivity:sync_products_batch",
        "RunActivity:remove_missing_products",
        "CompleteWorkflow:SyncProductsWorkflow",
    ):
        assert expected in names, f"{expected} missing from\n{shown}"
    assert {s.trace_id for s in spans} == {root.trace_id}, shown
    assert {s.service for s in spans if s is not root} == {"schedjobs-worker"}, shown
    # The job hangs off the fire that started it, and its activities off the job's requests.
    by_id = {s.span_id: s for s in spans}
    (child_run,) = [s for s in spans if s.name == "RunWorkflow:SyncProductsWorkflow"]
    assert by_id[child_run.parent_id].name == "StartChildWorkflow:SyncProductsWorkflow"
    assert child_run.attributes["temporalWorkflowID"] == job_id
    for run in [s for s in spans if s.name == "RunActivity:sync_products_batch"]:
        assert by_id[run.parent_id].name == "StartActivity:sync_products_batch", shown
        assert by_id[run.parent_id].attributes["temporalWorkflowID"] == job_id
    # No secret in what was sent: the connection's key, the worker's keys, the session secret.
    sent = b"".join(receiver.bodies)
    payload_key = TEST_PAYLOAD_KEYS.partition(":")[2]
    for secret in (SHOP_KEY, TEST_CONNECTIONS_KEY, payload_key, TEST_SESSION_SECRET):
        assert secret.encode() not in sent, secret
        assert all(secret not in str(s.attributes) for s in spans)
    assert f"traces {receiver.url}/v1/traces as schedjobs-worker" in log.read_text()


async def test_a_collector_that_is_down_costs_spans_not_jobs(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing listens at the endpoint: the job still runs, the worker stops in bounded time,
    and the exporter's complaint is lines, not tracebacks."""
    from workflows.echo import EchoJobWorkflow

    log = tmp_path / "worker.log"
    down = f"http://127.0.0.1:{free_port()}"
    proc = worker_process(
        dev_env,
        settings,
        tmp_path,
        log=log,
        OTEL_EXPORTER_OTLP_ENDPOINT=down,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_EXPORTER_OTLP_TIMEOUT="2",  # the exporter's own settings apply
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # the test's own exporter gives up soon
    client, tracing = traced_client(dev_env, settings, down)
    try:
        result = await client.execute_workflow(
            EchoJobWorkflow.run,
            {"greeting": "hi"},
            id=f"echo/traces-down-{uuid.uuid4().hex[:8]}",
            task_queue=settings.temporal_task_queue,
        )
        assert result["args"] == {"greeting": "hi"}
        await wait_for_log(log, "Failed to export spans batch")
    finally:
        proc.terminate()
        started = time.monotonic()
        code = proc.wait(timeout=60)
        tracing.shutdown()
    assert code == 0 and time.monotonic() - started < 20, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "echo completed" in text, text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("localhost:4318", "must start with http:// or https:// (OTLP over HTTP)"),
        ("grpc://127.0.0.1:4317", "must start with http:// or https:// (OTLP over HTTP)"),
        ("http://:4318", "names no host:port"),
        ("http://127.0.0.1:99999", "has a port that is not 1 to 65535"),
        (
            "http://127.0.0.1:4318/v1/traces",
            "ends in /v1/traces, which is added to it; give the base URL",
        ),
    ],
)
def test_a_bad_endpoint_is_one_line_naming_it(value: str, reason: str, tmp_path: Path) -> None:
    proc = run_worker(
        tmp_path / "data", drop=("TEMPORAL_", "OTEL_"), OTEL_EXPORTER_OTLP_ENDPOINT=value
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: OTEL_EXPORTER_OTLP_ENDPOINT={value!r}: {reason}; set it to your collector's "
        "OTLP/HTTP address, like http://127.0.0.1:4318, or unset it (no traces)"
    ], proc.stderr


def test_unset_nothing_is_installed_or_imported() -> None:
    """Without the variable the worker's modules load no OpenTelemetry at all."""
    code = (
        "import sys, worker; from client.settings import Settings; "
        "from client.tracing import process_tracing; "
        "assert process_tracing(Settings()) is None; "
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('opentelemetry.')}))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "OTEL_"))}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


async def test_starter_run_starts_the_trace_the_worker_continues(
    dev_env: WorkflowEnvironment, settings: Settings, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """`starter.py run` with the variable set: its client span is the root, the worker's spans
    hang under it, and the CLI flushes before it exits (it leaves through os._exit)."""
    proc = worker_process(
        dev_env,
        settings,
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="60000",
    )
    try:
        await worker_ready(dev_env.client, settings.temporal_task_queue, proc)
        env = cli_env(
            settings,
            client_address(dev_env.client),
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            OTEL_BSP_SCHEDULE_DELAY="60000",
        )
        code, out, err = await starter("run", "sync-products", "--json", env=env)
        assert code == 0, (out, err)
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    spans = receiver.snapshot()
    (root,) = [s for s in spans if s.parent_id == ""]
    assert (root.name, root.service) == ("StartWorkflow:SyncProductsWorkflow", "schedjobs"), tree(
        spans
    )
    assert {s.trace_id for s in spans} == {root.trace_id}
    assert "RunActivity:sync_products_batch" in {s.name for s in spans}
