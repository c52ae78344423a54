"""sync-products into a real Medusa 2.21 store (tests/medusa_store.py starts one per session):
fields and exact prices, no write on a re-run, one update, removal after a complete sync only, dry
run, a wrong key, a retried 500, one sales channel per connection, and a worker killed mid-sync."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from activities.catalog import BatchKey, BatchPlan, from_dummyjson
from activities.connections import NewConnection
from activities.dummyjson import SourceProduct
from activities.medusa import MedusaCatalog
from client.settings import Settings
from devtools.medusa import MedusaStore
from devtools.mirror import Faults, Mirror, load_products
from jobs.sync_products import SyncProductsInput
from tests.conftest import connection_store, worker_process
from tests.medusa_store import MEDUSA_TIMEOUT_S
from tests.test_sync_products import sync
from workflows.sync_products import SyncProductsWorkflow

pytestmark = pytest.mark.timeout(MEDUSA_TIMEOUT_S)  # the first use may install Medusa


def medusa_settings(settings: Settings, store: MedusaStore, **extra: Any) -> Settings:
    fields = {"medusa_backend_url": store.url, "medusa_api_key": store.api_key, **extra}
    fields["medusa_api_key"] = SecretStr(fields["medusa_api_key"])
    return settings.model_copy(update={"sync_products_target": "medusa", **fields})


def connection(settings: Settings, scope: str | None = None) -> str:
    """A connection of its own per test: its own sales channel, so tests never share products."""
    cid = f"m{uuid.uuid4().hex[:8]}"
    connection_store(settings).add(
        NewConnection(id=cid, name=cid, api_key=f"key-{cid}", scope=scope)  # type: ignore[arg-type]
    )
    return cid


def products(store: MedusaStore, cid: str) -> list[dict[str, Any]]:
    """What the store holds in the connection's channel, read through the Admin API."""
    with httpx.Client(base_url=store.url, auth=(store.api_key, ""), timeout=30) as http:
        channels = http.get("/admin/sales-channels", params={"name": f"schedjobs: {cid}"}).json()
        if not channels["sales_channels"]:
            return []
        out: list[dict[str, Any]] = []
        while True:
            page = http.get(
                "/admin/products",
                params={
                    "sales_channel_id": channels["sales_channels"][0]["id"],
                    "fields": "id,handle,title,status,external_id,thumbnail,weight,metadata,"
                    "updated_at,*images,*variants,*variants.prices,"
                    "variants.inventory_items.inventory.location_levels.stocked_quantity",
                    "limit": 100,
                    "offset": len(out),
                },
            )
            body = page.json(parse_float=Decimal)
            out.extend(body["products"])
            if len(out) >= body["count"]:
                return out


def by_external_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(p["external_id"]): p for p in rows}


async def test_a_full_sync_creates_194_with_exact_prices_and_a_rerun_writes_nothing(
    dev_env: WorkflowEnvironment, settings: Settings, medusa_store: MedusaStore, mirror: Mirror
) -> None:
    target = medusa_settings(settings, medusa_store)
    cid = connection(target)
    report = await sync(dev_env, target, connection_id=cid)
    assert report.status == "completed", report
    assert (report.created, report.updated, report.unchanged) == (194, 0, 0)
    held = by_external_id(products(medusa_store, cid))
    assert len(held) == 194
    source = {p["id"]: p for p in load_products()}
    for pid in (1, 78, 194):  # three spot checks, field by field
        p, src = held[f"dummyjson:{pid}"], source[pid]
        assert p["title"] == src["title"] and p["status"] == "published"
        assert p["handle"].startswith(f"{cid}-")
        assert p["thumbnail"] == src["thumbnail"]
        assert [i["url"] for i in p["images"]] == src["images"]
        assert p["metadata"]["brand"] == src.get("brand")
        assert p["metadata"]["tags"] == src["tags"]
        (variant,) = p["variants"]
        assert variant["sku"] == f"{cid}-{src['sku']}"
        (price,) = variant["prices"]
        assert price["currency_code"] == "usd"
        assert price["amount"] == Decimal(str(src["price"]))  # major units, exactly
        (item,) = variant["inventory_items"]
        assert [lv["stocked_quantity"] for lv in item["inventory"]["location_levels"]] == [
            src["stock"]
        ]
    stamps = {ext: p["updated_at"] for ext, p in held.items()}

    again = await sync(dev_env, target, connection_id=cid)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 194)
    assert {e: p["updated_at"] for e, p in by_external_id(products(medusa_store, cid)).items()} == (
        stamps
    )

    mirror.update_product(7, {"price": 12.34, "stock": 3})
    changed = await sync(dev_env, target, connection_id=cid)
    assert (changed.created, changed.updated, changed.unchanged) == (0, 1, 193)
    p7 = by_external_id(products(medusa_store, cid))["dummyjson:7"]
    assert p7["variants"][0]["prices"][0]["amount"] == Decimal("12.34")
    levels = p7["variants"][0]["inventory_items"][0]["inventory"]["location_levels"]
    assert [lv["stocked_quantity"] for lv in levels] == [3]


async def test_removed_after_a_complete_sync_kept_after_a_partial_one_and_dry_run_writes_nothing(
    dev_env: WorkflowEnvironment, settings: Settings, medusa_store: MedusaStore, mirror: Mirror
) -> None:
    target = medusa_settings(settings, medusa_store)
    cid = connection(target, scope="beauty")  # 5 products: quick
    plan = await sync(dev_env, target, connection_id=cid, dry_run=True)
    assert plan.status == "completed" and plan.created == 5 and products(medusa_store, cid) == []

    await sync(dev_env, target, connection_id=cid)
    assert mirror.remove_product(3)
    mirror.set_faults(Faults(fail_skips=[2]))  # partial: the removal must wait
    partial = await sync(dev_env, target, connection_id=cid, max_retries=0, batch_size=2)
    assert partial.status == "partial" and partial.removed == 0
    assert len(products(medusa_store, cid)) == 5

    mirror.set_faults(Faults())
    assert (await sync(dev_env, target, connection_id=cid, dry_run=True)).removed == 1
    assert len(products(medusa_store, cid)) == 5
    done = await sync(dev_env, target, connection_id=cid)
    assert done.status == "completed" and done.removed == 1
    assert "dummyjson:3" not in by_external_id(products(medusa_store, cid))


async def test_a_wrong_key_fails_that_job_at_once_and_two_connections_keep_their_own_channels(
    dev_env: WorkflowEnvironment, settings: Settings, medusa_store: MedusaStore
) -> None:
    target = medusa_settings(settings, medusa_store)
    a, b = connection(target, scope="beauty"), connection(target, scope="beauty")
    assert (await sync(dev_env, target, connection_id=a)).created == 5
    assert (await sync(dev_env, target, connection_id=b)).created == 5  # not "5 unchanged"
    pa, pb = products(medusa_store, a), products(medusa_store, b)
    assert len(pa) == len(pb) == 5 and not {p["id"] for p in pa} & {p["id"] for p in pb}

    wrong = medusa_settings(settings, medusa_store, medusa_api_key="sk_wrong")
    bad = await sync(dev_env, wrong, connection_id=a, max_retries=3)
    assert bad.status == "failed" and bad.error is not None
    assert "MEDUSA_API_KEY" in bad.error and "401" in bad.error
    assert "sk_wrong" not in bad.model_dump_json()
    assert (await sync(dev_env, target, connection_id=a)).unchanged == 5  # the others are fine


class FlakyProxy(ThreadingHTTPServer):
    """127.0.0.1 in front of the real store: the first `fail` product batches get a 500, and a
    batch holding the `reject` external id a 400 (as Medusa answers a product it refuses)."""

    daemon_threads = True

    def __init__(self, upstream: str, fail: int = 0, reject: str | None = None) -> None:
        self.upstream, self.fail, self.batches, self.reject = upstream, fail, 0, reject
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    server: FlakyProxy

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "POST" and self.path.startswith("/admin/products/batch"):
            with self.server.lock:
                self.server.batches += 1
                failing = self.server.batches <= self.server.fail
            if failing:
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.server.reject and self.server.reject.encode() in body:
                refusal = b'{"type": "invalid_data", "message": "this product is refused"}'
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(refusal)))
                self.end_headers()
                self.wfile.write(refusal)
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
        reply = httpx.request(
            self.command, self.server.upstream + self.path, headers=headers, content=body
        )
        self.send_response(reply.status_code)
        for key in ("Content-Type",):
            if key in reply.headers:
                self.send_header(key, reply.headers[key])
        self.send_header("Content-Length", str(len(reply.content)))
        self.end_headers()
        self.wfile.write(reply.content)

    do_GET = do_POST = do_DELETE = _forward


@pytest.fixture
def flaky(medusa_store: MedusaStore) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(medusa_store.url, fail=1, reject='"external_id": "dummyjson:3"')
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


async def test_a_500_is_retried_and_a_400_for_one_product_spares_its_batch_mates(
    dev_env: WorkflowEnvironment, settings: Settings, medusa_store: MedusaStore, flaky: FlakyProxy
) -> None:
    target = medusa_settings(settings, medusa_store, medusa_backend_url=flaky.url)
    cid = connection(target, scope="beauty")  # products 1-5, one batch
    report = await sync(dev_env, target, connection_id=cid, batch_size=5)
    # the 500, the retry refused for product 3, then each product alone
    assert flaky.batches == 2 + 5
    assert report.status == "partial" and report.created == 4 and report.failed == 1
    assert [(p.external_id, p.error) for p in report.failed_products] == [
        ("dummyjson:3", "Medusa POST /admin/products/batch: HTTP 400: this product is refused")
    ]
    held = by_external_id(products(medusa_store, cid))
    assert sorted(held) == [f"dummyjson:{i}" for i in (1, 2, 4, 5)]


async def test_a_worker_killed_mid_sync_leaves_exactly_194_products(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    medusa_store: MedusaStore,
    mirror: Mirror,
    tmp_path: Path,
) -> None:
    target = medusa_settings(settings, medusa_store)
    cid = connection(target)

    def worker() -> subprocess.Popen[bytes]:
        return worker_process(
            dev_env,
            target,
            tmp_path,
            SYNC_PRODUCTS_TARGET="medusa",
            MEDUSA_BACKEND_URL=medusa_store.url,
            MEDUSA_API_KEY=medusa_store.api_key,
        )

    mirror.set_faults(Faults(latency_ms=300))  # batches take long enough to be caught mid-way
    first = worker()
    handle = await dev_env.client.start_workflow(
        SyncProductsWorkflow.run,
        SyncProductsInput(connection_id=cid, batch_size=10, concurrency=2),
        id=f"medusa-kill-{uuid.uuid4().hex[:8]}",
        task_queue=target.temporal_task_queue,
    )
    try:
        while len(products(medusa_store, cid)) < 20:  # two batches in the store, more to come
            assert first.poll() is None
            await asyncio.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = worker()
        try:
            report = await asyncio.wait_for(handle.result(), 120)
        finally:
            second.terminate()
            second.wait()
    finally:
        if first.poll() is None:
            first.kill()
    held = products(medusa_store, cid)
    assert report.status == "completed", report
    assert len(held) == 194 and len({p["external_id"] for p in held}) == 194
    assert report.created + report.updated + report.unchanged == 194


def test_a_retried_batch_whose_write_landed_counts_that_write_and_restocks(
    medusa_store: MedusaStore,
) -> None:
    """The attempt that wrote died before Temporal heard: the retry (same sync run and batch)
    reports what was written, not "unchanged", and sets the stock again."""
    target = MedusaCatalog(medusa_store.url, medusa_store.api_key)
    tenant = f"m{uuid.uuid4().hex[:8]}"
    batch = [from_dummyjson(SourceProduct.model_validate(p)) for p in load_products()[:3]]
    key = BatchKey(f"sync-{tenant}/run-1", 0)

    def counts(plan: BatchPlan) -> str:
        return f"{len(plan.create)}/{len(plan.update)}/{len(plan.unchanged)}"

    assert target.sync_batch_once(key, batch, tenant=tenant, outcome=counts) == "3/0/0"
    assert target.sync_batch_once(key, batch, tenant=tenant, outcome=counts) == "3/0/0"
    later = BatchKey(f"sync-{tenant}/run-2", 0)  # the next sync: nothing to write
    assert target.sync_batch_once(later, batch, tenant=tenant, outcome=counts) == "0/0/3"
    assert len(products(medusa_store, tenant)) == 3
    target.close()
