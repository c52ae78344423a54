"""Activities of the sync-products job: count the source, and sync one batch end to end.

One activity per batch fetches, validates, transforms and upserts in one SQLite transaction, and
returns counts only, so product data never enters workflow history. A retried batch cannot
duplicate a row (it plans against the catalog), nor count one twice: the write and what it did
are committed together, and a retry after a committed attempt returns what that one did.

Both activities heartbeat while they run, so a worker that dies mid-batch is noticed within the
heartbeat timeout, not the batch's start-to-close timeout.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.catalog import BatchKey, BatchPlan, CatalogProduct, CatalogTarget, from_dummyjson
from activities.connections import ConnectionStore, ConnectionUnusable
from activities.dummyjson import DummyJSONClient, SourceProduct
from activities.models import BatchRequest, BatchResult, RemoveRequest, SourceRequest
from jobs.sync_products import ProductError

EXAMPLES = 3
HEARTBEAT_EVERY_S = 0.5  # a quarter of the workflow's heartbeat timeout (2 s)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "product"
    return f"{where}: {err['msg']}"


@contextlib.contextmanager
def heartbeating(every_s: float = HEARTBEAT_EVERY_S) -> Iterator[None]:
    """Heartbeat every `every_s` while the block runs, from a helper thread: one step (a slow
    page from the source) can take longer than the heartbeat timeout. The thread ends with the
    block. Outside an activity (a direct call) it does nothing."""
    if not activity.in_activity():
        yield
        return
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            try:
                activity.heartbeat()
            except Exception:  # the worker is going away; its end is not ours to report
                return

    activity.heartbeat()
    # The activity's context, so that activity.heartbeat() in the thread is this activity's.
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(beat,), name="heartbeat", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _batch_key(req: BatchRequest) -> BatchKey | None:
    """Which sync run and batch this is (the same for every attempt at it); None for a dry run,
    which writes nothing, and outside an activity."""
    if req.dry_run or not activity.in_activity():
        return None
    info = activity.info()
    return BatchKey(f"{info.workflow_id}/{info.workflow_run_id}", req.offset)


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
        with heartbeating():
            return self._source(req.connection_id if req else None).count()

    @activity.defn(name="sync_products_batch")
    def sync_products_batch(self, req: BatchRequest) -> BatchResult:
        with heartbeating():
            return self._sync_batch(req)

    @activity.defn(name="remove_missing_products")
    def remove_missing_products(self, req: RemoveRequest) -> int:
        """What the source no longer lists leaves the target; idempotent, so a retry is safe."""
        with heartbeating():
            keep = self._source(req.connection_id).external_ids()
            return self.catalog.remove_missing(keep, tenant=req.tenant, dry_run=req.dry_run)

    def _sync_batch(self, req: BatchRequest) -> BatchResult:
        key = _batch_key(req)
        if key is not None and activity.info().attempt > 1:
            done = self.catalog.batch_outcome(key)
            if done is not None:  # an attempt before this one wrote the batch, then was lost
                activity.logger.info("batch at offset %d was written already", req.offset)
                return BatchResult.model_validate_json(done)
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

        def result(plan: BatchPlan) -> BatchResult:
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
                invalid=[
                    *invalid,
                    *(ProductError(external_id=ext, error=why) for ext, why in plan.rejected),
                ],
                examples=examples,
            )

        if key is None:
            return result(self.catalog.sync_batch(products, tenant=req.tenant, dry_run=req.dry_run))
        # A cancellation (the worker's shutdown grace ran out) waits for the commit, not the
        # other way round.
        with activity.shield_thread_cancel_exception():
            stored = self.catalog.sync_batch_once(
                key, products, tenant=req.tenant, outcome=lambda p: result(p).model_dump_json()
            )
        return BatchResult.model_validate_json(stored)
