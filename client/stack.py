"""Finding the stack `make run` started: its note in DATA_DIR, and the Web UI's address.

While `make run` runs it leaves `DATA_DIR/devstack.json`: the Temporal server and Web UI it
started (on whatever ports it was given), the source its worker reads and its task queue. The CLI
in another terminal reads it when nothing else (TEMPORAL_ADDRESS, TEMPORAL_PROFILE, a profile
file's address) names a server, so it talks to that stack, not to whatever holds port 7233.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

from pydantic import BaseModel, ValidationError
from temporalio import envconfig

from client.settings import Settings
from client.temporal_profile import DEFAULT_ADDRESS

NOTE = "devstack.json"
DEFAULT_UI_URL = "http://localhost:8233"  # the dev server's, with its default ports


class StackNote(BaseModel):
    """What a running `make run` tells the CLI. Temporal and UI only when it started the
    dev server itself (a server of yours may need TLS or a key the note cannot carry)."""

    pid: int
    source: str
    task_queue: str
    temporal_address: str | None = None
    namespace: str | None = None
    ui_url: str | None = None
    data_dir: str | None = None  # absolute: where the stack keeps its keys


def write_note(data_dir: Path, note: StackNote) -> Path:
    path = data_dir / NOTE
    path.write_text(note.model_dump_json())
    return path


def read_note(data_dir: Path) -> StackNote | None:
    """The note of a `make run` that is still running, else None (none, unreadable, or left
    behind by a stack that was killed)."""
    try:
        note = StackNote.model_validate(json.loads((data_dir / NOTE).read_text()))
    except (OSError, ValueError, ValidationError):
        return None
    try:
        os.kill(note.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    return note


def running_source(data_dir: Path, task_queue: str) -> str | None:
    """The source a running `make run`'s worker on `task_queue` reads, if there is one."""
    note = read_note(data_dir)
    return note.source if note is not None and note.task_queue == task_queue else None


def _server_named(settings: Settings) -> bool:
    """Whether the environment or a profile names a Temporal server: then it is the one."""
    if os.environ.get("TEMPORAL_ADDRESS") or settings.temporal_profile:
        return True
    try:
        return bool(envconfig.ClientConfigProfile.load().address)
    except Exception:  # a bad profile file was already named by load_settings
        return True


def use_running_stack(settings: Settings) -> StackNote | None:
    """Point `settings` at the Temporal of the running `make run` when nothing else names a
    server; returns the note used, or None (settings unchanged)."""
    if _server_named(settings):
        return None
    note = read_note(settings.data_dir)
    if note is None or note.temporal_address is None:
        return None
    settings.temporal_address = note.temporal_address
    if not os.environ.get("TEMPORAL_NAMESPACE") and note.namespace:
        settings.temporal_namespace = note.namespace
    if note.data_dir:  # its keys: payloads written there open here
        settings.data_dir = Path(note.data_dir)
    return note


def ui_url(settings: Settings) -> str | None:
    """The Web UI of the server `settings` talks to: the running stack's, else the dev
    server's default for the default address; None when it is not known (a server of yours)."""
    note = read_note(settings.data_dir)
    if note is not None and note.ui_url and note.temporal_address == settings.temporal_address:
        return note.ui_url
    if settings.temporal_address in (DEFAULT_ADDRESS, "127.0.0.1:7233"):
        return DEFAULT_UI_URL
    return None


def run_url(ui: str, namespace: str, workflow_id: str) -> str:
    """A workflow's page in the Web UI (its id has slashes: encoded as one path segment)."""
    ns, wf = quote(namespace, safe=""), quote(workflow_id, safe="")
    return f"{ui.rstrip('/')}/namespaces/{ns}/workflows/{wf}"
