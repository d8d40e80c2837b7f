"""The deploy gate: every saved history (invoices; since v6 a customer too, since v7 a customer digest; since v8 the run-wide patches under one marker) replays with the current workflow code."""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker.sandbox import workflow_runner
from workflows.customer import CustomerWorkflow
from workflows.invoice import InvoiceWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*/*.json"))


def test_every_release_left_histories_to_replay():
    releases = {path.parent.name for path in HISTORIES}
    assert {"v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8"} <= releases
    assert all(len([p for p in HISTORIES if p.parent.name == r]) >= 3 for r in releases)


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_history_replays(path: Path):
    replayer = Replayer(
        workflows=[InvoiceWorkflow, CustomerWorkflow],  # a history names its workflow type
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure}"
