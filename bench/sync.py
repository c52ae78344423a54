"""Time `starter.py run sync-products` for DummyJSON's 194 products, as a user runs it.

Starts its own Temporal dev server, mirror and worker (nothing else needs to run), then times
the CLI command end to end (process start to exit) and reads the job's own duration from the
report, with payload encryption off and on (the default), in one run, beside the job's own
activities called directly with no Temporal (`ActivityEnvironment`: the count, the batches 4 at
once, the removal check, into a catalog of its own).
Prints one table.
Usage: .venv/bin/python bench/sync.py [--runs 5] [--latency-ms 0] [--target sqlite|medusa]

With --target medusa it starts a local Medusa store too (devtools/medusa; installed once) and
times the same three runs into it, beside a plain script that sends the same batches straight to
the Admin API (the same target code, 4 batches at once, no Temporal), with the ratio.
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment  # noqa: E402

from activities.catalog import SqliteCatalog  # noqa: E402
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
    p.add_argument("--target", choices=("sqlite", "medusa"), default="sqlite")
    a = p.parse_args()
    if a.target == "medusa":
        return await medusa_main(a)
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
            direct_db = Path(tmp) / "direct.db"  # the no-Temporal reference's own catalog
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
                    walls, jobs, direct = [], [], []
                    runs = 1 if kind.startswith("full") else a.runs
                    for _ in range(runs):
                        if kind.startswith("full"):
                            settings.catalog_path.unlink(missing_ok=True)
                            direct_db.unlink(missing_ok=True)
                        wall, report = await run_cli(env, *args)
                        walls.append(wall)
                        jobs.append(float(report["duration_s"]))  # type: ignore[arg-type]
                        direct.append(
                            await asyncio.to_thread(
                                direct_activities, mirror.url, direct_db, dry_run=bool(args)
                            )
                        )
                    label = f"{kind}, {'encrypted' if encryption else 'clear'}"
                    rows.append(
                        (
                            label,
                            runs,
                            statistics.median(walls),
                            statistics.median(jobs),
                            statistics.median(direct),
                        )
                    )
    mirror.stop()
    await env_server.shutdown()
    print(
        f"sync-products, 194 products, batch size 15 (13 batches), 4 in flight, "
        f"mirror latency {a.latency_ms} ms"
    )
    print(
        f"{'run':39} {'runs':>4} {'CLI wall s (median)':>20} {'job duration s':>15} "
        f"{'direct s':>9} {'job/direct':>10}"
    )
    for kind, runs, wall, job, plain in rows:
        print(f"{kind:39} {runs:>4} {wall:>20.2f} {job:>15.2f} {plain:>9.2f} {job / plain:>9.2f}x")


def direct_activities(mirror_url: str, catalog: Path, *, dry_run: bool) -> float:
    """The job's own activities (count, 13 batches 4 at once, the removal check), called
    directly in `ActivityEnvironment` (no server, no worker): what the sync costs without
    Temporal. Returns the seconds it took."""
    from concurrent.futures import ThreadPoolExecutor

    from activities.dummyjson import DummyJSONClient
    from activities.models import BatchRequest, RemoveRequest, SourceRequest
    from activities.sync_products import SyncProductsActivities

    started = time.perf_counter()
    acts = SyncProductsActivities(DummyJSONClient(mirror_url), SqliteCatalog(catalog))
    total = ActivityEnvironment().run(acts.count_source_products, SourceRequest())

    def batch(offset: int) -> None:
        req = BatchRequest(offset=offset, limit=min(15, total - offset), dry_run=dry_run)
        ActivityEnvironment().run(acts.sync_products_batch, req)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(batch, range(0, total, 15)))
    ActivityEnvironment().run(acts.remove_missing_products, RemoveRequest(dry_run=dry_run))
    return time.perf_counter() - started


def direct_sync(mirror_url: str, target: Any, *, dry_run: bool) -> tuple[float, int, int, int]:
    """The same batches as the job (15 products, 4 at once) straight to the target: no Temporal."""
    from concurrent.futures import ThreadPoolExecutor

    from activities.catalog import from_dummyjson
    from activities.dummyjson import DummyJSONClient, SourceProduct

    started = time.perf_counter()
    source = DummyJSONClient(mirror_url)
    total = source.count()

    def batch(offset: int) -> tuple[int, int, int]:
        page = source.page(offset, min(15, total - offset))
        products = [from_dummyjson(SourceProduct.model_validate(p)) for p in page.products]
        plan = target.sync_batch(products, tenant="default", dry_run=dry_run)
        return len(plan.create), len(plan.update), len(plan.unchanged)

    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(batch, range(0, total, 15)))
    source.close()
    created, updated, unchanged = (sum(c[i] for c in counts) for i in range(3))
    return time.perf_counter() - started, created, updated, unchanged


async def medusa_main(a: argparse.Namespace) -> None:
    from activities.medusa import MedusaCatalog
    from devtools.medusa import start

    env_server = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        dev_server_startup_timeout=timedelta(seconds=60),
    )
    mirror = Mirror(faults=Faults(latency_ms=a.latency_ms)).start()
    address = env_server.client.service_client.config.target_host
    keys = Keyring.new_entry()
    rows: list[tuple[str, int, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = start(Path(tmp) / "medusa", durable=False)
        try:
            settings = Settings(
                dummyjson_base_url=mirror.url,
                catalog_db=Path(tmp) / "catalog.db",
                temporal_task_queue="bench-medusa",
                payload_keys=keys,  # type: ignore[arg-type]
                sync_products_target="medusa",
                medusa_backend_url=store.url,
                medusa_api_key=store.api_key,  # type: ignore[arg-type]
            )
            env = {
                **os.environ,
                "TEMPORAL_ADDRESS": address,
                "TEMPORAL_TASK_QUEUE": "bench-medusa",
                "DUMMYJSON_BASE_URL": mirror.url,
                "PAYLOAD_KEYS": keys,
            }
            direct_target = MedusaCatalog(store.url, store.api_key)
            client = await Client.connect(address, data_converter=converter_for(settings))
            async with build_worker(client, settings):
                for kind, args, dry in (
                    ("full (194 created)", (), False),
                    ("no change (194 unchanged)", (), False),
                    ("dry run", ("--dry-run",), True),
                ):
                    runs = 1 if kind.startswith("full") else a.runs
                    walls, jobs, direct = [], [], []
                    for _ in range(runs):
                        if kind.startswith("full"):
                            store.reset()
                        wall, report = await run_cli(env, *args)
                        walls.append(wall)
                        jobs.append(float(report["duration_s"]))  # type: ignore[arg-type]
                        if kind.startswith("full"):
                            store.reset()
                        seconds, *_ = direct_sync(mirror.url, direct_target, dry_run=dry)
                        direct.append(seconds)
                    rows.append(
                        (
                            kind,
                            runs,
                            statistics.median(walls),
                            statistics.median(jobs),
                            statistics.median(direct),
                        )
                    )
            direct_target.close()
        finally:
            store.stop()
    mirror.stop()
    await env_server.shutdown()
    print(
        "sync-products into a local Medusa 2.21 store, 194 products, batch size 15, 4 in flight, "
        f"mirror latency {a.latency_ms} ms"
    )
    print(
        f"{'run':28} {'runs':>4} {'CLI wall s':>11} {'job s':>7} {'direct s':>9} {'job/direct':>11}"
    )
    for kind, runs, wall, job, plain in rows:
        print(f"{kind:28} {runs:>4} {wall:>11.2f} {job:>7.2f} {plain:>9.2f} {job / plain:>10.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # temporalio/sdk-python#300: skip interpreter teardown
