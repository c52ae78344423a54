"""Typed models at every boundary: workflow inputs/results, activity calls, the schedules file."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workflows.timemath import Timing, parse_cron, parse_duration, parse_timezone

# --- the sync-products job -------------------------------------------------------------------


class SyncProductsInput(BaseModel):
    """What one sync run does; defaults come from the SYNC_PRODUCTS_* settings at the starter."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(15, ge=1, le=1000)
    max_retries: int = Field(2, ge=0, le=20)
    dry_run: bool = False
    concurrency: int = Field(4, ge=1, le=32, description="batches in flight at once")
    retry_initial_interval_s: float = Field(1.0, gt=0, le=60)
    tenant: str = "default"
    # Set by the per-connection fan-out: the activities load this connection's key and scope at
    # run time, and its products go to its own part of the catalog. Never the key itself.
    connection_id: str | None = None

    @property
    def catalog_tenant(self) -> str:
        return self.connection_id or self.tenant


class SourceRequest(BaseModel):
    """Which source to read: the public one, or one connection's (its key, its scope)."""

    connection_id: str | None = None


class BatchRequest(BaseModel):
    offset: int = Field(ge=0)
    limit: int = Field(ge=1)
    dry_run: bool = False
    tenant: str = "default"
    connection_id: str | None = None


class ProductError(BaseModel):
    """One product that could not be synced; its batch-mates still were."""

    external_id: str
    error: str


class BatchResult(BaseModel):
    """Counts only: product data never travels through workflow history."""

    offset: int
    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    invalid: list[ProductError] = []
    examples: dict[str, list[str]] = {}


class FailedBatch(BaseModel):
    offset: int
    limit: int
    error: str


SyncStatus = Literal["running", "completed", "partial", "failed"]


class SyncReport(BaseModel):
    """The job's result, and its live progress (query `progress`)."""

    status: SyncStatus = "running"
    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    failed_batches: list[FailedBatch] = []
    failed_products: list[ProductError] = []
    dry_run: bool = False
    total: int = 0
    batches: int = 0
    batches_done: int = 0
    duration_s: float = 0.0
    examples: dict[str, list[str]] = {}
    connection_id: str | None = None

    @property
    def error(self) -> str | None:
        """Why a failed sync failed, in one line (the schedule shows it per child)."""
        if self.status != "failed":
            return None
        first = self.failed_batches[0].error if self.failed_batches else "every product failed"
        return f"connection {self.connection_id}: {first}" if self.connection_id else first


# --- schedules -------------------------------------------------------------------------------

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
KEY_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"  # a child's key: the last part of its workflow id
OverlapPolicy = Literal["skip", "buffer_one", "allow_all", "cancel_other"]


class SessionRef(BaseModel):
    """A Ductape session attached to a job: the token fills `$Session{tag}{key}` placeholders."""

    model_config = ConfigDict(extra="forbid")

    tag: str = Field(min_length=1)
    token: str = Field(min_length=1)


class ScheduleSpec(BaseModel):
    """One entry of the schedules file; everything a schedule loop needs to know."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    job: str
    cron: str | None = None
    every: str | int | None = None
    timezone: str = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None
    limit: int | None = Field(None, ge=1)
    args: dict[str, Any] = {}
    overlap: OverlapPolicy = "skip"
    catchup_window: str | int = "1d"
    jitter: str | int | None = None
    after_completion: bool = False
    # What a fire runs: a function of expansions.py by name; None = the job's default
    # ("connections": one child per active connection, or "once": one child with args).
    expansion: str | None = Field(None, pattern=NAME_PATTERN)
    api_code: str = Field("dummyjson", pattern=NAME_PATTERN)  # whose connections fan out
    # Attempts after the first: of the expansion, and of a job whose workflow fails.
    retries: int | None = Field(None, ge=0, le=20)
    # Ductape: identical requests (same cache tag, job and input) run once per cache_ttl.
    cache: str | None = Field(None, pattern=KEY_PATTERN)
    cache_ttl: str | int = "1h"
    session: SessionRef | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            parse_cron(value)
        return value

    @field_validator("every", "catchup_window", "jitter", "cache_ttl")
    @classmethod
    def _duration(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("every")
    @classmethod
    def _every(cls, value: str | int | None) -> str | int | None:
        """Fire ids have one-second resolution, and a sub-second loop is a mistake anyway
        (most often a Ductape `every` in seconds where milliseconds are meant)."""
        if value is not None and parse_duration(value) < timedelta(seconds=1):
            raise ValueError(
                f"{value!r} is under a second; use 1s or more (a number is milliseconds: "
                "60000 is a minute)"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        parse_timezone(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ScheduleSpec:
        if self.cron is None and self.every is None:
            raise ValueError("set cron or every")
        tz = parse_timezone(self.timezone)
        # A naive start_at/end_at is wall-clock time in the schedule's zone.
        if self.start_at is not None and self.start_at.tzinfo is None:
            self.start_at = self.start_at.replace(tzinfo=tz)
        if self.end_at is not None and self.end_at.tzinfo is None:
            self.end_at = self.end_at.replace(tzinfo=tz)
        if self.start_at and self.end_at and self.end_at <= self.start_at:
            raise ValueError("end_at must be after start_at")
        if self.after_completion and self.every is None:
            raise ValueError("after_completion needs every")
        return self

    @property
    def catchup(self) -> timedelta:
        return parse_duration(self.catchup_window)

    @property
    def jitter_max(self) -> timedelta | None:
        return None if self.jitter is None else parse_duration(self.jitter)

    @property
    def job_options(self) -> JobOptions:
        return JobOptions(
            retries=self.retries,
            cache=self.cache,
            cache_ttl_s=parse_duration(self.cache_ttl).total_seconds(),
            session=self.session,
        )

    def timing(self, created_at: datetime) -> Timing:
        """The fire-time calculator; `created_at` anchors `every` when there is no start_at."""
        return Timing.build(
            cron=self.cron,
            every=self.every,
            timezone=self.timezone,
            anchor=self.start_at or created_at,
            end_at=self.end_at,
        )

    def describe(self) -> str:
        """One line for tables: `*/2 * * * * (UTC)`."""
        parts = [f"cron {self.cron}" if self.cron else f"every {self.every}"]
        if self.cron and self.every is not None:
            parts.append(f"(fallback every {self.every})")
        if self.after_completion:
            parts.append("after completion")
        parts.append(f"[{self.timezone}]")
        if self.limit:
            parts.append(f"limit {self.limit}")
        return " ".join(parts)


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
    last_finished: datetime | None = None  # when the last child finished (after_completion)
    job_failures: int = 0
    recent: list[FireRecord] = []
    job_errors: dict[str, str] = {}  # child id -> why it failed, the last few


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


class JobFinished(BaseModel):
    """Signal from a child job to its schedule (by workflow id, so it reaches the current run)."""

    child_id: str
    outcome: Literal["completed", "failed", "canceled"]
    error: str | None = None


class PauseRequest(BaseModel):
    note: str | None = Field(None, max_length=500)


class ExpansionRequest(BaseModel):
    name: str
    job: str
    fire_time: datetime
    args: dict[str, Any] = {}
    # Since keyed expansion (workflow.patched "keyed-expansion"):
    expansion: str | None = None
    api_code: str = "dummyjson"
    fire_key: str = ""  # `<name>/<fire time>`: names stored pages of a large expansion


class ExpandedInput(BaseModel):
    """One child of a fire: its args, and the key that ends its workflow id (None: no suffix)."""

    key: str | None
    args: dict[str, Any]


class Expansion(BaseModel):
    """What one fire runs. Small ones travel inline; large ones are stored in pages in the
    application database (`ref`), so no payload or history carries all inputs at once."""

    function: str
    count: int
    inputs: list[ExpandedInput] = []
    ref: str | None = None
    pages: int = 0
    note: str | None = None  # why an expansion is empty, for the fire's record


class JobOptions(BaseModel):
    """How each job of a schedule runs (Ductape's retries / cache / session)."""

    retries: int | None = None
    cache: str | None = None
    cache_ttl_s: float = 3600.0
    session: SessionRef | None = None


class ResolveSession(BaseModel):
    input: Any
    session: SessionRef | None = None


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
