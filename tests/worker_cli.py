"""`python worker.py` run once as a user would start it, for the cases that refuse to start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_worker(
    data_dir: Path, *, drop: tuple[str, ...] = ("TEMPORAL_",), **env: str
) -> subprocess.CompletedProcess[str]:
    """The worker with this environment (variables starting with `drop` removed first): its exit
    code and output, bounded in time (a refusal is immediate)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    full.update(DATA_DIR=str(data_dir), **env)
    return subprocess.run(
        [sys.executable, str(ROOT / "worker.py")],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )
