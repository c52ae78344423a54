"""Two key rings against one loop and one job: a client whose payload keys are not the stack's
gets one line naming PAYLOAD_KEYS from every command, and can neither wedge the loop (no failed
workflow task) nor leave a job retrying for ever. A client with no keys at all makes none when
the server already holds encrypted payloads."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from client.codec import Keyring, KeyringError, data_converter
from client.settings import Settings
from client.stack import StackNote, write_note
from tests.conftest import TEST_PAYLOAD_KEYS, client_address
from tests.test_cli import cli_env, starter
from worker import build_worker
from workflows.models import JobFinished, PauseRequest
from workflows.schedule import ScheduleWorkflow

OTHER_KEYS = "other1:" + "b3RoZXItcGF5bG9hZC1rZXktMzItYnl0ZXMhISEhISE="  # not the stack's
LOOP = "keys-loop"
SCHEDULES = f"""
[[schedule]]
name = "{LOOP}"
job = "echo"
every = "1h"
"""
BARE_LOOP = "keys-bare"
JOB = {
    "product_tag": "keys",
    "env": "prd",
    "event": "echo",
    "input": {"n": 1},
    "repeat": {"every": 3_600_000},
}


async def failed_tasks(client: Client, workflow_id: str) -> int:
    events = [e async for e in client.get_workflow_handle(workflow_id).fetch_history_events()]
    return sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in events)


@pytest.fixture(autouse=True)
async def end_loops(dev_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[None]:
    """Terminate what a test left running on its queue: loops on the shared server widen
    other tests' `list` tables."""
    yield
    client = dev_env.client
    query = f"TaskQueue = '{settings.temporal_task_queue}' AND ExecutionStatus = 'Running'"
    async for wf in client.list_workflows(query):
        await client.get_workflow_handle(wf.id).terminate("test over")


def refused_for_keys(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    assert "PAYLOAD_KEYS" in lines[0] and "DATA_DIR" in lines[0], lines[0]
    return lines[0]


@pytest.mark.timeout(300)
async def test_a_client_with_other_keys_is_refused_and_wedges_nothing(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    assert Keyring.parse(OTHER_KEYS).current == "other1"
    address = client_address(dev_env.client)
    good = cli_env(settings, address, DATA_DIR=str(tmp_path / "good"))
    wrong = cli_env(settings, address, DATA_DIR=str(tmp_path / "wrong"), PAYLOAD_KEYS=OTHER_KEYS)
    (tmp_path / "s.toml").write_text(SCHEDULES)
    (tmp_path / "job.json").write_text(json.dumps(JOB))
    loop_id = f"schedule/{LOOP}"
    async with build_worker(dev_env.client, settings):
        code, _, err = await starter("start", "--file", str(tmp_path / "s.toml"), env=good)
        assert code == 0, err
        code, _, err = await starter("schedule", "--file", str(tmp_path / "job.json"), env=good)
        assert code == 0, err

        commands = [
            ["list", "--file", str(tmp_path / "s.toml")],
            ["describe", LOOP],
            ["start", "--file", str(tmp_path / "s.toml")],
            ["update", "--file", str(tmp_path / "s.toml")],
            ["schedule", "--file", str(tmp_path / "job.json")],
            ["pause", LOOP],
            ["trigger", LOOP],
            ["resume", LOOP],
            ["delete", LOOP],
        ]
        for command in commands:
            code, _, err = await starter(*command, env=wrong)
            refused_for_keys(code, err)

        # The loop is as it was: running, not paused, never failed a workflow task.
        handle = dev_env.client.get_workflow_handle(loop_id)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        view = await handle.query(ScheduleWorkflow.describe)
        assert not view.state.paused and view.state.triggered == 0
        assert await failed_tasks(dev_env.client, loop_id) == 0

        # A job started with other keys fails once, naming the key; the CLI does not hang.
        began = time.monotonic()
        code, _, err = await starter("run", "echo", "--args", '{"n": 2}', env=wrong)
        refused_for_keys(code, err)
        assert time.monotonic() - began < 60
    jobs = [
        wf
        async for wf in dev_env.client.list_workflows(
            f"TaskQueue = '{settings.temporal_task_queue}' AND WorkflowId STARTS_WITH 'echo/adhoc-'"
        )
    ]
    assert len(jobs) == 1
    with pytest.raises(WorkflowFailureError) as failed:
        await dev_env.client.get_workflow_handle(jobs[0].id).result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "PayloadKeyMissing"
    assert "'other1'" in str(cause) and cause.non_retryable
    assert await failed_tasks(dev_env.client, jobs[0].id) == 0


@pytest.mark.parametrize(
    "command", [["list"], ["describe", BARE_LOOP], ["run", "echo"], ["pause", BARE_LOOP]]
)
async def test_no_keys_here_are_not_made_against_a_server_with_sealed_payloads(
    command: list[str], dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """A CLI run where there are no keys (another directory) says so, and makes none, when the
    server already holds payloads encrypted by the stack."""
    address = client_address(dev_env.client)
    async with build_worker(dev_env.client, settings):
        good = cli_env(settings, address, DATA_DIR=str(tmp_path / "good"))
        (tmp_path / "s.toml").write_text(SCHEDULES.replace(LOOP, BARE_LOOP))
        code, _, err = await starter("start", "--file", str(tmp_path / "s.toml"), env=good)
        assert code == 0 or "no worker is polling its task queue" in err, err  # started before
        bare = cli_env(settings, address, DATA_DIR=str(tmp_path / "elsewhere" / "data"))
        del bare["PAYLOAD_KEYS"]
        code, _, err = await starter(*command, env=bare)
    line = refused_for_keys(code, err)
    assert "holds payloads encrypted with key 'test1'" in line
    assert not (tmp_path / "elsewhere").exists()


async def test_an_update_or_signal_sealed_with_other_keys_leaves_the_loop_healthy(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """Past the CLI's own check (any client may send one): the worker rejects the update and
    drops the signal it cannot open, without failing a workflow task of the loop."""
    address = client_address(dev_env.client)
    good = cli_env(settings, address, DATA_DIR=str(tmp_path / "good"))
    (tmp_path / "s.toml").write_text(SCHEDULES.replace(LOOP, "keys-direct"))
    other = await Client.connect(address, data_converter=data_converter(Keyring.parse(OTHER_KEYS)))
    loop_id = "schedule/keys-direct"
    async with build_worker(dev_env.client, settings):
        code, _, err = await starter("start", "--file", str(tmp_path / "s.toml"), env=good)
        assert code == 0, err
        sealed = other.get_workflow_handle(loop_id)
        with pytest.raises((WorkflowUpdateFailedError, KeyringError)):
            await sealed.execute_update(ScheduleWorkflow.pause, PauseRequest(note="x"))
        done = JobFinished(child_id="somebody/else", outcome="failed", error="x")
        await sealed.signal(ScheduleWorkflow.job_finished, done)
        handle = dev_env.client.get_workflow_handle(loop_id)
        view = await handle.query(ScheduleWorkflow.describe)  # answered after the signal
        assert not view.state.paused
        # Still answering controls sent with the right keys.
        assert "paused" in await handle.execute_update(ScheduleWorkflow.pause, PauseRequest())
    assert await failed_tasks(dev_env.client, loop_id) == 0


async def test_the_cli_uses_the_keys_of_the_stack_it_found(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """`make run`'s note names its DATA_DIR: a CLI that finds the stack through the note reads
    the payloads with that stack's keys, and makes none of its own."""
    stack_dir = tmp_path / "stack"
    stack_dir.mkdir()
    (stack_dir / "payload.keys").write_text(TEST_PAYLOAD_KEYS)
    here = tmp_path / "here"
    here.mkdir()
    write_note(
        here,
        StackNote(
            pid=os.getpid(),  # alive: a running stack
            source=settings.dummyjson_base_url,
            task_queue=settings.temporal_task_queue,
            temporal_address=client_address(dev_env.client),
            namespace=dev_env.client.namespace,
            data_dir=str(stack_dir),
        ),
    )
    env = cli_env(settings, None, DATA_DIR=str(here))
    del env["PAYLOAD_KEYS"]
    (tmp_path / "s.toml").write_text(SCHEDULES.replace(LOOP, "keys-note"))
    async with build_worker(dev_env.client, settings):
        code, _, err = await starter("start", "--file", str(tmp_path / "s.toml"), env=env)
        assert code == 0, err
        code, out, err = await starter("describe", "keys-note", "--json", env=env)
        assert code == 0, err
    assert json.loads(out)["spec"]["name"] == "keys-note"
    assert not (here / "payload.keys").exists()
