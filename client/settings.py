"""Settings from the environment, read and validated in one place.

Every process (worker, starter, devstack) calls `load_settings()`; a bad value stops it with one
line naming the variable and the fix, before anything is started or written.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from client.errors import ConfigError
from scheduling.types import CronText, Duration, parse_duration

TASK_QUEUE = "scheduled-jobs"
DEFAULT_DUMMYJSON_URL = "https://dummyjson.com"
SESSION_SECRET_MIN = 32


def _create_once(path: Path, secret: str) -> None:
    """Write `secret` to `path` unless it exists, without a race: each process writes its
    candidate to a private temporary file (0600) and hard-links it into place, which fails for
    all but the first; so a reader never sees a half-written file, and everybody reads the
    one that won."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secret)
            f.flush()
            os.fsync(f.fileno())
        # All or nothing; fails if another process was first, whose secret everybody uses then.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def _long_enough(secret: str) -> None:
    if len(secret) < SESSION_SECRET_MIN:
        raise ValueError(f"must be at least {SESSION_SECRET_MIN} characters")


def _fernet(key: str) -> None:
    try:
        Fernet(key)
    except ValueError:
        raise ValueError("not a Fernet key (32 url-safe base64-encoded bytes)") from None


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
    # How long a stopping worker (SIGTERM, Ctrl-C) lets running activities finish before it
    # cancels them; a deploy inside this window costs no retry.
    graceful_shutdown_timeout: Duration = "30s"

    @property
    def graceful_shutdown(self) -> timedelta:
        return parse_duration(self.graceful_shutdown_timeout)

    @field_validator("session_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _long_enough(value.get_secret_value())
        return value

    @field_validator("connections_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _fernet(value.get_secret_value())
        return value

    def session_key(self) -> str:
        """SESSION_SECRET, or the data directory's own (made on first use, readable by you only),
        so the worker and `starter.py session create` on one machine agree without setup."""
        if self.session_secret is not None:
            return self.session_secret.get_secret_value()
        return self._secret_file(
            "session.secret", "SESSION_SECRET", lambda: secrets.token_urlsafe(48), _long_enough
        )

    def connections_secret(self) -> str:
        """CONNECTIONS_KEY, or the data directory's own: what the worker and `starter.py
        connections` encrypt and decrypt stored API keys with. Keep it apart from the database
        in production (the environment, a secret store); losing it loses the stored keys."""
        if self.connections_key is not None:
            return self.connections_key.get_secret_value()
        return self._secret_file(
            "connections.key", "CONNECTIONS_KEY", lambda: Fernet.generate_key().decode(), _fernet
        )

    def _secret_file(
        self, name: str, variable: str, make: Callable[[], str], check: Callable[[str], None]
    ) -> str:
        """A secret kept in DATA_DIR, made on first use and readable by its owner only. Processes
        starting at once on a fresh DATA_DIR all end up with the same one; an existing file is
        never replaced: an empty or damaged one stops the program, naming it."""
        path = self.data_dir / name
        try:
            if not path.exists():
                _create_once(path, make())
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}; fix DATA_DIR, or set {variable}") from None
        try:
            secret = raw.decode("utf-8").strip()
            if not secret:
                raise ValueError("the file is empty")
            check(secret)
        except ValueError as exc:  # also UnicodeDecodeError: not text
            reason = "not text" if isinstance(exc, UnicodeDecodeError) else str(exc)
            raise ConfigError(
                f"{path}: {reason}; restore it, or set {variable} (deleting it makes a new "
                "one, and loses what the old one protected)"
            ) from None
        return secret

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


_FIXES = {
    "sync_products_batch_size": "a whole number from 1 to 1000",
    "sync_products_max_retries": "a whole number from 0 to 20",
    "sync_products_schedule": "a cron expression like '*/2 * * * *'",
    "sync_products_dry_run": "true or false",
    "dummyjson_base_url": "a URL like http://127.0.0.1:8787",
    "session_secret": "a random string, e.g. from `python -c 'import secrets; "
    "print(secrets.token_urlsafe(48))'`",
    "graceful_shutdown_timeout": "a duration like 30s or 2m",
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
