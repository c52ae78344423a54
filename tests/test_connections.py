"""The connection registry: the store on a real SQLite file and a real PostgreSQL, and
`starter.py connections` as a user runs it (a real process; no Temporal server, since these
commands never talk to one)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError
from sqlalchemy import inspect
from temporalio.exceptions import ApplicationError

from activities.catalog import CatalogProduct, SqliteCatalog, Variant
from activities.connections import (
    Connection,
    ConnectionExists,
    ConnectionKeyMismatch,
    ConnectionNotFound,
    ConnectionStore,
    NewConnection,
)
from activities.db import Database
from activities.dummyjson import DummyJSONClient
from activities.models import SourceRequest
from activities.sync_products import SyncProductsActivities
from tests.conftest import TEST_CONNECTIONS_KEY, rows_of, sql

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk_test_8f3a9c2e71d64b05"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


@pytest.fixture
def store(app_db: Database) -> ConnectionStore:
    return ConnectionStore(app_db, TEST_CONNECTIONS_KEY)


def new(id: str, **fields: Any) -> NewConnection:
    return NewConnection.model_validate({"name": f"shop {id}", "api_key": KEY, "id": id, **fields})


def rows(db: Database | Path) -> list[tuple[Any, ...]]:
    """The raw table, key included: what 'nothing written' is checked against."""
    return [tuple(r) for r in sql(db, "SELECT * FROM connections ORDER BY id")]


# --- the store -------------------------------------------------------------------------------


def test_add_get_and_list_ordered_by_id(store: ConnectionStore) -> None:
    for cid in ("shop-b", "shop-a", "shop-c"):
        store.add(new(cid))
    assert [c.id for c in store.list()] == ["shop-a", "shop-b", "shop-c"]
    got = store.get("shop-a")
    assert isinstance(got, Connection)
    assert (got.api_code, got.name, got.scope) == ("dummyjson", "shop shop-a", None)
    assert got.active
    assert got.api_key.get_secret_value() == KEY
    assert got.created_at.tzinfo is not None and got.created_at.utcoffset() == timedelta(0)
    assert got.created_at == got.updated_at
    assert store.get("nope") is None


def test_list_filters_by_api_code_and_active(store: ConnectionStore) -> None:
    store.add(new("a", api_code="dummyjson"))
    store.add(new("b", api_code="fakestore"))
    store.add(new("c", api_code="dummyjson", active=False))
    store.add(new("d", api_code="fakestore", active=False))
    assert [c.id for c in store.list(api_code="dummyjson")] == ["a", "c"]
    assert [c.id for c in store.list(active_only=True)] == ["a", "b"]
    assert [c.id for c in store.list(api_code="fakestore", active_only=True)] == ["b"]
    assert store.list(api_code="nothing") == []


def test_add_refuses_an_existing_id_unless_replace(store: ConnectionStore) -> None:
    first = store.add(new("shop", scope="smartphones"))
    before = rows(store.db)
    with pytest.raises(ConnectionExists, match="connection 'shop' exists; pass --replace"):
        store.add(new("shop", name="other"))
    assert rows(store.db) == before

    replaced = store.add(new("shop", name="renamed", api_key="sk_new", active=False), replace=True)
    assert replaced.created_at == first.created_at
    assert replaced.updated_at > first.updated_at
    assert store.get("shop") == replaced
    assert (replaced.name, replaced.scope, replaced.active) == ("renamed", None, False)
    assert replaced.api_key.get_secret_value() == "sk_new"
    assert store.add(new("fresh"), replace=True).created_at is not None  # replace also adds


def test_set_active(store: ConnectionStore) -> None:
    added = store.add(new("shop"))
    off = store.set_active("shop", False)
    assert not off.active and off.updated_at > added.updated_at
    assert store.require("shop") == off
    assert store.set_active("shop", False) == off  # already off: a no-op, updated_at kept
    assert store.set_active("shop", True).active
    with pytest.raises(ConnectionNotFound):
        store.set_active("nope", True)


def test_remove_and_not_found(store: ConnectionStore) -> None:
    store.add(new("shop"))
    assert store.remove("shop") is True
    assert store.remove("shop") is False
    assert store.get("shop") is None
    with pytest.raises(ConnectionNotFound) as exc:
        store.require("shop")
    assert str(exc.value) == "no connection 'shop'; `starter.py connections list` shows them"


def test_the_key_is_secret_in_every_rendering(store: ConnectionStore) -> None:
    conn = store.add(new("shop"))
    for text in (repr(conn), str(conn), conn.model_dump_json(), repr(store.list())):
        assert KEY not in text
    assert conn.model_dump(mode="json")["api_key"] == "**********"


def file_bytes(db_path: Path) -> bytes:
    """Everything SQLite keeps on disk for the database: the file and its write-ahead log."""
    return b"".join(
        p.read_bytes() for p in (db_path, db_path.with_name(db_path.name + "-wal")) if p.exists()
    )


def test_keys_are_encrypted_at_rest_and_plain_rows_are_sealed(store: ConnectionStore) -> None:
    store.add(new("shop"))
    ((stored,),) = rows_of(store.db, "SELECT api_key FROM connections")
    assert stored.startswith("fernet:") and KEY not in stored
    if store.db.dialect == "sqlite":
        assert KEY.encode() not in file_bytes(store.db.path)
    assert store.require("shop").api_key.get_secret_value() == KEY

    # a row stored in plain text by a version before encryption: sealed when a store opens
    sql(store.db, "UPDATE connections SET api_key = :key", key="sk_plain_old_row")
    reopened = ConnectionStore(store.db, TEST_CONNECTIONS_KEY)
    assert rows(store.db)[0][3].startswith("fernet:")
    assert reopened.require("shop").api_key.get_secret_value() == "sk_plain_old_row"


def test_another_key_cannot_read_the_stored_keys_and_replace_mends_one(
    store: ConnectionStore,
) -> None:
    store.add(new("shop"))
    other = ConnectionStore(store.db, Fernet.generate_key().decode())
    with pytest.raises(ConnectionKeyMismatch, match="connection 'shop': its API key was encrypted"):
        other.get("shop")
    assert other.active_ids("dummyjson") == ["shop"]  # a fire fans out without decrypting
    other.add(new("shop", api_key="sk_again"), replace=True)
    assert other.require("shop").api_key.get_secret_value() == "sk_again"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"id": "Bad ID!"}, "id"),
        ({"id": "-leading-dash"}, "id"),
        ({"id": "x" * 64}, "id"),
        ({"api_code": "Dummy JSON"}, "api_code"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"api_key": ""}, "api_key"),
        ({"api_key": " \n"}, "api_key"),
        ({"api_key": "sk_a\r\nX-Injected: 1"}, "api_key"),  # would split the HTTP header
        ({"api_key": "sk_a\nsk_b"}, "api_key"),
        ({"api_key": "sk_a\tb"}, "api_key"),
        ({"api_key": "sk_caf\u00e9"}, "api_key"),  # not ASCII: no header value
        ({"api_key": "k" * 4097}, "api_key"),
        ({"id": "../evil"}, "id"),
        ({"scope": "Smart Phones"}, "scope"),
        ({"secret": "x"}, "secret"),  # extra="forbid"
    ],
)
def test_bad_fields_are_refused(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        NewConnection.model_validate({"id": "shop", "name": "n", "api_key": KEY, **fields})
    assert exc.value.errors()[0]["loc"] == (field,)


def test_limits_that_are_allowed() -> None:
    assert new("a" * 63, name="n" * 200, scope="mens-shirts").id == "a" * 63
    assert new("0_x-y").api_key.get_secret_value() == KEY
    pasted = new("shop", api_key=f"  {KEY}\n", name=" Main shop ")
    assert (pasted.api_key.get_secret_value(), pasted.name) == (KEY, "Main shop")
    assert new("long", api_key="k" * 4096).api_key.get_secret_value() == "k" * 4096
    assert new("spaced", api_key="Basic a b=").api_key.get_secret_value() == "Basic a b="


def insert_raw(db: Database, connection_id: str, api_key: str) -> None:
    """A row written straight into the database, past the model (an older tool, a hand fix)."""
    ConnectionStore(db, TEST_CONNECTIONS_KEY)  # the schema
    sql(
        db,
        "INSERT INTO connections VALUES (:id, 'dummyjson', 'Raw', :key, NULL, :on, :at, :at)",
        id=connection_id,
        key=api_key,
        on=True,
        at="2026-01-01T00:00:00+00:00",
    )


LEAKY_KEY = "sk_line1_9d2f\r\nX-Leak: sk_line2_71ab"
LEAKY_PARTS = ("sk_line1_9d2f", "sk_line2_71ab", "X-Leak")


@pytest.mark.parametrize(
    ("connection_id", "api_key", "says"),
    [
        ("../evil", KEY, "connection '../evil': its id is not valid"),
        ("leaky", LEAKY_KEY, "connection 'leaky': its stored api_key is not valid"),
    ],
)
def test_a_row_written_past_the_model_fails_its_own_jobs_naming_it(
    app_db: Database, connection_id: str, api_key: str, says: str
) -> None:
    store = ConnectionStore(app_db, TEST_CONNECTIONS_KEY)
    store.add(new("acme"))
    insert_raw(app_db, connection_id, api_key)
    store = ConnectionStore(app_db, TEST_CONNECTIONS_KEY)  # seals the plain row, as on upgrade
    assert connection_id in store.active_ids("dummyjson")  # a fire still lists it ...
    sync = SyncProductsActivities(
        DummyJSONClient("http://127.0.0.1:9"), SqliteCatalog(app_db), store
    )
    with pytest.raises(ApplicationError) as caught:  # ... and its job fails for good, naming it
        sync.count_source_products(SourceRequest(connection_id=connection_id))
    error = caught.value
    assert error.non_retryable and error.type == "StoredConnectionInvalid"
    assert error.message.startswith(says), error.message
    assert error.__cause__ is None  # no pydantic error (which quotes values) rides along
    assert all(part not in error.message for part in LEAKY_PARTS)
    assert store.require("acme").api_key.get_secret_value() == KEY  # the others are untouched


def _product(n: int) -> CatalogProduct:
    return CatalogProduct(
        external_id=f"dummyjson:{n}",
        handle=f"product-{n}",
        title=f"Product {n}",
        description="",
        category="beauty",
        tags=[],
        images=[],
        thumbnail=None,
        width=None,
        height=None,
        depth=None,
        weight=None,
        metadata={},
        variant=Variant(sku=None, price_amount=999, inventory_quantity=1),
    )


def test_shares_the_application_database_with_the_catalog(app_db: Database) -> None:
    catalog = SqliteCatalog(app_db)
    store = ConnectionStore(app_db, TEST_CONNECTIONS_KEY)
    store.add(new("shop"))
    assert len(catalog.sync_batch([_product(1)], dry_run=False).create) == 1
    again = SqliteCatalog(Database(app_db.url))  # another store's view of the same database
    assert len(again.sync_batch([_product(1), _product(2)], dry_run=False).create) == 1
    listed = ConnectionStore(Database(app_db.url), TEST_CONNECTIONS_KEY).list()
    assert [c.id for c in listed] == ["shop"]
    tables = set(inspect(app_db.engine).get_table_names())
    assert {"products", "product_variants", "connections", "alembic_version"} <= tables
    assert rows_of(app_db, "SELECT count(*) FROM products") == [(2,)]


# --- the CLI ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def env(db_path: Path) -> dict[str, str]:
    """CATALOG_DB on a tmp file; Temporal pointed at a closed port, to show none is needed."""
    drop = ("SYNC_PRODUCTS_", "TEMPORAL_", "CATALOG_DB")
    base = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return base | {
        "CATALOG_DB": str(db_path),
        "CONNECTIONS_KEY": TEST_CONNECTIONS_KEY,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "COLUMNS": "200",  # rich would wrap the table at 80 columns
    }


def connections(env: dict[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "starter.py"), "connections", *args],
        input=stdin,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout, proc.stderr


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_cli_add_by_flag_and_stdin_and_list_never_shows_the_key(
    env: dict[str, str], db_path: Path
) -> None:
    stdin_key = "sk_stdin_5b1d0e77c2a94f38"
    outputs = []
    code, out, err = connections(
        env, "add", "--id", "main", "--name", "Main [bold]", "--api-key", KEY
    )
    assert (code, out.strip()) == (0, "connection main added"), err
    outputs.append(out + err)
    code, out, err = connections(
        env,
        *("add", "--id", "phones", "--name", "Phones", "--api-key", "-"),
        *("--scope", "smartphones", "--inactive"),
        stdin=f"  {stdin_key}  \nsecond line is ignored\n",
    )
    assert (code, out.strip()) == (0, "connection phones added"), err
    outputs.append(out + err)

    store = ConnectionStore(db_path, TEST_CONNECTIONS_KEY)
    phones = store.require("phones")
    assert phones.api_key.get_secret_value() == stdin_key
    assert (phones.scope, phones.active) == ("smartphones", False)

    code, table, err = connections(env, "list")
    assert code == 0, err
    assert "main" in table and "phones" in table and "smartphones" in table
    assert "Main [bold]" in table  # a name is text, not rich markup
    code, listed, err = connections(env, "list", "--json")
    assert code == 0, err
    objects = json.loads(listed)
    assert [o["id"] for o in objects] == ["main", "phones"]
    assert [o["active"] for o in objects] == [True, False]
    code, active, err = connections(env, "list", "--json", "--active")
    assert code == 0, err
    assert [o["id"] for o in json.loads(active)] == ["main"]
    assert all(
        list(o) == ["id", "api_code", "name", "scope", "active", "created_at", "updated_at"]
        for o in objects
    )
    for text in [*outputs, table, listed, err]:
        assert KEY not in text and stdin_key not in text
        assert "sk_" not in text and "****" not in text  # no part of it, not even masked


def test_cli_replace_disable_enable_remove(env: dict[str, str], db_path: Path) -> None:
    store = ConnectionStore(db_path, TEST_CONNECTIONS_KEY)
    first = store.add(new("shop"))
    code, out, _ = connections(
        env, "add", "--id", "shop", "--name", "Renamed", "--api-key", "sk_2", "--replace"
    )
    assert (code, out.strip()) == (0, "connection shop replaced")
    replaced = store.require("shop")
    assert replaced.name == "Renamed" and replaced.created_at == first.created_at

    steps = [
        ("disable", "connection shop disabled", False),
        ("disable", "connection shop disabled (it already was)", False),
        ("enable", "connection shop enabled", True),
    ]
    for action, line, active in steps:
        code, out, err = connections(env, action, "shop")
        assert (code, one_line(out)) == (0, line), err
        assert store.require("shop").active is active
    code, out, _ = connections(env, "remove", "shop")
    assert (code, one_line(out)) == (0, "connection shop removed")
    assert store.list() == []


ADD = ("add", "--name", "New", "--api-key", "sk_new_one")


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        ((*ADD, "--id", "Bad ID!"), "", "error: --id 'Bad ID!': use 1 to 63 lowercase"),
        ((*ADD, "--id", "x" * 64), "", "error: --id"),
        ((*ADD, "--id", "../evil"), "", "error: --id '../evil': use 1 to 63 lowercase"),
        (
            ("add", "--id", "ok", "--name", "n", "--api-key", "sk_new_one\r\nX-Evil: 1"),
            "",
            "error: --api-key: give the key (1 to 4096 printable ASCII characters",
        ),
        (("add", "--id", "ok", "--name", "n", "--api-key", "k" * 4097), "", "error: --api-key:"),
        ((*ADD, "--id", "ok", "--api-code", "Dummy JSON"), "", "error: --api-code 'Dummy JSON'"),
        (("add", "--id", "ok", "--name", "", "--api-key", "k"), "", "error: --name '': give"),
        (("add", "--id", "ok", "--name", "  ", "--api-key", "k"), "", "error: --name"),
        (("add", "--id", "ok", "--name", "n", "--api-key", ""), "", "error: --api-key: give"),
        (("add", "--id", "ok", "--name", "n", "--api-key", "-"), "\n", "error: --api-key:"),
        ((*ADD, "--id", "ok", "--scope", "Smart Phones"), "", "error: --scope 'Smart Phones'"),
        (
            (*ADD, "--id", "shop"),
            "",
            "error: --id: connection 'shop' exists; pass --replace to change it",
        ),
        (("disable", "nope"), "", "error: id: no connection 'nope'; `starter.py connections list`"),
        (("enable", "nope"), "", "error: id: no connection 'nope'"),
        (("remove", "nope"), "", "error: id: no connection 'nope'"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(
    env: dict[str, str], db_path: Path, args: tuple[str, ...], stdin: str, expected: str
) -> None:
    ConnectionStore(db_path, TEST_CONNECTIONS_KEY).add(new("shop", active=False))
    before = rows(db_path)
    code, out, err = connections(env, *args, stdin=stdin)
    assert code == 2, (out, err)
    line = one_line(err)
    assert line.startswith(expected), line
    assert "sk_new_one" not in line and KEY not in line
    assert rows(db_path) == before


def test_cli_a_wrong_or_malformed_connections_key_is_one_line(
    env: dict[str, str], db_path: Path
) -> None:
    ConnectionStore(db_path, TEST_CONNECTIONS_KEY).add(new("shop"))
    before = rows(db_path)
    wrong = {**env, "CONNECTIONS_KEY": Fernet.generate_key().decode()}
    code, out, err = connections(wrong, "list")
    assert (code, out) == (2, "")
    assert one_line(err).startswith(
        "error: connection 'shop': its API key was encrypted with another CONNECTIONS_KEY"
    )
    code, out, err = connections({**env, "CONNECTIONS_KEY": "not-a-key"}, "list")
    assert (code, out) == (2, "")
    line = one_line(err)
    assert (
        line.startswith("error: CONNECTIONS_KEY='(hidden)': not a Fernet key")
        and "not-a-key" not in line
    )
    assert rows(db_path) == before


def test_a_job_whose_key_cannot_be_decrypted_fails_for_good_naming_the_connection(
    db_path: Path,
) -> None:
    ConnectionStore(db_path, TEST_CONNECTIONS_KEY).add(new("shop"))
    other = ConnectionStore(db_path, Fernet.generate_key().decode())
    sync = SyncProductsActivities(
        DummyJSONClient("http://127.0.0.1:9"), SqliteCatalog(db_path), other
    )
    with pytest.raises(ApplicationError) as caught:
        sync.count_source_products(SourceRequest(connection_id="shop"))
    assert caught.value.non_retryable and caught.value.type == "ConnectionKeyMismatch"
    assert "connection 'shop': its API key was encrypted with another" in caught.value.message
