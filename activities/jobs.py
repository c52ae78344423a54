"""Activities the loop and the job envelope use to look at runs and sessions.

`still_running` and `fresh_cached_runs` describe workflows by id (the loop's checks on its
signals, and the cache TTL); `resolve_session` fills `$Session{...}` placeholders.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.sessions import SessionError, resolve_placeholders, verify_token
from models import ResolveSession


@activity.defn(name="still_running")
async def still_running(child_ids: list[str]) -> list[str]:
    client = activity.client()
    running = []
    for child_id in child_ids:
        try:
            desc = await client.get_workflow_handle(child_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                continue  # gone: not running
            raise  # the server is unwell: retried, never taken for "not running"
        if desc.status == WorkflowExecutionStatus.RUNNING:
            running.append(child_id)
    return running


def completed_within(desc: WorkflowExecutionDescription, ttl: timedelta) -> bool:
    """The cache rule, for the loop's activity and the CLI alike: a run that completed less than
    ttl ago answers an identical request. (A run deleted by retention is not found: runs again.)"""
    closed = desc.close_time
    return (
        desc.status == WorkflowExecutionStatus.COMPLETED
        and closed is not None
        and datetime.now(UTC) - closed < ttl
    )


@activity.defn(name="fresh_cached_runs")
async def fresh_cached_runs(ids: list[str], ttl_s: float) -> list[str]:
    """The ids whose latest run completed less than ttl_s ago: their result is reused."""
    client = activity.client()
    fresh = []
    for wf_id in ids:
        try:
            desc = await client.get_workflow_handle(wf_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                continue  # never ran, or deleted by retention: runs again
            raise
        if completed_within(desc, timedelta(seconds=ttl_s)):
            fresh.append(wf_id)
    return fresh


class SessionActivities:
    """Bound to the session secret for the worker's lifetime."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    @activity.defn(name="resolve_session")
    def resolve_session(self, req: ResolveSession) -> Any:
        token = req.session.token if req.session else None
        try:
            if req.session is not None:
                verify_token(self._secret, req.session.token, tag=req.session.tag)
            return resolve_placeholders(req.input, token=token, secret=self._secret)
        except SessionError as exc:
            raise ApplicationError(
                exc.message, type=f"Session_{exc.kind}", non_retryable=True
            ) from None
