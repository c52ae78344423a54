"""The local Medusa store that the Medusa sync target's tests run against: it answers, its secret
key works (and a wrong one does not), it holds what a product import needs, and it stops clean."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import httpx
import pytest

from devtools import pg
from devtools.medusa import MedusaStore, MissingPrerequisite, start, store
from tests.medusa_store import MEDUSA_TIMEOUT_S, clean_medusa_store, medusa_store  # noqa: F401

pytestmark = pytest.mark.timeout(MEDUSA_TIMEOUT_S)


def test_store_answers_and_the_key_works(medusa_store: MedusaStore) -> None:  # noqa: F811
    assert httpx.get(f"{medusa_store.url}/health").status_code == 200
    with medusa_store.client() as c:
        r = c.get("/admin/products", params={"fields": "id", "limit": 1})
        assert r.status_code == 200, r.text
        assert "products" in r.json()
    wrong = httpx.get(f"{medusa_store.url}/admin/products", auth=("sk_wrong", ""))
    assert wrong.status_code == 401
    assert wrong.json() == {"message": "Unauthorized"}
    assert httpx.get(f"{medusa_store.url}/admin/products").status_code == 401
    assert medusa_store.api_key not in repr(medusa_store)


def test_store_is_ready_for_a_product_import(clean_medusa_store: MedusaStore) -> None:  # noqa: F811
    s = clean_medusa_store
    with s.client() as c:
        shop = c.get("/admin/stores").json()["stores"][0]
        assert shop["default_sales_channel_id"] == s.sales_channel_id
        assert shop["default_location_id"] == s.stock_location_id
        assert "usd" in {x["currency_code"] for x in shop["supported_currencies"]}
        tag = c.post("/admin/product-tags", json={"value": "beauty"}).json()["product_tag"]
        item = {
            "title": "Essence Mascara Lash Princess",
            "handle": "dummyjson-1",
            "external_id": "dummyjson:1",
            "status": "published",
            "tags": [{"id": tag["id"]}],
            "metadata": {"source": "dummyjson"},
            "options": [{"title": "Default", "values": ["Default"]}],
            "variants": [
                {
                    "title": "Default",
                    "sku": "BEA-ESS-ESS-001",
                    "manage_inventory": True,
                    "options": {"Default": "Default"},
                    "prices": [{"amount": 9.99, "currency_code": "usd"}],
                }
            ],
            "sales_channels": [{"id": s.sales_channel_id}],
        }
        r = c.post("/admin/products/batch", json={"create": [item]})
        assert r.status_code == 200, r.text
        created = r.json()["created"][0]
        assert created["variants"][0]["prices"][0]["amount"] == 9.99
        inv = c.get("/admin/inventory-items", params={"sku": "BEA-ESS-ESS-001"}).json()
        level = {
            "inventory_item_id": inv["inventory_items"][0]["id"],
            "location_id": s.stock_location_id,
            "stocked_quantity": 99,
        }
        r = c.post("/admin/inventory-items/location-levels/batch", json={"create": [level]})
        assert r.status_code == 200, r.text
        found = c.get("/admin/products", params={"external_id": "dummyjson:1", "fields": "id"})
        assert [p["id"] for p in found.json()["products"]] == [created["id"]]
    assert s.reset_products() == 1
    with s.client() as c:
        assert c.get("/admin/products", params={"fields": "id"}).json()["count"] == 0


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_second_store_starts_from_the_template_and_stops_clean(
    medusa_store: MedusaStore,  # noqa: F811 -- the install is there already
    tmp_path: Path,
) -> None:
    other = start(tmp_path / "other", durable=False)
    try:
        assert other.url != medusa_store.url
        assert other.api_key != medusa_store.api_key
        with other.client() as c:
            assert c.get("/admin/products", params={"fields": "id"}).json()["count"] == 0
        pids = other.pids
        ports = [httpx.URL(other.url).port, httpx.URL(other.database_url).port]
    finally:
        other.stop()
    for port in ports:
        assert port and not _port_open(port)
    assert set(pids) == {"medusa", "postgres"}
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_missing_node_or_postgres_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("PG_BINDIR", raising=False)
    monkeypatch.setattr(store, "_wheel_node", lambda: None)
    monkeypatch.setattr(pg, "_pg_candidates", lambda: iter(()))
    for find, what in ((store.find_node, "Node.js"), (store.find_postgres, "PostgreSQL")):
        with pytest.raises(MissingPrerequisite) as err:
            find()
        message = str(err.value)
        assert what in message and "install" in message and "\n" not in message
