"""Fire-time maths: cron in time zones across daylight-saving changes, intervals, bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduling.cron import parse_cron
from scheduling.plan import Timing, fire_id
from scheduling.types import parse_duration


def fires(cron: str, tz: str, start: str, count: int) -> list[str]:
    """The next `count` fire times after a local start, as local wall-clock 'MM-DD HH:MM+offset'."""
    timing = Timing.build(
        cron=cron, every=None, timezone=tz, anchor=datetime.fromisoformat(start).replace(tzinfo=UTC)
    )
    return [f"{t.astimezone(timing.tz):%m-%d %H:%M%z}" for t in timing.upcoming(None, count)]


@pytest.mark.parametrize(
    ("cron", "tz", "start", "expected"),
    [
        # fixed-time job, spring forward: 02:30 does not exist -> once at 03:00 (Debian cron)
        (
            "30 2 * * *",
            "America/New_York",
            "2026-03-07T12:00",
            ["03-08 03:00-0400", "03-09 02:30-0400"],
        ),
        # fixed-time job, fall back: 01:30 happens twice -> only the first
        (
            "30 1 * * *",
            "America/New_York",
            "2026-10-31T12:00",
            ["11-01 01:30-0400", "11-02 01:30-0500"],
        ),
        # a range across the gap: 02:00 runs at 03:00, and 03:00 is the same instant: once
        (
            "0 1-3 * * *",
            "America/New_York",
            "2026-03-08T00:00",
            ["03-08 01:00-0500", "03-08 03:00-0400", "03-09 01:00-0400"],
        ),
        # stepped job, fall back: the repeated hour fires twice
        (
            "*/30 * * * *",
            "America/New_York",
            "2026-11-01T04:40",
            ["11-01 01:00-0400", "11-01 01:30-0400", "11-01 01:00-0500", "11-01 01:30-0500"],
        ),
        # stepped job, spring forward: times in the gap do not fire
        (
            "*/30 * * * *",
            "America/New_York",
            "2026-03-08T06:10",
            ["03-08 01:30-0500", "03-08 03:00-0400", "03-08 03:30-0400"],
        ),
        # Berlin, every two hours: 02:00 on 2026-03-29 does not exist
        (
            "0 */2 * * *",
            "Europe/Berlin",
            "2026-03-28T22:30",
            ["03-29 00:00+0100", "03-29 04:00+0200"],
        ),
        # southern hemisphere: Sydney springs forward on the first Sunday of October
        (
            "30 2 * * *",
            "Australia/Sydney",
            "2026-10-03T00:00",
            ["10-04 03:00+1100", "10-05 02:30+1100"],
        ),
        # Lord Howe shifts by 30 minutes: 02:00 -> 02:30
        (
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-03T00:00",
            ["10-04 02:30+1100", "10-05 02:15+1100"],
        ),
        # Berlin, fall back: 02:30 happens twice (wall-clock job: first only)
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T12:00",
            ["10-25 02:30+0200", "10-26 02:30+0100"],
        ),
        # Berlin, fall back, stepped: the repeated hour fires twice
        (
            "*/20 2 * * *",
            "Europe/Berlin",
            "2026-10-24T23:50",
            ["10-25 02:00+0200", "10-25 02:20+0200", "10-25 02:40+0200", "10-25 02:00+0100"],
        ),
        # Berlin, spring forward, a range: 02:00 moves to 03:00, which is also 03:00: once
        (
            "0 1-3 * * *",
            "Europe/Berlin",
            "2026-03-28T23:30",
            ["03-29 01:00+0100", "03-29 03:00+0200"],
        ),
        # New York, stepped within one hour across fall back: both 01:xx hours
        (
            "*/20 1 * * *",
            "America/New_York",
            "2026-11-01T04:50",
            ["11-01 01:00-0400", "11-01 01:20-0400", "11-01 01:40-0400", "11-01 01:00-0500"],
        ),
        # New York, 0 */2 across spring forward: 02:00 does not exist, no fire
        (
            "0 */2 * * *",
            "America/New_York",
            "2026-03-08T04:30",
            ["03-08 00:00-0500", "03-08 04:00-0400"],
        ),
        # Sydney, autumn fall back (first Sunday of April): 02:30 twice -> first only
        (
            "30 2 * * *",
            "Australia/Sydney",
            "2026-04-04T00:00",
            ["04-05 02:30+1100", "04-06 02:30+1000"],
        ),
        # Sydney, stepped across fall back: both 02:xx hours
        (
            "*/30 2 * * *",
            "Australia/Sydney",
            "2026-04-04T14:50",
            ["04-05 02:00+1100", "04-05 02:30+1100", "04-05 02:00+1000", "04-05 02:30+1000"],
        ),
        # Lord Howe, fall back by 30 minutes: 01:45 happens twice
        (
            "45 1 * * *",
            "Australia/Lord_Howe",
            "2026-04-04T00:00",
            ["04-05 01:45+1100", "04-06 01:45+1030"],
        ),
        (
            "*/15 1 * * *",
            "Australia/Lord_Howe",
            "2026-04-04T14:20",
            ["04-05 01:30+1100", "04-05 01:45+1100", "04-05 01:30+1030", "04-05 01:45+1030"],
        ),
        # six fields across spring forward and fall back: real instants
        (
            "0 30 2 * * *",
            "America/New_York",
            "2026-03-07T12:00",
            ["03-09 02:30-0400", "03-10 02:30-0400"],  # 03-08 02:30 does not exist
        ),
        (
            "0 30 1 * * *",
            "America/New_York",
            "2026-10-31T12:00",
            ["11-01 01:30-0400", "11-01 01:30-0500"],
        ),
        # UTC has no transitions
        ("30 2 * * *", "UTC", "2026-03-08T00:00", ["03-08 02:30+0000", "03-09 02:30+0000"]),
        # no DST at all
        ("0 9 * * *", "Asia/Tokyo", "2026-03-07T00:00", ["03-07 09:00+0900", "03-08 09:00+0900"]),
        # six fields: leading seconds
        ("15 0 12 * * *", "UTC", "2026-05-01T00:00", ["05-01 12:00+0000", "05-02 12:00+0000"]),
    ],
)
def test_cron_daylight_saving_rule(cron: str, tz: str, start: str, expected: list[str]) -> None:
    assert fires(cron, tz, start, len(expected)) == expected


def test_six_field_cron_fires_on_the_second() -> None:
    timing = Timing.build(
        cron="*/10 * * * * *", every=None, timezone="UTC", anchor=datetime(2026, 1, 1, tzinfo=UTC)
    )
    got = list(timing.upcoming(None, 3))
    assert [t.second for t in got] == [0, 10, 20]


def test_macros_and_validation() -> None:
    assert parse_cron("@daily").fields == "0 0 * * *"
    assert parse_cron("@daily").wall_clock and not parse_cron("@hourly").wall_clock
    for bad in ("61 * * * *", "* * *", "@reboot", "0 0 * * * * *"):
        with pytest.raises(ValueError):
            parse_cron(bad)


def test_a_cron_that_never_fires_falls_back_to_every() -> None:
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    never = Timing.build(cron="0 0 30 2 *", every=None, timezone="UTC", anchor=anchor)
    assert not never.can_fire() and never.next_fire(None) is None
    fallback = Timing.build(cron="0 0 30 2 *", every="1h", timezone="UTC", anchor=anchor)
    assert list(fallback.upcoming(None, 2)) == [anchor, anchor + timedelta(hours=1)]


def test_every_is_elapsed_time_across_dst() -> None:
    anchor = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # midnight in New York, DST day
    timing = Timing.build(cron=None, every="1h", timezone="America/New_York", anchor=anchor)
    got = list(timing.upcoming(None, 4))
    assert [b - a for a, b in zip(got, got[1:], strict=False)] == [timedelta(hours=1)] * 3
    assert got[0] == anchor  # first fire at the start


def test_end_at_bounds_the_schedule() -> None:
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    timing = Timing.build(
        cron="0 * * * *",
        every=None,
        timezone="UTC",
        anchor=anchor,
        end_at=anchor + timedelta(hours=2),
    )
    assert len(list(timing.upcoming(None, 10))) == 3  # 00:00, 01:00, 02:00


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30s", 30),
        ("5m", 300),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        (1500, 1.5),
        ("250", 0.25),
    ],
)
def test_durations(value: str | int, expected: float) -> None:
    assert parse_duration(value).total_seconds() == expected


@pytest.mark.parametrize("value", ["0s", "-5m", "5 minutes", "", 0, True])
def test_bad_durations(value: str | int) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_fire_id_is_utc_and_sortable() -> None:
    assert (
        fire_id(datetime(2026, 11, 23, 11, 0, tzinfo=UTC) + timedelta(hours=-1))
        == "20261123T100000Z"
    )
