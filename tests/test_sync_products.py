"""The sync-products job end to end: dev server, worker, mirror over HTTP, SQLite catalog."""

from __future__ import annotations

import json
import sqlite3
import uuid

from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.testing import WorkflowEnvironment

from activities.catalog import SqliteCatalog
from client.settings import Settings
from devtools.mirror import Faults, Mirror, load_products
from jobs.sync_products import SyncProductsInput, SyncReport
from worker import build_worker
from workflows.sync_products import SyncProductsWorkflow

FAST_RETRY = 0.05  # seconds before the first retry; keeps backoff tests quick


async def sync(env: WorkflowEnvironment, settings: Settings, **kwargs: object) -> SyncReport:
    inp = SyncProductsInput.model_validate({"retry_initial_interval_s": FAST_RETRY, **kwargs})
    async with build_worker(env.client, settings):
        return await env.client.execute_workflow(
            SyncProductsWorkflow.run,
            inp,
            id=f"sync-test-{uuid.uuid4().hex[:8]}",
            task_queue=settings.temporal_task_queue,
        )


def rows(catalog: SqliteCatalog, sql: str, *params: object) -> list[sqlite3.Row]:
    conn = sqlite3.connect(catalog.db.path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def test_full_sync_fills_catalog_with_correct_fields(
    dev_env: WorkflowEnvironment, settings: Settings, catalog: SqliteCatalog
) -> None:
    report = await sync(dev_env, settings)
    assert report.status == "completed"
    assert (report.fetched, report.created, report.updated, report.unchanged) == (194, 194, 0, 0)
    assert report.batches == 13 and report.batches_done == 13  # 194 / 15, rounded up
    assert report.failed == 0 and report.failed_batches == []

    source = {p["id"]: p for p in load_products()}
    products = rows(
        catalog,
        "SELECT p.*, v.sku, v.price_amount, v.currency_code, v.inventory_quantity "
        "FROM products p JOIN product_variants v ON v.product_id = p.id",
    )
    assert len(products) == 194
    assert len({r["handle"] for r in products}) == 194  # handles unique despite duplicate titles
    by_id = {r["external_id"]: r for r in products}
    mascara = by_id["dummyjson:1"]
    assert mascara["title"] == "Essence Mascara Lash Princess"
    assert mascara["handle"] == "essence-mascara-lash-princess"
    assert mascara["price_amount"] == 999 and mascara["currency_code"] == "usd"
    assert mascara["inventory_quantity"] == source[1]["stock"]
    assert mascara["sku"] == source[1]["sku"]
    assert json.loads(mascara["tags"]) == ["beauty", "mascara"]
    assert mascara["status"] == "published"
    assert json.loads(mascara["metadata"])["brand"] == "Essence"
    # every price is exact integer cents of the source's decimal price
    for pid, p in source.items():
        assert by_id[f"dummyjson:{pid}"]["price_amount"] == round(p["price"] * 100)
    no_brand = [pid for pid, p in source.items() if "brand" not in p]
    assert len(no_brand) == 92
    for pid in no_brand:
        assert json.loads(by_id[f"dummyjson:{pid}"]["metadata"])["brand"] is None
    rolex = [r["handle"] for r in products if r["title"] == "Rolex Cellini Moonphase"]
    assert len(rolex) == 2 and len(set(rolex)) == 2


async def test_second_sync_writes_nothing_and_a_source_change_updates_one(
    dev_env: WorkflowEnvironment, settings: Settings, catalog: SqliteCatalog, mirror: Mirror
) -> None:
    await sync(dev_env, settings)
    stamps = {r["external_id"]: r["updated_at"] for r in rows(catalog, "SELECT * FROM products")}

    again = await sync(dev_env, settings)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 194)
    assert {r["external_id"]: r["updated_at"] for r in rows(catalog, "SELECT * FROM products")} == (
        stamps
    )

    mirror.update_product(7, {"price": 12.34, "title": "Renamed Product"})
    changed = await sync(dev_env, settings)
    assert (changed.created, changed.updated, changed.unchanged) == (0, 1, 193)
    (row,) = rows(
        catalog,
        "SELECT p.title, p.handle, v.price_amount FROM products p "
        "JOIN product_variants v ON v.product_id = p.id WHERE external_id = 'dummyjson:7'",
    )
    assert row["title"] == "Renamed Product" and row["price_amount"] == 1234
    assert row["handle"] != "renamed-product"  # the handle people link to is kept
    assert len(rows(catalog, "SELECT id FROM products")) == 194


async def test_a_product_gone_from_the_source_is_removed_after_a_complete_sync_only(
    dev_env: WorkflowEnvironment, settings: Settings, catalog: SqliteCatalog, mirror: Mirror
) -> None:
    def held() -> set[str]:
        return {r["external_id"] for r in rows(catalog, "SELECT external_id FROM products")}

    await sync(dev_env, settings)
    assert mirror.remove_product(7) and mirror.remove_product(150)

    mirror.set_faults(Faults(fail_skips=[45]))  # a partial sync cannot tell gone from unfetched
    partial = await sync(dev_env, settings, max_retries=0)
    assert partial.status == "partial" and partial.removed == 0 and len(held()) == 194

    mirror.set_faults(Faults())
    kept = await sync(dev_env, settings, delete_missing=False)  # SYNC_PRODUCTS_DELETE_MISSING
    assert kept.status == "completed" and kept.removed == 0 and len(held()) == 194

    plan = await sync(dev_env, settings, dry_run=True)
    assert plan.removed == 2 and len(held()) == 194  # a dry run says so, removes nothing

    done = await sync(dev_env, settings)
    assert done.status == "completed" and done.removed == 2 and done.unchanged == 192
    assert held() == {f"dummyjson:{i}" for i in range(1, 195)} - {"dummyjson:7", "dummyjson:150"}
    assert not rows(
        catalog, "SELECT id FROM product_variants WHERE product_id NOT IN (SELECT id FROM products)"
    )  # their variants went with them
    assert (await sync(dev_env, settings)).removed == 0


async def test_dry_run_plans_and_writes_nothing(
    dev_env: WorkflowEnvironment, settings: Settings, catalog: SqliteCatalog, mirror: Mirror
) -> None:
    plan = await sync(dev_env, settings, dry_run=True)
    assert plan.dry_run and plan.status == "completed"
    assert (plan.created, plan.updated, plan.unchanged) == (194, 0, 0)
    assert len(plan.examples["create"]) == 5
    assert rows(catalog, "SELECT count(*) AS n FROM products")[0]["n"] == 0

    await sync(dev_env, settings)
    mirror.update_product(3, {"stock": 0})
    before = [tuple(r) for r in rows(catalog, "SELECT * FROM product_variants ORDER BY id")]
    plan = await sync(dev_env, settings, dry_run=True)
    assert (plan.created, plan.updated, plan.unchanged) == (0, 1, 193)
    assert plan.examples["update"] == [load_products()[2]["title"]]
    assert [tuple(r) for r in rows(catalog, "SELECT * FROM product_variants ORDER BY id")] == before


async def test_500s_and_429s_are_retried_to_success_honouring_retry_after(
    dev_env: WorkflowEnvironment, settings: Settings, catalog: SqliteCatalog, mirror: Mirror
) -> None:
    mirror.set_faults(Faults(fail_next=2, throttle_next=1, retry_after_s=1))
    report = await sync(dev_env, settings, max_retries=3, concurrency=1)
    assert report.status == "completed" and report.created == 194
    assert mirror.stats["500"] == 2 and mirror.stats["429"] == 1
    # the 429 was the third answer; the retry of that request came after Retry-After (1s),
    # not after the 0.05s backoff
    statuses = [status for _, _, status in mirror.log]
    assert statuses[:3] == [500, 500, 429]
    t429, path429, _ = mirror.log[2]
    t_next, path_next, status_next = mirror.log[3]
    assert path_next == path429 and status_next == 200
    assert t_next - t429 >= 0.9


async def test_a_page_that_always_fails_gives_partial_and_the_rest_synced(
    dev_env: WorkflowEnvironment, settings: Settings, catalog: SqliteCatalog, mirror: Mirror
) -> None:
    mirror.set_faults(Faults(fail_skips=[45]))
    report = await sync(dev_env, settings, max_retries=2)
    assert report.status == "partial"
    assert [(b.offset, b.limit) for b in report.failed_batches] == [(45, 15)]
    assert "HTTP 500" in report.failed_batches[0].error
    assert report.created == 179 and report.failed == 15
    # three attempts (first + 2 retries) at that page, no more
    assert sum(1 for _, path, _ in mirror.log if "skip=45" in path) == 3
    synced = {r["external_id"] for r in rows(catalog, "SELECT external_id FROM products")}
    assert len(synced) == 179
    assert not synced & {f"dummyjson:{i}" for i in range(46, 61)}


async def test_invalid_json_is_not_retried(
    dev_env: WorkflowEnvironment, settings: Settings, mirror: Mirror
) -> None:
    mirror.set_faults(Faults(malformed_next=1))
    report = await sync(dev_env, settings, max_retries=2, concurrency=1)
    # the first /products answer (the count) is broken JSON: one attempt, then failed
    assert report.status == "failed"
    assert "invalid JSON" in report.failed_batches[0].error
    assert len(mirror.log) == 1


async def test_a_4xx_is_not_retried(
    dev_env: WorkflowEnvironment, settings: Settings, mirror: Mirror
) -> None:
    wrong = settings.model_copy(update={"dummyjson_base_url": f"{mirror.url}/nope"})
    report = await sync(dev_env, wrong, max_retries=2)
    assert report.status == "failed" and "HTTP 404" in report.failed_batches[0].error
    assert len(mirror.log) == 1


async def test_one_invalid_product_is_recorded_and_its_batch_mates_synced(
    dev_env: WorkflowEnvironment, settings: Settings, catalog: SqliteCatalog, mirror: Mirror
) -> None:
    mirror.update_product(5, {"price": -1})
    report = await sync(dev_env, settings)
    assert report.status == "partial"
    assert report.created == 193 and report.failed == 1 and report.failed_batches == []
    assert [p.external_id for p in report.failed_products] == ["dummyjson:5"]
    assert "price" in report.failed_products[0].error
    ids = {r["external_id"] for r in rows(catalog, "SELECT external_id FROM products")}
    assert "dummyjson:5" not in ids and {f"dummyjson:{i}" for i in (1, 2, 3, 4, 6)} <= ids


async def test_progress_query_reports_live_counts(
    dev_env: WorkflowEnvironment, settings: Settings, mirror: Mirror
) -> None:
    mirror.set_faults(Faults(latency_ms=100))
    async with build_worker(dev_env.client, settings):
        handle = await dev_env.client.start_workflow(
            SyncProductsWorkflow.run,
            SyncProductsInput(concurrency=1),
            id=f"sync-progress-{uuid.uuid4().hex[:8]}",
            task_queue=settings.temporal_task_queue,
        )
        seen = []
        while True:
            progress = await handle.query(SyncProductsWorkflow.progress)
            seen.append(progress.batches_done)
            if progress.status != "running":
                break
            if 0 < progress.batches_done < progress.batches:
                break
        assert any(0 < n < 13 for n in seen), seen
        final = await handle.result()
        # the Web UI's "current details" for the run
        meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert final.batches_done == 13 and final.status == "completed"
    assert meta.current_details.startswith("**sync-products: completed**")
    assert "created 194" in meta.current_details
