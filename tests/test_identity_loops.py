"""One identity, one loop, on the dev server: names that used to collide get their own loops, the
same job submitted again updates its own, and a loop of another identity (or of the hash-less
names before) is never updated in its place: one line, exit 2, nothing changed."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from client import ductape
from client.ductape import IDENTITY_MEMO, DuctapeJob
from client.loops import control, schedule_id, start_schedules
from client.settings import Settings
from scheduling.spec import ScheduleSpec
from tests.conftest import client_address
from tests.test_cli import cli_env, one_line, starter
from tests.test_ductape import runs_of
from worker import build_worker
from workflows.models import ScheduleInput
from workflows.schedule import ScheduleWorkflow

IN_AN_HOUR_MS = int((time.time() + 3600) * 1000)  # nothing fires while a test runs


def repeating(tag: str, **fields: Any) -> dict[str, Any]:
    return {
        "product_tag": tag,
        "env": "prd",
        "event": "echo",
        "start_at": IN_AN_HOUR_MS,
        "repeat": {"every": "1h"},
        **fields,
    }


async def args_of(client: Client, wf_id: str) -> dict[str, Any]:
    view = await client.get_workflow_handle(wf_id).query(ScheduleWorkflow.describe)
    return view.spec.args


async def delete(client: Client, *wf_ids: str) -> None:
    """The dev server is shared by the session: leave no loop running."""
    for wf_id in wf_ids:
        assert await control(client.get_workflow_handle(wf_id), ScheduleWorkflow.delete)


async def test_names_that_used_to_collide_get_a_loop_each(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    client, uid = dev_env.client, uuid.uuid4().hex[:8]
    long_tag = uid + "x" * 92  # 100 characters: the old name cut env and event away
    jobs = [
        repeating(f"Shop!{uid}", input={"who": "shop!"}),
        repeating(f"shop?{uid}", input={"who": "shop?"}),
        repeating(long_tag, input={"who": "prd echo"}),
        repeating(long_tag, env="dev", event="sync-products", input={"dry_run": True}),
    ]
    old_names = [DuctapeJob.model_validate(j).legacy_name for j in jobs]
    assert old_names[0] == old_names[1] and old_names[2] == old_names[3]  # what went wrong
    async with build_worker(client, settings):
        done = [await ductape.schedule(client, j, settings.temporal_task_queue) for j in jobs]
        ids = [d.workflow_id for d in done]
        assert len(set(ids)) == 4, ids
        for job, submitted in zip(jobs, done, strict=True):
            assert "started as" in submitted.message
            handle = client.get_workflow_handle(submitted.workflow_id)
            view = await handle.query(ScheduleWorkflow.describe)
            assert view.spec.job == job["event"]
            assert {k: view.spec.args.get(k) for k in job["input"]} == job["input"]
        await delete(client, *ids)


async def test_the_same_identity_submitted_again_updates_its_own_loop(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    client, tag = dev_env.client, f"Shop!{uuid.uuid4().hex[:8]}"
    async with build_worker(client, settings):
        first = await ductape.schedule(
            client, repeating(tag, input={"who": "ada"}), settings.temporal_task_queue
        )
        again = await ductape.schedule(
            client, repeating(tag, input={"who": "grace"}), settings.temporal_task_queue
        )
        assert again.workflow_id == first.workflow_id
        assert "counts kept" in again.message, again.message
        assert await args_of(client, first.workflow_id) == {"who": "grace"}
        assert await runs_of(client, first.workflow_id) == 1
        await delete(client, first.workflow_id)


async def test_a_loop_of_another_identity_at_the_same_id_is_refused_in_one_line(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """A forged collision: the loop at this job's id says it belongs to another job (as a real
    hash collision would). And a loop at that id that no Ductape job started (a schedules.toml
    entry that happens to carry the name) is refused the same way."""
    client, tag = dev_env.client, f"shop{uuid.uuid4().hex[:8]}"
    mine = DuctapeJob.model_validate(repeating(tag, input={"who": "ada"}))
    forger = {**mine.identity, "product_tag": "someone-else"}
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(repeating(tag, input={"who": "ada"})), encoding="utf-8")
    env = cli_env(settings, client_address(client))
    wf_id = schedule_id(mine.name)
    spec = ScheduleSpec(name=mine.name, job="echo", every="1h", args={"who": "theirs"})
    async with build_worker(client, settings):
        for memo, whose in (
            ({IDENTITY_MEMO: forger}, f"the job {json.dumps(forger)}"),
            (None, "no Ductape job"),
        ):
            await client.start_workflow(
                ScheduleWorkflow.run,
                ScheduleInput(spec=spec),
                id=wf_id,
                task_queue=settings.temporal_task_queue,
                memo=memo,
            )
            code, out, err = await starter("schedule", "--file", str(job_file), env=env)
            assert (code, out) == (2, ""), (out, err)
            line = one_line(err)
            assert line.startswith(f"error: {mine.name}: the loop {wf_id} belongs to {whose}")
            assert "nothing changed" in line
            assert await args_of(client, wf_id) == {"who": "theirs"}  # not updated
            await delete(client, wf_id)
            await client.get_workflow_handle(wf_id).result()


async def test_a_loop_from_before_the_hash_must_be_deleted_before_its_job_moves(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """Upgrading: the job's old loop (hash-less name, no identity) still runs. Starting the new
    loop beside it would fire the job twice, so the submission says how to move instead."""
    client, tag = dev_env.client, f"shop{uuid.uuid4().hex[:8]}"
    job = DuctapeJob.model_validate(repeating(tag))
    old = ScheduleSpec(name=job.legacy_name, job="echo", every="1h")
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(repeating(tag)), encoding="utf-8")
    env = cli_env(settings, client_address(client))
    async with build_worker(client, settings):
        await start_schedules(client, [old], settings.temporal_task_queue)  # as before
        code, out, err = await starter("schedule", "--file", str(job_file), env=env)
        assert (code, out) == (2, ""), (out, err)
        line = one_line(err)
        assert line.startswith(f"error: {job.legacy_name}: a loop started before Ductape names")
        assert f"`starter.py delete {job.legacy_name}`" in line
        assert await ductape._describe(client, schedule_id(job.name)) is None  # none started

        code, out, err = await starter("delete", job.legacy_name, env=env)
        assert code == 0, err
        code, out, err = await starter("schedule", "--file", str(job_file), env=env)
        assert code == 0, err
        assert f"started as {schedule_id(job.name)}" in " ".join(out.split())  # rich wraps
        await delete(client, schedule_id(job.name))
