"""The suite's tiers: each test is marked by what it needs, found from the fixtures it uses and
the helpers it calls, so a test file needs no marks of its own. A test with none of these marks
is pure (`make test-fast` runs only those, in seconds). Under pytest-xdist (`make test`) the
tests that share a module-scoped fixture, and all Medusa tests, go to one worker each
(`--dist loadgroup`), and the slow tiers start first so that no long test ends the run alone.

Registered in conftest.py (`pytest_plugins`); the marks themselves are in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import os
import subprocess
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

# What a fixture brings (its whole closure counts: a fixture that uses dev_env brings Temporal).
FIXTURE_TIERS = {
    "dev_env": "temporal",
    "ts_env": "temporal",
    "pg_server": "postgres",
    "pg_url": "postgres",
    "medusa_store": "medusa",
    "clean_medusa_store": "medusa",
    "browser": "browser",
}
TIERS = ("medusa", "browser", "process", "prometheus", "temporal", "postgres")
# Which tests start first under xdist: the slowest tiers (a Medusa store, a whole stack).
START_ORDER = {tier: n for n, tier in enumerate(TIERS)}
PROMETHEUS_BINARY = "/usr/bin/prometheus"


def tiers_of(item: pytest.Item) -> set[str]:
    """The tiers item needs: from its fixtures, its parameters and what its code calls."""
    found: set[str] = set()
    names = getattr(item, "fixturenames", ())
    found.update(FIXTURE_TIERS[n] for n in names if n in FIXTURE_TIERS)
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("app_db") == "postgresql":
        found.add("postgres")
    seen: set[int] = set()
    fn = getattr(item, "function", None)
    if fn is not None:
        found |= _reaches(fn, seen)
    info = getattr(item, "_fixtureinfo", None)
    for defs in info.name2fixturedefs.values() if info else ():
        found |= _reaches(defs[-1].func, seen)
    return found


def _ours(obj: Any) -> bool:
    """A function or class of the test suite (the code the scan follows), but not this module."""
    module = getattr(obj, "__module__", None) or ""
    if module == __name__:
        return False
    return module == "tests" or module.startswith("tests.") or module == "conftest"


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _reaches(obj: Any, seen: set[int]) -> set[str]:
    """The tiers the suite's own code in obj reaches: starting a process (subprocess, os.fork,
    asyncio subprocesses) or a Temporal server of its own, followed through the suite's helpers
    (not into the application, which a test reaches through fixtures)."""
    obj = inspect.unwrap(obj) if callable(obj) else obj
    if id(obj) in seen or not _ours(obj):
        return set()
    seen.add(id(obj))
    if inspect.isclass(obj):
        found: set[str] = set()
        for member in vars(obj).values():
            found |= _reaches(getattr(member, "__func__", member), seen)
        return found
    code = getattr(obj, "__code__", None)
    if code is None:
        return set()
    scope = getattr(obj, "__globals__", {})
    found = set()
    defaults = [*(obj.__defaults__ or ()), *(obj.__kwdefaults__ or {}).values()]
    for default in defaults:  # e.g. `launch: Launcher = fresh_process`
        if inspect.isfunction(default) or inspect.isclass(default):
            found |= _reaches(default, seen)
    for c in _codes(code):
        names = set(c.co_names)
        values = [scope[n] for n in names if n in scope]
        if any(v is subprocess for v in values) or any(v is subprocess.Popen for v in values):
            found.add("process")
        if any(v is os for v in values) and "fork" in names:
            found.add("process")
        if any(v is asyncio for v in values) and names & {
            "create_subprocess_exec",
            "create_subprocess_shell",
        }:
            found.add("process")
        if WorkflowEnvironment in values and names & {"start_local", "start_time_skipping"}:
            found.add("temporal")
        if PROMETHEUS_BINARY in c.co_consts or any(v == PROMETHEUS_BINARY for v in values):
            found.add("prometheus")
        for v in values:
            if v is not builtins and (inspect.isfunction(v) or inspect.isclass(v)):
                found |= _reaches(v, seen)
    return found


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups, and the timeout wrapping
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each item with its tiers, group what must share a worker, and put the slow first."""
    rank: dict[str, int] = {}
    for item in items:
        tiers = tiers_of(item)
        for tier in sorted(tiers):
            item.add_marker(getattr(pytest.mark, tier))
        group = _group(item, tiers)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
            if getattr(config.option, "dist", "no") == "loadgroup" and "@" not in item.nodeid:
                _tag_group(item, group)
        rank[item.nodeid] = min((START_ORDER[t] for t in tiers), default=len(START_ORDER))
    items.sort(key=lambda i: rank[i.nodeid])  # stable: files keep their order within a tier


def _tag_group(item: pytest.Item, group: str) -> None:
    """Give item the `<id>@<group>` node id by which xdist's loadgroup finds its group. xdist
    3.8 writes that id to `item._nodeid`, which pytest 9 no longer reads (the id comes from
    `item._id`), so every test would be scheduled alone; write it where pytest reads it."""
    tagged = f"{item.nodeid}@{group}"
    if hasattr(item, "_id"):
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(tagged)
    else:
        item._nodeid = tagged  # type: ignore[attr-defined]  # pytest 8 kept the id here


def _group(item: pytest.Item, tiers: set[str]) -> str | None:
    """Tests that would each start the same expensive thing on another worker: all Medusa tests
    (one store per worker), and each module whose tests share a module-scoped fixture."""
    if "medusa" in tiers:
        return "medusa"
    info = getattr(item, "_fixtureinfo", None)
    for defs in info.name2fixturedefs.values() if info else ():
        if defs[-1].scope in ("module", "package", "class") and _ours(defs[-1].func):
            return Path(item.nodeid.split("::", 1)[0]).stem
    return None


@pytest.fixture(autouse=True)
def _pure_means_no_process(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test with no tier mark runs in `make test-fast`: it must not start a process. One that
    does (through code the scan above does not follow) fails, saying how to mark it."""
    if any(request.node.get_closest_marker(t) for t in TIERS):
        yield
        return
    real = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        pytest.fail(
            f"{request.node.nodeid} starts a process but has no tier mark: add"
            " `pytestmark = pytest.mark.process` to its module (or use a fixture that starts it)",
            pytrace=False,
        )

    subprocess.Popen.__init__ = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        subprocess.Popen.__init__ = real  # type: ignore[method-assign]
