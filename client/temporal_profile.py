"""Which Temporal to connect to, and how: the SDK's environment configuration.

The same `TEMPORAL_*` variables and TOML profile file (`TEMPORAL_CONFIG_FILE`, default
`~/.config/temporalio/temporal.toml`; `TEMPORAL_PROFILE` picks a profile) that the `temporal` CLI
reads, so a server with TLS, mTLS or an API key (Temporal Cloud) is reached with no code of ours.
Everything is checked here, before a connection is tried: a bad value is one line naming it.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from temporalio import envconfig
from temporalio.service import TLSConfig

from client.errors import ConfigError

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"
MAX_PROFILE_BYTES = 2**20  # a profile file or a PEM file: a few KB; read no further than this
TLS_VALUES = {"true": True, "1": True, "false": False, "0": False}  # what the SDK tells apart
# Where each TLS file comes from, to name it when it cannot be read.
_TLS_FILES = {
    "server_root_ca_cert": "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "client_cert": "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "client_private_key": "TEMPORAL_TLS_CLIENT_KEY_PATH",
}


@dataclasses.dataclass(frozen=True)
class TemporalTarget:
    """The resolved connection: what `Client.connect` is given."""

    address: str
    namespace: str
    api_key: str | None = dataclasses.field(default=None, repr=False)
    tls: bool | TLSConfig = False
    rpc_metadata: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def secured(self) -> bool:
        return self.tls is not False


def check_address(address: str) -> str:
    """`host:port` with a port the OS can have; raises ValueError saying what is wrong."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host:
        raise ValueError("is not host:port")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError("is not host:port (an IPv6 address goes in brackets: [::1]:7233)")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a number from 1 to 65535")
    return address.strip()


def load_target(address: str | None, namespace: str | None, profile: str | None) -> TemporalTarget:
    """The profile (file, then environment), with explicit settings on top."""
    tls_flag = os.environ.get("TEMPORAL_TLS", "")
    if tls_flag.strip() and tls_flag.strip().lower() not in TLS_VALUES:
        raise ConfigError(
            f"TEMPORAL_TLS={tls_flag!r} is not a boolean; set it to true or false (or 1 or 0), "
            "or unset it"
        )
    source = _profile_file()
    try:
        loaded = envconfig.ClientConfigProfile.load(profile=profile, config_source=source)
    except Exception as exc:  # the SDK's envconfig.ConfigError, or the bridge's
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"TEMPORAL_PROFILE={profile!r}" if profile else "TEMPORAL_CONFIG_FILE"
        raise ConfigError(
            f"{where}: {first}; fix the profile file or unset TEMPORAL_PROFILE"
        ) from None
    address = address or loaded.address or DEFAULT_ADDRESS
    try:
        check_address(address)
    except ValueError as exc:
        raise ConfigError(
            f"TEMPORAL_ADDRESS={address!r} {exc}; set it to host:port like localhost:7233"
        ) from None
    namespace = namespace or loaded.namespace or DEFAULT_NAMESPACE
    tls: bool | TLSConfig = loaded.api_key is not None  # an API key needs TLS, as the SDK does
    if loaded.tls is not None:
        tls = _tls(loaded.tls)
    return TemporalTarget(
        address=address,
        namespace=namespace,
        api_key=loaded.api_key,
        tls=tls,
        rpc_metadata=dict(loaded.grpc_meta),
    )


def _profile_file() -> bytes | None:
    """The profile file's bytes, read here with a bound (the SDK would read a device such as
    /dev/zero until memory ran out); None when there is none, as the SDK then has none."""
    given = os.environ.get("TEMPORAL_CONFIG_FILE")
    if given:
        path = Path(given)
    else:
        home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        path = Path(home) / "temporalio" / "temporal.toml"
    variable = f"TEMPORAL_CONFIG_FILE={str(path)!r}"
    problem = _not_a_small_file(path)
    if problem == "no such file":  # as the SDK and the `temporal` CLI: no profile file
        return None
    if problem:
        raise ConfigError(f"{variable}: {problem}; point it at a TOML profile file or unset it")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > MAX_PROFILE_BYTES:
        raise ConfigError(f"{variable}: over {MAX_PROFILE_BYTES // 2**20} MB; not a profile file")
    return data


def _not_a_small_file(path: Path) -> str | None:
    """What keeps `path` from being a file we read whole: missing, a directory, a device, a
    FIFO, or over MAX_PROFILE_BYTES (None when it is fine)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a device or a pipe)"
    if info.st_size > MAX_PROFILE_BYTES:
        return f"is {info.st_size // 2**20} MB, over the {MAX_PROFILE_BYTES // 2**20} MB limit"
    return None


def _tls(config: envconfig.ClientConfigTLS) -> bool | TLSConfig:
    """The TLS files checked now, so a bad one is named, as what it is, before anything
    connects."""
    for field, variable in _TLS_FILES.items():
        source = getattr(config, field)
        problem = _not_a_small_file(source) if isinstance(source, Path) else None
        if problem:
            raise ConfigError(
                f"{variable}={str(source)!r}: {problem}; point it at the PEM file (or unset it)"
            )
    if (config.client_cert is None) != (config.client_private_key is None):
        missing = (
            "TEMPORAL_TLS_CLIENT_KEY_PATH"
            if config.client_private_key is None
            else ("TEMPORAL_TLS_CLIENT_CERT_PATH")
        )
        raise ConfigError(f"{missing}: mTLS needs both a client certificate and its key; set it")
    try:
        return config.to_connect_tls_config()
    except OSError as exc:
        raise ConfigError(f"TEMPORAL_TLS_*: cannot read {exc.filename}: {exc.strerror}") from None
