"""PostgreSQL fixtures: one real PostgreSQL (15 or newer, the machine's own binaries) per test
session, and a fresh empty database for each test that asks for one.

Register once, in conftest.py: `pytest_plugins = ["tests.postgres"]` (or import the fixtures
into a test module: `from tests.postgres import pg_server, pg_url  # noqa: F401`). Then

- `pg_server` (session): a `TestPostgres`, started on first use: initdb into pytest's temporary
  directory (the cluster directory owned by the PostgreSQL user), `postgres` on 127.0.0.1 at a
  free port, without fsync; stopped by PID at the end of the session. `.create_database()`
  makes another empty database, `.admin_url` is the superuser's URL.
- `pg_url` (function): `postgresql://schedjobs_test:<password>@127.0.0.1:<port>/test_<n>`, a new
  empty database owned by the test role (a login role, not a superuser; scram-sha-256 over TCP),
  dropped after the test (closing any connection the test left open). SQLAlchemy 2.1 takes the
  URL as psycopg 3.

Under pytest-xdist every worker has its own cluster (its own temporary directory and port).
Where PostgreSQL cannot be had the fixture fails with one line saying what to install, never a
skip. No server outlives the session: the fixture stops it at the end (Ctrl-C included), and
the kernel stops it (SIGQUIT, through setpriv's --pdeathsig) if the pytest process dies first.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devtools.pg import LocalPostgres, MissingPrerequisite, PgError, PgServer, start_local

PG_MINIMUM = 15
SUPERUSER = "schedjobs_admin"
TEST_USER = "schedjobs_test"


@dataclass
class TestPostgres:
    """The session's running server: `create_database()` and `drop_database()` as the superuser,
    URLs for the test role."""

    __test__ = False  # not a test class, whatever its name

    local: LocalPostgres
    user_password: str  # the test role's
    user: str = TEST_USER
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    def __repr__(self) -> str:  # no password in a pytest failure
        return f"TestPostgres(port={self.port}, cluster={str(self.server.cluster)!r})"

    @property
    def server(self) -> PgServer:
        return self.local.server

    @property
    def port(self) -> int:
        return self.local.server.port

    @property
    def timings(self) -> dict[str, float]:
        return self.local.timings

    @property
    def admin_url(self) -> str:
        return self.local.admin_url

    def url(self, database: str) -> str:
        """The test role's URL for database."""
        return self.server.url(self.user, self.user_password, database)

    def new_name(self) -> str:
        """test_<n>, a name no database of this session has had."""
        return f"test_{next(self._numbers)}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (test_<n> unless named) owned by the test role: its URL."""
        return self.local.create_database(name or self.new_name(), self.user, self.user_password)

    def drop_database(self, name: str) -> None:
        self.local.drop_database(name)


def _start(base: Path) -> TestPostgres:
    local = start_local(
        base, minimum=PG_MINIMUM, needed_for="the PostgreSQL test fixtures",
        package=f"postgresql-{PG_MINIMUM}", superuser=SUPERUSER,
        settings={"max_connections": "100"},
    )  # fmt: skip
    return TestPostgres(local, secrets.token_urlsafe(18))


class _Shared:
    """One server per process, however many modules import the fixtures (or register the
    plugin): each import is a fixture definition of its own, with its own session cache."""

    running: TestPostgres | None = None
    users = 0


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestPostgres]:
    """The session's PostgreSQL (one per xdist worker), started on first use."""
    if _Shared.running is None:
        problem = None
        try:
            _Shared.running = _start(tmp_path_factory.mktemp("postgres"))
        except (MissingPrerequisite, PgError) as exc:
            problem = str(exc)
        if problem is not None:  # outside the except: one line, no chained traceback
            pytest.fail(f"PostgreSQL: {problem}", pytrace=False)
    running = _Shared.running
    assert running is not None
    _Shared.users += 1
    try:
        yield running
    finally:
        _Shared.users -= 1
        if _Shared.users == 0:
            _Shared.running = None
            running.local.stop()


@pytest.fixture
def pg_url(pg_server: TestPostgres) -> Iterator[str]:
    """A new empty database for this test, owned by the test role; dropped afterwards."""
    name = pg_server.new_name()
    url = pg_server.create_database(name)
    try:
        yield url
    finally:
        pg_server.drop_database(name)
