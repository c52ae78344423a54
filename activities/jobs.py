"""Which of a schedule's children are really still running (the loop's check on its signals)."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError


@activity.defn(name="still_running")
async def still_running(child_ids: list[str]) -> list[str]:
    client = activity.client()
    running = []
    for child_id in child_ids:
        try:
            desc = await client.get_workflow_handle(child_id).describe()
        except RPCError:
            continue  # gone: not running
        if desc.status == WorkflowExecutionStatus.RUNNING:
            running.append(child_id)
    return running
