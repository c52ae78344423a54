"""Expansion functions: what one fire of a schedule runs. This is the module you edit.

A schedule names one with `expansion = "<name>"` (schedules.toml). At each fire the expansion
activity calls it, on the worker, with `{api_code, name, ...the schedule's args}` and it returns:

- a list of inputs: one job (child workflow) each. An input's `key` (letters, digits, `._-`) ends
  the child's workflow id `<schedule>/<fire time>/<key>` and is not passed to the job; without
  one the key is its `connection_id`, else a short hash of the input. Keys make a fire safe to
  replay: the same input always maps to the same child, which Temporal never starts twice;
- `[]`: run nothing this time (recorded as `skipped: empty expansion`);
- `None`: the default, one input per active connection of `api_code`.

Anything else fails the fire with an error naming the function; an exception is retried per the
schedule's `retries`, then the fire is recorded as failed and the loop goes on. Functions run in
an activity, so they may do I/O (read a database, call an API). They must be quick (a minute at
most) and should return the same list when called twice for the same fire.

Two names are built in: `connections` (always one input per connection) and `once` (one input:
the schedule's args). A job's default is `connections` for sync-products, `once` otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

ExpansionResult = list[dict[str, Any]] | None
ExpansionFunction = Callable[[dict[str, Any]], ExpansionResult]

EXPANSIONS: dict[str, ExpansionFunction] = {}
BUILT_IN = ("connections", "once")


def expansion(name: str) -> Callable[[ExpansionFunction], ExpansionFunction]:
    """Register a function under the name schedules use for it."""

    def register(fn: ExpansionFunction) -> ExpansionFunction:
        if name in EXPANSIONS or name in BUILT_IN:
            raise ValueError(f"expansion {name!r} is defined twice")
        EXPANSIONS[name] = fn
        return fn

    return register


def known() -> list[str]:
    return sorted([*BUILT_IN, *EXPANSIONS])


# --- examples (schedules.toml uses them) -----------------------------------------------------

REGIONS = {
    "us": ["smartphones", "laptops", "tablets"],
    "eu": ["fragrances", "skin-care", "furniture"],
}


@expansion("by-region")
def by_region(request: dict[str, Any]) -> ExpansionResult:
    """ShipEngine's example: one job daily at 23:00 with region "us", one at 17:00 with "eu".

    One input per product category of the region; a region we don't know runs nothing.
    """
    region = request.get("region", "")
    return [
        {"key": f"{region}-{category}", "region": region, "category": category}
        for category in REGIONS.get(region, [])
    ]


@expansion("numbers")
def numbers(request: dict[str, Any]) -> ExpansionResult:
    """`count` inputs numbered 0..count-1: a fan-out of any size (demos, `bench/fanout.py`).

    Each input also carries the schedule's other args (`{"count": 3, "sleep_s": 1}`: three
    jobs that each take a second)."""
    rest = {k: v for k, v in request.items() if k not in ("api_code", "name", "count")}
    return [{**rest, "key": f"n{i:06d}", "n": i} for i in range(int(request.get("count", 0)))]


@expansion("active-connections-or-nothing")
def active_connections_or_nothing(request: dict[str, Any]) -> ExpansionResult:
    """Defer to the per-connection default, except on a `paused` flag in the schedule's args."""
    return [] if request.get("paused") else None


@expansion("busy")
def busy(request: dict[str, Any]) -> ExpansionResult:
    """One input, after `work_ms` of CPU time on the worker: a stand-in for an expansion that
    computes its inputs (`bench/lateness.py --work-ms`, to load the worker rather than the server).
    """
    spent = time.thread_time() + float(request.get("work_ms", 0)) / 1000
    while time.thread_time() < spent:
        pass
    rest = {k: v for k, v in request.items() if k not in ("api_code", "name", "work_ms")}
    return [{**rest, "key": "busy"}]
