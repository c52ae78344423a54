"""What a schedule loop tells the worker's Prometheus endpoint (METRICS_ADDRESS).

Emitted from workflow code through `workflow.metric_meter()`, which the SDK silences while a
history replays, so each fire, skip and failed job is counted once, by the worker that ran it.
Every series carries the schedule's name.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

LATENESS = "schedjobs_fire_lateness"
FIRES = "schedjobs_fires"
SKIPPED = "schedjobs_fires_skipped"
JOBS_FAILED = "schedjobs_jobs_failed"


class LoopMetrics:
    """One loop's instruments, made once per run."""

    def __init__(self, schedule: str) -> None:
        meter = workflow.metric_meter().with_additional_attributes({"schedule": schedule})
        self._lateness = meter.create_histogram_timedelta(
            LATENESS, "how long after its scheduled time a fire started its jobs", unit="duration"
        )
        self._fires = meter.create_counter(
            FIRES, "fires that started jobs (kind: scheduled, manual)"
        )
        self._skipped = meter.create_counter(SKIPPED, "fires not run, by reason")
        self._failed = meter.create_counter(JOBS_FAILED, "jobs (or fires) that failed")

    def fired(self, lateness: timedelta | None) -> None:
        """A fire started its jobs; a manual trigger has no scheduled time to be late for."""
        self._fires.add(1, {"kind": "manual" if lateness is None else "scheduled"})
        if lateness is not None:
            self._lateness.record(max(lateness, timedelta(0)))

    def skipped(self, reason: str, count: int = 1) -> None:
        self._skipped.add(count, {"reason": reason})

    def failed(self) -> None:
        self._failed.add(1)
