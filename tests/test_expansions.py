"""Expansion functions on the time-skipping server: what each fire runs, and its children's ids."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.connections import NewConnection
from activities.expansion import PAGE_BYTES, ExpansionActivities
from activities.models import Expansion, ExpansionRequest
from client.schedules_file import DEFAULT_FILE, load_schedules
from client.settings import Settings
from jobs import expansions
from scheduling.plan import fire_id
from scheduling.spec import ScheduleSpec
from worker import build_worker
from workflows.models import FanOutPage, ScheduleSummary, ScheduleView
from workflows.schedule import ScheduleWorkflow

from .conftest import connection_store
from .test_schedule_loop import child_status, spec, start_loop


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Register test expansion functions for the in-process worker; removed afterwards."""
    added: dict[str, Any] = {}
    yield added
    for name in added:
        monkeypatch.delitem(expansions.EXPANSIONS, name, raising=False)


def register(registry: dict[str, Any], fn: Any) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    expansions.EXPANSIONS[name] = registry[name] = fn
    return name


def add_connections(settings: Settings, *ids: str, api_code: str = "dummyjson") -> None:
    store = connection_store(settings)
    for cid in ids:
        store.add(
            NewConnection(id=cid, name=cid.title(), api_key=f"key-{cid}", api_code=api_code)  # type: ignore[arg-type]
        )


async def run_fires(
    env: WorkflowEnvironment, settings: Settings, s: ScheduleSpec
) -> tuple[ScheduleSummary, ScheduleView, WorkflowHandle[Any, Any]]:
    """Run a loop to its end_at; return its summary and its last state."""
    async with build_worker(env.client, settings):
        handle = await start_loop(env, settings, s)
        summary = await handle.result()
        view = await handle.query(ScheduleWorkflow.describe)
    return summary, view, handle


async def hourly(
    env: WorkflowEnvironment, fires: int, **fields: Any
) -> tuple[ScheduleSpec, list[datetime]]:
    begin = (await env.get_current_time()).replace(microsecond=0) + timedelta(minutes=1)
    times = [begin + timedelta(hours=k) for k in range(fires)]
    end = times[-1] + timedelta(minutes=30)
    return spec(every="1h", start_at=begin, end_at=end, **fields), times


async def test_the_default_runs_one_child_per_active_connection(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    add_connections(settings, "acme", "globex", "initech")
    add_connections(settings, "umbrella", api_code="other-app")  # another integration's
    connection_store(settings).set_active("initech", False)
    s, (fire,) = await hourly(ts_env, 1, expansion="connections")
    summary, view, _ = await run_fires(ts_env, settings, s)
    ids = [f"{s.name}/{fire_id(fire)}/{c}" for c in ("acme", "globex")]
    assert summary.fires == 1 and view.state.recent[-1].children == ids
    for child_id in ids:
        result = await ts_env.client.get_workflow_handle(child_id).result()
        assert result["args"]["connection_id"] == child_id.rsplit("/", 1)[1]


@pytest.mark.parametrize(
    ("returns", "keys"),
    [
        ([{"key": f"item-{i}", "i": i} for i in range(5)], [f"item-{i}" for i in range(5)]),
        ([{"connection_id": "acme"}, {"connection_id": "globex"}], ["acme", "globex"]),
    ],
    ids=["five keyed inputs", "keyed by connection_id"],
)
async def test_a_list_runs_one_child_per_input_named_by_its_key(
    ts_env: WorkflowEnvironment,
    settings: Settings,
    registry: dict[str, Any],
    returns: list[dict[str, Any]],
    keys: list[str],
) -> None:
    name = register(registry, lambda req: returns)
    s, (fire,) = await hourly(ts_env, 1, expansion=name)
    summary, view, _ = await run_fires(ts_env, settings, s)
    assert view.state.recent[-1].children == [f"{s.name}/{fire_id(fire)}/{k}" for k in keys]
    first = await ts_env.client.get_workflow_handle(view.state.recent[-1].children[0]).result()
    assert "key" not in first["args"]  # the key names the child; the job gets the rest


async def test_inputs_without_a_key_get_a_stable_hash(
    ts_env: WorkflowEnvironment, settings: Settings, registry: dict[str, Any]
) -> None:
    name = register(registry, lambda req: [{"n": 1}, {"n": 2}])
    s, fires = await hourly(ts_env, 2, expansion=name)
    _, view, _ = await run_fires(ts_env, settings, s)
    first, second = (r.children for r in view.state.recent)
    assert [c.rsplit("/", 1)[1] for c in first] == [c.rsplit("/", 1)[1] for c in second]
    assert len(set(first)) == 2


async def test_empty_runs_nothing_and_none_falls_back_to_connections(
    ts_env: WorkflowEnvironment, settings: Settings, registry: dict[str, Any]
) -> None:
    add_connections(settings, "acme", "globex", "initech")
    calls: list[dict[str, Any]] = []

    def empty_then_default(req: dict[str, Any]) -> list[dict[str, Any]] | None:
        calls.append(req)
        return [] if len(calls) == 1 else None

    name = register(registry, empty_then_default)
    s, fires = await hourly(ts_env, 2, expansion=name, args={"region": "us"})
    summary, view, _ = await run_fires(ts_env, settings, s)
    assert calls[0] == {"api_code": "dummyjson", "name": s.name, "region": "us"}
    assert summary.skipped == {"empty expansion": 1} and summary.fires == 1
    empty, default = view.state.recent
    assert empty.outcome == "skipped: empty expansion" and empty.children == []
    assert await child_status(ts_env.client, f"{s.name}/{fire_id(fires[0])}") is None
    assert default.children == [
        f"{s.name}/{fire_id(fires[1])}/{c}" for c in ("acme", "globex", "initech")
    ]


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("not a list", "returned str; return a list of inputs, [] or None"),
        ([1, 2], "returned int at [0]; each input must be a dict"),
        ([{"key": "a"}, {"key": "a"}], "gave two inputs the key 'a'"),
        ([{"key": "no spaces"}], "gave input [0] the key 'no spaces'"),
        ([{"key": "page-0001"}], "gave input [0] the key 'page-0001'"),
        ([{"key": "big", "blob": "x" * 70_000}], "gave input [0] (big) 68 KB of args"),
    ],
    ids=["a string", "not dicts", "duplicate keys", "bad key", "a page key", "a huge input"],
)
async def test_a_bad_return_fails_that_fire_naming_the_function_and_the_loop_goes_on(
    ts_env: WorkflowEnvironment,
    settings: Settings,
    registry: dict[str, Any],
    bad: Any,
    says: str,
) -> None:
    calls = []

    def bad_once(req: dict[str, Any]) -> Any:
        calls.append(1)
        return bad if len(calls) == 1 else [{"key": "fine"}]

    name = register(registry, bad_once)
    s, fires = await hourly(ts_env, 2, expansion=name)
    summary, view, _ = await run_fires(ts_env, settings, s)
    assert len(calls) == 2  # a bad return is not retried: it would come back the same
    assert summary.failed == 1 and summary.fires == 1
    failed, ok = view.state.recent
    assert failed.outcome == "failed" and f"expansion {name!r} {says}" in (failed.error or "")
    assert ok.children == [f"{s.name}/{fire_id(fires[1])}/fine"]


async def test_an_input_the_job_rejects_fails_the_fire_before_any_child_starts(
    ts_env: WorkflowEnvironment, settings: Settings, registry: dict[str, Any]
) -> None:
    name = register(registry, lambda req: [{"key": "k", "batch_size": 0}])
    s, (fire,) = await hourly(ts_env, 1, job="sync-products", expansion=name)
    summary, view, _ = await run_fires(ts_env, settings, s)
    assert summary.failed == 1
    assert "input [0] (k) is not valid for sync-products: batch_size" in (
        view.state.recent[-1].error or ""
    )
    assert await child_status(ts_env.client, f"{s.name}/{fire_id(fire)}/k") is None


async def test_a_raising_expansion_is_retried_then_the_fire_fails_and_the_loop_goes_on(
    ts_env: WorkflowEnvironment, settings: Settings, registry: dict[str, Any]
) -> None:
    calls = []

    def flaky(req: dict[str, Any]) -> list[dict[str, Any]]:
        calls.append(1)
        if len(calls) <= 3:  # the whole first fire: 1 try + 2 retries
            raise ConnectionError("inventory service down")
        return [{"key": "ok"}]

    name = register(registry, flaky)
    s, fires = await hourly(ts_env, 2, expansion=name, retries=2)
    summary, view, _ = await run_fires(ts_env, settings, s)
    assert len(calls) == 4 and summary.failed == 1 and summary.fires == 1
    failed = view.state.recent[0]
    assert f"expansion {name!r} raised ConnectionError: inventory service down" in (
        failed.error or ""
    )


async def test_no_active_connection_is_an_empty_fire_that_says_why(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    s, _ = await hourly(ts_env, 1, job="sync-products")  # default: one per connection
    summary, view, _ = await run_fires(ts_env, settings, s)
    assert summary.skipped == {"empty expansion": 1}
    assert "no active dummyjson connections" in (view.state.recent[-1].error or "")


@pytest.mark.parametrize(("name", "hour"), [("region-us", 23), ("region-eu", 17)])
async def test_the_region_example_sends_each_region_to_its_own_fires(
    ts_env: WorkflowEnvironment, settings: Settings, name: str, hour: int
) -> None:
    """schedules.toml's ShipEngine example: us daily at 23:00, eu daily at 17:00 (UTC).

    One region per test server: a loop that ends while its jobs still run leaks the test
    server's time lock (see conftest), which would freeze the clock for a second loop.
    """
    specs = {s.name: s for s in load_schedules(DEFAULT_FILE, settings)}
    now = await ts_env.get_current_time()
    day = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    s = specs[name].model_copy(
        update={"name": f"{name}-{uuid.uuid4().hex[:6]}", "start_at": day, "limit": 1}
    )
    fire = day.replace(hour=hour)
    region = name.removeprefix("region-")
    async with build_worker(ts_env.client, settings):
        assert (await (await start_loop(ts_env, settings, s)).result()).fires == 1
        for category in expansions.REGIONS[region]:
            child = ts_env.client.get_workflow_handle(
                f"{s.name}/{fire_id(fire)}/{region}-{category}"
            )
            result = await child.result()
            assert result["args"] == {"region": region, "category": category}
            assert abs((await child.describe()).start_time - fire) < timedelta(seconds=5)


def test_large_expansions_are_stored_in_pages_bounded_by_count_and_bytes(
    settings: Settings, registry: dict[str, Any]
) -> None:
    """The expansion activity on a real SQLite file, called as the worker calls it."""
    fired = datetime(2026, 11, 23, tzinfo=UTC)
    acts = ExpansionActivities(connection_store(settings))
    name = register(
        registry,
        lambda req: [{"key": f"k{i}", "pad": "x" * req["pad"]} for i in range(req["count"])],
    )

    def expand(fire_key: str, count: int, pad: int = 1) -> Expansion:
        return acts.expand_fire(
            ExpansionRequest(
                name="t",
                job="echo",
                fire_time=fired,
                args={"count": count, "pad": pad},
                expansion=name,
                fire_key=fire_key,
            )
        )

    def pages(e: Expansion) -> list[list[Any]]:
        assert e.ref is not None and not e.inputs
        return [
            acts.load_expansion_page(
                FanOutPage(name="t", job="echo", fire_time=fired, ref=e.ref, page=n)
            )
            for n in range(e.pages)
        ]

    small = expand("t/small", 100)
    assert small.ref is None and len(small.inputs) == 100  # inline: it fits in the loop's history
    by_count = expand("t/count", 1_200)
    assert [len(p) for p in pages(by_count)] == [500, 500, 200]
    by_bytes = expand("t/bytes", 300, pad=10_000)  # 3 MB: too big inline, and for one page
    stored = pages(by_bytes)
    assert sum(map(len, stored)) == 300 and len(stored) == 3
    for page in stored:
        assert len(json.dumps([x.model_dump(mode="json") for x in page])) <= PAGE_BYTES
    assert [x.key for page in stored for x in page] == [f"k{i}" for i in range(300)]

    # the same fire expanded again (a retry, a restarted loop): the first pages stand
    again = expand("t/count", 5_000)
    assert again.pages == 3 and [len(p) for p in pages(again)] == [500, 500, 200]
