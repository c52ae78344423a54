"""The application database: one SQLite file (CATALOG_DB) shared by the catalog, the connection
registry, the job cache and large expansion results, each in its own tables.

One place opens connections (WAL, foreign keys, a busy timeout) and creates the schemas the
stores register, so every store gets the same safe defaults and the file is created on first use.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Database:
    """Connections to one SQLite file; `schema` is created once per process, on first use."""

    _init_lock = threading.Lock()

    def __init__(self, path: Path | str, schema: str) -> None:
        self.path = Path(path)
        self._schema = schema
        self._ready = False

    def connect(self) -> sqlite3.Connection:
        if not self._ready:
            self._create_private()
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        if not self._ready:
            with self._init_lock:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(self._schema)
                self._ready = True
        return conn

    def _create_private(self) -> None:
        """The file (and a missing directory) made readable by its owner only: it holds the
        connections' encrypted keys and the catalog. SQLite gives its -wal and -shm files the
        database file's mode."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:  # reported like any other failure to open the database
            raise sqlite3.OperationalError(f"cannot open {self.path}: {exc.strerror}") from None

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; IMMEDIATE for writes, so a read-then-write sees the rows it writes."""
        conn = self.connect()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
