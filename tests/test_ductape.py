"""Ductape-style jobs end to end: sessions, the cache tag, repeat mapping, bad job files and
`session create`, against the real dev server with the worker in-process and starter.py run as a
user runs it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from temporalio.api.enums.v1 import EventType, RetryState
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from client import ductape
from client.loops import control
from client.settings import Settings
from jobs.registry import cache_id
from jobs.sessions import issue_token, verify_token
from tests.conftest import TEST_SESSION_SECRET, client_address
from tests.test_cli import cli_env, one_line, starter
from worker import build_worker
from workflows.models import ScheduleSummary
from workflows.schedule import ScheduleWorkflow

DEADLINE_S = 30.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `check` until it holds or the deadline passes (visibility is eventually consistent)."""
    deadline = time.monotonic() + DEADLINE_S
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def runs_of(client: Client, wf_id: str) -> int:
    """How many runs the server lists under one workflow id, once visibility has seen it."""
    query = f'WorkflowId = "{wf_id}"'

    async def listed() -> bool:
        return await count(client, query) >= 1

    await eventually(listed, f"{wf_id} in visibility")
    return await count(client, query)


def unique_tag() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def one_off(**fields: Any) -> dict[str, Any]:
    return {"product_tag": unique_tag(), "env": "prd", "event": "echo", "start_at": 0, **fields}


def shop_token(tag: str = "shop", *, now: datetime | None = None) -> str:
    data = {"user_id": 7, "name": "Ada"}
    return issue_token(TEST_SESSION_SECRET, tag, data, timedelta(hours=1), now=now)


def tampered(token: str) -> str:
    """One character of the payload segment changed (still valid base64url, so only the
    signature check can catch it)."""
    header, payload, signature = token.split(".")
    i = len(payload) // 2
    flipped = "B" if payload[i] == "A" else "A"
    return ".".join([header, payload[:i] + flipped + payload[i + 1 :], signature])


def _event_types(events: Any) -> list[int]:
    return [e.event_type for e in events]


# --- 1. sessions through ductape.schedule() ---------------------------------------------


async def test_session_fills_placeholders_before_the_job_runs(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    client = dev_env.client
    job = one_off(
        input={"user": "$Session{shop}{user_id}", "greeting": "hi $Session{shop}{name}", "n": 1},
        session={"tag": "shop", "token": shop_token()},
    )
    async with build_worker(client, settings):
        done = await ductape.schedule(client, job, settings.temporal_task_queue)
        assert done.kind == "one-off" and done.started and not done.cached
        result = await client.get_workflow_handle(done.workflow_id).result()
    # a whole-string placeholder keeps the session value's type; an embedded one becomes text
    assert result["args"] == {"user": 7, "greeting": "hi Ada", "n": 1}


TWO_HOURS_AGO = datetime.now(UTC) - timedelta(hours=2)


@pytest.mark.parametrize(
    ("case", "job_input", "session", "reason"),
    [
        (
            "tampered",
            {"user": "$Session{shop}{user_id}"},
            {"tag": "shop", "token": tampered(shop_token())},
            "signature is invalid",
        ),
        (
            "expired",
            {"user": "$Session{shop}{user_id}"},
            {"tag": "shop", "token": shop_token(now=TWO_HOURS_AGO)},
            "expired at",
        ),
        (
            "wrong_tag",
            {"user": "$Session{shop}{user_id}"},
            {"tag": "shop", "token": shop_token("other")},
            "asks for session 'shop' but the token is for 'other'",
        ),
        (
            "missing_key",
            {"email": "$Session{shop}{email}"},
            {"tag": "shop", "token": shop_token()},
            "has no key 'email'",
        ),
        ("no_session", {"user": "$Session{shop}{user_id}"}, None, "the job has no session"),
    ],
)
async def test_a_bad_session_fails_the_job_once_before_its_body_runs(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    case: str,
    job_input: dict[str, Any],
    session: dict[str, str] | None,
    reason: str,
) -> None:
    client = dev_env.client
    job = one_off(input=job_input, retries=3, **({"session": session} if session else {}))
    async with build_worker(client, settings):
        done = await ductape.schedule(client, job, settings.temporal_task_queue)
        handle = client.get_workflow_handle(done.workflow_id)
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()

    cause = caught.value.cause
    assert isinstance(cause, ApplicationError), cause
    assert cause.type == "SessionRejected" and cause.non_retryable
    assert cause.message.startswith("session: ") and reason in cause.message, (case, cause.message)

    # the body never returned, and `retries: 3` did not run it again: one run, attempt 1
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.FAILED
    events = (await handle.fetch_history()).events
    types = _event_types(events)
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED not in types
    assert types.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED) == 1
    started = events[0].workflow_execution_started_event_attributes
    assert started.attempt == 1 and started.first_execution_run_id == desc.run_id
    (failed,) = [e for e in events if e.HasField("workflow_execution_failed_event_attributes")]
    attrs = failed.workflow_execution_failed_event_attributes
    assert attrs.retry_state == RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE
    assert not attrs.new_execution_run_id
    assert await runs_of(client, done.workflow_id) == 1


# --- 3. the cache tag through the CLI ------------------------------------------------------


def _result_json(out: str) -> dict[str, Any]:
    """The result `--wait` prints after the one-line message."""
    start = out.index("\n{") + 1
    parsed: dict[str, Any] = json.loads(out[start:])
    return parsed


async def test_cache_runs_an_identical_cli_request_once(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    client = dev_env.client
    env = cli_env(settings, client_address(client))
    tag = f"greet-{uuid.uuid4().hex[:8]}"  # the dev server is shared by the whole session
    job_file = tmp_path / "job.json"

    def write(job_input: dict[str, Any]) -> str:
        job = one_off(product_tag="shop", cache=tag, cache_ttl="1h", input=job_input)
        job_file.write_text(json.dumps(job), encoding="utf-8")
        return cache_id(tag, "echo", job_input)

    async with build_worker(client, settings):
        wf_id = write({"who": "ada"})
        code, first_out, err = await starter("schedule", "--file", str(job_file), "--wait", env=env)
        assert code == 0, err
        assert wf_id in first_out and "not run again" not in first_out
        first = _result_json(first_out)
        assert first["args"] == {"who": "ada"} and first["ran_at"]

        code, second_out, err = await starter(
            "schedule", "--file", str(job_file), "--wait", env=env
        )
        assert code == 0, err
        assert "not run again" in second_out and wf_id in second_out
        assert _result_json(second_out) == first  # the same result: same ran_at

        assert await runs_of(client, wf_id) == 1

        other_id = write({"who": "grace"})
        assert other_id != wf_id
        code, third_out, err = await starter("schedule", "--file", str(job_file), "--wait", env=env)
        assert code == 0, err
        assert other_id in third_out and "not run again" not in third_out
        assert _result_json(third_out)["args"] == {"who": "grace"}


# --- 4. repeat maps onto a schedule loop ---------------------------------------------------


async def test_repeat_becomes_a_schedule_loop(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    client = dev_env.client
    start_ms = int((time.time() + 3600) * 1000)
    start = datetime.fromtimestamp(start_ms // 1000, UTC) + timedelta(milliseconds=start_ms % 1000)
    job = {
        "product_tag": unique_tag(),
        "env": "prd",
        "app": "Shop App",
        "event": "echo",
        "input": {"who": "ada"},
        "retries": 2,
        "start_at": start_ms,
        "session": {"tag": "shop", "token": shop_token()},
        "repeat": {"every": 3600000, "limit": 2, "tz": "Europe/Berlin"},
    }
    name = ductape.DuctapeJob.model_validate(job).name
    assert name.startswith(f"{job['product_tag']}-prd-shop-app-echo-")  # then the identity's hash
    async with build_worker(client, settings):
        done = await ductape.schedule(client, job, settings.temporal_task_queue)
        assert done.kind == "schedule" and done.workflow_id == f"schedule/{name}"
        handle = client.get_workflow_handle(done.workflow_id)
        view = await handle.query(ScheduleWorkflow.describe)
        spec = view.spec
        assert spec.name == name and spec.job == "echo"
        assert spec.every == 3600000 and spec.cron is None and spec.limit == 2
        assert spec.timezone == "Europe/Berlin"
        assert spec.start_at == start and spec.end_at is None
        assert spec.expansion == "once" and spec.retries == 2
        assert spec.args == {"who": "ada"}
        assert view.next_fires[0] == start and view.remaining == 2

        job_file = tmp_path / "job.json"
        job_file.write_text(json.dumps(job), encoding="utf-8")
        env = cli_env(settings, client_address(client))
        code, out, err = await starter("schedule", "--file", str(job_file), env=env)
        assert code == 0, err
        assert "unchanged" in out, out
        assert await runs_of(client, done.workflow_id) == 1  # updated in place, not a 2nd loop
        code, out, err = await starter("describe", name, "--json", env=env)
        assert code == 0, err
        assert json.loads(out)["spec"]["session"] == {"tag": "shop", "token": "(hidden)"}
        assert job["session"]["token"] not in out  # type: ignore[index]  # a credential

        assert await control(handle, ScheduleWorkflow.delete) == "deleted"
        summary = await asyncio.wait_for(
            client.get_workflow_handle(done.workflow_id, result_type=ScheduleSummary).result(),
            DEADLINE_S,
        )
    assert summary.fires == 0


async def test_a_repeating_job_fills_its_session_at_every_fire(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    """The schedule path: the loop hands the session to each job (memo), not the filled input."""
    client = dev_env.client
    job = {
        "product_tag": unique_tag(),
        "env": "prd",
        "event": "echo",
        "input": {"user": "$Session{shop}{user_id}"},
        "session": {"tag": "shop", "token": shop_token()},
        "repeat": {"every": "1h", "limit": 1},
    }
    async with build_worker(client, settings):
        done = await ductape.schedule(client, job, settings.temporal_task_queue)
        loop = client.get_workflow_handle(done.workflow_id, result_type=ScheduleSummary)
        summary = await asyncio.wait_for(loop.result(), DEADLINE_S)
        view = await loop.query(ScheduleWorkflow.describe)
        (child,) = view.state.recent[-1].children
        result = await client.get_workflow_handle(child).result()
    assert summary.fires == 1 and summary.failed == 0
    assert result["args"] == {"user": 7}
    assert view.spec.args == {"user": "$Session{shop}{user_id}"}  # the loop keeps the raw input


async def test_a_session_value_the_job_cannot_take_fails_the_job_once(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    """`tenant` is text; a whole-string placeholder for an integer cannot fill it."""
    client = dev_env.client
    job = one_off(
        event="sync-products",
        retries=2,
        input={"tenant": "$Session{shop}{user_id}"},
        session={"tag": "shop", "token": shop_token()},
    )
    async with build_worker(client, settings):
        done = await ductape.schedule(client, job, settings.temporal_task_queue)
        with pytest.raises(WorkflowFailureError) as caught:
            await asyncio.wait_for(client.get_workflow_handle(done.workflow_id).result(), 20)
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError) and cause.non_retryable, cause
    assert cause.message.startswith("session: the filled input is not valid: tenant: ")
    assert await runs_of(client, done.workflow_id) == 1


# --- 4b. retries and start_at ----------------------------------------------------------------


async def test_retries_run_a_failing_job_again_and_wait_reports_the_outcome(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    """`retries: 2`: a job failing twice succeeds on its 3rd attempt; `retries: 1` is not
    enough, and `--wait` says so in one line (exit 1)."""
    env = cli_env(settings, client_address(dev_env.client))
    job_file = tmp_path / "job.json"
    async with build_worker(dev_env.client, settings):
        job_file.write_text(json.dumps(one_off(retries=2, input={"fail_attempts": 2})))
        code, out, err = await starter("schedule", "--file", str(job_file), "--wait", env=env)
        assert code == 0, err
        assert _result_json(out)["attempt"] == 3

        job_file.write_text(json.dumps(one_off(retries=1, input={"fail_attempts": 2})))
        code, out, err = await starter("schedule", "--file", str(job_file), "--wait", env=env)
    assert code == 1, (out, err)
    assert "failed: echo job asked to fail its first 2 attempts (this was attempt 2)" in one_line(
        err
    )


async def test_a_one_off_in_unix_seconds_runs_at_start_at_not_before(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    client = dev_env.client
    start_at = int(time.time()) + 3  # seconds: below 10^11
    async with build_worker(client, settings):
        done = await ductape.schedule(
            client, one_off(start_at=start_at, input={"who": "ada"}), settings.temporal_task_queue
        )
        assert done.message.endswith(
            f"runs at {datetime.fromtimestamp(start_at, UTC):%Y-%m-%d %H:%M:%SZ} as "
            f"{done.workflow_id}"
        )
        result = await asyncio.wait_for(client.get_workflow_handle(done.workflow_id).result(), 20)
    assert datetime.fromisoformat(result["ran_at"]).timestamp() >= start_at


# --- 5. bad job files: one line naming the field, nothing started ---------------------------

GOOD = {"product_tag": "shop", "env": "prd", "event": "echo", "input": {"who": "ada"}}


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ({**GOOD, "event": "nope"}, "event"),
        ({k: v for k, v in GOOD.items() if k != "product_tag"}, "product_tag"),
        ({**GOOD, "repeat": {"limit": 2}}, "repeat"),
        ({**GOOD, "repeat": {"every": "1h", "tz": "Mars/Olympus"}}, "repeat.tz"),
        ({**GOOD, "retries": -1}, "retries"),
        ({**GOOD, "event": "sync-products", "input": {"batch_size": 0}}, "input.batch_size"),
        ({**GOOD, "bogus": 1}, "bogus"),
        ({**GOOD, "start_at": 1e20}, "start_at"),
        ({**GOOD, "start_at": True}, "start_at"),
        ({**GOOD, "repeat": {"cron": "61 * * * *"}}, "repeat.cron"),
        ({**GOOD, "repeat": {"every": 60}}, "repeat.every"),  # milliseconds: under a second
        ({**GOOD, "repeat": {"every": "1h", "endDate": "soon"}}, "repeat.endDate"),
        (
            {**GOOD, "start_at": 1800000000, "repeat": {"every": "1h", "endDate": 1700000000}},
            "repeat",
        ),
        ("{not json", "not valid JSON"),
        (None, "no such job file"),
    ],
    ids=[
        "unknown-event",
        "missing-product-tag",
        "repeat-without-timing",
        "bad-tz",
        "negative-retries",
        "bad-sync-input",
        "extra-field",
        "start-at-overflow",
        "start-at-bool",
        "repeat-bad-cron",
        "repeat-every-under-a-second",
        "repeat-bad-end-date",
        "repeat-ends-before-it-starts",
        "not-json",
        "missing-file",
    ],
)
async def test_a_bad_job_file_is_one_line_and_starts_nothing(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    tmp_path: Path,
    content: dict[str, Any] | str | None,
    names: str,
) -> None:
    client = dev_env.client
    queue = f'TaskQueue = "{settings.temporal_task_queue}"'
    before = await count(client, queue)
    job_file = tmp_path / "job.json"
    if content is not None:
        text = content if isinstance(content, str) else json.dumps(content)
        job_file.write_text(text, encoding="utf-8")

    code, out, err = await starter(
        "schedule", "--file", str(job_file), "--wait", env=cli_env(settings, client_address(client))
    )

    assert code == 2, (out, err)
    # a field is named as `field: reason`; a file problem as `path: what is wrong`
    expected = f"error: {job_file}: {names}" + (": " if isinstance(content, dict) else "")
    assert one_line(err).startswith(expected), err
    assert out == ""
    assert await count(client, queue) == before == 0


# --- 6. `starter.py session create` --------------------------------------------------------


async def test_session_create_prints_a_token_the_worker_accepts() -> None:
    env = cli_env(SESSION_SECRET=TEST_SESSION_SECRET)
    code, out, err = await starter(
        "session", "create", "--tag", "shop", "--data", '{"user_id": 7}', "--ttl", "30m", env=env
    )
    assert code == 0, err
    token = one_line(out).strip()
    assert verify_token(TEST_SESSION_SECRET, token, tag="shop") == {"user_id": 7}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 30 * 60


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--data", "{user_id: 7}"),
        ("--data", "[7]"),
        ("--ttl", "0"),
        ("--ttl", "soon"),
        ("--ttl", "stage"),  # a bad duration that happens to contain the word "tag"
    ],
)
async def test_session_create_rejects_a_bad_flag(flag: str, value: str) -> None:
    args = {"--tag": "shop", "--data": '{"user_id": 7}', "--ttl": "30m", flag: value}
    code, out, err = await starter(
        "session",
        "create",
        *[part for pair in args.items() for part in pair],
        env=cli_env(SESSION_SECRET=TEST_SESSION_SECRET),
    )
    assert code == 2, (out, err)
    assert one_line(err).startswith(f"error: {flag}: "), err
    assert out == ""
