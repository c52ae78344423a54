"""Every time decision of a schedule loop, as pure functions of (spec, cursor, now).

ScheduleWorkflow only orchestrates (timers, activities, children, state); when to fire, which
missed fire still runs, how much jitter fits and when the schedule is over are decided here, and
`starter.py preview` calls the same code, so what preview prints is what the loop does. Nothing
here reads the clock, draws a random number or does I/O: the loop passes `workflow.now()` and
`workflow.random()` in, so every decision replays the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from scheduling.cron import Cron, next_cron_fire, parse_cron
from scheduling.spec import ScheduleSpec
from scheduling.types import parse_duration, parse_timezone

# One wake counts at most this many missed fires (a 1 s schedule down for a day would otherwise
# walk 86,400 slots in one workflow task); the loop wakes again at once and counts on.
MISSED_COUNT_CAP = 10_000
_EPSILON = timedelta(microseconds=1)
_JITTER_SHARE = 0.999  # a jittered fire stays strictly before the following one


def next_interval_fire(every: timedelta, anchor: datetime, after: datetime) -> datetime:
    """Earliest `anchor + k*every` (k >= 0) strictly after `after`: elapsed time, no DST."""
    if after < anchor:
        return anchor
    k = (after - anchor) // every + 1
    return anchor + k * every


@dataclass(frozen=True)
class NextFire:
    at: datetime | None  # None: no fire is planned (done, or waiting for running jobs)
    waiting: bool = False  # after_completion: the next fire is planned when the jobs end


@dataclass(frozen=True)
class CatchUp:
    """What a loop that woke at `now` for the fire `due` does about the fires it slept through."""

    run: datetime | None  # the fire to run now; None: even the latest is older than the window
    missed: int  # fires not run, counted as missed
    last_missed: datetime | None  # the latest of them, for the fire record
    cursor: datetime | None  # where the cursor moves when nothing runs (else the run moves it)
    capped: bool = False  # more were missed than one wake counts: the next wake goes on


@dataclass(frozen=True)
class Timing:
    """When a schedule fires: cron or interval, zone, anchor and end, and how it bends (after
    completion, jitter, catch-up window)."""

    cron: Cron | None
    every: timedelta | None
    tz: ZoneInfo
    anchor: datetime  # start_at, or when the schedule was first started
    end_at: datetime | None = None
    after_completion: bool = False
    jitter: timedelta | None = None
    catchup_window: timedelta = timedelta(days=1)

    @classmethod
    def build(
        cls,
        *,
        cron: str | None,
        every: str | int | float | timedelta | None,
        timezone: str,
        anchor: datetime,
        end_at: datetime | None = None,
        after_completion: bool = False,
        jitter: str | int | None = None,
        catchup_window: str | int = "1d",
    ) -> Timing:
        if cron is None and every is None:
            raise ValueError("a schedule needs cron or every")
        return cls(
            cron=parse_cron(cron) if cron is not None else None,
            every=parse_duration(every) if every is not None else None,
            tz=parse_timezone(timezone),
            anchor=anchor.astimezone(UTC),
            end_at=end_at.astimezone(UTC) if end_at is not None else None,
            after_completion=after_completion,
            jitter=parse_duration(jitter) if jitter is not None else None,
            catchup_window=parse_duration(catchup_window),
        )

    @classmethod
    def of(cls, spec: ScheduleSpec, created_at: datetime) -> Timing:
        """A spec's timing; `created_at` anchors `every` when there is no start_at."""
        return cls.build(
            cron=spec.cron,
            every=spec.every,
            timezone=spec.timezone,
            anchor=spec.start_at or created_at,
            end_at=spec.end_at,
            after_completion=spec.after_completion,
            jitter=spec.jitter,
            catchup_window=spec.catchup_window,
        )

    def next_fire(self, after: datetime | None) -> datetime | None:
        """The first fire strictly after `after` (None: the first fire of all), None when done.

        Nothing fires before the anchor or after end_at. The cron wins; `every` is the fallback
        only when the cron can never fire.
        """
        floor = self.anchor - _EPSILON
        after = floor if after is None else max(after.astimezone(UTC), floor)
        fire: datetime | None = None
        if self.cron is not None:
            fire = next_cron_fire(self.cron, self.tz, after)
        if fire is None and self.every is not None:
            fire = next_interval_fire(self.every, self.anchor, after)
        if fire is None or (self.end_at is not None and fire > self.end_at):
            return None
        return fire

    def upcoming(self, after: datetime | None, count: int) -> Iterator[datetime]:
        """Up to `count` fire times after `after`, in order."""
        for _ in range(count):
            fire = self.next_fire(after)
            if fire is None:
                return
            yield fire
            after = fire

    def can_fire(self) -> bool:
        """False for a cron like `0 0 30 2 *` with no `every` fallback."""
        if self.every is not None or self.cron is None:
            return True
        return next_cron_fire(self.cron, self.tz, self.anchor) is not None

    def plan_next(
        self, cursor: datetime | None, *, jobs_running: bool, last_finished: datetime | None
    ) -> NextFire:
        """The loop's next scheduled fire after `cursor` (the last fire it handled).

        With `after_completion` the next fire is `every` after the previous fire's jobs
        finished, so none is planned while they run.
        """
        if not self.after_completion or cursor is None:
            return NextFire(self.next_fire(cursor))
        if jobs_running:
            return NextFire(None, waiting=True)
        assert self.every is not None  # the spec checks: after_completion needs every
        fire = max(cursor, last_finished or cursor) + self.every
        return NextFire(None if self.end_at is not None and fire > self.end_at else fire)

    def catch_up(
        self, due: datetime, now: datetime, cap: int = MISSED_COUNT_CAP, run_at_cap: bool = False
    ) -> CatchUp:
        """Woken late (worker or server down): only the latest missed fire runs, and only
        within the catch-up window; the others are counted as missed, never run in a burst.

        Past `cap` missed fires nothing runs: the cursor moves to the last one counted and the
        next wake counts on, so only the wake that reaches `now` may run a fire. (`run_at_cap`:
        what loops did before, running the fire at the cap if it was within the window.)
        """
        missed, last_missed = 0, None
        following = self.next_fire(due)
        while following is not None and following <= now:
            if missed == cap:
                if not run_at_cap:
                    return CatchUp(None, missed, last_missed, cursor=last_missed, capped=True)
                break
            missed, last_missed = missed + 1, due
            due, following = following, self.next_fire(following)
        capped = missed == cap
        if now - due > self.catchup_window:
            return CatchUp(None, missed + 1, last_missed=due, cursor=due, capped=capped)
        return CatchUp(due, missed, last_missed, cursor=None, capped=capped)

    def jitter_room(self, fire: datetime) -> timedelta:
        """How far a fire may be delayed: the jitter, but never up to the following fire."""
        if not self.jitter:
            return timedelta(0)
        following = self.next_fire(fire)
        return self.jitter if following is None else min(self.jitter, following - fire)

    def wake_time(self, fire: datetime, draw: float) -> datetime:
        """When the loop wakes for `fire`: delayed by a uniform share (`draw` in [0, 1), the
        loop's `workflow.random().random()`) of the jitter room."""
        room = self.jitter_room(fire)
        return fire + timedelta(seconds=room.total_seconds() * draw * _JITTER_SHARE)


def time_left(wake_at: datetime | None, now: datetime) -> timedelta | None:
    """How long to sleep until `wake_at` (zero when it has passed; None: no wake time)."""
    return None if wake_at is None else max(wake_at - now, timedelta(0))


def remaining(limit: int | None, fires: int) -> int | None:
    """Fires left under the limit (None: no limit)."""
    return None if limit is None else max(0, limit - fires)


def fire_id(instant: datetime) -> str:
    """A fire time as it appears in child ids: 20261123T100000Z."""
    return instant.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
