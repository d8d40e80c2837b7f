"""The fault tests' checks fail on a loss: fed one invoice's doctored log, result or projection, without a stack."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import cast

import pytest

from tests.equipment_peers import ControllerPeer
from tests.faults.checks import Event, Projected, RunReport, check_books, check_equipment, check_notices, money_in_log
from tests.faults.fates import Fate, Money, ScriptedInvoice, first_late_fee
from tests.faults.stack import Delivery, Fault, FaultStack
from workflows.models import EventKind, InvoiceOutcome, InvoiceState

AMOUNT = 100_000
HALF = AMOUNT // 2
FEE = first_late_fee(AMOUNT - HALF)
REST = AMOUNT - HALF + FEE
E = EventKind


def paid_in_two() -> tuple[ScriptedInvoice, list[Event], InvoiceOutcome, Projected]:
    """An invoice paid half once warned and the rest after its late fee: its script, a complete log, the
    workflow's result and the projection, all agreeing."""
    script = ScriptedInvoice("T-0001", "C-T-0001", Fate.PAID_IN_TWO, AMOUNT, [])
    script.payments = {"T-0001-P1": HALF, "T-0001-P2": REST}
    script.answered = set(script.payments)
    facts = [
        (E.INVOICE_ISSUED, {"invoice": {"amount_minor": AMOUNT}}),
        (E.NOTICE_SENT, {"step": "0001-invoice_issued", "kind": "invoice_issued"}),
        (E.STAGE_REACHED, {"stage": "reminder"}),
        (E.NOTICE_SENT, {"step": "0002-reminder", "kind": "reminder"}),
        (E.STAGE_REACHED, {"stage": "warning"}),
        (E.NOTICE_SENT, {"step": "0003-warning", "kind": "warning"}),
        (E.PAYMENT_RECORDED, {"payment_id": "T-0001-P1", "amount_minor": HALF}),
        (E.NOTICE_SENT, {"step": "0004-receipt", "kind": "receipt"}),
        (E.STAGE_REACHED, {"stage": "late_fee"}),
        (E.LATE_FEE_CHARGED, {"amount_minor": FEE}),
        (E.NOTICE_SENT, {"step": "0005-late_fee", "kind": "late_fee"}),
        (E.PAYMENT_RECORDED, {"payment_id": "T-0001-P2", "amount_minor": REST}),
        (E.INVOICE_CLOSED, {"state": "paid"}),
        (E.NOTICE_SENT, {"step": "0006-receipt", "kind": "receipt"}),
    ]
    events = [Event(n, kind, data, float(n)) for n, (kind, data) in enumerate(facts, start=1)]
    outcome = InvoiceOutcome(
        invoice_id=script.invoice_id,
        state=InvoiceState.PAID,
        paid_minor=AMOUNT + FEE,
        fees_minor=FEE,
        written_off_minor=0,
        overpaid_minor=0,
        credited_minor=0,
        balance_minor=0,
        last_sequence=len(events),
    )
    return script, events, outcome, Projected(Money(AMOUNT + FEE, FEE, 0, 0, 0), len(events), 0)


def books(script, events, outcome, projected) -> RunReport:
    report = RunReport("unit")
    check_books(report, script, events, outcome, projected)
    return report


def notices(script, events) -> RunReport:
    report = RunReport("unit")
    steps = [e.data["step"] for e in events if e.kind == E.NOTICE_SENT]
    deliveries = {f"{script.workflow_id}/{step}": [Delivery(step, f"<{step}@test>", 0.0)] for step in steps}
    check_notices(report, script, events, deliveries, [])
    return report


def test_agreeing_books_and_notices_pass():
    script, events, outcome, projected = paid_in_two()
    for report in (books(script, events, outcome, projected), notices(script, events)):
        assert not (report.lost or report.duplicated or report.other), report


def test_a_lost_trailing_event_fails():
    """The log lost its last event (the last receipt's ``notice_sent``): no gap, but the workflow wrote more."""
    script, events, outcome, projected = paid_in_two()
    report = books(script, events[:-1], outcome, projected)
    assert report.lost == ["T-0001 (paid_in_two): the workflow wrote up to event #14, the log ends at #13"]


def test_a_lost_trailing_payment_fails_on_the_money_too():
    script, events, outcome, projected = paid_in_two()
    report = books(script, events[:11], outcome, projected)
    assert any("paid 50000 in the log, the workflow says" in p for p in report.lost), report.lost


def test_a_doubled_payment_fails():
    script, events, outcome, projected = paid_in_two()
    doubled = [*events, Event(len(events) + 1, E.PAYMENT_RECORDED, {"payment_id": "T-0001-P2", "amount_minor": REST})]
    report = books(script, doubled, outcome, projected)
    assert any("paid" in p and "in the log" in p for p in report.duplicated), report.duplicated
    assert any("the log goes to event #15" in p for p in report.duplicated), report.duplicated


def test_a_projection_missing_a_payment_fails():
    script, events, outcome, projected = paid_in_two()
    stale = Projected(Money(HALF, FEE, 0, 0, REST), len(events) - 2, REST)
    report = books(script, events, outcome, stale)
    assert any("in the projection" in p for p in report.lost), report.lost
    assert any("projected up to event #12" in p for p in report.other), report.other
    assert any("projected receivable" in p for p in report.other), report.other


def test_money_the_script_does_not_allow_fails_even_when_everything_agrees():
    """A fee charged on the whole amount although the half was paid first, in the result, log and projection
    alike: only the script's own arithmetic can tell."""
    script, events, outcome, projected = paid_in_two()
    script.fate = Fate.PAID_AFTER_SUSPENSION  # fee on the whole amount, one payment
    report = books(script, events, outcome, projected)
    assert any("its script allows" in p for p in report.other), report.other


def test_a_payment_recorded_with_another_amount_fails():
    script, events, outcome, projected = paid_in_two()
    script.payments["T-0001-P1"] = HALF + 1
    report = books(script, events, outcome, projected)
    assert any("the driver sent" in p for p in report.other), report.other


@pytest.mark.parametrize("kind", [E.STAGE_REACHED, E.PAYMENT_RECORDED])
def test_a_lost_event_and_its_notice_fail_the_notice_check(kind):
    """The log lost the warning (or the first payment) and the notice it caused: what the log calls for then
    agrees with what was sent, but the script guarantees a warning and a receipt for every answered payment."""
    script, events, _, _ = paid_in_two()
    first = next(n for n, e in enumerate(events) if e.kind == kind and e.data.get("stage") in (None, "warning"))
    doctored = copy.deepcopy(events[:first] + events[first + 2 :])
    report = notices(script, doctored)
    assert any("its script guarantees" in p for p in report.lost), report.lost


def test_a_second_copy_is_explained_only_by_a_fault_around_the_first():
    """Sent while PostgreSQL was down (so not recorded sent), a copy comes again with its Message-ID: redelivered.
    Without a fault under way around the first copy, the same second copy is a duplicate."""
    script, events, _, _ = paid_in_two()
    step = f"{script.workflow_id}/0001-invoice_issued"
    first, again = Delivery(step, "<m@test>", 1000.0), Delivery(step, "<m@test>", 1051.0)
    outage = Fault("postgres stopped", 994.0, 1015.0)
    for faults, redelivered, duplicated in (([outage], 1, 0), ([Fault("worker killed", 900.0, 903.0)], 0, 1)):
        report = RunReport("unit")
        steps = [e.data["step"] for e in events if e.kind == E.NOTICE_SENT]
        deliveries = {f"{script.workflow_id}/{s}": [Delivery(s, f"<{s}@test>", 0.0)] for s in steps}
        deliveries[step] = [first, again]
        check_notices(report, script, events, deliveries, faults)
        assert (len(report.redelivered), len(report.duplicated)) == (redelivered, duplicated), report


def shared_pair(restore_at: float | None, second_fate: Fate = Fate.SETTLED_AT_LEGAL):
    """Two invoices of one customer holding ``eq-1``: the first suspended at 10 and paid at 20, the second
    suspended at 12 and closed at 30 (settled, or written off: then it keeps holding); the controller cut
    it at 10 and, with ``restore_at``, restored it then (recorded by the second invoice)."""
    first = ScriptedInvoice("S-1", "C-S", Fate.PAID_AFTER_SUSPENSION, AMOUNT, ["eq-1"], shares_with=["S-2"])
    second = ScriptedInvoice("S-2", "C-S", second_fate, AMOUNT, ["eq-1"], shares_with=["S-1"])
    closing = "settled" if second_fate == Fate.SETTLED_AT_LEGAL else "written_off"

    def log(suspended_at: float, closed_at: float, state: str, restored: bool) -> list[Event]:
        facts = [
            (E.STAGE_REACHED, {"stage": "suspend"}, suspended_at),
            (E.SERVICE_SUSPENDED, {}, suspended_at),
            (E.EQUIPMENT_SUSPENDED, {"equipment_id": "eq-1"}, suspended_at),
            (E.INVOICE_CLOSED, {"state": state}, closed_at),
        ]
        if restored:
            facts.append((E.EQUIPMENT_RESTORED, {"equipment_id": "eq-1"}, closed_at))
        return [Event(n, kind, data, at) for n, (kind, data, at) in enumerate(facts, start=1)]

    events = {"S-1": log(10, 20, "paid", False), "S-2": log(12, 30, closing, restore_at is not None)}
    peer = ControllerPeer(url="", secret="")
    peer.calls.append({"equipment_id": "eq-1", "action": "suspend", "at": 10.0})
    peer.states["eq-1"] = "suspended"
    if restore_at is not None:
        peer.calls.append({"equipment_id": "eq-1", "action": "restore", "at": restore_at})
        peer.states["eq-1"] = "active"
    return [first, second], events, peer


def equipment(group, events, peer) -> RunReport:
    report = RunReport("unit")
    stack = cast(FaultStack, SimpleNamespace(controller=SimpleNamespace(peer=peer)))
    check_equipment(report, stack, group, events, frozenset())
    return report


def test_shared_equipment_cut_once_and_restored_after_the_last_release_passes():
    assert equipment(*shared_pair(restore_at=31.0)).problems() == []


def test_a_restore_while_the_other_invoice_still_holds_fails():
    problems = equipment(*shared_pair(restore_at=25.0)).problems()
    assert any("restored at" in p and "while S-2" in p for p in problems), problems


def test_a_written_off_holder_keeps_the_equipment_cut():
    assert equipment(*shared_pair(restore_at=None, second_fate=Fate.WRITTEN_OFF)).problems() == []
    problems = equipment(*shared_pair(restore_at=31.0, second_fate=Fate.WRITTEN_OFF)).problems()
    assert any("while S-2" in p for p in problems) and any("left active, expected suspended" in p for p in problems)


def test_an_equipment_action_twice_in_a_row_fails():
    group, events, peer = shared_pair(restore_at=31.0)
    peer.calls.insert(1, {"equipment_id": "eq-1", "action": "suspend", "at": 12.0})
    report = equipment(group, events, peer)
    assert any("['suspend', 'suspend', 'restore']" in p for p in report.duplicated), report.problems()


def test_rungs_reached_together_need_only_the_highest_notice_and_apart_each_their_own():
    """A catch-up (a worker back after a kill): reminder and warning reached before any notice went out, only
    the warning told. With a notice sent between them (here the warning's own lost instead), each rung needs
    its notice."""
    script, events, _, _ = paid_in_two()

    def without_notice(kind: str) -> list[Event]:
        at = next(n for n, e in enumerate(events) if e.kind == E.NOTICE_SENT and e.data["kind"] == kind)
        doctored = copy.deepcopy(events[:at] + events[at + 1 :])
        for n, event in enumerate(doctored, start=1):
            event.sequence = n
        for n, notice in enumerate((e for e in doctored if e.kind == E.NOTICE_SENT), start=1):
            notice.data["step"] = f"{n:04d}-{notice.data['kind']}"
        return doctored

    assert notices(script, without_notice("reminder")).problems() == []
    assert any("warning notice missing" in p for p in notices(script, without_notice("warning")).lost)


def test_rungs_taken_together_and_cut_short_by_a_close_need_no_notice_but_one_rung_alone_does():
    """A catch-up of reminder and warning that a close overtook before it told the highest: neither is owed
    (the invoice tells a catch-up only at its end, and not once closed). The reminder alone, then the close,
    with its notice lost: owed, and missing."""
    script = ScriptedInvoice("T-0002", "C-T-0002", Fate.PAID_IN_TWO, AMOUNT, [])

    def log(*middle: tuple[EventKind, dict]) -> list[Event]:
        facts = [
            (E.INVOICE_ISSUED, {"invoice": {"amount_minor": AMOUNT}}),
            (E.NOTICE_SENT, {"step": "0001-invoice_issued", "kind": "invoice_issued"}),
            *middle,
            (E.INVOICE_CLOSED, {"state": "factored"}),
        ]
        return [Event(n, kind, data, float(n)) for n, (kind, data) in enumerate(facts, start=1)]

    together = log((E.STAGE_REACHED, {"stage": "reminder"}), (E.STAGE_REACHED, {"stage": "warning"}))
    assert not [p for p in notices(script, together).lost if "reminder" in p or "warning" in p]
    alone = log((E.STAGE_REACHED, {"stage": "reminder"}))
    assert any("reminder notice missing" in p for p in notices(script, alone).lost)


def test_a_fee_reversed_by_a_payments_value_date_counts_as_no_fee_in_the_log():
    """A payment booked after the late fee whose money arrived before it takes the fee back: the log's reader
    must see no fee, as the workflow does (a slow run turns a payment made early into one booked late)."""
    facts = [
        (E.INVOICE_ISSUED, {"invoice": {"amount_minor": AMOUNT}}),
        (E.LATE_FEE_CHARGED, {"amount_minor": FEE}),
        (E.PAYMENT_RECORDED, {"payment_id": "T-0001-P1", "amount_minor": AMOUNT}),
        (E.LATE_FEE_REVERSED, {"amount_minor": FEE}),
    ]
    events = [Event(n, kind, data) for n, (kind, data) in enumerate(facts, 1)]
    assert money_in_log(events) == Money(paid=AMOUNT, fees=0, credited=0, written_off=0, balance=0)
    assert money_in_log(events[:-1]).fees == FEE


def test_a_small_balance_written_off_counts_in_the_log():
    """A residue under the tolerance is written off by the workflow: a reader of the log sees it written off, not owed."""
    facts = [
        (E.INVOICE_ISSUED, {"invoice": {"amount_minor": AMOUNT}}),
        (E.PAYMENT_RECORDED, {"payment_id": "T-0001-P1", "amount_minor": AMOUNT - 1}),
        (E.SMALL_BALANCE_WRITTEN_OFF, {"amount_minor": 1}),
    ]
    events = [Event(n, kind, data) for n, (kind, data) in enumerate(facts, 1)]
    assert money_in_log(events) == Money(paid=AMOUNT - 1, fees=0, credited=0, written_off=1, balance=0)
