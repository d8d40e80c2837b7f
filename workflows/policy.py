"""Pure functions of the dunning policy: when each step is due and what it costs.

No I/O and no clock: every function takes ``now`` or the ledger it needs, so it is unit-tested
without Temporal and is deterministic inside the workflow.
"""

from __future__ import annotations

import calendar
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from workflows import interest, ladder
from workflows.ladder import StepKind
from workflows.models import Fee, Invoice, InvoiceState, Stage, StageAction, format_money
from workflows.state import InvoiceLedger, Step


def local_date(invoice: Invoice, moment: datetime) -> date:
    """The calendar date at ``moment`` in the client's time zone."""
    return moment.astimezone(ZoneInfo(invoice.time_zone)).date()


def local_moment(invoice: Invoice, day: date) -> datetime:
    """``day`` at the policy's due time in the client's time zone."""
    return datetime.combine(day, invoice.policy.due_time, tzinfo=ZoneInfo(invoice.time_zone))


def due_moment(invoice: Invoice) -> datetime:
    """The moment the escalation clock starts: the due date at the policy's due time, local."""
    return local_moment(invoice, invoice.due_date)


def stage_due_at(invoice: Invoice, stage: Stage, paused: timedelta) -> datetime:
    """When ``stage`` is due, shifted by all the time escalation was paused."""
    return due_moment(invoice) + stage.offset + paused


def stage_delay(ledger: InvoiceLedger) -> timedelta:
    """How far the stages still to come moved: the pauses, and a catch-up or an imported last notice
    (``InvoiceLedger.stages_moved_by``; monthly late fees count months of delay and do not move with it)."""
    return ledger.paused + ledger.stages_moved_by


def stage_step(invoice: Invoice, stage: Stage, paused: timedelta) -> Step:
    """The step that climbs to ``stage``, due when the stage is."""
    return Step(StepKind.STAGE, stage_due_at(invoice, stage, paused), stage.action.value, ladder.RUNGS[stage.action].windowed)


def next_step(ledger: InvoiceLedger, now: datetime, window_applies: bool) -> Step | None:
    """The earliest of: next stage, next monthly late fee, instalment check, renewed legal review, discount end;
    none while a dispute or the customer's pause (ops) holds escalation.

    ``window_applies``: steps that talk to the client wait for its sending window (not for invoices
    started before the window existed).
    """
    invoice = ledger.invoice
    if ledger.escalation.closed or ledger.dispute or ledger.customer_pause:
        return None
    if ledger.plan:
        index = ledger.plan.checked
        if index >= len(ledger.plan.plan.instalments):
            return None
        check = _between_rungs(StepKind.INSTALMENT, instalment_check_at(ledger, index), f"instalment {index + 1} check")
        return in_window(ledger, check, window_applies)
    candidates = []
    if ledger.next_stage_index < len(invoice.policy.stages) and not ledger.escalation_stopped:
        stage = invoice.policy.stages[ledger.next_stage_index]
        step = stage_step(invoice, stage, stage_delay(ledger))
        held = cut_allowed_from(ledger) if stage.action == StageAction.SUSPEND and ledger.money_rules else None
        if held:
            step = replace(step, at=max(step.at, held))
        candidates.append(step)
    fee_at = late_fee_due_at(ledger)
    if fee_at and ledger.principal_outstanding_minor > 0:
        candidates.append(_between_rungs(StepKind.LATE_FEE, fee_at, f"late fee {len(ledger.fees) + 1}"))
    posting_at = interest_posting_due_at(ledger)
    if posting_at:
        candidates.append(_between_rungs(StepKind.INTEREST, posting_at, "interest posting (month end)"))
    if ledger.legal_review_again_at:
        candidates.append(_between_rungs(StepKind.LEGAL_REVIEW, ledger.legal_review_again_at, "legal review again"))
    discount_ends = discount_ends_at(ledger)
    if discount_ends and discount_ends > now:
        candidates.append(_between_rungs(StepKind.DISCOUNT_ENDS, discount_ends, "early-payment discount ends"))
    return min((in_window(ledger, step, window_applies) for step in candidates), key=lambda s: s.at, default=None)


def _between_rungs(kind: StepKind, at: datetime, label: str) -> Step:
    return Step(kind, at, label, windowed=kind in ladder.WINDOWED_BETWEEN_RUNGS)


def in_window(ledger: InvoiceLedger, step: Step, window_applies: bool) -> Step:
    """Move a step that talks to the client to the next opening of its sending window."""
    if not window_applies or not step.windowed:
        return step
    at = next_sending_moment(ledger.invoice, step.at, frozenset(ledger.public_holidays))
    return step if at == step.at else replace(step, at=at, label=f"{step.label} (next sending window)")


def suspension_at(ledger: InvoiceLedger, window_applies: bool) -> datetime | None:
    """When the suspend stage will cut the service, for the notices that announce it (None without one).

    Never sooner than the moment a delivered ultimatum named (the safety interlock).
    """
    try:
        suspend = ledger.invoice.policy.stage(StageAction.SUSPEND)
    except KeyError:
        return None
    at = in_window(ledger, stage_step(ledger.invoice, suspend, stage_delay(ledger)), window_applies).at
    if ledger.money_rules and ledger.cut_announced_for:
        at = max(at, ledger.cut_announced_for)
    return at


# --- the safety interlock for cuts: no cut without a delivered ultimatum naming its moment -----


def notice_counts_from(now: datetime) -> datetime:
    """The moment an ultimatum sent ``now`` counts from: the minute it goes out."""
    return now.replace(second=0, microsecond=0)


def cut_to_announce(ledger: InvoiceLedger, now: datetime, window_applies: bool) -> datetime | None:
    """The cut moment an ultimatum sent now names: the suspend stage's moment, but never sooner than the
    policy's minimum notice from now (so never a past moment), in the sending window. None without a suspend stage."""
    stage_moment = suspension_at(ledger, window_applies)
    if stage_moment is None:
        return None
    earliest = max(now, notice_counts_from(now) + minimum_notice(ledger))
    if earliest <= stage_moment:
        return stage_moment
    return next_sending_moment(ledger.invoice, earliest, frozenset(ledger.public_holidays)) if window_applies else earliest


def cut_allowed_from(ledger: InvoiceLedger) -> datetime | None:
    """The earliest moment the suspend stage may cut: the moment a delivered ultimatum named, at least the
    minimum notice after it went out; a notice period after an attempt that was not delivered. None: nothing
    holds the stage back (when due, it sends the ultimatum first if none was delivered)."""
    notice = minimum_notice(ledger)
    if ledger.cut_announced_for and ledger.cut_notice_from:
        return max(ledger.cut_announced_for, ledger.cut_notice_from + notice)
    if ledger.cut_announcement_tried_at:
        return ledger.cut_announcement_tried_at + notice
    return None


def minimum_notice(ledger: InvoiceLedger) -> timedelta:
    """The notice a cut needs: the policy's (at least a day), or the start input's for a real-time test stack."""
    return ledger.minimum_notice_override or ledger.invoice.policy.minimum_notice


def cut_announced(ledger: InvoiceLedger, now: datetime) -> bool:
    """Whether a delivered ultimatum allows the cut now."""
    allowed = cut_allowed_from(ledger)
    return ledger.cut_announced_for is not None and allowed is not None and allowed <= now


def is_sending_day(invoice: Invoice, day: date, holidays: frozenset[date]) -> bool:
    """Whether notices may go out on this local date: an allowed weekday that is no public holiday."""
    window = invoice.policy.sending_window
    if window is None:
        return True
    if day.weekday() not in window.weekdays:
        return False
    return not (window.skip_public_holidays and day in holidays)


def next_sending_moment(invoice: Invoice, moment: datetime, holidays: frozenset[date]) -> datetime:
    """``moment`` if it falls inside the sending window, else the window's next opening (client's zone).

    ``holidays`` are the public holidays of the client's country (looked up by an activity: the
    calendar is outside data, so the workflow keeps what it was told).
    """
    window = invoice.policy.sending_window
    if window is None:
        return moment
    zone = ZoneInfo(invoice.time_zone)
    day = moment.astimezone(zone).date()
    for _ in range(800):  # a window with at least one weekday opens within two years, holidays or not
        if is_sending_day(invoice, day, holidays):
            opens = datetime.combine(day, window.opens, tzinfo=zone)
            closes = datetime.combine(day, window.closes, tzinfo=zone)
            if moment < closes:
                return max(moment, opens)
        day += timedelta(days=1)
    raise ValueError("the sending window never opens")


def holiday_years_needed(invoice: Invoice, now: datetime) -> range:
    """The years whose holidays the workflow should know now: this one and the next, if the window skips them."""
    window = invoice.policy.sending_window
    if window is None or not window.skip_public_holidays or not invoice.country:
        return range(0)
    year = local_date(invoice, now).year
    return range(year, year + 2)


def add_months(moment: datetime, months: int) -> datetime:
    """Same day-of-month ``months`` later, clamped to the month's last day."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def late_fee_due_at(ledger: InvoiceLedger) -> datetime | None:
    """When the next late fee is due, or None if no further fee applies.

    The first fee comes with the late-fee stage; fee n (n >= 2) when the n-th month of delay
    starts (due moment + n-1 months, shifted by pauses), for percentage fees only.
    """
    invoice = ledger.invoice
    try:
        stage = invoice.policy.stage(StageAction.LATE_FEE)
    except KeyError:
        return None
    number = len(ledger.fees) + 1
    if number == 1:
        return None  # the first fee is charged by its stage
    if ledger.escalation_stopped or below_escalation_minimum(ledger):
        return None
    if late_fee_amount(ledger, number) <= 0:
        return None  # nothing left to charge on: no step, or the loop would spin on it
    stage_at = stage_due_at(invoice, stage, ledger.paused)
    month_start = add_months(due_moment(invoice), number - 1) + ledger.paused
    return max(stage_at, month_start)


def late_fee_amount(ledger: InvoiceLedger, number: int) -> int:
    """Fee ``number``: percent of the unpaid principal, plus the fixed fee with the first one.

    Within the policy's cap on late charges, and nothing once charges stopped (``late_charges_stop``).
    """
    terms = ledger.invoice.terms
    if interest_applies(ledger):
        amount = compensation_minor(ledger) if number == 1 else 0  # statutory interest instead of the percent fee
    else:
        percent_part = Decimal(ledger.principal_outstanding_minor) * terms.late_fee_percent_per_month / 100
        amount = int(percent_part.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        amount += terms.fixed_late_fee_minor if number == 1 else 0
    if not ledger.money_rules:
        return amount
    return within_cap(ledger, amount)


def within_cap(ledger: InvoiceLedger, amount_minor: int) -> int:
    """What of a late charge (a fee, or interest) may be charged: none once charges stopped, else up to the cap."""
    if ledger.late_charges_stopped:
        return 0
    return max(0, min(amount_minor, late_charges_cap_minor(ledger) - ledger.late_charges_minor))


def late_charges_cap_minor(ledger: InvoiceLedger) -> int:
    """The most late charges may reach: the policy's percentage of the invoice amount."""
    cap = Decimal(ledger.invoice.amount_minor) * ledger.invoice.policy.late_charges_cap_percent / 100
    return int(cap.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def late_charges_stop(ledger: InvoiceLedger) -> str | None:
    """Why late charges stop now for good (None: they go on).

    The cap was reached; the invoice went to the agency (if the policy says so); legal action (a
    settlement included: its amount is final). A dispute or a payment plan holds them meanwhile, and
    a closed invoice charges nothing.
    """
    if not ledger.money_rules or ledger.late_charges_stopped or not _charges_late_fees(ledger.invoice):
        return None
    if ledger.escalation == InvoiceState.LEGAL_ACTION:
        return "legal action"
    if ledger.handed_to_agency and ledger.invoice.policy.charges_stop_at_agency:
        return "handed to the agency"
    if (ledger.fees or ledger.interest_minor) and ledger.late_charges_minor >= late_charges_cap_minor(ledger):
        return "cap reached"
    return None


def _charges_late_fees(invoice: Invoice) -> bool:
    return any(s.action == StageAction.LATE_FEE for s in invoice.policy.stages)


# --- statutory interest (docs/interest.md) ------------------------------------------------------


def interest_applies(ledger: InvoiceLedger) -> bool:
    """The policy charges statutory interest instead of the percent-per-month fee (invoices started since the patch)."""
    return ledger.interest_rules and ledger.invoice.policy.interest is not None


def interest_accrues(ledger: InvoiceLedger) -> bool:
    """Interest runs now: started at the late-fee stage, and no freeze (dispute, plan, charges stopped, closed)."""
    return (
        interest_applies(ledger)
        and ledger.interest.accrues_from is not None
        and not ledger.late_charges_stopped
        and ledger.dispute is None
        and ledger.plan is None
        and not ledger.escalation.closed
    )


def compensation_minor(ledger: InvoiceLedger) -> int:
    """The fixed compensation for recovery costs: the policy's, else the rates file's for the currency (0 if none)."""
    settings = ledger.invoice.policy.interest
    if settings is not None and settings.compensation_minor is not None:
        return settings.compensation_minor
    rates = ledger.interest.rates
    return (rates.compensation_minor or 0) if rates else 0


def interest_due(ledger: InvoiceLedger, today: date) -> interest.Accrual | None:
    """The interest accrued since the last posting up to ``today`` (exclusive), within the cap; None if none runs."""
    settings = ledger.invoice.policy.interest
    first_day = ledger.interest.accrues_from
    if not interest_accrues(ledger) or settings is None or first_day is None or first_day >= today:
        return None
    accrued = interest.accrue(
        ledger.principal_outstanding_minor, first_day, today, settings.margin_percent, ledger.interest.rates
    )
    capped = within_cap(ledger, accrued.amount_minor) if ledger.money_rules else accrued.amount_minor
    return accrued if capped == accrued.amount_minor else accrued.model_copy(update={"amount_minor": capped})


def interest_accruing_minor(ledger: InvoiceLedger, now: datetime) -> int:
    """Interest accrued since the last posting up to today, not yet owed: what status and snapshots show."""
    due = interest_due(ledger, local_date(ledger.invoice, now))
    return due.amount_minor if due else 0


def interest_posting_due_at(ledger: InvoiceLedger) -> datetime | None:
    """The month-end posting: the first day of the month after the first day not yet posted, at the due time."""
    first_day = ledger.interest.accrues_from
    if not interest_accrues(ledger) or first_day is None or ledger.principal_outstanding_minor <= 0:
        return None
    if within_cap(ledger, 1) <= 0 and ledger.money_rules:
        return None
    month_after = date(first_day.year + first_day.month // 12, first_day.month % 12 + 1, 1)
    return local_moment(ledger.invoice, month_after)


# --- small balances --------------------------------------------------------------------------


def small_balance_residue(ledger: InvoiceLedger) -> int:
    """What is left to write off after a payment: a balance below the policy's tolerance (0: none)."""
    tolerance = ledger.invoice.policy.small_balance_tolerance_minor
    if not ledger.money_rules or not 0 < ledger.net_minor < tolerance:
        return 0
    return ledger.net_minor


def below_escalation_minimum(ledger: InvoiceLedger) -> bool:
    """The balance is below the policy's minimum for escalating beyond the reminder."""
    return ledger.money_rules and ledger.balance_minor < ledger.invoice.policy.minimum_balance_to_escalate_minor


def escalation_stops_at(ledger: InvoiceLedger, stage: Stage) -> bool:
    """Whether climbing to ``stage`` stops here for a small balance: only a courtesy note or a reminder goes."""
    return stage.action not in (StageAction.COURTESY, StageAction.REMINDER) and below_escalation_minimum(ledger)


def recovered_in_full(ledger: InvoiceLedger) -> bool:
    """Recoveries after a write-off cover what was written off."""
    return ledger.written_off_minor > 0 and ledger.recovered_minor >= ledger.written_off_minor


# --- disputes --------------------------------------------------------------------------------


def dispute_shift(ledger: InvoiceLedger, opened_at: datetime, now: datetime, rejected: bool) -> timedelta:
    """How far a resolved dispute moves the stages still to come.

    Upheld: by its whole length. Rejected: only by how long it held a step that fell due during it,
    so a stage not yet due when it was rejected does not move.
    """
    if not (rejected and ledger.money_rules):
        return now - opened_at
    stages = ledger.invoice.policy.stages
    due = []
    if ledger.next_stage_index < len(stages) and not ledger.escalation_stopped:
        due.append(stage_due_at(ledger.invoice, stages[ledger.next_stage_index], stage_delay(ledger)))
    fee_at = late_fee_due_at(ledger)
    if fee_at:
        due.append(fee_at)
    if not due:
        return timedelta(0)
    return max(timedelta(0), now - max(opened_at, min(due)))


def customer_pause_shift(ledger: InvoiceLedger, now: datetime) -> timedelta:
    """How far the end of the customer's pause moves the steps: its length, less what the invoice's own pause
    (an open dispute, a payment plan) counts for itself when it ends."""
    assert ledger.customer_pause is not None
    since = ledger.customer_pause.since
    own = ledger.dispute.opened_at if ledger.dispute else ledger.plan.agreed_at if ledger.plan else None
    return (now if own is None else max(since, min(own, now))) - since


def days_overdue(invoice: Invoice, now: datetime) -> int:
    """Whole days since the due date in the client's time zone (0 before it)."""
    return max(0, (local_date(invoice, now) - invoice.due_date).days)


def discount_deadline(invoice: Invoice) -> date | None:
    """Last local date on which the early-payment discount applies."""
    offer = invoice.terms.early_payment_discount
    return invoice.issue_date + timedelta(days=offer.within_days) if offer else None


def discount_ends_at(ledger: InvoiceLedger) -> datetime | None:
    """When an unused early-payment discount lapses (the morning after its last day)."""
    deadline = discount_deadline(ledger.invoice)
    if deadline is None or ledger.discount_minor:
        return None
    return local_moment(ledger.invoice, deadline + timedelta(days=1))


def discount_available(ledger: InvoiceLedger, now: datetime) -> int:
    """The early-payment discount the client gets if it pays in full now (0 if none)."""
    invoice = ledger.invoice
    offer = invoice.terms.early_payment_discount
    deadline = discount_deadline(invoice)
    if not offer or deadline is None or ledger.discount_minor or local_date(invoice, now) > deadline:
        return 0
    discount = Decimal(invoice.amount_minor) * offer.percent / 100
    return int(discount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- value dates and allocation --------------------------------------------------------------


def paid_in_full_at(ledger: InvoiceLedger, now: datetime) -> datetime:
    """When the money of every payment recorded had arrived: the latest value date (``now`` for a payment
    recorded before value dates were kept)."""
    return max((ledger.arrived_at.get(payment_id, now) for payment_id in ledger.payments), default=now)


def late_fees_paid_in_time(ledger: InvoiceLedger) -> list[Fee]:
    """The late fees charged when, counting money by its value date, the principal was already paid: taken back.

    For each fee in charge order: the payments whose money had arrived by its moment, allocated as the policy
    says to the principal (less credits and the discount) and the fees kept before it, covered the principal.
    A payment recorded before value dates were kept is not counted: when its money arrived is unknown.
    """
    invoice = ledger.invoice
    principal = max(0, invoice.amount_minor - ledger.credited_minor - ledger.discount_minor)
    kept_minor, reversed_fees = 0, []
    for fee in ledger.fees:
        arrived = sum(
            amount
            for payment_id, amount in ledger.payments.items()
            if payment_id in ledger.arrived_at and ledger.arrived_at[payment_id] <= fee.charged_at
        )
        principal_paid, _ = invoice.policy.allocation.apportion(principal, kept_minor, arrived)
        if principal_paid >= principal:
            reversed_fees.append(fee)
        else:
            kept_minor += fee.amount_minor
    return reversed_fees


def interest_paid_of(ledger: InvoiceLedger, amount_minor: int) -> int:
    """Of the late charges the payment of ``amount_minor`` just recorded paid (``allocation_of``), the statutory
    interest: late charges are paid fees first, then interest."""
    principal = max(0, ledger.invoice.amount_minor - ledger.deducted_minor)
    split = ledger.invoice.policy.allocation.apportion

    def interest_paid(paid: int) -> int:
        charges_paid = split(principal, ledger.late_charges_minor, paid)[1]
        return max(0, charges_paid - ledger.fees_minor)

    return interest_paid(ledger.paid_minor) - interest_paid(ledger.paid_minor - amount_minor)


def allocation_of(ledger: InvoiceLedger, amount_minor: int) -> tuple[int, int]:
    """What the payment of ``amount_minor`` just recorded paid: of the invoice amount, and of late fees
    (``DunningPolicy.allocation``; statutory interest counts with the fees); the rest, if any, is an overpayment."""
    principal = max(0, ledger.invoice.amount_minor - ledger.deducted_minor)
    split = ledger.invoice.policy.allocation.apportion
    after = split(principal, ledger.late_charges_minor, ledger.paid_minor)
    before = split(principal, ledger.late_charges_minor, ledger.paid_minor - amount_minor)
    return after[0] - before[0], after[1] - before[1]


def instalment_check_at(ledger: InvoiceLedger, index: int) -> datetime:
    """When instalment ``index`` counts as missed: the morning after its due date."""
    assert ledger.plan is not None
    due = ledger.plan.plan.instalments[index].due_date
    return local_moment(ledger.invoice, due + timedelta(days=1))


def plan_amount_expected(ledger: InvoiceLedger, instalments: int) -> int:
    """The amount the client must have paid since the plan after ``instalments`` instalments."""
    assert ledger.plan is not None
    return sum(i.amount_minor for i in ledger.plan.plan.instalments[:instalments])


def plan_amount_received(ledger: InvoiceLedger) -> int:
    assert ledger.plan is not None
    return ledger.paid_minor + ledger.credited_minor - ledger.plan.settled_at_agreement_minor


def legal_summary(ledger: InvoiceLedger, now: datetime) -> dict[str, Any]:
    """Cost-benefit summary for the human deciding at legal review (technique 18)."""
    invoice, policy = ledger.invoice, ledger.invoice.policy
    balance, cost, limit = ledger.balance_minor, policy.cost_of_legal_action_minor, policy.small_claims_limit_minor
    assert cost is not None and limit is not None, "an invoice with a legal review has its thresholds"
    return {
        "balance_minor": balance,
        "fees_minor": ledger.fees_minor,
        "paid_minor": ledger.paid_minor,
        "days_overdue": days_overdue(invoice, now),
        "cost_of_action_minor": cost,
        "net_if_recovered_minor": balance - cost,
        "small_claims_limit_minor": limit,
        "small_claims_eligible": balance <= limit,
        "worth_suing": balance > cost,
        "summary": (
            f"Owed {format_money(balance, invoice.currency)} after {days_overdue(invoice, now)} days; "
            f"action costs about {format_money(cost, invoice.currency)}; "
            + ("within" if balance <= limit else "above")
            + " the small-claims limit."
        ),
    }
