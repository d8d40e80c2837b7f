"""Catching up (issue 20 item 7) on the time-skipping server: an invoice whose stages fell due together, because
it was started backdated or imported, or because no worker ran, tells the client once and goes on from then."""

from __future__ import annotations

from datetime import timedelta

from tests.harness import eventually, make_invoice, start_invoice
from tests.test_invoice_money import assert_replays, due_at
from tests.test_invoice_workflow import settled_into, sleep_until, status, today
from workflows import policy
from workflows.models import InvoiceState, LastNotice, Opening, OpeningFee, StageAction


def stage_notices(recorder, invoice_id: str) -> list[str]:
    return recorder.notice_kinds(invoice_id)


async def test_an_invoice_due_100_days_ago_tells_one_notice_and_goes_on_from_now(env, client, queue, recorder):
    """The issue's scenario: no invoice, reminder, warning and four late-fee notices at once, but one ultimatum
    that lists the four fees and names a cut five days ahead; the stages after it count from now."""
    start = await today(env)
    invoice = make_invoice(start, issue_date=start - timedelta(days=114), due_date=start - timedelta(days=100))
    handle = await start_invoice(client, queue, invoice)
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "cut_announced"))
    now = await env.get_current_time()
    assert stage_notices(recorder, invoice.invoice_id) == ["ultimatum"]
    [ultimatum] = recorder.notices
    assert ultimatum.suspension_at is not None and ultimatum.suspension_at >= now + timedelta(days=5) - timedelta(minutes=1)
    assert [fee.amount_minor for fee in ultimatum.fees] == [3_500, 2_000, 2_000, 2_000]  # charged as the policy says
    reached = [e.data["stage"] for e in recorder.events_of(invoice.invoice_id, "stage_reached")]
    assert reached == ["reminder", "warning", "late_fee", "ultimatum"]
    assert recorder.service_calls == [] and (await status(handle)).state == InvoiceState.ULTIMATUM

    await sleep_until(env, ultimatum.suspension_at)
    await settled_into(handle, InvoiceState.SUSPENDED)
    assert stage_notices(recorder, invoice.invoice_id) == ["ultimatum", "suspended"]
    agency_at = due_at(invoice, StageAction.AGENCY) + (now - due_at(invoice, StageAction.ULTIMATUM))
    await sleep_until(env, agency_at - timedelta(hours=1))
    assert "agency_handover" not in stage_notices(recorder, invoice.invoice_id)
    await sleep_until(env, agency_at)
    await settled_into(handle, InvoiceState.AGENCY)
    assert stage_notices(recorder, invoice.invoice_id)[-1] == "agency_handover"
    await assert_replays(handle)


async def test_an_imported_invoice_keeps_its_fees_and_counts_on_from_its_last_notice(env, client, queue, recorder):
    """Due 12 days ago, the other system charged 15.00 and sent the late-fee notice a day ago, a day after our
    policy's moment: nothing is sent now (no invoice notice either); the ultimatum comes five days after that
    notice (the policy's gap), and the policy's monthly fees count on after the opening one."""
    start = await today(env)
    invoice = make_invoice(start, issue_date=start - timedelta(days=26), due_date=start - timedelta(days=12))
    told_at = due_at(invoice, StageAction.LATE_FEE) + timedelta(days=1)
    opening = Opening(
        fees=[OpeningFee(amount_minor=1_500, charged_on=told_at.date())],
        last_notice=LastNotice(stage=StageAction.LATE_FEE, sent_at=told_at),
    )
    handle = await start_invoice(client, queue, invoice, opening=opening)
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "stage_reached"))
    current = await status(handle)
    assert current.state == InvoiceState.LATE_FEE and current.fees_minor == 1_500 and current.balance_minor == 101_500
    ultimatum_at = told_at + (due_at(invoice, StageAction.ULTIMATUM) - due_at(invoice, StageAction.LATE_FEE))
    assert current.next_action is not None and current.next_action.at == ultimatum_at
    assert stage_notices(recorder, invoice.invoice_id) == []
    await sleep_until(env, ultimatum_at)
    await settled_into(handle, InvoiceState.ULTIMATUM)
    await eventually(lambda: stage_notices(recorder, invoice.invoice_id) == ["ultimatum"])
    [ultimatum] = recorder.notices
    assert [(f.number, f.amount_minor, f.reason) for f in ultimatum.fees] == [(1, 1_500, "opening fee")]
    await sleep_until(env, policy.add_months(policy.due_moment(invoice), 1))
    await eventually(lambda: len(recorder.events_of(invoice.invoice_id, "late_fee_charged")) == 2)
    second = recorder.events_of(invoice.invoice_id, "late_fee_charged")[1]
    assert second.data["number"] == 2 and second.data["amount_minor"] == 2_000  # the policy's fees count on after it
    await assert_replays(handle)


async def test_stages_held_together_on_a_live_invoice_tell_one_notice(env, client, queue, recorder):
    """A running invoice whose reminder and warning both wait for the same opening of its sending window
    (one weekday only): the client gets the warning alone, not the reminder with it."""
    due_date = await today(env) + timedelta(days=14)
    opening_day = (due_date.weekday() + 3) % 7  # the reminder (+1) and the warning (+2) wait for it
    window = {"weekdays": [opening_day], "opens": "09:00", "closes": "17:00", "skip_public_holidays": False}
    stages = [{"action": "reminder", "offset": "P1D"}, {"action": "warning", "offset": "P2D"}]
    invoice = make_invoice(await today(env), policy={"stages": stages, "sending_window": window})
    handle = await start_invoice(client, queue, invoice)
    await eventually(lambda: stage_notices(recorder, invoice.invoice_id) == ["invoice_issued"])
    await sleep_until(env, policy.due_moment(invoice) + timedelta(days=3))
    await settled_into(handle, InvoiceState.WARNED)
    await env.sleep(timedelta(hours=1))  # the customer gathers its stage notices a while before they go out
    await eventually(lambda: stage_notices(recorder, invoice.invoice_id) == ["invoice_issued", "warning"])
    reached = [e.data["stage"] for e in recorder.events_of(invoice.invoice_id, "stage_reached")]
    assert reached == ["reminder", "warning"]
    await assert_replays(handle)
