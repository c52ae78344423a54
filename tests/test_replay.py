"""Recorded histories replay against the current code: a change that would break a running
workflow fails here (then keep the old path behind `workflow.patched`). Record new ones with
`.venv/bin/python -m tests.record_histories`."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import WORKFLOWS, interceptors

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_every_workflow_type_has_a_recorded_history() -> None:
    types = {
        WorkflowHistory.from_json(p.stem, p.read_text())
        .events[0]
        .workflow_execution_started_event_attributes.workflow_type.name
        for p in HISTORIES
    }
    assert types == {wf.__name__ for wf in WORKFLOWS}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays_cleanly(path: Path) -> None:
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        interceptors=interceptors(),
        data_converter=pydantic_data_converter,
    )
    await replayer.replay_workflow(WorkflowHistory.from_json(path.stem, path.read_text()))
