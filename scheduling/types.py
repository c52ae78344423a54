"""The checked values a schedule is made of: a cron text, a duration, a time zone.

Each is one Annotated type, so the schedules file, a Ductape job, a control Update and the settings
check them the same way, with the same one-line message. Values keep the form the user wrote
(`"5m"`, `300000`); `parse_*` turns them into what the maths uses, `shown_duration` into what a
person reads.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator

from scheduling.cron import parse_cron

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
MAX_DURATION = timedelta(days=36500)


def parse_timezone(name: str) -> ZoneInfo:
    """An IANA zone by name; ValueError for anything else."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name like Europe/Berlin"
        ) from None


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """`30s`, `5m`, `2h`, `1d`, `1h30m`, or a number of milliseconds (Ductape's `every`).

    At most MAX_DURATION: a longer one is a typo, and adding it to a fire time would overflow
    the loop's date arithmetic (datetime ends at year 9999) instead of being refused here.
    """
    try:
        result = _duration_of(value)
    except OverflowError:
        negative = isinstance(value, int | float) and value < 0
        result = timedelta.min if negative else timedelta.max
    if result <= timedelta(0):
        raise ValueError(f"{value!r} must be longer than zero")
    if result > MAX_DURATION:
        raise ValueError(f"{value!r} is too long; use at most {MAX_DURATION.days}d (100 years)")
    return result


def _duration_of(value: str | int | float | timedelta) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(
            f"{value!r} is not a duration; use 30s, 5m, 2h, 1d or a number of milliseconds"
        )
    if isinstance(value, int | float):
        return timedelta(milliseconds=value)
    text = value.strip().lower().replace(" ", "")
    if text.isdigit():
        return timedelta(milliseconds=int(text))
    if text and _DURATION.sub("", text) == "":
        return sum((int(n) * _UNITS[unit] for n, unit in _DURATION.findall(text)), timedelta())
    raise ValueError(
        f"{value!r} is not a duration; use 30s, 5m, 2h, 1d (or combined, 1h30m) "
        "or a number of milliseconds"
    )


def shown_duration(value: str | int | timedelta) -> str:
    """A duration as a person reads it: as written when it has units (`90m`), else (a number of
    milliseconds, Ductape's `every`) in the largest units that add up to it: 3600000 is `1h`."""
    if isinstance(value, str) and not value.strip().isdigit():
        return value
    left = parse_duration(value)
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        n, left = divmod(left, _UNITS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"


def _cron(value: str) -> str:
    parse_cron(value)
    return value


def _duration(value: str | int) -> str | int:
    parse_duration(value)
    return value


def _zone(value: str) -> str:
    parse_timezone(value)
    return value


CronText = Annotated[str, AfterValidator(_cron)]
Duration = Annotated[str | int, AfterValidator(_duration)]
TimeZone = Annotated[str, AfterValidator(_zone)]
