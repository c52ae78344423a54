"""What the CLI shows a person: times in UTC with the schedule's local time beside them, a
schedule's status, and what became of each fire's jobs.

Pure functions of the loop's `describe` view (and, for fires older than its last failures, of
what the server says about their jobs), so `list` and `describe` tell the same story.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal

from scheduling.state import RECENT, FireRecord, ScheduleState
from scheduling.types import parse_timezone, shown_duration

JobResult = Literal["running", "failed", "completed"]


def utc(t: datetime) -> str:
    return f"{t.astimezone(UTC):%Y-%m-%d %H:%M:%SZ}"


def utc_and_local(t: datetime, timezone: str, *, iso: bool = False) -> str:
    """`2026-11-24 07:30:00Z (08:30 CET)`; UTC alone for a schedule in UTC."""
    shown = f"{t.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}" if iso else utc(t)
    if timezone == "UTC":
        return shown
    here = t.astimezone(parse_timezone(timezone))
    same_day = here.date() == t.astimezone(UTC).date()
    return f"{shown}  ({here:%H:%M %Z})" if same_day else f"{shown}  ({here:%Y-%m-%d %H:%M %Z})"


def lateness(late: timedelta) -> str:
    """How long after its time a fire ran: `0.4s`, `2m5s`."""
    seconds = max(late.total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    return shown_duration(timedelta(seconds=round(seconds)))


def status_text(paused: bool, note: str | None) -> str:
    """A running loop's status: `running`, or `paused` with its note."""
    if not paused:
        return "running"
    return f"paused: {note}" if note else "paused"


def job_ids(children: list[str]) -> str:
    """A fire's jobs: their keys when they share `<name>/<fire>/` (that part is the row's), else
    their ids."""
    shared = os.path.commonprefix(children) if len(children) > 1 else ""
    shared = shared[: shared.rfind("/") + 1]
    if not shared:
        return "\n".join(children)
    return ", ".join(c.removeprefix(shared) for c in children)


def unsure_jobs(state: ScheduleState) -> list[str]:
    """Jobs of the last fires whose end the loop's state no longer tells apart: not running,
    not among the last failures, once those are full (older failures have been dropped)."""
    if len(state.job_errors) < RECENT:
        return []
    return [
        child
        for r in state.recent
        if r.outcome == "started"
        for child in r.children
        if child not in state.running and child not in state.job_errors
    ]


def job_results(
    record: FireRecord, state: ScheduleState, checked: Mapping[str, JobResult] | None = None
) -> dict[str, JobResult | None]:
    """Each job of a fire: running (the loop waits for it), failed (it reported a failure),
    completed, or None (not known: ended before the loop's last failures, and not checked)."""
    checked = checked or {}
    full = len(state.job_errors) >= RECENT
    results: dict[str, JobResult | None] = {}
    for child in record.children:
        if child in state.running:
            results[child] = "running"
        elif child in state.job_errors:
            results[child] = "failed"
        elif child in checked:
            results[child] = checked[child]
        else:
            results[child] = None if full else "completed"
    return results


def fire_outcome(
    record: FireRecord, state: ScheduleState, checked: Mapping[str, JobResult] | None = None
) -> str:
    """A fire's outcome now: for one that started jobs, whether they still run, failed or
    completed (`failed 1/3`: one of its three jobs failed); else what the loop recorded
    (skipped, failed, buffered)."""
    if record.outcome != "started":
        return record.outcome + (f" ({record.error})" if record.error else "")
    results = list(job_results(record, state, checked).values())
    n = len(results)
    jobs = f" ({record.jobs} jobs)" if record.jobs and record.jobs > n else ""  # a fan-out
    running, failed = results.count("running"), results.count("failed")
    unknown = results.count(None)
    if n == 0:
        return "started"
    if running:
        head = f"running {running}/{n}" if n > 1 else "running"
        return head + (f", {failed} failed" if failed else "") + jobs
    if failed:
        return (f"failed {failed}/{n}" if n > 1 else "failed") + jobs
    return ("ended" if unknown else "completed") + jobs
