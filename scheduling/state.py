"""A loop's durable state and the bookkeeping on it: counts, the cursor, the last fires.

Plain data that continue-as-new carries from run to run, and pure transitions on it (what a fire,
a skip or a job's end does to the counts), so the workflow only decides when to call them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, cast

from pydantic import BaseModel

RECENT = 10  # fires, and failed jobs, kept for `describe`

SkipReason = Literal["overlap", "paused", "missed", "empty expansion"]
FireOutcome = Literal[
    "started",
    "buffered",
    "failed",
    "skipped: overlap",
    "skipped: paused",
    "skipped: missed",
    "skipped: empty expansion",
]


class FireRecord(BaseModel):
    scheduled: datetime
    actual: datetime
    outcome: FireOutcome
    children: list[str] = []
    error: str | None = None
    jobs: int | None = None  # how many jobs the fire started, when a fan-out workflow runs them


class ScheduleState(BaseModel):
    """What a loop carries across continue-as-new: the durable counts and cursor."""

    created_at: datetime | None = None
    cursor: datetime | None = None  # scheduled time of the last fire handled
    fires: int = 0  # scheduled fires that ran (count toward limit)
    triggered: int = 0  # manual triggers that ran (never count toward limit)
    failed: int = 0
    missed: int = 0
    skipped: dict[str, int] = {}  # by reason: overlap, paused, missed, empty expansion
    paused: bool = False
    note: str | None = None
    pending_triggers: int = 0
    running: dict[str, datetime] = {}  # child id -> its fire time, until the child reports back
    buffered: datetime | None = None  # buffer_one: the fire waiting for the running ones
    buffered_manual: bool = False  # ... and whether it is a manual trigger
    last_finished: datetime | None = None  # when the last child finished (after_completion)
    job_failures: int = 0
    recent: list[FireRecord] = []
    job_errors: dict[str, str] = {}  # child id -> why it failed, the last few

    def record(
        self,
        fire: datetime,
        outcome: FireOutcome,
        now: datetime,
        *,
        children: list[str] | None = None,
        error: str | None = None,
        jobs: int | None = None,
    ) -> None:
        """Add a fire to the last RECENT."""
        self.recent.append(
            FireRecord(
                scheduled=fire,
                actual=now,
                outcome=outcome,
                children=children or [],
                error=error,
                jobs=jobs,
            )
        )
        del self.recent[:-RECENT]

    def skip(
        self,
        fire: datetime,
        reason: SkipReason,
        now: datetime,
        count: int = 1,
        error: str | None = None,
    ) -> None:
        """Count `count` fires skipped for `reason`, recorded as one entry at `fire`."""
        self.skipped[reason] = self.skipped.get(reason, 0) + count
        self.record(
            fire,
            cast(FireOutcome, f"skipped: {reason}"),
            now,
            error=f"{count} fires" if count > 1 else error,
        )

    def count_started(self, manual: bool) -> None:
        """A fire started its jobs: a scheduled one counts toward the limit, a trigger not."""
        if manual:
            self.triggered += 1
        else:
            self.fires += 1

    def job_ended(self, child_id: str, error: str | None, now: datetime) -> bool:
        """A running job reported its end (`error`: why it failed); False if it was not known
        as running (reported twice, or from before a cancel_other)."""
        if self.running.pop(child_id, None) is None:
            return False
        if error is not None:
            self.job_failures += 1
            self.job_errors[child_id] = error
            for old in list(self.job_errors)[:-RECENT]:
                del self.job_errors[old]
        if not self.running:
            self.last_finished = now
        return True
