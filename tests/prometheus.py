"""A real Prometheus server for the tests: Debian's `prometheus` binary, scraping given targets
every second, with its own storage under the test's tmp_path, and a small client of its HTTP API."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_cli import free_port

BINARY = "/usr/bin/prometheus"
STARTUP_S = 60.0  # ready in ~1 s here; generous for a loaded 2-core machine


class PromQLError(AssertionError):
    """Prometheus refused a query (bad syntax, unknown function): the message is its own."""


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    value: float


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    async def query(self, expr: str) -> list[Series]:
        """An instant query through GET /api/v1/query: its vector, or PromQLError."""
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(f"{self.url}/api/v1/query", params={"query": expr})
        body: dict[str, Any] = resp.json()
        if resp.status_code != 200 or body.get("status") != "success":
            raise PromQLError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] != "vector":
            raise PromQLError(f"{expr}: a {data['resultType']}, not a vector")
        return [Series(r["metric"], float(r["value"][1])) for r in data["result"]]

    async def label_values(self, label: str) -> list[str]:
        """GET /api/v1/label/<label>/values: what Grafana's label_values(label) lists."""
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(f"{self.url}/api/v1/label/{label}/values")
        resp.raise_for_status()
        return sorted(resp.json()["data"])


def finite(series: list[Series]) -> list[Series]:
    """The series with a number (a quantile of no observations is NaN)."""
    return [s for s in series if not math.isnan(s.value) and not math.isinf(s.value)]


def start_prometheus(tmp_path: Path, targets: list[str]) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port, scraping `targets` (host:port) every second; stopped
    by its PID afterwards. Missing binary: the test fails with the package to install."""
    if shutil.which(BINARY) is None:
        pytest.fail(f"{BINARY} is missing: apt-get install prometheus", pytrace=False)
    home = tmp_path / "prometheus"
    home.mkdir()
    # JSON is YAML: no YAML library needed to write the config.
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "schedjobs-worker", "static_configs": [{"targets": targets}]}
        ],
    }
    (home / "prometheus.yml").write_text(json.dumps(config, indent=2))
    port = free_port()
    log = home / "prometheus.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                "--storage.tsdb.retention.time=1h",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(url=f"http://127.0.0.1:{port}", proc=proc, log=log)
    try:
        wait_ready(prom)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_ready(prom: Prometheus) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if prom.proc.poll() is not None:
            raise AssertionError(
                f"prometheus exited {prom.proc.returncode}:\n{prom.log.read_text()}"
            )
        try:
            if httpx.get(f"{prom.url}/-/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:  # not listening yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"prometheus not ready in {STARTUP_S:.0f}s:\n{prom.log.read_text()}")
