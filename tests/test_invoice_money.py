"""Issue 20's money rules on the time-skipping server: caps and freezes on late charges, small balances,
the safety interlock for cuts, disputes rejected early, per-currency legal thresholds, recoveries after a
write-off. Each test is one of the issue's scenarios."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from pydantic import ValidationError
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.worker import Replayer

from bench.recording import Recorder
from tests.harness import ROUND_THE_CLOCK, eventually, make_invoice, start_invoice
from tests.test_invoice_workflow import begin, pay, reach, settled_into, sleep_until, status, today
from worker.sandbox import workflow_runner
from workflows import policy
from workflows.events import payload_of
from workflows.invoice import InvoiceWorkflow
from workflows.models import DecideLegal, DunningPolicy, InvoiceState, OpenDispute, ResolveDispute, StageAction

ISSUED = date(2026, 12, 7)  # for the invoices only validated, never started


def custom_policy(stages: dict[str, int] | None = None, **settings) -> dict:
    """The round-the-clock test policy with other stages (action -> days after due) and settings."""
    base = ROUND_THE_CLOCK.model_dump(mode="json")
    if stages is not None:
        base["stages"] = [{"action": action, "offset": f"P{days}D"} for action, days in stages.items()]
    return {**base, **settings}


def due_at(invoice, action: StageAction):
    return policy.stage_due_at(invoice, invoice.policy.stage(action), timedelta(0))


async def assert_replays(handle: WorkflowHandle) -> None:
    """The history the new rules wrote (with the money-rules marker) replays with the current code."""
    replayer = Replayer(workflows=[InvoiceWorkflow], data_converter=pydantic_data_converter, workflow_runner=workflow_runner())
    result = await replayer.replay_workflow(await handle.fetch_history(), raise_on_replay_failure=False)
    assert result.replay_failure is None


def snapshots(recorder: Recorder, invoice_id: str) -> list:
    return [b.snapshot for b in recorder.batches if b.snapshot and b.events[0].invoice_id == invoice_id]


# --- 3. caps and freezes -------------------------------------------------------------------------


async def test_a_settlement_is_final_and_paying_it_settles(env, client, queue, recorder):
    """Settled at 800.00 at legal review: 35 days later it is still 800.00, with no late-fee notice since,
    and paying 800.00 closes the invoice as settled (the agency switch is off: the legal action freezes)."""
    invoice, handle = await begin(
        env, client, queue, recorder, policy=custom_policy(charges_stop_at_agency=False),
        terms={"late_fee_percent_per_month": "2", "fixed_late_fee_minor": 1_500},
    )
    await reach(env, invoice, handle, StageAction.LEGAL_REVIEW)
    decided = await handle.execute_update(
        InvoiceWorkflow.decide_legal, DecideLegal(decision="settle", settle_amount_minor=80_000)
    )
    assert decided.balance_minor == 80_000
    fee_notices = recorder.notice_kinds(invoice.invoice_id).count("late_fee")
    await env.sleep(timedelta(days=35))
    assert (await status(handle)).balance_minor == 80_000
    assert recorder.notice_kinds(invoice.invoice_id).count("late_fee") == fee_notices
    [stopped] = recorder.events_of(invoice.invoice_id, "late_charges_stopped")
    assert stopped.data["reason"] == "legal action"
    assert snapshots(recorder, invoice.invoice_id)[-1].late_charges_stopped == "legal action"
    assert await handle.execute_update(InvoiceWorkflow.record_payment, pay("settlement", 80_000)) == 0
    assert (await handle.result()).state == InvoiceState.SETTLED
    await assert_replays(handle)


async def test_late_charges_stop_at_the_cap_of_the_principal(env, client, queue, recorder):
    """At 10 % a month, fees would reach 1,415.00 on 1,000.00 in fourteen months: they stop at 1,000.00."""
    invoice, handle = await begin(
        env, client, queue, recorder, policy=custom_policy({"reminder": 1, "late_fee": 10}),
        terms={"late_fee_percent_per_month": "10", "fixed_late_fee_minor": 1_500},
    )
    await env.sleep(timedelta(days=14 + 15 * 31))
    current = await status(handle)
    assert current.fees_minor == 100_000  # 115.00, eight times 100.00, then 85.00 up to the cap
    fees = recorder.events_of(invoice.invoice_id, "late_fee_charged")
    assert [f.data["amount_minor"] for f in fees] == [11_500] + [10_000] * 8 + [8_500]
    assert recorder.notice_kinds(invoice.invoice_id).count("late_fee") == 10
    [stopped] = recorder.events_of(invoice.invoice_id, "late_charges_stopped")
    assert stopped.data == {"reason": "cap reached", "fees_minor": 100_000}
    assert current.next_action is None


async def test_no_late_fee_after_the_agency_hand_over(env, client, queue, recorder):
    """The client no longer gets our late-fee notices once the file went to the agency (default policy)."""
    invoice, handle = await begin(
        env, client, queue, recorder, terms={"late_fee_percent_per_month": "10", "fixed_late_fee_minor": 1_500}
    )
    await reach(env, invoice, handle, StageAction.AGENCY)
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "late_charges_stopped"))
    at_handover = await status(handle)
    await reach(env, invoice, handle, StageAction.LEGAL_REVIEW)
    await env.sleep(timedelta(days=60))
    assert (await status(handle)).fees_minor == at_handover.fees_minor
    kinds = recorder.notice_kinds(invoice.invoice_id)
    assert "late_fee" not in kinds[kinds.index("agency_handover") :]
    assert recorder.events_of(invoice.invoice_id, "late_charges_stopped")[0].data["reason"] == "handed to the agency"


# --- 5. small balances ---------------------------------------------------------------------------


async def test_a_residue_below_the_tolerance_is_written_off_and_the_invoice_is_paid(env, client, queue, recorder):
    """999.99 paid on 1,000.00 with a 1.00 tolerance: the 0.01 is written off, no fee, no ultimatum, no cut."""
    invoice, handle = await begin(env, client, queue, recorder, policy=custom_policy(small_balance_tolerance_minor=100))
    assert await handle.execute_update(InvoiceWorkflow.record_payment, pay("almost", 99_999)) == 0
    outcome = await handle.result()
    assert outcome.state == InvoiceState.PAID and outcome.written_off_minor == 1
    await assert_replays(handle)
    [adjusted] = recorder.events_of(invoice.invoice_id, "small_balance_written_off")
    assert adjusted.data == {"amount_minor": 1, "payment_id": "almost"}
    receipt = [n for n in recorder.notices if n.kind.value == "receipt"][0]
    assert receipt.residue_minor == 1 and receipt.balance_minor == 0
    entries = [e for s in snapshots(recorder, invoice.invoice_id) for e in s.receivables]
    assert sum(e.amount_minor for e in entries) == 0


async def test_below_the_minimum_balance_escalation_stops_at_the_reminder(env, client, queue, recorder):
    """The principal paid but not a 35.00 fee: no ultimatum, no cut, no agency hand-over over 35.00."""
    invoice, handle = await begin(
        env, client, queue, recorder, policy=custom_policy(minimum_balance_to_escalate_minor=5_000),
        terms={"fixed_late_fee_minor": 3_500},
    )
    await reach(env, invoice, handle, StageAction.LATE_FEE)
    assert await handle.execute_update(InvoiceWorkflow.record_payment, pay("principal", 100_000)) == 3_500
    await sleep_until(env, due_at(invoice, StageAction.LEGAL_REVIEW) + timedelta(days=30))
    current = await status(handle)
    assert current.state == InvoiceState.LATE_FEE and current.next_action is None and current.balance_minor == 3_500
    kinds = recorder.notice_kinds(invoice.invoice_id)
    assert not {"ultimatum", "suspended", "agency_handover", "legal_review"} & set(kinds)
    assert recorder.service_calls == [] and recorder.agency_packages == []
    [stopped] = recorder.events_of(invoice.invoice_id, "escalation_stopped")
    assert stopped.data == {"balance_minor": 3_500, "minimum_minor": 5_000, "stage": "ultimatum"}
    assert snapshots(recorder, invoice.invoice_id)[-1].escalation_stopped


async def test_a_small_invoice_gets_the_reminder_and_nothing_more(env, client, queue, recorder):
    invoice, handle = await begin(
        env, client, queue, recorder, amount_minor=2_000, policy=custom_policy(minimum_balance_to_escalate_minor=5_000)
    )
    await sleep_until(env, due_at(invoice, StageAction.LEGAL_REVIEW))
    assert recorder.notice_kinds(invoice.invoice_id) == ["invoice_issued", "reminder"]
    assert (await status(handle)).fees_minor == 0


# --- 8. the safety interlock for cuts -----------------------------------------------------------


async def test_a_cut_waits_for_the_minimum_notice_after_the_ultimatum(env, client, queue, recorder):
    """An ultimatum one day before the suspend stage: the cut comes five days after the ultimatum, as it says."""
    invoice, handle = await begin(
        env, client, queue, recorder, policy=custom_policy({"reminder": 1, "ultimatum": 2, "suspend": 3})
    )
    await reach(env, invoice, handle, StageAction.ULTIMATUM)
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "cut_announced"))
    told = due_at(invoice, StageAction.ULTIMATUM) + timedelta(days=5)
    [ultimatum] = [n for n in recorder.notices if n.kind.value == "ultimatum"]
    assert ultimatum.suspension_at == told
    await sleep_until(env, due_at(invoice, StageAction.SUSPEND) + timedelta(hours=1))
    held = await status(handle)
    assert held.state == InvoiceState.ULTIMATUM and recorder.service_calls == []
    assert held.next_action is not None and held.next_action.at == told
    await sleep_until(env, told - timedelta(minutes=1))
    assert recorder.service_calls == []
    await sleep_until(env, told)
    await settled_into(handle, InvoiceState.SUSPENDED)
    [suspended] = [n for n in recorder.notices if n.kind.value == "suspended"]
    assert suspended.suspension_at == told
    await assert_replays(handle)


async def test_a_policy_without_an_ultimatum_sends_one_before_any_cut(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder, policy=custom_policy({"reminder": 1, "suspend": 2}))
    await sleep_until(env, due_at(invoice, StageAction.SUSPEND))
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "cut_announced"))
    assert recorder.service_calls == []
    [ultimatum] = [n for n in recorder.notices if n.kind.value == "ultimatum"]
    told = due_at(invoice, StageAction.SUSPEND) + timedelta(days=5)
    assert ultimatum.suspension_at == told
    await sleep_until(env, told)
    await settled_into(handle, InvoiceState.SUSPENDED)
    assert [verb for verb, _ in recorder.service_calls] == ["suspend"]


async def test_a_backdated_invoice_never_names_a_past_cut_and_waits_the_notice(env, client, queue, recorder):
    """Due 40 days ago: the ultimatum names a moment five days ahead, and the cut waits for it."""
    start = await today(env)  # started with stages due, it sends no invoice notice: ``begin`` would wait for one
    invoice = make_invoice(start, issue_date=start - timedelta(days=54), due_date=start - timedelta(days=40))
    handle = await start_invoice(client, queue, invoice)
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "cut_announced"))
    now = await env.get_current_time()
    [ultimatum] = [n for n in recorder.notices if n.kind.value == "ultimatum"]
    assert ultimatum.suspension_at is not None
    assert now + timedelta(days=5) - timedelta(minutes=1) <= ultimatum.suspension_at <= now + timedelta(days=5)
    assert recorder.service_calls == [] and (await status(handle)).state == InvoiceState.ULTIMATUM
    await sleep_until(env, ultimatum.suspension_at)
    await settled_into(handle, InvoiceState.SUSPENDED)


def test_the_minimum_notice_is_at_least_a_day():
    with pytest.raises(ValidationError, match="minimum_notice"):
        DunningPolicy.model_validate(custom_policy(minimum_notice="PT12H"))
    assert DunningPolicy.default().minimum_notice == timedelta(days=5)


# --- 10. legal thresholds per currency, disputes rejected early --------------------------------


def test_legal_thresholds_follow_the_currency_or_are_required():
    eur = make_invoice(ISSUED, currency="EUR")
    assert (eur.policy.cost_of_legal_action_minor, eur.policy.small_claims_limit_minor) == (150_000, 500_000)
    ron = make_invoice(ISSUED, currency="RON")
    assert ron.policy.small_claims_limit_minor == 1_000_000
    with pytest.raises(ValidationError, match="no default legal thresholds for JPY"):
        make_invoice(ISSUED, currency="JPY")
    jpy = make_invoice(
        ISSUED, currency="JPY",
        policy=custom_policy(cost_of_legal_action_minor=200_000, small_claims_limit_minor=600_000),
    )
    assert jpy.policy.cost_of_legal_action_minor == 200_000
    without_legal = make_invoice(ISSUED, currency="JPY", policy=custom_policy({"reminder": 1, "suspend": 20}))
    assert without_legal.policy.cost_of_legal_action_minor is None


async def test_a_dispute_rejected_before_the_due_date_does_not_move_the_reminder(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    await handle.execute_update(InvoiceWorkflow.open_dispute, OpenDispute(reason="hours billed twice"))
    await env.sleep(timedelta(days=5))
    resolved = await handle.execute_update(InvoiceWorkflow.resolve_dispute, ResolveDispute(outcome="rejected"))
    assert resolved.next_action is not None and resolved.next_action.at == due_at(invoice, StageAction.REMINDER)
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "dispute_resolved"))
    [event] = recorder.events_of(invoice.invoice_id, "dispute_resolved")
    assert payload_of(event).escalation_moved_by == timedelta(0)
    await sleep_until(env, due_at(invoice, StageAction.REMINDER))
    await settled_into(handle, InvoiceState.REMINDED)


async def test_a_rejected_dispute_moves_a_held_stage_only_by_how_long_it_held_it(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    await handle.execute_update(InvoiceWorkflow.open_dispute, OpenDispute(reason="hours billed twice"))
    reminder_at = due_at(invoice, StageAction.REMINDER)
    await sleep_until(env, reminder_at + timedelta(days=2))
    resolved = await handle.execute_update(InvoiceWorkflow.resolve_dispute, ResolveDispute(outcome="rejected"))
    now = await env.get_current_time()
    assert resolved.next_action is not None and abs(resolved.next_action.at - now) < timedelta(minutes=1)


# --- 6. recovery after a write-off --------------------------------------------------------------


async def test_a_recovery_after_write_off_is_recorded_and_lifts_the_block_when_it_covers_it(env, client, queue, recorder):
    invoice, handle = await begin(env, client, queue, recorder)
    await reach(env, invoice, handle, StageAction.LEGAL_REVIEW)
    written_off = await handle.execute_update(InvoiceWorkflow.decide_legal, DecideLegal(decision="write_off"))
    assert written_off.state == InvoiceState.WRITTEN_OFF
    owed = written_off.written_off_minor
    await handle.execute_update(InvoiceWorkflow.record_payment, pay("rec-1", 50_000))
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "recovery_recorded"))
    [first] = recorder.events_of(invoice.invoice_id, "recovery_recorded")
    assert first.data["recovered_minor"] == 50_000 and first.data["unrecovered_minor"] == owed - 50_000
    receipt = [n for n in recorder.notices if n.kind.value == "receipt"][-1]
    assert receipt.recovery and receipt.unrecovered_minor == owed - 50_000
    assert [verb for verb, _ in recorder.service_calls] == ["suspend"]
    await handle.execute_update(InvoiceWorkflow.record_payment, pay("rec-2", owed - 50_000))
    outcome = await handle.result()
    assert outcome.state == InvoiceState.WRITTEN_OFF and outcome.recovered_minor == owed
    assert [verb for verb, _ in recorder.service_calls] == ["suspend", "restore"]
    assert snapshots(recorder, invoice.invoice_id)[-1].recovered_minor == owed
    assert "restored" in recorder.notice_kinds(invoice.invoice_id)
    await assert_replays(handle)


async def test_recoveries_are_taken_for_the_policy_s_while(env, client, queue, recorder):
    invoice, handle = await begin(
        env, client, queue, recorder, policy=custom_policy(recoveries_accepted_for="P30D")
    )
    await reach(env, invoice, handle, StageAction.LEGAL_REVIEW)
    await handle.execute_update(InvoiceWorkflow.decide_legal, DecideLegal(decision="write_off"))
    outcome = await handle.result()
    assert outcome.state == InvoiceState.WRITTEN_OFF and outcome.recovered_minor == 0
    assert [verb for verb, _ in recorder.service_calls] == ["suspend"]
    with pytest.raises((WorkflowUpdateFailedError, RPCError)):
        await handle.execute_update(InvoiceWorkflow.record_payment, pay("too-late", 1_000))
