"""Ductape-style jobs: `schedule({product_tag, env, event, input, retries, start_at, ...})`.

A job with `repeat` becomes a schedule loop (ScheduleWorkflow) like any in schedules.toml: cron or
every (milliseconds), limit, endDate and tz map to the schedule's fields, one run per fire. Its
identity (product_tag, env, app, event) names the loop, `<readable slug>-<hash of the identity>`,
and rides on the loop as a memo: submitting the job again updates that loop, and a loop of another
identity at the same id is refused, never updated. A job without `repeat` is one workflow started
with Temporal's start delay, so it runs once at `start_at` (0 = now) and survives restarts while
it waits.

Times: `start_at` and `repeat.endDate` are Unix timestamps in seconds, or in milliseconds when
above 10^11 (Date.now() style), or ISO 8601 strings. `retries`: the job is run again up to that
many times if it fails. `cache`: identical requests (same tag, event, input and session) share one
workflow id; while its last run is running or completed less than `cache_ttl` ago (default 1h,
at most the namespace's retention) a repeat request returns that run's result and starts
nothing. `session`: `{tag, token}` from `starter.py session create`, filling `$Session{tag}{key}`
placeholders in `input` right before the job runs.
"""

from __future__ import annotations

import hashlib
import json
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
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.run_checks import completed_within
from client.errors import ConfigError
from client.loops import schedule_id, start_schedules
from client.schedules_file import input_problem
from jobs.registry import JOBS, cache_id
from scheduling.spec import KEY_PATTERN, ScheduleSpec, SessionRef
from scheduling.types import CronText, Duration, TimeZone, parse_duration
from workflows.children import SESSION_MEMO

MS_THRESHOLD = 10**11  # a Unix time above this is in milliseconds (10^11 s is the year 5138)
NAME_MAX = 63  # a schedule's name (scheduling.spec.NAME_PATTERN)
HASH_CHARS = 10  # 40 bits of sha256: a chance collision needs ~10^6 identities; forged: refused
IDENTITY_MEMO = "ductape_identity"  # the loop's exact identity, compared before any update
# A one-off's start_at becomes the workflow's start delay, a timer the server caps at 100 years
# (a later start_at would quietly run 100 years from now): refused past this, with a margin.
MAX_START_DELAY = timedelta(days=365 * 100 - 1)


def identity_hash(identity: dict[str, str | None]) -> str:
    """Hex digest of the identity as JSON, so no two fields can run into each other."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))  # ASCII: always encodes
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")


def _fit(parts: list[str], width: int) -> str:
    """Join the non-empty slugs with `-` in `width` characters, shortening the longest part
    first: a 100-character tag gives way before env and event do."""
    parts = [p for p in parts if p]
    lengths = [len(p) for p in parts]
    while lengths and sum(lengths) + len(lengths) - 1 > width:
        lengths[lengths.index(max(lengths))] -= 1
    cut = [p[:n].strip("-._") for p, n in zip(parts, lengths, strict=True)]
    return "-".join(p for p in cut if p)


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
    def identity(self) -> dict[str, str | None]:
        """What makes two submissions the same job: submitting it again updates its loop."""
        return {
            "product_tag": self.product_tag,
            "env": self.env,
            "app": self.app,
            "event": self.event,
        }

    @property
    def name(self) -> str:
        """The loop's name: a readable slug of the identity, then a hash of the exact identity.

        The slug alone is lossy (`Shop!` and `shop?` read alike; a long tag would push env and
        event past 63 characters), so the hash keeps one identity to one loop and back."""
        readable = _fit([_slug(p) for p in self._parts()], NAME_MAX - HASH_CHARS - 1)
        digest = identity_hash(self.identity)
        return f"{readable}-{digest}" if readable else digest

    @property
    def legacy_name(self) -> str:
        """The name before the hash (a loop an older version started), to find such loops."""
        slug = re.sub(r"[^a-z0-9._-]+", "-", "-".join(self._parts()).lower())
        return slug.strip("-._")[:63]

    def _parts(self) -> list[str]:
        return [p for p in (self.product_tag, self.env, self.app, self.event) if p]

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
    desc = await _describe(client, wf_id)
    if desc is None:
        return None
    if desc.status == WorkflowExecutionStatus.RUNNING:
        return "running"
    return "fresh" if completed_within(desc, ttl) else None


async def _describe(client: Client, wf_id: str) -> WorkflowExecutionDescription | None:
    try:
        return await client.get_workflow_handle(wf_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


def _shown(identity: Any) -> str:
    return json.dumps(identity, ensure_ascii=True)[:300]  # one line, whatever the fields hold


async def _check_identity(client: Client, job: DuctapeJob) -> None:
    """Refuse to update a loop that is not this job's, and to start a second loop beside one
    an older version started under the hash-less name (it would go on firing the same job)."""
    wf_id = schedule_id(job.name)
    desc = await _describe(client, wf_id)
    if desc is not None:
        theirs = await desc.memo_value(IDENTITY_MEMO, None)
        if theirs != job.identity:
            whose = "no Ductape job" if theirs is None else f"the job {_shown(theirs)}"
            raise ConfigError(
                f"{job.name}: the loop {wf_id} belongs to {whose}, not {_shown(job.identity)}; "
                "nothing changed: give this job another product_tag, env, app or event"
            )
        return
    legacy = await _describe(client, schedule_id(job.legacy_name))
    if (
        legacy is not None
        and legacy.status == WorkflowExecutionStatus.RUNNING
        and await legacy.memo_value(IDENTITY_MEMO, None) is None
    ):
        raise ConfigError(
            f"{job.legacy_name}: a loop started before Ductape names carried a hash "
            f"({legacy.id}) may run this job (or another whose name reads the same) and would "
            f"go on firing beside the new loop {wf_id}; delete it with `starter.py delete "
            f"{job.legacy_name}` (its counts are not carried over), then submit again"
        )


def one_off_problem(job: DuctapeJob, now: datetime) -> str | None:
    """`field: why` for a one-off the server would not run as asked: its input over the one
    bound on a job's input, or a start_at further away than a start delay can be."""
    problem = input_problem(job.input)
    if problem:
        return f"input: {problem}"
    if job.starts is not None and job.starts - now > MAX_START_DELAY:
        return (
            f"start_at: {job.starts:%Y-%m-%d} is more than 100 years away; Temporal delays a "
            "start by at most 100 years (it would run then, not at start_at): use an earlier time"
        )
    return None


async def schedule(client: Client, job: DuctapeJob | dict[str, Any], task_queue: str) -> Submitted:
    """Ductape's `schedule()`: a repeating job starts (or updates) a loop; a one-off starts once."""
    job = job if isinstance(job, DuctapeJob) else DuctapeJob.model_validate(job)
    if job.repeat is not None:
        await _check_identity(client, job)
        (line,) = await start_schedules(
            client, [job.to_spec()], task_queue, memo={IDENTITY_MEMO: job.identity}
        )
        return Submitted(kind="schedule", workflow_id=schedule_id(job.name), message=line)
    problem = one_off_problem(job, datetime.now(UTC))
    if problem:
        raise ConfigError(f"{job.name}: {problem}")
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
            static_summary=f"Ductape job {job.name}: `{job.event}`",
        )
    except WorkflowAlreadyStartedError:  # an identical request started a moment ago
        return _reused(job, wf_id, "running")
    when = f"at {starts:%Y-%m-%d %H:%M:%SZ}" if delay else "now"
    return Submitted(
        kind="one-off", workflow_id=wf_id, message=f"{job.name}: runs {when} as {wf_id}"
    )
