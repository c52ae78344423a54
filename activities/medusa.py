"""A Medusa v2 store as the sync target, through its Admin API.

The same interface as the SQLite catalog (`CatalogTarget`): plan a batch against what the store
holds, then write it with one `POST /admin/products/batch` (one Medusa workflow per batch, as
Medusa's own sync-products job does). What makes it idempotent and incremental:

- a product is found by its `external_id` (`dummyjson:<id>`) among the products of the
  connection's sales channel, so a retried batch updates what an earlier attempt created and
  cannot duplicate it;
- the content hash is kept in the product's metadata, so an unchanged product is not written;
- each write also stores which sync run wrote it and how (created / updated), so a retry after an
  attempt whose write landed but whose result was lost counts that write, not "unchanged".

Each connection (tenant) has its own sales channel, and its handles and SKUs are prefixed with
the connection id (both are unique store-wide in Medusa), so two connections never overwrite
each other. Prices go to Medusa in major units (9.99) as exact decimals, never through a float.
The API key is a secret key, sent as HTTP Basic `<key>:`; it never enters a workflow history.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.catalog import CURRENCY, BatchKey, BatchPlan, CatalogProduct

TIMEOUT = httpx.Timeout(30.0, connect=5.0)
PAGE = 200  # products per list request
META = "schedjobs"  # our key in a product's metadata: {hash, run, op}
DEFAULT_TENANT = "default"
OPTION = "Default"
STOCK_FIELDS = (
    "id,external_id,variants.inventory_items.inventory_item_id,"
    "variants.inventory_items.inventory.location_levels.location_id"
)  # Medusa v2 variants hang off a product option; ours has one value


def _amount(cents: int) -> Decimal:
    """Integer cents to Medusa's major units, exactly (999 -> 9.99)."""
    return Decimal(cents).scaleb(-2)


def _dumps(body: Any) -> bytes:
    """JSON with Decimals written as exact JSON numbers (the json module would need a float)."""
    marks: dict[str, str] = {}

    def mark(value: Any) -> str:
        if isinstance(value, Decimal):
            key = f"\x00dec{len(marks)}\x00"
            marks[key] = format(value, "f")
            return key
        raise TypeError(f"not JSON: {type(value).__name__}")

    text = json.dumps(body, default=mark)
    for key, number in marks.items():
        text = text.replace(json.dumps(key), number)
    return text.encode()


@dataclass(frozen=True)
class Held:
    """What the store holds for one of our products, as far as planning needs."""

    id: str
    handle: str
    hash: str | None
    run: str | None
    op: str | None
    variant_id: str | None


class MedusaError(ApplicationError):
    pass


class MedusaCatalog:
    """One store, one pooled HTTP client (thread-safe: batches run at once)."""

    def __init__(self, base_url: str, api_key: str, *, currency: str = CURRENCY) -> None:
        self.base_url = base_url.rstrip("/")
        self.currency = currency
        self._http = httpx.Client(
            base_url=self.base_url, auth=(api_key, ""), timeout=TIMEOUT, headers=_JSON
        )
        self._lock = threading.RLock()

    def close(self) -> None:
        self._http.close()

    # --- HTTP ------------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        where = f"Medusa {method} {path}"
        try:
            response = self._http.request(
                method, path, params=params, content=None if body is None else _dumps(body)
            )
        except httpx.HTTPError as exc:  # timeouts, refused connections: retried by the job
            raise MedusaError(f"{where}: {type(exc).__name__}", type="TargetUnavailable") from None
        status = response.status_code
        if status in (401, 403):
            raise MedusaError(
                f"{where}: HTTP {status}: the store refused the API key; set MEDUSA_API_KEY to "
                "a secret API key of the store (Settings > Secret API Keys)",
                type="TargetUnauthorized",
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,  # reported, not a worker traceback
            )
        if status >= 500 or status in (408, 429):
            raise MedusaError(f"{where}: HTTP {status}", type="TargetUnavailable")
        if status >= 400:
            raise MedusaError(
                f"{where}: HTTP {status}: {_message(response)}",
                type="TargetRejected",
                non_retryable=True,
            )
        return response.json(parse_float=Decimal) if response.content else None

    def _pages(self, path: str, key: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self._call("GET", path, params={**params, "limit": PAGE, "offset": offset})
            items = page.get(key) or []
            yield from items
            offset += len(items)
            if not items or offset >= int(page.get("count", 0)):
                return

    # --- sales channels: one per connection -------------------------------------------------

    def channel(self, tenant: str) -> str:
        """The connection's sales channel id, made the first time (named after the tenant).
        Looked up on every batch, not kept: a channel an admin deleted is made again, instead
        of products being written into a channel that is gone."""
        with self._lock:  # one worker never makes the same channel twice
            name = f"schedjobs: {tenant}"
            found = [
                c
                for c in self._pages("/admin/sales-channels", "sales_channels", {"name": name})
                if c.get("name") == name
            ]
            if found:
                channel_id = str(found[0]["id"])
            else:
                made = self._call(
                    "POST",
                    "/admin/sales-channels",
                    body={
                        "name": name,
                        "description": f"Products synced from DummyJSON for {tenant}",
                    },
                )
                channel_id = str(made["sales_channel"]["id"])
                self._call(  # so the channel can sell the stock we keep at our location
                    "POST",
                    f"/admin/stock-locations/{self.location()}/sales-channels",
                    body={"add": [channel_id]},
                )
            return channel_id

    # --- reading what the store holds --------------------------------------------------------

    def held(self, channel: str, external_ids: Sequence[str] | None = None) -> dict[str, Held]:
        """Our products in a connection's channel by external_id: all, or just these."""
        params: dict[str, Any] = {
            "sales_channel_id": channel,
            "fields": "id,handle,external_id,metadata,variants.id",
        }
        if external_ids is not None:
            if not external_ids:
                return {}
            params["external_id"] = list(external_ids)
        out: dict[str, Held] = {}
        for p in self._pages("/admin/products", "products", params):
            external_id = p.get("external_id")
            if not isinstance(external_id, str) or not external_id.startswith("dummyjson:"):
                continue
            meta = (p.get("metadata") or {}).get(META) or {}
            variants = p.get("variants") or []
            out[external_id] = Held(
                id=str(p["id"]),
                handle=str(p.get("handle") or ""),
                hash=meta.get("hash"),
                run=meta.get("run"),
                op=meta.get("op"),
                variant_id=str(variants[0]["id"]) if variants else None,
            )
        return out

    # --- the CatalogTarget interface ----------------------------------------------------------

    def sync_batch(
        self, products: Sequence[CatalogProduct], *, tenant: str = DEFAULT_TENANT, dry_run: bool
    ) -> BatchPlan:
        channel = self.channel(tenant)
        plan, held, _ = self._plan(products, channel, run=None)
        if not dry_run:
            self._write(plan, held, tenant, channel, run=None)
        return plan

    def sync_batch_once(
        self,
        key: BatchKey,
        products: Sequence[CatalogProduct],
        *,
        tenant: str = DEFAULT_TENANT,
        outcome: Callable[[BatchPlan], str],
    ) -> str:
        """Plan and write, stamping each written product with this sync run: a retry of a batch
        whose write landed (the worker died before Temporal heard) counts those writes again
        as created / updated, so the report stays true."""
        channel = self.channel(tenant)
        plan, held, landed = self._plan(products, channel, run=key.sync_run)
        self._write(plan, held, tenant, channel, run=key.sync_run)
        self._restock([p for _, p in landed], held)
        for op, item in landed:
            if op == "created":
                plan.create.append(item)
            else:
                plan.update.append((0, item))
        return outcome(plan)

    def batch_outcome(self, key: BatchKey) -> str | None:
        """Never stored apart from the products: `sync_batch_once` reads it off them."""
        return None

    def remove_missing(self, keep: set[str], *, tenant: str = DEFAULT_TENANT, dry_run: bool) -> int:
        gone = [h.id for ext, h in self.held(self.channel(tenant)).items() if ext not in keep]
        if gone and not dry_run:
            for start in range(0, len(gone), PAGE):
                self._call(
                    "POST", "/admin/products/batch", body={"delete": gone[start : start + PAGE]}
                )
        return len(gone)

    # --- planning and writing ----------------------------------------------------------------

    def _plan(
        self, products: Sequence[CatalogProduct], channel: str, run: str | None
    ) -> tuple[BatchPlan, dict[str, Held], list[tuple[str, CatalogProduct]]]:
        held = self.held(channel, [p.external_id for p in products])
        plan = BatchPlan()
        landed: list[tuple[str, CatalogProduct]] = []
        handles: set[str] = set()
        for product in products:
            h = held.get(product.external_id)
            if h is None:  # two source products with one title: the second gets its id added
                if product.handle in handles:
                    product = product.model_copy(
                        update={"handle": f"{product.handle}-{_source_id(product)}"}
                    )
                handles.add(product.handle)
                plan.create.append(product)
                continue
            if h.hash == product.content_hash():
                if run is not None and h.run == run and h.op in ("created", "updated"):
                    landed.append((h.op, product))  # an earlier attempt of this batch wrote it
                else:
                    plan.unchanged.append(product.external_id)
            else:
                plan.update.append((0, product.model_copy(update={"handle": h.handle})))
        return plan, held, landed

    def _write(
        self, plan: BatchPlan, held: dict[str, Held], tenant: str, channel: str, run: str | None
    ) -> None:
        """One request for the batch. Medusa's batch is all or nothing, so if the store refuses
        it (a 400), each product is sent alone: only the bad one is reported, and its
        batch-mates are written."""
        items: list[tuple[CatalogProduct, str, dict[str, Any]]] = [
            *((p, "create", self._create(p, tenant, channel, run)) for p in plan.create),
            *((p, "update", self._update(p, held[p.external_id], run)) for _, p in plan.update),
        ]
        if not items:
            return
        try:
            return self._batch(items)
        except MedusaError as exc:
            if exc.type != "TargetRejected":
                raise
            if len(items) == 1:
                plan.create, plan.update = [], []
                plan.rejected.append((items[0][0].external_id, exc.message))
                return None
        plan.create, plan.update = [], []
        for item in items:
            product, op, _ = item
            refused = self._alone(item)
            if refused is not None:
                plan.rejected.append((product.external_id, refused))
            elif op == "create":
                plan.create.append(product)
            else:
                plan.update.append((0, product))
        return None

    def _alone(self, item: tuple[CatalogProduct, str, dict[str, Any]]) -> str | None:
        """One product on its own; None when written, else why the store refused it. A handle
        taken meanwhile (two products with one title in batches running at once) gets the
        source id appended, as the planner does within a batch."""
        product, op, body = item
        try:
            self._batch([item])
            return None
        except MedusaError as exc:
            if exc.type != "TargetRejected":
                raise
            if op != "create" or "handle" not in exc.message:
                return exc.message
        suffixed = {**body, "handle": f"{body['handle']}-{_source_id(product)}"}
        try:
            self._batch([(product, op, suffixed)])
            return None
        except MedusaError as exc:
            if exc.type != "TargetRejected":
                raise
            return exc.message

    def _batch(self, items: Sequence[tuple[CatalogProduct, str, dict[str, Any]]]) -> None:
        """One batch write, then the stock of what it wrote (one more request)."""
        body = {
            "create": [b for _, op, b in items if op == "create"],
            "update": [b for _, op, b in items if op == "update"],
        }
        done = self._call(
            "POST", "/admin/products/batch", body=body, params={"fields": STOCK_FIELDS}
        )
        written = [*(done.get("created") or []), *(done.get("updated") or [])]
        self._set_stock(written, {p.external_id: p for p, _, _ in items})

    # --- stock: inventory levels at the store's stock location -------------------------------

    def location(self) -> str:
        """Where our stock is kept: the store's first stock location, or one we make (looked
        up each time, like the channel)."""
        with self._lock:
            found = self._call("GET", "/admin/stock-locations", params={"fields": "id", "limit": 1})
            if found.get("stock_locations"):
                return str(found["stock_locations"][0]["id"])
            made = self._call(
                "POST", "/admin/stock-locations", body={"name": "schedjobs warehouse"}
            )
            return str(made["stock_location"]["id"])

    def _set_stock(
        self, written: list[dict[str, Any]], products: dict[str, CatalogProduct]
    ) -> None:
        """Each written variant's stocked quantity at our location: new levels are created,
        existing ones updated, all in one request."""
        location = self.location()
        create: list[dict[str, Any]] = []
        update: list[dict[str, Any]] = []
        for row in written:
            product = products.get(str(row.get("external_id")))
            variants = row.get("variants") or []
            items = variants[0].get("inventory_items") or [] if variants else []
            if product is None or not items:
                continue
            item = items[0]
            levels = (item.get("inventory") or {}).get("location_levels") or []
            level = {
                "inventory_item_id": item["inventory_item_id"],
                "location_id": location,
                "stocked_quantity": product.variant.inventory_quantity,
            }
            has = any(lv.get("location_id") == location for lv in levels)
            (update if has else create).append(level)
        if create or update:
            self._call(
                "POST",
                "/admin/inventory-items/location-levels/batch",
                body={"create": create, "update": update},
            )

    def _restock(self, products: Sequence[CatalogProduct], held: dict[str, Held]) -> None:
        """A retry of a batch whose write landed sets the stock again: the earlier attempt may
        have died between the product write and the stock write."""
        ids = [held[p.external_id].id for p in products]
        if not ids:
            return
        rows = self._call(
            "GET", "/admin/products", params={"id": ids, "fields": STOCK_FIELDS, "limit": len(ids)}
        )
        self._set_stock(rows.get("products") or [], {p.external_id: p for p in products})

    def _fields(self, p: CatalogProduct, op: str, run: str | None) -> dict[str, Any]:
        return {
            "title": p.title,
            "description": p.description,
            "status": p.status,
            "thumbnail": p.thumbnail,
            "images": [{"url": url} for url in p.images],
            "weight": p.weight,
            "width": p.width,
            "height": p.height,
            "length": p.depth,
            "metadata": {
                **p.metadata,
                "category": p.category,
                "tags": p.tags,
                META: {"hash": p.content_hash(), "run": run, "op": op},
            },
        }

    def _variant(self, p: CatalogProduct, tenant: str) -> dict[str, Any]:
        sku = p.variant.sku
        return {
            "title": p.variant.title,
            "sku": sku if tenant == DEFAULT_TENANT or sku is None else f"{tenant}-{sku}",
            "manage_inventory": True,  # stock: an inventory level at our location
            "prices": [{"amount": _amount(p.variant.price_amount), "currency_code": self.currency}],
        }

    def _create(
        self, p: CatalogProduct, tenant: str, channel: str, run: str | None
    ) -> dict[str, Any]:
        handle = p.handle if tenant == DEFAULT_TENANT else f"{tenant}-{p.handle}"
        return {
            **self._fields(p, "created", run),
            "handle": handle,
            "external_id": p.external_id,
            "sales_channels": [{"id": channel}],
            "options": [{"title": OPTION, "values": [OPTION]}],
            "variants": [{**self._variant(p, tenant), "options": {OPTION: OPTION}}],
        }

    def _update(self, p: CatalogProduct, h: Held, run: str | None) -> dict[str, Any]:
        variant = {k: v for k, v in self._variant(p, DEFAULT_TENANT).items() if k not in ("sku",)}
        return {
            "id": h.id,
            **self._fields(p, "updated", run),
            "variants": [{"id": h.variant_id, **variant}] if h.variant_id else [],
        }


def _source_id(product: CatalogProduct) -> str:
    return product.external_id.rsplit(":", 1)[-1]


_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message") or body)[:300] if isinstance(body, dict) else str(body)[:300]
