"""Bounded and honest against a real server: a huge spec is echoed on one line, `--args` takes a
file or stdin (for what a command line cannot hold), and `schedule --wait` exits as `run` does."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from client.settings import Settings
from devtools.mirror import Faults, Mirror
from tests.conftest import client_address
from tests.test_cli import cli_env, starter
from worker import build_worker


async def test_a_100_kb_cron_is_echoed_on_one_short_line(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    name = f"long-{uuid.uuid4().hex[:8]}"
    minutes = ",".join(str(i % 60) for i in range(35_000))  # valid, and about 100 KB
    path = tmp_path / "s.toml"
    path.write_text(f'[[schedule]]\nname = "{name}"\njob = "echo"\ncron = "{minutes} * * * *"\n')
    env = cli_env(settings, client_address(dev_env.client))
    try:
        code, out, err = await starter("start", "--file", str(path), env=env)
        assert code == 0, err
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1 and len(lines[0]) <= 200, (len(lines), lines[:3])
        assert lines[0].startswith(f"{name}: started as schedule/{name} (cron 0,1,2,")
        assert "characters)" in lines[0] and "…" in lines[0]
    finally:
        await dev_env.client.get_workflow_handle(f"schedule/{name}").terminate("test done")


async def test_args_come_from_a_file_or_stdin_up_to_the_one_bound(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """60 KB of args: too long for some command lines, within a job's 64 KB input."""
    big = {"note": "x" * 60_000, "n": 7}
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps(big))
    env = cli_env(settings, client_address(dev_env.client))
    async with build_worker(dev_env.client, settings):
        code, out, err = await starter("run", "echo", "--args", f"@{args_file}", "--json", env=env)
        assert code == 0, err
        assert json.loads(out)["args"] == big
        code, out, err = await starter(
            "run", "echo", "--args", "-", "--json", env=env, stdin=json.dumps({"n": 8}).encode()
        )
        assert code == 0, err
        assert '"n": 8' in out


async def test_schedule_wait_exits_1_when_the_sync_report_did_not_complete(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path, mirror: Mirror
) -> None:
    """As `run sync-products` does: a report that is not `completed` is exit 1."""
    mirror.set_faults(Faults(fail_skips=[45]))  # one batch of four fails every time
    job = {
        "product_tag": "shop",
        "env": "prd",
        "event": "sync-products",
        "input": {"batch_size": 15, "max_retries": 0, "delete_missing": False},
    }
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    env = cli_env(settings, client_address(dev_env.client))
    async with build_worker(dev_env.client, settings):
        code, out, err = await starter("schedule", "--file", str(job_file), "--wait", env=env)
    report = json.loads(out[out.index("{") :])
    assert report["status"] == "partial" and report["failed"] == 15, out
    assert code == 1, (out, err)
