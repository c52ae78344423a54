"""The schedules file (TOML, read with the standard library): load and validate it whole.

Every problem is a ConfigError naming the file, the schedule and the field, so the CLI can print
one line and start nothing.
"""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from activities.expansion import INPUT_BYTES
from client.errors import ConfigError
from client.settings import Settings
from jobs import expansions
from jobs.registry import JOBS
from jobs.sync_products import SyncProductsInput
from scheduling.plan import Timing
from scheduling.spec import ScheduleSpec
from workflows.models import ScheduleInput

DEFAULT_FILE = Path("schedules.toml")
MAX_FILE_BYTES = 4 * 2**20  # a schedules or job file; read no further
MAX_PAYLOAD_BYTES = 3 * 2**19  # 1.5 MB: what one workflow input may be, under Temporal's 2 MB
MAX_DEPTH = 64  # lists and tables in args, nested
# A Medusa job's `config` carries over: its names for two fields, inside a [[schedule]] table
# (there `schedule` is a field of the table, not the file's list of tables). One of each pair.
MEDUSA_NAMES = {"schedule": "cron", "numberOfExecutions": "limit"}


def field_error(exc: ValidationError) -> str:
    """`field: why` for the first error; a whole-model check names its fields in its message."""
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    return f"{'.'.join(str(p) for p in err['loc'])}: {msg}" if err["loc"] else msg


def sync_products_args(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The sync job's args: SYNC_PRODUCTS_* settings, then anything given explicitly."""
    args = {
        "batch_size": settings.sync_products_batch_size,
        "max_retries": settings.sync_products_max_retries,
        "dry_run": settings.sync_products_dry_run,
        "delete_missing": settings.sync_products_delete_missing,
        **{k: v for k, v in overrides.items() if v is not None},
    }
    return SyncProductsInput.model_validate(args).model_dump(mode="json")


def read_input_file(path: Path, kind: str, flag: str = "--file ") -> str:
    """The text of a schedules, job or args file, read at most MAX_FILE_BYTES: a device
    (/dev/zero) or a huge file is refused, not read into memory; so are directories and
    non-UTF-8 bytes."""
    missing = f"{path}: no such {kind} file; pass {flag}PATH"
    a_kind = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a directory; pass {flag}PATH of {a_kind} file")
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(missing) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read it ({exc.strerror or exc}); pass {flag}PATH of {a_kind} file"
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"{path}: over the {MAX_FILE_BYTES // 2**20} MB limit of {a_kind} file; "
            f"pass {flag}PATH of a smaller one"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 (byte {exc.start}: {data[exc.start : exc.start + 1]!r}); "
            "save it as UTF-8"
        ) from None


def nested_too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether lists and tables nest deeper than `limit` (a JSON encoder gives up near 255)."""
    level = [value]
    for _ in range(limit + 1):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def payload_problem(spec: ScheduleSpec) -> str | None:
    """`field: why` when the loop could not carry this spec (or its jobs their input): Temporal
    refuses a payload over 2 MB, and the `once` expansion an input over 64 KB."""
    if nested_too_deep(spec.args):
        return f"args: nested more than {MAX_DEPTH} deep; flatten it"
    size = len(ScheduleInput(spec=spec).model_dump_json())
    if size > MAX_PAYLOAD_BYTES:
        return (
            f"args: {size / 2**20:.2f} MB as a workflow input, over the "
            f"{MAX_PAYLOAD_BYTES / 2**20} MB limit (Temporal refuses payloads over 2 MB); "
            "pass ids the job looks up, not the data"
        )
    job = JOBS.get(spec.job)
    once = spec.expansion == "once" or (spec.expansion is None and job and not job.per_connection)
    problem = input_problem(spec.args) if once else None
    return f"args: {problem}" if problem else None


def input_problem(args: Any) -> str | None:
    """Why a job could not take `args` as its input, or None. The one bound on a job's input
    (INPUT_BYTES, what the expansion activity hands a job), whether it comes from the schedules
    file, `run --args` or a Ductape job."""
    size = len(json.dumps(args, default=str))
    if size > INPUT_BYTES:
        return (
            f"{size // 1024} KB; a job's input holds at most {INPUT_BYTES // 1024} KB: "
            "pass ids the job looks up, not the data"
        )
    return None


def brief(text: str, width: int = 80) -> str:
    """A spec or value echoed on one line: long ones cut, with an ellipsis and the length."""
    if len(text) <= width:
        return text
    return f"{text[: width - 20]}… ({len(text):,} characters)"


def never_fires(spec: ScheduleSpec, now: datetime) -> str | None:
    """`field: why` for a spec the loop would start and then end without firing once."""
    timing = Timing.of(spec, now)
    if not timing.can_fire():
        return f"cron: {spec.cron!r} can never fire; fix it or add every"
    if spec.end_at is not None and spec.end_at <= now:
        return (
            f"end_at: {spec.end_at.isoformat()} has passed: the schedule would never fire; "
            "move end_at into the future or leave it out"
        )
    if spec.end_at is not None and timing.next_fire(None) is None:
        return (
            f"end_at: no fire time comes before {spec.end_at.isoformat()}: the schedule "
            "would never fire; move end_at later"
        )
    return None


def shown(value: Any, width: int = 80) -> str:
    """A value as the user wrote it, escaped (repr: no terminal escapes) and cut to one width."""
    text = repr(value)
    return text if len(text) <= width else f"{text[: width - 5]}…{text[-4:]}"


def load_schedules(path: Path, settings: Settings) -> list[ScheduleSpec]:
    """Read and validate the whole file; the first problem is a ConfigError naming the field."""
    text = read_input_file(path, "schedules")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read; flatten it") from None
    unknown = sorted(set(data) - {"schedule"})
    if unknown:
        raise ConfigError(
            f"{path}: {unknown[0]}: unknown top-level key; put each schedule in a "
            "[[schedule]] table (see README 'Schedules file')"
        )
    entries = data.get("schedule", [])
    if isinstance(entries, str):  # Medusa's `schedule: "0 0 * * *"` written at the top level
        raise ConfigError(
            f"{path}: schedule: {shown(entries)} at the top level; write it inside a "
            "[[schedule]] table, with its name and job (see README 'Schedules file')"
        )
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no [[schedule]] entries; see README 'Schedules file'")
    specs: list[ScheduleSpec] = []
    now = datetime.now(UTC)
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(
                f"{path}: schedule #{i + 1}: {shown(entry)} is not a table; write each schedule "
                "as a [[schedule]] table"
            )
        label = f"{path}: schedule {shown(entry.get('name', f'#{i + 1}'))}"
        spec = _entry(entry, label, settings, now)
        if any(s.name == spec.name for s in specs):
            raise ConfigError(f"{label}: name: used twice in the file")
        specs.append(spec)
    return specs


def _medusa_names(entry: dict[str, Any], label: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The entry with Medusa's names (`schedule`, `numberOfExecutions`) as ours, and which
    of ours were written Medusa's way, so that an error names the field as the file has it."""
    written: dict[str, str] = {}
    for medusa, ours in MEDUSA_NAMES.items():
        if medusa not in entry:
            continue
        if ours in entry:
            raise ConfigError(
                f"{label}: {medusa}: also set as {ours}; set one ({medusa} is Medusa's name "
                f"for {ours})"
            )
        entry = {ours if key == medusa else key: value for key, value in entry.items()}
        written[ours] = medusa
    return entry, written


def _as_written(problem: str, written: dict[str, str]) -> str:
    """`cron: why` as `schedule: why` when the file said `schedule`."""
    field, sep, rest = problem.partition(":")
    return f"{written[field]}{sep}{rest}" if sep and field in written else problem


def _entry(entry: dict[str, Any], label: str, settings: Settings, now: datetime) -> ScheduleSpec:
    entry, written = _medusa_names(entry, label)
    try:
        return _checked_entry(entry, label, settings, now)
    except ConfigError as exc:
        text = str(exc)
        if written and text.startswith(f"{label}: "):
            text = f"{label}: {_as_written(text.removeprefix(f'{label}: '), written)}"
        raise ConfigError(text) from None


def _checked_entry(
    entry: dict[str, Any], label: str, settings: Settings, now: datetime
) -> ScheduleSpec:
    name = entry.get("job")
    job = JOBS.get(name) if isinstance(name, str) else None
    if job is None:
        raise ConfigError(f"{label}: job: unknown job {shown(name)}; use one of {sorted(JOBS)}")
    if name == "sync-products":
        if "cron" not in entry and "every" not in entry:
            entry = {**entry, "cron": settings.sync_products_schedule}
        args = entry.get("args", {})
        if not isinstance(args, dict):
            raise ConfigError(
                f"{label}: args: Input should be a valid dictionary; write a table, "
                "like args = { batch_size = 50 }"
            )
        try:
            entry = {**entry, "args": sync_products_args(settings, **args)}
        except ValidationError as exc:
            raise ConfigError(f"{label}: args.{field_error(exc)}") from None
    try:
        spec = ScheduleSpec.model_validate(entry)
        spec.args = job.validate_args(spec.args)
    except ValidationError as exc:
        prefix = "" if exc.title == "ScheduleSpec" else "args."
        raise ConfigError(f"{label}: {prefix}{field_error(exc)}") from None
    if spec.expansion is not None and spec.expansion not in expansions.known():
        raise ConfigError(
            f"{label}: expansion: unknown expansion {spec.expansion!r}; define it in "
            f"jobs/expansions.py or use one of {expansions.known()}"
        )
    problem = payload_problem(spec) or never_fires(spec, now)
    if problem:
        raise ConfigError(f"{label}: {problem}")
    return spec
