"""Optional OpenTelemetry traces: OTEL_EXPORTER_OTLP_ENDPOINT switches them on.

The SDK's `TracingInterceptor` on the client that starts a loop (`starter.py start/run/trigger`)
and on the worker: a loop's run, each fire's children (`StartChildWorkflow:…`), their runs and
their activities (`StartActivity:…`, `RunActivity:…`) share the trace of the call that started
the loop. Spans go through a BatchSpanProcessor to an OTLP/HTTP exporter (`…/v1/traces`); the
exporter's own variables (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _CERTIFICATE, …) apply.

The legacy-named interceptor rather than the SDK's OpenTelemetryPlugin: the plugin reports a
workflow's spans when the workflow ends, and a schedule loop does not end. Span attributes are
the interceptor's ids (workflow id, run id, activity id): no payloads, so no secrets.

Unset: nothing here is imported beyond this module, and nothing is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from client.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

TRACES_PATH = "/v1/traces"  # the OTLP/HTTP signal path, added to the base endpoint
FLUSH_TIMEOUT_MS = 5000  # at exit: spans still batched get this long to be sent


@dataclass
class Tracing:
    """One tracer provider per process, and the interceptor that feeds it."""

    provider: TracerProvider
    endpoint: str
    service: str
    interceptors: list[Any] = field(default_factory=list)
    _stopped: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, *, default_service: str) -> Tracing | None:
        """None when OTEL_EXPORTER_OTLP_ENDPOINT is unset; else a provider exporting to it with
        `service.name` = OTEL_SERVICE_NAME or `default_service`."""
        base = settings.otel_exporter_otlp_endpoint
        if base is None:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from temporalio.contrib.opentelemetry import TracingInterceptor

        service = settings.otel_service_name or default_service
        endpoint = base.rstrip("/") + TRACES_PATH
        # shutdown_on_exit off: our processes leave by os._exit (client/connect.py), so the
        # flush is explicit (`shutdown`), never an atexit hook that would not run.
        provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: service}), shutdown_on_exit=False
        )
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        tracer = provider.get_tracer("schedjobs")
        return cls(provider, endpoint, service, [TracingInterceptor(tracer)])

    @property
    def shown(self) -> str:
        """For the worker's start-up line: where spans go, without any credentials in the URL."""
        scheme, _, rest = self.endpoint.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]} as {self.service}"

    def shutdown(self) -> None:
        """Send what is still batched (bounded), then stop the exporter; once."""
        if self._stopped:
            return
        self._stopped = True
        self.provider.force_flush(FLUSH_TIMEOUT_MS)
        self.provider.shutdown()


_process: Tracing | None = None


def process_tracing(settings: Settings, *, service: str = "schedjobs") -> Tracing | None:
    """This process's tracing, made on first call (the worker calls it first, naming itself
    `schedjobs-worker`); None when OTEL_EXPORTER_OTLP_ENDPOINT is unset."""
    global _process
    if _process is None:
        _process = Tracing.from_settings(settings, default_service=service)
    return _process


def tracing_interceptors(settings: Settings) -> list[Any]:
    """The client interceptors for `Client.connect(interceptors=…)`: the tracing one when
    OTEL_EXPORTER_OTLP_ENDPOINT is set, else []. A worker on that client gets it too."""
    tracing = process_tracing(settings)
    return list(tracing.interceptors) if tracing is not None else []


def flush_traces() -> None:
    """Before the process exits (os._exit skips atexit): send the spans still batched."""
    if _process is not None:
        _process.shutdown()
