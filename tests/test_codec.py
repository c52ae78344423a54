"""The payload codec and its keyring: rotation, tampering, old plain payloads, bad keys; and the
codec server: its token and body bound, the Web UI's requests as Chromium sends them (a query
string, X-Namespace, the CORS preflight), and connections that go quiet."""

from __future__ import annotations

import json
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from client import codec_server
from client.codec import EncryptionCodec, Keyring, KeyringError
from client.codec_server import CodecServer
from client.errors import ConfigError
from client.settings import Settings, load_settings

K1, K2 = Keyring.new_entry(), Keyring.new_entry()


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode())


async def test_rotation_encrypts_with_the_newest_and_reads_with_any_listed() -> None:
    old = EncryptionCodec(Keyring.parse(K1))
    (sealed_old,) = await old.encode([plain("secret-1")])
    assert b"secret-1" not in sealed_old.SerializeToString()

    rotated = EncryptionCodec(Keyring.parse(f"{K2},{K1}"))
    (sealed_new,) = await rotated.encode([plain("secret-2")])
    assert sealed_new.metadata["encryption-key-id"] == K2.split(":")[0].encode()
    assert await rotated.decode([sealed_old, sealed_new]) == [plain("secret-1"), plain("secret-2")]

    with pytest.raises(KeyringError, match=K1.split(":")[0]):  # the old key dropped too soon
        await EncryptionCodec(Keyring.parse(K2)).decode([sealed_old])


async def test_a_tampered_payload_fails_and_a_plain_one_passes_through() -> None:
    codec = EncryptionCodec(Keyring.parse(K1))
    (sealed,) = await codec.encode([plain("x")])
    sealed.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(KeyringError, match="fails authentication"):
        await codec.decode([sealed])
    assert await codec.decode([plain("from an older history")]) == [plain("from an older history")]


async def test_encryption_off_sends_clear_but_still_reads_encrypted() -> None:
    (sealed,) = await EncryptionCodec(Keyring.parse(K1)).encode([plain("x")])
    off = EncryptionCodec(Keyring.parse(K1), encrypt=False)
    assert await off.encode([plain("y")]) == [plain("y")]
    assert await off.decode([sealed]) == [plain("x")]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("nokey", "entry 1 is not `id:key`"),
        ("a:!!!", "not base64"),
        ("a:c2hvcnQ=", "5 bytes, not 32"),
        (f"{K1},{K1}", "listed twice"),
    ],
)
def test_bad_payload_keys_are_one_line_without_the_value(
    value: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYLOAD_KEYS", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith("PAYLOAD_KEYS='(hidden)'") and reason in str(err.value)
    assert K1.split(":")[1] not in str(err.value)


def test_the_keys_file_is_made_once_for_you_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAYLOAD_KEYS")
    settings = Settings(data_dir=tmp_path / "data")
    first = settings.keyring()
    assert first is not None and settings.keyring() == first
    assert stat.S_IMODE((tmp_path / "data" / "payload.keys").stat().st_mode) == 0o600
    off = Settings(data_dir=tmp_path / "other", payload_encryption=False)
    assert off.keyring() is None and not (tmp_path / "other" / "payload.keys").exists()


@pytest.fixture
def server() -> Iterator[CodecServer]:
    srv = CodecServer(("127.0.0.1", 0), Keyring.parse(K1), token="t0ken")
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_the_codec_server_wants_its_token_and_round_trips(server: CodecServer) -> None:
    body = json_format.MessageToDict(Payloads(payloads=[plain("hello")]))
    assert httpx.post(f"{server.url}/encode", json=body).status_code == 401
    auth = {"Authorization": "Bearer t0ken"}
    encoded = httpx.post(f"{server.url}/encode", json=body, headers=auth)
    assert encoded.status_code == 200 and "hello" not in encoded.text
    decoded = httpx.post(f"{server.url}/decode", json=encoded.json(), headers=auth)
    payloads = json_format.ParseDict(decoded.json(), Payloads()).payloads
    assert list(payloads) == [plain("hello")]
    assert httpx.post(f"{server.url}/decode", content=b"{", headers=auth).status_code == 400


UI = "http://localhost:8233"
# What the Web UI 2.x sends: its fetch adds Content-Type and X-Namespace (and Authorization when
# it passes its access token); Chromium's preflight names them in lower case.
UI_DECODE = "/decode?preserveStorageRefs=true"
UI_HEADERS = {"Origin": UI, "Content-Type": "application/json", "X-Namespace": "default"}
QUIET_S = 0.5


@pytest.fixture
def ui_server() -> Iterator[CodecServer]:
    srv = CodecServer(("127.0.0.1", 0), Keyring.parse(K1), origins=(UI,), read_timeout_s=QUIET_S)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize(
    "asked", ["content-type,x-namespace", "authorization,caller-type,content-type,x-namespace"]
)
def test_the_codec_server_answers_the_web_uis_preflight_and_decode(
    ui_server: CodecServer, asked: str
) -> None:
    preflight = httpx.options(
        f"{ui_server.url}{UI_DECODE}",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": asked,
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == UI
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower().replace(" ", "")
    assert set(asked.split(",")) <= set(allowed.split(","))

    sealed = Keyring.parse(K1).encrypt(plain("hello"))
    body = json_format.MessageToDict(Payloads(payloads=[sealed]))
    for path in (UI_DECODE, "/codec/default/decode?preserveStorageRefs=true"):  # any prefix
        reply = httpx.post(f"{ui_server.url}{path}", json=body, headers=UI_HEADERS)
        assert reply.status_code == 200, reply.text
        assert reply.headers["access-control-allow-origin"] == UI
        assert list(json_format.ParseDict(reply.json(), Payloads()).payloads) == [plain("hello")]
    assert httpx.post(f"{ui_server.url}/decoder", json=body).status_code == 404


def test_a_quiet_connection_is_dropped_after_the_read_timeout(ui_server: CodecServer) -> None:
    """Idle after connecting, or a body shorter than its Content-Length: the server answers or
    closes once the read timeout passes, instead of holding a thread for as long as the client
    keeps the socket open."""
    address = ("127.0.0.1", ui_server.server_port)
    with socket.create_connection(address, timeout=10) as idle:
        started = time.monotonic()
        assert idle.recv(1) == b""  # closed by the server
        assert time.monotonic() - started < 10 * QUIET_S
    with socket.create_connection(address, timeout=10) as short:
        short.sendall(b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        reply = short.makefile("rb").read()  # the answer, then the server closes
    assert reply.startswith(b"HTTP/1.0 408 "), reply
    assert b"shorter than Content-Length 100" in reply


def test_a_bad_content_length_or_bytes_that_are_not_base64_are_a_400(server: CodecServer) -> None:
    """Content-Length that is not a number: a 400 and the connection closed (not a 413, not a
    hang); `data` that is not base64: a 400 naming it (protobuf would read it as no bytes)."""
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as raw:
        raw.sendall(
            b"POST /decode HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\n"
            b"Content-Length: abc\r\n\r\n{}"
        )
        reply = raw.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.0 400 "), reply
    assert b"Content-Length: not a whole number" in reply
    auth = {"Authorization": "Bearer t0ken"}
    for bad in ("!!!!", "aGVsbG8=x", "a b"):
        body = {"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": bad}]}
        reply2 = httpx.post(f"{server.url}/decode", json=body, headers=auth)
        assert reply2.status_code == 400, (bad, reply2.text)
        assert reply2.json() == {"message": "payloads[0].data: not base64"}
    good = {"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg"}, "data": "ImhpIg"}]}
    assert httpx.post(f"{server.url}/decode", json=good, headers=auth).status_code == 200


def test_stalled_connections_hold_a_bounded_number_of_threads() -> None:
    """80 clients that send a short body and go quiet: at most MAX_HANDLERS threads serve them
    (the rest wait their turn, or get a 503), and every one is answered or closed."""
    srv = CodecServer(("127.0.0.1", 0), Keyring.parse(K1), read_timeout_s=1.0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = threading.active_count()
    peak = base
    try:
        conns = [
            socket.create_connection(("127.0.0.1", srv.server_port), timeout=30) for _ in range(80)
        ]
        for c in conns:
            c.sendall(b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        for c in conns:
            c.setblocking(False)
        pending = set(range(len(conns)))
        deadline = time.monotonic() + 60
        answers: list[bytes] = [b""] * len(conns)
        while pending and time.monotonic() < deadline:
            peak = max(peak, threading.active_count())
            for i in list(pending):
                try:
                    chunk = conns[i].recv(4096)
                except BlockingIOError:
                    continue
                answers[i] += chunk
                if not chunk:
                    pending.discard(i)
            time.sleep(0.01)  # a sampling interval, not a wait for a condition
        assert not pending, f"{len(pending)} connections never answered"
        assert peak - base <= codec_server.MAX_HANDLERS, peak - base
        assert all(a.startswith((b"HTTP/1.0 408 ", b"HTTP/1.0 503 ")) for a in answers), {
            a[:20] for a in answers
        }
    finally:
        for c in conns:
            c.close()
        srv.shutdown()
        srv.server_close()


def test_the_codec_server_refuses_a_token_with_a_newline_and_a_bad_port_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAYLOAD_KEYS", K1)
    monkeypatch.setenv("CODEC_AUTH_TOKEN", "abc\nInjected: 1")
    with pytest.raises(SystemExit) as exited:
        codec_server.main(["--port", "38001"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: CODEC_AUTH_TOKEN: ") and "Injected" not in err
    with pytest.raises(SystemExit) as exited:
        codec_server.main(["--port", "abc"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "--port" in err and "'abc' is not a port number" in err


@pytest.mark.parametrize(
    ("argv", "keys", "expect"),
    [
        (["--port", "99999"], None, "--port: 99999 is not a port"),
        # 192.0.2.1 is no address of this machine: binding fails locally, nothing is sent
        (["--host", "192.0.2.1", "--port", "38002"], K1, "--port 38002: cannot listen"),
        ([], None, "PAYLOAD_KEYS: no keys to decode with"),
    ],
    ids=["bad-port", "host-not-here", "no-keys"],  # K1 is made per process: not in the ids
)
def test_a_codec_server_that_cannot_start_makes_no_keys(
    argv: list[str],
    keys: str | None,
    expect: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """It only reads keys: refused, it leaves the data directory as it found it (it used to
    make a payload.keys before finding the port or host unusable)."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    if keys is None:
        monkeypatch.delenv("PAYLOAD_KEYS", raising=False)
    else:
        monkeypatch.setenv("PAYLOAD_KEYS", keys)
    monkeypatch.delenv("CODEC_AUTH_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exited:
        codec_server.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert expect in err, err
    assert not (tmp_path / "data").exists()
