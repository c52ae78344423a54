"""Session placeholders: a signed token fills `$Session{tag}{key}`; each failed check says so."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobs.sessions import (
    SessionError,
    find_placeholders,
    issue_token,
    resolve_placeholders,
    verify_token,
)

SECRET = "s" * 32
OTHER_SECRET = "o" * 32
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=30)
DATA: dict[str, Any] = {
    "user_id": 42,
    "details": {"email": "ada@example.com", "tier": "gold"},
    "roles": ["admin", "ops"],
}


def token(tag: str = "user", secret: str = SECRET) -> str:
    return issue_token(secret, tag, DATA, TTL, now=T0)


def resolve(value: Any, tok: str | None, now: datetime = T0) -> Any:
    return resolve_placeholders(value, token=tok, secret=SECRET, now=now)


def test_good_token_fills_nested_input() -> None:
    job_input = {
        "id": "$Session{user}{user_id}",
        "profile": "$Session{user}{details}",
        "greeting": "hi $Session{user}{details.email}, you are #$Session{user}{user_id}",
        "extra": "$Session{user}{roles} / $Session{user}{details}",
        "items": [{"owner": "$Session{user}{details.tier}"}, 7, None],
        "$Session{user}{user_id}": "key stays",
    }
    original = copy.deepcopy(job_input)

    resolved = resolve(job_input, token())

    assert resolved == {
        "id": 42,
        "profile": {"email": "ada@example.com", "tier": "gold"},
        "greeting": "hi ada@example.com, you are #42",
        "extra": '["admin", "ops"] / {"email": "ada@example.com", "tier": "gold"}',
        "items": [{"owner": "gold"}, 7, None],
        "$Session{user}{user_id}": "key stays",
    }
    assert job_input == original  # not mutated
    assert resolved is not job_input


def test_verify_returns_data() -> None:
    assert verify_token(SECRET, token(), tag="user", now=T0 + TTL - timedelta(seconds=1)) == DATA


def tampered_payload(tok: str) -> str:
    header, payload, signature = tok.split(".")
    i = len(payload) // 2
    flipped = "A" if payload[i] != "A" else "B"
    return ".".join([header, payload[:i] + flipped + payload[i + 1 :], signature])


@pytest.mark.parametrize(
    ("tok", "now", "kind"),
    [
        pytest.param(tampered_payload(token()), T0, "tampered", id="payload-changed"),
        pytest.param(token(secret=OTHER_SECRET), T0, "tampered", id="other-secret"),
        pytest.param(token(), T0 + TTL + timedelta(seconds=1), "expired", id="expired"),
        pytest.param(token(), T0 + TTL, "expired", id="expires-at-exp"),
        pytest.param(token(tag="admin"), T0, "wrong_tag", id="wrong-tag"),
        pytest.param("abc", T0, "malformed", id="garbage"),
    ],
)
def test_bad_token_is_refused(tok: str, now: datetime, kind: str) -> None:
    with pytest.raises(SessionError) as err:
        resolve({"id": "$Session{user}{user_id}"}, tok, now=now)
    assert err.value.kind == kind


def test_messages_say_what_failed() -> None:
    with pytest.raises(SessionError, match="signature is invalid"):
        resolve("$Session{user}{user_id}", token(secret=OTHER_SECRET))
    with pytest.raises(SessionError) as err:
        resolve("$Session{user}{user_id}", token(), now=T0 + TTL + timedelta(seconds=1))
    assert (T0 + TTL).isoformat() in str(err.value)
    assert "starter.py session create" in str(err.value)
    with pytest.raises(SessionError, match="asks for session 'user' but the token is for 'admin'"):
        resolve("$Session{user}{user_id}", token(tag="admin"))


def test_token_without_required_claims_is_malformed() -> None:
    import jwt

    tok = jwt.encode({"tag": "user", "data": {}}, SECRET, algorithm="HS256")
    with pytest.raises(SessionError) as err:
        verify_token(SECRET, tok, now=T0)
    assert err.value.kind == "malformed"


@pytest.mark.parametrize("key", ["nope", "details.phone", "user_id.deeper"])
def test_missing_key(key: str) -> None:
    with pytest.raises(SessionError, match=f"session 'user' has no key '{key}'") as err:
        resolve({"x": f"value: $Session{{user}}{{{key}}}"}, token())
    assert err.value.kind == "missing_key"


def test_placeholders_without_token() -> None:
    with pytest.raises(SessionError, match=r"uses \$Session\{user\}\{user_id\}") as err:
        resolve(["$Session{user}{user_id}"], None)
    assert err.value.kind == "no_session"


@pytest.mark.parametrize("value", [{"a": [1, "plain", {"b": None}]}, "text", 3, None, []])
def test_no_placeholders_needs_no_token(value: Any) -> None:
    assert resolve(value, None) is value


@pytest.mark.parametrize("secret", ["", "short", "x" * 31])
def test_short_secret_is_rejected(secret: str) -> None:
    with pytest.raises(ValueError, match="SESSION_SECRET must be at least 32 characters"):
        issue_token(secret, "user", DATA, TTL)
    with pytest.raises(ValueError, match="SESSION_SECRET must be at least 32 characters"):
        verify_token(secret, token())


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-5)])
def test_non_positive_ttl_is_rejected(ttl: timedelta) -> None:
    with pytest.raises(ValueError, match="ttl"):
        issue_token(SECRET, "user", DATA, ttl)


def test_empty_tag_is_rejected() -> None:
    with pytest.raises(ValueError, match="tag"):
        issue_token(SECRET, "", DATA, TTL)


def test_find_placeholders_in_order() -> None:
    value = {
        "a": "$Session{user}{id} and $Session{org}{name}",
        "$Session{ignored}{key}": [1, {"b": "$Session{user}{details.email}"}],
        "c": 5,
    }
    assert find_placeholders(value) == [
        ("user", "id"),
        ("org", "name"),
        ("user", "details.email"),
    ]
