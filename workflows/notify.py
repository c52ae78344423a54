"""Every job started by a schedule tells its schedule when it ends.

A worker interceptor, so no job has to remember to: when a child of a `schedule/...` workflow
completes, fails or is cancelled, it signals `job_finished` to its parent by workflow id (no run
id), which reaches the loop's current run even after continue-as-new. The loop uses it for its
overlap policies and `after_completion`; a lost signal is corrected by the loop's own check. A job
with a retry policy (`retries`) tells it once, from its last attempt.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import CancelledError, is_cancelled_exception
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

with workflow.unsafe.imports_passed_through():
    from workflows.models import JobFinished
    from workflows.retries import retry_follows
    from workflows.schedule import ScheduleWorkflow

SCHEDULE_PREFIX = "schedule/"


async def _notify(parent_id: str, outcome: str, error: str | None = None) -> None:
    finished = JobFinished(
        child_id=workflow.info().workflow_id,
        outcome=outcome,  # type: ignore[arg-type]
        error=error,
    )
    try:
        await workflow.get_external_workflow_handle(parent_id).signal(
            ScheduleWorkflow.job_finished, finished
        )
    except Exception as exc:  # the schedule may be gone (deleted, finished): nothing to tell
        workflow.logger.info("schedule %s not told of %s: %s", parent_id, outcome, exc)


def _one_line(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:500]


class _NotifyInbound(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        parent = workflow.info().parent
        if parent is None or not parent.workflow_id.startswith(SCHEDULE_PREFIX):
            return await super().execute_workflow(input)
        try:
            result = await super().execute_workflow(input)
        except workflow.ContinueAsNewError:
            raise  # the job goes on in a new run
        except (Exception, asyncio.CancelledError) as exc:  # not GeneratorExit: cache eviction
            cancelled = is_cancelled_exception(exc) or isinstance(exc, CancelledError)
            if not cancelled and retry_follows(exc) and workflow.patched("notify-last-attempt"):
                raise  # the job runs again (`retries`): only its last attempt tells the loop
            outcome, error = ("canceled", None) if cancelled else ("failed", _one_line(exc))
            # shielded: a cancelled job still reports that it ended
            await asyncio.shield(_notify(parent.workflow_id, outcome, error))
            raise
        # A job may end normally yet report failure in its result (SyncReport.status "failed").
        error = getattr(result, "error", None) if not isinstance(result, dict) else None
        await _notify(parent.workflow_id, "failed" if error else "completed", error)
        return result


class JobNotifier(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _NotifyInbound
