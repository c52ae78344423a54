"""The connection registry: ShipEngine-style user connections, each with the API key that calls
the source.

A job's activities read this table at run time, so workflow inputs carry only a connection id and
never a key. The CLI (`starter.py connections`) writes the table directly, not through Temporal,
for the same reason: a credential must never enter a workflow history, which is kept, replayed
and shown in the Web UI.

Keys are encrypted at rest (Fernet: AES-128-CBC with an HMAC, from `cryptography`) with
CONNECTIONS_KEY, or the key file the data directory makes on first use, so a copy of the database
alone does not give them away. Rows written before encryption are sealed the first time a store
opens the database.
"""

from __future__ import annotations

import builtins
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from cryptography.fernet import Fernet, InvalidToken
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from sqlalchemy import Connection as SqlConnection
from sqlalchemy import Row, delete, select, update

from activities.db import Database
from activities.schema import connections as t
from client.errors import UserError

CONNECTION_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
API_KEY_MAX = 4096  # far past any real key; a header that long is a paste gone wrong
# Printable ASCII: what an HTTP header value can carry. A CR/LF would split the header (httpx
# refuses it, quoting the whole value in its error), other control characters likewise.
_API_KEY_CHARS = re.compile(r"[\x20-\x7e]+")
SCOPE_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"  # a DummyJSON category slug: "mens-shirts"

Code = Annotated[str, Field(pattern=CONNECTION_ID_PATTERN)]
SEALED = "fernet:"  # the prefix of an encrypted key in the api_key column


class NewConnection(BaseModel):
    """What a user gives to register a connection; the store adds the timestamps."""

    model_config = ConfigDict(extra="forbid")

    id: Code
    api_code: Code = "dummyjson"  # the integration it belongs to (ShipEngine's api_code)
    name: str = Field(min_length=1, max_length=200)
    api_key: SecretStr = Field(min_length=1, max_length=API_KEY_MAX)  # masked when shown
    scope: str | None = Field(default=None, pattern=SCOPE_PATTERN)  # None: all products
    active: bool = True

    @field_validator("name", "api_key", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        """A blank name or key is a mistake, and pasted keys often carry a stray newline."""
        return value.strip() if isinstance(value, str) else value

    @field_validator("api_key")
    @classmethod
    def _header_safe(cls, value: SecretStr) -> SecretStr:
        """The key goes into an Authorization header: printable ASCII, no line breaks."""
        if not _API_KEY_CHARS.fullmatch(value.get_secret_value()):
            raise ValueError(
                f"use 1 to {API_KEY_MAX} printable ASCII characters: no line breaks, tabs or "
                "other control characters"
            )
        return value


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


class ConnectionUnusable(UserError):
    """A stored connection no job can use as it is; the message names it and the fix, never
    its key. A job for it fails for good (another attempt cannot mend the row)."""


class ConnectionKeyMismatch(ConnectionUnusable):
    def __init__(self, connection_id: str) -> None:
        super().__init__(
            f"connection {connection_id!r}: its API key was encrypted with another "
            "CONNECTIONS_KEY (or DATA_DIR/connections.key); use that key, or store this "
            "connection's key again with `starter.py connections add --replace`"
        )


def shown_id(connection_id: str) -> str:
    """A connection id as quoted in one line of text, even one written past the model."""
    return repr(connection_id[:80])


def valid_id(connection_id: str) -> bool:
    return re.fullmatch(CONNECTION_ID_PATTERN, connection_id) is not None


class StoredConnectionInvalid(ConnectionUnusable):
    """A row written past `connections add` (straight into the database) that the model refuses."""

    def __init__(self, connection_id: str, fields: builtins.list[str]) -> None:
        if "id" in fields:
            fix = (
                f"its id is not valid (1 to 63 of a-z 0-9 _ -, starting with a letter or "
                f"digit); remove it with `starter.py connections remove {shown_id(connection_id)}`"
                " and add it again under a valid id"
            )
        else:
            fix = (
                f"its stored {' and '.join(fields)} is not valid (written past `starter.py "
                "connections add`); store it again with `starter.py connections add --replace`"
            )
        super().__init__(f"connection {shown_id(connection_id)}: {fix}")
        self.connection_id = connection_id


class ConnectionStore:
    """The `connections` table in the application database; `secret` is the Fernet key that
    seals the API keys in it (Settings.connections_secret())."""

    def __init__(self, db: Database | Path | str, secret: str) -> None:
        self.db = db if isinstance(db, Database) else Database(db)
        self._fernet = Fernet(secret)
        self._seal_plain_rows()

    def _seal(self, api_key: SecretStr) -> str:
        return SEALED + self._fernet.encrypt(api_key.get_secret_value().encode()).decode()

    def _seal_plain_rows(self) -> None:
        """Encrypt keys stored in plain text by a version before encryption, once. Two processes
        doing it at once each write a valid seal of the same key."""
        plain = select(t.c.id, t.c.api_key).where(t.c.api_key.not_like(SEALED + "%"))
        with self.db.transaction(write=False) as conn:
            if conn.execute(plain.limit(1)).first() is None:
                return
        with self.db.transaction() as conn:
            for row in conn.execute(plain).all():
                sealed = self._seal(SecretStr(row.api_key))
                conn.execute(update(t).where(t.c.id == row.id).values(api_key=sealed))

    def _from_row(self, row: Row[Any]) -> Connection:
        try:
            api_key = self._fernet.decrypt(row.api_key.removeprefix(SEALED)).decode()
        except InvalidToken:
            raise ConnectionKeyMismatch(row.id) from None
        try:
            return Connection(
                id=row.id,
                api_code=row.api_code,
                name=row.name,
                api_key=SecretStr(api_key),
                scope=row.scope,
                active=bool(row.active),
                created_at=datetime.fromisoformat(row.created_at),
                updated_at=datetime.fromisoformat(row.updated_at),
            )
        except ValidationError as exc:  # its text would quote the values, the key among them
            fields = sorted({str(e["loc"][0]) for e in exc.errors(include_input=False) if e["loc"]})
            raise StoredConnectionInvalid(row.id, fields) from None

    def _fetch(self, conn: SqlConnection, connection_id: str) -> Connection | None:
        row = conn.execute(select(t).where(t.c.id == connection_id)).first()
        return None if row is None else self._from_row(row)

    def add(self, new: NewConnection, *, replace: bool = False) -> Connection:
        """Insert, or with `replace` overwrite everything but created_at (updated_at moves on).

        One statement decides, so two CLIs adding the same id at once cannot both succeed (or,
        replacing, cannot lose created_at). The old key is not decrypted: --replace also mends
        a key sealed with a lost secret."""
        now = _now()
        values = {
            "id": new.id,
            "api_code": new.api_code,
            "name": new.name,
            "api_key": self._seal(new.api_key),
            "scope": new.scope,
            "active": new.active,
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
        }
        stmt = self.db.insert(t).values(values)
        if replace:
            kept = {k: stmt.excluded[k] for k in values if k not in ("id", "created_at")}
            stmt = stmt.on_conflict_do_update(index_elements=[t.c.id], set_=kept)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=[t.c.id])
        with self.db.transaction() as conn:
            created = conn.execute(stmt.returning(t.c.created_at)).scalar()
        if created is None:
            raise ConnectionExists(new.id)
        return Connection(**dict(new), created_at=datetime.fromisoformat(created), updated_at=now)

    def get(self, connection_id: str) -> Connection | None:
        with self.db.transaction(write=False) as conn:
            return self._fetch(conn, connection_id)

    def exists(self, connection_id: str) -> bool:
        with self.db.transaction(write=False) as conn:
            return conn.execute(select(t.c.id).where(t.c.id == connection_id)).first() is not None

    def require(self, connection_id: str) -> Connection:
        found = self.get(connection_id)
        if found is None:
            raise ConnectionNotFound(connection_id)
        return found

    def list(
        self, *, api_code: str | None = None, active_only: bool = False
    ) -> builtins.list[Connection]:
        query = select(t).order_by(t.c.id)
        if api_code is not None:
            query = query.where(t.c.api_code == api_code)
        if active_only:
            query = query.where(t.c.active.is_(True))
        with self.db.transaction(write=False) as conn:
            rows = conn.execute(query).all()
        return [self._from_row(row) for row in rows]

    def active_ids(self, api_code: str) -> builtins.list[str]:
        """The connections a fire fans out to: ids only, no key is decrypted."""
        query = (
            select(t.c.id).where(t.c.api_code == api_code, t.c.active.is_(True)).order_by(t.c.id)
        )
        with self.db.transaction(write=False) as conn:
            return builtins.list(conn.execute(query).scalars())

    def set_active(self, connection_id: str, active: bool) -> Connection:
        """Enable or disable; a no-op (updated_at kept) when it already is."""
        with self.db.transaction() as conn:
            found = self._fetch(conn, connection_id)
            if found is None:
                raise ConnectionNotFound(connection_id)
            if found.active == active:
                return found
            now = _now()
            conn.execute(
                update(t)
                .where(t.c.id == connection_id)
                .values(active=active, updated_at=now.isoformat())
            )
        return found.model_copy(update={"active": active, "updated_at": now})

    def remove(self, connection_id: str) -> bool:
        """Delete; False if there was nothing to delete."""
        with self.db.transaction() as conn:
            gone = conn.execute(delete(t).where(t.c.id == connection_id).returning(t.c.id))
            return gone.first() is not None


def _now() -> datetime:
    return datetime.now(UTC)
