"""`python -m devtools.mirror [--port 8787] [--error-rate 0.2] [--api-key K] ...`: serve the
local DummyJSON.

With --api-key (repeatable) or MIRROR_API_KEYS (comma-separated; the environment keeps them out
of `ps`), /products* answers 401 unless sent `Authorization: Bearer <KEY>`.
The admin API (/__mirror/*) answers 401 unless sent `Authorization: Bearer <admin token>`: the
token from --admin-token or MIRROR_ADMIN_TOKEN (the environment keeps it out of `ps`), else a
random one, printed at start."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from devtools.mirror.server import Faults, Mirror


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.mirror", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787)
    p.add_argument("--latency-ms", type=int, default=0, help="delay every /products answer")
    p.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 500")
    p.add_argument("--throttle-rate", type=float, default=0.0, help="fraction answered 429")
    p.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on 429")
    p.add_argument("--malformed-rate", type=float, default=0.0, help="fraction of broken JSON")
    p.add_argument("--fail-skip", type=int, action="append", default=[], help="page that fails")
    p.add_argument("--seed", type=int, default=None, help="seed for the fault rates")
    p.add_argument("--api-key", action="append", metavar="KEY", help="accept this Bearer key")
    p.add_argument(
        "--admin-token",
        default=os.environ.get("MIRROR_ADMIN_TOKEN") or None,
        help="what /__mirror/* needs as Bearer token (default: $MIRROR_ADMIN_TOKEN, or a random "
        "one, printed)",
    )
    a = p.parse_args(argv)
    try:
        faults = Faults(
            latency_ms=a.latency_ms,
            error_rate=a.error_rate,
            throttle_rate=a.throttle_rate,
            retry_after_s=a.retry_after,
            malformed_rate=a.malformed_rate,
            fail_skips=a.fail_skip,
            seed=a.seed,
        )
    except ValueError as exc:
        err = exc.errors()[0] if hasattr(exc, "errors") else {"loc": ["?"], "msg": str(exc)}
        print(f"error: --{str(err['loc'][0]).replace('_', '-')}: {err['msg']}", file=sys.stderr)
        return 2
    try:
        mirror = Mirror(
            host=a.host,
            port=a.port,
            faults=faults,
            api_keys=[*(a.api_key or ()), *os.environ.get("MIRROR_API_KEYS", "").split(",")],
            admin_token=a.admin_token,
        )
    except OSError as exc:
        print(f"error: cannot serve on {a.host}:{a.port}: {exc.strerror}", file=sys.stderr)
        return 1
    auth = f" (Bearer auth, {len(mirror.api_keys)} key(s))" if mirror.api_keys else ""
    print(f"DummyJSON mirror on {mirror.url}/products{auth}", flush=True)
    if a.admin_token is None:  # made here: the only way anyone can learn it
        print(f"admin API {mirror.url}/__mirror/* token: {mirror.admin_token}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        mirror.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
