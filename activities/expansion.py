"""The expansion activity: decides what one fire of a schedule runs.

First cut: one input, the schedule's own args. Per-connection fan-out and user expansion
functions plug in here.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity

from models import ExpansionRequest


@activity.defn(name="expand_schedule")
def expand_schedule(req: ExpansionRequest) -> list[dict[str, Any]]:
    return [dict(req.args)]
