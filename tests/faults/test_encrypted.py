"""The fault stack with payload encryption on: the worker and the clients encrypt every payload, the worker is
killed mid-run, and nothing is lost; the history Temporal keeps holds no readable payload."""

from __future__ import annotations

import functools
import os
import uuid

import pytest
from temporalio.client import Client

from client.codec import is_encrypted, new_key
from tests.faults.checks import run_under_fault
from tests.faults.fates import scripted_invoices
from tests.faults.stack import NAMESPACE, FaultStack, repeat_fault

SOAK = os.environ.get("DUNNING_SOAK") == "1"
INVOICES = 80 if SOAK else 16
KILLS = 4 if SOAK else 1
STARTS_PER_SECOND = 2.0
DEADLINE_S = 6 * 60.0

# in ``make test`` through ``test_together`` (all the newer faults in one run); alone, at volume, in ``make soak``
pytestmark = pytest.mark.skipif(not SOAK, reason="runs in make soak (DUNNING_SOAK=1); make test runs test_together")


# (history event attributes, their field holding payloads)
WITH_PAYLOADS = [
    ("workflow_execution_started_event_attributes", "input"),
    ("workflow_execution_completed_event_attributes", "result"),
    ("activity_task_scheduled_event_attributes", "input"),
    ("activity_task_completed_event_attributes", "result"),
]


async def history_is_encrypted(stack: FaultStack, workflow_id: str) -> list[str]:
    """Every payload of the workflow's start, result and activities, as a client without the keys reads the
    history, is encrypted."""
    plain = await Client.connect(stack.temporal.address, namespace=NAMESPACE)
    history = await plain.get_workflow_handle(workflow_id).fetch_history()
    payloads = [
        payload
        for event in history.events
        for attributes, field in WITH_PAYLOADS
        if event.HasField(attributes)
        for payload in getattr(getattr(event, attributes), field).payloads
    ]
    readable = sum(not is_encrypted(p) for p in payloads)
    if not payloads:
        return [f"{workflow_id}: no payload in its history"]
    return [f"{workflow_id}: {readable} of {len(payloads)} payloads in its history are readable"] if readable else []


async def test_fault_stack_with_payload_encryption():
    """16 invoices (soak: 80) over every fate with ``DUNNING_CODEC_KEYS`` set on the worker and the driver's
    client; the worker is SIGKILLed once (soak: 4 times) 8 s in. Every check of ``checks`` passes (the driver
    reads status, answers and results through the codec), and a client without the keys sees only encrypted
    payloads in an invoice's history."""
    scripts = scripted_invoices(INVOICES, run=f"EN{uuid.uuid4().hex[:4]}")
    kills = functools.partial(repeat_fault, first_after=8.0, between=10.0, times=KILLS)
    await run_under_fault(
        scripts,
        STARTS_PER_SECOND,
        DEADLINE_S,
        lambda stack: kills(functools.partial(stack.kill_workers, down_for=2.0)),
        f"payload encryption on, worker killed {KILLS} time(s)",
        codec_keys=f"k1:{new_key()}",
        also_check=lambda stack: history_is_encrypted(stack, scripts[0].workflow_id),
    )
