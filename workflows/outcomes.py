"""One log line per job outcome, with its reason: a worker interceptor, so every job gets it.

`sync-products completed: fetched 194, created 194, …`, `sync-products failed: <why> (fetched
0, …)`, `echo failed: session: the token expired …`. A job that fails before its body runs (a
rejected session) or after it (raised for a retry) gets its line too. Logged through
`workflow.logger`, so never again when a history is replayed; no workflow commands.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from temporalio import workflow
from temporalio.exceptions import CancelledError, FailureError, is_cancelled_exception
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

with workflow.unsafe.imports_passed_through():
    from jobs.registry import JOBS
    from workflows.retries import retry_follows

JOB_NAMES = {job.type_name: name for name, job in JOBS.items()}
# The counts a job's report may carry (SyncReport), in the order a person reads them.
COUNTS = ("fetched", "created", "updated", "unchanged", "removed", "failed")


def _one_line(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:500]


def _counts(result: Any) -> str:
    found = [(n, getattr(result, n)) for n in COUNTS if isinstance(getattr(result, n, None), int)]
    return ", ".join(f"{n} {v}" for n, v in found)


def outcome_line(job: str, result: Any) -> tuple[int, str]:
    """The level and line of a job that returned: its status (a report's, else completed), the
    reason when it failed, its counts."""
    status = getattr(result, "status", "completed")
    name = job + (" (dry run)" if getattr(result, "dry_run", False) is True else "")
    counts = _counts(result)
    error = getattr(result, "error", None)
    if isinstance(error, str) and error:
        tail = f" ({counts})" if counts else ""
        return logging.ERROR, f"{name} {status}: {error}{tail}"
    level = logging.INFO if status == "completed" else logging.WARNING
    return level, f"{name} {status}" + (f": {counts}" if counts else "")


class _OutcomeInbound(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        job = JOB_NAMES.get(workflow.info().workflow_type)
        if job is None:  # the loop and the fan-out are not jobs
            return await super().execute_workflow(input)
        try:
            result = await super().execute_workflow(input)
        except workflow.ContinueAsNewError:
            raise
        except (Exception, asyncio.CancelledError) as exc:
            if is_cancelled_exception(exc) or isinstance(exc, CancelledError):
                workflow.logger.info("%s canceled", job)
            elif not isinstance(exc, FailureError):
                pass  # a bug: the SDK fails the task (with the traceback), not the job
            elif retry_follows(exc):
                attempt = workflow.info().attempt
                workflow.logger.warning(
                    "%s failed on attempt %d, runs again: %s", job, attempt, _one_line(exc)
                )
            else:
                workflow.logger.error("%s failed: %s", job, _one_line(exc))
            raise
        level, line = outcome_line(job, result)
        workflow.logger.log(level, "%s", line)
        return result


class JobOutcomeLog(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _OutcomeInbound
