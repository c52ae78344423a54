"""Ductape-style jobs: `schedule({product_tag, env, event, input, retries, start_at, ...})`.

A job with `repeat` becomes a schedule loop (ScheduleWorkflow) like any in schedules.toml: cron or
every (milliseconds), limit, endDate and tz map to the schedule's fields, one run per fire. A job
without `repeat` is one workflow started with Temporal's start delay, so it runs once at
`start_at` (0 = now) and survives restarts while it waits.

Times: `start_at` and `repeat.endDate` are Unix timestamps in seconds, or in milliseconds when
above 10^11 (Date.now() style), or ISO 8601 strings. `retries`: the job is run again up to that
many times if it fails. `cache`: identical requests (same tag, event, input and session) share one
workflow id; while its last run is running or completed less than `cache_ttl` ago (default 1h,
at most the namespace's retention) a repeat request returns that run's result and starts
nothing. `session`: `{tag, token}` from `starter.py session create`, filling `$Session{tag}{key}`
placeholders in `input` right before the job runs.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.run_checks import completed_within
from client.loops import start_schedules
from jobs.registry import JOBS, cache_id
from scheduling.spec import KEY_PATTERN, ScheduleSpec, SessionRef
from scheduling.types import CronText, Duration, TimeZone, parse_duration
from workflows.children import SESSION_MEMO

MS_THRESHOLD = 10**11  # a Unix time above this is in milliseconds (10^11 s is the year 5138)


def to_datetime(value: int | float | str) -> datetime:
    """Ductape's time: Unix seconds, Unix milliseconds, or ISO 8601."""
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        seconds = value / 1000 if value > MS_THRESHOLD else value
        return datetime.fromtimestamp(seconds, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise ValueError(
            f"{value!r} is not a time; use 0 (now), Unix seconds, Unix milliseconds or ISO 8601"
        ) from None


# ScheduleSpec's fields as a Ductape job names them, for errors found when mapping `repeat`.
_DUCTAPE_NAMES = {
    "cron": "repeat.cron",
    "every": "repeat.every",
    "limit": "repeat.limit",
    "end_at": "repeat.endDate",
    "timezone": "repeat.tz",
    "start_at": "start_at",
    "args": "input",
    "cache": "cache",
    "cache_ttl": "cache_ttl",
}


class Repeat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: CronText | None = None
    every: Duration | None = None  # milliseconds, or a duration like "5m"
    limit: int | None = Field(None, ge=1)
    endDate: int | float | str | None = None  # noqa: N815 (Ductape's name)
    tz: TimeZone = "UTC"

    @field_validator("endDate", mode="before")
    @classmethod
    def _end(cls, value: Any) -> Any:
        if value is not None:
            to_datetime(value)
        return value

    @model_validator(mode="after")
    def _some_timing(self) -> Repeat:
        if self.cron is None and self.every is None:
            raise ValueError("set repeat.cron or repeat.every")
        return self


class DuctapeJob(BaseModel):
    """One `schedule()` call, validated whole before anything starts."""

    model_config = ConfigDict(extra="forbid")

    product_tag: str = Field(min_length=1, max_length=100)
    env: str = Field(min_length=1, max_length=50)
    event: str
    input: dict[str, Any] = Field({}, validate_default=True)
    retries: int = Field(0, ge=0, le=20)
    start_at: int | float | str = 0
    app: str | None = Field(None, min_length=1, max_length=100)
    cache: str | None = Field(None, pattern=KEY_PATTERN)
    cache_ttl: Duration = "1h"  # ours: how long a cached result is reused
    session: SessionRef | None = None
    repeat: Repeat | None = None

    @field_validator("event")
    @classmethod
    def _known_event(cls, value: str) -> str:
        if value not in JOBS:
            raise ValueError(f"unknown job {value!r}; use one of {sorted(JOBS)}")
        return value

    @field_validator("start_at", mode="before")
    @classmethod
    def _start(cls, value: Any) -> Any:
        if value not in (0, "0") or isinstance(value, bool):  # `true` is no time
            to_datetime(value)
        return value

    @field_validator("input")
    @classmethod
    def _valid_input(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        event = info.data.get("event")
        return value if event is None else JOBS[event].validate_args(value)

    @model_validator(mode="after")
    def _repeat_is_a_valid_schedule(self) -> DuctapeJob:
        """A repeating job must make a valid schedule (cron, endDate after start_at, ...):
        checked here, so a bad one is a one-line error naming the job's own field."""
        if self.repeat is not None:
            try:
                self.to_spec()
            except ValidationError as exc:
                err = exc.errors()[0]
                msg = err["msg"].removeprefix("Value error, ")
                if not err["loc"]:  # a cross-field check of the spec (end_at after start_at)
                    raise ValueError(f"repeat: {msg.replace('end_at', 'endDate')}") from None
                loc = [_DUCTAPE_NAMES.get(str(err["loc"][0]), "repeat"), *map(str, err["loc"][1:])]
                raise ValueError(f"{'.'.join(loc)}: {msg}") from None
        return self

    @property
    def name(self) -> str:
        """The schedule's name: the job's identity, so submitting it again updates it."""
        parts = [self.product_tag, self.env, self.app, self.event]
        slug = re.sub(r"[^a-z0-9._-]+", "-", "-".join(p for p in parts if p).lower())
        return slug.strip("-._")[:63]

    @property
    def starts(self) -> datetime | None:
        return None if self.start_at in (0, "0") else to_datetime(self.start_at)

    def to_spec(self) -> ScheduleSpec:
        assert self.repeat is not None
        r = self.repeat
        return ScheduleSpec(
            name=self.name,
            job=self.event,
            cron=r.cron,
            every=r.every,
            timezone=r.tz,
            start_at=self.starts,
            end_at=None if r.endDate is None else to_datetime(r.endDate),
            limit=r.limit,
            args=self.input,
            expansion="once",  # a Ductape job is one run per fire, not one per connection
            retries=self.retries,
            cache=self.cache,
            cache_ttl=self.cache_ttl,
            session=self.session,
        )


class Submitted(BaseModel):
    """What `schedule()` did."""

    kind: str  # "schedule" | "one-off"
    workflow_id: str
    message: str
    started: bool = True
    cached: bool = False  # a fresh or running identical request was reused


def _reused(job: DuctapeJob, wf_id: str, how: str) -> Submitted:
    return Submitted(
        kind="one-off",
        workflow_id=wf_id,
        message=f"{job.name}: identical request {how} as {wf_id}; not run again",
        started=False,
        cached=True,
    )


async def _reusable(client: Client, wf_id: str, ttl: timedelta) -> str | None:
    """'running' or 'fresh' when the cached id's latest run can answer this request."""
    try:
        desc = await client.get_workflow_handle(wf_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if desc.status == WorkflowExecutionStatus.RUNNING:
        return "running"
    return "fresh" if completed_within(desc, ttl) else None


async def schedule(client: Client, job: DuctapeJob | dict[str, Any], task_queue: str) -> Submitted:
    """Ductape's `schedule()`: a repeating job starts (or updates) a loop; a one-off starts once."""
    job = job if isinstance(job, DuctapeJob) else DuctapeJob.model_validate(job)
    if job.repeat is not None:
        (line,) = await start_schedules(client, [job.to_spec()], task_queue)
        return Submitted(kind="schedule", workflow_id=f"schedule/{job.name}", message=line)
    token = job.session.token if job.session else None
    if job.cache:
        wf_id = cache_id(job.cache, job.event, job.input, token)
        reuse = await _reusable(client, wf_id, parse_duration(job.cache_ttl))
        if reuse is not None:
            return _reused(job, wf_id, reuse)
    else:
        wf_id = f"job/{job.name}/{uuid.uuid4().hex[:12]}"
    starts = job.starts
    delay = None if starts is None else max(timedelta(0), starts - datetime.now(UTC))
    try:
        await client.start_workflow(
            JOBS[job.event].workflow.run,
            job.input,
            id=wf_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            retry_policy=RetryPolicy(maximum_attempts=job.retries + 1),
            memo={SESSION_MEMO: job.session} if job.session else None,
            start_delay=delay or None,
        )
    except WorkflowAlreadyStartedError:  # an identical request started a moment ago
        return _reused(job, wf_id, "running")
    when = f"at {starts:%Y-%m-%d %H:%M:%SZ}" if delay else "now"
    return Submitted(
        kind="one-off", workflow_id=wf_id, message=f"{job.name}: runs {when} as {wf_id}"
    )
