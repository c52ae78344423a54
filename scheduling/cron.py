"""Debian cron's language, and nothing else: parse a cron text strictly, then find its fire times.

The grammar (`man 5 crontab` on Debian, and its code in entry.c):

- 5 fields, `minute hour day-of-month month day-of-week`, or our 6-field form with a leading
  seconds field; or one of the macros `@yearly @annually @monthly @weekly @daily @midnight
  @hourly`;
- each field a comma list of items; an item is `*`, a value, or a range `a-b` (inclusive, `a <=
  b`: `3-3` is 3), optionally followed by a step `/n` when it is `*` or a range, n from 1 to the
  number of values the field has (Debian takes larger steps as the first value only);
- values are numbers in the field's bounds (seconds and minutes 0-59, hours 0-23, days 1-31,
  months 1-12, weekdays 0-7 with 0 and 7 both Sunday), or for months and weekdays their first
  three letters in any case (`jan`, `mon`).

Everything else is refused with a ValueError naming the field: the random `R` and hashed `H` of
other crons (non-deterministic, unusable in workflow code), Quartz's `?`, `L`, `W`, `#`, a step
after a single value (`5/10`), reversed ranges (`5-1`, `fri-mon`), `@reboot`.

Day-of-month and day-of-week follow Debian's find_jobs: if either field starts with `*` a day
must match both; if both are restricted a day matching either one fires.

Matching wall-clock times come from cronsim (cuu508/cronsim), given only checked fields in
numbers; `next_cron_fire` maps them to instants by the daylight-saving rule of DESIGN.md (Debian's
fixed-time and wildcard jobs). cronsim's own DST handling is not used: it skips real minutes in
zones that shift by 30 minutes and lands on a midnight that a zone skips. Pure: no clock, no
randomness, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also takes "５" and "٣"
# No zone changes its offset twice within this; the search looks this far around a match.
_MAX_SHIFT = timedelta(hours=4)
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] is the value low + i

    def value(self, text: str) -> int:
        if _DIGITS.fullmatch(text):
            number = int(text)
            if not self.low <= number <= self.high:
                raise self.error(f"{number} is out of range {self.low}-{self.high}")
            return number
        if text.lower() in self.names:
            return self.low + self.names.index(text.lower())
        numbers = f"numbers {self.low}-{self.high}"
        if re.search(r"[RH?LW#]", text):
            raise self.error(
                f"{text!r} is not Debian cron syntax (it has no R, H, ?, L, W or #); use {numbers}"
            )
        words = f" or three-letter names ({self.names[0]}-{self.names[-1]})" if self.names else ""
        raise self.error(f"{text!r} is not a value; use {numbers}{words}")

    def error(self, why: str) -> ValueError:
        return ValueError(f"{self.name}: {why}")

    def check(self, text: str) -> str:
        """The field in numbers (names resolved, `a-a` as `a`), or ValueError naming it."""
        return ",".join(self._item(item, text) for item in text.split(","))

    def _item(self, item: str, text: str) -> str:
        if not item:
            raise self.error(f"{text!r} has an empty list item")
        body, slash, step = item.partition("/")
        if slash:
            span = self.high - self.low + 1
            if not _DIGITS.fullmatch(step):
                raise self.error(f"{item!r}: the step {step!r} is not a whole number")
            if not 1 <= int(step) <= span:
                raise self.error(f"{item!r}: use a step from 1 to {span}")
            if body != "*" and "-" not in body:
                like = f"{body}-{self.high}/{step}"
                raise self.error(f"{item!r}: a step needs * or a range before it, like {like}")
        if body == "*":
            return item
        low, dash, high = body.partition("-")
        first = last = self.value(low)
        if dash and first > (last := self.value(high)):
            sunday = " (sun is 0: end a range on Sunday with 7)" if self.high == 7 else ""
            raise self.error(
                f"{item!r} is a reversed range ({first}-{last}); write the low value first" + sunday
            )
        # `5-5/10` is 5 in Debian; cronsim would read a one-value range with a step as `5/10`
        return str(first) if first == last else f"{first}-{last}{slash}{step}"


FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, MONTHS),
    _Field("day-of-week", 0, 7, WEEKDAYS),
)
SECONDS = _Field("second", 0, 59)


@dataclass(frozen=True)
class Cron:
    """A checked cron text: `fields` is its 5- or 6-field form in numbers, for cronsim."""

    text: str
    fields: str
    has_seconds: bool

    @property
    def wall_clock(self) -> bool:
        """Debian's "fixed-time" job: 5 fields, neither minute nor hour starting with `*`.
        It is matched on local wall-clock time; every other cron on real instants."""
        minute, hour = self.fields.split(" ")[:2]
        return not self.has_seconds and not minute.startswith("*") and not hour.startswith("*")


def parse_cron(text: str) -> Cron:
    """Check a cron text against Debian's grammar; ValueError names the field and the fix."""
    stripped = " ".join(text.split())
    if stripped.startswith("@"):
        if stripped in MACROS:
            return Cron(text=text, fields=MACROS[stripped], has_seconds=False)
        if stripped.lower() in MACROS:
            raise ValueError(
                f"{stripped!r}: macros are lowercase, as in Debian: {stripped.lower()}"
            )
        raise ValueError(
            f"{stripped!r} is not a macro that runs on a clock; use one of " + " ".join(MACROS)
        )
    parts = stripped.split(" ") if stripped else []
    if len(parts) not in (5, 6):
        raise ValueError(
            f"{text!r} has {len(parts)} fields; use 5 (minute hour day-of-month month "
            "day-of-week), 6 with a leading seconds field, or a macro like @daily"
        )
    fields = (SECONDS, *FIELDS) if len(parts) == 6 else FIELDS
    checked = [field.check(part) for field, part in zip(fields, parts, strict=True)]
    return Cron(text=text, fields=" ".join(checked), has_seconds=len(parts) == 6)


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
    """The first fire strictly after the instant `after`, in UTC; None if it can never fire.

    cronsim finds matching wall-clock times (naive, so its own DST handling stays out of it);
    each maps to the instants it fires at by the DST rule. Near a change a wall-clock time can
    map to an instant out of order, so the search starts early and stops late by the shift.
    """
    after = after.astimezone(UTC)
    at, low, _ = _offsets_near(after, tz)
    try:
        matches = CronSim(cron.fields, _local(after, tz) - (at - low) - timedelta(seconds=1))
    except CronSimError:  # only days that no month has (`0 0 30 2 *`) pass our check to here
        return None
    best: datetime | None = None
    horizon: datetime | None = None
    for naive in matches:  # ends (StopIteration) after 50 years without a match
        if horizon is not None and naive > horizon:
            break
        for instant in _instants(naive, tz, cron.wall_clock):
            if instant > after and (best is None or instant < best):
                best = instant
                b_at, _, b_high = _offsets_near(best, tz)
                horizon = _local(best, tz) + (b_high - b_at)
    return best
