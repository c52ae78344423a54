"""The worker's log: one stream (stderr) for our lines, the SDK's and the SDK core's, as text a
person reads or as JSON a collector parses (LOG_FORMAT).

- The SDK's workflow and activity loggers append their info to the message as a dict
  (`… ({'attempt': 1, …})`); here that info goes in front, shortened to the ids a person
  looks for (text), or into fields (JSON), never onto the message.
- A failure our code raised on purpose (a Temporal ApplicationError: a refused key, a rejected
  session, a source that answered 503) is one line with its type and message; any other
  exception is a bug, and keeps its traceback.
- The SDK core's own lines (Rust) reach the same stream through the runtime's log forwarding
  (`core_logging`) instead of being printed by core in its own format.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.runtime import LogForwardingConfig, LoggingConfig, TelemetryFilter

LogFormat = Literal["text", "json"]
CORE_LOGGER = "temporalio.core"
# Loggers that say one line per request or poll: only their warnings are shown.
QUIET = ("httpx", "httpcore", "urllib3")
# In the text format, lines from these libraries say where they come from.
SOURCES = {"opentelemetry": "traces", "urllib3": "http"}


def setup_logging(fmt: LogFormat = "text", level: int = logging.INFO) -> None:
    """Route every logger to one stderr handler in `fmt`; idempotent (a second call replaces
    the handler). The SDK's loggers stop appending their info dict to the message."""
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_schedjobs", False)]:
        root.removeHandler(old)
    handler._schedjobs = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def core_logging() -> LoggingConfig:
    """The SDK core's warnings and errors, forwarded to the `temporalio.core` logger (so into
    the handler above, in the same format), instead of core's own console output."""
    return LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="WARN"),
        forwarding=LogForwardingConfig(
            logger=logging.getLogger(CORE_LOGGER),
            append_target_to_name=False,
            prepend_target_on_message=False,
            append_log_fields_to_message=False,  # fields go after the message (text) or in JSON
        ),
    )


def expected(exc: BaseException | None) -> bool:
    """A failure the code raised on purpose, with a message meant for people: no traceback."""
    return isinstance(exc, ApplicationError)


def error_line(exc: BaseException) -> str:
    """An expected failure in one line: its type, message, and whether Temporal retries it."""
    if isinstance(exc, ApplicationError):
        kind = exc.type or type(exc).__name__
        text = (exc.message or kind).splitlines()[0]
        if exc.non_retryable:
            text += " (not retried)"
        elif exc.category == ApplicationErrorCategory.BENIGN:
            text += " (benign)"
        return f"{kind}: {text}"
    return f"{type(exc).__name__}: " + (str(exc).splitlines() or [""])[0]


def context(record: logging.LogRecord) -> dict[str, Any]:
    """The workflow and activity a record was logged from (the SDK's `extra`), as flat fields."""
    fields: dict[str, Any] = {}
    wf = getattr(record, "temporal_workflow", None)
    if isinstance(wf, dict):
        fields.update(
            workflow_id=wf.get("workflow_id"),
            run_id=wf.get("run_id"),
            workflow_type=wf.get("workflow_type"),
            attempt=wf.get("attempt"),
        )
        if wf.get("update_name"):
            fields["update"] = wf["update_name"]
    act = getattr(record, "temporal_activity", None)
    if isinstance(act, dict):
        fields.update(
            workflow_id=act.get("workflow_id"),
            run_id=act.get("workflow_run_id"),
            workflow_type=act.get("workflow_type"),
            activity_type=act.get("activity_type"),
            activity_id=act.get("activity_id"),
            attempt=act.get("attempt"),
        )
    return {k: v for k, v in fields.items() if v is not None}


def core_fields(record: logging.LogRecord) -> dict[str, Any] | None:
    """A forwarded core line's target and structured fields (None for a Python line)."""
    core = getattr(record, "temporal_log", None)
    if core is None:
        return None
    fields = dict(getattr(core, "fields", None) or {})
    return {"target": getattr(core, "target", ""), **fields}


def _message(record: logging.LogRecord) -> tuple[str, str | None]:
    """The message, with an expected failure appended in one line; and the traceback of an
    unexpected one (None when there is none to show)."""
    message = record.getMessage()
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None and expected(exc):
        return f"{message}: {error_line(exc)}", None
    if record.exc_info:
        return message, logging.Formatter().formatException(record.exc_info)
    return message, record.exc_text or None


class TextFormatter(logging.Formatter):
    """`2026-01-05 10:00:01,234 INFO [sync-products/… count_source_products] message`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        message, trace = _message(record)
        ctx = context(record)
        core = core_fields(record)
        prefix = ""
        if "workflow_id" in ctx:
            where = ctx["workflow_id"]
            if "activity_type" in ctx:
                where += f" {ctx['activity_type']}"
                if ctx.get("attempt", 1) > 1:
                    where += f" attempt {ctx['attempt']}"
            prefix = f"[{where}] "
        elif core is not None:
            prefix = "[sdk core] "
            extra = {k: v for k, v in core.items() if k != "target"}
            if extra:
                message += " " + " ".join(f"{k}={_short(v)}" for k, v in extra.items())
        elif record.name.split(".")[0] in SOURCES:
            prefix = f"[{SOURCES[record.name.split('.')[0]]}] "
        line = f"{self.formatTime(record)} {record.levelname} {prefix}{message}"
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return f"{line}\n{trace.rstrip()}" if trace else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the workflow and
    activity fields, `error` and `traceback` for a failure, `core` for a forwarded core line."""

    def format(self, record: logging.LogRecord) -> str:
        message, trace = _message(record)
        time = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        doc: dict[str, Any] = {
            "time": time.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            **context(record),
        }
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            doc["error"] = error_line(exc)
        if trace:
            doc["traceback"] = trace
        core = core_fields(record)
        if core is not None:
            doc["core"] = core
            if "run_id" in core:  # the workflow run it is about, where Python lines have it
                doc.setdefault("run_id", core["run_id"])
        return json.dumps(doc, default=str, ensure_ascii=False)


def _short(value: Any) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."
