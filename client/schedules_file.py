"""The schedules file (TOML, read with the standard library): load and validate it whole.

Every problem is a ConfigError naming the file, the schedule and the field, so the CLI can print
one line and start nothing.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from client.errors import ConfigError
from client.settings import Settings
from jobs import expansions
from jobs.registry import JOBS
from jobs.sync_products import SyncProductsInput
from scheduling.plan import Timing
from scheduling.spec import ScheduleSpec

DEFAULT_FILE = Path("schedules.toml")


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
        **{k: v for k, v in overrides.items() if v is not None},
    }
    return SyncProductsInput.model_validate(args).model_dump(mode="json")


def load_schedules(path: Path, settings: Settings) -> list[ScheduleSpec]:
    """Read and validate the whole file; the first problem is a ConfigError naming the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such schedules file; pass --file PATH") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    entries = data.get("schedule", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no [[schedule]] entries; see README 'Schedules file'")
    specs: list[ScheduleSpec] = []
    for i, entry in enumerate(entries):
        label = f"{path}: schedule {entry.get('name', f'#{i + 1}')!r}"
        job = JOBS.get(entry.get("job", ""))
        if job is None:
            raise ConfigError(
                f"{label}: job: unknown job {entry.get('job')!r}; use one of {sorted(JOBS)}"
            )
        if entry.get("job") == "sync-products":
            if "cron" not in entry and "every" not in entry:
                entry = {**entry, "cron": settings.sync_products_schedule}
            try:
                entry = {**entry, "args": sync_products_args(settings, **entry.get("args", {}))}
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
        if not Timing.of(spec, datetime.now(UTC)).can_fire():
            raise ConfigError(f"{label}: cron: {spec.cron!r} can never fire; fix it or add every")
        if any(s.name == spec.name for s in specs):
            raise ConfigError(f"{label}: name: used twice in the file")
        specs.append(spec)
    return specs
