"""The data directory's own secrets (connections.key, session.secret) on first use: processes
started at once on a fresh DATA_DIR agree on one; a damaged file is an error naming it, never
replaced. And the GRACEFUL_SHUTDOWN_TIMEOUT setting."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from client.errors import ConfigError
from client.settings import Settings, load_settings
from tests.test_cli import ROOT, one_line

PROCESSES = 8
TRIALS = 5
SECRETS = ("connections.key", "session.secret")
# Each process loads its settings, then waits for the same moment to make both secrets, so
# they really do race (imports alone spread them over a second).
RACE = """
import sys, time
from client.settings import load_settings
settings = load_settings()
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
print(settings.connections_secret(), settings.session_key())
"""


def secret_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CONNECTIONS_KEY", "SESSION_SECRET")}
    env["DATA_DIR"] = str(data_dir)
    return env


def test_processes_starting_at_once_agree_on_one_secret(tmp_path: Path) -> None:
    for trial in range(TRIALS):
        data = tmp_path / f"trial-{trial}" / "data"  # neither exists yet
        at = time.time() + 1.5
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACE, str(at)],
                cwd=ROOT,
                env=secret_env(data),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(PROCESSES)
        ]
        outs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0] * PROCESSES, [err for _, err in outs]
        seen = {tuple(out.split()) for out, _ in outs}
        assert len(seen) == 1, f"trial {trial}: {len(seen)} different answers"
        (answer,) = seen
        assert len(answer) == len(SECRETS)  # neither is empty
        for name, secret in zip(SECRETS, answer, strict=True):
            path = data / name
            assert path.read_text() == secret
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(data.stat().st_mode) == 0o700  # DATA_DIR, made here
        assert sorted(p.name for p in data.iterdir()) == sorted(SECRETS)  # no temporary file


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("connections.key", "", "the file is empty"),
        ("connections.key", "  \n", "the file is empty"),
        ("connections.key", "not-a-key", "not a Fernet key"),
        ("session.secret", "short", "must be at least 32 characters"),
        ("session.secret", b"\xff\xfe" * 20, "not text"),
    ],
)
def test_a_damaged_secret_file_is_an_error_naming_it_and_is_kept(
    tmp_path: Path, name: str, content: str | bytes, reason: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    before = path.read_bytes()
    settings = Settings(data_dir=tmp_path)
    method = settings.connections_secret if name == "connections.key" else settings.session_key
    with pytest.raises(ConfigError) as err:
        method()
    message = str(err.value)
    assert message.startswith(f"{path}: {reason}") and "\n" not in message
    assert path.read_bytes() == before  # never silently replaced


def test_a_damaged_key_file_stops_the_cli_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "connections.key").write_text("")
    run = subprocess.run(
        [sys.executable, "starter.py", "connections", "add", "--id", "a", "--name", "A"]
        + ["--api-key", "k"],  # the key file is needed to seal the key
        cwd=ROOT,
        env={**secret_env(tmp_path), "CATALOG_DB": str(tmp_path / "catalog.db")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert one_line(run.stderr) == (
        f"error: {tmp_path / 'connections.key'}: the file is empty; restore it, or set "
        "CONNECTIONS_KEY (deleting it makes a new one, and loses what the old one protected)"
    )


def test_graceful_shutdown_timeout_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRACEFUL_SHUTDOWN_TIMEOUT", raising=False)
    assert Settings().graceful_shutdown == timedelta(seconds=30)
    monkeypatch.setenv("GRACEFUL_SHUTDOWN_TIMEOUT", "2m")
    assert load_settings().graceful_shutdown == timedelta(minutes=2)
    monkeypatch.setenv("GRACEFUL_SHUTDOWN_TIMEOUT", "soon")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith("GRACEFUL_SHUTDOWN_TIMEOUT='soon': ")
    assert str(err.value).endswith("; set it to a duration like 30s or 2m")


def test_a_bad_graceful_shutdown_timeout_stops_the_worker_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    env["GRACEFUL_SHUTDOWN_TIMEOUT"] = "0s"
    run = subprocess.run(
        [sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert one_line(run.stderr).startswith("error: GRACEFUL_SHUTDOWN_TIMEOUT='0s': ")
