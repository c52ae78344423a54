"""The connection registry: ShipEngine-style user connections, each with the API key that calls
the source.

A job's activities read this table at run time, so workflow inputs carry only a connection id and
never a key. The CLI (`starter.py connections`) writes the table directly, not through Temporal,
for the same reason: a credential must never enter a workflow history, which is kept, replayed
and shown in the Web UI.

Keys are stored in plain text in the local SQLite file (CATALOG_DB): protect that file like the
keys themselves. Encrypting them at rest is a follow-up.
"""

from __future__ import annotations

import builtins
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from activities.db import Database

CONNECTION_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
SCOPE_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"  # a DummyJSON category slug: "mens-shirts"

SCHEMA = """
CREATE TABLE IF NOT EXISTS connections (
    id          TEXT PRIMARY KEY,
    api_code    TEXT NOT NULL,
    name        TEXT NOT NULL,
    api_key     TEXT NOT NULL,
    scope       TEXT,
    active      INTEGER NOT NULL CHECK (active IN (0, 1)),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
"""

Code = Annotated[str, Field(pattern=CONNECTION_ID_PATTERN)]


class NewConnection(BaseModel):
    """What a user gives to register a connection; the store adds the timestamps."""

    model_config = ConfigDict(extra="forbid")

    id: Code
    api_code: Code = "dummyjson"  # the integration it belongs to (ShipEngine's api_code)
    name: str = Field(min_length=1, max_length=200)
    api_key: SecretStr = Field(min_length=1)  # masked in repr, str and model_dump
    scope: str | None = Field(default=None, pattern=SCOPE_PATTERN)  # None: all products
    active: bool = True

    @field_validator("name", "api_key", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        """A blank name or key is a mistake, and pasted keys often carry a stray newline."""
        return value.strip() if isinstance(value, str) else value


class Connection(NewConnection):
    created_at: datetime  # aware, UTC
    updated_at: datetime  # aware, UTC


class ConnectionNotFound(LookupError):
    def __init__(self, connection_id: str) -> None:
        super().__init__(
            f"no connection {connection_id!r}; `starter.py connections list` shows them"
        )
        self.connection_id = connection_id


class ConnectionExists(ValueError):
    def __init__(self, connection_id: str) -> None:
        super().__init__(f"connection {connection_id!r} exists; pass --replace to change it")
        self.connection_id = connection_id


class ConnectionStore:
    """The `connections` table in the application database."""

    def __init__(self, path: Path | str) -> None:
        self.db = Database(path, SCHEMA)
        self.path = self.db.path

    def add(self, new: NewConnection, *, replace: bool = False) -> Connection:
        """Insert, or with `replace` overwrite everything but created_at (updated_at moves on)."""
        now = _now()
        with self.db.transaction() as conn:
            old = _fetch(conn, new.id)
            if old is not None and not replace:
                raise ConnectionExists(new.id)
            created = old.created_at if old is not None else now
            conn.execute(
                """INSERT INTO connections (id, api_code, name, api_key, scope, active,
                   created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET api_code = excluded.api_code,
                   name = excluded.name, api_key = excluded.api_key, scope = excluded.scope,
                   active = excluded.active, updated_at = excluded.updated_at""",
                (
                    new.id,
                    new.api_code,
                    new.name,
                    new.api_key.get_secret_value(),
                    new.scope,
                    int(new.active),
                    created.isoformat(),
                    now.isoformat(),
                ),
            )
        return Connection(**dict(new), created_at=created, updated_at=now)

    def get(self, connection_id: str) -> Connection | None:
        with self.db.transaction(write=False) as conn:
            return _fetch(conn, connection_id)

    def require(self, connection_id: str) -> Connection:
        found = self.get(connection_id)
        if found is None:
            raise ConnectionNotFound(connection_id)
        return found

    def list(
        self, *, api_code: str | None = None, active_only: bool = False
    ) -> builtins.list[Connection]:
        with self.db.transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT * FROM connections WHERE (? IS NULL OR api_code = ?) "
                "AND (? = 0 OR active = 1) ORDER BY id",
                (api_code, api_code, int(active_only)),
            ).fetchall()
        return [_from_row(row) for row in rows]

    def set_active(self, connection_id: str, active: bool) -> Connection:
        """Enable or disable; a no-op (updated_at kept) when it already is."""
        with self.db.transaction() as conn:
            found = _fetch(conn, connection_id)
            if found is None:
                raise ConnectionNotFound(connection_id)
            if found.active == active:
                return found
            now = _now()
            conn.execute(
                "UPDATE connections SET active = ?, updated_at = ? WHERE id = ?",
                (int(active), now.isoformat(), connection_id),
            )
        return found.model_copy(update={"active": active, "updated_at": now})

    def remove(self, connection_id: str) -> bool:
        """Delete; False if there was nothing to delete."""
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM connections WHERE id = ?", (connection_id,))
            return cur.rowcount > 0


def _now() -> datetime:
    return datetime.now(UTC)


def _fetch(conn: sqlite3.Connection, connection_id: str) -> Connection | None:
    row = conn.execute("SELECT * FROM connections WHERE id = ?", (connection_id,)).fetchone()
    return None if row is None else _from_row(row)


def _from_row(row: sqlite3.Row) -> Connection:
    return Connection(
        id=row["id"],
        api_code=row["api_code"],
        name=row["name"],
        api_key=SecretStr(row["api_key"]),
        scope=row["scope"],
        active=bool(row["active"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
    )
