"""What `starter.py` tells a person is true, and it finds the stack `make run` started: a real
CLI process against the dev server, with a worker on the test's queue."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from client.render import fire_outcome, unsure_jobs
from client.settings import Settings
from devtools import devstack
from scheduling.state import RECENT, FireRecord, ScheduleState
from tests.conftest import client_address
from tests.test_cli import cli_env, free_port, one_line, starter
from worker import build_worker

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 60.0
NEXT_YEAR = f"{datetime.now(UTC) + timedelta(days=365):%Y-%m-%dT%H:%M:%S}Z"


def entry(name: str, args: str = "{}", extra: str = "") -> str:
    """A loop that never fires on its own during the test (its first fire a year away)."""
    return (
        f'[[schedule]]\nname = "{name}"\njob = "echo"\nevery = "1d"\nstart_at = {NEXT_YEAR}\n'
        f"args = {args}\n{extra}\n"
    )


async def describe_json(name: str, env: dict[str, str]) -> dict[str, Any]:
    code, out, err = await starter("describe", name, "--json", env=env)
    assert code == 0, err
    view: dict[str, Any] = json.loads(out)
    return view


async def until(name: str, env: dict[str, str], done: Any) -> dict[str, Any]:
    """`describe --json` until `done(state)` holds (the loop has heard of its jobs' ends)."""
    deadline = time.monotonic() + DEADLINE_S
    while not done((view := await describe_json(name, env))["state"]):
        assert time.monotonic() < deadline, view["state"]
        await asyncio.sleep(0.3)
    return view


async def test_list_shows_a_paused_schedule_as_paused_with_its_note(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    name = f"pz-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "schedules.toml"
    path.write_text(entry(name))
    env = cli_env(settings, client_address(dev_env.client))
    async with build_worker(dev_env.client, settings):
        assert (await starter("start", "--file", str(path), env=env))[0] == 0
        code, _, err = await starter("pause", name, "--note", "db migration", env=env)
        assert code == 0, err
        code, out, err = await starter("list", "--json", "--file", str(path), env=env)
        assert code == 0, err
        (row,) = [r for r in json.loads(out) if r["name"] == name]
        assert (row["status"], row["note"]) == ("paused", "db migration")
        # wide: the table also lists the other tests' loops on this server, which can squeeze it
        code, out, _ = await starter("list", "--file", str(path), env={**env, "COLUMNS": "400"})
        (line,) = [line for line in out.splitlines() if name in line]
        assert "paused: db" in line and "running" not in line
        assert (await starter("resume", name, env=env))[0] == 0
        code, out, _ = await starter("list", "--json", "--file", str(path), env=env)
        (row,) = [r for r in json.loads(out) if r["name"] == name]
        assert (row["status"], row["note"]) == ("running", None)
        await dev_env.client.get_workflow_handle(f"schedule/{name}").terminate("test done")


async def test_describe_counts_agree_with_its_lists_and_fires_say_how_their_jobs_ended(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """Three loops triggered once each: a job that completes, one that fails, one that still
    runs. Each fire's outcome says which, and `failed jobs` counts the failed job it lists."""
    tag = uuid.uuid4().hex[:6]
    ok, bad, slow = f"ok-{tag}", f"bad-{tag}", f"slow-{tag}"
    path = tmp_path / "schedules.toml"
    path.write_text(
        entry(ok, extra='timezone = "Europe/Berlin"')
        + entry(bad, "{ fail = true }")
        + entry(slow, "{ sleep_s = 600 }")
    )
    env = cli_env(settings, client_address(dev_env.client))
    async with build_worker(dev_env.client, settings):
        assert (await starter("start", "--file", str(path), env=env))[0] == 0
        for name in (ok, bad, slow):
            code, _, err = await starter("trigger", name, env=env)
            assert code == 0, err
        ended = await until(ok, env, lambda s: s["recent"] and not s["running"])
        assert ended["state"]["recent"][-1]["result"] == "completed"
        failed = await until(bad, env, lambda s: s["job_failures"] == 1)
        assert failed["state"]["recent"][-1]["result"] == "failed"
        running = await until(slow, env, lambda s: s["recent"])
        assert running["state"]["recent"][-1]["result"] == "running"

        code, out, err = await starter("describe", bad, env=env)
        assert code == 0, err
        head = dict(re.findall(r"^(failed jobs|failed fires|running jobs)\s+(\S+)", out, re.M))
        assert head == {"failed jobs": "1", "failed fires": "0", "running jobs": "0"}, out
        assert "failed jobs (the last 1 of 1)" in out and "echo job asked to fail" in out
        assert re.search(r"│ failed\s+│", out) and "started" not in out, out

        code, out, _ = await starter("describe", ok, env=env)
        assert re.search(r"│ completed\s+│", out) and "started" not in out, out
        assert re.search(r"^failed jobs\s+0\s*$", out, re.M), out
        # a schedule in Berlin: its next fires in Berlin time too (CET or CEST by the season)
        assert re.search(r"next fires\s+\S+ \S+Z  \((\S+ )?\d\d:\d\d CES?T\)", out), out

        code, out, _ = await starter("describe", slow, env=env)
        assert re.search(r"│ running\s+│", out), out
        assert re.search(r"^running jobs\s+1\s*$", out, re.M), out
        for name in (ok, bad, slow):
            await dev_env.client.get_workflow_handle(f"schedule/{name}").terminate("test done")
        for wf in [
            w async for w in dev_env.client.list_workflows(f"WorkflowId STARTS_WITH '{slow}/'")
        ]:
            await dev_env.client.get_workflow_handle(wf.id).terminate("test done")


def test_an_older_fire_whose_failure_the_loop_no_longer_lists_is_not_called_completed() -> None:
    """Once the loop keeps only its last RECENT failures, a job that ended and is not among
    them may have failed: it is checked with the server, or shown as `ended`."""
    now = datetime(2027, 1, 1, tzinfo=UTC)
    old = FireRecord(scheduled=now, actual=now, outcome="started", children=["s/1/a", "s/1/b"])
    state = ScheduleState(
        recent=[old],
        job_errors={f"s/{i}/x": "boom" for i in range(2, 2 + RECENT)},
        job_failures=RECENT + 1,
    )
    assert unsure_jobs(state) == ["s/1/a", "s/1/b"]
    assert fire_outcome(old, state) == "ended"
    assert fire_outcome(old, state, {"s/1/a": "completed", "s/1/b": "failed"}) == "failed 1/2"
    assert fire_outcome(old, state, {"s/1/a": "completed", "s/1/b": "completed"}) == "completed"
    state.job_errors = {}
    assert unsure_jobs(state) == [] and fire_outcome(old, state) == "completed"


async def test_the_cli_finds_the_stack_make_run_started_and_prints_ui_urls(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """`make run` on other ports leaves DATA_DIR/devstack.json: with TEMPORAL_ADDRESS unset the
    CLI talks to that server, says so, and links each run to that stack's Web UI."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    address, ui = client_address(dev_env.client), f"http://localhost:{free_port()}"
    devstack.record_source(
        data_dir,
        settings.dummyjson_base_url,
        settings.temporal_task_queue,
        temporal_address=address,
        namespace="default",
        ui_url=ui,
    )
    env = cli_env(settings, None, DATA_DIR=str(data_dir))
    assert "TEMPORAL_ADDRESS" not in env
    async with build_worker(dev_env.client, settings):
        code, out, err = await starter("list", "--json", env=env)
        assert code == 0, err
        assert one_line(err) == f"using Temporal at {address}, which `make run` started"
        json.loads(out)  # stdout is the JSON alone

        code, out, err = await starter("run", "echo", "--args", '{"n": 1}', env=env)
        assert code == 0, err
        (wf_id,) = [
            w.id
            async for w in dev_env.client.list_workflows(
                f"TaskQueue = '{settings.temporal_task_queue}'"
            )
        ]
        assert f"see it at {ui}/namespaces/default/workflows/{wf_id.replace('/', '%2F')}" in err

        code, out, err = await starter("run", "sync-products", env=env)
        assert code == 0, err
        assert f"see it at {ui}/namespaces/default/workflows/sync-products%2Fadhoc-" in err
        # the report: every count, its title on one line, nothing wider than the terminal
        assert "sync-products: completed" in out.splitlines()[0], out
        rows = dict(re.findall(r"│ ([a-z ]+?)\s+│\s+(.+?) │", out))
        for key in ("fetched", "total", "created", "updated", "unchanged", "removed", "failed"):
            assert key in rows, (key, out)
        assert rows["batches"] == "13 of 13" and rows["created"] == "194", rows
        assert max(len(line) for line in out.splitlines()) <= 80

    # TEMPORAL_ADDRESS wins over the note; a note left by a stack that is gone is not used
    code, _, err = await starter("list", env={**env, "TEMPORAL_ADDRESS": address})
    assert code == 0 and "using Temporal" not in err
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    note = json.loads((data_dir / "devstack.json").read_text())
    (data_dir / "devstack.json").write_text(json.dumps({**note, "pid": int(gone.stdout)}))
    code, _, err = await starter("list", env=env)
    assert "using Temporal" not in err and f"at {address}" not in err


async def test_no_server_names_the_address_tried_and_how_to_point_at_another() -> None:
    address = f"127.0.0.1:{free_port()}"
    code, _, err = await starter("list", env=cli_env(address=address))
    assert code == 1
    assert one_line(err) == (
        f"error: no Temporal server at {address} (namespace 'default'): start one with "
        "`make run`, or point at yours with TEMPORAL_ADDRESS=host:port (or TEMPORAL_PROFILE)"
    )


async def test_durations_and_local_times_read_as_a_person_writes_them(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """A Ductape `every` in milliseconds lists as `every 1h`; `preview` in a zone shows the
    wall-clock time beside UTC (CET, then CEST after the spring change)."""
    job = {
        "product_tag": uuid.uuid4().hex[:8],
        "env": "prd",
        "event": "echo",
        "start_at": int((time.time() + 365 * 86400) * 1000),
        "repeat": {"every": 3600000},
    }
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    env = cli_env(settings, client_address(dev_env.client))
    async with build_worker(dev_env.client, settings):
        code, out, err = await starter("schedule", "--file", str(job_file), env=env)
        assert code == 0, err
        assert "(every 1h [UTC])" in out, out
        wf_id = out.split(" as ")[1].split()[0]
        code, out, err = await starter("list", "--json", env=env)
        (row,) = [r for r in json.loads(out) if f"schedule/{r['name']}" == wf_id]
        assert row["spec"] == "every 1h [UTC]"
        await dev_env.client.get_workflow_handle(wf_id).terminate("test done")

    args = ["--cron", "30 8 * * 1-5", "--tz", "Europe/Berlin", "--after", "2027-03-26T00:00:00Z"]
    code, out, _ = await starter("preview", *args, "--count", "2", env=cli_env())
    assert code == 0
    assert out.splitlines() == [
        "2027-03-26T07:30:00Z  (08:30 CET)",
        "2027-03-29T06:30:00Z  (08:30 CEST)",
    ]
    code, out, _ = await starter("preview", *args, "--count", "2", "--json", env=cli_env())
    assert json.loads(out) == ["2027-03-26T07:30:00Z", "2027-03-29T06:30:00Z"]  # unchanged


def test_usage_names_the_command_the_user_typed() -> None:
    bin_dir = Path(sys.executable).parent
    for command, prog in (
        ([str(bin_dir / "schedjobs"), "--help"], "schedjobs"),
        ([sys.executable, "starter.py", "--help"], "starter.py"),
        ([str(bin_dir / "schedjobs-dev"), "--help"], "schedjobs-dev"),
    ):
        run = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ}
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith(f"usage: {prog} "), run.stdout
    run = subprocess.run(
        [str(bin_dir / "schedjobs"), "nope"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "see `schedjobs --help`" in run.stderr
