"""Connecting to Temporal the same way everywhere: the SDK's environment configuration (TLS,
API keys, profiles), encrypted pydantic payloads, one-line failures."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import NoReturn

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    GetWorkflowExecutionHistoryRequest,
)
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from client.codec import EncryptionCodec, data_converter, key_id_of
from client.errors import KEYS_FIX, ConfigError, UserError
from client.settings import Settings
from client.temporal_profile import TemporalTarget
from client.tracing import flush_traces, tracing_interceptors

CONNECT_TIMEOUT_S = 5.0


class ServerUnavailable(UserError):
    exit_code = 1


SEALED_SAMPLE = 10  # the newest workflows looked at for payloads sealed under keys we lack


def converter_for(settings: Settings) -> DataConverter:
    """Pydantic payloads, encrypted unless PAYLOAD_ENCRYPTION=false (client/codec.py). Makes
    DATA_DIR/payload.keys if there is none: for the worker; the CLI connects with
    `make_keys=False` and makes them only once it knows the server holds no payloads of others."""
    return data_converter(settings.keyring(), encrypt=settings.payload_encryption)


async def connect(
    settings: Settings, *, runtime: Runtime | None = None, make_keys: bool = True
) -> Client:
    """Client.connect from the profile, bounded: a server that is not there, refuses our TLS or
    has no such namespace is one clear line, not a hang or a traceback. `runtime`: the SDK
    runtime to use (the worker's, with its metrics exporter); None: the SDK's default.

    `make_keys=False` (the CLI): with no PAYLOAD_KEYS and no DATA_DIR/payload.keys, no keys are
    made before the server is reached and found to hold no encrypted payloads (else the keys
    made would not open them: one line naming PAYLOAD_KEYS/DATA_DIR instead); a command that
    writes makes them with with_keys() once its own checks passed."""
    keyring = settings.existing_keyring()
    if make_keys or keyring is not None or not settings.payload_encryption:
        return await _connect(settings, converter_for(settings), runtime)
    client = await _connect(settings, data_converter(None), runtime)
    sealed = await sealed_key_on_server(client)
    if sealed is not None:
        where = settings.target().address
        raise ConfigError(
            f"PAYLOAD_KEYS: Temporal at {where} holds payloads encrypted with key {sealed!r}, "
            f"and there are no keys here (PAYLOAD_KEYS unset, no {settings.payload_keys_path}); "
            f"{KEYS_FIX}"
        )
    return client  # nothing of ours to read there; keys are made by with_keys()


def with_keys(client: Client, settings: Settings) -> Client:
    """The client of a command that writes, once its checks passed: if it connected without
    keys (there were none), DATA_DIR/payload.keys is made now and the client encrypts with it.
    A read-only command (settings.read_only) never makes one."""
    codec = client.data_converter.payload_codec
    if codec is not None or not settings.payload_encryption or settings.read_only:
        return client
    config = client.config()
    config["data_converter"] = converter_for(settings)  # makes the keys
    return Client(**config)


async def sealed_key_on_server(client: Client) -> str | None:
    """The key id of an encrypted payload among the inputs of the newest workflows on the
    server, or None if they have none (a fresh server, payloads in clear, or a server that does
    not let us look: then keys are made as before)."""
    try:
        async for wf in client.list_workflows(limit=SEALED_SAMPLE):
            history = await client.workflow_service.get_workflow_execution_history(
                GetWorkflowExecutionHistoryRequest(
                    namespace=client.namespace,
                    execution=WorkflowExecution(workflow_id=wf.id, run_id=wf.run_id),
                    maximum_page_size=1,
                ),
                timeout=timedelta(seconds=CONNECT_TIMEOUT_S),
            )
            for event in history.history.events[:1]:
                started = event.workflow_execution_started_event_attributes
                for payload in started.input.payloads:
                    key_id = key_id_of(payload)
                    if key_id is not None:
                        return key_id
    except RPCError:
        return None
    return None


async def require_keys_of(client: Client, workflow_id: str) -> None:
    """Before acting on a workflow: its input must be sealed under a key we hold, else one line
    (a control sent with other keys would reach the loop, and its answer could not be read)."""
    codec = client.data_converter.payload_codec
    history = await client.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=client.namespace,
            execution=WorkflowExecution(workflow_id=workflow_id),
            maximum_page_size=1,
        ),
        timeout=timedelta(seconds=CONNECT_TIMEOUT_S),
    )
    for event in history.history.events[:1]:
        for payload in event.workflow_execution_started_event_attributes.input.payloads:
            key_id = key_id_of(payload)
            held = isinstance(codec, EncryptionCodec) and codec.keyring.holds(key_id or "")
            if key_id is not None and not held:
                raise ConfigError(
                    f"PAYLOAD_KEYS: {workflow_id} is encrypted with key {key_id!r}, which "
                    f"PAYLOAD_KEYS (or DATA_DIR/payload.keys) does not hold; {KEYS_FIX}"
                )


async def _connect(settings: Settings, converter: DataConverter, runtime: Runtime | None) -> Client:
    target = settings.target()
    try:
        client = await asyncio.wait_for(
            Client.connect(
                target.address,
                namespace=target.namespace,
                api_key=target.api_key,
                tls=target.tls,
                rpc_metadata=target.rpc_metadata,
                data_converter=converter,
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
