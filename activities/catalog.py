"""The product catalog: a commerce-shaped product model and its store in the application database.

The write side is one small interface, `CatalogTarget.sync_batch`: plan a batch against what the
target holds (create / update / unchanged, by content hash), then apply it unless it is a dry run.
`sync_batch_once` does the same for one batch of one sync run and keeps what it did with the
write, so that a retry after a lost attempt reports that instead of re-planning. A Medusa Admin
API target can implement the same methods later without touching the job.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy import Connection, delete, insert, select, update

from activities.db import Database
from activities.dummyjson import SourceProduct
from activities.schema import batch_outcomes, product_variants, products

CURRENCY = "usd"
# How long the outcome of a committed batch is kept for a retry of that batch. Retries of a
# batch end within the hour (at most 21 attempts, each at most 60 s plus a 60 s wait); a day
# also covers a batch whose retry waited for a worker through an outage.
OUTCOME_RETENTION = timedelta(days=1)


class Variant(BaseModel):
    title: str = "Default"
    sku: str | None
    price_amount: int  # minor units (cents): money is never a float
    currency_code: str = CURRENCY
    inventory_quantity: int


class CatalogProduct(BaseModel):
    """A product as the catalog stores it, Medusa-shaped."""

    external_id: str
    handle: str
    title: str
    description: str
    status: str = "published"
    category: str | None
    tags: list[str]
    images: list[str]
    thumbnail: str | None
    width: float | None
    height: float | None
    depth: float | None
    weight: float | None
    metadata: dict[str, Any]
    variant: Variant

    def content_hash(self) -> str:
        """Hash of what the source decides; the handle is ours, so it is left out."""
        body = self.model_dump(exclude={"handle"}, mode="json")
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def to_minor_units(price: Decimal) -> int:
    return int((price * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-") or "product"


def from_dummyjson(p: SourceProduct) -> CatalogProduct:
    meta = p.meta
    metadata = {
        "brand": p.brand,  # absent on about half of DummyJSON's products: kept as null
        "rating": p.rating,
        "discount_percentage": p.discountPercentage,
        "availability": p.availabilityStatus,
        "warranty": p.warrantyInformation,
        "shipping": p.shippingInformation,
        "return_policy": p.returnPolicy,
        "minimum_order_quantity": p.minimumOrderQuantity,
        "barcode": meta.barcode if meta else None,
        "source_updated_at": meta.updatedAt if meta else None,
    }
    dims = p.dimensions
    return CatalogProduct(
        external_id=f"dummyjson:{p.id}",
        handle=slugify(p.title),
        title=p.title,
        description=p.description,
        category=p.category,
        tags=p.tags,
        images=p.images,
        thumbnail=p.thumbnail,
        width=dims.width if dims else None,
        height=dims.height if dims else None,
        depth=dims.depth if dims else None,
        weight=p.weight,
        metadata=metadata,
        variant=Variant(
            sku=p.sku, price_amount=to_minor_units(p.price), inventory_quantity=p.stock
        ),
    )


@dataclass
class BatchPlan:
    create: list[CatalogProduct] = field(default_factory=list)
    update: list[tuple[int, CatalogProduct]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (external_id, why): the
    # target refused that product alone; its batch-mates were written


@dataclass(frozen=True)
class BatchKey:
    """One batch of one sync run: what every attempt at that batch has in common."""

    sync_run: str  # `<workflow id>/<run id>`
    offset: int


class CatalogTarget(Protocol):
    def sync_batch(
        self, products: Sequence[CatalogProduct], *, tenant: str, dry_run: bool
    ) -> BatchPlan: ...

    def sync_batch_once(
        self,
        key: BatchKey,
        products: Sequence[CatalogProduct],
        *,
        tenant: str,
        outcome: Callable[[BatchPlan], str],
    ) -> str: ...

    def batch_outcome(self, key: BatchKey) -> str | None: ...

    def remove_missing(self, keep: set[str], *, tenant: str, dry_run: bool) -> int: ...


class SqliteCatalog:
    """The built-in catalog: its tables in the application database (SQLite by default, or
    PostgreSQL), safe for concurrent batches."""

    def __init__(self, db: Database | Path | str) -> None:
        self.db = db if isinstance(db, Database) else Database(db)

    def sync_batch(
        self, products: Sequence[CatalogProduct], *, tenant: str = "default", dry_run: bool
    ) -> BatchPlan:
        with self.db.transaction(write=not dry_run) as conn:
            plan = self._plan(conn, products, tenant)
            if not dry_run:
                self._apply(conn, plan, tenant)
        return plan

    def sync_batch_once(
        self,
        key: BatchKey,
        products: Sequence[CatalogProduct],
        *,
        tenant: str = "default",
        outcome: Callable[[BatchPlan], str],
    ) -> str:
        """Plan and apply a batch, storing `outcome(plan)` under `key` in the same transaction,
        and return it. If an earlier attempt already committed this batch (and its worker died
        before Temporal heard of it), nothing is planned or written: its stored outcome is
        returned, so the batch's counts are the ones of the write that happened.

        The outcome's row is claimed first: an attempt running beside another (a retry while
        the first still runs) waits for that one's commit and returns its outcome."""
        t = batch_outcomes
        now = datetime.now(UTC)
        where = (t.c.sync_run == key.sync_run, t.c.batch_offset == key.offset)
        with self.db.transaction() as conn:
            claim = self.db.insert(t).values(
                sync_run=key.sync_run, batch_offset=key.offset, outcome="", recorded_at=""
            )
            if conn.execute(claim.on_conflict_do_nothing().returning(t.c.sync_run)).first() is None:
                return str(conn.execute(select(t.c.outcome).where(*where)).scalar_one())
            plan = self._plan(conn, products, tenant)
            self._apply(conn, plan, tenant)
            text = outcome(plan)
            conn.execute(update(t).where(*where).values(outcome=text, recorded_at=now.isoformat()))
            # The index makes this a range; usually an empty one.
            old = (now - OUTCOME_RETENTION).isoformat()
            conn.execute(delete(t).where(t.c.recorded_at < old))
        return text

    def batch_outcome(self, key: BatchKey) -> str | None:
        """What a committed attempt at this batch stored, if one did."""
        t = batch_outcomes
        with self.db.transaction(write=False) as conn:
            found = select(t.c.outcome).where(
                t.c.sync_run == key.sync_run, t.c.batch_offset == key.offset
            )
            stored = conn.execute(found).scalar()
        return None if stored is None else str(stored)

    def remove_missing(self, keep: set[str], *, tenant: str = "default", dry_run: bool) -> int:
        """Delete the tenant's source products that are not in `keep` (the source's ids after a
        complete sync); return how many (would be) removed. Their variants go with them."""
        t = products
        with self.db.transaction(write=not dry_run) as conn:
            held = conn.execute(
                select(t.c.id, t.c.external_id).where(
                    t.c.tenant == tenant, t.c.external_id.like("dummyjson:%")
                )
            ).all()
            gone = [row.id for row in held if row.external_id not in keep]
            if gone and not dry_run:
                conn.execute(delete(t).where(t.c.id.in_(gone)))
        return len(gone)

    def _plan(self, conn: Connection, batch: Sequence[CatalogProduct], tenant: str) -> BatchPlan:
        t = products
        plan = BatchPlan()
        existing = {
            row.external_id: row
            for row in conn.execute(
                select(t.c.id, t.c.external_id, t.c.content_hash, t.c.handle).where(
                    t.c.tenant == tenant, t.c.external_id.in_([p.external_id for p in batch])
                )
            )
        }
        taken: set[str] = set()
        for product in batch:
            held = existing.get(product.external_id)
            if held is not None:
                if held.content_hash == product.content_hash():
                    plan.unchanged.append(product.external_id)
                else:  # keep the handle people already link to
                    kept = product.model_copy(update={"handle": held.handle})
                    plan.update.append((held.id, kept))
                continue
            handle = product.handle
            clash = conn.execute(
                select(t.c.id).where(t.c.tenant == tenant, t.c.handle == handle)
            ).first()
            if clash or handle in taken:
                handle = f"{handle}-{product.external_id.rsplit(':', 1)[-1]}"
            taken.add(handle)
            plan.create.append(product.model_copy(update={"handle": handle}))
        return plan

    def _apply(self, conn: Connection, plan: BatchPlan, tenant: str) -> None:
        now = datetime.now(UTC).isoformat()
        for p in plan.create:
            row = {"tenant": tenant, "external_id": p.external_id, "handle": p.handle}
            new = insert(products).values(**row, **_columns(p), created_at=now, updated_at=now)
            product_id = conn.execute(new.returning(products.c.id)).scalar_one()
            self._write_variant(conn, product_id, p.variant, now)
        for row_id, p in plan.update:
            changed = update(products).where(products.c.id == row_id)
            conn.execute(changed.values(**_columns(p), updated_at=now))
            self._write_variant(conn, row_id, p.variant, now)

    def _write_variant(self, conn: Connection, product_id: int, v: Variant, now: str) -> None:
        values = {
            "title": v.title,
            "sku": v.sku,
            "price_amount": v.price_amount,
            "currency_code": v.currency_code,
            "inventory_quantity": v.inventory_quantity,
        }
        stmt = self.db.insert(product_variants).values(
            product_id=product_id, **values, created_at=now, updated_at=now
        )
        kept = {k: stmt.excluded[k] for k in (*values, "updated_at") if k != "title"}
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[product_variants.c.product_id, product_variants.c.title],
                set_=kept,
            )
        )


def _columns(p: CatalogProduct) -> dict[str, Any]:
    return {
        "title": p.title,
        "description": p.description,
        "status": p.status,
        "category": p.category,
        "tags": json.dumps(p.tags),
        "images": json.dumps(p.images),
        "thumbnail": p.thumbnail,
        "width": p.width,
        "height": p.height,
        "depth": p.depth,
        "weight": p.weight,
        "metadata": json.dumps(p.metadata),
        "content_hash": p.content_hash(),
    }
