"""The jobs a schedule can run: job name -> child workflow type and the model of its args."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError

from models import SyncProductsInput


class EchoInput(BaseModel):
    """Args of the `echo` job: it returns them; it can fail or take time on purpose (demos)."""

    model_config = ConfigDict(extra="allow")

    fail: bool = False  # fail for good (not retried)
    fail_attempts: int = Field(0, ge=0)  # fail the first N attempts: `retries` at work
    sleep_s: float = Field(0.0, ge=0)


@dataclass(frozen=True)
class Job:
    workflow: str
    args_model: type[BaseModel]
    per_connection: bool = False  # ShipEngine's default: one run per active connection

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.args_model.model_validate(args).model_dump(mode="json", exclude_unset=True)


JOBS: dict[str, Job] = {
    "sync-products": Job(
        workflow="SyncProductsWorkflow", args_model=SyncProductsInput, per_connection=True
    ),
    "echo": Job(workflow="EchoJobWorkflow", args_model=EchoInput),
}


def cache_id(tag: str, job: str, args: dict[str, Any], session_token: str | None = None) -> str:
    """The workflow id every identical request shares (Ductape's cache tag): Temporal runs one
    workflow per id at a time, and a fresh completed one is reused instead of run again."""
    body = json.dumps([job, args, session_token], sort_keys=True, default=str)
    return f"cache/{tag}/{hashlib.sha256(body.encode()).hexdigest()[:16]}"


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
