"""The worker's log as a person reads it and a collector parses it: `python worker.py` (a real
process on the dev server) runs a sync that completes, one the source refuses, a job whose session
is rejected, and a workflow with a bug; its stderr is read back."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from client import ductape
from client.settings import Settings
from devtools.mirror import Mirror
from jobs.sync_products import SyncProductsInput
from tests.conftest import worker_process
from tests.test_ductape import one_off, shop_token
from tests.worker_cli import run_worker
from workflows.echo import EchoJobWorkflow
from workflows.sync_products import SyncProductsWorkflow

DEADLINE_S = 60.0
REFUSED = "HTTP 401: the source refused the API key"


class Run:
    """The ids of the jobs one worker ran, and its log."""

    def __init__(self, tag: str) -> None:
        self.ok = f"sync-products/logs-ok-{tag}"
        self.refused = f"sync-products/logs-refused-{tag}"
        self.session = ""  # the cache id ductape gives the one-off
        self.bug = f"echo/logs-bug-{tag}"
        self.bug_run = ""
        self.log = ""


async def wait_for_log(log: Path, *needles: str) -> str:
    """The log once it holds every needle (the worker writes it as it goes)."""
    deadline = time.monotonic() + DEADLINE_S
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if all(n in text for n in needles):
            return text
        await asyncio.sleep(0.1)
    missing = [n for n in needles if n not in text]
    raise AssertionError(f"the worker never logged {missing}; its log:\n{text}")


async def run_jobs(
    env: WorkflowEnvironment, settings: Settings, mirror: Mirror, tmp_path: Path, fmt: str
) -> Run:
    run = Run(uuid.uuid4().hex[:8])
    log = tmp_path / f"worker-{fmt}.log"
    proc = worker_process(env, settings, tmp_path, log=log, LOG_FORMAT=fmt)
    client, queue = env.client, settings.temporal_task_queue
    timeout = timedelta(seconds=DEADLINE_S)
    try:
        report = await client.execute_workflow(
            SyncProductsWorkflow.run,
            SyncProductsInput(batch_size=100),
            id=run.ok,
            task_queue=queue,
            execution_timeout=timeout,
        )
        assert report.status == "completed", report
        # The source wants a key the job does not have: a failure no retry fixes.
        mirror.set_api_keys(["sk_the_source_wants_this"])
        report = await client.execute_workflow(
            SyncProductsWorkflow.run,
            SyncProductsInput(batch_size=100),
            id=run.refused,
            task_queue=queue,
            execution_timeout=timeout,
        )
        assert report.status == "failed" and REFUSED in (report.error or ""), report
        mirror.set_api_keys([])
        # A session token that expired an hour ago: rejected before the job body runs.
        expired = shop_token(now=datetime.now(UTC) - timedelta(hours=2))
        job = one_off(
            input={"user": "$Session{shop}{user_id}"}, session={"tag": "shop", "token": expired}
        )
        done = await ductape.schedule(client, job, queue)
        run.session = done.workflow_id
        with pytest.raises(WorkflowFailureError):
            await client.get_workflow_handle(done.workflow_id).result()
        # A bug in a workflow (a float that is not one): its task fails, the SDK core says so.
        bug = await client.start_workflow(
            EchoJobWorkflow.run, {"sleep_s": "soon"}, id=run.bug, task_queue=queue
        )
        run.bug_run = bug.result_run_id or ""
        needles = ["Failing workflow task", "session:"]
        run.log = await wait_for_log(log, *needles, run.ok, run.refused, run.session)
        await bug.terminate()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    run.log = log.read_text()
    return run


def entries(text: str) -> list[str]:
    """The log's entries: a line, with the traceback lines that follow it."""
    out: list[str] = []
    for line in text.splitlines():
        if out and (line.startswith((" ", "Traceback", "\t")) or not line[:4].isdigit()):
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out


async def test_text_log_one_line_per_outcome_with_its_reason_and_no_expected_tracebacks(
    dev_env: WorkflowEnvironment, settings: Settings, mirror: Mirror, tmp_path: Path
) -> None:
    run = await run_jobs(dev_env, settings, mirror, tmp_path, "text")
    logged = entries(run.log)

    def about(workflow_id: str, text: str) -> list[str]:
        return [e for e in logged if f"[{workflow_id}] {text}" in e]

    # One line per outcome, with its counts or its reason; the id in front, no info dict after.
    (ok,) = about(run.ok, "sync-products ")
    assert ok.endswith(
        f" INFO [{run.ok}] sync-products completed: "
        "fetched 194, created 194, updated 0, unchanged 0, removed 0, failed 0"
    ), ok
    (refused,) = about(run.refused, "sync-products ")
    assert f" ERROR [{run.refused}] sync-products failed: " in refused, refused
    assert REFUSED in refused, refused
    assert refused.endswith(
        "(fetched 0, created 0, updated 0, unchanged 0, removed 0, failed 0)"
    ), refused
    (session,) = about(run.session, "echo ")
    assert f" ERROR [{run.session}] echo failed: SessionRejected: session: " in session, session
    assert "expired" in session, session
    # The activity that refused the session: one line with its reason, not a traceback.
    (activity,) = [e for e in logged if f"[{run.session} resolve_session]" in e]
    assert "Session_expired" in activity and "(not retried)" in activity, activity
    assert "({'" not in run.log, run.log
    # A traceback is kept for the bug only; and the SDK core's own line is in the same stream.
    traced = [e for e in logged if "Traceback" in e]
    assert traced and all(f"[{run.bug}] Failed activation" in e for e in traced), traced
    assert all("ValueError: could not convert string to float" in e for e in traced), traced
    core = [e for e in logged if "[sdk core] Failing workflow task" in e]
    assert core and f"run_id={run.bug_run}" in core[0], core
    assert all("\n" not in e for e in logged if e not in traced), "one line per entry"


async def test_json_log_is_one_object_per_line_with_the_workflow_fields(
    dev_env: WorkflowEnvironment, settings: Settings, mirror: Mirror, tmp_path: Path
) -> None:
    run = await run_jobs(dev_env, settings, mirror, tmp_path, "json")
    lines = [line for line in run.log.splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines]  # every line, tracebacks included
    for doc in docs:
        assert {"time", "level", "logger", "message"} <= doc.keys(), doc
        assert doc["time"].endswith("Z"), doc

    def of(workflow_id: str, start: str) -> list[dict[str, Any]]:
        return [
            d
            for d in docs
            if d.get("workflow_id") == workflow_id and d["message"].startswith(start)
        ]

    (ok,) = of(run.ok, "sync-products ")
    assert ok["message"] == (
        "sync-products completed: "
        "fetched 194, created 194, updated 0, unchanged 0, removed 0, failed 0"
    )
    assert ok["level"] == "INFO" and ok["logger"] == "temporalio.workflow"
    assert ok["workflow_type"] == "SyncProductsWorkflow" and ok["attempt"] == 1 and ok["run_id"]
    (refused,) = of(run.refused, "sync-products failed: ")
    assert refused["level"] == "ERROR" and REFUSED in refused["message"], refused
    (session,) = of(run.session, "echo failed: SessionRejected: session: ")
    (activity,) = [d for d in docs if d.get("activity_type") == "resolve_session"]
    assert activity["workflow_id"] == run.session and activity["attempt"] == 1, activity
    assert activity["error"].startswith("Session_expired: ") and "traceback" not in activity
    assert all("({'" not in d["message"] for d in docs)
    # The bug keeps its traceback, in a field of its one line.
    (bug, *_) = [d for d in docs if d.get("workflow_id") == run.bug and "traceback" in d]
    assert "ValueError: could not convert string to float" in bug["traceback"], bug
    assert [d for d in docs if "traceback" in d and d.get("workflow_id") != run.bug] == []
    # The SDK core's line, with its fields as JSON.
    core = [d for d in docs if d["logger"] == "temporalio.core"]
    assert core and core[0]["message"] == "Failing workflow task", core
    assert core[0]["level"] == "WARNING" and core[0]["core"]["run_id"] == run.bug_run, core


@pytest.mark.parametrize("value", ["xml", "jsonl", "text json"])
def test_a_bad_log_format_is_one_line_naming_it(value: str, tmp_path: Path) -> None:
    proc = run_worker(tmp_path / "data", LOG_FORMAT=value)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: LOG_FORMAT={value!r}: Input should be 'text' or 'json'; "
        "set it to text (for people) or json (one object per line)"
    ], proc.stderr
