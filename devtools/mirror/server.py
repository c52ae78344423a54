"""A local DummyJSON: answers `/products` like dummyjson.com does, from the bundled data.

Faults can be switched on for tests and demos (latency, 500s, 429 with Retry-After, malformed JSON,
a page that always fails), at start-up (`python -m devtools.mirror --help`) or at run time through
`PUT /__mirror/faults`. `PATCH /__mirror/products/<id>` changes a product, to show incremental sync;
`DELETE /__mirror/products/<id>` stops listing one, to show removal.
With API keys (`--api-key`, `PUT /__mirror/auth`) /products* needs `Authorization: Bearer <key>`.
Every `/__mirror/*` request needs `Authorization: Bearer <admin token>` (401 otherwise), so no
other local process can switch auth off or lock the real keys out; `/products*` never takes it.
"""

from __future__ import annotations

import copy
import hmac
import json
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, Field


class Faults(BaseModel):
    """What goes wrong on purpose. Rates are per `/products*` request; `*_next` count down."""

    latency_ms: int = Field(0, ge=0)
    error_rate: float = Field(0.0, ge=0, le=1)
    throttle_rate: float = Field(0.0, ge=0, le=1)
    malformed_rate: float = Field(0.0, ge=0, le=1)
    retry_after_s: int = Field(1, ge=0)
    fail_skips: list[int] = []
    fail_next: int = Field(0, ge=0)
    throttle_next: int = Field(0, ge=0)
    malformed_next: int = Field(0, ge=0)
    seed: int | None = None


def load_products() -> list[dict[str, Any]]:
    """The bundled DummyJSON products (194, MIT; LICENSE beside the data)."""
    text = (
        resources.files(__package__ or "devtools.mirror")
        .joinpath("data/products.json")
        .read_text(encoding="utf-8")
    )
    data = json.loads(text)
    return data["products"] if isinstance(data, dict) else data


UNAUTHORISED = {"message": "Invalid/Expired Token!"}  # what dummyjson.com answers a bad token
ADMIN = "/__mirror"
ADMIN_UNAUTHORISED = {
    "message": f"{ADMIN}/* needs 'Authorization: Bearer <admin token>' (the one the mirror "
    "printed, or that its --admin-token / MIRROR_ADMIN_TOKEN set)"
}


class Mirror:
    """The server and its state; `start()` serves on a background thread."""

    def __init__(
        self,
        products: list[dict[str, Any]] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        api_keys: Iterable[str] | None = None,
        admin_token: str | None = None,
    ) -> None:
        # The admin API's own credential; a random one unless given (the in-process helpers
        # below need none).
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        self._original = products if products is not None else load_products()
        self.products = copy.deepcopy(self._original)
        self.faults = faults or Faults()
        self._initial_keys = frozenset(filter(None, api_keys or ()))
        self.api_keys = self._initial_keys  # empty: no auth, as dummyjson.com's /products
        self.requests_by_key: Counter[str] = Counter()  # proves each credential was really sent
        self.stats: Counter[str] = Counter()
        self.log: list[tuple[float, str, int]] = []  # (monotonic time, path, status) per answer
        self._lock = threading.Lock()
        self._rng = random.Random(self.faults.seed)
        self._server = _Server((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None

    @property
    def admin_headers(self) -> dict[str, str]:
        """What a `/__mirror/*` request must send."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    def is_admin(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.encode(), self.admin_token.encode()
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Mirror:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.05)  # quick to stop

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    def set_api_keys(self, keys: Iterable[str]) -> None:
        with self._lock:
            self.api_keys = frozenset(filter(None, keys))  # "" could never be a Bearer token

    def authorise(self, header: str | None) -> bool:
        """Whether an `Authorization` header may read /products; counts the key it used."""
        scheme, _, key = (header or "").partition(" ")
        with self._lock:
            if not self.api_keys:
                return True
            if scheme.lower() != "bearer" or key not in self.api_keys:
                return False
            self.requests_by_key[key] += 1
            return True

    def update_product(self, product_id: int, patch: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            for product in self.products:
                if product["id"] == product_id:
                    product.update(patch)
                    return product
        return None

    def remove_product(self, product_id: int) -> bool:
        """The source stops listing a product (a sync then removes it from the target)."""
        with self._lock:
            kept = [p for p in self.products if p["id"] != product_id]
            removed = len(kept) < len(self.products)
            self.products = kept
        return removed

    def reset(self) -> None:
        with self._lock:
            self.products = copy.deepcopy(self._original)
            self.faults = Faults()
            self.api_keys = self._initial_keys  # a test's reset must not turn auth off
            self.requests_by_key.clear()
            self.stats.clear()
            self.log.clear()

    def pick_fault(self, skip: int) -> str | None:
        """Which fault, if any, this request gets; counters and rates under one lock."""
        with self._lock:
            f = self.faults
            if skip in f.fail_skips:
                return "error"
            for name in ("fail_next", "throttle_next", "malformed_next"):
                if getattr(f, name):
                    setattr(f, name, getattr(f, name) - 1)
                    return {"fail_next": "error", "throttle_next": "throttle"}.get(
                        name, "malformed"
                    )
            roll = self._rng.random()
            for kind, rate in (
                ("error", f.error_rate),
                ("throttle", f.throttle_rate),
                ("malformed", f.malformed_rate),
            ):
                if roll < rate:
                    return kind
                roll -= rate
            return None


ADMIN_BODY_MAX = 2**20  # an admin request's JSON body
READ_TIMEOUT_S = 30.0  # an idle kept-alive connection, or a body that stops short, is dropped


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is normal here; stay quiet about it."""


class BadRequest(Exception):
    pass


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    """DummyJSON checks `Number(v)` is not NaN, then parseInt: `2.9` → 2, `abc` → 400."""
    if name not in query:
        return default
    raw = query[name][0]
    try:
        return int(float(raw or 0))
    except ValueError:
        raise BadRequest(f"Invalid '{name}' - must be a number") from None


def page(
    items: list[dict[str, Any]], query: dict[str, list[str]], key: str = "products"
) -> dict[str, Any]:
    """sort, skip, limit, select, in DummyJSON's order; `limit` echoes the count returned."""
    limit = _int_param(query, "limit", 30)
    skip = _int_param(query, "skip", 0)
    sort_by = query.get("sortBy", [None])[0]
    if sort_by:
        order = query.get("order", ["asc"])[0].lower()
        if order not in ("asc", "desc"):
            raise BadRequest("Order can be: 'asc' or 'desc'")
        items = sorted(items, key=lambda p: (p.get(sort_by) is None, p.get(sort_by)))
        if order == "desc":
            items.reverse()
    total = len(items)
    if skip > 0:
        items = items[skip:]
    if limit != 0 and limit <= len(items):
        items = items[:limit]  # a negative limit drops from the end, as JS slice does
    fields = [f for raw in query.get("select", []) for f in raw.split(",") if f]
    if fields:
        keys = list(dict.fromkeys(["id", *fields]))
        items = [{k: p[k] for k in keys if k in p} for p in items]
    return {key: items, "total": total, "skip": skip, "limit": len(items)}


def _handler_for(mirror: Mirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so clients can reuse connections
        server_version = "dummyjson-mirror"

        def log_message(self, format: str, *args: Any) -> None:  # quiet by default
            pass

        def setup(self) -> None:
            super().setup()
            self.connection.settimeout(READ_TIMEOUT_S)  # each read and write

        def _send(
            self, status: int, body: Any, headers: dict[str, str] | None = None, raw: bool = False
        ) -> None:
            data = body if raw else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            with mirror._lock:
                mirror.stats[str(status)] += 1
                mirror.log.append((time.monotonic(), self.path, status))

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query, keep_blank_values=True)
            path = url.path.rstrip("/") or "/"
            if self._refused_admin(path):
                return None
            if path == "/__mirror/faults":
                return self._send(200, mirror.faults.model_dump())
            if path == "/__mirror/stats":
                return self._send(200, dict(mirror.stats))
            if path == "/__mirror/auth":
                return self._send(200, {"keys": len(mirror.api_keys)})  # never the keys
            try:
                self._products(path, query)
            except BadRequest as exc:
                self._send(400, {"message": str(exc)})

        def _refused_admin(self, path: str) -> bool:
            """Whether this is an admin request without the admin token (answered 401)."""
            if not (path == ADMIN or path.startswith(f"{ADMIN}/")):
                return False
            if mirror.is_admin(self.headers.get("Authorization")):
                return False
            self._send(401, ADMIN_UNAUTHORISED, {"WWW-Authenticate": "Bearer"})
            return True

        def _products(self, path: str, query: dict[str, list[str]]) -> None:
            is_products = path == "/products" or path.startswith("/products/")
            if is_products and not mirror.authorise(self.headers.get("Authorization")):
                return self._send(401, UNAUTHORISED)  # before validation, faults and latency
            _int_param(query, "limit", 30)  # DummyJSON validates on every route
            _int_param(query, "skip", 0)
            if not is_products:
                return self._send(404, {"message": f"Route '{path}' not found"})
            mirror.stats["requests"] += 1
            if mirror.faults.latency_ms:
                time.sleep(mirror.faults.latency_ms / 1000)
            fault = mirror.pick_fault(_int_param(query, "skip", 0))
            if fault == "error":
                return self._send(500, {"message": "Something went wrong."})
            if fault == "throttle":
                return self._send(
                    429,
                    {"message": "request limit exceeded, please wait a few seconds"},
                    {"Retry-After": str(mirror.faults.retry_after_s)},
                )
            with mirror._lock:
                products = list(mirror.products)
            rest = path.removeprefix("/products").strip("/")
            if rest == "":
                body: Any = page(products, query)
            elif rest == "search":
                q = query.get("q", [""])[0].strip().lower().replace("-", " ")
                hits = [
                    p
                    for p in products
                    if q in p["title"].lower() or q in p.get("description", "").lower()
                ]
                body = page(hits, query)
            elif rest == "category-list":
                body = list(dict.fromkeys(p["category"] for p in products))
            elif rest.startswith("category/"):
                slug = rest.removeprefix("category/").lower()
                body = page([p for p in products if p["category"].lower() == slug], query)
            else:
                found = [p for p in products if str(p["id"]) == rest]
                if not found:
                    return self._send(404, {"message": f"Product with id '{rest}' not found"})
                body = found[0]
            if fault == "malformed":
                return self._send(200, json.dumps(body).encode()[:-7], raw=True)
            self._send(200, body)

        def _admin(self) -> None:
            """PUT faults or auth, PATCH a product, POST reset. The body is read first, whatever the
            path, so a 401 or 404 never leaves it on a kept-alive connection."""
            given = (self.headers.get("Content-Length") or "0").strip()
            if not given.isdigit() or int(given) > ADMIN_BODY_MAX:
                self.close_connection = True  # the body's end is unknown: nothing more is read
                return self._send(
                    400, {"message": f"Content-Length must be 0 to {ADMIN_BODY_MAX} bytes"}
                )
            try:
                raw = self.rfile.read(int(given))
            except TimeoutError:
                self.close_connection = True
                return self._send(408, {"message": f"body shorter than Content-Length {given}"})
            path = urlsplit(self.path).path
            if self._refused_admin(path):
                return None
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                return self._send(400, {"message": "body must be JSON"})
            product_id = path.removeprefix("/__mirror/products/")
            if (self.command, path) == ("PUT", "/__mirror/faults"):
                try:
                    mirror.set_faults(Faults.model_validate(body))
                except ValueError as exc:
                    return self._send(400, {"message": str(exc).splitlines()[0]})
                return self._send(200, mirror.faults.model_dump())
            if (self.command, path) == ("PUT", "/__mirror/auth"):
                keys = body.get("keys") if isinstance(body, dict) else None
                if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
                    return self._send(400, {"message": '{"keys": [non-empty strings]} expected'})
                mirror.set_api_keys(keys)
                return self._send(200, {"keys": len(mirror.api_keys)})
            if self.command == "PATCH" and product_id != path and product_id.isdigit():
                product = mirror.update_product(int(product_id), body)
                if product is None:
                    return self._send(404, {"message": f"Product with id '{product_id}' not found"})
                return self._send(200, product)
            if self.command == "DELETE" and product_id != path and product_id.isdigit():
                if not mirror.remove_product(int(product_id)):
                    return self._send(404, {"message": f"Product with id '{product_id}' not found"})
                return self._send(200, {"removed": int(product_id)})
            if (self.command, path) == ("POST", "/__mirror/reset"):
                mirror.reset()
                return self._send(200, {"reset": True})
            self._send(404, {"message": f"Route '{path}' not found"})

        do_PUT = do_PATCH = do_POST = do_DELETE = _admin

    return Handler
