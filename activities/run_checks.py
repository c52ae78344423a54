"""Activities that look at runs by workflow id: the loop's check on its jobs' signals
(`still_running`) and the cache TTL (`fresh_cached_runs`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.client import WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode


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
