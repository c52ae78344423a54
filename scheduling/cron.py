"""Debian cron's language, and nothing else: parse a cron text strictly, then find its fire times.

The grammar (`man 5 crontab` on Debian, and its code in entry.c):

- 5 fields, `minute hour day-of-month month day-of-week`, or our 6-field form with a leading
  seconds field; or one of the macros `@yearly @annually @monthly @weekly @daily @midnight
  @hourly`;
- each field a comma list of items; an item is `*`, a value, or a range `a-b` (inclusive, `a <=
  b`: `3-3` is 3), optionally followed by a step `/n` (n >= 1) when it is `*` or a range;
- values are numbers in the field's bounds (seconds and minutes 0-59, hours 0-23, days 1-31,
  months 1-12, weekdays 0-7 with 0 and 7 both Sunday), or for months and weekdays their first
  three letters in any case (`jan`, `mon`).

Everything else is refused with a ValueError naming the field: the random `R` and hashed `H` of
other crons (non-deterministic, unusable in workflow code), Quartz's `?`, `L`, `W`, `#`, a step
after a single value (`5/10`), reversed ranges (`5-1`, `fri-mon`), `@reboot`.

Day-of-month and day-of-week follow Debian's find_jobs: if either field starts with `*` a day
must match both; if both are restricted a day matching either one fires.

The matching itself is cronsim's (cuu508/cronsim, written to match Debian cron, DST quirks
included): `next_cron_fire` walks it from an instant and applies the daylight-saving rule of
DESIGN.md, which is cronsim's too. Pure: no clock, no randomness, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
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
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] is the value low + i

    def value(self, text: str) -> int:
        if text.isdigit():
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

    def check(self, text: str) -> None:
        """Raise ValueError naming this field unless `text` is a valid Debian cron field."""
        for item in text.split(","):
            if not item:
                raise self.error(f"{text!r} has an empty list item")
            body, slash, step = item.partition("/")
            if slash:
                if not step.isdigit():
                    raise self.error(f"{item!r}: the step {step!r} is not a whole number")
                if int(step) == 0:
                    raise self.error(f"{item!r}: a step of 0 never advances; use /1 or more")
                if body != "*" and "-" not in body:
                    like = f"{body}-{self.high}/{step}"
                    raise self.error(f"{item!r}: a step needs * or a range before it, like {like}")
            if body == "*":
                continue
            low, dash, high = body.partition("-")
            first = self.value(low)
            if dash and first > (last := self.value(high)):
                sunday = " (sun is 0: end a range on Sunday with 7)" if self.high == 7 else ""
                raise self.error(
                    f"{item!r} is a reversed range ({first}-{last}); write the low value first"
                    + sunday
                )


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
    """A checked cron text: `fields` is the 5- or 6-field form cronsim evaluates."""

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
    for field, part in zip(fields, parts, strict=True):
        field.check(part)
    return Cron(text=text, fields=stripped, has_seconds=len(parts) == 6)


def next_cron_fire(cron: Cron, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first fire strictly after the instant `after`, in UTC; None if it can never fire.

    cronsim walks wall-clock time for a fixed-time job (a time in a repeated hour maps to its
    first occurrence, one inside a spring-forward gap to the first minute after it) and real
    instants otherwise. Starting from a wall-clock time loses which of a repeated hour's two
    occurrences `after` was in, so matches not after it are passed over.
    """
    after = after.astimezone(UTC)
    try:
        times = CronSim(cron.fields, after.astimezone(tz))
    except CronSimError:  # only days that no month has (`0 0 30 2 *`) pass our check to here
        return None
    for fire in times:  # stops (StopIteration) after 50 years without a match
        instant = fire.astimezone(UTC)
        if instant > after:
            return instant
    return None
