"""Time `start_schedules` (what `starter.py start` runs) for N loops, one at a time and bounded
concurrent, side by side on one dev server with a worker polling (the loops then sleep: every 1h).

Usage: .venv/bin/python bench/start.py [--loops 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.testing import WorkflowEnvironment  # noqa: E402

import client.loops as loops  # noqa: E402
from client.codec import Keyring, data_converter  # noqa: E402
from client.settings import Settings  # noqa: E402
from scheduling.spec import ScheduleSpec  # noqa: E402
from worker import build_worker  # noqa: E402
from workflows.children import SCHEDULE_NAME, SCHEDULED_FIRE_TIME  # noqa: E402

BIN = Path(sys.executable).parent


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--loops", type=int, default=1000)
    a = p.parse_args()
    env = await WorkflowEnvironment.start_local(
        data_converter=data_converter(Keyring.parse(Keyring.new_entry())),
        dev_server_existing_path=str(BIN / "temporal"),
        dev_server_startup_timeout=timedelta(seconds=60),
        search_attributes=[SCHEDULE_NAME, SCHEDULED_FIRE_TIME],  # the loops' jobs carry them
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(catalog_db=Path(tmp) / "catalog.db", temporal_task_queue="bench-start")
        async with build_worker(env.client, settings):
            for label, bound in (("one at a time", 1), ("concurrent", loops.START_CONCURRENCY)):
                specs = [
                    ScheduleSpec(name=f"{bound}-{i}", job="echo", every="1h")
                    for i in range(a.loops)
                ]
                loops.START_CONCURRENCY = bound
                started = time.perf_counter()
                lines = await loops.start_schedules(env.client, specs, "bench-start")
                rows.append((label, bound, time.perf_counter() - started, len(lines)))
    await env.shutdown()
    print(f"start_schedules: {a.loops} loops on one dev server, a worker polling, 2 cores")
    print(f"{'mode':16} {'in flight':>9} {'seconds':>8} {'loops/s':>8}")
    for label, bound, seconds, n in rows:
        print(f"{label:16} {bound:>9} {seconds:>8.1f} {n / seconds:>8.0f}")


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # temporalio/sdk-python#300
