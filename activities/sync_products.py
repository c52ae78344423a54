"""Activities of the sync-products job: count the source, and sync one batch end to end.

One activity per batch fetches, validates, transforms and upserts in one SQLite transaction, and
returns counts only, so product data never enters workflow history. A retried batch re-plans
against the catalog, so it cannot duplicate a row.
"""

from __future__ import annotations

from pydantic import ValidationError
from temporalio import activity

from activities.catalog import CatalogProduct, CatalogTarget, from_dummyjson
from activities.dummyjson import DummyJSONClient, SourceProduct
from models import BatchRequest, BatchResult, ProductError

EXAMPLES = 3


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "product"
    return f"{where}: {err['msg']}"


class SyncProductsActivities:
    """Bound to one source client and one catalog for the worker's lifetime."""

    def __init__(self, source: DummyJSONClient, catalog: CatalogTarget) -> None:
        self.source = source
        self.catalog = catalog

    @activity.defn(name="count_source_products")
    def count_source_products(self) -> int:
        return self.source.count()

    @activity.defn(name="sync_products_batch")
    def sync_products_batch(self, req: BatchRequest) -> BatchResult:
        page = self.source.page(req.offset, req.limit)
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
