"""Nothing secret is stored in clear: every history of a run with connections, a Ductape session
job and a schedule is searched raw for the token, the session's values and the API keys; through
the codec server (over HTTP, as the Web UI calls it) the same payloads read again."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.connections import NewConnection
from client import ductape
from client.codec import Keyring
from client.codec_server import CodecServer
from client.settings import Settings
from devtools.mirror import Mirror
from jobs.sessions import issue_token
from tests.conftest import TEST_PAYLOAD_KEYS, TEST_SESSION_SECRET, connection_store
from tests.test_ductape import eventually
from tests.test_schedule_loop import spec, start_loop
from worker import build_worker
from workflows.models import ScheduleSummary

EMAIL, PHONE = "ada.secret@example.com", "+1-555-0100-77"
UI = "http://localhost:8233"


@pytest.fixture
def codec_server() -> Iterator[CodecServer]:
    server = CodecServer(("127.0.0.1", 0), Keyring.parse(TEST_PAYLOAD_KEYS), origins=(UI,))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def payloads_in(node: Any) -> Iterator[dict[str, Any]]:
    """Every Payload of a history in its JSON form ({metadata, data})."""
    if isinstance(node, dict):
        if "data" in node and isinstance(node.get("metadata"), dict):
            yield node
        for value in node.values():
            yield from payloads_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from payloads_in(value)


def _data(payload: dict[str, Any]) -> str:
    return base64.b64decode(payload.get("data", "")).decode(errors="replace")


async def all_closed(client: Client, task_queue: str) -> bool:
    """The loops end after their one fire; their jobs run on until done."""
    query = f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'"
    return (await client.count_workflows(query)).count == 0


async def histories(client: Client, task_queue: str) -> list[str]:
    """Each workflow of the run, exported as `temporal workflow show --output json` would."""
    out = []
    async for wf in client.list_workflows(f"TaskQueue = '{task_queue}'"):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        out.append(history.to_json())
    return out


async def test_no_history_holds_a_secret_in_clear_and_the_codec_server_reads_them(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    codec_server: CodecServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = dev_env.client
    keys = [f"key-{uuid.uuid4().hex}" for _ in range(2)]
    mirror = Mirror(api_keys=keys).start()
    settings = settings.model_copy(update={"dummyjson_base_url": mirror.url})
    store = connection_store(settings)
    for n, key in enumerate(keys):
        store.add(NewConnection(id=f"c{n}", name=f"Conn {n}", api_key=key, scope="beauty"))  # type: ignore[arg-type]
    token = issue_token(
        TEST_SESSION_SECRET, "shop", {"email": EMAIL, "phone": PHONE}, timedelta(hours=1)
    )
    session = {"tag": "shop", "token": token}
    placeholders = {"mail": "$Session{shop}{email}", "call": "$Session{shop}{phone}"}
    tag = f"t{uuid.uuid4().hex[:8]}"
    try:
        async with build_worker(client, settings):
            one_off = await ductape.schedule(
                client,
                {
                    "product_tag": tag,
                    "env": "prd",
                    "event": "echo",
                    "start_at": 0,
                    "input": placeholders,
                    "session": session,
                },
                settings.temporal_task_queue,
            )
            repeating = await ductape.schedule(
                client,
                {
                    "product_tag": tag,
                    "env": "dev",
                    "event": "echo",
                    "input": placeholders,
                    "session": session,
                    "repeat": {"every": "1h", "limit": 1},
                },
                settings.temporal_task_queue,
            )
            syncs = await start_loop(
                dev_env, settings, spec(job="sync-products", every="1h", limit=1)
            )
            result = await client.get_workflow_handle(one_off.workflow_id).result()
            for loop in (repeating.workflow_id, syncs.id):
                summary = await asyncio.wait_for(
                    client.get_workflow_handle(loop, result_type=ScheduleSummary).result(), 60
                )
                assert summary.fires == 1 and summary.failed == 0, summary
            await eventually(lambda: all_closed(client, settings.temporal_task_queue), "jobs ended")
    finally:
        mirror.stop()
    assert result["args"] == {"mail": EMAIL, "call": PHONE}  # the job did get the values
    assert sum(mirror.requests_by_key.values()) > 0 and set(mirror.requests_by_key) == set(keys)

    exported = await histories(client, settings.temporal_task_queue)
    assert len(exported) >= 6  # 2 loops, the one-off, the echo child, 2 syncs (one per connection)
    payloads = [p for text in exported for p in payloads_in(json.loads(text))]
    # Raw: the exported JSON, and each payload's bytes as the server stores them.
    stored = "\n".join([*exported, *(_data(p) for p in payloads)])
    for secret in (token, EMAIL, PHONE, *keys):
        assert secret not in stored
        assert secret not in caplog.text  # the worker's log: ids and counts only
    assert "echo job" in caplog.text

    # What the Web UI does with them: POST the payloads to the codec server, from its origin,
    # exactly as its fetch does (Chromium's request; tests/test_web_ui.py drives the real one).
    async with httpx.AsyncClient(base_url=codec_server.url) as http:
        reply = await http.post(
            "/decode?preserveStorageRefs=true",
            json={"payloads": payloads},
            headers={"Origin": UI, "Content-Type": "application/json", "X-Namespace": "default"},
        )
        assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == UI
        decoded = " ".join(_data(p) for p in reply.json()["payloads"])
        assert token in decoded and EMAIL in decoded and PHONE in decoded
        elsewhere = await http.post(
            "/decode", json={"payloads": payloads[:1]}, headers={"Origin": "http://evil.test"}
        )
        assert (
            elsewhere.status_code == 403 and "access-control-allow-origin" not in elsewhere.headers
        )
