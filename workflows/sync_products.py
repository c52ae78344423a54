"""SyncProductsWorkflow: page through DummyJSON in batches and upsert each into the catalog.

Batches run a few at a time (`concurrency`); each is one activity with the job's retry policy. A
batch that still fails is recorded with its offset and the sync goes on, so one bad page costs
one page, and the report says which. The activities heartbeat: a worker that dies mid-batch
costs the heartbeat timeout (seconds), not the batch timeout (a minute), before another retries.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

with workflow.unsafe.imports_passed_through():
    from activities.models import BatchRequest, BatchResult, RemoveRequest, SourceRequest
    from activities.sync_products import SyncProductsActivities
    from jobs.sync_products import FailedBatch, SyncProductsInput, SyncReport
    from workflows.retries import retry_follows

BATCH_TIMEOUT = timedelta(seconds=60)
# The activities heartbeat every half second (four chances per timeout); what a killed worker's
# batch waits before its retry elsewhere (bench/recovery.py). A changed timeout does not affect
# replay: the determinism check compares an activity's type and id, not its options.
HEARTBEAT_TIMEOUT = timedelta(seconds=2)
MAX_LISTED = 20  # failed products listed in the report; the count is always exact


def _cause(exc: ActivityError) -> str:
    return str(exc.cause) if exc.cause is not None else str(exc)


def _permanent(exc: ActivityError) -> bool:
    """A failure another attempt cannot fix (a 401, a 404): the job is not re-run for it."""
    return exc.retry_state == RetryState.NON_RETRYABLE_FAILURE


@workflow.defn
class SyncProductsWorkflow:
    def __init__(self) -> None:
        self._report = SyncReport()
        self._permanent = False  # a failure that a re-run of the job cannot fix

    @workflow.query(description="the report so far: batches done, counts, failures")
    def progress(self) -> SyncReport:
        return self._report

    @workflow.run
    async def run(self, inp: SyncProductsInput) -> SyncReport:
        started = workflow.now()
        report = self._report = SyncReport(dry_run=inp.dry_run, connection_id=inp.connection_id)
        retry = RetryPolicy(
            initial_interval=timedelta(seconds=inp.retry_initial_interval_s),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=60),
            maximum_attempts=inp.max_retries + 1,
        )
        self._publish()
        try:
            total = await workflow.execute_activity_method(
                SyncProductsActivities.count_source_products,
                # (before connections this activity took no argument; old histories replay fine:
                # an activity's input is not part of the determinism check)
                SourceRequest(connection_id=inp.connection_id),
                start_to_close_timeout=BATCH_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=retry,
                summary="count the source's products",
            )
        except ActivityError as exc:
            report.failed_batches.append(FailedBatch(offset=0, limit=0, error=_cause(exc)))
            self._permanent |= _permanent(exc)
            return self._finish(started)

        report.total = total
        offsets = range(0, total, inp.batch_size)
        report.batches = len(offsets)
        slots = asyncio.Semaphore(inp.concurrency)

        async def sync_batch(offset: int) -> None:
            limit = min(inp.batch_size, total - offset)
            async with slots:
                try:
                    result = await workflow.execute_activity_method(
                        SyncProductsActivities.sync_products_batch,
                        BatchRequest(
                            offset=offset,
                            limit=limit,
                            dry_run=inp.dry_run,
                            tenant=inp.catalog_tenant,
                            connection_id=inp.connection_id,
                        ),
                        start_to_close_timeout=BATCH_TIMEOUT,
                        heartbeat_timeout=HEARTBEAT_TIMEOUT,
                        retry_policy=retry,
                        summary=f"products {offset + 1}-{offset + limit}"
                        + (" (dry run)" if inp.dry_run else ""),
                    )
                except ActivityError as exc:
                    workflow.logger.warning("batch at offset %d failed: %s", offset, _cause(exc))
                    report.failed_batches.append(
                        FailedBatch(offset=offset, limit=limit, error=_cause(exc))
                    )
                    report.failed += limit
                    self._permanent |= _permanent(exc)
                else:
                    self._add(result)
            report.batches_done += 1
            self._publish()

        await asyncio.gather(*(sync_batch(offset) for offset in offsets))
        report.failed_batches.sort(key=lambda b: b.offset)
        complete = not report.failed_batches and not report.failed
        if complete and inp.delete_missing and workflow.patched("remove-missing-products"):
            await self._remove_missing(inp, retry)
        return self._finish(started)

    async def _remove_missing(self, inp: SyncProductsInput, retry: RetryPolicy) -> None:
        """Only after a complete sync: a partial one cannot tell gone from not fetched."""
        try:
            self._report.removed = await workflow.execute_activity_method(
                SyncProductsActivities.remove_missing_products,
                RemoveRequest(
                    dry_run=inp.dry_run, tenant=inp.catalog_tenant, connection_id=inp.connection_id
                ),
                start_to_close_timeout=BATCH_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=retry,
                summary="remove products the source no longer lists"
                + (" (dry run: count only)" if inp.dry_run else ""),
            )
        except ActivityError as exc:
            error = f"removing products gone from the source: {_cause(exc)}"
            self._report.failed_batches.append(
                FailedBatch(offset=self._report.total, limit=0, error=error)
            )
            self._permanent |= _permanent(exc)

    def _add(self, result: BatchResult) -> None:
        r = self._report
        r.fetched += result.fetched
        r.created += result.created
        r.updated += result.updated
        r.unchanged += result.unchanged
        r.failed += len(result.invalid)
        r.failed_products.extend(result.invalid[: MAX_LISTED - len(r.failed_products)])
        for kind, titles in result.examples.items():
            listed = r.examples.setdefault(kind, [])
            listed.extend(titles[: 5 - len(listed)])

    def _finish(self, started: datetime) -> SyncReport:
        r = self._report
        synced = r.created + r.updated + r.unchanged
        if not r.failed_batches and not r.failed:
            r.status = "completed"
        elif synced:
            r.status = "partial"
        else:
            r.status = "failed"
        r.duration_s = round((workflow.now() - started).total_seconds(), 3)
        self._publish()
        # Its outcome line (status, reason, counts) is logged by workflows/outcomes.py.
        if (
            r.status == "failed"
            and not self._permanent
            and retry_follows()
            and workflow.patched("rerun-failed-sync")
        ):
            # `retries` on the schedule or Ductape job: Temporal runs the whole sync again; the
            # last attempt returns its report, failed or not.
            raise ApplicationError(f"sync failed, will run again: {r.error}", type="SyncFailed")
        return r

    def _publish(self) -> None:
        """Live progress in the Web UI's 'current details'."""
        r = self._report
        mode = " (dry run)" if r.dry_run else ""
        workflow.set_current_details(
            f"**sync-products{mode}: {r.status}**\n\n"
            f"batches {r.batches_done}/{r.batches} · fetched {r.fetched}/{r.total} · "
            f"created {r.created} · updated {r.updated} · unchanged {r.unchanged} · "
            f"removed {r.removed} · failed {r.failed}"
        )
