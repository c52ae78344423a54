"""What one fire of a schedule loop costs Temporal, counted in history events, per shape.

Starts its own dev server and one worker in this process, then for each shape runs one loop
(`start_schedules`, job `echo`, every 2 s) until it has started --fires fires after its first
and their jobs have reported, deletes it (its `delete` update) and waits for it and its jobs to
close. Shapes: `once` (the default expansion: one job with fixed args), `connections`
(`expansion = "connections"`, 3 active connections of its api_code: 3 jobs) and `expansion` (the
user function `numbers` with `count = 3`: 3 jobs).

What is counted (exact counts from the histories, by event type, whatever sequence the loop uses):
the loop's history over all its runs (continue-as-new followed) in order, from the first event at
or after the second fire's scheduled time (its timer firing) up to the workflow task that carries
the delete. So the start, the whole first fire (it runs in the loop's first workflow task, with
the once-per-run patch markers and search-attribute upsert) and the delete are left out, and each
fire counted is a full cycle: woken by its timer, expand, start the jobs, take their reports,
start the timer for the next. A continue-as-new in the window is counted, as the fires around it
pay for it (column `CAN`: runs begun in the window). The jobs counted are the children started in
the window (and any of theirs), each history in full, all runs. Per fire = count / fires in the
window that started jobs (if a fire comes before the last one's jobs have reported, the loop runs
on and that fire counts too); per job = count / jobs. How the jobs' reports batch into the loop's
workflow tasks depends on timing, so workflow tasks and timers vary by fractions between runs.

Columns: loop events, workflow tasks (WorkflowTaskCompleted), activities (ActivityTaskScheduled),
local activities (MarkerRecorded `core_local_activity`), timers started / cancelled, signals
received (WorkflowExecutionSignaled); per job: events and workflow tasks; total = loop + jobs.
`--detail` adds every event type per fire.

Usage: .venv/bin/python bench/fire_cost.py [--fires 5] [--shapes once,connections,expansion]
       [--detail]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.api.history.v1 import HistoryEvent  # noqa: E402
from temporalio.client import Client, WorkflowHandle  # noqa: E402

from activities.connections import ConnectionStore, NewConnection  # noqa: E402
from bench.devserver import start_dev_server  # noqa: E402
from client.codec import Keyring  # noqa: E402
from client.errors import OneLineParser  # noqa: E402
from client.loops import control, schedule_id, start_schedules  # noqa: E402
from client.settings import Settings  # noqa: E402
from scheduling.spec import ScheduleSpec  # noqa: E402
from scheduling.state import FireRecord  # noqa: E402
from scheduling.types import parse_duration  # noqa: E402
from worker import build_worker  # noqa: E402
from workflows.models import ScheduleSummary  # noqa: E402
from workflows.schedule import ScheduleWorkflow  # noqa: E402

EVERY = "2s"
API_CODE = "bench"  # the connections shape's own integration, apart from any real one
JOBS_PER_FIRE = 3
LA_MARKER = "core_local_activity"  # the SDK core's marker for a local activity's result
QUIET_BEFORE_NEXT = timedelta(seconds=0.5)  # delete only this far from the next fire
POLL_S = 0.05
SHAPE_TIMEOUT_S = 60.0  # plus three intervals per fire
SHAPES = ("once", "connections", "expansion")


def shape_spec(shape: str, name: str) -> ScheduleSpec:
    common: dict[str, Any] = {"name": name, "job": "echo", "every": EVERY}
    if shape == "once":
        return ScheduleSpec(**common, args={"greeting": "hi"})
    if shape == "connections":
        return ScheduleSpec(
            **common, expansion="connections", api_code=API_CODE, args={"greeting": "hi"}
        )
    return ScheduleSpec(**common, expansion="numbers", args={"count": JOBS_PER_FIRE})


def add_connections(settings: Settings) -> None:
    store = ConnectionStore(settings.database, settings.connections_secret())
    for i in range(JOBS_PER_FIRE):
        new = NewConnection.model_validate(
            {"id": f"bench-{i}", "api_code": API_CODE, "name": f"bench {i}", "api_key": f"k{i}"}
        )
        store.add(new, replace=True)


def type_name(event: HistoryEvent) -> str:
    return EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")


def event_time(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


async def runs_of(client: Client, wf_id: str) -> list[list[HistoryEvent]]:
    """Every run of a workflow id, oldest first (back from the latest through continue-as-new
    and retries)."""
    runs: list[list[HistoryEvent]] = []
    run_id: str | None = None
    while True:
        history = await client.get_workflow_handle(wf_id, run_id=run_id).fetch_history()
        events = list(history.events)
        runs.append(events)
        prev = events[0].workflow_execution_started_event_attributes.continued_execution_run_id
        if not prev:
            return runs[::-1]
        run_id = prev


def children_started(events: list[HistoryEvent]) -> list[str]:
    return [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    ]


def delete_cut(events: list[HistoryEvent]) -> int:
    """Index of the workflow task that carried the delete update (the first update the last run
    accepted or admitted): its WorkflowTaskScheduled. The whole run when there is none."""
    update = (
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    )
    at = next((i for i, e in enumerate(events) if e.event_type in update), None)
    if at is None:
        return len(events)
    while at > 0 and events[at].event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
        at -= 1
    return at


@dataclass
class Cost:
    shape: str
    fires: int = 0  # fires in the window that started jobs
    jobs: int = 0
    runs: int = 0  # runs of the loop that began in the window: continue-as-new
    loop: Counter[str] = field(default_factory=Counter)
    job: Counter[str] = field(default_factory=Counter)
    activities: Counter[str] = field(default_factory=Counter)  # the loop's, by activity type
    notes: list[str] = field(default_factory=list)

    def per_fire(self, what: str) -> float:
        return self.loop[what] / self.fires if self.fires else 0.0

    def per_job(self, what: str) -> float:
        return self.job[what] / self.jobs if self.jobs else 0.0


async def fire_until(
    handle: WorkflowHandle[ScheduleWorkflow, ScheduleSummary], fires: int
) -> list[FireRecord]:
    """Poll `describe` until `fires` fires have started jobs, every job has reported and the
    next fire is not about to start; every fire record seen, oldest first."""
    seen: dict[tuple[datetime, str], FireRecord] = {}
    limit_s = SHAPE_TIMEOUT_S + 3 * fires * parse_duration(EVERY).total_seconds()
    deadline = time.monotonic() + limit_s
    while True:
        view = await handle.query(ScheduleWorkflow.describe)
        for r in view.state.recent:
            seen.setdefault((r.scheduled, r.outcome), r)
        started = sum(r.outcome == "started" for r in seen.values())
        nxt = view.next_fires[0] if view.next_fires else None
        quiet = nxt is None or nxt - datetime.now(UTC) > QUIET_BEFORE_NEXT
        if started >= fires and not view.state.running and quiet:
            return sorted(seen.values(), key=lambda r: r.scheduled)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{handle.id}: {started} of {fires} fires in {limit_s:.0f}s")
        await asyncio.sleep(POLL_S)


async def settle(client: Client, wf_id: str) -> None:
    """Wait for a workflow (its latest run) to close, whatever its outcome."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.get_workflow_handle(wf_id).result(), SHAPE_TIMEOUT_S)


async def measure(client: Client, queue: str, shape: str, fires: int) -> Cost:
    name = f"cost-{shape}-{uuid.uuid4().hex[:6]}"
    await start_schedules(client, [shape_spec(shape, name)], queue)
    handle = client.get_workflow_handle_for(ScheduleWorkflow.run, schedule_id(name))
    records = await fire_until(handle, fires + 1)  # the first is left out
    await control(handle, ScheduleWorkflow.delete)
    summary = await handle.result()
    cost = Cost(shape)
    start = records[1].scheduled
    window = [r for r in records if r.scheduled >= start]
    cost.fires = sum(r.outcome == "started" for r in window)
    if len(window) != cost.fires:
        others = Counter(r.outcome for r in window if r.outcome != "started")
        cost.notes.append(f"fires in the window that started nothing: {dict(others)}")
    if summary.reason != "deleted":
        cost.notes.append(f"the loop ended with {summary.reason!r}, not 'deleted'")

    runs = await runs_of(client, handle.id)
    cut = delete_cut(runs[-1])
    if cut == len(runs[-1]):
        cost.notes.append("no update event found in the last run: counted to its end")
    # All runs in order, up to the delete; from the first event at or after the second fire's
    # time on (by position: a buffered signal is written later than it arrived).
    ordered = [e for events in runs[:-1] for e in events] + runs[-1][:cut]
    first = next((i for i, e in enumerate(ordered) if event_time(e) >= start), len(ordered))
    kept = ordered[first:]
    cost.runs = sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED for e in kept)
    cost.loop.update(type_name(e) for e in kept)
    cost.activities.update(
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in kept
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    )
    cost.loop["LOCAL_ACTIVITY"] = sum(
        e.marker_recorded_event_attributes.marker_name == LA_MARKER
        for e in kept
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    )

    # Every job the loop started has closed (the first fire's too), before any is read.
    await asyncio.gather(*(settle(client, c) for events in runs for c in children_started(events)))
    pending = children_started(kept)
    cost.jobs = len(pending)
    while pending:  # each job's whole history, and its own children's if it has any
        await asyncio.gather(*(settle(client, c) for c in pending))
        histories = await asyncio.gather(*(runs_of(client, c) for c in pending))
        pending = []
        for child_runs in histories:
            for events in child_runs:
                cost.job.update(type_name(e) for e in events)
                pending.extend(children_started(events))
    cost.loop["TOTAL"] = len(kept)
    cost.job["TOTAL"] = sum(cost.job.values())
    return cost


def num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


COLUMNS: list[tuple[str, Callable[[Cost], float]]] = [
    ("fires", lambda c: c.fires),
    ("jobs/fire", lambda c: c.jobs / c.fires if c.fires else 0.0),
    ("loop events", lambda c: c.per_fire("TOTAL")),
    ("loop WFTs", lambda c: c.per_fire("WORKFLOW_TASK_COMPLETED")),
    ("activities", lambda c: c.per_fire("ACTIVITY_TASK_SCHEDULED")),
    ("local acts", lambda c: c.per_fire("LOCAL_ACTIVITY")),
    ("timers+", lambda c: c.per_fire("TIMER_STARTED")),
    ("timers-", lambda c: c.per_fire("TIMER_CANCELED")),
    ("signals", lambda c: c.per_fire("WORKFLOW_EXECUTION_SIGNALED")),
    ("job events", lambda c: c.per_job("TOTAL")),
    ("job WFTs", lambda c: c.per_job("WORKFLOW_TASK_COMPLETED")),
    ("total/fire", lambda c: (c.loop["TOTAL"] + c.job["TOTAL"]) / c.fires if c.fires else 0.0),
    ("CAN", lambda c: c.runs),
]


def print_table(costs: list[Cost], fires: int, detail: bool) -> None:
    print(
        f"one fire of a schedule loop, per fire (job columns: per job); job echo, every {EVERY}, "
        f"{fires} fires counted after a first one left out"
    )
    widths = [max(len(h), 6) for h, _ in COLUMNS]
    print(
        f"{'shape':<12}" + " ".join(f"{h:>{w}}" for (h, _), w in zip(COLUMNS, widths, strict=True))
    )
    for c in costs:
        cells = [f"{num(get(c)):>{w}}" for (_, get), w in zip(COLUMNS, widths, strict=True)]
        print(f"{c.shape:<12}" + " ".join(cells))
    print(
        "loop WFTs: WorkflowTaskCompleted; activities: ActivityTaskScheduled; local acts: "
        "local-activity markers; timers+/-: TimerStarted/TimerCanceled; signals: "
        "WorkflowExecutionSignaled; total/fire: loop + all its jobs' events; CAN: "
        "continue-as-new in the window"
    )
    for c in costs:
        for note in c.notes:
            print(f"note: {c.shape}: {note}")
    if not detail:
        return
    for c in costs:
        print(f"\n{c.shape}: loop events per fire by type")
        for kind, n in sorted(c.loop.items()):
            if kind != "TOTAL" and n:
                print(f"  {kind:<48} {num(n / c.fires):>6}")
        for kind, n in sorted(c.activities.items()):
            print(f"  {'activity ' + kind:<48} {num(n / c.fires):>6}")
        print(f"{c.shape}: job events per job by type")
        for kind, n in sorted(c.job.items()):
            if kind != "TOTAL" and n:
                print(f"  {kind:<48} {num(n / c.jobs):>6}")


def parse_args() -> argparse.Namespace:
    p = OneLineParser(prog="bench/fire_cost.py", description=__doc__.split("\n\n")[0])

    def fire_count(text: str) -> int:
        if not text.isdigit() or not 1 <= int(text) <= 100:
            raise argparse.ArgumentTypeError(f"{text!r}: use a whole number from 1 to 100")
        return int(text)

    def shape_list(text: str) -> list[str]:
        shapes = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in shapes if s not in SHAPES]
        if bad or not shapes:
            raise argparse.ArgumentTypeError(
                f"{text!r}: use a comma-separated list of {', '.join(SHAPES)}"
            )
        return list(dict.fromkeys(shapes))

    p.add_argument("--fires", type=fire_count, default=5, help="fires counted, 1 to 100")
    p.add_argument("--shapes", type=shape_list, default=list(SHAPES), help=",".join(SHAPES))
    p.add_argument("--detail", action="store_true", help="also every event type, per fire")
    return p.parse_args()


async def main(fires: int, shapes: list[str], detail: bool) -> None:
    costs: list[Cost] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        env = await start_dev_server(Keyring.new_entry(), tmp / "temporal.log")
        try:
            queue = f"bench-fire-cost-{uuid.uuid4().hex[:8]}"
            settings = Settings(data_dir=tmp / "data", temporal_task_queue=queue)
            add_connections(settings)
            async with build_worker(env.client, settings):
                for shape in shapes:
                    costs.append(await measure(env.client, queue, shape, fires))
        finally:
            await env.shutdown()
    print_table(costs, fires, detail)


if __name__ == "__main__":
    args = parse_args()
    code = 0
    try:
        asyncio.run(main(args.fires, args.shapes, args.detail))
    except (RuntimeError, TimeoutError) as exc:  # a loop that did not fire as asked
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except Exception:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # temporalio/sdk-python#300
