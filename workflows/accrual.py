"""Statutory interest in the invoice workflow: when it is posted, frozen and resumed (docs/interest.md).

Interest accrues day by day from the day after the due date once the late-fee stage is reached,
and is posted, as an ``interest_accrued`` event that adds it to the balance, at each stage, at the
month end, before each payment (up to its value date), before a dispute, a payment plan, a legal
decision, a sale to a factor, and when late charges stop. Between postings, status and snapshots
show what has accrued so far (``interest_accruing_minor``), which is not yet owed. The rates come
from the ``interest_rates`` local activity, asked at most once a day while the current half-year has
no rate; its answer is kept in the ledger (so in the history), never read on replay.
"""

from __future__ import annotations

from datetime import date, timedelta

from temporalio import workflow

from workflows import contracts, policy
from workflows.events import InterestAccrued
from workflows.interest import InterestRatesRequest, accrue, half_year_of
from workflows.models import format_money
from workflows.outbox import Outbox
from workflows.state import InvoiceLedger


def today(ledger: InvoiceLedger) -> date:
    return policy.local_date(ledger.invoice, workflow.now())


async def learn_rates(ledger: InvoiceLedger) -> None:
    """Ask the rates file for the currency's rates: once at the start, then at most once a day while the
    current half-year has none (ops add it)."""
    if not policy.interest_applies(ledger) or ledger.escalation.closed or ledger.late_charges_stopped:
        return
    state, now_day = ledger.interest, today(ledger)
    known = state.rates is not None and state.rates.rate_for(half_year_of(now_day)) is not None
    if known or state.rates_asked_on == now_day:
        return
    state.rates = await workflow.execute_local_activity_method(
        contracts.InterestRates.interest_rates,
        InterestRatesRequest(currency=ledger.invoice.currency),
        start_to_close_timeout=timedelta(seconds=30),
        summary=f"Interest reference rates for {ledger.invoice.currency}",
    )
    state.rates_asked_on = now_day


def start(outbox: Outbox) -> None:
    """The late-fee stage: interest runs from the day after the due date; what accrued since is posted now."""
    ledger = outbox.ledger
    if ledger.interest.accrues_from is None:
        ledger.interest.accrues_from = ledger.invoice.due_date + timedelta(days=1)
    post(outbox, "late-fee stage")


def post(outbox: Outbox, occasion: str, through: date | None = None) -> None:
    """Post the interest accrued since the last posting up to ``through`` (exclusive; default today), if any runs."""
    ledger = outbox.ledger
    state = ledger.interest
    end = today(ledger) if through is None else max(min(through, today(ledger)), state.accrues_from or through)
    due = policy.interest_due(ledger, end)
    if due is None:
        return
    first_day, principal = state.accrues_from, ledger.principal_outstanding_minor
    assert first_day is not None  # interest_due answers only while interest runs
    state.accrues_from = end
    settings = ledger.invoice.policy.interest
    assert settings is not None
    exact = accrue(principal, first_day, end, settings.margin_percent, state.rates).amount_minor
    if not due.amount_minor and all(p.rate_percent is not None for p in due.periods):
        return  # nothing owed, nothing to tell
    state.posted_minor += due.amount_minor
    state.postings += 1
    state.last_day_posted = end - timedelta(days=1)
    state.last_rate_percent = due.periods[-1].rate_percent
    outbox.record(
        InterestAccrued(
            amount_minor=due.amount_minor,
            principal_minor=principal,
            first_day=first_day,
            last_day=end - timedelta(days=1),
            periods=due.periods,
            capped=due.amount_minor < exact,
            interest_minor=state.posted_minor,
            occasion=occasion,
        )
    )
    money = format_money(due.amount_minor, ledger.invoice.currency)
    ledger.remember(workflow.now(), f"Interest posted ({occasion}): {money} for {first_day} to {end - timedelta(days=1)}")
    for period in due.periods:
        if period.rate_percent is None:
            workflow.logger.warning("no interest for %s to %s: %s", period.first_day, period.last_day, period.source)


def forgo(ledger: InvoiceLedger) -> None:
    """A payment plan is agreed for the balance the client was told: interest since the last posting is not
    charged (the client could not know it to the day), and none accrues while the plan holds."""
    if ledger.interest.accrues_from is not None and policy.interest_applies(ledger):
        ledger.interest.accrues_from = max(ledger.interest.accrues_from, today(ledger))


def resume(ledger: InvoiceLedger) -> None:
    """A freeze ended (dispute resolved, instalment missed): interest runs again from today, not over the pause."""
    if ledger.interest.accrues_from is not None and policy.interest_applies(ledger):
        ledger.interest.accrues_from = max(ledger.interest.accrues_from, today(ledger))

