"""Which Temporal to connect to, and how: the SDK's environment configuration.

The same `TEMPORAL_*` variables and TOML profile file (`TEMPORAL_CONFIG_FILE`, default
`~/.config/temporalio/temporal.toml`; `TEMPORAL_PROFILE` picks a profile) that the `temporal` CLI
reads, so a server with TLS, mTLS or an API key (Temporal Cloud) is reached with no code of ours.
Everything is checked here, before a connection is tried: a bad value is one line naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from temporalio import envconfig
from temporalio.service import TLSConfig

from client.errors import ConfigError

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"
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
    try:
        loaded = envconfig.ClientConfigProfile.load(profile=profile)
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


def _tls(config: envconfig.ClientConfigTLS) -> bool | TLSConfig:
    """The TLS files read now, so a missing one is named before anything connects."""
    for field, variable in _TLS_FILES.items():
        source = getattr(config, field)
        if isinstance(source, Path) and not source.is_file():
            raise ConfigError(
                f"{variable}={str(source)!r}: no such file; point it at the PEM file (or unset it)"
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
