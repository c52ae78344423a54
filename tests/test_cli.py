"""starter.py as a user runs it: a real process against the dev server, worker and mirror."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from client.settings import Settings
from devtools.mirror import Faults, Mirror
from tests.conftest import client_address
from worker import build_worker
from workflows.schedule import ScheduleWorkflow

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(
    settings: Settings | None = None, address: str | None = None, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_PRODUCTS_", "TEMPORAL_"))}
    if settings is not None:
        env.update(
            DUMMYJSON_BASE_URL=settings.dummyjson_base_url,
            CATALOG_DB=str(settings.catalog_path),
            TEMPORAL_TASK_QUEUE=settings.temporal_task_queue,
            CONNECTIONS_KEY=settings.connections_secret(),
        )
    if address is not None:
        env["TEMPORAL_ADDRESS"] = address
    env.update(extra)
    return env


async def starter(
    *args: str, env: dict[str, str], stdin: bytes | None = None
) -> tuple[int, str, str]:
    """Run starter.py without blocking the loop (an in-process worker may be serving it);
    `stdin`: what it reads there (`--args -`)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "starter.py"),
        *args,
        env=env,
        cwd=ROOT,
        stdin=None if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.mark.parametrize("command", [["list"], ["start"], ["run", "sync-products"]])
async def test_no_server_is_one_clear_line(command: list[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    code, out, err = await starter(*command, env=cli_env(address=address))
    assert code == 1
    line = one_line(err)
    assert f"no Temporal server at {address}" in line and "make run" in line


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SYNC_PRODUCTS_BATCH_SIZE", "0"),
        ("SYNC_PRODUCTS_BATCH_SIZE", "lots"),
        ("SYNC_PRODUCTS_MAX_RETRIES", "-1"),
        ("SYNC_PRODUCTS_SCHEDULE", "61 * * * *"),
        ("SYNC_PRODUCTS_DRY_RUN", "maybe"),
        ("DUMMYJSON_BASE_URL", "dummyjson.com"),
    ],
)
async def test_a_bad_setting_stops_with_one_line_naming_it(variable: str, value: str) -> None:
    env = cli_env(address=f"127.0.0.1:{free_port()}")
    env[variable] = value
    code, out, err = await starter("run", "sync-products", env=env)
    assert code == 2
    assert one_line(err).startswith(f"error: {variable}={value!r}")


async def test_no_worker_is_one_clear_line(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    code, out, err = await starter(
        "run", "sync-products", env=cli_env(settings, client_address(dev_env.client))
    )
    assert code == 1
    assert "no worker is polling task queue" in one_line(err)


async def test_run_sync_products_json_and_exit_codes(
    dev_env: WorkflowEnvironment, settings: Settings, mirror: Mirror
) -> None:
    env = cli_env(settings, client_address(dev_env.client))
    async with build_worker(dev_env.client, settings):
        code, out, _ = await starter("run", "sync-products", "--json", "--dry-run", env=env)
        plan = json.loads(out)
        assert code == 0 and plan["dry_run"] and plan["created"] == 194
        assert not settings.catalog_path.exists() or _count(settings) == 0

        code, out, _ = await starter(
            "run", "sync-products", "--json", "--batch-size", "50", env=env
        )
        report = json.loads(out)
        assert code == 0 and report["status"] == "completed"
        assert (report["created"], report["batches"]) == (194, 4)

        mirror.set_faults(Faults(fail_skips=[15]))
        code, out, err = await starter("run", "sync-products", env=env)
        assert code == 1  # partial
        assert "partial" in out and "offset 15" in out
        assert "Traceback" not in err


async def test_run_rejects_a_bad_flag(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    env = cli_env(settings, client_address(dev_env.client))
    code, _, err = await starter("run", "sync-products", "--batch-size", "0", env=env)
    assert code == 2 and "--batch-size" in one_line(err)


def _count(settings: Settings) -> int:
    import sqlite3

    with sqlite3.connect(settings.catalog_path) as conn:
        return int(conn.execute("SELECT count(*) FROM products").fetchone()[0])


def schedules_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "schedules.toml"
    path.write_text(body)
    return path


async def test_start_is_idempotent_and_list_shows_the_schedule(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    path = schedules_file(
        tmp_path,
        f'[[schedule]]\nname = "{name}"\njob = "echo"\ncron = "0 9 * * *"\n'
        'timezone = "Europe/Berlin"\n',
    )
    env = cli_env(settings, client_address(dev_env.client))
    async with build_worker(dev_env.client, settings):
        code, out, err = await starter("start", "--file", str(path), env=env)
        assert code == 0 and f"{name}: started as schedule/{name}" in out
        code, out, _ = await starter("start", "--file", str(path), env=env)
        assert code == 0 and f"{name}: already running" in out
        code, out, _ = await starter("list", "--json", "--file", str(path), env=env)
        (row,) = [r for r in json.loads(out) if r["name"] == name]
        assert row["status"] == "running" and row["fires"] == 0
        assert row["spec"] == "cron 0 9 * * * [Europe/Berlin]"
        assert row["next_fire"].endswith(("T07:00:00Z", "T08:00:00Z"))  # 09:00 Berlin
        await dev_env.client.get_workflow_handle(f"schedule/{name}").terminate("test done")


BAD_ENTRIES = [
    ('cron = "61 * * * *"', "cron: minute: 61 is out of range 0-59"),
    ('cron = "61 0 12 * * *"', "cron: second: 61 is out of range 0-59"),  # six fields
    ('cron = "R * * * *"', "cron: minute: 'R' is not Debian cron syntax"),
    ('cron = "0 0 * * fri-mon"', "cron: day-of-week: 'fri-mon' is a reversed range"),
    ('cron = "* * *"', "cron: '* * *' has 3 fields"),
    ('cron = "@reboot"', "cron: '@reboot'"),
    ('cron = "0 9 * * *"\ntimezone = "Mars/Base"', "timezone: unknown time zone"),
    ("", "set cron or every"),
    ('every = "soon"', "every: 'soon' is not a duration"),
    ('every = "0s"', "every: '0s' must be longer than zero"),
    ("every = -5", "every: -5 must be longer than zero"),
    ("every = 500", "every: 500 is under a second; use 1s or more"),
    ('every = "1h"\nlimit = 0', "limit: Input should be greater than or equal to 1"),
    ('every = "1h"\nlimit = -3', "limit: Input should be greater than or equal to 1"),
    (
        'every = "1h"\nstart_at = 2027-01-02T00:00:00\nend_at = 2027-01-01T00:00:00',
        "end_at must be after start_at",
    ),
    ('every = "1h"\nstart_at = "tomorrow"', "start_at: Input should be a valid datetime"),
    ('cron = "0 0 30 2 *"', "cron: '0 0 30 2 *' can never fire"),
    ('every = "1h"\noverlap = "queue"', "overlap: Input should be 'skip'"),
    ('every = "1h"\njitter = "lots"', "jitter: 'lots' is not a duration"),
    ('every = "1h"\ncatchup_window = "0s"', "catchup_window: '0s' must be longer than zero"),
    ('cron = "@daily"\nafter_completion = true', "after_completion needs every"),
    ('every = "1h"\ncrom = "@daily"', "crom: Extra inputs are not permitted"),
    ('every = "1h"\nargs = "x"', "args: Input should be a valid dictionary"),
    ('every = "1h"\nargs = { sleep_s = -1 }', "args.sleep_s: Input should be greater than"),
]


async def test_bad_specs_are_refused_and_change_nothing(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """Each bad entry: one line naming the field, exit 2, the running loop unchanged, and
    the good entry before it in the same file not started."""
    running = f"run-{uuid.uuid4().hex[:8]}"
    env = cli_env(settings, client_address(dev_env.client))
    good = (
        f'[[schedule]]\nname = "{running}"\njob = "echo"\nevery = "1h"\n'
        f"start_at = {datetime.now(UTC) + timedelta(days=365):%Y-%m-%dT%H:%M:%S}Z\n"
    )
    cases = [(f'job = "echo"\n{e}', m) for e, m in BAD_ENTRIES] + [
        ('job = "nope"\ncron = "@daily"', "job: unknown job 'nope'"),
        ('job = "sync-products"\nargs = { batch_size = 0 }', "args.batch_size"),
    ]
    assert len(cases) >= 20
    async with build_worker(dev_env.client, settings):
        path = schedules_file(tmp_path, good)
        assert (await starter("start", "--file", str(path), env=env))[0] == 0
        handle = dev_env.client.get_workflow_handle(f"schedule/{running}")
        before = await handle.query(ScheduleWorkflow.describe)
        for i, (entry, expected) in enumerate(cases):
            fresh = f"fresh-{uuid.uuid4().hex[:8]}"
            # the running loop's entry changed (every 2h) plus a new good one: all or nothing
            path.write_text(
                good.replace('"1h"', '"2h"')
                + f'\n[[schedule]]\nname = "{fresh}"\njob = "echo"\nevery = "1h"\n'
                + f'\n[[schedule]]\nname = "bad"\n{entry}\n'
            )
            # `update` reads the file as `start` does: a few cases show it refuses the same way
            for command in ("start", "update") if i < 3 else ("start",):
                code, out, err = await starter(command, "--file", str(path), env=env)
                assert code == 2, (entry, out, err)
                line = one_line(err)
                assert "schedule 'bad'" in line and expected in line, (entry, line)
            with pytest.raises(RPCError):
                await dev_env.client.get_workflow_handle(f"schedule/{fresh}").describe()
            assert await handle.query(ScheduleWorkflow.describe) == before, entry
        await handle.terminate("test done")


async def test_control_commands_on_a_running_schedule(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    name = f"ctl-{uuid.uuid4().hex[:8]}"
    entry = f'[[schedule]]\nname = "{name}"\njob = "echo"\nevery = "1d"\n'
    path = schedules_file(tmp_path, entry)
    env = cli_env(settings, client_address(dev_env.client))

    async def describe() -> dict[str, object]:
        code, out, err = await starter("describe", name, "--json", env=env)
        assert code == 0, err
        return json.loads(out)

    async with build_worker(dev_env.client, settings):
        assert (await starter("start", "--file", str(path), env=env))[0] == 0
        code, out, _ = await starter("pause", name, "--note", "db migration", env=env)
        assert code == 0 and "paused: db migration" in out
        state = (await describe())["state"]
        assert state["paused"] and state["note"] == "db migration"  # type: ignore[index]

        code, _, err = await starter("pause", name, env=env)  # refused, nothing changes
        assert code == 2 and "pause refused: already paused" in one_line(err)
        assert (await describe())["state"]["note"] == "db migration"  # type: ignore[index]

        assert (await starter("resume", name, env=env))[0] == 0
        assert (await starter("trigger", name, env=env))[0] == 0
        path.write_text(entry.replace('"1d"', '"12h"'))
        code, out, _ = await starter("update", "--file", str(path), env=env)
        assert code == 0 and f"{name}: updated: every 12h" in out and "counts kept" in out
        view = await describe()
        assert view["spec"]["every"] == "12h"  # type: ignore[index]
        assert not view["state"]["paused"]  # type: ignore[index]
        code, out, _ = await starter("start", "--file", str(path), env=env)
        assert f"{name}: already running as schedule/{name}; unchanged" in out

        code, out, _ = await starter("delete", name, env=env)
        assert code == 0 and "deleted" in out
        result = await dev_env.client.get_workflow_handle(f"schedule/{name}").result()
        assert result["reason"] == "deleted"
        code, _, err = await starter("pause", name, env=env)
        assert code == 2 and "is completed" in one_line(err)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--cron", "30 2 * * *", "--tz", "America/New_York", "--start-at", "2027-03-13"],
            ["2027-03-13T07:30:00Z", "2027-03-14T07:00:00Z", "2027-03-15T06:30:00Z"],
        ),
        (
            ["--every", "90m", "--start-at", "2027-01-01T00:00:00Z"],
            ["2027-01-01T00:00:00Z", "2027-01-01T01:30:00Z", "2027-01-01T03:00:00Z"],
        ),
        # --after without --start-at: strictly after it, even long past (not moved to now)
        (
            ["--cron", "0 9 * * *", "--after", "2020-01-01T09:00:00Z"],
            ["2020-01-02T09:00:00Z", "2020-01-03T09:00:00Z", "2020-01-04T09:00:00Z"],
        ),
        (
            ["--every", "1h", "--after", "2020-01-01T09:00:00Z"],
            ["2020-01-01T10:00:00Z", "2020-01-01T11:00:00Z", "2020-01-01T12:00:00Z"],
        ),
        # Debian's day rule and literal ranges (croniter got both wrong)
        (
            ["--cron", "0 3-3 * * *", "--start-at", "2026-01-01T00:00:00Z"],
            ["2026-01-01T03:00:00Z", "2026-01-02T03:00:00Z", "2026-01-03T03:00:00Z"],
        ),
        (
            ["--cron", "* 4 */7 10-11 1", "--start-at", "2026-01-01T00:00:00Z"],
            ["2027-11-01T04:00:00Z", "2027-11-01T04:01:00Z", "2027-11-01T04:02:00Z"],
        ),
        (
            ["--cron", "0 12 1,*/9 * 0-6", "--start-at", "2026-01-01T00:00:00Z"],
            ["2026-01-01T12:00:00Z", "2026-01-02T12:00:00Z", "2026-01-03T12:00:00Z"],
        ),
    ],
)
async def test_preview_prints_the_loops_fire_times(args: list[str], expected: list[str]) -> None:
    code, out, _ = await starter("preview", *args, "--count", "3", "--json", env=cli_env())
    assert code == 0 and json.loads(out) == expected


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--cron", "61 * * * *"], "--cron"),
        (["--every", "0s"], "--every"),
        (["--cron", "@daily", "--tz", "Mars/Base"], "--tz"),
        (["--every", "5m", "--start-at", "soon"], "--start-at"),
        (["--cron", "0 9 * * *", "--after", "tomorrow"], "--after"),
        (["--cron", "R * * * *"], "--cron: minute: 'R' is not Debian cron syntax"),
        (["--cron", "0 0 * * fri-mon"], "--cron: day-of-week: 'fri-mon' is a reversed range"),
        (["--cron", "0 0 30 2 *"], "--cron: '0 0 30 2 *' can never fire"),  # as `start` says
    ],
)
async def test_preview_rejects_bad_input(args: list[str], flag: str) -> None:
    code, _, err = await starter("preview", *args, env=cli_env())
    assert code == 2 and one_line(err).startswith(f"error: {flag}")


# --- Medusa users at home (#12) ---------------------------------------------------------------


async def _workflows_on(env: WorkflowEnvironment, task_queue: str) -> list[str]:
    return [wf.id async for wf in env.client.list_workflows(f"TaskQueue = '{task_queue}'")]


async def test_a_medusa_jobs_config_carries_over(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """`schedule` and `numberOfExecutions`, as in a Medusa job's `config`, inside a
    `[[schedule]]` table: Medusa's names for `cron` and `limit`."""
    name = f"medusa-{uuid.uuid4().hex[:8]}"
    path = schedules_file(
        tmp_path,
        f'[[schedule]]\nname = "{name}"\njob = "echo"\n'
        'schedule = "0 0 * * *"\nnumberOfExecutions = 3\n',
    )
    env = cli_env(settings, client_address(dev_env.client))
    async with build_worker(dev_env.client, settings):
        code, out, err = await starter("start", "--file", str(path), env=env)
        assert code == 0, err
        assert f"{name}: started as schedule/{name}" in out
        code, out, err = await starter("describe", name, "--json", env=env)
        assert code == 0, err
        spec = json.loads(out)["spec"]
        assert (spec["cron"], spec["limit"]) == ("0 0 * * *", 3)
        assert json.loads(out)["remaining"] == 3
        await dev_env.client.get_workflow_handle(f"schedule/{name}").terminate("test done")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('schedule = "0 0 * * *"\ncron = "0 1 * * *"', "schedule: also set as cron; set one"),
        (
            'cron = "@daily"\nnumberOfExecutions = 3\nlimit = 3',
            "numberOfExecutions: also set as limit; set one",
        ),
        # a bad value is named as written, not by the name it stands for
        ('schedule = "61 * * * *"', "schedule: minute: 61 is out of range 0-59"),
        ('schedule = "0 0 30 2 *"', "schedule: '0 0 30 2 *' can never fire"),
        ('cron = "@daily"\nnumberOfExecutions = 0', "numberOfExecutions: Input should be"),
    ],
)
async def test_medusa_names_refused_in_one_line_and_nothing_starts(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path, entry: str, expected: str
) -> None:
    good = f"good-{uuid.uuid4().hex[:8]}"
    path = schedules_file(
        tmp_path,
        f'[[schedule]]\nname = "{good}"\njob = "echo"\nevery = "1h"\n\n'
        f'[[schedule]]\nname = "bad"\njob = "echo"\n{entry}\n',
    )
    env = cli_env(settings, client_address(dev_env.client))
    async with build_worker(dev_env.client, settings):
        code, out, err = await starter("start", "--file", str(path), env=env)
        assert code == 2, (out, err)
        line = one_line(err)
        assert "schedule 'bad'" in line and expected in line, line
        with pytest.raises(RPCError):
            await dev_env.client.get_workflow_handle(f"schedule/{good}").describe()


async def test_run_any_registered_job_ad_hoc(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    """`run echo`, like `medusa exec`: --args validated against the job's model, its result
    printed, the exit code the job's outcome."""
    env = cli_env(settings, client_address(dev_env.client))
    async with build_worker(dev_env.client, settings):
        code, out, err = await starter(
            "run", "echo", "--args", '{"greeting": "hi"}', "--json", env=env
        )
        assert code == 0, err
        result = json.loads(out)
        assert result["args"]["greeting"] == "hi" and result["attempt"] == 1
        (wf_id,) = await _workflows_on(dev_env, settings.temporal_task_queue)
        assert wf_id.startswith("echo/adhoc-") and wf_id.endswith("Z")
        desc = await dev_env.client.get_workflow_handle(wf_id).describe()
        assert desc.workflow_type == "EchoJobWorkflow"

        code, out, err = await starter("run", "echo", "--args", '{"n": 7}', env=env)
        assert code == 0, err
        assert '"n": 7' in out and "echo: completed" in err

        code, out, err = await starter("run", "echo", "--args", '{"fail": true}', env=env)
        assert code == 1
        line = one_line(err)
        assert "failed" in line and "echo job asked to fail" in line
        assert len(await _workflows_on(dev_env, settings.temporal_task_queue)) == 3


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "echo", "--args", '{"sleep_s": -1}'], "--args: sleep_s: Input should be"),
        (["run", "echo", "--args", "{nope"], "--args: not valid JSON"),
        (["run", "echo", "--args", "[1]"], "--args: pass a JSON object"),
        (["run", "echo", "--batch-size", "5"], "--batch-size: only sync-products takes it"),
        (["run", "echo", "--connection", "acme"], "--connection: only sync-products takes it"),
        (["run", "sync-products", "--args", '{"nope": 1}'], "--args: nope: Extra inputs"),
        (["run", "sync-products", "--args", '{"batch_size": 0}'], "--args: batch_size:"),
        (
            ["run", "sync-products", "--args", '{"batch_size": 5}', "--batch-size", "6"],
            "--batch-size: also set in --args; pass one",
        ),
        (["run", "nope"], "job: unknown job 'nope'; registered jobs: echo, sync-products"),
    ],
)
async def test_run_refuses_bad_args_in_one_line_and_starts_nothing(
    dev_env: WorkflowEnvironment, settings: Settings, argv: list[str], expected: str
) -> None:
    env = cli_env(settings, client_address(dev_env.client))
    async with build_worker(dev_env.client, settings):
        code, out, err = await starter(*argv, env=env)
        assert code == 2, (out, err)
        assert expected in one_line(err)
        assert await _workflows_on(dev_env, settings.temporal_task_queue) == []


def _keyed(mirror: Mirror, settings: Settings) -> None:
    """The source as `make run` serves it: the demo connections, the mirror wanting their keys."""
    from devtools import devstack

    mirror.set_api_keys(devstack.seed_connections(settings))


async def test_the_banners_ad_hoc_sync_works_under_make_run(
    dev_env: WorkflowEnvironment, settings: Settings, mirror: Mirror
) -> None:
    from devtools import devstack

    _keyed(mirror, settings)
    hints = devstack.banner_hints(devstack._banner_connection(settings))
    (line,) = [line for line in hints if "ad hoc sync" in line]
    command = line.split("starter.py", 1)[1].split()
    assert command[:2] == ["run", "sync-products"]
    env = cli_env(settings, client_address(dev_env.client))
    async with build_worker(dev_env.client, settings):
        code, out, err = await starter(*command, "--json", env=env)
    assert code == 0, (out, err)
    assert json.loads(out)["status"] == "completed"


async def test_run_sync_without_a_connection_on_a_keyed_source_says_pass_one(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    mirror: Mirror,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under `make run` (the CLI in another terminal, DUMMYJSON_BASE_URL unset: devstack's note
    in DATA_DIR names the source) and with the source named directly: one line, exit 2, no
    workflow, nothing logged by the worker."""
    from devtools import devstack

    _keyed(mirror, settings)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    devstack.record_source(data_dir, mirror.url, settings.temporal_task_queue)
    under_make_run = cli_env(settings, client_address(dev_env.client), DATA_DIR=str(data_dir))
    del under_make_run["DUMMYJSON_BASE_URL"]
    direct = cli_env(settings, client_address(dev_env.client))
    async with build_worker(dev_env.client, settings):
        for env in (under_make_run, direct):
            code, out, err = await starter("run", "sync-products", env=env)
            assert code == 2, (out, err)
            assert one_line(err) == (
                f"error: --connection: the source at {mirror.url} wants an API key; "
                "pass --connection ID (starter.py connections list)"
            )
    assert await _workflows_on(dev_env, settings.temporal_task_queue) == []
    assert "Traceback" not in caplog.text and "Completing activity as failed" not in caplog.text
