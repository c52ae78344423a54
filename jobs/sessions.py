"""Ductape-style sessions: fill `$Session{tag}{key}` placeholders in a job's input from a token.

A job's body must never run with unresolved data, so every placeholder is resolved (or the job
fails with a `SessionError` saying which check failed) before the job starts. The token is a JWT
signed with SESSION_SECRET (HS256): signed, NOT encrypted. Anyone who holds the token can read its
data, so put only what the job may see in it, and treat the token itself as a credential.

Pure functions: no I/O, no Temporal; `now` parameters make expiry testable without sleeping.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt

SESSION_PLACEHOLDER = re.compile(r"\$Session\{([^{}]+)\}\{([^{}]+)\}")
MIN_SECRET_LENGTH = 32
ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["tag", "data", "iat", "exp"]

SessionErrorKind = Literal[
    "tampered", "expired", "wrong_tag", "missing_key", "no_session", "malformed"
]


class SessionError(Exception):
    """Why a session could not fill a job's input; `kind` says which check failed."""

    kind: SessionErrorKind

    def __init__(self, kind: SessionErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _check_secret(secret: str) -> None:
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"SESSION_SECRET must be at least {MIN_SECRET_LENGTH} characters "
            f"(got {len(secret)}); generate one with `python -c 'import secrets; "
            f"print(secrets.token_urlsafe(32))'`"
        )


def _utc_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return now


def issue_token(
    secret: str, tag: str, data: dict[str, Any], ttl: timedelta, *, now: datetime | None = None
) -> str:
    """A signed session token for `tag` carrying `data`, valid for `ttl` from `now`."""
    _check_secret(secret)
    if not tag:
        raise ValueError("session tag must not be empty")
    if ttl <= timedelta(0):
        raise ValueError(f"session ttl must be positive, got {ttl}")
    issued = _utc_now(now)
    claims = {
        "tag": tag,
        "data": data,
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(
    secret: str, token: str, *, tag: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """The data of a valid token; raises SessionError when any check fails.

    PyJWT checks the signature; expiry is checked here against `now` so it is deterministic.
    """
    _check_secret(secret)
    current = _utc_now(now)
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": REQUIRED_CLAIMS,
            },
        )
    except jwt.InvalidSignatureError:
        raise SessionError(
            "tampered",
            "session token signature is invalid: it was changed, "
            "or signed with another SESSION_SECRET",
        ) from None
    except jwt.InvalidTokenError as exc:
        raise SessionError(
            "malformed", f"session token is not a valid session JWT ({exc}); issue a new one"
        ) from None

    token_tag, data, exp = claims["tag"], claims["data"], claims["exp"]
    if (
        not isinstance(token_tag, str)
        or not isinstance(data, dict)
        or isinstance(exp, bool)
        or not isinstance(exp, int | float)
    ):
        raise SessionError(
            "malformed", "session token claims tag/data/exp have the wrong types; issue a new one"
        )
    if exp <= current.timestamp():
        expired_at = datetime.fromtimestamp(exp, UTC).isoformat()
        raise SessionError(
            "expired",
            f"session token for tag '{token_tag}' expired at {expired_at}; "
            "issue a new one with `starter.py session create`",
        )
    if tag is not None and tag != token_tag:
        raise SessionError(
            "wrong_tag", f"placeholder asks for session '{tag}' but the token is for '{token_tag}'"
        )
    return data


def find_placeholders(value: Any) -> list[tuple[str, str]]:
    """Every (tag, key) in the strings of `value` (dict values and list items), in order."""
    if isinstance(value, str):
        return [(m.group(1), m.group(2)) for m in SESSION_PLACEHOLDER.finditer(value)]
    if isinstance(value, dict):
        return [found for item in value.values() for found in find_placeholders(item)]
    if isinstance(value, list):
        return [found for item in value for found in find_placeholders(item)]
    return []


def _lookup(sessions: dict[str, dict[str, Any]], tag: str, key: str) -> Any:
    """The session value for a (possibly dotted) key, e.g. `details.email`."""
    current: Any = sessions[tag]
    for part in key.split("."):
        if not isinstance(current, dict) or part not in current:
            raise SessionError("missing_key", f"session '{tag}' has no key '{key}'")
        current = current[part]
    return current


def _as_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _substitute(value: Any, sessions: dict[str, dict[str, Any]]) -> Any:
    if isinstance(value, str):
        whole = SESSION_PLACEHOLDER.fullmatch(value)
        if whole:
            return copy.deepcopy(_lookup(sessions, whole.group(1), whole.group(2)))
        return SESSION_PLACEHOLDER.sub(
            lambda m: _as_text(_lookup(sessions, m.group(1), m.group(2))), value
        )
    if isinstance(value, dict):
        return {k: _substitute(v, sessions) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(item, sessions) for item in value]
    return value


def resolve_placeholders(
    value: Any, *, token: str | None, secret: str, now: datetime | None = None
) -> Any:
    """A new `value` with every `$Session{tag}{key}` filled from the verified token.

    A string that is exactly one placeholder takes the session value with its JSON type; one
    embedded in a longer string becomes text. Without placeholders, `value` comes back as is.
    """
    found = find_placeholders(value)
    if not found:
        return value
    if token is None:
        tag, key = found[0]
        raise SessionError(
            "no_session",
            f"input uses $Session{{{tag}}}{{{key}}} but the job has no session; "
            'add "session": {...} to the job',
        )
    tags = dict.fromkeys(tag for tag, _ in found)  # distinct, in order: verify once per tag
    sessions = {tag: verify_token(secret, token, tag=tag, now=now) for tag in tags}
    return _substitute(value, sessions)
