"""The product catalog: a commerce-shaped product model and its SQLite store.

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
import sqlite3
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from activities.db import Database
from activities.dummyjson import SourceProduct

CURRENCY = "usd"
# How long the outcome of a committed batch is kept for a retry of that batch. Retries of a
# batch end within the hour (at most 21 attempts, each at most 60 s plus a 60 s wait); a day
# also covers a batch whose retry waited for a worker through an outage.
OUTCOME_RETENTION = timedelta(days=1)

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id            INTEGER PRIMARY KEY,
    tenant        TEXT NOT NULL DEFAULT 'default',
    external_id   TEXT NOT NULL,
    handle        TEXT NOT NULL,
    title         TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL CHECK (status IN ('draft', 'published')),
    category      TEXT,
    tags          TEXT NOT NULL DEFAULT '[]',
    images        TEXT NOT NULL DEFAULT '[]',
    thumbnail     TEXT,
    width         REAL,
    height        REAL,
    depth         REAL,
    weight        REAL,
    metadata      TEXT NOT NULL DEFAULT '{}',
    content_hash  TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (tenant, external_id),
    UNIQUE (tenant, handle)
);
CREATE TABLE IF NOT EXISTS product_variants (
    id                 INTEGER PRIMARY KEY,
    product_id         INTEGER NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    title              TEXT NOT NULL,
    sku                TEXT,
    price_amount       INTEGER NOT NULL CHECK (typeof(price_amount) = 'integer'),
    currency_code      TEXT NOT NULL,
    inventory_quantity INTEGER NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (product_id, title)
);
CREATE TABLE IF NOT EXISTS batch_outcomes (
    sync_run      TEXT NOT NULL,  -- `<workflow id>/<run id>` of the sync
    batch_offset  INTEGER NOT NULL,
    outcome       TEXT NOT NULL,  -- what the batch did, as the job reports it (JSON)
    recorded_at   TEXT NOT NULL,
    PRIMARY KEY (sync_run, batch_offset)
);
CREATE INDEX IF NOT EXISTS batch_outcomes_recorded_at ON batch_outcomes (recorded_at);
"""


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
    """The catalog's tables in the application database (WAL), safe for concurrent batches."""

    def __init__(self, path: Path | str) -> None:
        self.db = Database(path, SCHEMA)
        self.path = self.db.path

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
        returned, so the batch's counts are the ones of the write that happened."""
        with self.db.transaction() as conn:
            stored = self._outcome(conn, key)
            if stored is not None:
                return stored
            plan = self._plan(conn, products, tenant)
            self._apply(conn, plan, tenant)
            text = outcome(plan)
            now = datetime.now(UTC)
            conn.execute(
                "INSERT INTO batch_outcomes (sync_run, batch_offset, outcome, recorded_at) "
                "VALUES (?, ?, ?, ?)",
                (key.sync_run, key.offset, text, now.isoformat()),
            )
            conn.execute(  # the index makes this a range; usually an empty one
                "DELETE FROM batch_outcomes WHERE recorded_at < ?",
                ((now - OUTCOME_RETENTION).isoformat(),),
            )
        return text

    def batch_outcome(self, key: BatchKey) -> str | None:
        """What a committed attempt at this batch stored, if one did."""
        with self.db.transaction(write=False) as conn:
            return self._outcome(conn, key)

    def remove_missing(self, keep: set[str], *, tenant: str = "default", dry_run: bool) -> int:
        """Delete the tenant's source products that are not in `keep` (the source's ids after a
        complete sync); return how many (would be) removed. Their variants go with them."""
        with self.db.transaction(write=not dry_run) as conn:
            held = [
                (row["id"], row["external_id"])
                for row in conn.execute(
                    "SELECT id, external_id FROM products WHERE tenant = ? "
                    "AND external_id LIKE 'dummyjson:%'",
                    (tenant,),
                )
            ]
            gone = [row_id for row_id, external_id in held if external_id not in keep]
            if not dry_run:
                conn.executemany("DELETE FROM products WHERE id = ?", [(i,) for i in gone])
        return len(gone)

    @staticmethod
    def _outcome(conn: sqlite3.Connection, key: BatchKey) -> str | None:
        row = conn.execute(
            "SELECT outcome FROM batch_outcomes WHERE sync_run = ? AND batch_offset = ?",
            (key.sync_run, key.offset),
        ).fetchone()
        return None if row is None else str(row["outcome"])

    def _plan(
        self, conn: sqlite3.Connection, products: Sequence[CatalogProduct], tenant: str
    ) -> BatchPlan:
        plan = BatchPlan()
        ids = [p.external_id for p in products]
        marks = ",".join("?" * len(ids))
        existing = {
            row["external_id"]: (row["id"], row["content_hash"], row["handle"])
            for row in conn.execute(
                f"SELECT id, external_id, content_hash, handle FROM products "
                f"WHERE tenant = ? AND external_id IN ({marks})",
                [tenant, *ids],
            )
        }
        taken: set[str] = set()
        for product in products:
            if product.external_id in existing:
                row_id, old_hash, handle = existing[product.external_id]
                if old_hash == product.content_hash():
                    plan.unchanged.append(product.external_id)
                else:  # keep the handle people already link to
                    plan.update.append((row_id, product.model_copy(update={"handle": handle})))
                continue
            handle = product.handle
            clash = conn.execute(
                "SELECT 1 FROM products WHERE tenant = ? AND handle = ?", (tenant, handle)
            ).fetchone()
            if clash or handle in taken:
                handle = f"{handle}-{product.external_id.rsplit(':', 1)[-1]}"
            taken.add(handle)
            plan.create.append(product.model_copy(update={"handle": handle}))
        return plan

    def _apply(self, conn: sqlite3.Connection, plan: BatchPlan, tenant: str) -> None:
        now = datetime.now(UTC).isoformat()
        for p in plan.create:
            cur = conn.execute(
                """INSERT INTO products (tenant, external_id, handle, title, description, status,
                   category, tags, images, thumbnail, width, height, depth, weight, metadata,
                   content_hash, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (tenant, p.external_id, p.handle, *_columns(p), now, now),
            )
            _write_variant(conn, cur.lastrowid, p.variant, now)
        for row_id, p in plan.update:
            conn.execute(
                """UPDATE products SET title = ?, description = ?, status = ?, category = ?,
                   tags = ?, images = ?, thumbnail = ?, width = ?, height = ?, depth = ?,
                   weight = ?, metadata = ?, content_hash = ?, updated_at = ? WHERE id = ?""",
                (*_columns(p), now, row_id),
            )
            _write_variant(conn, row_id, p.variant, now)


def _columns(p: CatalogProduct) -> tuple[Any, ...]:
    return (
        p.title,
        p.description,
        p.status,
        p.category,
        json.dumps(p.tags),
        json.dumps(p.images),
        p.thumbnail,
        p.width,
        p.height,
        p.depth,
        p.weight,
        json.dumps(p.metadata),
        p.content_hash(),
    )


def _write_variant(conn: sqlite3.Connection, product_id: int | None, v: Variant, now: str) -> None:
    conn.execute(
        """INSERT INTO product_variants (product_id, title, sku, price_amount, currency_code,
           inventory_quantity, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (product_id, title) DO UPDATE SET sku = excluded.sku,
           price_amount = excluded.price_amount, currency_code = excluded.currency_code,
           inventory_quantity = excluded.inventory_quantity, updated_at = excluded.updated_at""",
        (
            product_id,
            v.title,
            v.sku,
            v.price_amount,
            v.currency_code,
            v.inventory_quantity,
            now,
            now,
        ),
    )
