"""Whether a failing job workflow runs again: its retry policy (a schedule's `retries`)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError


def retry_follows(exc: BaseException | None = None) -> bool:
    """Whether Temporal runs this job workflow again if it fails now (with `exc`, or with a
    retryable error): it has a retry policy (`retries`) with attempts left. Call in a workflow."""
    info = workflow.info()
    policy = info.retry_policy
    if policy is None or (exc is not None and not isinstance(exc, FailureError)):
        return False
    if isinstance(exc, ApplicationError) and (
        exc.non_retryable or exc.type in (policy.non_retryable_error_types or [])
    ):
        return False
    return policy.maximum_attempts == 0 or info.attempt < policy.maximum_attempts
