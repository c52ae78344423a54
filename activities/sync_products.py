"""Activities of the sync-products job: count the source, and sync one batch end to end.

One activity per batch fetches, validates, transforms and upserts in one SQLite transaction, and
returns counts only, so product data never enters workflow history. A retried batch re-plans
against the catalog, so it cannot duplicate a row.
"""

from __future__ import annotations

import threading

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.catalog import CatalogProduct, CatalogTarget, from_dummyjson
from activities.connections import ConnectionStore, ConnectionUnusable
from activities.dummyjson import DummyJSONClient, SourceProduct
from activities.models import BatchRequest, BatchResult, SourceRequest
from jobs.sync_products import ProductError

EXAMPLES = 3


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "product"
    return f"{where}: {err['msg']}"


class SyncProductsActivities:
    """Bound to the source and the catalog for the worker's lifetime.

    A run for a connection reads that connection's key and scope here, at run time, so the key
    never travels through Temporal; its client is kept until the connection changes.
    """

    def __init__(
        self,
        source: DummyJSONClient,
        catalog: CatalogTarget,
        connections: ConnectionStore | None = None,
    ) -> None:
        self.source = source
        self.catalog = catalog
        self.connections = connections
        self._clients: dict[str, tuple[str, DummyJSONClient]] = {}
        self._lock = threading.Lock()

    def _source(self, connection_id: str | None) -> DummyJSONClient:
        if connection_id is None:
            return self.source
        try:
            conn = self.connections.get(connection_id) if self.connections else None
        except ConnectionUnusable as exc:  # a key sealed with another secret, a bad row
            raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None
        if conn is None or not conn.active:
            state = "is disabled" if conn else "does not exist"
            raise ApplicationError(
                f"the connection {state}; `starter.py connections list` shows them",
                type="ConnectionUnavailable",
                non_retryable=True,
            )
        version = conn.updated_at.isoformat()
        with self._lock:
            known = self._clients.get(connection_id)
            if known is None or known[0] != version:
                client = DummyJSONClient(
                    self.source.base_url,
                    api_key=conn.api_key.get_secret_value(),
                    category=conn.scope,
                )
                self._clients[connection_id] = (version, client)
                if known is not None:
                    known[1].close()
            return self._clients[connection_id][1]

    @activity.defn(name="count_source_products")
    def count_source_products(self, req: SourceRequest | None = None) -> int:
        return self._source(req.connection_id if req else None).count()

    @activity.defn(name="sync_products_batch")
    def sync_products_batch(self, req: BatchRequest) -> BatchResult:
        page = self._source(req.connection_id).page(req.offset, req.limit)
        products: list[CatalogProduct] = []
        invalid: list[ProductError] = []
        for raw in page.products:
            try:
                products.append(from_dummyjson(SourceProduct.model_validate(raw)))
            except ValidationError as exc:
                ref = f"dummyjson:{raw.get('id', '?')}" if isinstance(raw, dict) else "?"
                activity.logger.warning("invalid product %s: %s", ref, _first_error(exc))
                invalid.append(ProductError(external_id=ref, error=_first_error(exc)))
        plan = self.catalog.sync_batch(products, tenant=req.tenant, dry_run=req.dry_run)
        examples = {}
        if req.dry_run:
            examples = {
                "create": [p.title for p in plan.create[:EXAMPLES]],
                "update": [p.title for _, p in plan.update[:EXAMPLES]],
            }
        return BatchResult(
            offset=req.offset,
            fetched=len(page.products),
            created=len(plan.create),
            updated=len(plan.update),
            unchanged=len(plan.unchanged),
            invalid=invalid,
            examples=examples,
        )
