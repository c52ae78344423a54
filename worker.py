"""`python worker.py`: the worker that runs schedule loops, jobs and their activities."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Interceptor, UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.catalog import CatalogTarget, SqliteCatalog
from activities.connections import ConnectionStore
from activities.dummyjson import DummyJSONClient
from activities.expansion import ExpansionActivities, expand_schedule
from activities.medusa import MedusaCatalog
from activities.run_checks import fresh_cached_runs, still_running
from activities.sessions import SessionActivities
from activities.sync_products import SyncProductsActivities
from client.codec import for_worker
from client.connect import connect, exit_process
from client.errors import ConfigError, exit_on_user_error
from client.logs import core_logging, setup_logging
from client.settings import Settings, load_settings
from client.tracing import Tracing, process_tracing
from workflows.echo import EchoJobWorkflow
from workflows.fanout import FanOutPageWorkflow, FanOutWorkflow
from workflows.notify import JobNotifier
from workflows.outcomes import JobOutcomeLog
from workflows.schedule import ScheduleWorkflow
from workflows.session_input import SessionResolver
from workflows.sync_products import SyncProductsWorkflow

log = logging.getLogger("schedjobs.worker")

# Heartbeats are sent at most this far apart (the SDK's default: 80% of the heartbeat timeout,
# which would leave a heartbeating activity 0.4 s of slack against a 2 s timeout).
HEARTBEAT_THROTTLE = timedelta(seconds=0.5)
# How long a workflow task waits for the worker that has the workflow cached before any worker
# may take it: after a crash, what the next step of each of its workflows waits on top of the
# heartbeat timeout (bench/recovery.py). Shorter costs a live but busy worker a replay of the
# history when it misses it (the Go and Java SDKs' default is 5 s, the Python SDK's 10 s).
STICKY_TIMEOUT = timedelta(seconds=3)
# Buckets (seconds) of the loop's fire lateness: the SDK's default ones stop at 10 s, and a fire
# after a worker outage or a long catch-up is minutes or hours late.
LATENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def workflow_runner(settings: Settings) -> WorkflowRunner:
    """WORKFLOW_SANDBOX. `strict` (the SDK's default, and the tests'): each workflow run imports
    our workflow modules afresh inside the SDK's sandbox, so a non-deterministic call in them fails
    its task. `fast`: no sandbox; the modules are imported once and shared, which they can be (no
    module state; the tests prove every path deterministic under `strict`, and the replay tests
    against recorded histories). The sandbox costs a fresh import per run and an entry into it for
    every payload of every task (bench/idle.py, bench/lateness.py: README "Scaling")."""
    if settings.workflow_sandbox == "strict":
        return SandboxedWorkflowRunner()
    return UnsandboxedWorkflowRunner()


WORKFLOWS: Sequence[type] = (
    ScheduleWorkflow,
    FanOutWorkflow,
    FanOutPageWorkflow,
    SyncProductsWorkflow,
    EchoJobWorkflow,
)


def sync_target(settings: Settings) -> CatalogTarget:
    """SYNC_PRODUCTS_TARGET: the built-in catalog (in the application database), or a Medusa
    store's Admin API."""
    if settings.sync_products_target == "medusa":
        assert settings.medusa_backend_url and settings.medusa_api_key  # checked at load
        return MedusaCatalog(
            settings.medusa_backend_url, settings.medusa_api_key.get_secret_value()
        )
    return SqliteCatalog(settings.database)


def activities_for(settings: Settings) -> list[Any]:
    connections = ConnectionStore(settings.database, settings.connections_secret())
    sync = SyncProductsActivities(
        DummyJSONClient(settings.dummyjson_base_url), sync_target(settings), connections
    )
    expansion = ExpansionActivities(connections)
    sessions = SessionActivities(settings.session_key())
    return [
        sync.count_source_products,
        sync.sync_products_batch,
        sync.remove_missing_products,
        expansion.expand_fire,
        expansion.load_expansion_page,
        expand_schedule,
        still_running,
        fresh_cached_runs,
        sessions.resolve_session,
    ]


def interceptors(client: Client | None = None, tracing: Tracing | None = None) -> list[Interceptor]:
    """Outermost first: tracing (when on, and not already on `client`, whose worker
    interceptors the SDK puts first), then every job's outcome line, then the job tells its
    schedule it ended (also when its session fails)."""
    ours: list[Interceptor] = [JobOutcomeLog(), JobNotifier(), SessionResolver()]
    if tracing is None:
        return ours
    on_client = client.config().get("interceptors", []) if client is not None else []
    return [i for i in tracing.interceptors if i not in on_client] + ours


def tuning(settings: Settings) -> dict[str, Any]:
    """The worker options a deploy sets by environment (unset: the SDK's default)."""
    options: dict[str, Any] = {"max_cached_workflows": settings.worker_max_cached_workflows}
    if settings.worker_max_concurrent_workflow_tasks is not None:
        options["max_concurrent_workflow_tasks"] = settings.worker_max_concurrent_workflow_tasks
    return options


def build_worker(
    client: Client, settings: Settings, *, tracing: Tracing | None = None, **kwargs: Any
) -> Worker:
    """The one worker definition, used by `python worker.py` and by the tests (whose kwargs,
    e.g. no workflow cache, win over the settings). `tracing`: OTEL_EXPORTER_OTLP_ENDPOINT's
    interceptor (client/tracing.py); None: no spans. The worker decodes with a lenient codec
    (client/codec.py): a start, update or signal sealed under a key it does not hold is refused
    where it is converted, not by failing the workflow's task."""
    config = client.config()
    lenient = for_worker(config["data_converter"])
    if lenient is not config["data_converter"]:
        config["data_converter"] = lenient
        client = Client(**config)
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=list(WORKFLOWS),
        activities=activities_for(settings),
        activity_executor=ThreadPoolExecutor(max_workers=16),
        interceptors=interceptors(client, tracing),
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        workflow_runner=workflow_runner(settings),
        **{**tuning(settings), **kwargs},
    )


def worker_runtime(settings: Settings) -> Runtime:
    """The SDK runtime of the worker process: the SDK core's own log lines forwarded into our
    log (client/logs.py), and, with METRICS_ADDRESS, a Prometheus exporter serving GET /metrics
    there, with the SDK's metric names (`temporal_...`) and durations in seconds. The exporter
    binds when the runtime is made, so a busy port stops the worker here, before it connects."""
    address = settings.metrics_address
    prometheus = (
        None
        if address is None
        else PrometheusConfig(
            bind_address=address,
            durations_as_seconds=True,
            histogram_bucket_overrides={"schedjobs_fire_lateness": LATENESS_BUCKETS},
        )
    )
    try:
        return Runtime(telemetry=TelemetryConfig(logging=core_logging(), metrics=prometheus))
    except ValueError as exc:  # the bridge: "Failed starting Prometheus exporter: <OS error>"
        reason = str(exc).removeprefix("Failed starting Prometheus exporter: ")
        raise ConfigError(
            f"METRICS_ADDRESS={address!r}: cannot serve metrics there ({reason}); stop what "
            "holds the port, or set METRICS_ADDRESS to another ip:port, or to off"
        ) from None


async def main() -> None:
    settings = load_settings()
    setup_logging(settings.log_format)
    runtime = worker_runtime(settings)
    tracing = process_tracing(settings, service="schedjobs-worker")
    settings.database.prepare()  # migrated before anything polls; a bad URL is one line
    client = await connect(settings, runtime=runtime)
    grace = settings.graceful_shutdown
    # On SIGTERM (a deploy) or Ctrl-C, running activities get `grace` to finish here rather
    # than being cancelled and retried elsewhere.
    worker = build_worker(client, settings, tracing=tracing, graceful_shutdown_timeout=grace)
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():  # a second one: leave now; another worker retries what ran here
            log.warning("%s again: stopping without waiting for running activities", sig.name)
            os._exit(1)
        log.info(
            "%s: stopping; running activities get up to %ss to finish (again: stop at once)",
            sig.name,
            f"{grace.total_seconds():g}",
        )
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    log.info(
        "worker on %s, task queue %r, source %s, database %s, sync target %s, metrics %s, "
        "traces %s",
        settings.temporal_address,
        settings.temporal_task_queue,
        settings.dummyjson_base_url,
        settings.database.shown,
        f"Medusa at {settings.medusa_backend_url}"
        if settings.sync_products_target == "medusa"
        else "the built-in catalog",
        f"http://{settings.metrics_address}/metrics" if settings.metrics_address else "off",
        tracing.shown if tracing else "off",
    )
    try:
        async with worker:
            await stop.wait()
    finally:
        if tracing is not None:
            tracing.shutdown()  # the spans still batched are sent before the process ends
    log.info("worker stopped")


def cli() -> None:
    """The `schedjobs-worker` command."""
    exit_process(lambda: exit_on_user_error(lambda: asyncio.run(main())))


if __name__ == "__main__":
    cli()
