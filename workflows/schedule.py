"""ScheduleWorkflow: one schedule as a durable loop, id `schedule/<name>`.

Each turn: compute the next fire time (workflows/timemath.py), sleep on a durable timer until
then, ask the expansion activity what to run, start one child per input with
ParentClosePolicy.ABANDON (children outlive continue-as-new and a failing job never stops the
loop), count the fire, and continue-as-new when history grows, carrying the state.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from models import (
        ExpansionRequest,
        FireOutcome,
        FireRecord,
        ScheduleInput,
        ScheduleState,
        ScheduleSummary,
        ScheduleView,
    )
    from workflows.jobs import JOBS
    from workflows.timemath import Timing, fire_id

RECENT = 10
MISSED_COUNT_CAP = 10_000  # beyond this many missed fires in one wake, stop counting one by one
EXPANSION_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1))


@workflow.defn
class ScheduleWorkflow:
    def __init__(self) -> None:
        self._inp: ScheduleInput | None = None
        self._timing: Timing | None = None
        self._run_fires = 0

    @property
    def _state(self) -> ScheduleState:
        assert self._inp is not None
        return self._inp.state

    @workflow.query
    def describe(self) -> ScheduleView:
        assert self._inp is not None and self._timing is not None
        upcoming = list(self._timing.upcoming(self._state.cursor, RECENT))
        if self._inp.spec.limit is not None:
            upcoming = upcoming[: max(0, self._inp.spec.limit - self._state.fires)]
        return ScheduleView(
            spec=self._inp.spec, state=self._state, next_fires=upcoming, run_fires=self._run_fires
        )

    @workflow.run
    async def run(self, inp: ScheduleInput) -> ScheduleSummary:
        self._inp = inp
        spec, state = inp.spec, inp.state
        if state.created_at is None:
            state.created_at = workflow.now()
        self._timing = timing = spec.timing(state.created_at)
        while True:
            if spec.limit is not None and state.fires >= spec.limit:
                return self._finish("limit reached")
            fire = timing.next_fire(state.cursor)
            if fire is None:
                return self._finish("end_at passed" if spec.end_at else "no more fire times")
            self._publish(fire)
            now = workflow.now()
            if fire > now:
                await workflow.sleep(
                    fire - now, summary=f"waits for the {fire_id(fire)} fire of {spec.name}"
                )
            if self._should_continue_as_new():
                # On waking, before firing: the new run fires this same due time at once, and
                # the previous fire's children have had the whole interval to finish.
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(inp)
            due = self._catch_up(fire)
            if due is not None:
                await self._fire(due)
                self._run_fires += 1

    def _should_continue_as_new(self) -> bool:
        assert self._inp is not None
        return (
            self._run_fires >= self._inp.fires_per_run
            or workflow.info().is_continue_as_new_suggested()
        )

    def _catch_up(self, due: datetime) -> datetime | None:
        """The fire to run now. Woken late (worker or server down): only the latest missed fire
        runs, and only within the catch-up window; the others are counted as missed."""
        assert self._timing is not None and self._inp is not None
        now, state = workflow.now(), self._state
        skipped = 0
        nxt = self._timing.next_fire(due)
        while nxt is not None and nxt <= now and skipped < MISSED_COUNT_CAP:
            skipped += 1
            due, nxt = nxt, self._timing.next_fire(nxt)
        if now - due > timedelta(seconds=self._inp.catchup_window_s):
            skipped += 1
            state.cursor = due
            due_or_none = None
        else:
            due_or_none = due
        if skipped:
            state.missed += skipped
            workflow.logger.warning("%s: %d missed fire(s) not run", self._inp.spec.name, skipped)
            if due_or_none is None:
                self._record(due, "skipped: missed", error=f"{skipped} fire(s) missed")
        return due_or_none

    async def _fire(self, fire: datetime) -> None:
        assert self._inp is not None
        spec, state = self._inp.spec, self._state
        state.cursor = fire
        try:
            inputs: list[dict[str, Any]] = await workflow.execute_activity(
                "expand_schedule",
                ExpansionRequest(name=spec.name, job=spec.job, fire_time=fire, args=spec.args),
                result_type=list[dict[str, Any]],
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=EXPANSION_RETRY,
            )
        except ActivityError as exc:
            state.failed += 1
            self._record(fire, "failed", error=str(exc.cause or exc))
            return
        if not inputs:
            self._record(fire, "skipped: empty expansion")
            return
        base = f"{spec.name}/{fire_id(fire)}"
        ids = [base] if len(inputs) == 1 else [f"{base}/{i}" for i in range(len(inputs))]
        await asyncio.gather(
            *(self._start_child(i, args) for i, args in zip(ids, inputs, strict=True))
        )
        state.fires += 1
        self._record(fire, "started", children=ids)

    async def _start_child(self, child_id: str, args: dict[str, Any]) -> None:
        assert self._inp is not None
        try:
            await workflow.start_child_workflow(
                JOBS[self._inp.spec.job].workflow,
                args,
                id=child_id,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            workflow.logger.info("%s already started: not run twice", child_id)

    def _record(
        self,
        fire: datetime,
        outcome: FireOutcome,
        *,
        children: list[str] | None = None,
        error: str | None = None,
    ) -> None:
        recent = self._state.recent
        recent.append(
            FireRecord(
                scheduled=fire,
                actual=workflow.now(),
                outcome=outcome,
                children=children or [],
                error=error,
            )
        )
        del recent[:-RECENT]

    def _finish(self, reason: str) -> ScheduleSummary:
        assert self._inp is not None
        state = self._state
        workflow.set_current_details(f"**{self._inp.spec.name}**: finished, {reason}")
        return ScheduleSummary(
            name=self._inp.spec.name,
            reason=reason,
            fires=state.fires,
            failed=state.failed,
            missed=state.missed,
            last_fire=state.cursor,
        )

    def _publish(self, fire: datetime) -> None:
        """The loop's 'current details' in the Web UI: spec, next fire, counts."""
        assert self._inp is not None
        spec, state = self._inp.spec, self._state
        limit = f" of {spec.limit}" if spec.limit else ""
        workflow.set_current_details(
            f"**{spec.name}** runs `{spec.job}` on {spec.describe()}\n\n"
            f"next fire: {fire.isoformat()} · fires: {state.fires}{limit} · "
            f"failed: {state.failed} · missed: {state.missed}"
        )
