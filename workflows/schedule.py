"""ScheduleWorkflow: one schedule as a durable loop, id `schedule/<name>`.

Each turn: ask the schedule core (scheduling/plan.py) for the next fire, sleep on a durable timer
until then, ask the expansion activity what to run, start one child per input with
ParentClosePolicy.ABANDON (children outlive continue-as-new and a failing job never stops the
loop), count the fire, and continue-as-new when history grows, carrying the state. This module
only orchestrates; every time decision (next fire, catch-up, jitter room, end and limit) is the
core's, from `workflow.now()` and `workflow.random()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
    TerminatedError,
    WorkflowAlreadyStartedError,
)
from temporalio.exceptions import (
    TimeoutError as TimedOut,  # not the builtin the timer raises
)

with workflow.unsafe.imports_passed_through():
    from activities.expansion import ExpansionActivities, expand_schedule
    from activities.models import ExpandedInput, Expansion, ExpansionRequest
    from activities.run_checks import still_running
    from jobs.registry import JOBS
    from scheduling import plan
    from scheduling.plan import Timing, fire_id
    from scheduling.spec import ScheduleSpec, describe_spec
    from scheduling.state import RECENT, ScheduleState, SkipReason
    from workflows.children import (
        CHEAP_FIRES,
        job_options,
        job_summary,
        schedule_attributes,
        start_jobs,
        watched_memo,
    )
    from workflows.fanout import FanOutWorkflow
    from workflows.metrics import LoopMetrics
    from workflows.models import (
        REPORT_SIGNAL,
        FanOutInput,
        JobFinished,
        PauseRequest,
        ScheduleInput,
        ScheduleSummary,
        ScheduleView,
    )

# The loop's own activities are short; a worker that dies in one is noticed after this long.
LOOP_ACTIVITY_TIMEOUT = timedelta(seconds=10)
EXPANSION_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1))
EXPANSION_TIMEOUT = timedelta(seconds=60)  # user functions may do I/O; a dead worker costs this


def _read_outcome(handle: asyncio.Future[Any]) -> None:
    """Before CHEAP_FIRES the loop learns of a child's end by signal only; the handle's own
    outcome is read so asyncio does not report it as never retrieved."""
    handle.add_done_callback(lambda done: done.cancelled() or done.exception())


@dataclass
class _Timer:
    """The durable timer for one fire, and the jittered time it wakes at."""

    fire: datetime
    wake_at: datetime
    task: asyncio.Task[None]


def _fired(timer: _Timer) -> bool:
    return timer.task.done() and not timer.task.cancelled()


def _job_error(done: asyncio.Future[Any]) -> str | None:
    """Why a job failed, from its completion event (None: it completed). A job may also end
    normally yet report failure in its result (SyncReport, FanOutResult)."""
    exc = done.exception()
    if exc is None:
        error = getattr(done.result(), "error", None)
        return error if isinstance(error, str) else None
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, CancelledError):
        return "canceled"
    if isinstance(cause, TerminatedError):
        return "terminated"
    if isinstance(cause, TimedOut):
        return "timed out"
    return (str(cause) or type(cause).__name__).splitlines()[0][:500]


@workflow.defn
class ScheduleWorkflow:
    @workflow.init
    def __init__(self, inp: ScheduleInput) -> None:
        """Set up from the input before any handler runs: an update or query can arrive in the
        same first workflow task as the start, before `run` begins."""
        self._inp = inp
        if inp.state.created_at is None:
            inp.state.created_at = workflow.now()
        self._timing = Timing.of(inp.spec, inp.state.created_at)
        self._run_fires = 0
        self._wake = False  # set by a control: re-plan now instead of at the timer
        self._deleted = False
        # Jobs this run started: their completion events reach this run, so no check is needed.
        self._tracked: dict[str, asyncio.Future[Any]] = {}
        self._timer: _Timer | None = None  # the pending fire timer, kept across wakes
        self._redraw = False  # a new spec: the next fire's wake time is drawn again (jitter)
        self._metrics = LoopMetrics(inp.spec.name)

    @property
    def _state(self) -> ScheduleState:
        return self._inp.state

    # --- queries and controls ----------------------------------------------------------------

    @workflow.query(description="spec, counts, the last fires and the next fire times")
    def describe(self) -> ScheduleView:
        spec, state = self._inp.spec, self._state
        remaining = plan.remaining(spec.limit, state.fires)
        return ScheduleView(
            spec=spec,
            state=state,
            next_fires=list(self._timing.upcoming(state.cursor, RECENT))[:remaining],
            remaining=remaining,
            run_fires=self._run_fires,
        )

    @workflow.update(description="skip fires until resumed (they are counted as paused)")
    def pause(self, req: PauseRequest) -> str:
        self._state.paused, self._state.note = True, req.note
        self._wake = True
        return f"paused{': ' + req.note if req.note else ''}"

    @pause.validator
    def _check_pause(self, req: PauseRequest) -> None:
        self._check_alive()
        if self._state.paused:
            raise ApplicationError("already paused; resume it first", non_retryable=True)

    @workflow.update(description="fire again from the next fire time")
    def resume(self, req: PauseRequest) -> str:
        self._state.paused, self._state.note = False, req.note
        self._wake = True
        return "resumed"

    @resume.validator
    def _check_resume(self, req: PauseRequest) -> None:
        self._check_alive()
        if not self._state.paused:
            raise ApplicationError("not paused", non_retryable=True)

    @workflow.update(description="fire once now, outside the schedule")
    def trigger(self) -> str:
        """Fire now, once, outside the schedule: does not count toward the limit."""
        self._state.pending_triggers += 1
        self._wake = True
        return "triggered"

    @trigger.validator
    def _check_trigger(self) -> None:
        self._check_alive()

    @workflow.update(description="a new spec, from the next fire; counts kept")
    def update(self, spec: ScheduleSpec) -> str:
        """A new spec takes effect from the next fire; counts and cursor are kept."""
        assert self._state.created_at is not None
        self._inp.spec = spec
        self._timing = Timing.of(spec, self._state.created_at)
        self._wake = self._redraw = True
        return f"updated: {describe_spec(spec)}"

    @update.validator
    def _check_update(self, spec: ScheduleSpec) -> None:
        self._check_alive()
        assert self._state.created_at is not None
        if spec.name != self._inp.spec.name:
            raise ApplicationError(
                f"name: cannot change {self._inp.spec.name!r} to {spec.name!r}",
                non_retryable=True,
            )
        job = JOBS.get(spec.job)
        if job is None:
            raise ApplicationError(f"job: unknown job {spec.job!r}", non_retryable=True)
        try:
            job.validate_args(spec.args)
        except ValueError as exc:
            raise ApplicationError(f"args: {exc}".splitlines()[0], non_retryable=True) from None
        if not Timing.of(spec, self._state.created_at).can_fire():
            raise ApplicationError(f"cron: {spec.cron!r} can never fire", non_retryable=True)

    @workflow.update(description="end the loop; running jobs finish")
    def delete(self) -> str:
        """End the loop cleanly; jobs already running are left to finish."""
        self._deleted = self._wake = True
        return "deleted"

    @delete.validator
    def _check_delete(self) -> None:
        self._check_alive()

    def _check_alive(self) -> None:
        if self._deleted:
            raise ApplicationError("the schedule is being deleted", non_retryable=True)

    @workflow.signal(description="a job of an earlier run of this loop reports its end")
    def job_finished(self, done: JobFinished) -> None:
        """A child reports its end (see workflows/notify.py)."""
        self._job_ended(
            done.child_id, None if done.outcome == "completed" else done.error or done.outcome
        )

    def _job_ended(self, child_id: str, error: str | None) -> None:
        if self._state.job_ended(child_id, error, workflow.now()):
            self._wake = True
            if error is not None:
                self._metrics.failed()

    def _track(self, child_id: str, handle: asyncio.Future[Any]) -> None:
        """Learn of a job's end from its completion event (CHEAP_FIRES), or by signal before."""
        if not workflow.patched(CHEAP_FIRES):
            _read_outcome(handle)
            return
        self._tracked[child_id] = handle

        def ended(done: asyncio.Future[Any]) -> None:
            self._tracked.pop(child_id, None)
            if not done.cancelled():
                self._job_ended(child_id, _job_error(done))

        handle.add_done_callback(ended)

    async def _hand_over(self) -> None:
        """Before continue-as-new: the next run will not see this run's jobs' completion events,
        so each job still running is asked to signal its end instead. A job that can no longer
        be asked has ended, and its completion event reaches this run: wait for it."""

        async def ask(child_id: str, handle: asyncio.Future[Any]) -> None:
            try:
                await workflow.get_external_workflow_handle(child_id).signal(REPORT_SIGNAL)
            except Exception:
                await asyncio.wait([handle])

        await asyncio.gather(*(ask(i, h) for i, h in list(self._tracked.items())))

    # --- the loop ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: ScheduleInput) -> ScheduleSummary:
        state = inp.state
        while True:
            spec = inp.spec
            if self._deleted:
                return self._finish("deleted")
            if state.buffered is not None and not state.running and not state.paused:
                buffered, manual = state.buffered, state.buffered_manual
                state.buffered, state.buffered_manual = None, False
                await self._fire(buffered, manual=manual, overlap_checked=True)  # its turn now
                continue
            if plan.remaining(spec.limit, state.fires) == 0:
                return self._finish("limit reached")
            nxt = self._timing.plan_next(
                state.cursor, jobs_running=bool(state.running), last_finished=state.last_finished
            )
            if nxt.at is None and not nxt.waiting and not state.pending_triggers:
                return self._finish("end_at passed" if spec.end_at else "no more fire times")
            self._publish(nxt.at)
            if not await self._sleep_until(nxt.at):
                continue  # woken by a control, a trigger or a finished job: re-plan
            if self._should_continue_as_new():
                # On waking, before firing: the new run fires this same due time at once, and
                # the previous fire's children have had the whole interval to finish.
                if workflow.patched(CHEAP_FIRES):
                    await self._hand_over()
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(inp)
            assert nxt.at is not None
            due = self._catch_up(nxt.at)
            if due is None:
                continue
            if state.paused:
                state.cursor = due
                self._skip(due, "paused")
                continue
            await self._fire(due)
            self._run_fires += 1

    async def _sleep_until(self, fire: datetime | None) -> bool:
        """Wait for the fire time (plus jitter); False when something woke the loop first.

        A pending trigger fires here, at once, without moving the schedule's cursor.
        """
        cheap = workflow.patched(CHEAP_FIRES)
        self._wake = False
        now = workflow.now()
        wake_at = None
        timer, redraw, self._redraw = self._timer, self._redraw, False
        if cheap and fire is not None and timer is not None and timer.fire == fire and not redraw:
            wake_at = timer.wake_at  # the same fire as before the wake: the same timer
        elif fire is not None:  # a draw only when there is jitter, as recorded histories have it
            wake_at = self._timing.wake_time(
                fire, workflow.random().random() if self._timing.jitter else 0.0
            )
        timeout = plan.time_left(wake_at, now)
        # A trigger taken while the loop was busy (or with its start) fires now, not at the timer.
        waiting = not self._state.pending_triggers or not workflow.patched("trigger-never-waits")
        if waiting and (timeout is None or timeout):
            if cheap:
                await self._wait(fire, wake_at)
            else:  # a fresh timer on every wait, as histories before CHEAP_FIRES have it
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._wake,
                        timeout=timeout,
                        timeout_summary=None if fire is None else self._timer_summary(fire),
                    )
        state = self._state
        if state.pending_triggers and not self._deleted:
            state.pending_triggers -= 1
            await self._fire(workflow.now(), manual=True)
            return False
        # A kept timer that has fired is due even if this task's time reads a moment earlier
        # (as a query replaying the fired timer can see it): waiting on it again would return at
        # once, forever, within one activation. No completed history took that path.
        fired = timer is not None and self._timer is timer and _fired(timer)
        return not self._wake and wake_at is not None and (workflow.now() >= wake_at or fired)

    async def _wait(self, fire: datetime | None, wake_at: datetime | None) -> None:
        """Until a wake or the fire's timer. The timer is started once per fire: a wake that
        leaves the fire time as it was (a job's end, a pause) waits on the same timer."""
        timer = self._timer
        if fire is None or wake_at is None:
            if timer is not None:
                timer.task.cancel()
            self._timer = timer = None
        elif timer is None or (timer.fire, timer.wake_at) != (fire, wake_at):
            if timer is not None:
                timer.task.cancel()
            sleep = workflow.sleep(wake_at - workflow.now(), summary=self._timer_summary(fire))
            self._timer = timer = _Timer(fire, wake_at, asyncio.create_task(sleep))
        await workflow.wait_condition(
            lambda: self._wake or (timer is not None and timer.task.done())
        )

    def _timer_summary(self, fire: datetime) -> str:
        return f"waits for the {fire_id(fire)} fire of {self._inp.spec.name}"

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (
            self._run_fires >= self._inp.fires_per_run
            or info.get_current_history_length() >= self._inp.max_history_events
            or info.is_continue_as_new_suggested()
        )

    def _catch_up(self, due: datetime) -> datetime | None:
        """The fire to run now, per the core's catch-up rule; missed ones are recorded."""
        spec, state = self._inp.spec, self._state
        caught = self._timing.catch_up(due, workflow.now())
        if caught.capped and not workflow.patched("catch-up-cap-runs-nothing"):
            caught = self._timing.catch_up(due, workflow.now(), run_at_cap=True)
        if caught.cursor is not None:
            state.cursor = caught.cursor
        if caught.missed and caught.last_missed is not None:
            state.missed += caught.missed
            workflow.logger.warning("%s: %d missed fire(s) not run", spec.name, caught.missed)
            self._skip(caught.last_missed, "missed", count=caught.missed)
        return caught.run

    async def _fire(
        self, fire: datetime, *, manual: bool = False, overlap_checked: bool = False
    ) -> None:
        """Apply the overlap policy, expand, then start one child per input.

        A manual trigger leaves the cursor alone and does not count toward the limit.
        """
        spec, state = self._inp.spec, self._state
        if not manual:
            state.cursor = fire
        if not overlap_checked and not await self._overlap_allows(fire, manual):
            return
        base = f"{spec.name}/{fire_id(fire)}{'-manual' if manual else ''}"
        if not workflow.patched("keyed-expansion"):
            await self._fire_unkeyed(fire, base, manual)
            return
        try:
            expansion = await self._expand(fire, base)
        except FailureError as exc:  # a local activity's failure comes unwrapped
            state.failed += 1
            self._metrics.failed()
            cause = exc.cause if isinstance(exc, ActivityError) else exc
            state.record(fire, "failed", workflow.now(), error=str(cause or exc))
            return
        if not expansion.count:
            self._skip(fire, "empty expansion", error=expansion.note)
            return
        if expansion.ref is not None:
            ids = [base]
            state.running[base] = fire
            await self._start_fan_out(base, fire, expansion)
        else:
            started = await start_jobs(
                [(base if x.key is None else f"{base}/{x.key}", x.args) for x in expansion.inputs],
                job=spec.job,
                schedule=spec.name,
                fire=fire,
                options=job_options(spec),
                close_policy=workflow.ParentClosePolicy.ABANDON,
                memo=watched_memo(),
            )
            ids = started.ids
            for child_id, handle in started.handles.items():
                state.running[child_id] = fire
                self._track(child_id, handle)
        state.count_started(manual)
        self._metrics.fired(None if manual else workflow.now() - fire)
        state.record(fire, "started", workflow.now(), children=ids, jobs=expansion.count)

    async def _expand(self, fire: datetime, base: str) -> Expansion:
        """What the fire runs. Known without I/O for the `once` default (CHEAP_FIRES); else the
        expansion activity, local (CHEAP_FIRES: no task round trip of its own) or not."""
        spec = self._inp.spec
        job = JOBS[spec.job]
        function = spec.expansion or ("connections" if job.per_connection else "once")
        cheap = workflow.patched(CHEAP_FIRES)
        if cheap and function == "once":
            return Expansion(
                function=function, count=1, inputs=[ExpandedInput(key=None, args=spec.args)]
            )
        req = ExpansionRequest(
            name=spec.name,
            job=spec.job,
            fire_time=fire,
            args=spec.args,
            expansion=spec.expansion,
            api_code=spec.api_code,
            fire_key=base,
        )
        options: dict[str, Any] = {
            "start_to_close_timeout": EXPANSION_TIMEOUT,
            "retry_policy": RetryPolicy(
                maximum_attempts=(2 if spec.retries is None else spec.retries) + 1,
                initial_interval=timedelta(seconds=1),
            ),
            "summary": f"expand {function} for the {fire_id(fire)} fire",
        }
        if cheap:
            return await workflow.execute_local_activity_method(
                ExpansionActivities.expand_fire, req, **options
            )
        return await workflow.execute_activity_method(
            ExpansionActivities.expand_fire, req, **options
        )

    async def _start_fan_out(self, base: str, fire: datetime, expansion: Expansion) -> None:
        assert expansion.ref is not None
        spec = self._inp.spec
        try:
            handle = await workflow.start_child_workflow(
                FanOutWorkflow.run,
                FanOutInput(
                    name=spec.name,
                    job=spec.job,
                    fire_time=fire,
                    ref=expansion.ref,
                    pages=expansion.pages,
                    count=expansion.count,
                    options=job_options(spec),
                ),
                id=base,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=schedule_attributes(spec.name, fire),
                memo=watched_memo(),
                static_summary=job_summary(spec.job, spec.name, fire, expansion.count),
            )
        except WorkflowAlreadyStartedError:
            self._state.running.pop(base, None)
            return
        self._track(base, handle)

    async def _fire_unkeyed(self, fire: datetime, base: str, manual: bool) -> None:
        """Loops started before keyed expansion replay this path: `expand_schedule`, ids
        `<base>` or `<base>/<i>`."""
        spec, state = self._inp.spec, self._state
        try:
            inputs = await workflow.execute_activity(
                expand_schedule,
                ExpansionRequest(name=spec.name, job=spec.job, fire_time=fire, args=spec.args),
                start_to_close_timeout=LOOP_ACTIVITY_TIMEOUT,
                retry_policy=EXPANSION_RETRY,
            )
        except ActivityError as exc:
            state.failed += 1
            state.record(fire, "failed", workflow.now(), error=str(exc.cause or exc))
            return
        if not inputs:
            self._skip(fire, "empty expansion")
            return
        ids = [base] if len(inputs) == 1 else [f"{base}/{i}" for i in range(len(inputs))]
        for child_id in ids:
            state.running[child_id] = fire
        await asyncio.gather(
            *(self._start_child(i, args, fire) for i, args in zip(ids, inputs, strict=True))
        )
        state.count_started(manual)
        state.record(fire, "started", workflow.now(), children=ids)

    async def _overlap_allows(self, fire: datetime, manual: bool) -> bool:
        """Whether this fire may start now, given the previous fire's jobs still running."""
        state, policy = self._state, self._inp.spec.overlap
        if not state.running or policy == "allow_all":
            return True
        # A job this run started reports by its completion event, which cannot be lost. One from
        # an earlier run reports by signal, and a describe of each is the check on that signal
        # (a job terminated, or timed out, sends none).
        cheap = workflow.patched(CHEAP_FIRES)
        unsure = [i for i in state.running if not cheap or i not in self._tracked]
        if unsure:
            alive = set(
                await workflow.execute_activity(
                    still_running,
                    unsure,
                    start_to_close_timeout=LOOP_ACTIVITY_TIMEOUT,
                    retry_policy=EXPANSION_RETRY,
                    summary=f"which of {len(unsure)} jobs of an earlier run still run",
                )
            )
            state.running = {
                k: v for k, v in state.running.items() if k in alive or k in self._tracked
            }
        if not state.running:
            return True
        if policy == "cancel_other":
            for child_id in list(state.running):
                await workflow.get_external_workflow_handle(child_id).cancel()
            return True
        if policy == "buffer_one" and state.buffered is None:
            state.buffered = fire
            # A buffered trigger stays a trigger: `-manual` id, no limit count, cursor kept.
            state.buffered_manual = manual and workflow.patched("buffered-trigger-stays-manual")
            state.record(fire, "buffered", workflow.now())
            return False
        self._skip(fire, "overlap")
        return False

    def _skip(
        self, fire: datetime, reason: SkipReason, count: int = 1, error: str | None = None
    ) -> None:
        self._state.skip(fire, reason, workflow.now(), count=count, error=error)
        self._metrics.skipped(reason, count)

    async def _start_child(self, child_id: str, args: dict[str, Any], fire: datetime) -> None:
        try:
            handle = await workflow.start_child_workflow(
                JOBS[self._inp.spec.job].workflow.run,
                args,
                id=child_id,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=schedule_attributes(self._inp.spec.name, fire),
            )
        except WorkflowAlreadyStartedError:
            workflow.logger.info("%s already started: not run twice", child_id)
            self._state.running.pop(child_id, None)
            return
        _read_outcome(handle)

    def _finish(self, reason: str) -> ScheduleSummary:
        state = self._state
        workflow.set_current_details(f"**{self._inp.spec.name}**: finished, {reason}")
        return ScheduleSummary(
            name=self._inp.spec.name,
            reason=reason,
            fires=state.fires,
            failed=state.failed,
            missed=state.missed,
            skipped=state.skipped,
            triggered=state.triggered,
            last_fire=state.cursor,
        )

    def _publish(self, fire: datetime | None) -> None:
        """The loop's 'current details' in the Web UI: spec, next fire, counts."""
        spec, state = self._inp.spec, self._state
        limit = f" of {spec.limit}" if spec.limit else ""
        paused = f" · **paused**{': ' + state.note if state.note else ''}" if state.paused else ""
        workflow.set_current_details(
            f"**{spec.name}** runs `{spec.job}` on {describe_spec(spec)}{paused}\n\n"
            f"next fire: {fire.isoformat() if fire else 'none'} · fires: {state.fires}{limit} · "
            f"triggered: {state.triggered} · failed jobs: {state.job_failures} · "
            f"failed fires: {state.failed} · missed: {state.missed}"
        )
