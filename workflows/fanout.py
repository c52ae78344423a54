"""Large fan-outs: one fire with more inputs than fit in one workflow's history.

Temporal allows about 2,000 pending children per workflow and 50k events per history, so a fire
with thousands of inputs does not start them from the loop. The loop starts one FanOutWorkflow
(id `<schedule>/<fire time>`); it starts one FanOutPageWorkflow per stored page of inputs
(`.../page-0007`), a few pages at a time; each page workflow loads its page (an activity: the
inputs never pass through the loop or the fan-out workflow), starts one job per input with id
`<schedule>/<fire time>/<key>`, and waits for them. The loop sees one child per fire, so its
overlap policies still mean "the previous fire's jobs are still running".
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.expansion import ExpansionActivities
    from scheduling.plan import fire_id
    from workflows.children import start_jobs
    from workflows.models import FanOutInput, FanOutPage, FanOutResult

LOAD_TIMEOUT = timedelta(seconds=30)
LOAD_RETRY = RetryPolicy(maximum_attempts=5)  # then the page fails, counted in the fire's result
MAX_ERRORS = 10


def _error(exc: BaseException) -> str:
    cause = exc.__cause__ or getattr(exc, "cause", None)
    return str(cause or exc).splitlines()[0]


def _merge(into: FanOutResult, part: FanOutResult) -> None:
    into.jobs += part.jobs
    into.completed += part.completed
    into.failed += part.failed
    into.already_started += part.already_started
    into.failed_pages += part.failed_pages
    for k, v in part.errors.items():
        if len(into.errors) < MAX_ERRORS:
            into.errors[k] = v


@workflow.defn
class FanOutWorkflow:
    """Runs a large fire's pages through a window of page workflows, and totals the outcome."""

    def __init__(self) -> None:
        self._result = FanOutResult()

    @workflow.query(description="pages and jobs done so far")
    def progress(self) -> FanOutResult:
        return self._result

    @workflow.run
    async def run(self, inp: FanOutInput) -> FanOutResult:
        base = inp.ref  # the fire's base id `<schedule>/<fire time>`, this workflow's own id
        slots = asyncio.Semaphore(inp.window)
        done = 0

        async def page(n: int) -> None:
            nonlocal done
            async with slots:
                try:
                    part = await workflow.execute_child_workflow(
                        FanOutPageWorkflow.run,
                        FanOutPage(
                            name=inp.name,
                            job=inp.job,
                            fire_time=inp.fire_time,
                            ref=inp.ref,
                            page=n,
                            options=inp.options,
                        ),
                        id=f"{base}/page-{n:04d}",
                        parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                        static_summary=f"page {n + 1} of {inp.pages}: {inp.job} jobs of {inp.name}",
                    )
                except ChildWorkflowError as exc:
                    part = FanOutResult(failed_pages=1, errors={f"page {n}": _error(exc)})
            _merge(self._result, part)
            done += 1
            self._publish(inp, done)

        self._publish(inp, 0)
        await asyncio.gather(*(page(n) for n in range(inp.pages)))
        return self._result

    def _publish(self, inp: FanOutInput, pages_done: int) -> None:
        r = self._result
        workflow.set_current_details(
            f"**{inp.name}** fire {fire_id(inp.fire_time)}: {inp.count} `{inp.job}` jobs "
            f"in {inp.pages} pages\n\npages done {pages_done}/{inp.pages} · jobs started "
            f"{r.jobs} · completed {r.completed} · failed {r.failed}"
            + (f" · pages failed {r.failed_pages}" if r.failed_pages else "")
        )


@workflow.defn
class FanOutPageWorkflow:
    """One page: start its jobs at once (at most a page, far under the pending-child limit),
    then wait for all of them."""

    @workflow.run
    async def run(self, inp: FanOutPage) -> FanOutResult:
        inputs = await workflow.execute_activity_method(
            ExpansionActivities.load_expansion_page,
            inp,
            start_to_close_timeout=LOAD_TIMEOUT,
            retry_policy=LOAD_RETRY,
            summary=f"load page {inp.page} of the fire's inputs",
        )
        base = inp.ref
        started = await start_jobs(
            [(f"{base}/{x.key}", x.args) for x in inputs],
            job=inp.job,
            schedule=inp.name,
            fire=inp.fire_time,
            options=inp.options,
            close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
        )
        result = FanOutResult(
            jobs=len(started.handles),
            already_started=len(started.duplicate) + len(started.cached),
        )

        async def wait(child_id: str, handle: workflow.ChildWorkflowHandle) -> None:  # type: ignore[type-arg]
            try:
                await handle
                result.completed += 1
            except ChildWorkflowError as exc:
                result.failed += 1
                if len(result.errors) < MAX_ERRORS:
                    result.errors[child_id] = _error(exc)

        await asyncio.gather(*(wait(i, h) for i, h in started.handles.items()))
        return result
