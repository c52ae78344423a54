"""`make run`'s stack (`python -m devtools.devstack`) as a test process: free ports, its own data
directory, its output in a file. Shared by the tests that drive it as a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 90
STOP_TIMEOUT_S = 120


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


def stack_environment(data_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment without the settings a developer's shell may hold, with the
    stack's own DATA_DIR (plus `extra`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYNC_PRODUCTS_", "TEMPORAL_", "DUMMYJSON_", "CATALOG_", "PAYLOAD_"))
    }
    env.update(DATA_DIR=str(data_dir), **extra)
    return env


class Stack:
    """`python -m devtools.devstack` as a process, its output going to a file: a pipe nobody
    reads while the test waits would fill up and stall the worker, which writes to the same
    stdout. `ports`: gRPC, Web UI, mirror, metrics and (optionally) codec server."""

    def __init__(self, env: dict[str, str], ports: list[int]) -> None:
        port, ui_port, mirror_port, metrics_port, *codec = ports
        self.log = Path(env["DATA_DIR"]).parent / f"devstack-{time.monotonic_ns()}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "devtools.devstack",
                    "--port",
                    str(port),
                    "--ui-port",
                    str(ui_port),
                ]
                + ["--mirror-port", str(mirror_port), "--metrics-port", str(metrics_port)]
                + [arg for p in codec for arg in ("--codec-port", str(p))],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def read_until(self, marker: str) -> str:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while marker not in (out := self.output()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {marker!r} from devstack:\n{out}")
            time.sleep(0.1)
        return out

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            # devstack gives each process 15 s to stop before killing it
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # kill what it started too, so nothing outlives us
            subprocess.run(["pkill", "-KILL", "-P", str(self.proc.pid)], check=False)
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"devstack still running {STOP_TIMEOUT_S} s after Ctrl-C:\n{self.output()}"
            ) from None
        out = self.output()
        assert self.proc.returncode == 0, out
        return out
