"""The DummyJSON mirror over real HTTP: paging, select, errors, sort, faults, admin, auth, CLI."""

from __future__ import annotations

import json
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


def test_put_faults_at_run_time(client: httpx.Client) -> None:
    bad = client.put("/__mirror/faults", json={"error_rate": 2})
    assert bad.status_code == 400 and bad.json()["message"]
    assert get_ok(client, "/__mirror/faults") == Faults().model_dump()  # unchanged

    r = client.put("/__mirror/faults", json={"fail_next": 1, "latency_ms": 5})
    assert r.status_code == 200
    assert get_ok(client, "/__mirror/faults") == Faults(fail_next=1, latency_ms=5).model_dump()
    assert client.get("/products").status_code == 500
    assert get_ok(client)["total"] == 194


def test_patch_product_then_reset(client: httpx.Client) -> None:
    original = get_ok(client, "/products/7")
    r = client.patch("/__mirror/products/7", json={"price": 1.23, "title": "Changed"})
    assert r.status_code == 200
    assert get_ok(client, "/products/7") == {**original, "price": 1.23, "title": "Changed"}
    assert get_ok(client, skip=6, limit=1)["products"][0]["title"] == "Changed"

    assert client.put("/__mirror/faults", json={"fail_next": 3}).status_code == 200
    assert client.post("/__mirror/reset").status_code == 200
    assert get_ok(client, "/products/7") == original  # data back, no failure left
    assert get_ok(client, "/__mirror/faults") == Faults().model_dump()


def client_port(r: httpx.Response) -> int:
    return r.extensions["network_stream"].get_extra_info("client_addr")[1]


def test_keep_alive_reuses_one_connection(client: httpx.Client) -> None:
    responses = [client.get("/products", params={"skip": s, "limit": 10}) for s in range(0, 50, 10)]
    ports = {client_port(r) for r in responses}
    responses += [
        client.patch("/__mirror/products/3", json={"stock": 1}),
        client.put("/__mirror/faults", json={}),
        client.post("/__mirror/reset"),
        client.get("/products/3"),
    ]
    assert [r.status_code for r in responses] == [200] * 9
    assert len(ports | {client_port(responses[-1])}) == 1


def test_admin_404_with_body_keeps_connection_usable(client: httpx.Client) -> None:
    assert client.patch("/__mirror/products/abc", json={"price": 1}).status_code == 404
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


def test_no_keys_no_auth(mirror: Mirror, client: httpx.Client) -> None:
    assert get_ok(client, "/__mirror/auth") == {"keys": 0}
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


def test_admin_needs_no_auth(kclient: httpx.Client) -> None:
    responses = [
        kclient.get("/__mirror/faults"),
        kclient.get("/__mirror/stats"),
        kclient.get("/__mirror/auth"),
        kclient.put("/__mirror/faults", json={}),
        kclient.patch("/__mirror/products/3", json={"stock": 1}),
        kclient.post("/__mirror/reset"),
    ]
    assert [r.status_code for r in responses] == [200] * 6
    assert kclient.get("/no/such/path").status_code == 404  # not a /products route: no 401


def test_put_auth_switches_live(mirror: Mirror, client: httpx.Client) -> None:
    r = client.put("/__mirror/auth", json={"keys": ["live-secret", "other"]})
    assert (r.status_code, r.json()) == (200, {"keys": 2})
    assert client.get("/products").status_code == 401
    assert client.get("/products/1", headers=bearer("live-secret")).status_code == 200
    got = client.get("/__mirror/auth")
    assert got.json() == {"keys": 2} and "secret" not in got.text  # never the keys themselves

    assert client.put("/__mirror/auth", json={"keys": []}).json() == {"keys": 0}
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
def test_put_auth_bad_body(kclient: httpx.Client, body: Any) -> None:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    r = kclient.put("/__mirror/auth", content=content)
    assert r.status_code == 400
    message = r.json()["message"]
    assert message and "\n" not in message
    assert get_ok(kclient, "/__mirror/auth") == {"keys": 2}  # unchanged


def test_reset_keeps_constructor_keys(keyed: Mirror, kclient: httpx.Client) -> None:
    assert kclient.get("/products", headers=bearer("k2")).status_code == 200
    assert kclient.put("/__mirror/auth", json={"keys": []}).status_code == 200
    assert kclient.get("/products").status_code == 200
    assert kclient.post("/__mirror/reset").status_code == 200
    assert get_ok(kclient, "/__mirror/auth") == {"keys": 2}
    assert kclient.get("/products").status_code == 401
    assert not keyed.requests_by_key


def test_cli_api_key() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.mirror",
            "--port",
            "0",
            "--api-key",
            "k1",
            "--api-key",
            "k2",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("DummyJSON mirror on http://127.0.0.1:"), line
        url = line.split()[3].removesuffix("/products")
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/products").status_code == 401
            assert [c.get("/products", headers=bearer(k)).status_code for k in KEYS] == [200] * 2
            assert c.get("/__mirror/auth").json() == {"keys": 2}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
