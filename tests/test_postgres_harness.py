"""The PostgreSQL fixtures (tests/postgres.py): each test gets a working, empty database of its
own, owned by a role that is not a superuser, reachable only with its password."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from devtools import pg
from tests import postgres
from tests.postgres import TEST_USER, TestPostgres

SEEN: set[str] = set()  # the databases earlier tests in this process had


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_has_an_empty_database_of_its_own(pg_url: str, turn: str) -> None:  # noqa: F811
    with psycopg.connect(pg_url) as conn:
        db, user = conn.execute("SELECT current_database(), current_user").fetchone() or ()
        assert user == TEST_USER and db.startswith("test_") and db not in SEEN
        SEEN.add(db)
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert superuser.fetchone() == (False,)
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert tables.fetchone() == (0,)
        # Both turns make the same table: the second would fail if it saw the first's.
        conn.execute("CREATE TABLE harness_marker (turn text PRIMARY KEY)")
        conn.execute("INSERT INTO harness_marker VALUES (%s)", (turn,))
        conn.commit()
        assert conn.execute("SELECT turn FROM harness_marker").fetchall() == [(turn,)]


def test_a_wrong_or_missing_password_is_refused(pg_url: str, pg_server: TestPostgres) -> None:  # noqa: F811
    db = pg_url.rsplit("/", 1)[1]
    for wrong in (
        pg_server.server.url(TEST_USER, "not-the-password", db),
        pg_url.replace(f":{pg_server.user_password}@", "@"),
    ):
        with pytest.raises(psycopg.OperationalError) as err:
            psycopg.connect(wrong, connect_timeout=5).close()
        assert "password" in str(err.value)
    assert pg_server.user_password not in repr(pg_server)


def test_sqlalchemy_takes_the_url_as_psycopg_3(pg_url: str) -> None:  # noqa: F811
    engine = sa.create_engine(pg_url)
    try:
        assert engine.dialect.driver == "psycopg"
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_a_test_database_is_dropped_after_its_test(pg_server: TestPostgres) -> None:  # noqa: F811
    url = pg_server.create_database()
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url):  # left open: the drop closes it
        pg_server.drop_database(name)
    with psycopg.connect(pg_server.admin_url) as admin:
        found = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test_%'")
        assert name not in {row[0] for row in found}


def test_missing_postgres_is_one_line_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pg, "_pg_candidates", lambda: iter(()))
    with pytest.raises(pg.MissingPrerequisite) as err:
        postgres._start(tmp_path)
    message = str(err.value)
    assert "apt-get install postgresql-15" in message and "\n" not in message
