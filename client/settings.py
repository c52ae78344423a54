"""Settings from the environment, read and validated in one place.

Every process (worker, starter, devstack) calls `load_settings()`; a bad value stops it with one
line naming the variable and the fix, before anything is started or written.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from client.errors import ConfigError
from scheduling.types import CronText

TASK_QUEUE = "scheduled-jobs"
DEFAULT_DUMMYJSON_URL = "https://dummyjson.com"
SESSION_SECRET_MIN = 32
TASK_QUEUE_MAX = 1000  # Temporal's limit on a task queue name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = TASK_QUEUE
    dummyjson_base_url: str = DEFAULT_DUMMYJSON_URL
    data_dir: Path = Path("data")
    catalog_db: Path | None = None
    sync_products_batch_size: int = Field(15, ge=1, le=1000)
    sync_products_max_retries: int = Field(2, ge=0, le=20)
    sync_products_schedule: CronText = "*/2 * * * *"
    sync_products_dry_run: bool = False
    # Signs Ductape session tokens; unset: a random one kept in DATA_DIR/session.secret.
    session_secret: SecretStr | None = None
    # Encrypts connections' API keys in CATALOG_DB (a Fernet key); unset: DATA_DIR/connections.key.
    connections_key: SecretStr | None = None

    @field_validator("session_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < SESSION_SECRET_MIN:
            raise ValueError(f"must be at least {SESSION_SECRET_MIN} characters")
        return value

    @field_validator("connections_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                Fernet(value.get_secret_value())
            except ValueError:
                raise ValueError("not a Fernet key (32 url-safe base64-encoded bytes)") from None
        return value

    def session_key(self) -> str:
        """SESSION_SECRET, or the data directory's own (made on first use, readable by you only),
        so the worker and `starter.py session create` on one machine agree without setup."""
        if self.session_secret is not None:
            return self.session_secret.get_secret_value()
        return self._secret_file("session.secret", lambda: secrets.token_urlsafe(48))

    def connections_secret(self) -> str:
        """CONNECTIONS_KEY, or the data directory's own: what the worker and `starter.py
        connections` encrypt and decrypt stored API keys with. Keep it apart from the database
        in production (the environment, a secret store); losing it loses the stored keys."""
        if self.connections_key is not None:
            return self.connections_key.get_secret_value()
        return self._secret_file("connections.key", lambda: Fernet.generate_key().decode())

    def _secret_file(self, name: str, make: Callable[[], str]) -> str:
        """A secret kept in DATA_DIR, made on first use and readable by its owner only."""
        path = self.data_dir / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(make(), encoding="utf-8")
        return path.read_text(encoding="utf-8").strip()

    @field_validator("temporal_task_queue")
    @classmethod
    def _task_queue(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty or blank")
        if value != value.strip():
            raise ValueError("must not start or end with spaces")
        if len(value) > TASK_QUEUE_MAX:
            raise ValueError(f"is {len(value)} characters; Temporal takes at most {TASK_QUEUE_MAX}")
        return value

    @field_validator("data_dir", "catalog_db", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("data_dir")
    @classmethod
    def _a_directory(cls, value: Path) -> Path:
        """Checked before anything is written there (secrets, the catalog); whether it can be
        written is found out when something is."""
        if value.exists() and not value.is_dir():
            raise ValueError("is a file, not a directory")
        if _file_above(value):
            raise ValueError(f"{_file_above(value)} is a file, not a directory")
        return value

    @field_validator("catalog_db")
    @classmethod
    def _a_database_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if value.is_dir():
            raise ValueError("is a directory, not a file")
        if _file_above(value):
            raise ValueError(f"{_file_above(value)} is a file, not a directory")
        return value

    @field_validator("dummyjson_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _default_catalog(self) -> Settings:
        if self.catalog_db is None:
            self.catalog_db = self.data_dir / "catalog.db"
        return self

    @property
    def catalog_path(self) -> Path:
        assert self.catalog_db is not None
        return self.catalog_db


def _file_above(path: Path) -> Path | None:
    """The first parent of `path` that exists and is not a directory (nothing can go below it)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


_FIXES = {
    "temporal_task_queue": "the task queue the worker polls (default scheduled-jobs)",
    "data_dir": "a directory (made if missing), e.g. data",
    "catalog_db": "a SQLite file path in a directory you can write, e.g. data/catalog.db",
    "sync_products_batch_size": "a whole number from 1 to 1000",
    "sync_products_max_retries": "a whole number from 0 to 20",
    "sync_products_schedule": "a cron expression like '*/2 * * * *'",
    "sync_products_dry_run": "true or false",
    "dummyjson_base_url": "a URL like http://127.0.0.1:8787",
    "session_secret": "a random string, e.g. from `python -c 'import secrets; "
    "print(secrets.token_urlsafe(48))'`",
    "connections_key": "the output of `python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'`",
}


def load_settings() -> Settings:
    """Read the environment; raise ConfigError (one line, exit 2) on the first bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "settings"
        value = "(hidden)" if field in ("session_secret", "connections_key") else err.get("input")
        reason = err["msg"].removeprefix("Value error, ")
        fix = _FIXES.get(field)
        hint = f"; set it to {fix}" if fix else ""
        raise ConfigError(f"{field.upper()}={value!r}: {reason}{hint}") from None
