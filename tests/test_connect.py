"""Reaching your Temporal: the dev server behind a real mTLS endpoint on 127.0.0.1 (a TLS-
terminating proxy with certificates made here), configured the way the `temporal` CLI is
(TEMPORAL_* variables, or a profile file), and each misconfiguration, TLS or not, as one line
naming it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.testing import WorkflowEnvironment

from client.connect import connect
from client.settings import Settings
from tests.conftest import client_address
from tests.test_cli import cli_env, one_line, starter

Key = ec.EllipticCurvePrivateKey


def _cert(
    name: str, key: Key, issuer: tuple[x509.Certificate, Key] | None, *, ca: bool = False
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: Key | None = None) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server and a client certificate it signed, and a CA nobody uses."""
    ca_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _cert("test-ca", ca_key, None, ca=True)
    server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    return {
        "ca": _write(tmp_path / "ca.pem", ca),
        "other_ca": _write(tmp_path / "other.pem", _cert("other", other_key, None, ca=True)),
        "server": _write(
            tmp_path / "server.pem", _cert("server", server_key, (ca, ca_key)), server_key
        ),
        "client": _write(
            tmp_path / "client.pem", _cert("client", client_key, (ca, ca_key)), client_key
        ),
    }


@contextlib.asynccontextmanager
async def mtls_proxy(target: str, pki: dict[str, Path]) -> AsyncIterator[str]:
    """TLS in front of the dev server; a client without a certificate from the CA is refused."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki["ca"])
    ctx.load_cert_chain(pki["server"], pki["server"].with_suffix(".key"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["h2"])
    host, _, port = target.rpartition(":")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host or "127.0.0.1", int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    async with server:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


def tls_env(address: str, pki: dict[str, Path]) -> dict[str, str]:
    return cli_env(
        address=address,
        TEMPORAL_TLS_SERVER_CA_CERT_PATH=str(pki["ca"]),
        TEMPORAL_TLS_CLIENT_CERT_PATH=str(pki["client"]),
        TEMPORAL_TLS_CLIENT_KEY_PATH=str(pki["client"].with_suffix(".key")),
    )


async def test_the_cli_and_the_worker_reach_temporal_over_mtls(
    dev_env: WorkflowEnvironment,
    pki: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with mtls_proxy(client_address(dev_env.client), pki) as address:
        code, out, err = await starter(
            "list", "--json", "--file", "none.toml", env=tls_env(address, pki)
        )
        assert code == 0, err
        assert isinstance(json.loads(out), list)

        # The same through a profile file, as the `temporal` CLI shares it.
        profile = tmp_path / "temporal.toml"
        profile.write_text(
            f'[profile.secure]\naddress = "{address}"\nnamespace = "default"\n'
            f'[profile.secure.tls]\nserver_ca_cert_path = "{pki["ca"]}"\n'
            f'client_cert_path = "{pki["client"]}"\n'
            f'client_key_path = "{pki["client"].with_suffix(".key")}"\n'
        )
        env = cli_env(TEMPORAL_CONFIG_FILE=str(profile), TEMPORAL_PROFILE="secure")
        code, out, err = await starter("list", "--json", "--file", "none.toml", env=env)
        assert code == 0, err

        # The worker's connection is the same `connect`: it polls through the proxy too.
        for key, value in env.items():
            if key.startswith("TEMPORAL_"):
                monkeypatch.setenv(key, value)
        client = await connect(Settings())
        assert client.service_client.config.tls is not None
        assert await client.workflow_service.get_system_info(GetSystemInfoRequest())


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("untrusted server", "TEMPORAL_TLS_SERVER_CA_CERT_PATH"),
        ("missing client key", "TEMPORAL_TLS_CLIENT_KEY_PATH"),
        ("no client certificate", "TEMPORAL_TLS"),
    ],
)
async def test_a_wrong_tls_setup_is_one_line_naming_what_to_fix(
    dev_env: WorkflowEnvironment, pki: dict[str, Path], case: str, named: str
) -> None:
    async with mtls_proxy(client_address(dev_env.client), pki) as address:
        env = tls_env(address, pki)
        if case == "untrusted server":
            env["TEMPORAL_TLS_SERVER_CA_CERT_PATH"] = str(pki["other_ca"])
        elif case == "missing client key":
            env["TEMPORAL_TLS_CLIENT_KEY_PATH"] = str(pki["client"].with_suffix(".gone"))
        else:
            del env["TEMPORAL_TLS_CLIENT_CERT_PATH"], env["TEMPORAL_TLS_CLIENT_KEY_PATH"]
        code, out, err = await starter("list", "--file", "none.toml", env=env)
    assert code in (1, 2), err
    line = one_line(err)
    assert named in line, line


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TEMPORAL_ADDRESS": "localhost:99999"}, "TEMPORAL_ADDRESS='localhost:99999' port"),
        ({"TEMPORAL_ADDRESS": ":::"}, "TEMPORAL_ADDRESS=':::' is not host:port"),
        ({"TEMPORAL_ADDRESS": "localhost"}, "TEMPORAL_ADDRESS='localhost' is not host:port"),
        ({"TEMPORAL_PROFILE": "nowhere"}, "TEMPORAL_PROFILE='nowhere'"),
        ({"TEMPORAL_TLS_CLIENT_CERT_PATH": "/nonexistent.pem"}, "TEMPORAL_TLS_CLIENT_CERT_PATH"),
    ],
)
async def test_a_bad_connection_setting_is_one_line_before_connecting(
    env: dict[str, str], named: str, tmp_path: Path
) -> None:
    profile = tmp_path / "temporal.toml"
    profile.write_text('[profile.default]\naddress = "127.0.0.1:1"\n')
    code, _, err = await starter(
        "list", "--file", "none.toml", env={**cli_env(TEMPORAL_CONFIG_FILE=str(profile)), **env}
    )
    assert code == 2
    assert named in one_line(err)


async def test_a_namespace_that_does_not_exist_is_named(dev_env: WorkflowEnvironment) -> None:
    env = cli_env(address=client_address(dev_env.client), TEMPORAL_NAMESPACE="no-such-ns")
    code, _, err = await starter("list", "--file", "none.toml", env=env)
    assert code == 2
    line = one_line(err)
    assert "TEMPORAL_NAMESPACE='no-such-ns': no such namespace" in line, line
