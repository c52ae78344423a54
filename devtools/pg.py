"""A throwaway local PostgreSQL from the machine's own binaries: find them, make a cluster, start
and stop its server, make databases in it. Knows nothing of what the databases are for (the
Medusa store, devtools/medusa/store.py, and the test fixtures, tests/postgres.py, use it).

- `find_postgres()` finds `initdb` and `postgres` (PATH, PG_BINDIR, the usual install places);
  where there are none it raises `MissingPrerequisite`, one line saying what to install.
- `pg_identity()` says who runs them. PostgreSQL refuses to run as root: as root it runs as
  `postgres` if the machine has that user, else as a system user `schedjobs-pg` created for it,
  through `setpriv`, keeping only CAP_DAC_READ_SEARCH so that it can reach a cluster under root's
  own 0700 directories (~/.cache, pytest's basetemp). `PgIdentity.own()` gives it a directory.
- `init_cluster()` runs initdb: local (socket) connections trusted, TCP ones by scram-sha-256
  password; `PgServer.start()` runs `postgres` on 127.0.0.1 and waits until it accepts
  connections; `PgServer.stop()` stops it by PID (fast shutdown, SIGKILL after a timeout).
  `die_with_parent=True` also has the kernel stop it (SIGQUIT) when the process that started it
  dies, so a killed test run leaves no server behind.
- `create_database()` makes a database (and its owner role, with a password) through psycopg,
  and returns its `postgresql://` URL (the scheme SQLAlchemy maps to psycopg 3).
- `start_local(base)` does all of it for a throwaway server (tests, benchmarks): a cluster in
  base/cluster without fsync, its server on a free port, dying with this process; a
  `LocalPostgres` (a context manager) to make databases in and to stop.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

PG_MINIMUM = 14
PG_USER_NAME = "schedjobs-pg"  # the unprivileged user made for PostgreSQL where none exists
STARTUP_TIMEOUT_S = 180.0


class MissingPrerequisite(Exception):
    """A program the caller needs cannot be had: the message is one line saying what to install."""


class PgError(Exception):
    """initdb or the server failed; the message is one line naming the log to read."""


# ---------------------------------------------------------------------------------------------
# The binaries and who runs them


@dataclass(frozen=True)
class Postgres:
    initdb: Path
    postgres: Path
    version: tuple[int, int, int]

    @property
    def major(self) -> int:
        return self.version[0]


def parse_version(text: str) -> tuple[int, int, int]:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return (0, 0, 0)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def _pg_candidates() -> Iterator[Path]:
    if found := shutil.which("postgres"):
        yield Path(found)
    if env := os.environ.get("PG_BINDIR"):
        yield Path(env) / "postgres"
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/bin"):
        yield from (Path(p) / "postgres" for p in sorted(Path("/").glob(pattern.lstrip("/"))))


def find_postgres(
    minimum: int = PG_MINIMUM, needed_for: str = "this", package: str = "postgresql"
) -> Postgres:
    """The first server binaries (postgres and initdb beside it) of at least `minimum`; else
    MissingPrerequisite naming `needed_for` and the Debian `package` to install."""
    for server in _pg_candidates():
        initdb = server.with_name("initdb")
        if not (server.is_file() and initdb.is_file()):
            continue
        try:
            out = subprocess.run(
                [str(server), "--version"], capture_output=True, text=True, timeout=30, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        version = parse_version(out)
        if version[0] >= minimum:
            return Postgres(initdb, server, version)
    raise MissingPrerequisite(
        f"PostgreSQL >= {minimum} server binaries (initdb, postgres) are needed for {needed_for}:"
        f" install them (Debian: apt-get install {package}), or set PG_BINDIR"
    )


@dataclass(frozen=True)
class PgIdentity:
    """Who runs initdb and postgres: None fields = ourselves (not root)."""

    uid: int | None = None
    gid: int | None = None
    setpriv: str | None = None

    def wrap(self, argv: list[str], pdeathsig: str | None = None) -> list[str]:
        """argv run as the PostgreSQL user; with pdeathsig (a signal name, e.g. "SIGQUIT") the
        kernel sends the process that signal when the thread that started it dies."""
        if self.uid is None or self.setpriv is None:
            if pdeathsig and (setpriv := shutil.which("setpriv")):
                return [setpriv, f"--pdeathsig={pdeathsig}", "--", *argv]
            return argv
        # setpriv sets the death signal after changing the credentials (which clears it).
        death = [f"--pdeathsig={pdeathsig}"] if pdeathsig else []
        return [
            self.setpriv,
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
            *death,
            "--",
            *argv,
        ]

    def own(self, path: Path) -> None:
        """Give path (recursively) to the PostgreSQL user."""
        if self.uid is None or self.gid is None:
            return
        os.chown(path, self.uid, self.gid)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), self.uid, self.gid, follow_symlinks=False)


def pg_identity() -> PgIdentity:
    if os.geteuid() != 0:
        return PgIdentity()
    setpriv = shutil.which("setpriv")
    if not setpriv:
        raise MissingPrerequisite(
            "setpriv (util-linux) is needed to run PostgreSQL as an unprivileged user when running"
            " as root: install util-linux, or run as a normal user"
        )
    for name in ("postgres", PG_USER_NAME):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return PgIdentity(entry.pw_uid, entry.pw_gid, setpriv)
    useradd = shutil.which("useradd")
    if useradd:
        subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
            + ["--shell", "/usr/sbin/nologin", PG_USER_NAME],
            capture_output=True,
            check=False,
        )
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(PG_USER_NAME)
            return PgIdentity(entry.pw_uid, entry.pw_gid, setpriv)
    raise MissingPrerequisite(
        f"PostgreSQL refuses to run as root and no unprivileged user could be had: create one"
        f" (useradd --system {PG_USER_NAME}), or run as a normal user"
    )


# ---------------------------------------------------------------------------------------------
# Small helpers (the Medusa store uses them too)


def write_private(path: Path, text: str) -> None:
    """Write atomically, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def tail(log: Path, lines: int = 5) -> str:
    """The log's last lines, on one line."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip()[:200] for line in text[-lines:])


def run_logged(argv: list[str], log: Path, what: str, timeout: float, **kw: Any) -> None:
    """Run argv with its output appended to log; PgError (one line) if it fails or hangs."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                timeout=timeout, check=False, **kw,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise PgError(f"{what} did not finish in {timeout:.0f}s; see {log}") from None
    if proc.returncode != 0:
        raise PgError(f"{what} failed (exit {proc.returncode}); see {log}: {tail(log, 2)}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing holds now (another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop_process(proc: subprocess.Popen[bytes], group: bool, timeout: float) -> None:
    """SIGINT (PostgreSQL: fast shutdown; Node: graceful), then SIGKILL after timeout."""
    if proc.poll() is not None:
        return

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)

    send(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(10)
    if group:  # anything the process left in its group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Cluster and server


def init_cluster(
    pg: Postgres,
    ident: PgIdentity,
    cluster_dir: Path,
    superuser: str,
    password: str,
    log: Path,
    *,
    durable: bool = True,
) -> None:
    """initdb a new cluster in cluster_dir (which must not exist; its parent must) with one
    superuser: trusted over the cluster's own socket, scram-sha-256 with password over TCP.
    durable=False skips initdb's fsync (for throwaway clusters)."""
    cluster_dir.mkdir(mode=0o700)  # empty, as initdb wants it, and the PostgreSQL user's
    ident.own(cluster_dir)
    pwfile = cluster_dir.parent / f".{cluster_dir.name}.pwfile"
    write_private(pwfile, password + "\n")  # the PostgreSQL user reads it through DAC_READ_SEARCH
    try:
        run_logged(
            ident.wrap([
                str(pg.initdb), "-D", str(cluster_dir), "-U", superuser, "-E", "UTF8",
                "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}", *([] if durable else ["--no-sync", "--no-instructions"]),
            ]),
            log, "initdb", 300,
        )  # fmt: skip
    finally:
        pwfile.unlink(missing_ok=True)


@dataclass
class PgServer:
    proc: subprocess.Popen[bytes]
    cluster: Path
    port: int
    log: Path

    def url(self, user: str, password: str, database: str, scheme: str = "postgresql") -> str:
        """A TCP URL on 127.0.0.1 (postgresql://: SQLAlchemy 2.1 takes it as psycopg 3)."""
        creds = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"{scheme}://{creds}@127.0.0.1:{self.port}/{quote(database, safe='')}"

    @classmethod
    def start(
        cls,
        pg: Postgres,
        ident: PgIdentity,
        cluster: Path,
        port: int,
        log: Path,
        durable: bool,
        *,
        settings: dict[str, str] | None = None,
        die_with_parent: bool = False,
    ) -> PgServer:
        """Start postgres on 127.0.0.1:port and wait until it accepts connections. durable=False
        turns off fsync and full_page_writes; settings add or override server settings;
        die_with_parent stops the server (SIGQUIT) when the process that started it dies (the
        kernel's parent-death signal follows the starting thread: start it from the main one)."""
        merged = {
            "port": str(port),
            "listen_addresses": "127.0.0.1",
            # The socket lives in the cluster (owned by the PostgreSQL user) if its path fits.
            "unix_socket_directories": str(cluster) if len(str(cluster)) < 90 else "",
            "max_connections": "60",
            "shared_buffers": "64MB",
            "synchronous_commit": "off",
            "fsync": "on" if durable else "off",
            "full_page_writes": "on" if durable else "off",
            **(settings or {}),
        }
        argv = [str(pg.postgres), "-D", str(cluster)]
        for k, v in merged.items():
            argv += ["-c", f"{k}={v}"]
        out = open(log, "ab")  # noqa: SIM115 -- the server keeps writing to it
        try:
            proc = subprocess.Popen(
                ident.wrap(argv, "SIGQUIT" if die_with_parent else None), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        finally:
            out.close()
        server = cls(proc, cluster, port, log)
        try:
            started = time.monotonic()
            deadline = started + STARTUP_TIMEOUT_S
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise PgError(
                        f"PostgreSQL exited with code {proc.returncode} at start; see {log}:"
                        f" {tail(log, 2)}"
                    )
                if server.ready():
                    return server
                time.sleep(0.01 if time.monotonic() - started < 2 else 0.1)  # ready in ~50 ms here
            raise PgError(f"PostgreSQL not ready after {STARTUP_TIMEOUT_S:.0f}s; see {log}")
        except BaseException:
            server.stop()
            raise

    def ready(self) -> bool:
        try:
            lines = (self.cluster / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[0].strip() == str(self.proc.pid) and "ready" in lines[7]

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc, group=False, timeout=30)


# ---------------------------------------------------------------------------------------------
# Databases


def _admin(server: PgServer, superuser: str, password: str) -> Any:
    import psycopg  # here: the Medusa store imports this module and needs no driver

    return psycopg.connect(
        host="127.0.0.1", port=server.port, user=superuser, password=password,
        dbname="postgres", autocommit=True, connect_timeout=30,
    )  # fmt: skip


def create_database(
    server: PgServer,
    name: str,
    *,
    superuser: str,
    password: str,
    owner: str | None = None,
    owner_password: str | None = None,
) -> str:
    """CREATE DATABASE name (a copy of template1) owned by owner, creating owner first (a login
    role, not a superuser) with owner_password if it has no role yet; connects as superuser over
    TCP. Returns the new database's URL for owner (for the superuser where owner is None)."""
    from psycopg import sql

    if owner is not None and owner_password is None:
        raise ValueError("owner_password is needed with owner")
    with _admin(server, superuser, password) as conn:
        if owner is not None:
            found = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone()
            if not found:  # CREATE ROLE takes no bind parameters: the password is a literal
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(owner), sql.Literal(owner_password)
                    )
                )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(owner or superuser)
            )
        )
    if owner is None or owner_password is None:
        return server.url(superuser, password, name)
    return server.url(owner, owner_password, name)


def drop_database(server: PgServer, name: str, *, superuser: str, password: str) -> None:
    """DROP DATABASE IF EXISTS name, closing whatever connections it still has."""
    from psycopg import sql

    with _admin(server, superuser, password) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# ---------------------------------------------------------------------------------------------
# All of it at once


@dataclass
class LocalPostgres:
    """A running throwaway cluster (`start_local`): its server and its superuser's password."""

    server: PgServer
    superuser: str
    password: str
    timings: dict[str, float]

    def __repr__(self) -> str:  # no password in a log or a pytest failure
        return f"LocalPostgres(port={self.server.port}, cluster={str(self.server.cluster)!r})"

    @property
    def admin_url(self) -> str:
        return self.server.url(self.superuser, self.password, "postgres")

    def create_database(
        self, name: str, owner: str | None = None, owner_password: str | None = None
    ) -> str:
        return create_database(
            self.server, name, superuser=self.superuser, password=self.password,
            owner=owner, owner_password=owner_password,
        )  # fmt: skip

    def drop_database(self, name: str) -> None:
        drop_database(self.server, name, superuser=self.superuser, password=self.password)

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> LocalPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local(
    base: Path,
    *,
    minimum: int = PG_MINIMUM,
    needed_for: str = "this",
    package: str = "postgresql",
    superuser: str = "schedjobs_admin",
    settings: dict[str, str] | None = None,
    attempts: int = 3,
) -> LocalPostgres:
    """find_postgres, a new non-durable cluster in base/cluster (base must exist; the server's
    log is base/postgres.log) and its server on a free port of 127.0.0.1, which dies with this
    process. A port taken by someone else between free_port() and the start (another xdist
    worker) is retried, up to attempts times. MissingPrerequisite or PgError, one line."""
    pg = find_postgres(minimum, needed_for, package)
    ident = pg_identity()
    log = base / "postgres.log"
    password = secrets.token_urlsafe(18)
    t0 = time.monotonic()
    init_cluster(pg, ident, base / "cluster", superuser, password, log, durable=False)
    t1 = time.monotonic()
    for attempt in range(attempts):
        port = free_port()
        try:
            server = PgServer.start(
                pg, ident, base / "cluster", port, log, durable=False, settings=settings,
                die_with_parent=True,
            )  # fmt: skip
            break
        except PgError:
            if attempt + 1 >= attempts or port_free(port):
                raise  # not a lost race for the port
    timings = {"initdb_s": round(t1 - t0, 3), "start_s": round(time.monotonic() - t1, 3)}
    return LocalPostgres(server, superuser, password, timings)
