"""The `temporal` CLI with our application, as a person uses the two side by side: it reads our
encrypted histories through the codec server (`--codec-endpoint`, `--codec-auth`), and a profile
it writes (`temporal config set`) is what our CLI and worker connect with (envconfig)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from client.connect import worker_polling
from client.settings import Settings
from tests.conftest import (
    ROOT,
    TEST_CONNECTIONS_KEY,
    TEST_SESSION_SECRET,
    client_address,
    database_env,
)
from tests.dev_stack import free_ports

TEMPORAL = Path(sys.executable).parent / "temporal"
NOTE = "quarterly numbers for ada.secret@example.com"  # what the history holds, encrypted
STARTUP_S = 60.0


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def without_temporal_settings(**extra: str) -> dict[str, str]:
    """This environment minus every TEMPORAL_* a developer's shell (or conftest) may hold."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    env.update(extra)
    return env


@pytest.fixture(params=[None, "codec-t0ken"], ids=["no token", "CODEC_AUTH_TOKEN"])
def codec_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str | None]]:
    """`python -m client.codec_server` as a person starts it (the suite's PAYLOAD_KEYS), with
    or without CODEC_AUTH_TOKEN: its URL and token."""
    token: str | None = request.param
    (port,) = free_ports(1)
    env = dict(os.environ)
    env.pop("CODEC_AUTH_TOKEN", None)
    if token:
        env["CODEC_AUTH_TOKEN"] = token
    proc = subprocess.Popen(
        [sys.executable, "-m", "client.codec_server", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()  # printed once it listens
        assert banner.startswith("codec server on "), banner + proc.stdout.read()
        yield f"http://127.0.0.1:{port}", token
    finally:
        proc.terminate()  # SIGTERM: a shell's background job may ignore SIGINT
        proc.wait(timeout=30)


def started_input(history: dict[str, Any]) -> dict[str, Any]:
    """The first payload of the workflow's input, as `workflow show -o json` prints it."""
    (started,) = [e for e in history["events"] if e["eventType"].endswith("EXECUTION_STARTED")]
    payload: dict[str, Any] = started["workflowExecutionStartedEventAttributes"]["input"][
        "payloads"
    ][0]
    return payload


def b64(value: str) -> str:
    return base64.b64decode(value).decode(errors="replace")


async def test_workflow_show_decodes_through_the_codec_server(
    dev_env: WorkflowEnvironment, codec_server: tuple[str, str | None]
) -> None:
    url, token = codec_server
    workflow_id = f"cli-codec-{uuid.uuid4().hex[:8]}"
    handle = await dev_env.client.start_workflow(  # no worker: its start event is enough
        "EchoWorkflow", {"note": NOTE}, id=workflow_id, task_queue=f"cli-{uuid.uuid4().hex[:8]}"
    )
    try:
        show = ["workflow", "show", "-w", workflow_id, "-o", "json"]
        show += ["--address", client_address(dev_env.client)]
        raw = await asyncio.to_thread(run, [str(TEMPORAL), *show])
        assert raw.returncode == 0, raw.stderr
        sealed = started_input(json.loads(raw.stdout))
        assert b64(sealed["metadata"]["encoding"]) == "binary/encrypted"
        assert NOTE not in b64(sealed["data"])

        auth = ["--codec-auth", f"Bearer {token}"] if token else []
        decoded = await asyncio.to_thread(
            run, [str(TEMPORAL), *show, "--codec-endpoint", url, *auth]
        )
        assert decoded.returncode == 0, decoded.stderr
        payload = started_input(json.loads(decoded.stdout))
        assert b64(payload["metadata"]["encoding"]) == "json/plain"
        assert json.loads(b64(payload["data"])) == {"note": NOTE}
    finally:
        await handle.terminate()


async def test_a_profile_from_temporal_config_set_is_read_by_our_cli_and_worker(
    dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    config = tmp_path / "temporal.toml"
    address = client_address(dev_env.client)
    profiles = {"dev": (address, "default"), "elsewhere": (address, "no-such-namespace")}
    for profile, (addr, namespace) in profiles.items():
        for prop, value in (("address", addr), ("namespace", namespace)):
            done = await asyncio.to_thread(
                run,
                [str(TEMPORAL), "config", "set", "--profile", profile, "--prop", prop]
                + ["--value", value],
                without_temporal_settings(TEMPORAL_CONFIG_FILE=str(config)),
            )
            assert done.returncode == 0, done.stderr
    assert f'address = "{address}"' in config.read_text()  # the CLI's own TOML

    def our_cli(profile: str) -> subprocess.CompletedProcess[str]:
        env = without_temporal_settings(TEMPORAL_CONFIG_FILE=str(config), TEMPORAL_PROFILE=profile)
        return run([sys.executable, "starter.py", "list", "--json"], env)

    listed = await asyncio.to_thread(our_cli, "dev")
    assert listed.returncode == 0, listed.stderr
    assert {row["name"] for row in json.loads(listed.stdout)} >= {"sync-products"}
    # The namespace comes from the profile too: one the server lacks is named, not guessed.
    elsewhere = await asyncio.to_thread(our_cli, "elsewhere")
    assert elsewhere.returncode != 0 and "'no-such-namespace'" in elsewhere.stderr
    assert "Traceback" not in elsewhere.stderr

    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")],
            env=without_temporal_settings(
                TEMPORAL_CONFIG_FILE=str(config),
                TEMPORAL_PROFILE="dev",
                TEMPORAL_TASK_QUEUE=settings.temporal_task_queue,
                DUMMYJSON_BASE_URL=settings.dummyjson_base_url,
                CONNECTIONS_KEY=TEST_CONNECTIONS_KEY,
                SESSION_SECRET=TEST_SESSION_SECRET,
                DATA_DIR=str(tmp_path / "data"),
                **database_env(settings),
            ),
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + STARTUP_S
        while not await worker_polling(dev_env.client, settings.temporal_task_queue):
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.2)
    finally:
        worker.terminate()  # the worker's graceful stop, as on SIGINT
        await asyncio.to_thread(worker.wait, 60)
    assert f"worker on {address}" in log.read_text()
