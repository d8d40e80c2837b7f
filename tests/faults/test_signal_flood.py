"""A flood of malformed payment signals and of the largest signals Temporal accepts, at one invoice: it still
answers, takes a payment and closes, and every rejection is in the event log (issue 21: 2,000 such signals
once wedged an invoice for good, and 30 large ones had Temporal terminate it)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from dataclasses import dataclass, field

import pytest
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RawValue
from temporalio.service import RPCError, RPCStatusCode

from client import invoices
from client.invoices import InvoiceError
from tests.faults.checks import check_run
from tests.faults.fates import Driver, Fate, scripted_invoices
from tests.faults.stack import fault_stack
from worker.embedded import TEMPORAL_LIMITS
from workflows.models import EventKind, StageAction
from workflows.payments import EXCERPT_BYTES
from workflows.state import REJECTIONS_STORED_PER_DAY

SOAK = os.environ.get("DUNNING_SOAK") == "1"
MALFORMED = 10_000 if SOAK else 1_000
LARGE = 100 if SOAK else 10  # half of them payments, half under a name the invoice drops
IN_FLIGHT = 64
QUIET_LADDER = [(StageAction.REMINDER, 86_400)]  # nothing escalates during the test
DEADLINE_S = 15 * 60.0 if SOAK else 5 * 60.0
PROBE_EVERY_S = 0.5
ANSWER_S = invoices.ANSWER_TIMEOUT.total_seconds()
# a run takes at most the signal limit of signals of at most the blob limit, and a little else: below 50 MB
RUN_BYTES_BOUND = TEMPORAL_LIMITS["limit.blobSize.error"] * TEMPORAL_LIMITS["history.maximumSignalsPerExecution"] + 2**21
SIGNAL_LIMIT = "exceeded workflow execution limit for signal events"  # Temporal's refusal beyond the run's signals


@dataclass
class Probe:
    """The status queries asked while the flood ran: how long each took to be answered, and the ones that were not.

    Temporal keeps one query per workflow while a workflow task runs and refuses another (``RESOURCE_EXHAUSTED``):
    such a query is asked again until answered, within ``ANSWER_TIMEOUT``."""

    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def run(self, client: Client, invoice_id: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            began = time.monotonic()
            while True:
                try:
                    await invoices.status(client, invoice_id)
                    self.seconds.append(time.monotonic() - began)
                    break
                except InvoiceError as err:
                    if "RESOURCE_EXHAUSTED" not in str(err) or time.monotonic() - began > ANSWER_S:
                        self.failures.append(str(err))
                        break
                    await asyncio.sleep(0.1)
            await asyncio.sleep(PROBE_EVERY_S)


def largest_signal(data_prefix: bytes) -> RawValue:
    """A signal argument whose ``Payloads`` is exactly ``limit.blobSize.error`` bytes: the largest the frontend takes."""
    limit = TEMPORAL_LIMITS["limit.blobSize.error"]
    payload = Payload(metadata={"encoding": b"json/plain"}, data=data_prefix)
    payload.data = data_prefix + b"x" * (limit - Payloads(payloads=[payload]).ByteSize())
    while Payloads(payloads=[payload]).ByteSize() > limit:  # the length prefix grew by a byte
        payload.data = payload.data[:-1]
    return RawValue(payload)


def one_byte_more(raw: RawValue) -> RawValue:
    return RawValue(Payload(metadata=raw.payload.metadata, data=raw.payload.data + b"x"))


def malformed(n: int) -> RawValue:
    """About 2 KB of a payment that is not JSON, different each time."""
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=f'{{"payment_id": "F-{n}", '.encode() + b"~" * 2_000))


@dataclass
class Sender:
    """Sends signals ``IN_FLIGHT`` at a time, each again after a pause when Temporal refuses it because the run took
    ``history.maximumSignalsPerExecution`` signals (the next run takes it), as a sender that gets an error does."""

    handle: WorkflowHandle
    deadline: float  # monotonic: refused beyond it, the invoice does not continue as new
    refused: int = 0

    async def send_all(self, signals: list[tuple[str, RawValue]]) -> None:
        limit = asyncio.Semaphore(IN_FLIGHT)

        async def send(name: str, raw: RawValue) -> None:
            async with limit:
                while True:
                    try:
                        await self.handle.signal(name, raw)
                        return
                    except RPCError as err:
                        if SIGNAL_LIMIT not in err.message:
                            raise
                        if time.monotonic() > self.deadline:
                            raise AssertionError(f"{self.handle.id} still refuses signals: it does not continue as new") from err
                        self.refused += 1
                        await asyncio.sleep(0.2)

        await asyncio.gather(*(send(name, raw) for name, raw in signals))


async def _runs(client: Client, workflow_id: str) -> list[tuple[int, int, int]]:
    """``(history events, history bytes, workflow task timeout in seconds)`` of each run of the invoice's workflow."""
    runs = []
    async for execution in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        described = await client.get_workflow_handle(workflow_id, run_id=execution.run_id).describe()
        task_timeout = described.raw_description.execution_config.default_workflow_task_timeout.seconds
        runs.append((execution.history_length, execution.raw_info.history_size_bytes, task_timeout))
    return runs


async def test_a_flood_of_malformed_and_of_the_largest_signals_leaves_the_invoice_working():
    """1,000 malformed payment signals of 2 KB (soak: 10,000), 64 in flight, after 10 signals (soak: 100) of the
    largest size the frontend accepts (``limit.blobSize.error``: half of them payments, half under a name the
    invoice drops), to one invoice. One byte more is refused by the frontend. The invoice answers its status
    query all along, counts every rejection (``RejectedPayments``), is then paid in full and closes as paid
    with a complete event log: the first ``REJECTIONS_STORED_PER_DAY`` rejections stored one by one, each with an
    excerpt of at most 1 KB and the size and SHA-256 of what was sent, the rest counted, and the two add up to
    the payments sent. It continued as new every 100 signals (Temporal refuses more than 150 a run: the sender
    sends those again), so no run's history exceeds 150 of the largest signals (38 MiB, below Temporal's 50 MiB
    limit; the large signals arrive faster than a run continues as new at 4 MiB) and no workflow task holds more
    signals than the worker handles within the SDK's deadlock timeout (before, one task failed that way for
    good). Prints the time taken and the history size of the runs."""
    [script] = scripted_invoices(1, run=f"SF{uuid.uuid4().hex[:4]}", fates=[Fate.PAID_WHEN_ISSUED], ladder=QUIET_LADDER)
    large = [largest_signal(b'{"payment_id": "L-%d", ' % n) for n in range(LARGE)]
    signals = [("payment_received" if n % 2 == 0 else "wire_money_to", raw) for n, raw in enumerate(large)]
    signals += [("payment_received", malformed(n)) for n in range(MALFORMED)]
    rejected = sum(1 for name, _ in signals if name == "payment_received")

    async with fault_stack({}) as stack:
        driver = Driver(
            stack.client, lambda: stack.pool, [script], time.monotonic() + DEADLINE_S, stack.assert_workers_alive
        )
        await driver.start_all(per_second=1.0)
        handle = invoices.invoice_handle(stack.client, script.invoice_id)
        with pytest.raises(RPCError) as refused:
            await handle.signal("payment_received", one_byte_more(large[0]))
        assert refused.value.status == RPCStatusCode.INVALID_ARGUMENT, refused.value

        probe, stop = Probe(), asyncio.Event()
        probing = asyncio.create_task(probe.run(stack.client, script.invoice_id, stop))
        began = time.monotonic()
        sender = Sender(handle, driver.deadline)
        await sender.send_all(signals[:LARGE])
        await sender.send_all(signals[LARGE:])
        sent_in = time.monotonic() - began
        stop.set()
        await probing
        while (status := await invoices.status(stack.client, script.invoice_id)).rejected_payments < rejected:
            assert time.monotonic() < driver.deadline, f"{status.rejected_payments} of {rejected} rejections counted"
            await asyncio.sleep(0.5)
        counted_in = time.monotonic() - began
        assert status.rejected_payments == rejected
        assert status.balance_minor == script.amount_minor

        await driver.play()
        await driver.wait_closed()
        closed_in = time.monotonic() - began
        report = await check_run(stack, driver, f"signal flood ({MALFORMED} malformed + {LARGE} largest signals)")
        events = await stack.pool.fetch(
            "SELECT kind, data FROM invoice_events WHERE invoice_id = $1 AND kind = ANY($2) ORDER BY sequence",
            script.invoice_id,
            [EventKind.PAYMENT_REJECTED.value, EventKind.PAYMENT_REJECTIONS_COUNTED.value],
        )
        runs = await _runs(stack.client, script.workflow_id)

    stored = [e["data"] for e in events if e["kind"] == EventKind.PAYMENT_REJECTED.value]
    counted = sum(e["data"]["count"] for e in events if e["kind"] == EventKind.PAYMENT_REJECTIONS_COUNTED.value)
    if len(stored) + counted != rejected:
        report.lost.append(f"{len(stored)} rejections stored and {counted} counted, {rejected} payments sent")
    if len(stored) > REJECTIONS_STORED_PER_DAY:
        report.other.append(f"{len(stored)} rejections stored one by one, at most {REJECTIONS_STORED_PER_DAY} a day")
    sent = {hashlib.sha256(raw.payload.data).hexdigest(): raw.payload.data for name, raw in signals if name == "payment_received"}
    for data in stored:
        whole = sent.get(data["payload_sha256"], b"")
        if data["payload_bytes"] != len(whole) or not whole.decode().startswith(data["payload"]):
            report.other.append(f"rejection {data['payload'][:30]!r}: not the excerpt, size and hash of a payment sent")
        if len(data["payload"].encode()) > EXCERPT_BYTES:
            report.other.append(f"rejection keeps {len(data['payload'].encode())} bytes of what was sent")
    largest_run = max(size for _, size, _ in runs)
    if largest_run > RUN_BYTES_BOUND:
        report.other.append(f"a run's history reached {largest_run / 2**20:.1f} MB")
    task_timeouts = {seconds for _, _, seconds in runs}
    if task_timeouts != {invoices.INVOICE_TASK_TIMEOUT.total_seconds()}:
        report.other.append(f"runs' workflow task timeouts {sorted(task_timeouts)} s: a large run's replay may not fit")
    if probe.failures:
        report.other += [f"status query not answered during the flood: {f}" for f in probe.failures[:5]]
    report.notes.append(
        f"sent {len(signals)} signals in {sent_in:.1f} s ({sender.refused} refusals beyond a run's signals, sent again), all counted after {counted_in:.1f} s, closed after"
        f" {closed_in:.1f} s; {len(stored)} rejections stored, {counted} counted; {len(probe.seconds)} status queries"
        f" answered during the flood, the slowest in {max(probe.seconds, default=0):.2f} s"
    )
    report.notes.append(
        f"{len(runs)} run(s); history events {sum(n for n, _, _ in runs)}, bytes {sum(s for _, s, _ in runs) / 2**20:.1f} MB"
        f" in all, largest run {largest_run / 2**20:.2f} MB"
    )
    report.print()
    report.assert_clean()
