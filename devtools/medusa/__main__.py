"""`python -m devtools.medusa` / `make medusa`: install (once) and run a local Medusa store.

Prints MEDUSA_BACKEND_URL and MEDUSA_API_KEY (also written to DATA_DIR/medusa/medusa.env) and runs
until Ctrl-C (or SIGTERM, or the terminal closing), which stops Medusa and PostgreSQL. A missing
prerequisite is one line saying what to install (exit 2); any other failure is one line naming the
log to read (exit 1).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from devtools.medusa.store import (
    MEDUSA_VERSION,
    MissingPrerequisite,
    StoreError,
    default_cache_dir,
    start,
)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: Any) -> None:
    for sig in STOP_SIGNALS:  # a second signal while stopping does not abandon the stop
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    data_default = Path(os.environ.get("DATA_DIR", "data")) / "medusa"
    parser = argparse.ArgumentParser(
        prog="python -m devtools.medusa",
        description=f"Install (once) and run a local Medusa {MEDUSA_VERSION} store; Ctrl-C stops.",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("MEDUSA_PORT", "9000")))
    parser.add_argument("--pg-port", type=int, default=0, help="PostgreSQL's (0: a free one)")
    parser.add_argument("--data-dir", type=Path, default=data_default)
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"{default_cache_dir()}")
    args = parser.parse_args(argv)
    os.umask(0o077)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    store = None
    try:
        try:
            t0 = time.monotonic()
            store = start(args.data_dir, args.port, pg_port=args.pg_port, cache_dir=args.cache_dir)
        except MissingPrerequisite as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except (StoreError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"Medusa {MEDUSA_VERSION} is up after {time.monotonic() - t0:.1f}s", flush=True)
        print(f"MEDUSA_BACKEND_URL={store.url}")
        print(f"MEDUSA_API_KEY={store.api_key}")
        print(f"DATABASE_URL={store.database_url}")
        print(
            f"(also in {store.data_dir / 'medusa.env'}; logs: {store.medusa_log},"
            f" {store.postgres_log}; Ctrl-C stops)",
            flush=True,
        )
        while store.running():
            time.sleep(0.5)
        print(f"error: Medusa exited; see {store.medusa_log}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping Medusa and PostgreSQL", file=sys.stderr)
        return 0
    finally:
        if store is not None:
            store.stop()


if __name__ == "__main__":
    sys.exit(main())
