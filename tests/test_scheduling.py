"""The pure schedule core, in milliseconds: Debian cron's grammar and day rule, the DST rule,
intervals, bounds, catch-up, jitter and after-completion. No Temporal, no clock: fixed dates are
fine here, since nothing compares them with today.

Expected values for the grammar and day rule were checked against Debian's own cron (3.0pl1-162:
entry.c's parser and cron.c's find_jobs, built from `apt-get source cron`) while writing them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduling.cron import MACROS, parse_cron
from scheduling.plan import Timing, fire_id, remaining, time_left
from scheduling.state import RECENT, ScheduleState
from scheduling.types import parse_duration

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday
HOUR = timedelta(hours=1)


def utc(cron: str, count: int, start: datetime = T0, tz: str = "UTC") -> list[datetime]:
    """The first `count` fires of a cron started at `start`."""
    timing = Timing.build(cron=cron, every=None, timezone=tz, anchor=start)
    return list(timing.upcoming(None, count))


def fires(cron: str, tz: str, start: str, count: int) -> list[str]:
    """The first `count` fires after `start` (UTC), as local 'MM-DD HH:MM+offset'."""
    timing = Timing.build(
        cron=cron, every=None, timezone=tz, anchor=datetime.fromisoformat(start).replace(tzinfo=UTC)
    )
    return [f"{t.astimezone(timing.tz):%m-%d %H:%M%z}" for t in timing.upcoming(None, count)]


def every(interval: str, **extra: object) -> Timing:
    return Timing.build(cron=None, every=interval, timezone="UTC", anchor=T0, **extra)  # type: ignore[arg-type]


class TestGrammar:
    @pytest.mark.parametrize(
        ("cron", "first"),
        [
            ("30 9 * * *", ["01-01 09:30", "01-02 09:30"]),
            ("0 0 * * mon-fri", ["01-01 00:00", "01-02 00:00", "01-05 00:00"]),  # names, ranges
            ("0 0 * * MON,wed", ["01-05 00:00", "01-07 00:00"]),  # any case, lists
            ("0 0 * * 7", ["01-04 00:00", "01-11 00:00"]),  # 7 is Sunday
            ("0 0 * * 0", ["01-04 00:00", "01-11 00:00"]),  # ... and so is 0
            ("0 0 * * 1-7/2", ["01-02 00:00", "01-04 00:00", "01-05 00:00"]),  # Mon Wed Fri Sun
            ("0 0 1 feb-mar *", ["02-01 00:00", "03-01 00:00"]),
            ("1-5/2 0 * * *", ["01-01 00:01", "01-01 00:03", "01-01 00:05", "01-02 00:01"]),
            ("*/60 0 * * *", ["01-01 00:00", "01-02 00:00"]),  # a step as long as the field
            ("5-5/10 0 * * *", ["01-01 00:05", "01-02 00:05"]),  # a one-value range stays one
            ("0 0 * * mon-mon/2", ["01-05 00:00", "01-12 00:00"]),
            ("0,30 1,2 * * *", ["01-01 01:00", "01-01 01:30", "01-01 02:00", "01-01 02:30"]),
        ],
    )
    def test_accepted(self, cron: str, first: list[str]) -> None:
        assert [f"{t:%m-%d %H:%M}" for t in utc(cron, len(first))] == first

    def test_six_fields_lead_with_seconds(self) -> None:
        assert [t.second for t in utc("*/10 * * * * *", 3)] == [0, 10, 20]
        assert utc("15 0 12 * * *", 1) == [datetime(2026, 1, 1, 12, 0, 15, tzinfo=UTC)]

    @pytest.mark.parametrize(
        ("macro", "first"),
        [
            ("@hourly", ["01-01 00:00", "01-01 01:00"]),
            ("@daily", ["01-01 00:00", "01-02 00:00"]),
            ("@midnight", ["01-01 00:00", "01-02 00:00"]),
            ("@weekly", ["01-04 00:00", "01-11 00:00"]),  # Sundays
            ("@monthly", ["01-01 00:00", "02-01 00:00"]),
            ("@yearly", ["2026-01-01 00:00", "2027-01-01 00:00"]),
            ("@annually", ["2026-01-01 00:00", "2027-01-01 00:00"]),
        ],
    )
    def test_every_macro(self, macro: str, first: list[str]) -> None:
        fmt = "%Y-%m-%d %H:%M" if len(first[0]) > 11 else "%m-%d %H:%M"
        assert [f"{t:{fmt}}" for t in utc(macro, 2)] == first

    def test_macros_are_all_covered(self) -> None:
        assert set(MACROS) == {
            "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"
        }  # fmt: skip

    def test_dst_mode_follows_debian_star_flags(self) -> None:
        """Fixed-time (wall clock) only when neither minute nor hour starts with `*`."""
        assert parse_cron("30 2 * * *").wall_clock and parse_cron("@daily").wall_clock
        assert parse_cron("0 1-3 * * *").wall_clock and parse_cron("0,30 9 * * 1-5").wall_clock
        assert not parse_cron("@hourly").wall_clock and not parse_cron("0 */2 * * *").wall_clock
        assert not parse_cron("*/20 1 * * *").wall_clock
        assert not parse_cron("0 30 2 * * *").wall_clock  # six fields: real instants


class TestRefusals:
    @pytest.mark.parametrize(
        ("cron", "message"),
        [
            ("R * * * *", "minute: 'R' is not Debian cron syntax"),
            ("H H * * *", "minute: 'H' is not Debian cron syntax"),
            ("0 0 ? * *", "day-of-month: '?' is not Debian cron syntax"),
            ("0 0 L * *", "day-of-month: 'L' is not Debian cron syntax"),
            ("0 0 15W * *", "day-of-month: '15W' is not Debian cron syntax"),
            ("0 0 * * 1#2", "day-of-week: '1#2' is not Debian cron syntax"),
            ("0 0 * * 5L", "day-of-week: '5L' is not Debian cron syntax"),
            ("5-1 * * * *", "minute: '5-1' is a reversed range (5-1)"),
            ("0 0 * * fri-mon", "day-of-week: 'fri-mon' is a reversed range (5-1)"),
            ("0 0 * * 3-sun", "day-of-week: '3-sun' is a reversed range (3-0)"),
            ("0 0 * * mon-sun", "end a range on Sunday with 7"),
            ("5/10 * * * *", "minute: '5/10': a step needs * or a range before it"),
            ("*/0 * * * *", "minute: '*/0': use a step from 1 to 60"),
            ("*/61 * * * *", "minute: '*/61': use a step from 1 to 60"),
            ("*/4294967297 * * * *", "minute: '*/4294967297': use a step from 1 to 60"),
            ("4294967301 * * * *", "minute: 4294967301 is out of range 0-59"),
            ("\uff15 * * * *", "minute: '\uff15' is not a value"),  # a full-width 5
            ("*/x * * * *", "minute: '*/x': the step 'x' is not a whole number"),
            ("60 * * * *", "minute: 60 is out of range 0-59"),
            ("0 24 * * *", "hour: 24 is out of range 0-23"),
            ("0 0 0 * *", "day-of-month: 0 is out of range 1-31"),
            ("0 0 * 13 *", "month: 13 is out of range 1-12"),
            ("0 0 * * 8", "day-of-week: 8 is out of range 0-7"),
            ("60 0 0 * * *", "second: 60 is out of range 0-59"),
            ("0 0 * * monday", "day-of-week: 'monday' is not a value"),
            ("0 mon * * *", "hour: 'mon' is not a value"),  # names only for month and weekday
            ("1,,2 * * * *", "minute: '1,,2' has an empty list item"),
            ("*-5 * * * *", "minute: '*' is not a value"),
            ("@reboot", "not a macro that runs on a clock"),
            ("@Daily", "macros are lowercase, as in Debian: @daily"),
            ("* * *", "has 3 fields"),
            ("0 0 * * * * *", "has 7 fields"),
            ("", "has 0 fields"),
        ],
    )
    def test_refused_in_one_line_naming_the_field(self, cron: str, message: str) -> None:
        with pytest.raises(ValueError) as refused:
            parse_cron(cron)
        assert message in str(refused.value) and "\n" not in str(refused.value)


class TestRangesAreLiteral:
    """croniter widens `a-a` to the whole field; `man 5 crontab`: "the specified range is
    inclusive", so `3-3` is 3."""

    def test_one_hour_range(self) -> None:
        assert [t.hour for t in utc("0 3-3 * * *", 3)] == [3, 3, 3]

    def test_one_minute_range(self) -> None:
        assert [f"{t:%d %H:%M}" for t in utc("5-5 12 * * *", 2)] == ["01 12:05", "02 12:05"]

    def test_one_weekday_range(self) -> None:
        assert {t.weekday() for t in utc("0 12 * * 0-0", 5)} == {6}  # Sundays only


class TestDayRule:
    """Debian's find_jobs: if day-of-month or day-of-week starts with `*`, a day must match
    both; if both are restricted, either one."""

    def test_and_when_day_of_month_starts_with_a_star(self) -> None:
        got = utc("* 4 */7 10-11 1", 3)
        assert got[0] == datetime(2027, 11, 1, 4, 0, tzinfo=UTC)  # the first Monday on a 1/8/15..
        assert all(t.weekday() == 0 and t.day in (1, 8, 15, 22, 29) for t in got)

    def test_and_for_a_star_list(self) -> None:
        assert {t.weekday() for t in utc("0 0 *,1 * 1", 6)} == {0}
        assert {t.weekday() for t in utc("0 0 */1 * 1", 6)} == {0}

    def test_or_when_both_are_restricted(self) -> None:
        assert [t.day for t in utc("0 12 1,*/9 * 0-6", 3)] == [1, 2, 3]  # every day
        assert [t.day for t in utc("0 0 1-31 * 1", 3)] == [1, 2, 3]
        got = utc("0 0 13 * 5", 4)  # the 13th or a Friday
        assert [f"{t:%m-%d}" for t in got] == ["01-02", "01-09", "01-13", "01-16"]

    def test_and_when_day_of_week_starts_with_a_star(self) -> None:
        assert [t.day for t in utc("0 0 13 * */7", 2)] == [13, 13]  # */7: Sundays, AND the 13th
        assert {t.weekday() for t in utc("0 0 13 * */7", 2)} == {6}

    def test_a_day_no_month_has_never_fires(self) -> None:
        timing = Timing.build(cron="0 0 30 2 *", every=None, timezone="UTC", anchor=T0)
        assert not timing.can_fire() and timing.next_fire(None) is None
        assert utc("0 0 29 2 *", 2) == [
            datetime(2028, 2, 29, tzinfo=UTC),
            datetime(2032, 2, 29, tzinfo=UTC),
        ]


class TestDaylightSaving:
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
            (
                "0 9 * * *",
                "Asia/Tokyo",
                "2026-03-07T00:00",
                ["03-07 09:00+0900", "03-08 09:00+0900"],
            ),
            # Lord Howe, wildcard jobs after its 30-minute change: every real minute that matches
            (
                "*/15 0 * * *",
                "Australia/Lord_Howe",
                "2026-10-04T12:00",
                ["10-05 00:00+1100", "10-05 00:15+1100", "10-05 00:30+1100", "10-05 00:45+1100"],
            ),
            (
                "30 */1 * * *",
                "Australia/Lord_Howe",
                "2026-04-04T14:00",
                ["04-05 01:30+1100", "04-05 01:30+1030", "04-05 02:30+1030"],
            ),
            # Santiago skips midnight (00:00 -> 01:00): a wildcard job there does not fire; one
            # at 01:xx does; a fixed-time midnight job runs at 01:00
            (
                "*/30 0 * * 0",
                "America/Santiago",
                "2026-09-05T12:00",
                ["09-13 00:00-0300", "09-13 00:30-0300"],
            ),
            (
                "*/30 1 * * 0",
                "America/Santiago",
                "2026-09-05T12:00",
                ["09-06 01:00-0300", "09-06 01:30-0300"],
            ),
            (
                "0 0 * * *",
                "America/Santiago",
                "2026-09-05T12:00",
                ["09-06 01:00-0300", "09-07 00:00-0300"],
            ),
            # six fields: leading seconds
            ("15 0 12 * * *", "UTC", "2026-05-01T00:00", ["05-01 12:00+0000", "05-02 12:00+0000"]),
        ],
    )
    def test_the_rule(self, cron: str, tz: str, start: str, expected: list[str]) -> None:
        assert fires(cron, tz, start, len(expected)) == expected


class TestInterval:
    def test_elapsed_time_across_dst(self) -> None:
        anchor = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # midnight in New York, DST day
        timing = Timing.build(cron=None, every="1h", timezone="America/New_York", anchor=anchor)
        got = list(timing.upcoming(None, 4))
        assert got[0] == anchor  # the first fire at the start
        assert [b - a for a, b in zip(got, got[1:], strict=False)] == [HOUR] * 3

    def test_strictly_after_on_the_anchor_grid(self) -> None:
        assert every("90s").next_fire(T0 + timedelta(seconds=100)) == T0 + timedelta(seconds=180)
        assert every("90s").next_fire(T0 + timedelta(seconds=180)) == T0 + timedelta(seconds=270)

    def test_a_cron_that_never_fires_falls_back_to_every(self) -> None:
        fallback = Timing.build(cron="0 0 30 2 *", every="1h", timezone="UTC", anchor=T0)
        assert list(fallback.upcoming(None, 2)) == [T0, T0 + HOUR]


class TestBounds:
    def test_nothing_before_the_start(self) -> None:
        start = T0 + timedelta(minutes=30)
        timing = Timing.build(cron="0 * * * *", every=None, timezone="UTC", anchor=start)
        assert timing.next_fire(None) == T0 + HOUR
        assert timing.next_fire(T0 - HOUR) == T0 + HOUR  # an earlier cursor is floored

    def test_end_at_is_inclusive(self) -> None:
        timing = Timing.build(
            cron="0 * * * *", every=None, timezone="UTC", anchor=T0, end_at=T0 + 2 * HOUR
        )
        assert list(timing.upcoming(None, 10)) == [T0, T0 + HOUR, T0 + 2 * HOUR]

    def test_limit(self) -> None:
        assert remaining(3, 1) == 2 and remaining(3, 3) == 0 and remaining(3, 5) == 0
        assert remaining(None, 10) is None


class TestCatchUp:
    def test_on_time_runs_the_due_fire(self) -> None:
        caught = every("1h").catch_up(T0 + HOUR, T0 + HOUR + timedelta(seconds=2))
        assert (caught.run, caught.missed, caught.cursor) == (T0 + HOUR, 0, None)

    def test_late_runs_only_the_latest_missed_fire(self) -> None:
        woke = T0 + timedelta(hours=4, minutes=30)  # slept through 1h, 2h, 3h and 4h
        caught = every("1h").catch_up(T0 + HOUR, woke)
        assert caught.run == T0 + 4 * HOUR
        assert (caught.missed, caught.last_missed) == (3, T0 + 3 * HOUR)

    def test_older_than_the_window_runs_nothing(self) -> None:
        timing = every("1h", catchup_window="10m")
        caught = timing.catch_up(T0 + HOUR, T0 + timedelta(hours=4, minutes=30))
        assert caught.run is None and caught.missed == 4
        assert caught.cursor == caught.last_missed == T0 + 4 * HOUR  # the loop moves on

    def test_within_the_window_still_runs(self) -> None:
        timing = every("1h", catchup_window="45m")
        assert timing.catch_up(T0 + HOUR, T0 + HOUR + timedelta(minutes=40)).run == T0 + HOUR

    def test_past_the_cap_nothing_runs_and_the_next_wake_counts_on(self) -> None:
        timing, woke = every("1s"), T0 + timedelta(seconds=25, milliseconds=500)
        first = timing.catch_up(T0, woke, cap=10)
        assert (first.run, first.missed, first.capped) == (None, 10, True)
        assert first.cursor == T0 + timedelta(seconds=9)  # the last one counted
        second = timing.catch_up(T0 + timedelta(seconds=10), woke, cap=10)
        assert second.run is None and second.cursor == T0 + timedelta(seconds=19)
        last = timing.catch_up(T0 + timedelta(seconds=20), woke, cap=10)
        assert last.run == T0 + timedelta(seconds=25) and last.missed == 5  # 20..24: 26 in all
        assert first.missed + second.missed + last.missed == 25


class TestJitter:
    def test_no_jitter_wakes_on_time(self) -> None:
        assert every("1h").wake_time(T0, 0.9) == T0

    @pytest.mark.parametrize(("jitter", "room"), [("10m", timedelta(minutes=10)), ("2h", HOUR)])
    def test_room_never_reaches_the_next_fire(self, jitter: str, room: timedelta) -> None:
        timing = every("1h", jitter=jitter)
        assert timing.jitter_room(T0) == room
        latest = timing.wake_time(T0, 0.999_999)
        assert T0 < latest < T0 + room and latest < timing.next_fire(T0)  # type: ignore[operator]

    def test_the_delay_is_the_draws_share(self) -> None:
        timing = every("1h", jitter="10m")
        assert timing.wake_time(T0, 0.0) == T0
        assert timing.wake_time(T0, 0.5) == T0 + timedelta(minutes=5) * 0.999

    def test_room_follows_an_uneven_cron(self) -> None:
        timing = Timing.build(
            cron="0,5 * * * *", every=None, timezone="UTC", anchor=T0, jitter="10m"
        )
        assert timing.jitter_room(T0) == timedelta(minutes=5)  # 00:00, then 00:05
        assert timing.jitter_room(T0 + timedelta(minutes=5)) == timedelta(minutes=10)


class TestAfterCompletion:
    def test_waits_while_jobs_run(self) -> None:
        timing = every("1h", after_completion=True)
        nxt = timing.plan_next(T0, jobs_running=True, last_finished=None)
        assert nxt.at is None and nxt.waiting

    def test_every_after_the_jobs_finished(self) -> None:
        timing = every("1h", after_completion=True)
        done = T0 + timedelta(minutes=30)
        assert timing.plan_next(T0, jobs_running=False, last_finished=done).at == done + HOUR

    def test_the_first_fire_is_the_start(self) -> None:
        timing = every("1h", after_completion=True)
        assert timing.plan_next(None, jobs_running=False, last_finished=None).at == T0

    def test_ends_at_end_at(self) -> None:
        timing = every("1h", after_completion=True, end_at=T0 + HOUR)
        nxt = timing.plan_next(T0, jobs_running=False, last_finished=T0 + timedelta(minutes=1))
        assert nxt.at is None and not nxt.waiting


class TestDurations:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), (1500, 1.5)]
        + [("250", 0.25)],
    )
    def test_parsed(self, value: str | int, expected: float) -> None:
        assert parse_duration(value).total_seconds() == expected

    @pytest.mark.parametrize("value", ["0s", "-5m", "5 minutes", "", 0, True])
    def test_refused(self, value: str | int) -> None:
        with pytest.raises(ValueError):
            parse_duration(value)


def test_time_left() -> None:
    assert time_left(None, T0) is None
    assert time_left(T0 + HOUR, T0) == HOUR and time_left(T0, T0 + HOUR) == timedelta(0)


def test_fire_id_is_utc_and_sortable() -> None:
    assert fire_id(datetime(2026, 11, 23, 11, 0, tzinfo=UTC) - HOUR) == "20261123T100000Z"


class TestState:
    def test_skips_count_by_reason_and_record_once(self) -> None:
        state = ScheduleState()
        state.skip(T0, "missed", T0 + HOUR, count=3)
        state.skip(T0 + HOUR, "overlap", T0 + HOUR)
        assert state.skipped == {"missed": 3, "overlap": 1}
        assert [(r.outcome, r.error) for r in state.recent] == [
            ("skipped: missed", "3 fires"),
            ("skipped: overlap", None),
        ]

    def test_only_the_last_fires_are_kept(self) -> None:
        state = ScheduleState()
        for k in range(RECENT + 5):
            state.record(T0 + k * HOUR, "started", T0 + k * HOUR)
        assert len(state.recent) == RECENT and state.recent[0].scheduled == T0 + 5 * HOUR

    def test_a_trigger_does_not_count_toward_the_limit(self) -> None:
        state = ScheduleState()
        state.count_started(manual=True)
        state.count_started(manual=False)
        assert (state.fires, state.triggered) == (1, 1)

    def test_job_ends(self) -> None:
        state = ScheduleState(running={"a": T0, "b": T0})
        assert state.job_ended("a", "boom", T0 + HOUR)
        assert not state.job_ended("a", None, T0 + HOUR)  # reported twice: counted once
        assert state.job_failures == 1 and state.job_errors == {"a": "boom"}
        assert state.last_finished is None  # b still runs
        assert state.job_ended("b", None, T0 + 2 * HOUR)
        assert state.last_finished == T0 + 2 * HOUR and state.job_failures == 1
