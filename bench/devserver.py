"""What the benchmarks share: a fresh dev server whose own output goes to a file, not between
the figures they print."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from client.codec import Keyring, data_converter
from workflows.children import SCHEDULE_NAME, SCHEDULED_FIRE_TIME

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """File descriptors 1 and 2 go to `path` meanwhile (what a process started now inherits)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


async def start_dev_server(keys: str, log: Path) -> WorkflowEnvironment:
    """A fresh in-memory dev server with the search attributes our jobs carry, and a client that
    encrypts with `keys`; its output goes to `log`, whose tail is printed if it does not start."""
    try:
        with output_to(log):
            return await WorkflowEnvironment.start_local(
                data_converter=data_converter(Keyring.parse(keys)),
                dev_server_existing_path=str(BIN / "temporal"),
                search_attributes=[SCHEDULE_NAME, SCHEDULED_FIRE_TIME],
                dev_server_extra_args=["--ui-disable-news-fetch"],
                dev_server_startup_timeout=timedelta(seconds=60),  # the SDK's 5 s is tight here
            )
    except Exception:
        print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
        raise
