"""The workflows' own boundary: a loop's input, state, view and summary, the messages it takes,
and the fan-out workflows' inputs and results.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from scheduling.spec import ScheduleSpec, SessionRef
from scheduling.state import ScheduleState


class JobOptions(BaseModel):
    """How each job of a schedule runs (Ductape's retries / cache / session)."""

    retries: int | None = None
    cache: str | None = None
    cache_ttl_s: float = 3600.0
    session: SessionRef | None = None


class ScheduleInput(BaseModel):
    spec: ScheduleSpec
    state: ScheduleState = ScheduleState()
    # Continue-as-new on waking once a run has this many fires or history events (or when
    # Temporal suggests it), so no run's history grows past a few hundred events.
    fires_per_run: int = Field(100, ge=1)
    max_history_events: int = Field(400, ge=50)


class ScheduleView(BaseModel):
    """The `describe` query: enough for `starter.py list` and the Web UI."""

    spec: ScheduleSpec
    state: ScheduleState
    next_fires: list[datetime]
    remaining: int | None = None  # fires left under the limit
    run_fires: int = 0


class ScheduleSummary(BaseModel):
    """A finished loop's result."""

    name: str
    reason: str
    fires: int
    failed: int
    missed: int
    skipped: dict[str, int] = {}
    triggered: int = 0
    last_fire: datetime | None = None


# A job started with this memo is watched by its loop through its completion event, and signals
# `job_finished` only when asked (REPORT_SIGNAL: its loop continued as new and no longer sees
# that event), when it is a retry or a later run of itself, or when it has no such memo.
REPORT_MEMO = "report"
REPORT_ON_REQUEST = "on-request"
REPORT_SIGNAL = "report_end"


class JobFinished(BaseModel):
    """Signal from a child job to its schedule (by workflow id, so it reaches the current run)."""

    child_id: str
    outcome: Literal["completed", "failed", "canceled"]
    error: str | None = None


class PauseRequest(BaseModel):
    note: str | None = Field(None, max_length=500)


class FanOutInput(BaseModel):
    """A large fire: the fan-out workflow starts its jobs page by page, a few pages at a time."""

    name: str
    job: str
    fire_time: datetime
    ref: str
    pages: int
    count: int
    options: JobOptions = JobOptions()
    window: int = Field(4, ge=1, le=100)  # pages (batch workflows) in flight at once


class FanOutPage(BaseModel):
    name: str
    job: str
    fire_time: datetime
    ref: str
    page: int
    options: JobOptions = JobOptions()


class FanOutResult(BaseModel):
    jobs: int = 0
    completed: int = 0
    failed: int = 0
    already_started: int = 0
    errors: dict[str, str] = {}  # a few failed job ids (or "page N") -> why
    failed_pages: int = 0  # page workflows that failed: their jobs' fate is in `errors`

    @property
    def error(self) -> str | None:
        """One line when any job or page failed, so the schedule lists the fire's failure."""
        if not self.failed and not self.failed_pages:
            return None
        parts = [f"{self.failed} of {self.jobs} jobs failed"]
        if self.failed_pages:
            parts.append(f"{self.failed_pages} pages failed")
        first = next(iter(self.errors.items()), None)
        return ", ".join(parts) + (f"; first: {first[0]}: {first[1]}" if first else "")
