"""The one-line error convention: what a user can fix is one line on stderr and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """Something the user can fix; entry points print it as one line and exit with exit_code."""

    exit_code = 2


class ConfigError(UserError):
    """A bad setting or a bad schedules file: nothing is started."""


def exit_on_user_error(main: Callable[[], Any]) -> Any:
    """Run an entry point; a UserError becomes one line on stderr and a non-zero exit."""
    try:
        return main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
