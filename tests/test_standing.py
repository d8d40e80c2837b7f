"""Customer standing from the projections on a real PostgreSQL: support, new orders, deposits, reasons."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from activities.ledger import LedgerActivities, create_pool
from activities.projections import catch_up
from activities.standing import CustomerStanding, StandingFileError, StandingSettings, customer_standing
from tests.event_stories import Story, at, invoice
from workflows.models import EventKind, InvoiceState, StageAction

AS_OF = date(2026, 6, 30)
DEFAULTS = StandingSettings()
R, W, F, U, S = (StageAction.REMINDER, StageAction.WARNING, StageAction.LATE_FEE, StageAction.ULTIMATUM,
                 StageAction.SUSPEND)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_url)
    yield pool
    await pool.close()


async def project(pool: asyncpg.Pool, *stories: Story) -> None:
    await LedgerActivities(pool).append_events([e for story in stories for e in story.events])
    await catch_up(pool)


async def standing(pool: asyncpg.Pool, settings: StandingSettings = DEFAULTS, customer: str = "CUST-1") -> CustomerStanding:
    return await customer_standing(pool, customer, settings, as_of=AS_OF)


def suspended(invoice_id: str, service: str | None, due: date = date(2026, 6, 1)) -> Story:
    """An invoice of 1,000.00 EUR suspended 20 days after its due date."""
    story = Story(invoice(invoice_id, "CUST-1", 100_000, due - timedelta(days=14), due, service=service), at(due.month, 1))
    moments = [(stage, at(due.month, due.day) + timedelta(days=days)) for stage, days in
               ((R, 1), (W, 5), (F, 10), (U, 15), (S, 20))]
    return story.stages(*moments).service(EventKind.SERVICE_SUSPENDED, moments[-1][1])


async def test_a_customer_without_invoices_may_do_everything(pool):
    result = await standing(pool)
    assert (result.support_allowed, result.new_orders_allowed, result.deposit_required) == (True, True, False)
    assert result.reasons == [] and result.blocked_services == [] and result.amounts == []


async def test_suspension_of_an_invoice_for_a_service_blocks_only_that_service(pool):
    await project(pool, suspended("INV-1", "hosting", due=date(2026, 6, 5)))
    result = await standing(pool)
    assert result.support_allowed and result.blocked_services == ["hosting"]
    assert not result.support_allowed_for("hosting") and result.support_allowed_for("email")
    assert result.suspended_invoices == ["INV-1"]
    assert result.reasons == [
        "invoice INV-1 is suspended (hosting)",
        "invoice INV-1 reached suspended: new orders stop from ultimatum",
    ]
    assert not result.new_orders_allowed and not result.deposit_required  # 25 days overdue: not yet more than 30


async def test_suspension_of_an_invoice_without_a_service_blocks_all_support(pool):
    await project(pool, suspended("INV-1", "hosting", due=date(2026, 6, 5)), suspended("INV-2", None, due=date(2026, 6, 5)))
    result = await standing(pool)
    assert not result.support_allowed and not result.support_allowed_for("email")
    assert result.blocked_services == ["hosting"]
    assert "invoice INV-2 is suspended (all services)" in result.reasons


async def test_payment_in_full_lifts_the_block_a_write_off_does_not(pool):
    paid = suspended("INV-1", "hosting", due=date(2026, 6, 5))
    paid.paid(at(6, 28), 100_000, "p1", 0).closed(at(6, 28), "paid", paid=100_000)
    paid.service(EventKind.SERVICE_RESTORED, at(6, 28))
    await project(pool, paid)
    result = await standing(pool)
    assert (result.support_allowed, result.blocked_services, result.new_orders_allowed) == (True, [], True)
    assert result.reasons == [] and result.suspended_invoices == []

    written_off = suspended("INV-2", None, due=date(2026, 6, 5))
    written_off.add(EventKind.LEGAL_DECISION, at(6, 29), decision="write_off", settle_amount_minor=None, note="",
                    balance_minor=100_000)
    await project(pool, written_off.closed(at(6, 29), "written_off", written_off=100_000))
    result = await standing(pool)
    assert not result.support_allowed and result.reasons == ["invoice INV-2 is suspended (all services)"]
    assert result.new_orders_allowed  # no open invoice is escalated


@pytest.mark.parametrize(
    ("stage", "block_at", "allowed"),
    [(W, "ultimatum", True), (U, "ultimatum", False), (R, "warned", True), (W, "warned", False), (S, "legal_review", True)],
)
async def test_new_orders_stop_from_the_configured_stage(pool, stage, block_at, allowed):
    story = Story(invoice("INV-1", "CUST-1", 100_000, date(2026, 6, 1), date(2026, 6, 15)), at(6, 1))
    await project(pool, story.stages((stage, at(6, 25))))
    settings = StandingSettings.model_validate({"customers": {"CUST-1": {"new_orders_block_at": block_at}}})
    result = await standing(pool, settings)
    assert result.new_orders_allowed is allowed
    state = {W: "warned", U: "ultimatum", R: "reminded", S: "suspended"}[stage]
    expected = [] if allowed else [f"invoice INV-1 reached {state}: new orders stop from {block_at}"]
    assert result.reasons == expected
    assert (await standing(pool, settings, customer="CUST-2")).new_orders_allowed


@pytest.mark.parametrize(("days_late", "required"), [(30, False), (31, True)])
async def test_deposit_after_an_invoice_more_than_n_days_overdue(pool, days_late, required):
    story = Story(invoice("INV-1", "CUST-1", 100_000, date(2026, 4, 1), date(2026, 4, 15)), at(4, 1))
    paid_at = at(4, 15) + timedelta(days=days_late)
    await project(pool, story.paid(paid_at, 100_000, "p1", 0).closed(paid_at, "paid", paid=100_000))
    result = await standing(pool)
    assert result.deposit_required is required and result.new_orders_allowed and result.support_allowed
    if required:
        assert result.deposit_percent == Decimal(50)
        assert result.reasons == [
            "invoice INV-1 was 31 days overdue (more than 30) within the last 365 days:"
            " a 50% deposit is required before new work"
        ]
    else:
        assert result.deposit_percent is None and result.reasons == []


async def test_deposit_rules_look_back_a_year_and_follow_the_customer_settings(pool):
    old = Story(invoice("OLD", "CUST-1", 10_000, date(2025, 4, 1), date(2025, 4, 15)), at(4, 1, 2025))
    old.paid(at(6, 25, 2025), 10_000, "p", 0).closed(at(6, 25, 2025), "paid", paid=10_000)  # 71 days late, 370 days ago
    current = Story(invoice("NOW", "CUST-1", 10_000, date(2026, 5, 15), date(2026, 5, 29)), at(5, 15))  # 32 days late
    await project(pool, old)
    assert not (await standing(pool)).deposit_required
    await project(pool, current)
    settings = StandingSettings.model_validate(
        {"defaults": {"deposit_percent": 40}, "customers": {"CUST-1": {"deposit_percent": "25.5"}}}
    )
    result = await standing(pool, settings)
    assert result.deposit_required and result.deposit_percent == Decimal("25.5")
    assert result.reasons == [
        "invoice NOW is 32 days overdue (more than 30) within the last 365 days:"
        " a 25.5% deposit is required before new work"
    ]
    stricter = StandingSettings.model_validate({"customers": {"CUST-1": {"deposit_after_overdue_days": 60}}})
    assert not (await standing(pool, stricter)).deposit_required
    assert (await customer_standing(pool, "CUST-1", stricter, as_of=date(2026, 7, 29))).deposit_required  # 61 days


@pytest.mark.parametrize(("limit", "allowed"), [(100_000, True), (99_999, False)])
async def test_credit_limit_per_currency(pool, limit, allowed):
    eur = Story(invoice("EUR-1", "CUST-1", 100_000, date(2026, 6, 20), date(2026, 7, 4)), at(6, 20))
    ron = Story(invoice("RON-1", "CUST-1", 500_000, date(2026, 6, 20), date(2026, 7, 4), currency="RON"), at(6, 20))
    await project(pool, eur, ron)
    settings = StandingSettings.model_validate(
        {"defaults": {"credit_limit_minor": {"RON": 1}}, "customers": {"CUST-1": {"credit_limit_minor": {"EUR": limit}}}}
    )
    assert settings.for_customer("CUST-1").credit_limit_minor == {"RON": 1, "EUR": limit}
    result = await standing(pool, settings)
    assert not result.new_orders_allowed and result.support_allowed and not result.deposit_required
    expected = [] if allowed else ["open balance 1000.00 EUR exceeds the credit limit 999.99 EUR"]
    assert result.reasons == [*expected, "open balance 5000.00 RON exceeds the credit limit 0.01 RON"]
    assert [(a.currency, a.open_minor, a.overdue_minor) for a in result.amounts] == [
        ("EUR", 100_000, 0), ("RON", 500_000, 0),
    ]


async def test_risk_inputs(pool):
    late = suspended("INV-1", "hosting", due=date(2026, 5, 1))
    late.add(EventKind.AGENCY_HANDOVER, at(6, 29), balance_minor=100_000)
    await project(pool, late)
    result = await standing(pool)
    assert result.oldest_overdue_days == 60 and result.invoices_sent_to_agency == 1
    assert [(a.currency, a.open_minor, a.overdue_minor) for a in result.amounts] == [("EUR", 100_000, 100_000)]


def test_settings_file(tmp_path: Path):
    settings = StandingSettings.load(Path(__file__).parent.parent / "examples" / "customers.toml")
    assert settings.for_customer("CUST-1").deposit_percent == Decimal(30)
    assert settings.for_customer("CUST-RISKY").new_orders_block_at == InvoiceState.WARNED
    assert settings.for_customer("anyone") == settings.defaults
    assert StandingSettings.load(None) == StandingSettings()
    bad = tmp_path / "customers.toml"
    for text, problem in [
        ('[defaults]\nnew_orders_block_at = "paid"\n', "must be an escalation state"),
        ('[customers."C"]\ncredit_limit_minor = { QQQ = 5 }\n', "unknown currency"),
        ("[defaults]\ndeposit_percent = 150\n", "less than or equal to 100"),
        ("[defaults]\ndeposit_after_overdue = 3\n", "Extra inputs are not permitted"),
    ]:
        bad.write_text(text)
        with pytest.raises(StandingFileError, match=problem) as refused:
            StandingSettings.load(bad)
        assert str(refused.value).startswith(f"the customers file {bad} is invalid: ")


async def test_an_invoice_whose_dispute_was_upheld_asks_no_deposit_however_late(pool):
    story = Story(invoice("INV-1", "CUST-1", 100_000, date(2026, 4, 1), date(2026, 4, 15)), at(4, 1))
    story.add(EventKind.DISPUTE_OPENED, at(4, 20), reason="hours billed twice")
    story.add(EventKind.DISPUTE_RESOLVED, at(5, 25), outcome="upheld", credit_minor=100_000, note="")
    await project(pool, story.closed(at(5, 25), "settled"))  # 40 days after the due date
    assert not (await standing(pool)).deposit_required
    rejected = Story(invoice("INV-2", "CUST-1", 100_000, date(2026, 4, 1), date(2026, 4, 15)), at(4, 1))
    rejected.add(EventKind.DISPUTE_OPENED, at(4, 20), reason="no reason")
    rejected.add(EventKind.DISPUTE_RESOLVED, at(5, 1), outcome="rejected", credit_minor=0, note="")
    await project(pool, rejected.paid(at(5, 25), 100_000, "p2", 0).closed(at(5, 25), "paid", paid=100_000))
    result = await standing(pool)
    assert result.deposit_required and len(result.reasons) == 1 and result.reasons[0].startswith("invoice INV-2 was 40 days")


async def test_a_new_customer_pays_a_deposit_until_its_first_invoices_are_paid(pool):
    settings = StandingSettings.model_validate({"defaults": {"deposit_until_paid_invoices": 2}})
    assert (await standing(pool, settings)).reasons == [
        "a new customer: 0 of its first 2 invoices paid so far: a 50% deposit is required before new work"
    ]
    for n in (1, 2):
        story = Story(invoice(f"INV-{n}", "CUST-1", 10_000, date(2026, 5, 1), date(2026, 5, 15)), at(5, 1))
        await project(pool, story.paid(at(5, 10), 10_000, f"p{n}", 0).closed(at(5, 10), "paid", paid=10_000))
        result = await standing(pool, settings)
        assert result.deposit_required is (n < 2), result.reasons
    assert not (await standing(pool)).deposit_required  # off by default


async def test_a_customer_flagged_for_deposits_always_pays_one(pool):
    settings = StandingSettings.model_validate({"customers": {"CUST-1": {"deposit_always": True, "deposit_percent": 20}}})
    result = await standing(pool, settings)
    assert result.deposit_required and result.deposit_percent == Decimal(20)
    assert result.reasons == ["the customer's settings ask a deposit for all new work: a 20% deposit is required before new work"]
    assert not (await standing(pool, settings, customer="CUST-2")).deposit_required
