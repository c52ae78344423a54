"""The sync-products job as data: what one run does (its input) and what it did (its report).

Defaults come from the SYNC_PRODUCTS_* settings at the starter; the report carries counts only,
never product data, since it travels through workflow history.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SyncProductsInput(BaseModel):
    """What one sync run does; defaults come from the SYNC_PRODUCTS_* settings at the starter."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(15, ge=1, le=1000)
    max_retries: int = Field(2, ge=0, le=20)
    dry_run: bool = False
    concurrency: int = Field(4, ge=1, le=32, description="batches in flight at once")
    retry_initial_interval_s: float = Field(1.0, gt=0, le=60)
    tenant: str = "default"
    # After a complete sync (never a partial one), products the source no longer lists are
    # removed from the target; SYNC_PRODUCTS_DELETE_MISSING=false keeps them.
    delete_missing: bool = True
    # Set by the per-connection fan-out: the activities load this connection's key and scope at
    # run time, and its products go to its own part of the catalog. Never the key itself.
    connection_id: str | None = None

    @property
    def catalog_tenant(self) -> str:
        return self.connection_id or self.tenant


class ProductError(BaseModel):
    """One product that could not be synced; its batch-mates still were."""

    external_id: str
    error: str


class FailedBatch(BaseModel):
    offset: int
    limit: int
    error: str


SyncStatus = Literal["running", "completed", "partial", "failed"]


class SyncReport(BaseModel):
    """The job's result, and its live progress (query `progress`)."""

    status: SyncStatus = "running"
    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0  # gone from the source, so removed from the target (dry run: would be)
    failed: int = 0
    failed_batches: list[FailedBatch] = []
    failed_products: list[ProductError] = []
    dry_run: bool = False
    total: int = 0
    batches: int = 0
    batches_done: int = 0
    duration_s: float = 0.0
    examples: dict[str, list[str]] = {}
    connection_id: str | None = None

    @property
    def error(self) -> str | None:
        """Why a failed sync failed, in one line (the schedule shows it per child)."""
        if self.status != "failed":
            return None
        first = self.failed_batches[0].error if self.failed_batches else "every product failed"
        return f"connection {self.connection_id}: {first}" if self.connection_id else first
