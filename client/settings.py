"""Settings from the environment, read and validated in one place.

Every process (worker, starter, devstack) calls `load_settings()`; a bad value stops it with one
line naming the variable and the fix, before anything is started or written.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.exc import ArgumentError

from activities.db import Database, database_url
from client.codec import Keyring, KeyringError
from client.errors import ConfigError
from client.secret_files import create_secret, read_secret
from client.temporal_profile import TemporalTarget, check_address, load_target
from scheduling.types import CronText, Duration, parse_duration

TASK_QUEUE = "scheduled-jobs"
DEFAULT_DUMMYJSON_URL = "https://dummyjson.com"
SESSION_SECRET_MIN = 32
TASK_QUEUE_MAX = 1000  # Temporal's limit on a task queue name


def _keyring_text(text: str) -> None:
    """A keys file must parse as PAYLOAD_KEYS does (KeyringError is a ValueError)."""
    Keyring.parse(text)


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

    # Empty: from the SDK's environment configuration (TEMPORAL_* variables, TEMPORAL_PROFILE in
    # the CLI's profile file), else localhost:7233 and default. TLS and API key come from there.
    temporal_address: str = ""
    temporal_namespace: str = ""
    temporal_profile: str | None = None
    temporal_task_queue: str = TASK_QUEUE
    dummyjson_base_url: str = DEFAULT_DUMMYJSON_URL
    data_dir: Path = Path("data")
    # The application database (connections, expansion pages, batch outcomes, the built-in
    # catalog), shared by every worker and CLI: sqlite:///path/file.db or
    # postgresql://user:password@host:5432/db. Unset: the SQLite file CATALOG_DB.
    app_database_url: SecretStr | None = None
    catalog_db: Path | None = None
    sync_products_batch_size: int = Field(15, ge=1, le=1000)
    sync_products_max_retries: int = Field(2, ge=0, le=20)
    sync_products_schedule: CronText = "*/2 * * * *"
    sync_products_dry_run: bool = False
    sync_products_delete_missing: bool = True
    # Where sync-products writes: the built-in SQLite catalog, or a Medusa v2 store through its
    # Admin API (MEDUSA_BACKEND_URL, and MEDUSA_API_KEY, a secret API key; never in a history).
    sync_products_target: Literal["sqlite", "medusa"] = "sqlite"
    medusa_backend_url: str | None = None
    medusa_api_key: SecretStr | None = None
    # Signs Ductape session tokens; unset: a random one kept in DATA_DIR/session.secret.
    session_secret: SecretStr | None = None
    # Encrypts connections' API keys in CATALOG_DB (a Fernet key); unset: DATA_DIR/connections.key.
    connections_key: SecretStr | None = None
    # Encrypts every payload sent to Temporal (client/codec.py); PAYLOAD_KEYS is `id:key,...`,
    # newest first; unset: DATA_DIR/payload.keys. Off: payloads go in clear (already encrypted
    # ones are still read while the keys are there).
    payload_encryption: bool = True
    payload_keys: SecretStr | None = None
    # A bearer token the codec server requires (`python -m client.codec_server`); unset: none.
    codec_auth_token: SecretStr | None = None
    _target: TemporalTarget | None = PrivateAttr(None)
    # Set by a command that only reads (`list`, `describe`): it never makes a secret file.
    _read_only: bool = PrivateAttr(False)
    # How long a stopping worker (SIGTERM, Ctrl-C) lets running activities finish before it
    # cancels them; a deploy inside this window costs no retry.
    graceful_shutdown_timeout: Duration = "30s"
    # Where the worker serves Prometheus metrics (GET /metrics), as ip:port; unset, empty or
    # `off`: no metrics endpoint. Only the worker binds it (`make run`: 127.0.0.1:9464).
    metrics_address: str | None = None
    # Worker tuning (see the README's "Scaling"): how many workflows a worker keeps in memory
    # (a loop not kept replays its history on its next wake), and how many workflow tasks it
    # works on at once; unset: the SDK's default.
    worker_max_cached_workflows: int = Field(1000, ge=0, le=1_000_000)
    worker_max_concurrent_workflow_tasks: int | None = Field(None, ge=2, le=10_000)
    # `fast`: workflow modules imported once per worker; `strict`: once per run (worker.py).
    workflow_sandbox: Literal["fast", "strict"] = "fast"
    # The worker's log on stderr (client/logs.py): `text`, one line per event for people; `json`,
    # one object per line (time, level, logger, message, workflow_id, run_id, workflow_type,
    # activity_type, attempt, error, traceback) for a log collector.
    log_format: Literal["text", "json"] = "text"
    # Traces (client/tracing.py): the OpenTelemetry collector's OTLP/HTTP base URL, the standard
    # variable (spans go to <it>/v1/traces); unset: no tracing. OTEL_SERVICE_NAME names the
    # process in the traces (default: schedjobs-worker for the worker, schedjobs for the CLI).
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str | None = None

    @property
    def graceful_shutdown(self) -> timedelta:
        return parse_duration(self.graceful_shutdown_timeout)

    @field_validator("session_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _long_enough(value.get_secret_value())
        return value

    @field_validator("payload_keys", "codec_auth_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`PAYLOAD_KEYS=` (as compose passes an unset variable) means: not set."""
        return None if value == "" else value

    @field_validator("payload_keys")
    @classmethod
    def _keyring(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                Keyring.parse(value.get_secret_value())
            except KeyringError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("connections_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _fernet(value.get_secret_value())
        return value

    def session_key(self) -> str:
        """SESSION_SECRET, or the data directory's own (made on first use, readable by you only),
        so the worker and `starter.py session create` on one machine agree without setup. Made
        here: call it only where a secret may be written (client/secret_files.py)."""
        if self.session_secret is not None:
            return self.session_secret.get_secret_value()
        return create_secret(
            self.data_dir / "session.secret",
            "SESSION_SECRET",
            lambda: secrets.token_urlsafe(48),
            _long_enough,
        )

    def connections_secret(self) -> str:
        """CONNECTIONS_KEY, or the data directory's own: what the worker and `starter.py
        connections` encrypt and decrypt stored API keys with. Keep it apart from the database
        in production (the environment, a secret store); losing it loses the stored keys. Made
        on first use: a command that only reads calls existing_connections_secret()."""
        if self.connections_key is not None:
            return self.connections_key.get_secret_value()
        return create_secret(
            self.data_dir / "connections.key",
            "CONNECTIONS_KEY",
            lambda: Fernet.generate_key().decode(),
            _fernet,
        )

    def existing_connections_secret(self) -> str | None:
        """CONNECTIONS_KEY, or the data directory's file if there is one (nothing is made)."""
        if self.connections_key is not None:
            return self.connections_key.get_secret_value()
        return read_secret(self.data_dir / "connections.key", "CONNECTIONS_KEY", _fernet)

    @property
    def read_only(self) -> bool:
        return self._read_only

    @read_only.setter
    def read_only(self, value: bool) -> None:
        self._read_only = value

    @property
    def payload_keys_path(self) -> Path:
        return self.data_dir / "payload.keys"

    def keyring(self) -> Keyring | None:
        """PAYLOAD_KEYS, or the data directory's keys file (made on first use while encryption
        is on); None when encryption is off and there are no keys to read old payloads with.
        The CLI reads with existing_keyring() and makes keys only once its checks passed
        (client/connect.py)."""
        existing = self.existing_keyring()
        if existing is not None or not self.payload_encryption:
            return existing
        text = create_secret(
            self.payload_keys_path, "PAYLOAD_KEYS", Keyring.new_entry, _keyring_text
        )
        return Keyring.parse(text)

    def existing_keyring(self) -> Keyring | None:
        """PAYLOAD_KEYS, or the data directory's keys file if there is one (nothing is made)."""
        if self.payload_keys is not None:
            return Keyring.parse(self.payload_keys.get_secret_value())
        text = read_secret(self.payload_keys_path, "PAYLOAD_KEYS", _keyring_text)
        return None if text is None else Keyring.parse(text)

    def target(self) -> TemporalTarget:
        """The Temporal to connect to: the loaded profile with the current address/namespace."""
        if self._target is None:
            self._target = load_target(None, None, self.temporal_profile)
        return dataclasses.replace(
            self._target, address=self.temporal_address, namespace=self.temporal_namespace
        )

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

    @field_validator("metrics_address", mode="before")
    @classmethod
    def _metrics_off(cls, value: object) -> object:
        """`METRICS_ADDRESS=` (compose's unset variable) and `off` mean: no metrics endpoint."""
        if isinstance(value, str) and value.strip().lower() in ("", "off"):
            return None
        return value

    @field_validator("metrics_address")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        """host:port as the Temporal address is checked, and the host an IP address: the SDK's
        Prometheus exporter binds a socket address and does not resolve names (`localhost`)."""
        if value is None:
            return None
        value = check_address(value)
        host = value.rpartition(":")[0].removeprefix("[").removesuffix("]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            reason = f"host {host!r} is not an IP address (names are not resolved)"
            raise ValueError(reason) from None
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: object) -> object:
        """Any case; empty (compose's unset variable) is the default."""
        if isinstance(value, str):
            return value.strip().lower() or "text"
        return value

    @field_validator("otel_exporter_otlp_endpoint", "otel_service_name", mode="before")
    @classmethod
    def _otel_unset(cls, value: object) -> object:
        """Empty (compose's unset variable) is unset, as the OpenTelemetry SDK reads it."""
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("otel_exporter_otlp_endpoint")
    @classmethod
    def _otlp_endpoint(cls, value: str | None) -> str | None:
        """Checked now: the exporter would only fail at its first export, in the background.
        A reachable collector is not checked: one that is down costs spans, not the worker."""
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https:// (OTLP over HTTP)")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("has a port that is not 1 to 65535") from None
        if not parts.hostname or port == 0:
            raise ValueError("names no host:port")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query string or fragment")
        if parts.path.rstrip("/").endswith("/v1/traces"):
            raise ValueError("ends in /v1/traces, which is added to it; give the base URL")
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
        _no_file_above(value)
        return value

    @field_validator("catalog_db")
    @classmethod
    def _a_database_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if value.is_dir():
            raise ValueError("is a directory, not a file")
        _no_file_above(value)
        return value

    @field_validator("app_database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        """Parsed now: a URL no driver could open stops a command before it acts."""
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if "://" not in text:
            raise ValueError("is not a URL")
        try:
            url = database_url(text)
            port = url.port
        except (ArgumentError, ValueError):
            raise ValueError("is not a database URL") from None
        backend = url.get_backend_name()
        if backend == "sqlite":
            if not url.database or url.database == ":memory:":
                raise ValueError("names no file (sqlite:///relative.db, sqlite:////abs.db)")
        elif backend == "postgresql":
            if not url.host or not url.database:
                raise ValueError("needs a host and a database (…@host:5432/db)")
            if port is not None and not 1 <= port <= 65535:
                raise ValueError(f"port {port} is not 1 to 65535")
        else:
            raise ValueError(f"{backend} is not supported")
        return SecretStr(text)

    @field_validator("dummyjson_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("medusa_backend_url")
    @classmethod
    def _medusa_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else None

    @field_validator("medusa_api_key", mode="before")
    @classmethod
    def _medusa_key(cls, value: object) -> object:
        if isinstance(value, str) and (not value.strip() or not value.isprintable()):
            raise ValueError("must be the key itself: printable characters, no line breaks")
        return value

    @model_validator(mode="after")
    def _medusa_target(self) -> Settings:
        """The Medusa target needs both; a missing one is named before anything starts."""
        if self.sync_products_target == "medusa":
            for variable, value in (
                ("MEDUSA_BACKEND_URL", self.medusa_backend_url),
                ("MEDUSA_API_KEY", self.medusa_api_key),
            ):
                if not value:
                    raise ConfigError(
                        f"{variable}: SYNC_PRODUCTS_TARGET=medusa needs it; set it to "
                        + _FIXES[variable.lower()]
                    )
        return self

    @model_validator(mode="after")
    def _temporal(self) -> Settings:
        """Resolved now, so a bad profile, address or TLS file stops a command before it acts."""
        self._target = load_target(
            self.temporal_address or None, self.temporal_namespace or None, self.temporal_profile
        )
        self.temporal_address = self._target.address
        self.temporal_namespace = self._target.namespace
        return self

    @model_validator(mode="after")
    def _default_catalog(self) -> Settings:
        if self.catalog_db is None:
            self.catalog_db = self.data_dir / "catalog.db"
        elif self.app_database_url is not None:
            raise ConfigError(
                "CATALOG_DB: APP_DATABASE_URL names the application database; unset CATALOG_DB"
                " (or set APP_DATABASE_URL=sqlite:///that/file.db)"
            )
        return self

    @property
    def catalog_path(self) -> Path:
        """The default SQLite database file (when APP_DATABASE_URL is unset)."""
        assert self.catalog_db is not None
        return self.catalog_db

    @property
    def database(self) -> Database:
        """The application database, named in error lines by the setting that chose it."""
        if self.app_database_url is not None:
            return Database(self.app_database_url.get_secret_value(), "APP_DATABASE_URL")
        return Database(self.catalog_path, "CATALOG_DB")


def _without_password(text: str) -> str:
    try:
        return database_url(text).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return text.split("@")[-1] if "@" in text else text


def _no_file_above(path: Path) -> None:
    """A path under a file can never be made (DATA_DIR=/etc/passwd/data): say which file."""
    above = _file_above(path)
    if above is not None:
        raise ValueError(f"{above} is a file, not a directory")


def _file_above(path: Path) -> Path | None:
    """The first parent of `path` that exists and is not a directory (nothing can go below it)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


_FIXES = {
    "temporal_task_queue": "the task queue the worker polls (default scheduled-jobs)",
    "data_dir": "a directory (made if missing), e.g. data",
    "app_database_url": "sqlite:///data/catalog.db or postgresql://user:password@host:5432/db",
    "catalog_db": "a SQLite file path in a directory you can write, e.g. data/catalog.db",
    "sync_products_batch_size": "a whole number from 1 to 1000",
    "sync_products_max_retries": "a whole number from 0 to 20",
    "sync_products_schedule": "a cron expression like '*/2 * * * *'",
    "sync_products_dry_run": "true or false",
    "sync_products_delete_missing": "true or false",
    "sync_products_target": "sqlite or medusa",
    "medusa_backend_url": "your store's URL, like http://localhost:9000",
    "medusa_api_key": "a secret API key (Medusa Admin: Settings > Secret API Keys)",
    "dummyjson_base_url": "a URL like http://127.0.0.1:8787",
    "session_secret": "a random string, e.g. from `python -c 'import secrets; "
    "print(secrets.token_urlsafe(48))'`",
    "payload_keys": "`id:key` entries, newest first; make one with `python -c 'from "
    "client.codec import Keyring; print(Keyring.new_entry())'`",
    "graceful_shutdown_timeout": "a duration like 30s or 2m",
    "metrics_address": "ip:port like 127.0.0.1:9464 (0.0.0.0:9464: every interface), or off",
    "worker_max_cached_workflows": "a whole number from 0 to 1000000",
    "worker_max_concurrent_workflow_tasks": "a whole number from 2 to 10000",
    "workflow_sandbox": "fast or strict",
    "log_format": "text (for people) or json (one object per line)",
    "otel_exporter_otlp_endpoint": "your collector's OTLP/HTTP address, like "
    "http://127.0.0.1:4318, or unset it (no traces)",
    "connections_key": "the output of `python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'`",
}


_HIDDEN = (
    "session_secret",
    "connections_key",
    "payload_keys",
    "codec_auth_token",
    "medusa_api_key",
)


def load_settings() -> Settings:
    """Read the environment; raise ConfigError (one line, exit 2) on the first bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "settings"
        value = "(hidden)" if field in _HIDDEN else err.get("input")
        if field == "app_database_url":  # its password hidden, the rest shown
            value = _without_password(str(value))
        reason = err["msg"].removeprefix("Value error, ")
        fix = _FIXES.get(field)
        hint = f"; set it to {fix}" if fix else ""
        raise ConfigError(f"{field.upper()}={value!r}: {reason}{hint}") from None
