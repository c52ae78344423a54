"""Connecting to Temporal the same way everywhere: pydantic payloads, one-line failures."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from client.errors import UserError
from client.settings import Settings

CONNECT_TIMEOUT_S = 5.0


class ServerUnavailable(UserError):
    exit_code = 1


async def connect(settings: Settings) -> Client:
    """Client.connect, bounded: no server means one clear line, not a hang or a traceback."""
    try:
        return await asyncio.wait_for(
            Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                data_converter=pydantic_data_converter,
            ),
            CONNECT_TIMEOUT_S,
        )
    except (RuntimeError, OSError, TimeoutError) as exc:
        raise ServerUnavailable(
            f"no Temporal server at {settings.temporal_address} "
            f"(namespace {settings.temporal_namespace!r}): start one with `make run` "
            f"or set TEMPORAL_ADDRESS ({type(exc).__name__})"
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
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
