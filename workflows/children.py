"""Starting job workflows, shared by the schedule loop and the fan-out workflows.

One place decides a job's workflow id, search attributes, retry policy and session memo, and
applies the cache tag: a cached job's id is derived from its request, so identical requests
share one workflow, and one that completed within the cache TTL is reused, not run again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.run_checks import fresh_cached_runs
    from jobs.registry import JOBS, cache_id
    from scheduling.plan import fire_id
    from scheduling.spec import ScheduleSpec
    from scheduling.types import parse_duration
    from workflows.models import REPORT_MEMO, REPORT_ON_REQUEST, JobOptions

SCHEDULE_NAME = SearchAttributeKey.for_keyword("ScheduleName")
SCHEDULED_FIRE_TIME = SearchAttributeKey.for_datetime("ScheduledFireTime")
CHECK_TIMEOUT = timedelta(seconds=30)
SESSION_MEMO = "session"
# One patch for the fire path that costs Temporal least: no activity when the inputs are known,
# a user expansion as a local activity, jobs' ends read from their completion events (REPORT_MEMO),
# the server asked only about jobs of an earlier run, and a timer kept across wakes.
CHEAP_FIRES = "cheap-fires"


def watched_memo() -> dict[str, Any]:
    """The memo for a loop's job whose end the loop reads from its completion event."""
    return {REPORT_MEMO: REPORT_ON_REQUEST} if workflow.patched(CHEAP_FIRES) else {}


def job_summary(job: str, schedule: str, fire: datetime, count: int = 1) -> str:
    """The one line the Web UI shows for a job (or a fan-out) of a schedule's fire."""
    jobs = f"{count} `{job}` jobs" if count > 1 else f"`{job}`"
    return f"{jobs} of {schedule}, fire {fire_id(fire)}"


def job_options(spec: ScheduleSpec) -> JobOptions:
    """How each job of a schedule's fires runs: its retries, cache tag and session."""
    return JobOptions(
        retries=spec.retries,
        cache=spec.cache,
        cache_ttl_s=parse_duration(spec.cache_ttl).total_seconds(),
        session=spec.session,
    )


def schedule_attributes(schedule: str, fire: datetime) -> TypedSearchAttributes:
    """What every workflow a fire starts carries, to find it in the UI or `temporal` CLI."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(SCHEDULE_NAME, schedule),
            SearchAttributePair(SCHEDULED_FIRE_TIME, fire),
        ]
    )


@dataclass
class Started:
    """What became of each requested job id (after the cache tag renamed it, if set)."""

    ids: list[str] = field(default_factory=list)  # every job of the fire, in input order
    handles: dict[str, workflow.ChildWorkflowHandle[Any, Any]] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)  # a fresh result exists: not run again
    duplicate: list[str] = field(default_factory=list)  # already started before: not run twice


async def start_jobs(
    jobs: list[tuple[str, dict[str, Any]]],
    *,
    job: str,
    schedule: str,
    fire: datetime,
    options: JobOptions,
    close_policy: workflow.ParentClosePolicy,
    memo: dict[str, Any] | None = None,
) -> Started:
    """Start one child per (id, args), all at once; never the same id twice."""
    started = Started(ids=[i for i, _ in jobs])
    reuse = WorkflowIDReusePolicy.REJECT_DUPLICATE
    if options.cache:
        token = options.session.token if options.session else None
        jobs = list({cache_id(options.cache, job, a, token): a for _, a in jobs}.items())
        reuse = WorkflowIDReusePolicy.ALLOW_DUPLICATE
        fresh = set(
            await workflow.execute_activity(
                fresh_cached_runs,
                args=[[i for i, _ in jobs], options.cache_ttl_s],
                start_to_close_timeout=CHECK_TIMEOUT,
                summary=f"which of {len(jobs)} jobs ran within the cache TTL",
            )
        )
        started.ids = [i for i, _ in jobs]
        started.cached = [i for i, _ in jobs if i in fresh]
        jobs = [(i, a) for i, a in jobs if i not in fresh]
    retry = None if options.retries is None else RetryPolicy(maximum_attempts=options.retries + 1)
    memo = {**(memo or {}), **({SESSION_MEMO: options.session} if options.session else {})}
    attrs = schedule_attributes(schedule, fire)
    summary = job_summary(job, schedule, fire)

    async def start(child_id: str, args: dict[str, Any]) -> None:
        try:
            handle = await workflow.start_child_workflow(
                JOBS[job].workflow.run,
                args,
                id=child_id,
                parent_close_policy=close_policy,
                id_reuse_policy=reuse,
                retry_policy=retry,
                memo=memo or None,
                search_attributes=attrs,
                static_summary=summary,
            )
        except WorkflowAlreadyStartedError:
            workflow.logger.info("%s already started: not run twice", child_id)
            started.duplicate.append(child_id)
            return
        started.handles[child_id] = handle

    await asyncio.gather(*(start(i, a) for i, a in jobs))
    return started
