"""The secrets kept in DATA_DIR (payload.keys, connections.key, session.secret): read without
side effects, and made only by an explicit step that a command takes after its checks passed, so
a refused or read-only command leaves no file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from client.errors import ConfigError


def read_secret(path: Path, variable: str, check: Callable[[str], None]) -> str | None:
    """The secret in `path`, or None if there is no such file. An unreadable, empty or damaged
    file stops the program, naming it (never its content)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == 20:  # ENOTDIR: a file above it; nothing can be there
            return None
        raise ConfigError(f"{path}: {exc.strerror}; fix DATA_DIR, or set {variable}") from None
    try:
        secret = raw.decode("utf-8").strip()
        if not secret:
            raise ValueError("the file is empty")
        check(secret)
    except ValueError as exc:  # also UnicodeDecodeError: not text
        reason = "not text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise ConfigError(
            f"{path}: {reason}; restore it, or set {variable} (deleting it makes a new "
            "one, and loses what the old one protected)"
        ) from None
    return secret


def create_secret(
    path: Path, variable: str, make: Callable[[], str], check: Callable[[str], None]
) -> str:
    """The secret in `path`, made now if there is none (readable by its owner only).
    Processes starting at once on a fresh DATA_DIR all end up with the same one; an existing
    file is never replaced."""
    existing = read_secret(path, variable, check)
    if existing is not None:
        return existing
    try:
        _create_once(path, make())
    except OSError as exc:
        raise ConfigError(
            f"DATA_DIR={str(path.parent)!r}: cannot write {path.name} there "
            f"({exc.strerror or exc}); set DATA_DIR to a directory you can write, or set {variable}"
        ) from None
    secret = read_secret(path, variable, check)
    assert secret is not None
    return secret


def _create_once(path: Path, secret: str) -> None:
    """Write `secret` to `path` unless it exists, without a race: each process writes its
    candidate to a private temporary file (0600) and hard-links it into place, which fails for
    all but the first; so a reader never sees a half-written file, and everybody reads the
    one that won."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secret)
            f.flush()
            os.fsync(f.fileno())
        # All or nothing; fails if another process was first, whose secret everybody uses then.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
