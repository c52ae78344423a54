"""The application database on SQLite and on a real PostgreSQL: the schema made by migrations
(also over a file from before them), concurrent writers that cannot duplicate or mix rows, and
one line naming APP_DATABASE_URL when the database cannot be used."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import inspect

from activities.catalog import BatchKey, SqliteCatalog
from activities.connections import ConnectionExists, ConnectionStore, NewConnection
from activities.db import Database, DatabaseError
from activities.expansion import PAGE_SIZE, ExpansionActivities
from tests.conftest import ROOT, TEST_CONNECTIONS_KEY, rows_of
from tests.test_connections import _product

T = TypeVar("T")
RACERS = 8


def race(n: int, fn: Callable[[int], T]) -> list[T | BaseException]:
    """`fn(i)` in n threads released at once (each on its own pooled connection)."""
    gate = threading.Barrier(n)

    def one(i: int) -> T | BaseException:
        gate.wait()
        try:
            return fn(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def connection(cid: str, name: str = "shop") -> NewConnection:
    return NewConnection.model_validate({"id": cid, "name": name, "api_key": "sk_race_1"})


def test_adding_one_id_at_once_keeps_exactly_one_row(app_db: Database) -> None:
    store = ConnectionStore(app_db, TEST_CONNECTIONS_KEY)
    results = race(RACERS, lambda i: store.add(connection("shop", name=f"writer {i}")))
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and all(isinstance(e, ConnectionExists) for e in lost), results
    ((name,),) = rows_of(app_db, "SELECT name FROM connections")
    assert name == won[0].name  # the row is the winner's, whole


def test_replacing_at_once_keeps_the_first_created_at(app_db: Database) -> None:
    store = ConnectionStore(app_db, TEST_CONNECTIONS_KEY)
    first = store.add(connection("shop"))
    results = race(RACERS, lambda i: store.add(connection("shop", f"v{i}"), replace=True))
    assert all(not isinstance(r, BaseException) for r in results), results
    assert {r.created_at for r in results if not isinstance(r, BaseException)} == {first.created_at}
    assert len(rows_of(app_db, "SELECT id FROM connections")) == 1


def test_two_expansions_of_one_fire_store_the_first_writers_pages_only(
    app_db: Database,
) -> None:
    """Two workers expanding the same fire (a retry beside a slow first attempt): both get the
    same page count, and every stored page is one writer's, never a mix."""
    acts = ExpansionActivities(ConnectionStore(app_db, TEST_CONNECTIONS_KEY))
    size = PAGE_SIZE + 10  # two pages

    def expand(i: int) -> int:
        texts = [json.dumps({"key": f"k{n}", "args": {"writer": i}}) for n in range(size)]
        return acts._store("fire-1", texts)

    assert race(RACERS, expand) == [2] * RACERS
    writers = {
        item["args"]["writer"]
        for (inputs,) in rows_of(app_db, "SELECT inputs FROM expansion_pages ORDER BY page")
        for item in json.loads(inputs)
    }
    assert len(writers) == 1
    assert rows_of(app_db, "SELECT count(*) FROM expansion_pages") == [(2,)]


def test_two_attempts_of_one_batch_at_once_write_it_once(app_db: Database) -> None:
    catalog = SqliteCatalog(app_db)
    key = BatchKey(sync_run="sync-products/x/run", offset=0)
    batch = [_product(n) for n in range(5)]

    def attempt(i: int) -> str:
        return catalog.sync_batch_once(
            key, batch, outcome=lambda plan: f"attempt {i}: {len(plan.create)} created"
        )

    outcomes = race(4, attempt)
    assert len(set(map(str, outcomes))) == 1 and str(outcomes[0]).endswith("5 created"), outcomes
    assert rows_of(app_db, "SELECT count(*) FROM products") == [(5,)]
    assert rows_of(app_db, "SELECT count(*) FROM product_variants") == [(5,)]


def _open(url: str) -> list[str]:
    return sorted(inspect(Database(url).engine).get_table_names())


def test_processes_starting_together_migrate_once(app_db: Database) -> None:
    """Replicas starting at once: each process migrates on first use, under the lock."""
    url = app_db.url.render_as_string(hide_password=False)
    with multiprocessing.get_context("fork").Pool(3) as pool:
        tables = pool.map(_open, [url] * 3)
    assert tables[0] == tables[1] == tables[2]
    assert {"alembic_version", "connections", "expansion_pages", "products"} <= set(tables[0])
    assert rows_of(app_db, "SELECT version_num FROM alembic_version") == [("0001",)]


def test_a_file_from_before_migrations_is_kept_and_stamped(tmp_path: Path) -> None:
    """The tables the old code made with CREATE TABLE IF NOT EXISTS, one row in them."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """CREATE TABLE connections (id TEXT PRIMARY KEY, api_code TEXT NOT NULL,
               name TEXT NOT NULL, api_key TEXT NOT NULL, scope TEXT,
               active INTEGER NOT NULL CHECK (active IN (0, 1)), created_at TEXT NOT NULL,
               updated_at TEXT NOT NULL);
               INSERT INTO connections VALUES ('old', 'dummyjson', 'Old shop', 'sk_old_plain',
               NULL, 1, '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00');"""
        )
    store = ConnectionStore(path, TEST_CONNECTIONS_KEY)
    assert store.require("old").api_key.get_secret_value() == "sk_old_plain"  # sealed, readable
    assert rows_of(path, "SELECT version_num FROM alembic_version") == [("0001",)]
    assert {"expansion_pages", "products", "batch_outcomes"} <= set(
        inspect(store.db.engine).get_table_names()
    )


# --- a database that cannot be used: one line -----------------------------------------------


def pg_variant(pg_url: str, **change: Any) -> str:
    url = Database(pg_url).url.set(**change)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.parametrize("case", ["refused", "password", "no database"])
def test_an_unusable_postgresql_is_one_line_naming_the_setting(pg_url: str, case: str) -> None:
    free = 1  # nothing listens on port 1 of 127.0.0.1
    url = {
        "refused": pg_variant(pg_url, port=free),
        "password": pg_variant(pg_url, password="wrong-pass-7c1d"),
        "no database": pg_variant(pg_url, database="missing_db"),
    }[case]
    with pytest.raises(DatabaseError) as caught:
        ConnectionStore(Database(url), TEST_CONNECTIONS_KEY)
    line = str(caught.value)
    assert "\n" not in line and line.startswith("APP_DATABASE_URL='postgresql://")
    password = Database(pg_url).url.password
    assert "***" in line and str(password) not in line and "wrong-pass-7c1d" not in line
    assert {
        "refused": "no PostgreSQL answers at 127.0.0.1:1",
        "password": "refused user",
        "no database": "no database 'missing_db'",
    }[case] in line


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_cli_and_the_worker_name_an_unreachable_database_in_one_line(
    pg_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATALOG_DB", "TEMPORAL_"))}
    env |= {
        "APP_DATABASE_URL": pg_variant(pg_url, port=1),
        "CONNECTIONS_KEY": TEST_CONNECTIONS_KEY,
        "DATA_DIR": str(tmp_path / "data"),
        "TEMPORAL_ADDRESS": "127.0.0.1:1",  # the worker checks its database first
    }
    for args in (["starter.py", "connections", "list"], ["worker.py"]):
        done = run(args, env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1, (args, done.stderr)
        assert lines[0].startswith("error: APP_DATABASE_URL='postgresql://"), lines
        assert "no PostgreSQL answers at 127.0.0.1:1" in lines[0]
        assert str(Database(pg_url).url.password) not in done.stderr + done.stdout
    assert not (tmp_path / "data" / "catalog.db").exists()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("mysql://u:p@h/db", "mysql is not supported"),
        ("postgresql://u:secret-9f@h:99999/db", "port 99999 is not 1 to 65535"),
        ("postgresql://u:secret-9f@/db", "needs a host and a database"),
        ("sqlite://", "names no file"),
        ("not a url", "is not a URL"),
    ],
)
def test_a_malformed_url_is_refused_before_anything_starts(
    value: str, says: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOG_DB")}
    env |= {"APP_DATABASE_URL": value, "DATA_DIR": str(tmp_path / "data")}
    done = run(["starter.py", "connections", "list"], env)
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 2 and line.startswith("error: APP_DATABASE_URL=") and says in line
    assert "secret-9f" not in line
    assert not (tmp_path / "data").exists()


def test_both_settings_at_once_are_refused(tmp_path: Path) -> None:
    env = dict(os.environ) | {
        "APP_DATABASE_URL": f"sqlite:///{tmp_path}/a.db",
        "CATALOG_DB": str(tmp_path / "b.db"),
    }
    done = run(["starter.py", "connections", "list"], env)
    assert done.returncode == 2 and "unset CATALOG_DB" in done.stderr
    assert not list(tmp_path.iterdir())
