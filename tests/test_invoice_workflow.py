"""InvoiceWorkflow on the time-skipping test server: every stage, payment and request, one per test."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from bench.recording import Hold, Recorder
from tests.harness import eventually, make_invoice, start_invoice
from worker.sandbox import workflow_runner
from workflows import ladder, policy
from workflows import search_attributes as sa
from workflows.digests import DIGEST_GATHERING
from workflows.invoice import PAYMENT_SIGNAL, InvoiceWorkflow
from workflows.models import (
    DecideLegal,
    DunningPolicy,
    Instalment,
    Invoice,
    InvoiceState,
    MarkFactored,
    OpenDispute,
    Payment,
    PaymentPlan,
    ResolveDispute,
    StageAction,
)
from workflows.outbox import BATCH_BYTES, BATCH_EVENTS
from workflows.patches import PATCH_RUN_WIDE_V8
from workflows.payments import EXCERPT_BYTES
from workflows.state import REJECTIONS_STORED_PER_DAY

DEFAULT = DunningPolicy.default()  # the stages; test invoices send round the clock (see make_invoice)
WORKFLOW_TASK_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
}


async def today(env: WorkflowEnvironment) -> date:
    return (await env.get_current_time()).date()


async def status(handle: WorkflowHandle):
    return await handle.query(InvoiceWorkflow.status)


async def sleep_until(env: WorkflowEnvironment, moment: datetime) -> None:
    """Skip time to ``moment`` (a little after, so the timer has fired)."""
    gap = moment - await env.get_current_time() + timedelta(seconds=1)
    if gap > timedelta(0):
        await env.sleep(gap)


async def settled_into(handle: WorkflowHandle, state: InvoiceState) -> None:
    await eventually(lambda: _state_is(handle, state))


async def _state_is(handle: WorkflowHandle, state: InvoiceState) -> bool:
    return (await status(handle)).state == state


def pay(payment_id: str, amount: int, currency: str = "EUR") -> Payment:
    return Payment(payment_id=payment_id, amount_minor=amount, currency=currency)


async def begin(env: WorkflowEnvironment, client: Client, queue: str, recorder: Recorder, **fields) -> tuple[Invoice, WorkflowHandle]:
    invoice = make_invoice(await today(env), **fields)
    handle = await start_invoice(client, queue, invoice)
    await eventually(lambda: "invoice_issued" in recorder.notice_kinds(invoice.invoice_id))
    return invoice, handle


async def reach(env: WorkflowEnvironment, invoice: Invoice, handle: WorkflowHandle, action: StageAction) -> None:
    """Skip time to the stage and wait until the workflow has acted on it."""
    await sleep_until(env, policy.stage_due_at(invoice, invoice.policy.stage(action), timedelta(0)))
    await settled_into(handle, ladder.STATE_AFTER_STAGE[action])


# --- versioning ------------------------------------------------------------------------------


async def test_a_new_invoice_takes_the_run_wide_patches_under_one_marker(env, client, queue, recorder):
    """Each patch a run asks costs a marker and a TemporalChangeVersion upsert: a new invoice asks one, not nine."""
    _, handle = await begin(env, client, queue, recorder)
    history = await handle.fetch_history()
    first_task = []
    for event in history.events[1:]:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            break
        first_task.append(event)
    markers = [
        e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
        for e in first_task
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    assert len(markers) == 1 and PATCH_RUN_WIDE_V8.encode() in markers[0], markers
    upserts = [e for e in first_task if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES]
    assert len(upserts) == 1
    assert b"run-wide-v8" in upserts[0].upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields[
        "TemporalChangeVersion"
    ].data


# --- the whole default policy ------------------------------------------------------------


async def test_walks_every_stage_of_the_default_policy(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    expectations = [
        (StageAction.REMINDER, InvoiceState.REMINDED, "reminder"),
        (StageAction.WARNING, InvoiceState.WARNED, "warning"),
        (StageAction.LATE_FEE, InvoiceState.LATE_FEE, "late_fee"),
        (StageAction.ULTIMATUM, InvoiceState.ULTIMATUM, "ultimatum"),
        (StageAction.SUSPEND, InvoiceState.SUSPENDED, "suspended"),
        (StageAction.AGENCY, InvoiceState.AGENCY, "agency_handover"),
        (StageAction.LEGAL_REVIEW, InvoiceState.LEGAL_REVIEW, "legal_review"),
    ]
    assert (await status(handle)).state == InvoiceState.ISSUED
    for action, state, notice in expectations:
        due = policy.stage_due_at(invoice, invoice.policy.stage(action), timedelta(0))
        fees_by_then = _fees_due_by(invoice, due)
        # just before the boundary nothing has happened yet
        await sleep_until(env, due - timedelta(minutes=5))
        before = await status(handle)
        assert before.state != state
        assert notice not in recorder.notice_kinds()
        await sleep_until(env, due)
        await settled_into(handle, state)
        await eventually(lambda notice=notice: notice in recorder.notice_kinds())
        now = await status(handle)
        assert len([a for a in now.actions if a.what.startswith("Late fee")]) == fees_by_then
        assert now.balance_minor == invoice.amount_minor + now.fees_minor
        assert now.days_overdue == (due.date() - invoice.due_date).days
    # fee 1 = 2 % of 1,000.00 + fixed 15.00; later fees 2 % of the principal each started month
    fees = recorder.events_of(invoice.invoice_id, "late_fee_charged")
    expected_fees = _fees_due_by(invoice, policy.stage_due_at(invoice, DEFAULT.stage(StageAction.LEGAL_REVIEW), timedelta(0)))
    assert expected_fees >= 3
    assert [f.data["amount_minor"] for f in fees] == [3_500] + [2_000] * (expected_fees - 1)
    assert [f.data["number"] for f in fees] == list(range(1, expected_fees + 1))
    # suspension blocked service once, without remote disconnection (not in the contract)
    assert [verb for verb, _ in recorder.service_calls] == ["suspend"]
    assert recorder.service_calls[0][1].remote_disconnect_authorized is False
    review = await status(handle)
    assert review.legal_summary is not None
    assert review.legal_summary["balance_minor"] == review.balance_minor
    assert review.legal_summary["worth_suing"] is False  # under 1,100 EUR owed, 1,500 EUR to sue
    assert review.next_action is None  # late charges stopped at the agency hand-over (charges_stop_at_agency)
    # a human writes it off: the workflow ends, the service stays blocked (nothing was paid)
    await handle.execute_update(InvoiceWorkflow.decide_legal, DecideLegal(decision="write_off"))
    outcome = await handle.result()
    assert outcome.state == InvoiceState.WRITTEN_OFF
    assert outcome.written_off_minor == review.balance_minor
    assert [verb for verb, _ in recorder.service_calls] == ["suspend"]
    kinds = recorder.event_kinds(invoice.invoice_id)
    assert kinds[0] == "invoice_issued" and kinds[-1] == "invoice_closed"
    sequences = sorted(seq for (inv, seq) in recorder.events if inv == invoice.invoice_id)
    assert sequences == list(range(1, len(sequences) + 1))


def _fees_due_by(invoice: Invoice, moment: datetime) -> int:
    """Fee 1 at the late-fee stage, then one more each time a further month of delay starts, until the agency
    hand-over stops late charges."""
    if moment < policy.stage_due_at(invoice, DEFAULT.stage(StageAction.LATE_FEE), timedelta(0)):
        return 0
    agency = policy.stage_due_at(invoice, DEFAULT.stage(StageAction.AGENCY), timedelta(0))
    months = [policy.add_months(policy.due_moment(invoice), n) for n in range(1, 12)]
    return 1 + sum(1 for start in months if start <= moment and start < agency)


# --- payments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stage",
    [None, StageAction.REMINDER, StageAction.WARNING, StageAction.LATE_FEE, StageAction.ULTIMATUM,
     StageAction.SUSPEND, StageAction.AGENCY, StageAction.LEGAL_REVIEW],
)
async def test_payment_in_full_at_every_stage_closes_and_restores(env, client, queue, recorder, stage):
    invoice, handle = await begin(env, client, queue, recorder)
    if stage:
        await reach(env, invoice, handle, stage)
    due = (await status(handle)).balance_minor
    balance = await handle.execute_update(InvoiceWorkflow.record_payment, pay("full", due))
    assert balance == 0
    outcome = await handle.result()
    assert outcome.state == InvoiceState.PAID
    assert outcome.paid_minor == due
    suspended = stage in (StageAction.SUSPEND, StageAction.AGENCY, StageAction.LEGAL_REVIEW)
    assert [verb for verb, _ in recorder.service_calls] == (["suspend", "restore"] if suspended else [])
    assert ("restored" in recorder.notice_kinds()) == suspended
    # the receipt is sent as the payment closes the invoice; restoration follows it
    expected_tail = ["receipt", "restored"] if suspended else ["receipt"]
    assert recorder.notice_kinds()[-len(expected_tail):] == expected_tail
    assert recorder.event_kinds(invoice.invoice_id)[-1] in ("notice_sent", "service_restored")
    assert "invoice_closed" in recorder.event_kinds(invoice.invoice_id)


async def test_partial_payments_lower_the_balance_and_keep_the_clock(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    assert await handle.execute_update(InvoiceWorkflow.record_payment, pay("p1", 30_000)) == 70_000
    assert await handle.execute_update(InvoiceWorkflow.record_payment, pay("p2", 20_000)) == 50_000
    await reach(env, invoice, handle, StageAction.REMINDER)
    current = await status(handle)
    assert current.paid_minor == 50_000 and current.balance_minor == 50_000
    await reach(env, invoice, handle, StageAction.LATE_FEE)
    fee = recorder.events_of(invoice.invoice_id, "late_fee_charged")[0]
    assert fee.data["amount_minor"] == 1_000 + 1_500  # 2 % of the unpaid 500.00, plus the fixed fee
    assert (await status(handle)).balance_minor == 50_000 + 2_500


async def test_payment_is_idempotent_by_payment_id(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    assert await handle.execute_update(InvoiceWorkflow.record_payment, pay("same", 10_000)) == 90_000
    assert await handle.execute_update(InvoiceWorkflow.record_payment, pay("same", 10_000)) == 90_000
    await handle.signal(PAYMENT_SIGNAL, pay("same", 10_000))
    await eventually(lambda: recorder.notice_kinds(invoice.invoice_id).count("receipt") == 1)
    # the outbox sends the receipt before it appends the batch's events: wait for the append
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "payment_recorded") != [])
    current = await status(handle)
    assert current.paid_minor == 10_000
    assert len(recorder.events_of(invoice.invoice_id, "payment_recorded")) == 1
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update(InvoiceWorkflow.record_payment, pay("same", 99))
    assert "already recorded with amount 100.00 EUR" in str(failed.value.cause)


async def test_overpayment_is_recorded_as_a_credit(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    assert await handle.execute_update(InvoiceWorkflow.record_payment, pay("big", 120_000)) == 0
    outcome = await handle.result()
    assert outcome.state == InvoiceState.PAID and outcome.overpaid_minor == 20_000
    [credit] = recorder.events_of(invoice.invoice_id, "overpayment_credited")
    assert credit.data["amount_minor"] == 20_000


async def test_signal_payment_records_like_the_update(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    await handle.signal(PAYMENT_SIGNAL, pay("s1", 40_000))
    await eventually(lambda: _balance_is(handle, 60_000))
    await handle.signal(PAYMENT_SIGNAL, pay("s2", 60_000))
    assert (await handle.result()).state == InvoiceState.PAID


async def test_signal_of_another_name_is_dropped_and_changes_nothing(env, client, queue, recorder):
    """A signal the invoice does not take (here a typo of payment_received) is dropped, whatever it carries;
    no workflow task fails and the invoice still takes payments."""
    invoice, handle = await begin(env, client, queue, recorder)
    await handle.signal("payment_recieved", pay("typo", invoice.amount_minor))
    await handle.signal("payment_received_twice", args=[1, 2, 3])
    await handle.signal(PAYMENT_SIGNAL, pay("s1", 40_000))
    await eventually(lambda: _balance_is(handle, 60_000))
    current = await status(handle)
    assert current.rejected_payments == 0 and current.paid_minor == 40_000
    history = await handle.fetch_history()
    assert not [e for e in history.events if e.HasField("workflow_task_failed_event_attributes")]


async def _balance_is(handle: WorkflowHandle, balance: int) -> bool:
    return (await status(handle)).balance_minor == balance


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["not a payment"], "malformed payment"),
        ([{"payment_id": "x1", "currency": "EUR"}], "malformed payment: amount_minor: Field required"),
        ([{"payment_id": "x2", "amount_minor": -500, "currency": "EUR"}], "malformed payment: amount_minor: Input should be greater than 0"),
        (
            [{"payment_id": "x3", "amount_minor": 500, "currency": "EUR", "surprise": 1}],
            "malformed payment: surprise: Extra inputs are not permitted",
        ),
        ([{"payment_id": "x4", "amount_minor": 500, "currency": "USD"}], "does not match invoice currency EUR"),
        ([12345], "malformed payment"),
        ([None], "not a payment object but NoneType"),  # a binary/null payload
        ([bytes(range(256))], "not a payment object but bytes"),  # binary/plain
        ([RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b'{"payment_id": "S-\x00"}'))], "malformed payment"),
        ([], "the signal carried no payment"),
        ([{"payment_id": "y1", "amount_minor": 500, "currency": "EUR"}] * 2, "carried 2 arguments, not one payment"),
    ],
)
async def test_malformed_signal_is_recorded_as_rejected_never_lost(env, client, queue, recorder, arguments, reason):
    invoice, handle = await begin(env, client, queue, recorder)
    await handle.signal(PAYMENT_SIGNAL, args=arguments)
    await eventually(lambda: len(recorder.events_of(invoice.invoice_id, "payment_rejected")) == 1)
    [rejected] = recorder.events_of(invoice.invoice_id, "payment_rejected")
    assert reason in rejected.data["reason"]
    assert "pydantic.dev" not in rejected.data["reason"] and "input_value" not in rejected.data["reason"]
    assert "\x00" not in rejected.model_dump_json()  # PostgreSQL could never store the event
    current = await status(handle)
    assert current.balance_minor == invoice.amount_minor and current.rejected_payments == 1
    # published by the run loop once the rejection is written, not by the signal handler
    await eventually(lambda: _search_attribute(handle, sa.REJECTED_PAYMENTS, 1))
    assert "Rejected payments: 1" in await _current_details(handle)
    # the workflow is healthy: a valid payment still closes it
    await handle.execute_update(InvoiceWorkflow.record_payment, pay("ok", invoice.amount_minor))
    assert (await handle.result()).state == InvoiceState.PAID


async def test_a_flood_of_malformed_payments_is_written_in_bounded_batches_and_counted_beyond_the_daily_rate(
    env, client, queue, recorder
):
    """While the first rejection's append is held (a slow log), 299 more malformed payments of 3 KB arrive. They
    are written in appends of at most ``BATCH_EVENTS`` events and ``BATCH_BYTES`` of JSON (one event over is
    allowed), each with a snapshot that ends at its last event; the first ``REJECTIONS_STORED_PER_DAY`` are
    stored with a 1 KB excerpt and the size and SHA-256 of what was sent, the other 200 counted, and the count
    is written when the invoice closes. Before, one append carried them all (3.15 MB for 2,000 such signals)."""
    invoice, handle = await begin(env, client, queue, recorder)
    held = recorder.hold("append_events", when=lambda events: any(e.kind == "payment_rejected" for e in events))
    sent = [b'{"payment_id": "F-%d", ' % n + b"~" * 3_000 for n in range(300)]
    raw = [RawValue(Payload(metadata={"encoding": b"json/plain"}, data=data)) for data in sent]
    await handle.signal(PAYMENT_SIGNAL, raw[0])
    await held.reached.wait()
    await asyncio.gather(*(handle.signal(PAYMENT_SIGNAL, r) for r in raw[1:]))
    await eventually(lambda: _rejected(handle, 300))
    held.released.set()
    await handle.execute_update(InvoiceWorkflow.record_payment, pay("ok", invoice.amount_minor))
    assert (await handle.result()).state == InvoiceState.PAID

    batches = [b for b in recorder.batches if b.events[0].invoice_id == invoice.invoice_id]
    assert max(len(b.events) for b in batches) <= BATCH_EVENTS
    for batch in batches:
        sizes = [len(e.model_dump_json()) for e in batch.events]
        assert sum(sizes[:-1]) <= BATCH_BYTES, f"an append of {len(sizes)} events, {sum(sizes)} bytes"
        assert batch.snapshot.last_sequence == batch.events[-1].sequence
    assert len([b for b in batches if any(e.kind == "payment_rejected" for e in b.events)]) > 2  # split
    stored = recorder.events_of(invoice.invoice_id, "payment_rejected")
    assert len(stored) == REJECTIONS_STORED_PER_DAY
    by_hash = {hashlib.sha256(data).hexdigest(): data for data in sent}
    for event in stored:
        whole = by_hash[event.data["payload_sha256"]]
        assert event.data["payload_bytes"] == len(whole) and len(event.data["payload"]) == EXCERPT_BYTES
        assert whole.decode().startswith(event.data["payload"])
    [counted] = recorder.events_of(invoice.invoice_id, "payment_rejections_counted")
    assert counted.data["count"] == 300 - REJECTIONS_STORED_PER_DAY
    assert sum(counted.data["reasons"].values()) == counted.data["count"]
    assert counted.sequence < recorder.events_of(invoice.invoice_id, "invoice_closed")[0].sequence


async def _search_attribute(handle: WorkflowHandle, key, value) -> bool:
    return (await handle.describe()).typed_search_attributes.get(key) == value


async def _rejected(handle: WorkflowHandle, count: int) -> bool:
    return (await status(handle)).rejected_payments == count


async def _waiting_on_a_timer(handle: WorkflowHandle) -> bool:
    """True once the workflow has finished its start-up work and sleeps until the next stage."""
    events = (await handle.fetch_history()).events
    return events[-1].event_type == EventType.EVENT_TYPE_TIMER_STARTED


async def _current_details(handle: WorkflowHandle) -> str:
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"payment_id": "u1", "amount_minor": 0, "currency": "EUR"}, "greater than 0"),
        ({"payment_id": "u2", "amount_minor": -1, "currency": "EUR"}, "greater than 0"),
        ({"payment_id": "u3", "amount_minor": 100, "currency": "USD"}, "does not match invoice currency"),
        ({"payment_id": "u4", "amount_minor": 100, "currency": "QQQ"}, "unknown currency"),
        ({"payment_id": "", "amount_minor": 100, "currency": "EUR"}, "payment_id"),
    ],
)
async def test_invalid_update_is_rejected_and_leaves_no_history(env, client, queue, recorder, payload, message):
    invoice, handle = await begin(env, client, queue, recorder)
    await eventually(lambda: _waiting_on_a_timer(handle))
    length_before = len((await handle.fetch_history()).events)
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update("record_payment", payload, result_type=int)
    assert message in str(failed.value.cause) + str(failed.value.cause.cause)
    # the Java test server keeps the (empty) workflow task a rejection ran in; nothing else is added
    added = (await handle.fetch_history()).events[length_before:]
    assert {e.event_type for e in added} <= WORKFLOW_TASK_EVENTS
    assert (await status(handle)).balance_minor == invoice.amount_minor
    assert recorder.event_kinds(invoice.invoice_id).count("payment_recorded") == 0


async def test_payment_on_a_closed_invoice_is_refused(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    await handle.execute_update(InvoiceWorkflow.record_payment, pay("all", invoice.amount_minor))
    await handle.result()
    with pytest.raises((WorkflowUpdateFailedError, RPCError)):
        await handle.execute_update(InvoiceWorkflow.record_payment, pay("late", 100))


# --- pauses, plans, discounts, resend ----------------------------------------------------


async def test_dispute_pauses_escalation_and_shifts_the_clock(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    reminder_at = policy.stage_due_at(invoice, invoice.policy.stage(StageAction.REMINDER), timedelta(0))
    await handle.execute_update(InvoiceWorkflow.open_dispute, OpenDispute(reason="hours billed twice"))
    assert (await status(handle)).state == InvoiceState.DISPUTED
    await sleep_until(env, reminder_at + timedelta(days=10))
    assert "reminder" not in recorder.notice_kinds()
    assert (await status(handle)).next_action is None
    described = await handle.describe()
    assert described.typed_search_attributes.get(sa.INVOICE_STATE) == "disputed"
    opened = recorder.events_of(invoice.invoice_id, "dispute_opened")[0].occurred_at
    resolved = await handle.execute_update(
        InvoiceWorkflow.resolve_dispute, ResolveDispute(outcome="upheld", credit_minor=25_000)
    )
    assert resolved.balance_minor == 75_000 and resolved.state == InvoiceState.ISSUED
    paused = (await env.get_current_time()) - opened
    assert resolved.next_action is not None
    assert abs(resolved.next_action.at - (reminder_at + paused)) < timedelta(seconds=5)
    await sleep_until(env, resolved.next_action.at)
    await settled_into(handle, InvoiceState.REMINDED)


async def test_dispute_upheld_for_the_full_amount_settles(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    await handle.execute_update(InvoiceWorkflow.open_dispute, OpenDispute(reason="never delivered"))
    await handle.execute_update(
        InvoiceWorkflow.resolve_dispute, ResolveDispute(outcome="upheld", credit_minor=invoice.amount_minor)
    )
    assert (await handle.result()).state == InvoiceState.SETTLED


async def test_dispute_requests_are_validated(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    with pytest.raises(WorkflowUpdateFailedError, match="Workflow update failed"):
        await handle.execute_update(InvoiceWorkflow.resolve_dispute, ResolveDispute(outcome="rejected"))
    with pytest.raises(WorkflowUpdateFailedError) as failed:  # a NUL could never be stored in the event log
        await handle.execute_update("open_dispute", {"reason": "wrong\x00rate"})
    assert "control characters" in str(failed.value.cause) + str(failed.value.cause.cause)
    await handle.execute_update(InvoiceWorkflow.open_dispute, OpenDispute(reason="wrong rate\nand hours billed twice"))
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update(InvoiceWorkflow.open_dispute, OpenDispute(reason="again"))
    assert "already open" in str(failed.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update(
            InvoiceWorkflow.resolve_dispute, ResolveDispute(outcome="upheld", credit_minor=invoice.amount_minor + 1)
        )
    assert "exceeds the balance" in str(failed.value.cause)


async def test_payment_plan_on_time_closes_the_invoice(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    await reach(env, invoice, handle, StageAction.WARNING)
    start = await today(env)
    plan = PaymentPlan(instalments=[
        Instalment(due_date=start + timedelta(days=10), amount_minor=50_000),
        Instalment(due_date=start + timedelta(days=40), amount_minor=50_000),
    ])
    agreed = await handle.execute_update(InvoiceWorkflow.agree_payment_plan, plan)
    assert agreed.state == InvoiceState.PAYMENT_PLAN and agreed.on_payment_plan
    await env.sleep(timedelta(days=9))
    await handle.execute_update(InvoiceWorkflow.record_payment, pay("i1", 50_000))
    await env.sleep(timedelta(days=25))  # well past the late-fee stage: escalation is replaced
    assert (await status(handle)).state == InvoiceState.PAYMENT_PLAN
    assert "late_fee" not in recorder.notice_kinds()
    await handle.execute_update(InvoiceWorkflow.record_payment, pay("i2", 50_000))
    assert (await handle.result()).state == InvoiceState.PAID


async def test_missed_instalment_resumes_escalation_where_it_stopped(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    await reach(env, invoice, handle, StageAction.WARNING)
    start = await today(env)
    plan = PaymentPlan(instalments=[
        Instalment(due_date=start + timedelta(days=10), amount_minor=40_000),
        Instalment(due_date=start + timedelta(days=20), amount_minor=60_000),
    ])
    await handle.execute_update(InvoiceWorkflow.agree_payment_plan, plan)
    await sleep_until(env, policy.local_moment(invoice, start + timedelta(days=11)))
    await eventually(lambda: "instalment_missed" in recorder.notice_kinds())
    resumed = await status(handle)
    assert resumed.state == InvoiceState.WARNED and not resumed.on_payment_plan
    assert resumed.next_action is not None and resumed.next_action.what == "late_fee"
    # the late fee (5 days after the warning) comes 5 days after the resumption, not at once
    assert resumed.next_action.at - await env.get_current_time() > timedelta(days=4)
    await sleep_until(env, resumed.next_action.at)
    await settled_into(handle, InvoiceState.LATE_FEE)


async def test_payment_plan_must_cover_the_balance(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    start = await today(env)
    short = PaymentPlan(instalments=[Instalment(due_date=start + timedelta(days=3), amount_minor=10)])
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update(InvoiceWorkflow.agree_payment_plan, short)
    assert "sum to 0.10 EUR but the balance is 1000.00 EUR" in str(failed.value.cause)
    past = PaymentPlan(instalments=[Instalment(due_date=start - timedelta(days=3), amount_minor=100_000)])
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(InvoiceWorkflow.agree_payment_plan, past)


async def test_early_payment_discount_applies_within_the_window(env, client, queue, recorder):
    terms = {"early_payment_discount": {"percent": "2", "within_days": 7}}
    invoice, handle = await begin(env, client, queue, recorder, terms=terms)
    assert (await status(handle)).discount_available_minor == 2_000
    assert recorder.notices[0].discount_minor == 2_000
    assert await handle.execute_update(InvoiceWorkflow.record_payment, pay("early", 98_000)) == 0
    assert (await handle.result()).state == InvoiceState.PAID
    [discount] = recorder.events_of(invoice.invoice_id, "discount_applied")
    assert discount.data["amount_minor"] == 2_000


async def test_early_payment_discount_expires(env, client, queue, recorder):
    terms = {"early_payment_discount": {"percent": "2", "within_days": 7}}
    invoice, handle = await begin(env, client, queue, recorder, terms=terms)
    # past 09:00 of the morning after the last day, whatever the hour it started (the query answers as of
    # the workflow's last task, and the discount's end is a step of its own at that moment)
    await env.sleep(timedelta(days=9))
    assert (await status(handle)).discount_available_minor == 0
    assert await handle.execute_update(InvoiceWorkflow.record_payment, pay("late", 98_000)) == 2_000


async def test_resend_sends_the_current_invoice_without_moving_the_clock(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    await reach(env, invoice, handle, StageAction.LATE_FEE)
    before = await status(handle)
    await handle.execute_update(InvoiceWorkflow.resend_invoice)
    await eventually(lambda: recorder.notice_kinds().count("invoice_issued") == 2)
    resent = recorder.notices[-1]
    assert resent.detail == "resend" and resent.balance_minor == before.balance_minor
    assert [f.amount_minor for f in resent.fees] == [3_500]
    assert (await status(handle)).next_action == before.next_action


# --- legal review --------------------------------------------------------------------------


async def test_legal_settlement_closes_as_settled_when_paid(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update(InvoiceWorkflow.decide_legal, DecideLegal(decision="sue"))
    assert "no legal review is open" in str(failed.value.cause)
    await reach(env, invoice, handle, StageAction.LEGAL_REVIEW)
    decided = await handle.execute_update(
        InvoiceWorkflow.decide_legal, DecideLegal(decision="settle", settle_amount_minor=80_000)
    )
    assert decided.state == InvoiceState.LEGAL_ACTION and decided.balance_minor == 80_000
    await handle.execute_update(InvoiceWorkflow.record_payment, pay("settlement", 80_000))
    outcome = await handle.result()
    assert outcome.state == InvoiceState.SETTLED
    assert [verb for verb, _ in recorder.service_calls] == ["suspend", "restore"]


async def test_legal_back_to_agency_reopens_review_later(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    await reach(env, invoice, handle, StageAction.LEGAL_REVIEW)
    back = await handle.execute_update(InvoiceWorkflow.decide_legal, DecideLegal(decision="agency"))
    assert back.state == InvoiceState.AGENCY
    await env.sleep(invoice.policy.legal_review_again_after + timedelta(hours=1))
    await settled_into(handle, InvoiceState.LEGAL_REVIEW)
    assert recorder.notice_kinds().count("legal_review") == 2
    sued = await handle.execute_update(InvoiceWorkflow.decide_legal, DecideLegal(decision="sue"))
    assert sued.state == InvoiceState.LEGAL_ACTION
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(InvoiceWorkflow.decide_legal, DecideLegal(decision="agency"))


# --- Temporal plumbing ---------------------------------------------------------------------


async def test_search_attributes_follow_the_state(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    await reach(env, invoice, handle, StageAction.WARNING)
    await handle.execute_update(InvoiceWorkflow.record_payment, pay("p", 10_000))
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(sa.INVOICE_STATE) == "warned"
    assert attributes.get(sa.CUSTOMER_ID) == invoice.customer_id
    assert attributes.get(sa.AMOUNT_DUE) == 90_000
    assert attributes.get(sa.CURRENCY) == "EUR"
    assert attributes.get(sa.DAYS_OVERDUE) == 5
    assert attributes.get(sa.DUE_DATE) == policy.due_moment(invoice)


@pytest.mark.parametrize("limit", [60])
async def test_continue_as_new_when_history_grows(env, client, queue, recorder, limit):
    invoice = make_invoice(await today(env))
    handle = await start_invoice(client, queue, invoice, history_limit=limit)
    await eventually(lambda: "invoice_issued" in recorder.notice_kinds(invoice.invoice_id))
    first_run = (await handle.describe()).run_id
    for n in range(20):
        await handle.execute_update(InvoiceWorkflow.record_payment, pay(f"small-{n}", 100))
    handle = client.get_workflow_handle_for(InvoiceWorkflow.run, invoice.workflow_id)
    await eventually(lambda: _run_changed(handle, first_run))
    carried = await status(handle)
    assert carried.paid_minor == 2_000 and carried.balance_minor == 98_000
    # payment ids survive the new run: a replay of an old one changes nothing
    assert await handle.execute_update(InvoiceWorkflow.record_payment, pay("small-3", 100)) == 98_000
    sequences = sorted(seq for (inv, seq) in recorder.events if inv == invoice.invoice_id)
    assert sequences == list(range(1, len(sequences) + 1))
    await handle.execute_update(InvoiceWorkflow.record_payment, pay("rest", 98_000))
    assert (await handle.result()).state == InvoiceState.PAID


async def _run_changed(handle: WorkflowHandle, first_run: str) -> bool:
    return (await handle.describe()).run_id != first_run


async def test_invoice_started_after_its_courtesy_moment_skips_the_courtesy_note(env, client, queue, recorder):
    start = await today(env)
    courtesy_policy = {
        "stages": [{"action": "courtesy", "offset": "-P3D"}, *[s.model_dump(mode="json") for s in DEFAULT.stages]],
        "sending_window": None,
    }
    _, handle = await begin(env, client, queue, recorder, due_date=start + timedelta(days=1), policy=courtesy_policy)
    _, early_handle = await begin(env, client, queue, recorder, due_date=start + timedelta(days=10), policy=courtesy_policy)
    assert (await status(handle)).next_action.what == "reminder"
    assert (await status(early_handle)).next_action.what == "courtesy"
    await handle.terminate("done")
    await early_handle.terminate("done")


# --- sending window ------------------------------------------------------------------------


def _next_business_morning(after: date, country: str) -> date:
    """Independent of the workflow's policy code: the next Monday-to-Friday date that is no public holiday."""
    import holidays

    day = after + timedelta(days=1)
    while day.weekday() >= 5 or day in holidays.country_holidays(country, years=day.year):
        day += timedelta(days=1)
    return day


def _first_day_after(start: date, wanted: Callable[[date], bool]) -> date:
    day = start + timedelta(days=3)
    while not wanted(day):
        day += timedelta(days=1)
    return day


async def _reminder_waits_for_window(env, client, queue, recorder, reminder_day: date) -> None:
    zone = ZoneInfo("Europe/Bucharest")
    invoice, handle = await begin(
        env, client, queue, recorder,
        due_date=reminder_day - timedelta(days=1), time_zone="Europe/Bucharest", country="RO",
        policy=DunningPolicy.default(),
    )
    opening_day = _next_business_morning(reminder_day, "RO")
    opening = datetime.combine(opening_day, time(9, 0), tzinfo=zone)
    nominal = datetime.combine(reminder_day, time(9, 0), tzinfo=zone)
    # once the workflow has looked up the country's holidays, its next step is the window's opening
    await eventually(lambda: _next_action_at(handle, opening))
    await sleep_until(env, nominal)
    await sleep_until(env, opening - timedelta(minutes=1))
    assert "reminder" not in recorder.notice_kinds(invoice.invoice_id)
    assert (await status(handle)).state == InvoiceState.ISSUED
    await sleep_until(env, opening)
    # (a later stage whose own time has come by then, like a +5 warning, follows at once)
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "stage_reached"))
    reached = recorder.events_of(invoice.invoice_id, "stage_reached")[0]
    assert reached.data["stage"] == "reminder"
    assert reached.occurred_at.astimezone(zone) - opening < timedelta(seconds=1)
    # a windowed stage notice goes through the customer, which gathers its invoices' notices a while first
    await env.sleep(DIGEST_GATHERING + timedelta(seconds=1))
    await eventually(lambda: "reminder" in recorder.notice_kinds(invoice.invoice_id))


async def _next_action_at(handle: WorkflowHandle, moment: datetime) -> bool:
    return (await status(handle)).next_action.at == moment


async def test_stage_due_on_a_saturday_goes_out_the_next_business_morning(env, client, queue, recorder):
    saturday = _first_day_after(await today(env), lambda d: d.weekday() == 5)
    await _reminder_waits_for_window(env, client, queue, recorder, saturday)


async def test_stage_due_on_a_public_holiday_goes_out_the_next_business_morning(env, client, queue, recorder):
    import holidays

    start = await today(env)
    ro = holidays.country_holidays("RO", years=[start.year, start.year + 1])
    holiday = _first_day_after(start, lambda d: d.weekday() < 5 and d in ro)
    await _reminder_waits_for_window(env, client, queue, recorder, holiday)


# --- equipment, agency package, factoring, failed channels ----------------------------------


async def test_suspension_cuts_authorised_equipment_and_payment_restores_only_what_was_cut(env, client, queue, recorder):
    recorder.unreachable_equipment.add("sw-2")
    terms = {"remote_disconnect_authorized": True, "equipment_ids": ["bmc-1", "sw-1", "sw-2"]}
    invoice, handle = await begin(env, client, queue, recorder, terms=terms)
    await reach(env, invoice, handle, StageAction.SUSPEND)
    await eventually(lambda: len(recorder.events_of(invoice.invoice_id, "suspend_failed")) == 1)
    cuts = [(verb, r.equipment_id) for verb, r in recorder.equipment_calls]
    assert sorted(cuts) == [("suspend", "bmc-1"), ("suspend", "sw-1"), ("suspend", "sw-2")]
    assert [e.data["equipment_id"] for e in recorder.events_of(invoice.invoice_id, "equipment_suspended")] == ["bmc-1", "sw-1"]
    assert recorder.events_of(invoice.invoice_id, "suspend_failed")[0].data["equipment_id"] == "sw-2"
    assert (await handle.describe()).typed_search_attributes.get(sa.FAILED_EQUIPMENT) == ["sw-2"]
    suspended_notice = [n for n in recorder.notices if n.kind.value == "suspended"][0]
    assert suspended_notice.remote_disconnect
    await handle.execute_update(InvoiceWorkflow.record_payment, pay("full", (await status(handle)).balance_minor))
    await handle.result()
    restores = sorted(r.equipment_id for verb, r in recorder.equipment_calls if verb == "restore")
    assert restores == ["bmc-1", "sw-1"]
    # the piece that was never cut needs nothing from ops once the invoice is paid
    assert not (await handle.describe()).typed_search_attributes.get(sa.FAILED_EQUIPMENT)
    # the customer workflow acts for the invoice (workflows.customer)
    by = f"workflow customer-{invoice.customer_id} for invoice {invoice.invoice_id}"
    assert all(r.requested_by == by for _, r in recorder.equipment_calls)


async def test_without_authorisation_suspension_cuts_nothing_and_says_so(env, client, queue, recorder):
    terms = {"remote_disconnect_authorized": False, "equipment_ids": ["bmc-1"]}
    invoice, handle = await begin(env, client, queue, recorder, terms=terms)
    await reach(env, invoice, handle, StageAction.SUSPEND)
    await eventually(lambda: "suspended" in recorder.notice_kinds(invoice.invoice_id))
    assert recorder.equipment_calls == []
    assert [verb for verb, _ in recorder.service_calls] == ["suspend"]
    assert not [n for n in recorder.notices if n.kind.value == "suspended"][0].remote_disconnect


async def test_agency_stage_sends_the_hand_over_package_once(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    await reach(env, invoice, handle, StageAction.AGENCY)
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "agency_handover"))
    assert len(recorder.agency_packages) == 1
    package = recorder.agency_packages[0]
    assert package.invoice == invoice
    assert package.balance_minor == invoice.amount_minor + sum(f.amount_minor for f in package.fees)
    assert len(package.fees) >= 3
    assert package.days_overdue == 90
    assert recorder.events_of(invoice.invoice_id, "agency_handover")[0].data["package_sent"] is True


async def pay_in_full_while_held(handle: WorkflowHandle, held: Hold) -> None:
    """Pay the whole balance while ``held`` keeps a stage's activity running, then let it finish."""
    await asyncio.wait_for(held.reached.wait(), timeout=30)
    balance = (await status(handle)).balance_minor
    await handle.execute_update(InvoiceWorkflow.record_payment, pay("during-the-stage", balance))
    held.released.set()
    assert (await handle.result()).state == InvoiceState.PAID


async def test_payment_during_suspension_stops_it_before_any_cut_and_tells_the_client_nothing(env, client, queue, recorder):
    terms = {"remote_disconnect_authorized": True, "equipment_ids": ["bmc-1"]}
    invoice, handle = await begin(env, client, queue, recorder, terms=terms)
    held = recorder.hold("suspend_service")
    await sleep_until(env, policy.stage_due_at(invoice, invoice.policy.stage(StageAction.SUSPEND), timedelta(0)))
    await pay_in_full_while_held(handle, held)
    kinds = [k for k in recorder.event_kinds(invoice.invoice_id) if k != "notice_sent"]
    # the block the activity made is recorded, after the close, and lifted; nothing is cut
    assert kinds[kinds.index("invoice_closed") :] == ["invoice_closed", "service_suspended", "service_restored"]
    assert recorder.equipment_calls == []
    assert [verb for verb, _ in recorder.service_calls] == ["suspend", "restore"]
    assert "suspended" not in recorder.notice_kinds(invoice.invoice_id)
    assert recorder.notice_kinds(invoice.invoice_id)[-2:] == ["receipt", "restored"]


async def test_payment_while_the_agency_package_goes_out_records_the_handover_but_tells_the_client_nothing(
    env, client, queue, recorder
):
    invoice, handle = await begin(env, client, queue, recorder)
    held = recorder.hold("send_agency_package")
    await sleep_until(env, policy.stage_due_at(invoice, invoice.policy.stage(StageAction.AGENCY), timedelta(0)))
    await pay_in_full_while_held(handle, held)
    assert len(recorder.agency_packages) == 1
    handovers = recorder.events_of(invoice.invoice_id, "agency_handover")
    closed = recorder.events_of(invoice.invoice_id, "invoice_closed")
    assert [e.data["package_sent"] for e in handovers] == [True] and handovers[0].sequence > closed[0].sequence
    assert "agency_handover" not in recorder.notice_kinds(invoice.invoice_id)


async def test_payment_before_the_agency_package_goes_out_sends_no_package(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    # the stage first writes its history (the events of reaching it); the payment lands in between
    held = recorder.hold("append_events", when=lambda events: any(e.data.get("stage") == "agency" for e in events))
    await sleep_until(env, policy.stage_due_at(invoice, invoice.policy.stage(StageAction.AGENCY), timedelta(0)))
    await pay_in_full_while_held(handle, held)
    assert recorder.agency_packages == []
    assert recorder.events_of(invoice.invoice_id, "agency_handover") == []
    assert "agency_handover" not in recorder.notice_kinds(invoice.invoice_id)


async def test_factored_invoice_closes_and_refuses_further_requests(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    await reach(env, invoice, handle, StageAction.WARNING)
    result = await handle.execute_update(InvoiceWorkflow.mark_factored, MarkFactored(factor="factor-1", advance_minor=80_000))
    assert result.state == InvoiceState.FACTORED
    outcome = await handle.result()
    assert outcome.state == InvoiceState.FACTORED
    event = recorder.events_of(invoice.invoice_id, "invoice_factored")[0]
    assert event.data == {"factor": "factor-1", "advance_minor": 80_000, "balance_minor": 100_000}


async def test_a_failed_channel_is_shown_to_ops_and_escalation_goes_on(env, client, queue, recorder):
    recorder.failing_channels["webhook"] = "400 Bad Request from the CRM"
    invoice, handle = await begin(env, client, queue, recorder)
    await reach(env, invoice, handle, StageAction.REMINDER)
    await eventually(lambda: len(recorder.events_of(invoice.invoice_id, "notice_failed")) == 2)
    failed = recorder.events_of(invoice.invoice_id, "notice_failed")
    assert [e.data["kind"] for e in failed] == ["invoice_issued", "reminder"]
    assert all(e.data["channel"] == "webhook" and "400" in e.data["error"] for e in failed)
    assert (await handle.describe()).typed_search_attributes.get(sa.FAILED_NOTICES) == ["invoice_issued", "reminder"]
    assert [e.data["channels"] for e in recorder.events_of(invoice.invoice_id, "notice_sent")] == [["email"], ["email"]]


# --- requests that arrive with the start ---------------------------------------------------------


async def test_requests_delivered_with_the_start_follow_the_issue_and_replay(env, client, recorder):
    """A signal and an update that reach the workflow in its very first task, before the run loop."""
    invoice = make_invoice(await today(env))
    queue = f"late-worker-{invoice.invoice_id}"
    handle = await start_invoice(client, queue, invoice)  # no worker polls this queue yet
    await handle.signal("payment_received", {"payment_id": "bad"})
    resend = asyncio.create_task(handle.execute_update(InvoiceWorkflow.resend_invoice))
    await asyncio.sleep(0.5)
    async with Worker(
        client, task_queue=queue, workflows=[InvoiceWorkflow], activities=recorder.activities,
        workflow_runner=workflow_runner(),
    ):
        await resend
        await eventually(lambda: len(recorder.notices) == 2)
        await eventually(lambda: len(recorder.event_kinds(invoice.invoice_id)) >= 3)  # written after the notices
        kinds = recorder.event_kinds(invoice.invoice_id)
        assert kinds[0] == "invoice_issued"
        assert sorted(kinds[1:3]) == ["invoice_resent", "payment_rejected"]
        assert (await status(handle)).rejected_payments == 1
    replayer = Replayer(workflows=[InvoiceWorkflow], data_converter=pydantic_data_converter, workflow_runner=workflow_runner())
    result = await replayer.replay_workflow(await handle.fetch_history(), raise_on_replay_failure=False)
    assert result.replay_failure is None
