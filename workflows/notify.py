"""Every job started by a schedule can tell its schedule when it ends.

The loop reads the end of a job it started from the job's completion event, which reaches the
run that started it. That run may have continued as new since; so, before it does, it asks its
running jobs (signal `report_end`) to report instead. This worker interceptor, so no job has to
remember to, then signals `job_finished` to the parent by workflow id (no run id), which reaches
the loop's current run. A job tells it when asked, when it is a retry or a later run of itself
(the ask went to an earlier run), and always when it was started without the `report` memo (by a
loop from before completion events). The loop uses it for its overlap policies and
`after_completion`; a lost signal is corrected by the loop's own check. A job with a retry policy
(`retries`) tells it once, from its last attempt.
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
    from workflows.models import REPORT_MEMO, REPORT_ON_REQUEST, REPORT_SIGNAL, JobFinished
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
        info = workflow.info()
        parent = info.parent
        if parent is None or not parent.workflow_id.startswith(SCHEDULE_PREFIX):
            return await super().execute_workflow(input)
        asked = not (
            workflow.memo().get(REPORT_MEMO) == REPORT_ON_REQUEST
            and info.attempt == 1
            and info.continued_run_id is None
        )

        def ask() -> None:
            nonlocal asked
            asked = True

        workflow.set_signal_handler(REPORT_SIGNAL, ask)
        try:
            result = await super().execute_workflow(input)
        except workflow.ContinueAsNewError:
            raise  # the job goes on in a new run
        except (Exception, asyncio.CancelledError) as exc:  # not GeneratorExit: cache eviction
            cancelled = is_cancelled_exception(exc) or isinstance(exc, CancelledError)
            if not cancelled and retry_follows(exc) and workflow.patched("notify-last-attempt"):
                raise  # the job runs again (`retries`): only its last attempt tells the loop
            outcome, error = ("canceled", None) if cancelled else ("failed", _one_line(exc))
            if asked:  # shielded: a cancelled job still reports that it ended
                await asyncio.shield(_notify(parent.workflow_id, outcome, error))
            raise
        # A job may end normally yet report failure in its result (SyncReport.status "failed").
        error = getattr(result, "error", None) if not isinstance(result, dict) else None
        if asked:
            await _notify(parent.workflow_id, "failed" if error else "completed", error)
        return result


class JobNotifier(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _NotifyInbound
