"""The expansion activity: decides what one fire of a schedule runs.

It calls the schedule's expansion function (jobs/expansions.py) or the job's default, checks what
came back, gives every input its key, and validates it against the job's args model, so a bad
input fails here, naming the function, instead of as a child that cannot decode its input. A large
expansion is stored in pages in the application database and only its size travels back.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func, insert, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.connections import ConnectionStore, valid_id
from activities.models import ExpandedInput, Expansion, ExpansionRequest
from activities.schema import expansion_pages
from jobs import expansions
from jobs.registry import JOBS
from scheduling.spec import KEY_PATTERN
from workflows.models import FanOutPage

INLINE_MAX = 100  # more inputs than this go through the fan-out workflow, in pages
PAGE_SIZE = 500  # inputs per page: one batch workflow each, well under 2,000 pending children
# Temporal refuses a payload over 2 MB, and the start of 500 children goes out in one workflow
# task completion (4 MB gRPC limit): bound by bytes as well as by count.
INLINE_BYTES = 256 * 1024
PAGE_BYTES = 1024 * 1024
INPUT_BYTES = 64 * 1024
MAX_INPUTS = 500_000
KEEP_PAGES = timedelta(days=7)

_KEY = re.compile(KEY_PATTERN)


def input_hash(args: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _bad_id_key(connection_id: str) -> dict[str, str]:
    """A connection whose id is no valid key (a row written straight into SQLite, `../evil`)
    gets a key of its own, so only its job fails (the store refuses the row, naming it) and the
    fire's other connections still run. The `.` keeps it apart from every valid id."""
    if valid_id(connection_id):
        return {}
    readable = re.sub(r"[^a-z0-9_-]+", "-", connection_id.lower()).strip("-_")[:40]
    digest = hashlib.sha256(connection_id.encode(errors="surrogatepass")).hexdigest()[:10]
    return {"key": ".".join(p for p in ("bad-id", readable, digest) if p)}


class ExpansionActivities:
    """Bound to the application database: connections to fan out over, pages to store."""

    def __init__(self, connections: ConnectionStore) -> None:
        self.connections = connections
        self.pages = connections.db

    @activity.defn(name="expand_fire")
    def expand_fire(self, req: ExpansionRequest) -> Expansion:
        job = JOBS[req.job]
        function = req.expansion or ("connections" if job.per_connection else "once")
        note = None
        if function == "once":
            return Expansion(
                function=function, count=1, inputs=[ExpandedInput(key=None, args=req.args)]
            )
        result = None if function == "connections" else self._call(function, req)
        if result is None:
            result = [
                {**req.args, "connection_id": cid, **_bad_id_key(cid)}
                for cid in self.connections.active_ids(req.api_code)
            ]
            function = f"{function} (one per connection)" if function != "connections" else function
            if not result:
                note = f"no active {req.api_code} connections (`starter.py connections add`)"
        inputs = self._keyed(function, result, req.job)
        texts = [x.model_dump_json() for x in inputs]  # serialized once: sized, then stored
        if len(inputs) <= INLINE_MAX and sum(map(len, texts)) <= INLINE_BYTES:
            return Expansion(function=function, count=len(inputs), inputs=inputs, note=note)
        pages = self._store(req.fire_key, texts)
        return Expansion(function=function, count=len(inputs), ref=req.fire_key, pages=pages)

    @activity.defn(name="load_expansion_page")
    def load_expansion_page(self, req: FanOutPage) -> list[ExpandedInput]:
        t = expansion_pages
        with self.pages.transaction(write=False) as conn:
            found = select(t.c.inputs).where(t.c.ref == req.ref, t.c.page == req.page)
            inputs = conn.execute(found).scalar()
        if inputs is None:
            raise ApplicationError(
                f"expansion page {req.page} of {req.ref} is gone (pages are kept "
                f"{KEEP_PAGES.days} days, in the application database)",
                non_retryable=True,
            )
        return [ExpandedInput.model_validate(x) for x in json.loads(inputs)]

    def _call(self, name: str, req: ExpansionRequest) -> Any:
        fn = expansions.EXPANSIONS.get(name)
        if fn is None:
            raise ApplicationError(
                f"expansion {name!r} is not defined in jobs/expansions.py; "
                f"use one of {expansions.known()}",
                type="UnknownExpansion",
                non_retryable=True,
            )
        try:
            return fn({"api_code": req.api_code, "name": req.name, **req.args})
        except Exception as exc:  # retried per the schedule's retries, then the fire fails
            raise ApplicationError(
                f"expansion {name!r} raised {type(exc).__name__}: {exc}", type="ExpansionFailed"
            ) from exc

    def _keyed(self, function: str, result: Any, job: str) -> list[ExpandedInput]:
        def bad(why: str) -> ApplicationError:
            return ApplicationError(
                f"expansion {function!r} {why}", type="BadExpansion", non_retryable=True
            )

        if not isinstance(result, list):
            raise bad(f"returned {type(result).__name__}; return a list of inputs, [] or None")
        if len(result) > MAX_INPUTS:
            raise bad(f"returned {len(result)} inputs; at most {MAX_INPUTS} per fire")
        inputs: list[ExpandedInput] = []
        seen: set[str] = set()
        for i, item in enumerate(result):
            if not isinstance(item, dict):
                raise bad(f"returned {type(item).__name__} at [{i}]; each input must be a dict")
            args = dict(item)
            key = str(args.pop("key", None) or args.get("connection_id") or input_hash(args))
            if not _KEY.match(key) or key.startswith("page-"):
                raise bad(
                    f"gave input [{i}] the key {key!r}; keys are 1-64 of A-Z a-z 0-9 . _ - "
                    "and do not start with page- (the fan-out's own ids)"
                )
            if key in seen:
                raise bad(f"gave two inputs the key {key!r}; give each a distinct `key`")
            seen.add(key)
            try:
                args = JOBS[job].validate_args(args)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                msg = f"input [{i}] ({key}) is not valid for {job}: {where}: {err['msg']}"
                raise bad(msg) from None
            size = len(json.dumps(args, default=str))
            if size > INPUT_BYTES:
                raise bad(
                    f"gave input [{i}] ({key}) {size // 1024} KB of args; keep each under "
                    f"{INPUT_BYTES // 1024} KB: pass ids the job looks up, not the data"
                )
            inputs.append(ExpandedInput(key=key, args=args))
        return inputs

    def _store(self, ref: str, texts: list[str]) -> int:
        """Write the inputs (as JSON) in pages of at most PAGE_SIZE inputs and PAGE_BYTES, in
        one transaction.

        First write wins: a fire expanded again (a retried attempt, a restarted loop) keeps the
        pages a running fan-out may already be reading, and gets their count.
        """
        now = datetime.now(UTC)
        pages: list[list[str]] = [[]]
        used = 0
        for text in texts:
            if len(pages[-1]) == PAGE_SIZE or (pages[-1] and used + len(text) > PAGE_BYTES):
                pages.append([])
                used = 0
            pages[-1].append(text)
            used += len(text)
        rows = [
            {"ref": ref, "page": n, "inputs": f"[{','.join(page)}]", "created_at": now.isoformat()}
            for n, page in enumerate(pages)
        ]
        t = expansion_pages
        with self.pages.transaction() as conn:
            # Page 0 is the claim: a second writer waits on it (PostgreSQL) or on the write lock
            # (SQLite) until the first commits, then finds it taken and counts that one's pages.
            claim = self.pages.insert(t).values(rows[0]).on_conflict_do_nothing()
            if conn.execute(claim.returning(t.c.page)).first() is None:
                count = select(func.count()).select_from(t).where(t.c.ref == ref)
                return int(conn.execute(count).scalar_one())
            conn.execute(delete(t).where(t.c.created_at < (now - KEEP_PAGES).isoformat()))
            if rows[1:]:
                conn.execute(insert(t), rows[1:])
        return len(pages)


@activity.defn(name="expand_schedule")
def expand_schedule(req: ExpansionRequest) -> list[dict[str, Any]]:
    """Before keyed expansion: one input, the schedule's args. Kept for loops that started then."""
    return [dict(req.args)]
