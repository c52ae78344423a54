"""The codec server: `/encode` and `/decode` over HTTP, as the Temporal Web UI and CLI call them,
so a person with access to it reads inputs and results that the server stores encrypted.

    python -m client.codec_server [--port 8234] [--ui-origin http://localhost:8233]
    temporal workflow show -w ID --codec-endpoint http://127.0.0.1:8234 [--codec-auth "Bearer T"]

The UI calls it from the browser as `POST <endpoint>/decode?preserveStorageRefs=true` with
`X-Namespace`, after a CORS preflight: the action is the path's last segment (the codec protocol;
query strings are ignored), and only the UI's own origins get CORS headers, for whichever request
headers the UI asks to send; other browser origins are refused. With CODEC_AUTH_TOKEN set every
request needs `Authorization: Bearer <it>`. A connection that stays idle or sends a short body is
dropped after a read timeout, so it never holds a thread. It holds the payload keys: bind it to
127.0.0.1 (the default) or put it behind your own auth.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import re
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from client.codec import Keyring, KeyringError
from client.errors import ConfigError, OneLineParser, exit_on_user_error, port
from client.settings import load_settings

MAX_BODY = 16 * 1024 * 1024  # a history event's payloads are at most a few MB
DEFAULT_PORT = 8234
DEFAULT_ORIGINS = ("http://localhost:8233", "http://127.0.0.1:8233")
READ_TIMEOUT_S = 10.0  # an idle connection, or a body that stops short, is dropped after it
# A preflight's Access-Control-Request-Headers: a comma-separated list of header names (tokens).
_HEADER_LIST = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*,\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")
# What the UI sends (Content-Type, X-Namespace; Authorization when it passes its access token),
# allowed when a preflight names none.
ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"
PREFLIGHT_MAX_AGE_S = 600  # the browser reuses a preflight's answer this long
MAX_HANDLERS = 32  # connections served at once; more wait (up to the read timeout), then 503
# Bytes in protobuf's JSON: base64, standard or URL-safe, padded or not.
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_BUSY_BODY = b'{"message": "busy: too many connections; try again"}'
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)
_TOKEN = re.compile(r"[\x21-\x7e]+")  # a bearer token: one line of visible ASCII


def _not_base64(body: bytes) -> str | None:
    """Where the body's payloads hold bytes that are not base64, or None (protobuf's JSON
    parser would read such text as fewer, or no, bytes: an empty payload, answered 200)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None  # the protobuf parser names what is wrong
    payloads = doc.get("payloads") if isinstance(doc, dict) else None
    for i, item in enumerate(payloads if isinstance(payloads, list) else []):
        if not isinstance(item, dict):
            continue
        metadata = item.get("metadata")
        fields = {"data": item.get("data")} | {
            f"metadata.{k}": v for k, v in (metadata if isinstance(metadata, dict) else {}).items()
        }
        for name, value in fields.items():
            if isinstance(value, str) and not _is_base64(value):
                return f"payloads[{i}].{name}: not base64"
    return None


def _is_base64(text: str) -> bool:
    if not _BASE64.fullmatch(text):
        return False
    core = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        base64.b64decode(core + "=" * (-len(core) % 4), validate=True)
    except binascii.Error:
        return False
    return True


class CodecServer(ThreadingHTTPServer):
    """One keyring, the allowed browser origins and an optional token, for every request."""

    daemon_threads = True
    # Connections the kernel holds until accepted (socketserver's 5 drops a burst's packets,
    # which then arrive only after TCP's retransmit delay, past the read timeout).
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        keyring: Keyring,
        *,
        origins: tuple[str, ...] = DEFAULT_ORIGINS,
        token: str | None = None,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        super().__init__(address, _Handler)
        self.keyring = keyring
        self.origins = origins
        self.token = token
        self.read_timeout_s = read_timeout_s
        self._slots = threading.BoundedSemaphore(MAX_HANDLERS)

    def process_request(self, request: Any, client_address: Any) -> None:
        """At most MAX_HANDLERS threads: a connection beyond them waits for a free one as long
        as a read may take, then gets a 503 (300 stalled clients hold 32 threads, not 300)."""
        if not self._slots.acquire(timeout=self.read_timeout_s):
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: CodecServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.read_timeout_s)  # each read and write

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # request lines only add noise; payloads are never logged

    def _origin_ok(self) -> bool:
        """A request from a browser page must come from the UI; the CLI and curl send no Origin."""
        origin = self.headers.get("Origin")
        return origin is None or origin in self.server.origins

    def _reply(
        self, status: int, body: dict[str, Any] | None = None, cors: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        origin = self.headers.get("Origin")
        if origin is not None and origin in self.server.origins:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Credentials", "true")
            for name, value in (cors or {}).items():
                self.send_header(name, value)
            self.send_header("Vary", "Origin")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_OPTIONS(self) -> None:  # noqa: N802 (the http.server naming)
        """The CORS preflight: the UI's origin may POST with the headers it asks for."""
        if not self._origin_ok():
            return self._reply(403)
        asked = self.headers.get("Access-Control-Request-Headers", "").strip()
        headers = asked if _HEADER_LIST.fullmatch(asked) else ALLOWED_HEADERS
        cors = {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": headers,
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
        }
        if self.headers.get("Access-Control-Request-Private-Network") == "true":
            # Chromium asks this when a page on a LAN or public address calls 127.0.0.1.
            cors["Access-Control-Allow-Private-Network"] = "true"
        self._reply(204, cors=cors)

    def _content_length(self) -> int | None:
        """The declared length; None when it is not a whole number."""
        given = (self.headers.get("Content-Length") or "0").strip()
        return int(given) if given.isdigit() else None

    def do_POST(self) -> None:  # noqa: N802
        # The last path segment names the action (the codec protocol), so the server may be
        # mounted under any prefix; the UI adds a query string (`?preserveStorageRefs=true`).
        action = urlsplit(self.path).path.rstrip("/").rsplit("/", 1)[-1]
        transform: dict[str, Callable[[Payload], Payload]] = {
            "encode": self.server.keyring.encrypt,
            "decode": self.server.keyring.decrypt,
        }
        if action not in transform:
            return self._reply(404, {"message": "POST /encode or /decode"})
        if not self._origin_ok():
            return self._reply(403, {"message": "origin not allowed"})
        if self.server.token is not None and not hmac.compare_digest(
            self.headers.get("Authorization", "").encode(),
            f"Bearer {self.server.token}".encode(),
        ):
            return self._reply(401, {"message": "a bearer token is required"})
        length = self._content_length()
        if length is None:
            self.close_connection = True  # the body's end is unknown: nothing more is read
            return self._reply(400, {"message": "Content-Length: not a whole number of bytes"})
        if not 0 < length <= MAX_BODY:
            return self._reply(413, {"message": f"body must be 1 to {MAX_BODY} bytes"})
        try:
            body = self.rfile.read(length)
        except TimeoutError:  # fewer bytes than Content-Length said, then silence
            self.close_connection = True
            return self._reply(408, {"message": f"body shorter than Content-Length {length}"})
        problem = _not_base64(body)
        if problem:
            return self._reply(400, {"message": problem})
        try:
            payloads = json_format.Parse(body, Payloads())
            out = Payloads(payloads=[transform[action](p) for p in payloads.payloads])
        except (json_format.ParseError, KeyringError, ValueError) as exc:
            return self._reply(400, {"message": str(exc).splitlines()[0]})
        self._reply(200, json_format.MessageToDict(out))


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(
        prog="python -m client.codec_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port, default=DEFAULT_PORT)
    p.add_argument(
        "--ui-origin",
        action="append",
        default=None,
        help=f"the Web UI's origin for CORS (repeatable; default {' '.join(DEFAULT_ORIGINS)})",
    )
    args = p.parse_args(argv)

    def serve() -> int:
        settings = load_settings()
        keyring = settings.existing_keyring()  # reads keys, never makes them
        if keyring is None:
            raise ConfigError(
                f"PAYLOAD_KEYS: no keys to decode with (none set, no {settings.payload_keys_path});"
                " set PAYLOAD_KEYS, or DATA_DIR to the data directory of the stack whose "
                "payloads you read"
            )
        token = settings.codec_auth_token
        if token is not None and not _TOKEN.fullmatch(token.get_secret_value()):
            raise ConfigError(
                "CODEC_AUTH_TOKEN: holds a space, a newline or another control character; a "
                "bearer token is one line of visible characters (set it again)"
            )
        try:
            server = CodecServer(
                (args.host, args.port),
                keyring,
                origins=tuple(args.ui_origin or DEFAULT_ORIGINS),
                token=token.get_secret_value() if token else None,
            )
        except OSError as exc:
            raise ConfigError(f"--port {args.port}: cannot listen ({exc.strerror})") from None
        print(f"codec server on {server.url} (keys: {len(keyring.keys)})", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return 0

    return int(exit_on_user_error(serve))


if __name__ == "__main__":
    sys.exit(main())
