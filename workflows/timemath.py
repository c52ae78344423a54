"""Fire-time maths for cron and interval schedules.

Pure and deterministic: the schedule workflow, the settings check and `starter.py preview` all call
this one module, so what preview prints is what the loop does. Nothing here reads the clock.

Daylight-saving time follows Debian (Vixie) cron, see DESIGN.md:
- a 5-field expression whose minute and hour fields are both explicit matches local wall-clock
  time, once per matching wall-clock time: a repeated (fall-back) time fires at its first
  occurrence, times inside a spring-forward gap fire once at the first instant after the gap;
- any other expression matches real instants: a repeated wall-clock time fires twice, a
  non-existent one does not fire.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

# No zone changes its offset twice within this; the search looks this far around a match.
_MAX_SHIFT = timedelta(hours=4)
_EPSILON = timedelta(microseconds=1)
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression: `fields` is what croniter gets, `wall_clock` the DST mode."""

    text: str
    fields: str
    has_seconds: bool
    wall_clock: bool


def parse_cron(text: str) -> Cron:
    """Parse 5 fields, a macro, or 6 fields with a leading seconds field; ValueError says why."""
    stripped = " ".join(text.split())
    fields = MACROS.get(stripped.lower(), stripped)
    parts = fields.split(" ")
    if len(parts) not in (5, 6):
        raise ValueError(
            f"{text!r} has {len(parts)} fields; use 5 (min hour day month weekday), "
            "6 with a leading seconds field, or a macro like @daily"
        )
    has_seconds = len(parts) == 6
    if not croniter.is_valid(fields, second_at_beginning=has_seconds):
        raise ValueError(f"{text!r} is not a valid cron expression")
    minute, hour = (parts[1], parts[2]) if has_seconds else (parts[0], parts[1])
    wall_clock = not has_seconds and not minute.startswith("*") and not hour.startswith("*")
    return Cron(text=text, fields=fields, has_seconds=has_seconds, wall_clock=wall_clock)


def parse_timezone(name: str) -> ZoneInfo:
    """An IANA zone by name; ValueError for anything else."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name like Europe/Berlin"
        ) from None


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """`30s`, `5m`, `2h`, `1d`, `1h30m`, or a number of milliseconds (Ductape's `every`)."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise ValueError("a duration must be like 30s, 5m, 2h, 1d or a number of milliseconds")
    elif isinstance(value, int | float):
        result = timedelta(milliseconds=value)
    else:
        text = value.strip().lower().replace(" ", "")
        if text.isdigit():
            result = timedelta(milliseconds=int(text))
        elif text and _DURATION.sub("", text) == "":
            result = sum(
                (int(n) * _UNITS[unit] for n, unit in _DURATION.findall(text)), timedelta()
            )
        else:
            raise ValueError(
                f"{value!r} is not a duration; use 30s, 5m, 2h, 1d (or combined, 1h30m) "
                "or a number of milliseconds"
            )
    if result <= timedelta(0):
        raise ValueError(f"{value!r} must be longer than zero")
    return result


def _local(instant: datetime, tz: ZoneInfo) -> datetime:
    """Naive wall-clock time of an instant in a zone."""
    return instant.astimezone(tz).replace(tzinfo=None)


def _gap_end(naive: datetime, tz: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """First instant in (lo, hi] whose wall-clock time is past `naive` (the end of a DST gap)."""
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if _local(mid, tz) >= naive:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0)


def _instants(naive: datetime, tz: ZoneInfo, wall_clock: bool) -> list[datetime]:
    """The UTC instants at which a matching wall-clock time fires, per the DST rule."""
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    earlier, later = sorted((first, second))
    if _local(earlier, tz) == naive:  # exists twice: the fall-back hour
        return [earlier] if wall_clock else [earlier, later]
    # does not exist: inside the spring-forward gap
    return [_gap_end(naive, tz, earlier, later)] if wall_clock else []


def _offsets_near(instant: datetime, tz: ZoneInfo) -> tuple[timedelta, timedelta, timedelta]:
    """The zone's UTC offset at an instant, and the lowest and highest within a few hours."""
    at, *around = (
        (instant + d).astimezone(tz).utcoffset() or timedelta(0)
        for d in (timedelta(0), -_MAX_SHIFT, _MAX_SHIFT)
    )
    return at, min(at, *around), max(at, *around)


def next_cron_fire(cron: Cron, tz: ZoneInfo, after: datetime) -> datetime | None:
    """Earliest fire time strictly after `after` (aware), or None if the cron can never fire.

    Matches are found on naive wall-clock time; near a DST change a wall-clock time can map to
    an instant out of order, so the search starts early and stops late by the offset change.
    """
    after = after.astimezone(UTC)
    at, low, _ = _offsets_near(after, tz)
    start = _local(after, tz) - (at - low) - timedelta(seconds=1)
    it = croniter(cron.fields, start, second_at_beginning=cron.has_seconds)
    best: datetime | None = None
    horizon: datetime | None = None
    while True:
        try:
            naive = it.get_next(datetime)
        except CroniterBadDateError:
            return best
        if horizon is not None and naive > horizon:
            return best
        for instant in _instants(naive, tz, cron.wall_clock):
            if instant > after and (best is None or instant < best):
                best = instant
                b_at, _, b_high = _offsets_near(best, tz)
                horizon = _local(best, tz) + (b_high - b_at)


def next_interval_fire(every: timedelta, anchor: datetime, after: datetime) -> datetime:
    """Earliest `anchor + k*every` (k >= 0) strictly after `after`: elapsed time, no DST."""
    if after < anchor:
        return anchor
    k = (after - anchor) // every + 1
    return anchor + k * every


@dataclass(frozen=True)
class Timing:
    """Everything that decides when a schedule fires; built from a validated spec."""

    cron: Cron | None
    every: timedelta | None
    tz: ZoneInfo
    anchor: datetime  # start_at, or when the schedule was first started
    end_at: datetime | None = None

    @classmethod
    def build(
        cls,
        *,
        cron: str | None,
        every: str | int | float | timedelta | None,
        timezone: str,
        anchor: datetime,
        end_at: datetime | None = None,
    ) -> Timing:
        if cron is None and every is None:
            raise ValueError("a schedule needs cron or every")
        return cls(
            cron=parse_cron(cron) if cron is not None else None,
            every=parse_duration(every) if every is not None else None,
            tz=parse_timezone(timezone),
            anchor=anchor.astimezone(UTC),
            end_at=end_at.astimezone(UTC) if end_at is not None else None,
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


def fire_id(instant: datetime) -> str:
    """A fire time as it appears in child ids: 20261123T100000Z."""
    return instant.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
