"""The jobs a schedule can run: job name -> child workflow type and the model of its args."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models import SyncProductsInput


class EchoInput(BaseModel):
    """Args of the `echo` job: it returns them; it can fail or take time on purpose (demos)."""

    model_config = ConfigDict(extra="allow")

    fail: bool = False
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
