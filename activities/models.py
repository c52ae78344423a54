"""What workflows send to activities and get back: requests and results, counts not data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from jobs.sync_products import ProductError
from scheduling.spec import SessionRef


class SourceRequest(BaseModel):
    """Which source to read: the public one, or one connection's (its key, its scope)."""

    connection_id: str | None = None


class BatchRequest(BaseModel):
    offset: int = Field(ge=0)
    limit: int = Field(ge=1)
    dry_run: bool = False
    tenant: str = "default"
    connection_id: str | None = None


class RemoveRequest(BaseModel):
    """After a complete sync: remove from the target what the source no longer lists."""

    dry_run: bool = False
    tenant: str = "default"
    connection_id: str | None = None


class BatchResult(BaseModel):
    """Counts only: product data never travels through workflow history."""

    offset: int
    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    invalid: list[ProductError] = []
    examples: dict[str, list[str]] = {}


class ExpansionRequest(BaseModel):
    name: str
    job: str
    fire_time: datetime
    args: dict[str, Any] = {}
    # Since keyed expansion (workflow.patched "keyed-expansion"):
    expansion: str | None = None
    api_code: str = "dummyjson"
    fire_key: str = ""  # `<name>/<fire time>`: names stored pages of a large expansion


class ExpandedInput(BaseModel):
    """One child of a fire: its args, and the key that ends its workflow id (None: no suffix)."""

    key: str | None
    args: dict[str, Any]


class Expansion(BaseModel):
    """What one fire runs. Small ones travel inline; large ones are stored in pages in the
    application database (`ref`), so no payload or history carries all inputs at once."""

    function: str
    count: int
    inputs: list[ExpandedInput] = []
    ref: str | None = None
    pages: int = 0
    note: str | None = None  # why an expansion is empty, for the fire's record


class ResolveSession(BaseModel):
    input: Any
    session: SessionRef | None = None
