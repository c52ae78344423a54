"""Time `starter.py run sync-products` for DummyJSON's 194 products, as a user runs it.

Starts its own Temporal dev server, mirror and worker (nothing else needs to run), then times
the CLI command end to end (process start to exit) and reads the job's own duration from the
report, with payload encryption off and on (the default), in one run. Prints one table.
Usage: .venv/bin/python bench/sync.py [--runs 5] [--latency-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from client.codec import Keyring  # noqa: E402
from client.connect import converter_for  # noqa: E402
from client.settings import Settings  # noqa: E402
from devtools.mirror import Faults, Mirror  # noqa: E402
from worker import build_worker  # noqa: E402

BIN = Path(sys.executable).parent


async def run_cli(env: dict[str, str], *args: str) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "starter.py"),
        "run",
        "sync-products",
        "--json",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, _ = await proc.communicate()
    wall = time.perf_counter() - started
    assert proc.returncode == 0, out
    return wall, json.loads(out)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--latency-ms", type=int, default=0, help="mirror latency per request")
    a = p.parse_args()
    env_server = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        dev_server_startup_timeout=timedelta(seconds=60),  # the SDK's 5 s is tight here
    )
    mirror = Mirror(faults=Faults(latency_ms=a.latency_ms)).start()
    address = env_server.client.service_client.config.target_host
    keys = Keyring.new_entry()
    rows = []
    for encryption in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            queue = f"bench-{'encrypted' if encryption else 'clear'}"
            settings = Settings(
                dummyjson_base_url=mirror.url,
                catalog_db=Path(tmp) / "catalog.db",
                temporal_task_queue=queue,
                payload_encryption=encryption,
                payload_keys=keys,  # type: ignore[arg-type]
            )
            env = {
                **os.environ,
                "TEMPORAL_ADDRESS": address,
                "TEMPORAL_TASK_QUEUE": queue,
                "DUMMYJSON_BASE_URL": mirror.url,
                "PAYLOAD_KEYS": keys,
                "PAYLOAD_ENCRYPTION": str(encryption).lower(),
            }
            client = await Client.connect(address, data_converter=converter_for(settings))
            async with build_worker(client, settings):
                for kind, args in (
                    ("full (194 created)", ()),
                    ("no change (194 unchanged)", ()),
                    ("dry run", ("--dry-run",)),
                ):
                    walls, jobs = [], []
                    runs = 1 if kind.startswith("full") else a.runs
                    for _ in range(runs):
                        if kind.startswith("full"):
                            settings.catalog_path.unlink(missing_ok=True)
                        wall, report = await run_cli(env, *args)
                        walls.append(wall)
                        jobs.append(float(report["duration_s"]))  # type: ignore[arg-type]
                    label = f"{kind}, {'encrypted' if encryption else 'clear'}"
                    rows.append((label, runs, statistics.median(walls), statistics.median(jobs)))
    mirror.stop()
    await env_server.shutdown()
    print(
        f"sync-products, 194 products, batch size 15 (13 batches), 4 in flight, "
        f"mirror latency {a.latency_ms} ms"
    )
    print(f"{'run':39} {'runs':>4} {'CLI wall s (median)':>20} {'job duration s':>15}")
    for kind, runs, wall, job in rows:
        print(f"{kind:39} {runs:>4} {wall:>20.2f} {job:>15.2f}")


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # temporalio/sdk-python#300: skip interpreter teardown
