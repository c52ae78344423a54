"""The DummyJSON mirror over real HTTP: paging, select, errors, sort, faults, admin, auth, CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.mirror import Faults, Mirror

ROOT = Path(__file__).resolve().parent.parent
ALL_IDS = list(range(1, 195))


@pytest.fixture
def client(mirror: Mirror) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mirror.url, timeout=10) as c:
        yield c


def get_ok(client: httpx.Client, path: str = "/products", /, **params: Any) -> Any:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def admin_get(client: httpx.Client, path: str, headers: dict[str, str]) -> Any:
    r = client.get(path, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def admin(mirror: Mirror) -> dict[str, str]:
    """The headers of an admin (/__mirror/*) request to the `mirror` fixture."""
    return mirror.admin_headers


@pytest.mark.parametrize(
    ("params", "ids", "skip"),
    [
        ({"limit": 5, "skip": 10}, ALL_IDS[10:15], 10),
        ({"limit": 15, "skip": 180}, ALL_IDS[180:], 180),  # last page: 14 left
        ({"limit": 10, "skip": 200}, [], 200),  # past the end
        ({"limit": 0}, ALL_IDS, 0),  # 0 means everything
        ({}, ALL_IDS[:30], 0),  # default limit 30
    ],
)
def test_paging(client: httpx.Client, params: dict[str, int], ids: list[int], skip: int) -> None:
    body = get_ok(client, **params)
    assert [p["id"] for p in body["products"]] == ids
    assert (body["total"], body["skip"], body["limit"]) == (194, skip, len(ids))


@pytest.mark.parametrize(
    ("select", "keys"),
    [
        ("title,price", ["id", "title", "price"]),
        ("price,id", ["id", "price"]),  # id always first, never twice
        ("title,nope", ["id", "title"]),  # unknown key dropped
    ],
)
def test_select(client: httpx.Client, select: str, keys: list[str]) -> None:
    body = get_ok(client, limit=3, select=select)
    assert [list(p) for p in body["products"]] == [keys] * 3


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "abc"}, "Invalid 'limit' - must be a number"),
        ({"skip": "abc"}, "Invalid 'skip' - must be a number"),
        ({"limit": "x", "skip": "y"}, "Invalid 'limit' - must be a number"),  # limit first
        ({"sortBy": "price", "order": "up"}, "Order can be: 'asc' or 'desc'"),
    ],
)
def test_bad_request(client: httpx.Client, params: dict[str, str], message: str) -> None:
    r = client.get("/products", params=params)
    assert (r.status_code, r.json()) == (400, {"message": message})


@pytest.mark.parametrize(
    ("path", "message"),
    [("/products/99999", "Product with id '99999' not found"), ("/no/such/path", None)],
)
def test_not_found_is_json(client: httpx.Client, path: str, message: str | None) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    got = r.json()["message"]
    assert got == message if message else isinstance(got, str) and got


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sort(client: httpx.Client, order: str) -> None:
    prices = [p["price"] for p in get_ok(client, limit=0, sortBy="price", order=order)["products"]]
    assert len(prices) == 194
    assert prices == sorted(prices, reverse=order == "desc")
    assert prices[0] != prices[-1]


def test_fail_skips_always_fails_that_page_only(mirror: Mirror, client: httpx.Client) -> None:
    mirror.set_faults(Faults(fail_skips=[15]))
    assert [client.get("/products", params={"skip": 15}).status_code for _ in range(3)] == [500] * 3
    assert len(get_ok(client, skip=0, limit=15)["products"]) == 15


@pytest.mark.parametrize(
    ("faults", "status"),
    [
        ({"fail_next": 1}, 500),
        ({"throttle_next": 1, "retry_after_s": 7}, 429),
        ({"malformed_next": 1}, 200),
    ],
)
def test_one_shot_faults(
    mirror: Mirror, client: httpx.Client, faults: dict[str, int], status: int
) -> None:
    mirror.set_faults(Faults.model_validate(faults))
    first = client.get("/products")
    assert first.status_code == status
    if status == 429:
        assert first.headers["Retry-After"] == "7"
    if status == 200:
        with pytest.raises(json.JSONDecodeError):
            first.json()
    assert get_ok(client)["total"] == 194  # the next one is fine


def test_error_rate_one_always_fails(mirror: Mirror, client: httpx.Client) -> None:
    mirror.set_faults(Faults(error_rate=1.0))
    assert {client.get("/products", params={"skip": s}).status_code for s in range(5)} == {500}


def test_latency(mirror: Mirror, client: httpx.Client) -> None:
    mirror.set_faults(Faults(latency_ms=150))
    start = time.monotonic()
    get_ok(client, limit=1)
    assert time.monotonic() - start >= 0.15


def test_put_faults_at_run_time(client: httpx.Client, admin: dict[str, str]) -> None:
    bad = client.put("/__mirror/faults", json={"error_rate": 2}, headers=admin)
    assert bad.status_code == 400 and bad.json()["message"]
    assert admin_get(client, "/__mirror/faults", admin) == Faults().model_dump()  # unchanged

    r = client.put("/__mirror/faults", json={"fail_next": 1, "latency_ms": 5}, headers=admin)
    assert r.status_code == 200
    want = Faults(fail_next=1, latency_ms=5).model_dump()
    assert admin_get(client, "/__mirror/faults", admin) == want
    assert client.get("/products").status_code == 500
    assert get_ok(client)["total"] == 194


def test_patch_product_then_reset(client: httpx.Client, admin: dict[str, str]) -> None:
    original = get_ok(client, "/products/7")
    r = client.patch(
        "/__mirror/products/7", json={"price": 1.23, "title": "Changed"}, headers=admin
    )
    assert r.status_code == 200
    assert get_ok(client, "/products/7") == {**original, "price": 1.23, "title": "Changed"}
    assert get_ok(client, skip=6, limit=1)["products"][0]["title"] == "Changed"

    assert client.put("/__mirror/faults", json={"fail_next": 3}, headers=admin).status_code == 200
    assert client.post("/__mirror/reset", headers=admin).status_code == 200
    assert get_ok(client, "/products/7") == original  # data back, no failure left
    assert admin_get(client, "/__mirror/faults", admin) == Faults().model_dump()


def client_port(r: httpx.Response) -> int:
    return r.extensions["network_stream"].get_extra_info("client_addr")[1]


def test_keep_alive_reuses_one_connection(client: httpx.Client, admin: dict[str, str]) -> None:
    responses = [client.get("/products", params={"skip": s, "limit": 10}) for s in range(0, 50, 10)]
    ports = {client_port(r) for r in responses}
    responses += [
        client.patch("/__mirror/products/3", json={"stock": 1}, headers=admin),
        client.put("/__mirror/faults", json={}, headers=admin),
        client.post("/__mirror/reset", headers=admin),
        client.get("/products/3"),
    ]
    assert [r.status_code for r in responses] == [200] * 9
    assert len(ports | {client_port(responses[-1])}) == 1


def test_admin_404_with_body_keeps_connection_usable(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    r = client.patch("/__mirror/products/abc", json={"price": 1}, headers=admin)
    assert r.status_code == 404
    assert client.get("/products/1").status_code == 200


def test_admin_401_with_body_keeps_connection_usable(client: httpx.Client) -> None:
    assert client.put("/__mirror/faults", content=b"not json").status_code == 401  # not 400
    assert client.get("/products/1").status_code == 200


def test_cli_rejects_bad_error_rate() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "devtools.mirror", "--error-rate", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "--error-rate" in lines[0]


KEYS = ["k1", "k2"]
PRODUCT_PATHS = ["/products", "/products/category/beauty", "/products/1", "/products/search"]


@pytest.fixture
def keyed() -> Iterator[Mirror]:
    m = Mirror(api_keys=KEYS).start()
    yield m
    m.stop()


@pytest.fixture
def kclient(keyed: Mirror) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=keyed.url, timeout=10) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_no_keys_no_auth(mirror: Mirror, client: httpx.Client, admin: dict[str, str]) -> None:
    assert admin_get(client, "/__mirror/auth", admin) == {"keys": 0}
    assert client.get("/products", headers=bearer("anything")).status_code == 200
    assert get_ok(client)["total"] == 194
    assert not mirror.requests_by_key  # nothing checked, nothing counted


@pytest.mark.parametrize("auth", [None, "Bearer nope", "Basic azE6", "k1", "Bearer", "Bearer k1x"])
@pytest.mark.parametrize("path", PRODUCT_PATHS)
def test_keys_required(kclient: httpx.Client, auth: str | None, path: str) -> None:
    headers = {"Authorization": auth} if auth else {}
    r = kclient.get(path, headers=headers, params={"limit": "abc"})  # 401 before validation
    assert (r.status_code, r.json()) == (401, {"message": "Invalid/Expired Token!"})


def test_right_keys_pass_and_are_counted(keyed: Mirror, kclient: httpx.Client) -> None:
    for path in PRODUCT_PATHS[:3]:
        assert kclient.get(path, headers=bearer("k1")).status_code == 200, path
    body = kclient.get("/products/category/beauty", headers={"Authorization": "bearer k2"}).json()
    assert body["products"] and {p["category"] for p in body["products"]} == {"beauty"}
    assert kclient.get("/products", headers=bearer("k3")).status_code == 401
    assert keyed.requests_by_key == {"k1": 3, "k2": 1}


def test_401_before_faults_and_latency(keyed: Mirror, kclient: httpx.Client) -> None:
    keyed.set_faults(Faults(fail_next=1, latency_ms=500))
    start = time.monotonic()
    assert [kclient.get("/products").status_code for _ in range(3)] == [401] * 3
    assert time.monotonic() - start < 0.5  # three refusals, none delayed
    assert keyed.faults.fail_next == 1  # not used up by the refused requests
    assert kclient.get("/products", headers=bearer("k1")).status_code == 500


ADMIN_CALLS: list[tuple[str, str, Any]] = [
    ("GET", "/__mirror/faults", None),
    ("GET", "/__mirror/stats", None),
    ("GET", "/__mirror/auth", None),
    ("PUT", "/__mirror/faults", {"error_rate": 1}),
    ("PUT", "/__mirror/auth", {"keys": ["mine"]}),
    ("PATCH", "/__mirror/products/3", {"stock": 1}),
    ("POST", "/__mirror/reset", None),
]


def admin_call(
    client: httpx.Client, call: tuple[str, str, Any], headers: dict[str, str]
) -> httpx.Response:
    method, path, body = call
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(
    "auth", [None, "Bearer nope", "Bearer k1", "Basic azE6", "Bearer", "TOKEN", "Bearer TOKENx"]
)
def test_admin_refuses_all_but_the_admin_token(
    keyed: Mirror, kclient: httpx.Client, auth: str | None
) -> None:
    """No local process without the token switches auth off, locks the keys out or breaks the
    data; an API key is not an admin token (and the token is not an API key)."""
    header = auth.replace("TOKEN", keyed.admin_token) if auth else None
    headers = {"Authorization": header} if header else {}
    for call in ADMIN_CALLS + [("GET", "/__mirror", None), ("GET", "/__mirror/nope", None)]:
        r = admin_call(kclient, call, headers)
        assert r.status_code == 401, call
        assert "admin token" in r.json()["message"]
    assert keyed.api_keys == frozenset(KEYS) and keyed.faults == Faults()  # nothing changed
    assert keyed.products[2]["stock"] != 1


def test_admin_token_opens_the_admin_api_only(keyed: Mirror, kclient: httpx.Client) -> None:
    responses = [admin_call(kclient, call, keyed.admin_headers) for call in ADMIN_CALLS]
    assert [r.status_code for r in responses] == [200] * len(ADMIN_CALLS)
    assert kclient.get("/products", headers=keyed.admin_headers).status_code == 401  # no key
    assert kclient.get("/no/such/path").status_code == 404  # not a /products route: no 401


def test_admin_token_given() -> None:
    m = Mirror(admin_token="chosen").start()
    try:
        with httpx.Client(base_url=m.url, timeout=10) as c:
            assert c.get("/__mirror/auth", headers=bearer("chosen")).status_code == 200
            assert Mirror().admin_token != Mirror().admin_token  # random when not given
    finally:
        m.stop()


def test_put_auth_switches_live(
    mirror: Mirror, client: httpx.Client, admin: dict[str, str]
) -> None:
    r = client.put("/__mirror/auth", json={"keys": ["live-secret", "other"]}, headers=admin)
    assert (r.status_code, r.json()) == (200, {"keys": 2})
    assert client.get("/products").status_code == 401
    assert client.get("/products/1", headers=bearer("live-secret")).status_code == 200
    got = client.get("/__mirror/auth", headers=admin)
    assert got.json() == {"keys": 2} and "secret" not in got.text  # never the keys themselves

    assert client.put("/__mirror/auth", json={"keys": []}, headers=admin).json() == {"keys": 0}
    assert get_ok(client)["total"] == 194
    assert mirror.requests_by_key == {"live-secret": 1}


def test_set_api_keys(mirror: Mirror, client: httpx.Client) -> None:
    mirror.set_api_keys(["py"])
    assert client.get("/products").status_code == 401
    assert client.get("/products", headers=bearer("py")).status_code == 200


@pytest.mark.parametrize(
    "body",
    [[], {}, {"keys": "k1"}, {"keys": [""]}, {"keys": [1]}, {"keys": None}, "not json"],
)
def test_put_auth_bad_body(keyed: Mirror, kclient: httpx.Client, body: Any) -> None:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    r = kclient.put("/__mirror/auth", content=content, headers=keyed.admin_headers)
    assert r.status_code == 400
    message = r.json()["message"]
    assert message and "\n" not in message
    assert admin_get(kclient, "/__mirror/auth", keyed.admin_headers) == {"keys": 2}  # unchanged


def test_reset_keeps_constructor_keys(keyed: Mirror, kclient: httpx.Client) -> None:
    admin = keyed.admin_headers
    assert kclient.get("/products", headers=bearer("k2")).status_code == 200
    assert kclient.put("/__mirror/auth", json={"keys": []}, headers=admin).status_code == 200
    assert kclient.get("/products").status_code == 200
    assert kclient.post("/__mirror/reset", headers=admin).status_code == 200
    assert admin_get(kclient, "/__mirror/auth", admin) == {"keys": 2}
    assert kclient.get("/products").status_code == 401
    assert not keyed.requests_by_key


def serve_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`python -m devtools.mirror --port 0 ARGS`, with its output readable line by line."""
    return subprocess.Popen(
        [sys.executable, "-m", "devtools.mirror", "--port", "0", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_cli_api_key_and_a_printed_admin_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MIRROR_ADMIN_TOKEN"}
    proc = serve_cli("--api-key", "k1", "--api-key", "k2", env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("DummyJSON mirror on http://127.0.0.1:"), line
        url = line.split()[3].removesuffix("/products")
        admin_line = proc.stdout.readline()
        assert admin_line.startswith(f"admin API {url}/__mirror/* token: "), admin_line
        token = admin_line.split()[-1]
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/products").status_code == 401
            assert [c.get("/products", headers=bearer(k)).status_code for k in KEYS] == [200] * 2
            assert c.get("/__mirror/auth").status_code == 401
            assert c.get("/__mirror/auth", headers=bearer(token)).json() == {"keys": 2}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_cli_admin_token_given_is_used_and_not_printed(how: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MIRROR_ADMIN_TOKEN"}
    args: list[str] = []
    if how == "flag":
        args = ["--admin-token", "given-token"]
    else:
        env["MIRROR_ADMIN_TOKEN"] = "given-token"
    proc = serve_cli(*args, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[3].removesuffix("/products")
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.put("/__mirror/auth", json={"keys": ["x"]}).status_code == 401
            assert c.get("/__mirror/auth", headers=bearer("given-token")).json() == {"keys": 0}
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "given-token" not in out


@pytest.mark.parametrize("length", ["-1", "abc", str(2**21)])
def test_a_bad_content_length_on_put_faults_is_a_400_not_a_held_connection(
    mirror: Mirror, admin: dict[str, str], length: str
) -> None:
    """`Content-Length: -1` would read until the client hangs up: a 400 at once, then closed."""
    head = "".join(f"{k}: {v}\r\n" for k, v in admin.items())
    port = int(mirror.url.rsplit(":", 1)[1].rstrip("/"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(
            f"PUT /__mirror/faults HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {length}\r\n\r\n"
            '{"latency_ms": 5}'.encode()
        )
        reply = raw.makefile("rb").read()  # the answer, then the server closes
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    assert b"Content-Length must be 0 to" in reply
    assert mirror.faults == Faults()  # unchanged
