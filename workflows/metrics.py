"""What a schedule loop tells the worker's Prometheus endpoint (METRICS_ADDRESS).

Emitted from workflow code through `workflow.metric_meter()`, which the SDK silences while a
history replays, so each fire, skip and failed job is counted once, by the worker that ran it.
Every series carries the schedule's name.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import MetricMeter

LATENESS = "schedjobs_fire_lateness"
FIRES = "schedjobs_fires"
SKIPPED = "schedjobs_fires_skipped"
JOBS_FAILED = "schedjobs_jobs_failed"


class LoopMetrics:
    """One loop's instruments, made when first used: an idle loop holds none."""

    def __init__(self, schedule: str) -> None:
        self._schedule = schedule

    def _meter(self) -> MetricMeter:
        return workflow.metric_meter().with_additional_attributes({"schedule": self._schedule})

    def fired(self, lateness: timedelta | None) -> None:
        """A fire started its jobs; a manual trigger has no scheduled time to be late for."""
        meter = self._meter()
        kind = "manual" if lateness is None else "scheduled"
        meter.create_counter(FIRES, "fires that started jobs, by kind").add(1, {"kind": kind})
        if lateness is not None:
            meter.create_histogram_timedelta(
                LATENESS, "how long after its scheduled time a fire started its jobs", "duration"
            ).record(max(lateness, timedelta(0)))

    def skipped(self, reason: str, count: int = 1) -> None:
        self._meter().create_counter(SKIPPED, "fires not run, by reason").add(
            count, {"reason": reason}
        )

    def failed(self) -> None:
        self._meter().create_counter(JOBS_FAILED, "jobs (or fires) that failed").add(1)
