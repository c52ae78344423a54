"""What a schedule is: plain, checked data (one `[[schedule]]` entry, a Ductape repeat, an Update).

The loop's decisions about it live in scheduling/plan.py; this module only says what a valid spec
looks like, so a bad one is refused in one line before anything starts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from scheduling.types import (
    CronText,
    Duration,
    TimeZone,
    parse_duration,
    parse_timezone,
    shown_duration,
)

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
KEY_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"  # a child's key: the last part of its workflow id
OverlapPolicy = Literal["skip", "buffer_one", "allow_all", "cancel_other"]
# start_at and end_at lie in this range: far enough inside datetime's (years 1 to 9999) that the
# loop's arithmetic (a fire plus `every`, a cron search 50 years ahead) can never overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
MAX_LIMIT = 10**9


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
    cron: CronText | None = None
    every: Duration | None = None
    timezone: TimeZone = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None
    limit: int | None = Field(None, ge=1, le=MAX_LIMIT)
    args: dict[str, Any] = {}
    overlap: OverlapPolicy = "skip"
    catchup_window: Duration = "1d"
    jitter: Duration | None = None
    after_completion: bool = False
    # What a fire runs: a function of jobs/expansions.py by name; None = the job's default
    # ("connections": one child per active connection, or "once": one child with args).
    expansion: str | None = Field(None, pattern=NAME_PATTERN)
    api_code: str = Field("dummyjson", pattern=NAME_PATTERN)  # whose connections fan out
    # Attempts after the first: of the expansion, and of a job whose workflow fails.
    retries: int | None = Field(None, ge=0, le=20)
    # Ductape: identical requests (same cache tag, job and input) run once per cache_ttl.
    cache: str | None = Field(None, pattern=KEY_PATTERN)
    cache_ttl: Duration = "1h"
    session: SessionRef | None = None

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

    @field_validator("start_at", "end_at")
    @classmethod
    def _in_range(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        """A naive time is wall-clock time in the schedule's zone (declared before, so checked
        first); either way it must lie between EARLIEST and LATEST."""
        if value is None:
            return None
        if value.tzinfo is None and "timezone" in info.data:
            value = value.replace(tzinfo=parse_timezone(info.data["timezone"]))
        try:
            in_range = value.tzinfo is None or EARLIEST <= value.astimezone(UTC) < LATEST
        except OverflowError:  # year 1 east of UTC, year 9999 west of it
            in_range = False
        if not in_range:
            raise ValueError(
                f"{value.isoformat()} is out of range; use a time from "
                f"{EARLIEST.year} to {LATEST.year - 1}"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ScheduleSpec:
        if self.cron is None and self.every is None:
            raise ValueError("set cron or every")
        if self.start_at and self.end_at and self.end_at <= self.start_at:
            raise ValueError("end_at must be after start_at")
        if self.after_completion and self.every is None:
            raise ValueError("after_completion needs every")
        return self


def describe_spec(spec: ScheduleSpec) -> str:
    """One line for tables and the Web UI: `cron */2 * * * * [UTC] limit 3`."""
    every = None if spec.every is None else shown_duration(spec.every)
    parts = [f"cron {spec.cron}" if spec.cron else f"every {every}"]
    if spec.cron and every is not None:
        parts.append(f"(fallback every {every})")
    if spec.after_completion:
        parts.append("after completion")
    parts.append(f"[{spec.timezone}]")
    if spec.limit:
        parts.append(f"limit {spec.limit}")
    return " ".join(parts)
