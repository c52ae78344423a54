"""The application database: the connection registry, expansion pages, batch outcomes and the
built-in catalog, in one SQLite file (the default, under DATA_DIR) or one PostgreSQL database
(APP_DATABASE_URL), which every worker and CLI on every machine shares.

SQLAlchemy Core rather than SQL text on two drivers: one engine per process is the pool, its
dialects write the two statements that differ (the upserts, and RETURNING), and Alembic migrates
from the same package. The first use of a database in a process migrates it to the newest
schema, under a lock, so replicas starting together do it once.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, exc, make_url, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL

from client.errors import UserError

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x5C4ED  # pg_advisory_xact_lock key: one migrating process at a time
SQLITE_BUSY_S = 30  # a writer waits this long for another's transaction
SQLITE_FIX = "set it to a SQLite file in a directory you can write"
logging.getLogger("alembic").setLevel(logging.WARNING)  # not lines per process in a worker's log


class DatabaseError(UserError):
    """The database cannot be reached or used as configured; one line naming the setting."""

    exit_code = 1


def database_url(value: str | Path) -> URL:
    """A URL (`sqlite:///file`, `postgresql://…`) or a SQLite file path, as SQLAlchemy's URL;
    `postgresql` and `postgres` go to psycopg 3 (SQLAlchemy has no `postgres` dialect)."""
    if isinstance(value, Path) or "://" not in value:
        return URL.create("sqlite", database=str(value))
    url = make_url(value)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    return url


class Database:
    """One application database; `setting` is what the user set it with, for error lines."""

    def __init__(self, url: str | Path | URL, setting: str = "APP_DATABASE_URL") -> None:
        self.url = url if isinstance(url, URL) else database_url(url)
        self.setting = setting
        self.dialect = self.url.get_backend_name()
        self._key = self.url.render_as_string(hide_password=False)  # which engine is ours
        if self.dialect not in ("sqlite", "postgresql"):
            raise DatabaseError(
                f"{setting}={self.shown!r}: {self.dialect} is not supported; "
                "use sqlite:///path/to/file.db or postgresql://user:password@host:5432/db"
            )

    @property
    def shown(self) -> str:
        """The URL as it may be printed: the password hidden."""
        if self.dialect == "sqlite":
            return self.url.database or ""
        url = self.url.set(drivername="postgresql") if self.dialect == "postgresql" else self.url
        return url.render_as_string(hide_password=True)

    @property
    def path(self) -> Path:
        """The SQLite file (SQLite only)."""
        assert self.dialect == "sqlite" and self.url.database
        return Path(self.url.database)

    @property
    def engine(self) -> Engine:
        return _engine(self)

    def prepare(self) -> Database:
        """Connect and migrate now, so a database that cannot be used stops a process at its
        start (one line), not at its first job."""
        try:
            self.engine.connect().close()
        except exc.DBAPIError as error:
            raise self.error(error) from None
        return self

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Connection]:
        """One short transaction on a pooled connection. A SQLite write takes the write lock at
        BEGIN (IMMEDIATE), so a read-then-write sees the rows it then writes; PostgreSQL's
        concurrent writers are made safe by the statements (ON CONFLICT, RETURNING)."""
        try:
            conn = self.engine.connect()
        except exc.DBAPIError as error:
            raise self.error(error) from None
        with conn:
            try:
                with conn.execution_options(app_write=write).begin():
                    yield conn
            except exc.IntegrityError:  # a race lost to another writer: the caller's to retry
                raise
            except exc.DBAPIError as error:  # locked, lost, full, not a database: one line
                raise self.error(error) from None

    def insert(self, table: Table) -> Any:
        """INSERT with this dialect's ON CONFLICT clauses (both write them the same way)."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def error(self, error: BaseException) -> DatabaseError:
        """A driver's error as one line: the setting, the URL without its password, the fix."""
        orig = getattr(error, "orig", None) or error
        first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        low = str(orig).lower()
        if self.dialect == "sqlite":
            return DatabaseError(f"{self.setting}={self.shown!r}: {first}; {SQLITE_FIX}")
        where = f"{self.url.host or 'localhost'}:{self.url.port or 5432}"
        if "password authentication failed" in low or "no password supplied" in low:
            why = f"{where} refused user {self.url.username!r}; fix the user and password"
        elif "does not exist" in low and "database" in low:
            why = f"no database {self.url.database!r} on {where}; create it or fix the name"
        elif "refused" in low or "could not connect" in low or "timeout" in low:
            why = f"no PostgreSQL answers at {where}; start it, or fix the host and port"
        elif "could not translate host name" in low or "name or service" in low:
            why = f"host {self.url.host!r} is not known; fix the host"
        else:
            why = f"{first}; fix the URL or the database"
        return DatabaseError(f"{self.setting}={self.shown!r}: {why}")


_engines: dict[tuple[int, str], Engine] = {}
_engines_lock = threading.Lock()


def _engine(db: Database) -> Engine:
    """This process's engine (and pool) for the database, made and migrated on first use. Keyed
    by process too: a forked child must not share its parent's pooled connections."""
    key = (os.getpid(), db._key)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _make_engine(db)
    return engine


def _make_engine(db: Database) -> Engine:
    if db.dialect == "sqlite":
        _create_private(db)
        engine = create_engine(
            db.url,
            hide_parameters=True,  # no row values (sealed keys, inputs) in an error's text
            connect_args={"timeout": SQLITE_BUSY_S, "isolation_level": None},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys = ON")
            _wal(cursor)
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("app_write", True)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
    else:
        engine = create_engine(
            db.url,
            hide_parameters=True,
            pool_size=5,
            max_overflow=10,  # activities run in threads: a burst borrows, then gives back
            pool_pre_ping=True,  # a connection the server closed (a restart) is replaced
            pool_recycle=1800,
            connect_args={"connect_timeout": 10},
        )
    from alembic.util import CommandError

    try:
        _migrate(engine)
    except (exc.DBAPIError, CommandError) as error:
        engine.dispose()
        if isinstance(error, CommandError):  # e.g. a revision this code does not know
            raise DatabaseError(
                f"{db.setting}={db.shown!r}: its schema is not one this version knows ({error});"
                " run the newest version of the application against it"
            ) from None
        raise db.error(error) from None
    return engine


def _wal(cursor: Any) -> None:
    """WAL mode, set once per file. Switching takes a lock SQLite does not wait for (no busy
    handler), so processes opening a new file together retry until one has switched it."""
    deadline = time.monotonic() + SQLITE_BUSY_S
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration, one process at a time."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn, conn.begin():  # SQLite: BEGIN IMMEDIATE is the lock
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def _create_private(db: Database) -> None:
    """The SQLite file (and a missing directory) made readable by its owner only: it holds the
    connections' encrypted keys and the catalog. SQLite gives its -wal and -shm files the
    database file's mode."""
    path = db.path
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as error:
        raise DatabaseError(
            f"{db.setting}={db.shown!r}: cannot open it ({error.strerror}); {SQLITE_FIX}"
        ) from None
