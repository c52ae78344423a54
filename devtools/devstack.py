"""`make run`: the whole local stack in one command, stopped as one with Ctrl-C.

Starts, in order: the Temporal dev server (SQLite file in the data directory, so schedules survive
a restart; Web UI on :8233; our search attributes registered), the local DummyJSON mirror (unless
DUMMYJSON_BASE_URL is set), the codec server the UI decrypts payloads through (unless
PAYLOAD_ENCRYPTION=false), the worker (Prometheus metrics on 127.0.0.1:9464 unless METRICS_ADDRESS
is set), then the schedules in schedules.toml. Starting a schedule that already runs is a no-op,
so running this again resumes the same loops with their counts. A worker that exits on its own is
started again (with a backoff, at most a few times a minute), the server kept: what it was running
goes on on the new one.
Set TEMPORAL_ADDRESS or TEMPORAL_PROFILE to use a server you run yourself instead of the dev
server. Everything it creates is readable by you only (umask 077).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import httpx

from activities.connections import ConnectionStore, NewConnection
from client.codec import Keyring
from client.connect import connect, exit_process, worker_polling
from client.errors import OneLineParser, UserError, exit_on_user_error, port, program_name
from client.loops import start_schedules
from client.schedules_file import DEFAULT_FILE, load_schedules
from client.settings import Settings, load_settings
from client.stack import StackNote, write_note
from client.temporal_profile import DEFAULT_ADDRESS

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]  # the project: worker.py, schedules.toml
SEARCH_ATTRIBUTES = ("ScheduleName=Keyword", "ScheduledFireTime=Datetime")
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0  # per process, after its Ctrl-C; the worker gets its graceful shutdown too
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, terminal closed
CONFIG_EXIT = 2  # a UserError's exit code: the worker refused its settings, another try would too


# Three demo connections (ShipEngine's "user connections"): one syncs the whole source, two sync
# one category each; the local mirror accepts exactly the keys of the registry's connections.
DEMO_CONNECTIONS = (
    NewConnection(id="acme", name="Acme Store (all products)", api_key="demo-key-acme"),  # type: ignore[arg-type]
    NewConnection(
        id="globex",
        name="Globex Beauty",
        api_key="demo-key-globex",  # type: ignore[arg-type]
        scope="beauty",
    ),
    NewConnection(
        id="initech",
        name="Initech Groceries",
        api_key="demo-key-initech",  # type: ignore[arg-type]
        scope="groceries",
    ),
)


def seed_connections(settings: Settings) -> list[str]:
    """Add the demo connections the first time; later runs keep whatever the user changed."""
    store = ConnectionStore(settings.database, settings.connections_secret())
    if not store.list():
        for conn in DEMO_CONNECTIONS:
            store.add(conn)
    return [c.api_key.get_secret_value() for c in store.list()]


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def require_port(port: int, what: str, env_hint: str) -> None:
    if not port_free("127.0.0.1", port):
        raise UserError(f"port {port} ({what}) is busy: stop what holds it, or set {env_hint}")


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    """Poll a readiness check until it passes, the process dies, or the deadline passes."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"{what} exited with code {proc.returncode} at start; see {log}")
        if ready():
            return
        time.sleep(0.2)
    raise UserError(f"{what} not ready after {STARTUP_TIMEOUT_S:.0f}s; see {log}")


class Stopping:
    """Ctrl-C, SIGTERM and SIGHUP (the terminal closed): the first one stops the stack
    (KeyboardInterrupt); one more while it stops does not abandon the children half-way, it
    makes the stop kill them instead of waiting."""

    def __init__(self) -> None:
        self.started = False
        self.hurry = False

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.started:
            self.hurry = True
            return
        self.started = True
        raise KeyboardInterrupt


class Stack:
    """The processes this run started, stopped in reverse order."""

    def __init__(self, data_dir: Path, stopping: Stopping, worker_grace_s: float) -> None:
        self.data_dir = data_dir
        self.stopping = stopping
        self.worker_grace_s = worker_grace_s
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(
        self, name: str, cmd: list[str], env: dict[str, str], log: bool
    ) -> subprocess.Popen[bytes]:
        out = open(self.data_dir / f"{name}.log", "ab") if log else None  # noqa: SIM115
        # No stop signal between the start and the record of a process, or it would outlive us.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT if log else None,
                start_new_session=True,
                preexec_fn=_default_signals,
            )
            self.procs.append((name, proc))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return proc

    def respawn(self, name: str, cmd: list[str], env: dict[str, str], log: bool) -> None:
        """Start `name` again in its place, so the stop order stays the start order."""
        at = next(i for i, (n, _) in enumerate(self.procs) if n == name)
        self.spawn(name, cmd, env, log)
        self.procs.insert(at, self.procs.pop())
        del self.procs[at + 1]

    def stop(self) -> None:
        """Ctrl-C to each, last started first, waiting for it to exit; a process that takes too
        long, and every one once a second signal came, is killed with what it started."""
        self.stopping.started = True  # from here a signal hurries the stop, never breaks it
        for name, proc in reversed(self.procs):
            grace = STOP_TIMEOUT_S + (self.worker_grace_s if name == "worker" else 0)
            if proc.poll() is None and not self.stopping.hurry:
                proc.send_signal(signal.SIGINT)
                deadline = time.monotonic() + grace
                while (
                    proc.poll() is None and not self.stopping.hurry and time.monotonic() < deadline
                ):
                    time.sleep(0.05)
            verb = "stopped"
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: it and its children
                proc.wait()
                verb = "killed"
            _say(f"{verb} {name} (pid {proc.pid})")


class WorkerRestarts:
    """When a worker that exited on its own is started again: after a backoff (0.5 s doubling to
    10 s, back to 0.5 s once a worker has run a minute), and not more than 5 times in a minute:
    a worker that keeps dying has a cause a restart will not fix. A configuration error (exit 2)
    is not retried at all."""

    FIRST_S = 0.5
    CAP_S = 10.0
    HEALTHY_S = 60.0  # a worker that ran this long resets the backoff
    MAX = 5
    WINDOW_S = 60.0

    def __init__(self) -> None:
        self.delay_s = self.FIRST_S
        self.count = 0
        self.recent: list[float] = []

    def after_exit(self, code: int, ran_s: float, now: float) -> float:
        """The delay before the next start; a UserError (one line for the user) if none."""
        if code == CONFIG_EXIT:
            raise UserError(
                f"worker exited with code {code} (its settings: see its error above); "
                "stopping the rest"
            )
        self.recent = [t for t in self.recent if now - t < self.WINDOW_S]
        if len(self.recent) >= self.MAX:
            raise UserError(
                f"worker exited with code {code}, the {len(self.recent) + 1}th time within "
                f"{self.WINDOW_S:.0f} s; not restarting it again: stopping the rest"
            )
        if ran_s >= self.HEALTHY_S:
            self.delay_s = self.FIRST_S
        delay = self.delay_s
        self.delay_s = min(self.delay_s * 2, self.CAP_S)
        self.recent.append(now)
        self.count += 1
        return delay


def watch(stack: Stack, worker_cmd: list[str], env: dict[str, str]) -> NoReturn:
    """Until Ctrl-C (KeyboardInterrupt): the worker is restarted when it exits; any other
    process exiting stops the stack (a UserError)."""
    restarts = WorkerRestarts()
    started = time.monotonic()
    while True:
        for name, proc in list(stack.procs):
            if proc.poll() is None:
                continue
            if name != "worker":
                raise UserError(f"{name} exited with code {proc.returncode}; stopping the rest")
            now = time.monotonic()
            delay = restarts.after_exit(proc.returncode, now - started, now)
            _say(
                f"worker exited with code {proc.returncode}; restarting it in {delay:g} s "
                f"(restart {restarts.count})"
            )
            time.sleep(delay)
            stack.respawn("worker", worker_cmd, env, log=False)
            started = time.monotonic()
        time.sleep(0.2)


def start_codec_server(
    stack: Stack, env: dict[str, str], port: int, ui_port: int, keyring: Keyring | None
) -> str | None:
    """The codec server the Web UI reads encrypted payloads through; None with encryption off."""
    if keyring is None:
        return None
    require_port(port, "codec server", "--codec-port")
    origins = [
        arg
        for host in ("localhost", "127.0.0.1")
        for arg in ("--ui-origin", f"http://{host}:{ui_port}")
    ]
    cmd = [sys.executable, "-m", "client.codec_server", "--port", str(port), *origins]
    proc = stack.spawn("codec-server", cmd, env, log=True)
    url = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: temporal_ready(f"127.0.0.1:{port}"),
        proc,
        "codec server",
        stack.data_dir / "codec-server.log",
    )
    return url


def temporal_ready(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def http_ready(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _say(text: str) -> None:
    """Print, unless the terminal is gone (SIGHUP): stopping must go on regardless."""
    with contextlib.suppress(OSError):
        print(text, flush=True)


def run(args: argparse.Namespace, stopping: Stopping) -> int:
    settings = load_settings()
    specs = load_schedules(args.file, settings)  # a bad file stops us before anything starts
    os.umask(0o077)  # what this run and its processes create (temporal.db, logs) is yours only
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = seed_connections(settings)
    keyring = settings.keyring()  # made now, so the worker, CLI and codec server share it
    env = dict(os.environ)
    stack = Stack(settings.data_dir, stopping, settings.graceful_shutdown.total_seconds())
    ui_url = codec_url = None
    mirror_admin = ""  # the banner's line on the local mirror's admin API
    note: Path | None = None  # what the worker reads from, for the CLI in another terminal
    try:
        if "METRICS_ADDRESS" not in os.environ:  # checked first: the worker starts last
            require_port(args.metrics_port, "worker metrics", "--metrics-port, or METRICS_ADDRESS")
            env["METRICS_ADDRESS"] = f"127.0.0.1:{args.metrics_port}"
            settings.metrics_address = env["METRICS_ADDRESS"]
        if not {"TEMPORAL_ADDRESS", "TEMPORAL_PROFILE"} & set(os.environ):
            port, ui_port = args.port, args.ui_port
            require_port(port, "Temporal gRPC", "--port, or TEMPORAL_ADDRESS to use your server")
            require_port(ui_port, "Temporal Web UI", "--ui-port")
            codec_url = start_codec_server(stack, env, args.codec_port, ui_port, keyring)
            settings.temporal_address = env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{port}"
            cmd = [
                str(BIN / "temporal"),
                "server",
                "start-dev",
                "--db-filename",
                str(settings.data_dir / "temporal.db"),
                "--ip",
                "127.0.0.1",
                "--port",
                str(port),
                "--ui-port",
                str(ui_port),
                "--ui-disable-news-fetch",
                "--log-level",
                "warn",
            ]
            for attr in SEARCH_ATTRIBUTES:
                cmd += ["--search-attribute", attr]
            if codec_url:  # the UI decodes through it, in the browser
                cmd += ["--ui-codec-endpoint", codec_url]
            proc = stack.spawn("temporal", cmd, env, log=True)
            wait_until(
                lambda: temporal_ready(settings.temporal_address),
                proc,
                "Temporal dev server",
                settings.data_dir / "temporal.log",
            )
            ui_url = f"http://localhost:{ui_port}"
        if "DUMMYJSON_BASE_URL" not in os.environ:
            mirror_port = args.mirror_port
            require_port(mirror_port, "DummyJSON mirror", "--mirror-port, or DUMMYJSON_BASE_URL")
            token = secrets.token_urlsafe(24)  # the admin API's, new each run; only we know it
            admin = {"Authorization": f"Bearer {token}"}
            proc = stack.spawn(
                "mirror",
                [sys.executable, "-m", "devtools.mirror", "--port", str(mirror_port)],
                # Keys and token in the environment, not in argv, which `ps` shows anyone.
                {**env, "MIRROR_ADMIN_TOKEN": token, "MIRROR_API_KEYS": ",".join(keys)},
                log=True,
            )
            base = env["DUMMYJSON_BASE_URL"] = f"http://127.0.0.1:{mirror_port}"
            wait_until(
                lambda: http_ready(f"{base}/__mirror/auth", admin),
                proc,
                "DummyJSON mirror",
                settings.data_dir / "mirror.log",
            )
            header = f"Authorization: {admin['Authorization']}"
            mirror_admin = f"  mirror admin      curl -H '{header}' {base}/__mirror/faults\n"
        worker_cmd = [sys.executable, str(ROOT / "worker.py")]
        worker = stack.spawn("worker", worker_cmd, env, log=False)
        source = env.get("DUMMYJSON_BASE_URL", settings.dummyjson_base_url)
        own_server = ui_url is not None  # the dev server this run started: the CLI may use it
        note = record_source(
            settings.data_dir,
            source,
            settings.temporal_task_queue,
            temporal_address=settings.temporal_address if own_server else None,
            namespace=settings.temporal_namespace if own_server else None,
            ui_url=ui_url,
        )

        async def start() -> list[str]:
            client = await connect(settings)
            # A running loop (a resumed stack) is queried, and only a polling worker answers.
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while not await worker_polling(client, settings.temporal_task_queue):
                if worker.poll() is not None:
                    raise UserError(f"worker exited with code {worker.returncode} at start")
                if time.monotonic() > deadline:
                    raise UserError(f"worker not polling after {STARTUP_TIMEOUT_S:.0f}s")
                await asyncio.sleep(0.2)
            return await start_schedules(client, specs, settings.temporal_task_queue)

        for line in asyncio.run(start()):
            print(line, flush=True)
        print(
            "\n"
            f"  Temporal Web UI   {ui_url or '(your server: ' + settings.temporal_address + ')'}\n"
            f"  DummyJSON source  {env['DUMMYJSON_BASE_URL']}/products\n"
            f"  payloads          {_payloads_line(keyring, codec_url)}\n"
            f"{mirror_admin}"
            f"  sync target       {_target_line(settings)}\n"
            f"  connections       {_connections_line(settings)}\n"
            f"  task queue        {settings.temporal_task_queue}\n"
            f"  worker metrics    {_metrics_line(settings)}\n"
            + _exports(settings, own_server)
            + "".join(f"{line}\n" for line in banner_hints(_banner_connection(settings)))
            + "\nready; Ctrl-C stops everything this started.\n",
            flush=True,
        )
        watch(stack, worker_cmd, env)
    except KeyboardInterrupt:
        _say("\nstopping… (Ctrl-C again: kill instead of waiting)")
        return 0
    finally:
        stack.stop()
        if note is not None:
            note.unlink(missing_ok=True)


def banner_hints(connection: str | None) -> list[str]:
    """The banner's commands to try in another terminal. The local mirror wants a connection's
    key, so the ad hoc sync names one (a run without one would be refused)."""
    return [
        "  schedules         .venv/bin/python starter.py list   (in another terminal)",
        "  ad hoc sync       .venv/bin/python starter.py run sync-products --connection "
        + (connection or "ID   (starter.py connections list)"),
    ]


def _banner_connection(settings: Settings) -> str | None:
    """`acme` while it is active, else the first active connection, else None."""
    store = ConnectionStore(settings.database, settings.connections_secret())
    active = store.active_ids("dummyjson")
    return "acme" if "acme" in active else next(iter(active), None)


def record_source(
    data_dir: Path,
    source: str,
    task_queue: str,
    *,
    temporal_address: str | None = None,
    namespace: str | None = None,
    ui_url: str | None = None,
) -> Path:
    """While `make run` runs, DATA_DIR holds this note (client/stack.py): the source its worker
    reads and, when it started the dev server, that server and its UI, so `starter.py` in
    another terminal finds them without TEMPORAL_ADDRESS."""
    note = StackNote(
        pid=os.getpid(),
        source=source,
        task_queue=task_queue,
        temporal_address=temporal_address,
        namespace=namespace,
        ui_url=ui_url,
        data_dir=str(data_dir.resolve()),
    )
    return write_note(data_dir, note)


def export_lines(settings: Settings, temporal_address: str) -> list[str]:
    """What another shell needs to reach this stack when `starter.py` cannot find it alone:
    another server than the default (a CLI run elsewhere, or a tool that does not read the
    note), and DATA_DIR when it is not the default (the note, the keys and the catalog live
    there)."""
    lines = []
    if temporal_address not in (DEFAULT_ADDRESS, "127.0.0.1:7233"):
        lines.append(f"export TEMPORAL_ADDRESS={temporal_address}")
    if "DATA_DIR" in os.environ:
        lines.append(f"export DATA_DIR={shlex.quote(str(settings.data_dir.resolve()))}")
    return lines


def _exports(settings: Settings, own_server: bool) -> str:
    lines = export_lines(settings, settings.temporal_address) if own_server else []
    if not lines:
        return ""
    head = "  another shell     "
    return "".join(f"{head if i == 0 else ' ' * len(head)}{line}\n" for i, line in enumerate(lines))


def _connections_line(settings: Settings) -> str:
    """Enabled connections (what a fire runs for), and how many are disabled."""
    every = ConnectionStore(settings.database, settings.connections_secret()).list()
    enabled = sum(1 for c in every if c.active)
    disabled = f" ({len(every) - enabled} disabled)" if enabled < len(every) else ""
    return f"{enabled} enabled{disabled}: .venv/bin/python starter.py connections list"


def _target_line(settings: Settings) -> str:
    if settings.sync_products_target == "medusa":
        return f"Medusa at {settings.medusa_backend_url} (SYNC_PRODUCTS_TARGET=medusa)"
    return f"the built-in catalog in {settings.database.shown}"


def _metrics_line(settings: Settings) -> str:
    if settings.metrics_address is None:
        return "off (METRICS_ADDRESS is off or empty)"
    return f"http://{settings.metrics_address}/metrics"


def _payloads_line(keyring: Keyring | None, codec_url: str | None) -> str:
    if keyring is None:
        return "in clear (PAYLOAD_ENCRYPTION=false)"
    via = f"; the UI decodes through {codec_url}" if codec_url else ""
    return f"encrypted (key {keyring.current}){via}"


def _default_signals() -> None:
    """A shell starts background jobs with SIGINT ignored, and children inherit that: restore
    it, so the Ctrl-C (SIGINT) we send each process on stop still stops it. The stop signals
    blocked around the spawn are unblocked in the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog=program_name("devtools.devstack"), description=__doc__)
    p.add_argument("--file", type=Path, default=DEFAULT_FILE, help="schedules file")
    p.add_argument("--port", type=port, default=7233, help="dev server gRPC port")
    p.add_argument("--ui-port", type=port, default=8233, help="Web UI port")
    p.add_argument("--mirror-port", type=port, default=8787, help="DummyJSON mirror port")
    p.add_argument("--codec-port", type=port, default=8234, help="codec server port (Web UI)")
    p.add_argument(
        "--metrics-port", type=port, default=9464, help="worker's Prometheus metrics port"
    )
    args = p.parse_args(argv)
    # Installed explicitly: under a background shell job SIGINT starts out ignored.
    stopping = Stopping()
    stopping.install()
    return int(exit_on_user_error(lambda: run(args, stopping)))


def cli() -> None:
    """The `schedjobs-dev` command (what `make run` runs)."""
    exit_process(main)


if __name__ == "__main__":
    cli()
