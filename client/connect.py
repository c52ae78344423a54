"""Connecting to Temporal the same way everywhere: the SDK's environment configuration (TLS,
API keys, profiles), encrypted pydantic payloads, one-line failures."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import NoReturn

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from client.codec import data_converter
from client.errors import ConfigError, UserError
from client.settings import Settings
from client.temporal_profile import TemporalTarget
from client.tracing import flush_traces, tracing_interceptors

CONNECT_TIMEOUT_S = 5.0


class ServerUnavailable(UserError):
    exit_code = 1


def converter_for(settings: Settings) -> DataConverter:
    """Pydantic payloads, encrypted unless PAYLOAD_ENCRYPTION=false (client/codec.py)."""
    return data_converter(settings.keyring(), encrypt=settings.payload_encryption)


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """Client.connect from the profile, bounded: a server that is not there, refuses our TLS or
    has no such namespace is one clear line, not a hang or a traceback. `runtime`: the SDK
    runtime to use (the worker's, with its metrics exporter); None: the SDK's default."""
    target = settings.target()
    try:
        client = await asyncio.wait_for(
            Client.connect(
                target.address,
                namespace=target.namespace,
                api_key=target.api_key,
                tls=target.tls,
                rpc_metadata=target.rpc_metadata,
                data_converter=converter_for(settings),
                interceptors=tracing_interceptors(settings),
                runtime=runtime,
            ),
            CONNECT_TIMEOUT_S,
        )
    except (RuntimeError, OSError, TimeoutError) as exc:
        raise _unavailable(target, exc) from None
    await _require_namespace(client, target)
    return client


def _unavailable(target: TemporalTarget, exc: BaseException) -> UserError:
    text = str(exc).lower()
    if "certificate" in text or "unknownissuer" in text:
        return ConfigError(
            f"TEMPORAL_TLS_SERVER_CA_CERT_PATH: the server at {target.address} presented a "
            "certificate we do not trust; set it to the CA that signed it (or "
            "TEMPORAL_TLS_SERVER_NAME to the name in the certificate)"
        )
    if target.secured and text and "refused" not in text:  # something answered, not with us
        return ConfigError(
            f"TEMPORAL_TLS: {target.address} dropped our TLS connection; if it wants mTLS set "
            "TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH, if it does not "
            "speak TLS set TEMPORAL_TLS=false"
        )
    secured = " (with TLS)" if target.secured else ""
    return ServerUnavailable(
        f"no Temporal server at {target.address}{secured} (namespace {target.namespace!r}): "
        "start one with `make run`, or point at yours with TEMPORAL_ADDRESS=host:port "
        "(or TEMPORAL_PROFILE)"
    )


async def _require_namespace(client: Client, target: TemporalTarget) -> None:
    """A namespace that does not exist is named now, not as the first command's odd failure.
    A key that may not describe namespaces (some cloud roles) is let through."""
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=target.namespace),
            timeout=timedelta(seconds=CONNECT_TIMEOUT_S),
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ConfigError(
                f"TEMPORAL_NAMESPACE={target.namespace!r}: no such namespace on "
                f"{target.address}; create it (`temporal operator namespace create`) or "
                "set TEMPORAL_NAMESPACE to one that exists"
            ) from None
        if exc.status == RPCStatusCode.UNAUTHENTICATED:
            raise ConfigError(
                f"TEMPORAL_API_KEY: {target.address} refused the credentials "
                f"({exc.message.splitlines()[0] if exc.message else 'unauthenticated'}); "
                "set a valid API key or client certificate"
            ) from None
        if exc.status not in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
            raise ServerUnavailable(
                f"Temporal at {target.address} did not answer ({exc.status.name}); try again"
            ) from None


async def worker_polling(client: Client, task_queue: str) -> bool:
    """Whether any worker has polled the task queue recently (the server keeps ~5 minutes)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return len(resp.pollers) > 0


def exit_process(main: Callable[[], int | None]) -> NoReturn:
    """Run a command's main and leave without interpreter teardown.

    The SDK's Rust bridge keeps threads that can abort CPython's finalisation (SIGABRT after a
    successful run; temporalio/sdk-python#300), so flush and `os._exit` with main's exit code.
    """
    try:
        code = main() or 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    flush_traces()  # os._exit skips the exporter's own exit hook
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
