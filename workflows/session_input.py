"""Ductape sessions: a job's `$Session{tag}{key}` placeholders are filled before its body runs.

A worker interceptor, so every job gets it: when the job's input has placeholders, or a session
is attached (memo `session`, set by workflows/children.py), the `resolve_session` activity
verifies the token's signature, tag and expiry and returns the filled input. Any failure fails the
job, non-retryably, with the reason; the job body never runs with unresolved data.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

with workflow.unsafe.imports_passed_through():
    from activities.models import ResolveSession
    from activities.sessions import SessionActivities
    from jobs.registry import JOBS
    from jobs.sessions import find_placeholders
    from scheduling.spec import SessionRef
    from workflows.children import SESSION_MEMO

JOB_TYPES = {job.type_name for job in JOBS.values()}  # not the loop, whose spec holds the raw input

RESOLVE_TIMEOUT = timedelta(seconds=30)


class _SessionInbound(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        if workflow.info().workflow_type not in JOB_TYPES:
            return await super().execute_workflow(input)
        session = (
            workflow.memo_value(SESSION_MEMO, type_hint=SessionRef)
            if SESSION_MEMO in workflow.memo()
            else None
        )
        arg = input.args[0] if input.args else None
        raw = arg.model_dump(mode="json") if isinstance(arg, BaseModel) else arg
        if session is None and not find_placeholders(raw):
            return await super().execute_workflow(input)
        try:
            resolved = await workflow.execute_activity_method(
                SessionActivities.resolve_session,
                ResolveSession(input=raw, session=session),
                start_to_close_timeout=RESOLVE_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary="fill the args' $Session placeholders",
            )
        except ActivityError as exc:
            cause = exc.cause
            if not isinstance(cause, ApplicationError) or not (cause.type or "").startswith(
                "Session"
            ):
                raise  # the activity could not run (timeouts): the job's own retries apply
            raise ApplicationError(
                f"session: {cause.message}", type="SessionRejected", non_retryable=True
            ) from None
        if not isinstance(arg, BaseModel):
            return await super().execute_workflow(dataclasses.replace(input, args=[resolved]))
        try:
            new = type(arg).model_validate(resolved)
        except ValidationError as exc:  # a session value of the wrong type for the job
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ApplicationError(
                f"session: the filled input is not valid: {where}: {err['msg']}",
                type="SessionRejected",
                non_retryable=True,
            ) from None
        return await super().execute_workflow(dataclasses.replace(input, args=[new]))


class SessionResolver(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _SessionInbound
