"""The one-line error convention: what a user can fix is one line on stderr and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn


class UserError(Exception):
    """Something the user can fix; entry points print it as one line and exit with exit_code."""

    exit_code = 2


class ConfigError(UserError):
    """A bad setting or a bad schedules file: nothing is started."""


KEYS_FIX = (
    "use the keys of the stack you talk to: run from its directory, or set DATA_DIR to its data "
    "directory, or PAYLOAD_KEYS to its keys"
)


def _wrong_keys(exc: BaseException) -> BaseException | None:
    """A KeyringError (a payload no key of ours opens), also when the SDK wrapped it."""
    from temporalio.exceptions import ApplicationError

    from client.codec import MISSING_KEY, KeyringError  # imports the SDK: only when needed

    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, KeyringError):
            return seen
        if isinstance(seen, ApplicationError) and seen.type == MISSING_KEY:
            return KeyringError(str(seen.message).partition(":")[0])
        seen = seen.__cause__ or seen.__context__
    return None


def exit_on_user_error(main: Callable[[], Any]) -> Any:
    """Run an entry point; a UserError becomes one line on stderr and a non-zero exit, and so
    does a payload encrypted with a key we do not hold (exit 2: a setting to fix)."""
    try:
        return main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:
        keys = _wrong_keys(exc)
        if keys is None:
            raise
        print(f"error: PAYLOAD_KEYS: {keys}; {KEYS_FIX}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def program_name(module: str) -> str:
    """The command as the user typed it, for usage lines: the installed script (`schedjobs`),
    the file (`starter.py`), or `python -m <module>` for a module inside a package (run so)."""
    name = Path(sys.argv[0]).name
    if not name or (name.endswith(".py") and "." in module):
        return f"python -m {module}"
    return name


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line like every other bad input (not usage + error)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}; see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def port(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535 (bind() would raise OverflowError past it)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port; use 1 to 65535")
    return value
