"""Issue 20 items 1 and 2 on the time-skipping server: a payment's value date decides its discount and the late
fees it reverses, within bounds; the policy's allocation decides what each payment paid. Each test is one of the
issue's scenarios."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError

from tests.harness import eventually
from tests.test_invoice_money import assert_replays, custom_policy, due_at, snapshots
from tests.test_invoice_workflow import begin, reach, sleep_until, status
from workflows import policy
from workflows.events import LateFeeReversed, PaymentRecorded, payload_of
from workflows.invoice import PAYMENT_SIGNAL, InvoiceWorkflow
from workflows.models import InvoiceState, Payment, StageAction

DISCOUNT = {"early_payment_discount": {"percent": "2", "within_days": 7}}


def paid(payment_id: str, amount: int, received_at: datetime | None = None) -> Payment:
    return Payment(payment_id=payment_id, amount_minor=amount, currency="EUR", received_at=received_at)


def noon(day) -> datetime:
    return datetime.combine(day, time(12), tzinfo=UTC)


def receipts(recorder, invoice_id: str) -> list:
    return [n for n in recorder.notices if n.kind.value == "receipt" and n.invoice_id == invoice_id]


# --- 1. value dates ------------------------------------------------------------------------------


async def test_money_that_arrived_within_the_discount_window_gets_the_discount_though_booked_after_it(
    env, client, queue, recorder
):
    """7-day window: the money arrived on day 5 and was booked on day 9 (after the discount lapsed): discounted.
    Money that arrived on day 8, booked the same day 9, is not."""
    in_time, handle = await begin(env, client, queue, recorder, terms=DISCOUNT)
    late, late_handle = await begin(env, client, queue, recorder, terms=DISCOUNT)
    await sleep_until(env, noon(in_time.issue_date + timedelta(days=9)))
    await eventually(lambda: recorder.events_of(in_time.invoice_id, "discount_lapsed"))
    day5 = paid("day-5", 98_000, noon(in_time.issue_date + timedelta(days=5)))
    assert await handle.execute_update(InvoiceWorkflow.record_payment, day5) == 0
    outcome = await handle.result()
    assert outcome.state == InvoiceState.PAID and outcome.balance_minor == 0
    [discount] = recorder.events_of(in_time.invoice_id, "discount_applied")
    assert discount.data["amount_minor"] == 2_000
    [recorded] = recorder.events_of(in_time.invoice_id, "payment_recorded")
    assert payload_of(recorded) == PaymentRecorded(
        payment_id="day-5", amount_minor=98_000, received_at=day5.received_at, balance_minor=0,
        principal_minor=98_000, fees_minor=0,
    )
    assert snapshots(recorder, in_time.invoice_id)[-1].discount_minor == 2_000
    entries = [e for s in snapshots(recorder, in_time.invoice_id) for e in s.receivables]
    assert sum(e.amount_minor for e in entries) == 0
    assert {e.effective_on for e in entries if e.amount_minor < 0} == {in_time.issue_date + timedelta(days=5)}
    day8 = paid("day-8", 98_000, noon(late.issue_date + timedelta(days=8)))
    assert await late_handle.execute_update(InvoiceWorkflow.record_payment, day8) == 2_000
    assert recorder.events_of(late.invoice_id, "discount_applied") == []
    await assert_replays(handle)


async def test_principal_that_arrived_before_the_fee_reverses_it_though_booked_after(env, client, queue, recorder):
    """The principal arrived on day +2 and was booked on day +10, after the late fee: the fee is reversed, the
    invoice closes as paid, the receipt says so and the receivable never held the fee."""
    invoice, handle = await begin(env, client, queue, recorder)
    await reach(env, invoice, handle, StageAction.LATE_FEE)
    [charged] = recorder.events_of(invoice.invoice_id, "late_fee_charged")
    assert (await status(handle)).fees_minor == 3_500
    arrived = policy.due_moment(invoice) + timedelta(days=2)
    assert await handle.execute_update(InvoiceWorkflow.record_payment, paid("day-plus-2", 100_000, arrived)) == 0
    outcome = await handle.result()
    assert (outcome.state, outcome.fees_minor, outcome.overpaid_minor) == (InvoiceState.PAID, 0, 0)
    [reversal] = recorder.events_of(invoice.invoice_id, "late_fee_reversed")
    assert payload_of(reversal) == LateFeeReversed(
        number=1, amount_minor=3_500, charged_at=charged.occurred_at, payment_id="day-plus-2", received_at=arrived
    )
    [receipt] = receipts(recorder, invoice.invoice_id)
    assert [f.number for f in receipt.fees_reversed] == [1] and receipt.fees == []
    assert receipt.received_on == arrived.date() and receipt.balance_minor == 0
    entries = [e for s in snapshots(recorder, invoice.invoice_id) for e in s.receivables]
    assert sum(e.amount_minor for e in entries) == 0
    [taken_back] = [e for e in entries if e.reason == "late_fee_reversed"]
    assert (taken_back.amount_minor, taken_back.effective_on) == (-3_500, charged.occurred_at.date())
    await assert_replays(handle)


async def test_money_that_arrived_after_the_fee_keeps_it(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    await reach(env, invoice, handle, StageAction.LATE_FEE)
    [charged] = recorder.events_of(invoice.invoice_id, "late_fee_charged")
    arrived = charged.occurred_at + timedelta(seconds=1)
    assert await handle.execute_update(InvoiceWorkflow.record_payment, paid("after", 100_000, arrived)) == 3_500
    assert recorder.events_of(invoice.invoice_id, "late_fee_reversed") == []


async def test_a_partial_payment_that_arrived_early_keeps_the_fee(env, client, queue, recorder):
    """Only a fee charged when the money that had arrived covered the principal is reversed."""
    invoice, handle = await begin(env, client, queue, recorder)
    await reach(env, invoice, handle, StageAction.LATE_FEE)
    arrived = policy.due_moment(invoice) + timedelta(days=2)
    assert await handle.execute_update(InvoiceWorkflow.record_payment, paid("part", 60_000, arrived)) == 43_500
    assert recorder.events_of(invoice.invoice_id, "late_fee_reversed") == []


# --- 1. value dates: bounds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (timedelta(hours=1), "is in the future"),
        (-timedelta(days=60), "more than 31 days before the invoice's issue date"),
    ],
)
async def test_a_value_date_out_of_bounds_is_refused_by_the_update_and_leaves_no_trace(
    env, client, queue, recorder, offset, message
):
    invoice, handle = await begin(env, client, queue, recorder)
    now = await env.get_current_time()
    moment = now + offset if offset > timedelta(0) else noon(invoice.issue_date) + offset
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(InvoiceWorkflow.record_payment, paid("odd", 10_000, moment))
    assert refused.value.cause.type == "InvalidValueDate" and message in str(refused.value.cause)
    current = await status(handle)
    assert current.paid_minor == 0 and current.rejected_payments == 0
    assert recorder.events_of(invoice.invoice_id, "payment_recorded") == []


async def test_a_value_date_within_the_clock_skew_or_without_an_offset_is_taken(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    now = await env.get_current_time()
    skewed = paid("skewed", 10_000, now + timedelta(minutes=4))
    assert await handle.execute_update(InvoiceWorkflow.record_payment, skewed) == 90_000
    naive = paid("naive", 10_000, datetime.combine(invoice.issue_date - timedelta(days=30), time(8)))
    assert await handle.execute_update(InvoiceWorkflow.record_payment, naive) == 80_000
    await eventually(lambda: len(recorder.events_of(invoice.invoice_id, "payment_recorded")) == 2)
    received = [e.data["received_at"] for e in recorder.events_of(invoice.invoice_id, "payment_recorded")]
    assert received[1] == datetime.combine(invoice.issue_date - timedelta(days=30), time(8), UTC).isoformat()


async def test_a_signal_with_a_value_date_in_the_future_is_rejected_with_why(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    future = paid("future", 10_000, await env.get_current_time() + timedelta(days=3))
    await handle.signal(PAYMENT_SIGNAL, future)
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "payment_rejected"))
    [rejected] = recorder.events_of(invoice.invoice_id, "payment_rejected")
    assert "is in the future" in rejected.data["reason"] and rejected.data["payload"]["payment_id"] == "future"
    current = await status(handle)
    assert current.paid_minor == 0 and current.rejected_payments == 1


# --- 2. allocation inside an invoice -------------------------------------------------------------


@pytest.mark.parametrize(
    ("allocation", "principal", "fees", "second_fee"),
    [
        ("principal_first", 50_000, 0, 1_000),  # 2 % of the 500.00 principal left
        ("costs_first", 46_500, 3_500, 1_070),  # the fee paid first: 2 % of 535.00 principal left
    ],
)
async def test_the_policy_s_allocation_decides_what_a_payment_paid(
    env, client, queue, recorder, allocation, principal, fees, second_fee
):
    invoice, handle = await begin(env, client, queue, recorder, policy=custom_policy(allocation=allocation))
    await reach(env, invoice, handle, StageAction.LATE_FEE)
    assert await handle.execute_update(InvoiceWorkflow.record_payment, paid("half", 50_000)) == 53_500
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "payment_recorded"))
    [recorded] = recorder.events_of(invoice.invoice_id, "payment_recorded")
    assert (recorded.data["principal_minor"], recorded.data["fees_minor"]) == (principal, fees)
    [receipt] = receipts(recorder, invoice.invoice_id)
    assert (receipt.principal_paid_minor, receipt.fees_paid_minor) == (principal, fees)
    await sleep_until(env, policy.add_months(policy.due_moment(invoice), 1) + timedelta(hours=1))
    await eventually(lambda: len(recorder.events_of(invoice.invoice_id, "late_fee_charged")) == 2)
    assert recorder.events_of(invoice.invoice_id, "late_fee_charged")[1].data["amount_minor"] == second_fee
    await assert_replays(handle)


async def test_costs_first_a_payment_that_arrived_before_the_fee_still_reverses_it(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder, policy=custom_policy(allocation="costs_first"))
    await reach(env, invoice, handle, StageAction.LATE_FEE)
    arrived = due_at(invoice, StageAction.LATE_FEE) - timedelta(days=1)
    assert await handle.execute_update(InvoiceWorkflow.record_payment, paid("before", 100_000, arrived)) == 0
    assert (await handle.result()).state == InvoiceState.PAID
    [recorded] = recorder.events_of(invoice.invoice_id, "payment_recorded")
    assert (recorded.data["principal_minor"], recorded.data["fees_minor"]) == (100_000, 0)
    assert len(recorder.events_of(invoice.invoice_id, "late_fee_reversed")) == 1
