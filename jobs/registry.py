"""The jobs a schedule can run: job name -> its workflow and the model of its args.

Shared by the starter (checking a spec), the loop (starting children by reference, so a renamed
workflow is a type error, not a stuck schedule) and the expansion activity (checking inputs);
also the cache id identical Ductape requests share.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from jobs.echo import EchoInput
from jobs.sync_products import SyncProductsInput
from workflows.echo import EchoJobWorkflow
from workflows.sync_products import SyncProductsWorkflow


@dataclass(frozen=True)
class Job:
    workflow: type[Any]  # a @workflow.defn class without name=: its type is its class name
    args_model: type[BaseModel]
    per_connection: bool = False  # ShipEngine's default: one run per active connection

    @property
    def type_name(self) -> str:
        return self.workflow.__name__

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.args_model.model_validate(args).model_dump(mode="json", exclude_unset=True)


JOBS: dict[str, Job] = {
    "sync-products": Job(
        workflow=SyncProductsWorkflow, args_model=SyncProductsInput, per_connection=True
    ),
    "echo": Job(workflow=EchoJobWorkflow, args_model=EchoInput),
}


def cache_id(tag: str, job: str, args: dict[str, Any], session_token: str | None = None) -> str:
    """The workflow id every identical request shares (Ductape's cache tag): Temporal runs one
    workflow per id at a time, and a fresh completed one is reused instead of run again."""
    body = json.dumps([job, args, session_token], sort_keys=True, default=str)
    return f"cache/{tag}/{hashlib.sha256(body.encode()).hexdigest()[:16]}"
