"""Waiting on a job's result through a worker restart and a server restart.

A worker that dies mid-job costs the waiting CLI nothing: the server hands the job to the next
worker, and the wait goes on. A server that goes away (a restart of the dev server) breaks the
wait's long poll: the SDK retries it for ~10 s, then we keep probing the server with a backoff
and wait again on the same workflow id once it answers. Only after SERVER_LOST_TIMEOUT with no
server (default 5m) do we give up, in one line: the job itself is not ours to stop, it goes on.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from client.connect import ServerUnavailable
from client.errors import ConfigError
from scheduling.types import parse_duration

DEFAULT_LOST_TIMEOUT = timedelta(minutes=5)
LOST_TIMEOUT_VARIABLE = "SERVER_LOST_TIMEOUT"
FIRST_PROBE_S = 0.5
MAX_PROBE_S = 5.0
# What a server going away or coming back looks like; anything else is a real answer.
TRANSIENT = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.ABORTED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.INTERNAL,
    }
)


class ServerLost(ServerUnavailable):
    """The wait gave up; the job was not touched."""


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def lost_timeout() -> timedelta:
    """SERVER_LOST_TIMEOUT: how long a wait survives without a server (`30s`, `5m`, ...)."""
    text = os.environ.get(LOST_TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_LOST_TIMEOUT
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(
            f"{LOST_TIMEOUT_VARIABLE}={text!r}: {exc}; use a duration such as 30s or 5m"
        ) from None


async def wait_for_result(
    client: Client,
    handle: WorkflowHandle[Any, Any],
    *,
    address: str,
    where: str,
    lost_after: timedelta | None = None,
    say: Callable[[str], None] = _to_stderr,
) -> Any:
    """`handle.result()` (following retries and continue-as-new), waited through server
    outages of up to `lost_after` each; `say` gets one line when the server is lost and one
    when it is back. `address`, `where`: for the line if we give up (the server, and where the
    job can be seen later). A workflow failure is raised as the SDK raises it."""
    bound = (lost_after if lost_after is not None else lost_timeout()).total_seconds()
    while True:
        try:
            return await handle.result()
        except RPCError as exc:
            if exc.status not in TRANSIENT:
                raise ServerLost(
                    f"waiting on {handle.id}, the Temporal server at {address} answered "
                    f"{exc.status.name}: {_first_line(exc.message)}; see it at {where}"
                ) from None
        limit = f"{bound:.0f} s"
        say(f"lost the Temporal server at {address}; waiting up to {limit} for it to come back")
        await _until_server_answers(client, address=address, where=where, bound_s=bound)
        say(f"the Temporal server at {address} is back; still waiting on {handle.id}")


async def _until_server_answers(
    client: Client, *, address: str, where: str, bound_s: float
) -> None:
    lost_since = time.monotonic()
    delay = FIRST_PROBE_S
    while True:
        try:
            await client.workflow_service.get_system_info(
                GetSystemInfoRequest(), retry=False, timeout=timedelta(seconds=2)
            )
            return
        except RPCError:
            pass
        waited = time.monotonic() - lost_since
        if waited >= bound_s:
            raise ServerLost(
                f"lost the Temporal server at {address} (no answer for {waited:.0f} s); the job "
                f"goes on without this wait: see it at {where}"
            )
        await asyncio.sleep(min(delay, max(0.0, bound_s - waited)))
        delay = min(delay * 2, MAX_PROBE_S)


def _first_line(text: str | None) -> str:
    return (text or "no message").splitlines()[0]
