"""A burst of malformed signals and updates at open workflows: no workflow task fails, and a rejected
update leaves no trace in history."""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import asyncpg
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import RawValue

from client import invoices
from tests.faults.checks import RunReport, check_run
from tests.faults.fates import CURRENCY, Driver, Fate, ScriptedInvoice, scripted_invoices
from tests.faults.stack import fault_stack
from workflows import search_attributes as sa
from workflows.models import (
    DecideLegal,
    EventKind,
    Instalment,
    LegalDecision,
    Payment,
    PaymentPlan,
    ResolveDispute,
    StageAction,
)

SOAK = os.environ.get("DUNNING_SOAK") == "1"
INVOICES = 40 if SOAK else 16
ROUNDS = 3 if SOAK else 2  # each round sends every bad update and every bad signal to every invoice
IN_FLIGHT = 32
STARTS_PER_SECOND = 8.0
FIRST_PAYMENT_MINOR = 10_000
# nothing escalates during the test: the first stage is a day away
QUIET_LADDER = [(StageAction.REMINDER, 86_400)]
DEADLINE_S = 5 * 60.0
SETTLE_TIMEOUT_S = 30.0


def bad_updates(script: ScriptedInvoice) -> list[tuple[str, Any]]:
    """Updates every validator (or the decoding of the argument) must refuse: ``(update name, argument)``."""
    known = f"{script.invoice_id}-P1"
    payment = {"payment_id": "H-1", "amount_minor": 100, "currency": CURRENCY}
    return [
        ("record_payment", Payment(payment_id="H-usd", amount_minor=100, currency="USD")),
        ("record_payment", Payment(payment_id=known, amount_minor=FIRST_PAYMENT_MINOR + 1, currency=CURRENCY)),
        ("record_payment", {**payment, "amount_minor": -100}),
        ("record_payment", {**payment, "amount_minor": "100"}),
        ("record_payment", {**payment, "amount_minor": 10**16}),
        ("record_payment", {**payment, "payment_id": "../../etc/passwd"}),
        ("record_payment", {**payment, "refund_to": "attacker"}),
        ("record_payment", {"payment_id": "H-2"}),
        ("record_payment", "garbage"),
        ("record_payment", None),
        ("resolve_dispute", ResolveDispute(outcome="rejected")),
        ("decide_legal", DecideLegal(decision=LegalDecision.SUE)),
        (
            "agree_payment_plan",
            PaymentPlan(instalments=[Instalment(due_date=date.today() + timedelta(days=30), amount_minor=1)]),
        ),
        ("open_dispute", {"reason": ""}),
        ("mark_factored", {"factor": "f-1", "advance_minor": -1}),
        ("drop_all_invoices", {"really": True}),
    ]


def bad_payments(script: ScriptedInvoice) -> list[tuple[Any, ...]]:
    """Arguments of ``payment_received`` signals that cannot be applied: each must become a
    ``payment_rejected`` event (README: "a malformed or invalid payment is never dropped and never
    fails the workflow")."""
    payment = {"payment_id": "S-1", "amount_minor": 100, "currency": CURRENCY}
    return [
        ("garbage",),
        ({**payment, "amount_minor": -1},),
        ({**payment, "currency": "XYZ"},),
        (Payment(payment_id="S-usd", amount_minor=100, currency="USD"),),
        (Payment(payment_id=f"{script.invoice_id}-P1", amount_minor=1, currency=CURRENCY),),
        (_raw(b"json/plain", b'{"payment_id": "S-2", "amount_m'),),
        (_raw(b"json/plain", b'{"payment_id": "S-\x00"}'),),  # a raw NUL byte: not JSON
        (None,),  # a binary/null payload
        (_raw(b"binary/plain", bytes(range(256))),),
        (),  # no argument at all
        (payment, {**payment, "payment_id": "S-3"}),  # two payments in one signal
    ]


def _raw(encoding: bytes, data: bytes) -> RawValue:
    return RawValue(Payload(metadata={"encoding": encoding}, data=data))


UNKNOWN_SIGNAL = ("wire_money_to", {"iban": "XX00 0000"})  # a name the invoice does not take: dropped
# sent once, after the rounds: a model that takes any text lets it through, and no jsonb can hold a NUL
NUL_DISPUTE = ("open_dispute", {"reason": "billed twice\x00"})


async def test_hostile_burst_of_signals_and_updates():
    """16 open invoices (soak: 40), each paid 100.00 once. Half of them get 2 rounds (soak: 3) of 16 bad
    updates each (wrong currency, a known payment id with another amount, negative, string and huge
    amounts, unsafe ids, unknown fields, garbage, no argument, requests the state does not allow, an
    unknown update), 32 in flight, then a dispute whose reason holds a NUL: every one is refused and not
    one history event is added. The other half get 2 rounds of 11 malformed payment signals (garbage, bad
    JSON, a NUL byte, null and binary payloads, no argument, two arguments, wrong currency, a known id with
    another amount) and an unknown signal: each payment becomes a ``payment_rejected`` event counted in ``RejectedPayments``,
    the balance does not move, and no workflow task fails. Then every invoice is paid in full and closes
    as paid with its two receipts, once each, and a complete event log. Any problem of the bursts fails
    the test at once, with the refusals that did not happen, the failed workflow tasks and the stuck
    activities."""
    scripts = scripted_invoices(
        INVOICES, run=f"HI{uuid.uuid4().hex[:4]}", fates=[Fate.PAID_WHEN_ISSUED], ladder=QUIET_LADDER
    )
    updated, signalled = scripts[: INVOICES // 2], scripts[INVOICES // 2 :]
    async with fault_stack({}) as stack:
        driver = Driver(
            stack.client, lambda: stack.pool, scripts, time.monotonic() + DEADLINE_S, stack.assert_workers_alive
        )
        await driver.start_all(STARTS_PER_SECOND)
        handles = {s.invoice_id: invoices.invoice_handle(stack.client, s.invoice_id) for s in scripts}
        await _pay_first(stack.client, scripts)
        await asyncio.gather(*(_settled(h) for h in handles.values()))

        problems = await _send_bad_updates(updated, handles)
        problems += await _send_bad_signals(stack.client, signalled, handles)
        if problems:
            problems += await _stuck(handles)
        assert not problems, f"{len(problems)} problem(s) with hostile input:\n" + "\n".join(problems[:40])

        await driver.play()
        await driver.wait_closed()
        report = await check_run(stack, driver, f"hostile input ({_per_invoice(scripts[0])})")
        for script in updated:
            await _check_history(report, stack.pool, script, handles[script.invoice_id], rejected=0, signals=0)
        for script in signalled:
            bad = ROUNDS * len(bad_payments(script))
            await _check_history(
                report, stack.pool, script, handles[script.invoice_id], rejected=bad, signals=bad + ROUNDS
            )
        report.notes.append(driver.timeline())
    report.print()
    report.assert_clean()


def _per_invoice(script: ScriptedInvoice) -> str:
    updates, signals = len(bad_updates(script)), len(bad_payments(script)) + 1
    return f"{ROUNDS} x {updates} updates and a NUL dispute, or {ROUNDS} x {signals} signals, per invoice"


async def _pay_first(client: Client, scripts: list[ScriptedInvoice]) -> None:
    """Each invoice is paid 100.00 under ``<invoice>-P1``: a known payment id for the conflicting requests."""
    for script in scripts:
        payment = Payment(payment_id=f"{script.invoice_id}-P1", amount_minor=FIRST_PAYMENT_MINOR, currency=CURRENCY)
        script.payments[payment.payment_id] = FIRST_PAYMENT_MINOR
        balance = await invoices.record_payment(client, script.invoice_id, payment)
        assert balance == script.amount_minor - FIRST_PAYMENT_MINOR, (script.label, balance)
        script.answered.add(payment.payment_id)


async def _send_bad_updates(scripts: list[ScriptedInvoice], handles: dict[str, WorkflowHandle]) -> list[str]:
    """Every bad update to each of ``scripts``, ``ROUNDS`` times, ``IN_FLIGHT`` at once: the ones accepted, and
    the histories that grew."""
    before = {s.invoice_id: await _event_types(handles[s.invoice_id]) for s in scripts}
    limit = asyncio.Semaphore(IN_FLIGHT)
    accepted: list[str] = []
    await asyncio.gather(
        *(
            _limited(limit, functools.partial(_refused, handles[s.invoice_id], name, argument, accepted))
            for _ in range(ROUNDS)
            for s in scripts
            for name, argument in bad_updates(s)
        )
    )
    await asyncio.gather(*(_refused(handles[s.invoice_id], *NUL_DISPUTE, accepted) for s in scripts))
    problems = [f"bad update accepted: {a}" for a in sorted(set(accepted))]
    for invoice_id, types in before.items():
        after = await _event_types(handles[invoice_id])
        if after != types:
            problems.append(f"{invoice_id}: rejected updates added history events {after[len(types) :][:8]}")
    return problems


async def _send_bad_signals(
    client: Client, scripts: list[ScriptedInvoice], handles: dict[str, WorkflowHandle]
) -> list[str]:
    """Every bad payment signal and the unknown signal to each of ``scripts``, ``ROUNDS`` times; then, within
    ``SETTLE_TIMEOUT_S``, each must count them all in ``RejectedPayments`` with its balance unmoved."""
    limit = asyncio.Semaphore(IN_FLIGHT)
    await asyncio.gather(
        *(
            _limited(limit, functools.partial(handles[s.invoice_id].signal, name, args=list(args)))
            for _ in range(ROUNDS)
            for s in scripts
            for name, args in [
                *(("payment_received", a) for a in bad_payments(s)),
                (UNKNOWN_SIGNAL[0], UNKNOWN_SIGNAL[1:]),
            ]
        )
    )
    each = ROUNDS * len(bad_payments(scripts[0]))
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while short := await _not_counted(client, scripts, each):
        if time.monotonic() > deadline:
            return [
                f"{workflow_id}: RejectedPayments is {count}, {each} bad payments sent"
                for workflow_id, count in short.items()
            ]
        await asyncio.sleep(0.5)
    problems = []
    for script in scripts:
        status = await invoices.status(client, script.invoice_id)
        if (status.rejected_payments, status.balance_minor) != (each, script.amount_minor - FIRST_PAYMENT_MINOR):
            problems.append(f"{script.label}: {status.rejected_payments} rejected, balance {status.balance_minor}")
    return problems


async def _not_counted(client: Client, scripts: list[ScriptedInvoice], each: int) -> dict[str, int | None]:
    counted = {
        e.id: e.typed_search_attributes.get(sa.REJECTED_PAYMENTS) async for e in client.list_workflows(page_size=1000)
    }
    return {s.workflow_id: counted.get(s.workflow_id) for s in scripts if counted.get(s.workflow_id) != each}


async def _stuck(handles: dict[str, WorkflowHandle]) -> list[str]:
    """Why invoices are stuck: the failures of their workflow tasks and of their retrying activities."""
    failures: Counter[str] = Counter()
    for handle in handles.values():
        for event in (await handle.fetch_history()).events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                failures["workflow task failed: " + event.workflow_task_failed_event_attributes.failure.message] += 1
        for pending in (await handle.describe()).raw_description.pending_activities:
            if pending.attempt > 1:
                cause = " ".join(pending.last_failure.message.split())[:160]
                failures[f"{pending.activity_type.name} retrying: {cause}"] += 1
    return [f"{what} (x{n})" for what, n in failures.most_common()]


async def _check_history(
    report: RunReport, pool: asyncpg.Pool, script: ScriptedInvoice, handle: WorkflowHandle, rejected: int, signals: int
) -> None:
    """The history holds the accepted payments as its only updates and every signal; the log every rejection."""
    history = Counter(e.event_type for e in (await handle.fetch_history()).events)
    logged = await pool.fetchval(
        "SELECT count(*) FROM invoice_events WHERE invoice_id = $1 AND kind = $2",
        script.invoice_id,
        EventKind.PAYMENT_REJECTED.value,
    )
    if logged != rejected:
        report.lost.append(f"{script.label}: {logged} payment_rejected events, {rejected} bad payments sent")
    updates = history[EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED]
    if updates != len(script.payments):
        report.other.append(f"{script.label}: {updates} updates in history, {len(script.payments)} payments accepted")
    signalled = history[EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    if signalled != signals:
        report.other.append(f"{script.label}: {signalled} signals in history, {signals} sent")


async def _refused(handle: WorkflowHandle, name: str, argument: Any, accepted: list[str]) -> None:
    try:
        await handle.execute_update(name, argument, rpc_timeout=invoices.ANSWER_TIMEOUT)
    except WorkflowUpdateFailedError:
        return
    accepted.append(f"{name}({argument!r})")


async def _limited(limit: asyncio.Semaphore, call: Callable[[], Awaitable[Any]]) -> None:
    async with limit:
        await call()


async def _event_types(handle: WorkflowHandle) -> list[str]:
    return [EventType.Name(e.event_type) for e in (await handle.fetch_history()).events]


async def _settled(handle: WorkflowHandle) -> None:
    """Until the workflow waits on its timer with nothing else to do (its history ends with TIMER_STARTED)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while (await handle.fetch_history()).events[-1].event_type != EventType.EVENT_TYPE_TIMER_STARTED:
        if time.monotonic() > deadline:
            raise AssertionError(f"{handle.id} not idle within {SETTLE_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.5)
