"""Refused means nothing was written: a command that stops with one line has made no secret file
(connections.key, payload.keys) first, also when it got as far as the database or the server."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from tests.conftest import client_address
from tests.test_cli import cli_env, free_port, starter

OTHER_CONNECTIONS_KEY = "b3RoZXItY29ubmVjdGlvbnMta2V5LTMyLWJ5dGVzISE="


def refused(code: int, err: str, expect: str, exit_code: int = 2) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == exit_code and len(lines) == 1 and "Traceback" not in err, (code, err)
    assert expect in lines[0], lines[0]


def bare_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The CLI with its DATA_DIR's own secrets only (none set in the environment)."""
    env = cli_env()
    env.update(DATA_DIR=str(data_dir), **extra)
    for name in ("PAYLOAD_KEYS", "CONNECTIONS_KEY", "CATALOG_DB", "SESSION_SECRET"):
        env.pop(name, None)
    return env


async def test_connections_sealed_under_a_lost_key_are_refused_without_a_new_key(
    tmp_path: Path,
) -> None:
    """A registry whose key file was deleted: reading or adding says which key is missing,
    and no new connections.key (which would not open the stored keys) appears."""
    data = tmp_path / "data"
    env = bare_env(data, TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    add = ["connections", "add", "--id", "acme", "--name", "Acme", "--api-key", "k-1"]
    code, _, err = await starter(*add, env={**env, "CONNECTIONS_KEY": OTHER_CONNECTIONS_KEY})
    assert code == 0, err
    assert not (data / "connections.key").exists()
    for command in (
        ["connections", "list"],
        ["run", "sync-products", "--connection", "acme"],
        ["connections", "add", "--id", "beta", "--name", "Beta", "--api-key", "k-2"],
    ):
        code, _, err = await starter(*command, env=env)
        refused(code, err, "CONNECTIONS_KEY")
        assert not (data / "connections.key").exists(), command


async def fresh_namespace(client: Client) -> str:
    """A namespace of its own, holding no workflow (the session's server holds sealed ones)."""
    name = f"clean-{uuid.uuid4().hex[:8]}"
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=name, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    ns_client = await Client.connect(client_address(client), namespace=name)
    deadline = time.monotonic() + 60
    while True:
        try:
            [wf async for wf in ns_client.list_workflows(limit=1)]
            return name
        except RPCError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_run_refused_at_the_server_makes_no_payload_keys(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Refusals that need the server: no worker for a `run echo` (60 KB of args, under the
    input bound), a namespace with a newline. The keys would be made only once every check
    passed. (A 127 KB `--args` is now refused before it connects: the one input bound.)"""
    namespace = await fresh_namespace(dev_env.client)
    data = tmp_path / "data"
    address = client_address(dev_env.client)
    big = json.dumps({"blob": "x" * 60_000})
    env = bare_env(data, TEMPORAL_ADDRESS=address, TEMPORAL_NAMESPACE=namespace)
    env["TEMPORAL_TASK_QUEUE"] = f"nobody-{uuid.uuid4().hex[:8]}"
    code, _, err = await starter("run", "echo", "--args", big, env=env)
    refused(code, err, "no worker is polling", exit_code=1)
    code, _, err = await starter(
        "run", "echo", env={**env, "TEMPORAL_NAMESPACE": f"{namespace}\nx"}
    )
    refused(code, err, "TEMPORAL_NAMESPACE")
    assert not data.exists()


async def test_a_read_only_command_makes_no_keys_on_a_clean_server(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """`list` on a server with nothing sealed: it answers, and makes no payload.keys."""
    namespace = await fresh_namespace(dev_env.client)
    data = tmp_path / "data"
    env = bare_env(
        data, TEMPORAL_ADDRESS=client_address(dev_env.client), TEMPORAL_NAMESPACE=namespace
    )
    code, out, err = await starter("list", "--file", str(tmp_path / "none.toml"), env=env)
    assert code == 0, err
    assert not (data / "payload.keys").exists()
