"""Projections on a real PostgreSQL, from event streams written by hand and checked by hand.

The ledger of customers in ``ledger_events`` (as of 2026-06-30, all times 09:00 UTC):

- CUST-A / A1, 1,000.00 EUR for hosting, due 03-16: every stage to the agency, a 35.00 fee,
  500.00 paid on 04-10: 535.00 open, suspended (hosting).
- CUST-A / A2, 500.00 RON, due 05-31: reminded, disputed 06-03 to 06-08 (50.00 credited), on a
  plan since 06-12, 200.00 paid on 06-19: 250.00 open.
- CUST-A / A3, 200.00 EUR, due 01-19: on a plan 01-22, instalment 2 missed 02-16 (25 days of
  pause), warned and fined 15.00 after it, paid 115.00 on 03-01.
- CUST-B / B1, 300.00 EUR, 2 % early-payment discount: paid 294.00 on 06-05.
- CUST-B / B2, 400.00 EUR, due 02-16: to the ultimatum, fined 15.00, sold to a factor on 03-05.
- CUST-B / B3, 100.00 EUR, due 2025-09-15: every stage, fined 15.00, written off on 2026-01-20.
- CUST-C / C1, 2,000.00 EUR, issued 06-20, due 07-04.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from typer.testing import CliRunner

from activities.ledger import MIGRATIONS, LedgerActivities, apply_schema, create_pool
from activities.projections import (
    PROJECTION_TABLES,
    PROJECTOR_LOCK,
    AgingRow,
    Projector,
    aging_report,
    catch_up,
    collections_funnel,
    customer_view,
    days_sales_outstanding,
    invoice_status,
    invoice_view,
    list_invoices,
    projection_lag,
    rank_customers,
    rebuild,
)
from cli.projections import app as projections_cli
from tests.event_stories import Story, at, invoice
from tests.harness import eventually
from workflows.models import DomainEvent, EventKind, InvoiceState, NextAction, StageAction

AS_OF = date(2026, 6, 30)
V4_LOG = Path(__file__).parent / "data" / "v4-log"  # events release v4 wrote, and every report v4 made of them


R, W, F, U, S, A, L = (StageAction.REMINDER, StageAction.WARNING, StageAction.LATE_FEE, StageAction.ULTIMATUM,
                       StageAction.SUSPEND, StageAction.AGENCY, StageAction.LEGAL_REVIEW)


def ledger_events() -> list[Story]:
    a1 = Story(invoice("A1", "CUST-A", 100_000, date(2026, 3, 2), date(2026, 3, 16), service="hosting"), at(3, 2))
    a1.add(EventKind.NOTICE_SENT, at(3, 2), kind="invoice_issued", step="0001-invoice_issued", to="a@x.example")
    a1.stages((R, at(3, 17)), (W, at(3, 21)), (F, at(3, 26))).fee(at(3, 26), 3_500)
    a1.stages((U, at(3, 31)), (S, at(4, 5))).service(EventKind.SERVICE_SUSPENDED, at(4, 5))
    a1.add(EventKind.EQUIPMENT_SUSPENDED, at(4, 5), equipment_id="srv-1", state="Off", changed=True, dry_run=False)
    a1.paid(at(4, 10), 50_000, "a1-p1", 53_500)
    a1.stages((A, at(6, 14))).add(EventKind.AGENCY_HANDOVER, at(6, 14), balance_minor=53_500, package_sent=True)

    a2 = Story(invoice("A2", "CUST-A", 50_000, date(2026, 5, 1), date(2026, 5, 31), currency="RON"), at(5, 1))
    a2.stages((R, at(6, 1)))
    a2.add(EventKind.DISPUTE_OPENED, at(6, 3, hour=10), reason="hours billed twice")
    a2.add(EventKind.DISPUTE_RESOLVED, at(6, 8, hour=10), outcome="upheld", credit_minor=5_000, note="")
    plan = {"instalments": [{"due_date": "2026-06-20", "amount_minor": 20_000},
                            {"due_date": "2026-07-20", "amount_minor": 25_000}]}
    a2.add(EventKind.PAYMENT_PLAN_AGREED, at(6, 12), plan=plan).paid(at(6, 19), 20_000, "a2-i1", 25_000)

    a3 = Story(invoice("A3", "CUST-A", 20_000, date(2026, 1, 5), date(2026, 1, 19)), at(1, 5))
    plan = {"instalments": [{"due_date": "2026-02-01", "amount_minor": 10_000},
                            {"due_date": "2026-02-15", "amount_minor": 10_000}]}
    a3.stages((R, at(1, 20))).add(EventKind.PAYMENT_PLAN_AGREED, at(1, 22), plan=plan)
    a3.paid(at(2, 1), 10_000, "a3-i1", 10_000)
    a3.add(EventKind.INSTALMENT_MISSED, at(2, 16), instalment=2, expected_minor=20_000, received_minor=10_000)
    a3.stages((W, at(2, 18)), (F, at(2, 23))).fee(at(2, 23), 1_500)
    a3.paid(at(3, 1), 11_500, "a3-p2", 0).closed(at(3, 1), "paid", paid=21_500, fees=1_500)

    discount = {"early_payment_discount": {"percent": "2", "within_days": 7}}
    b1 = Story(invoice("B1", "CUST-B", 30_000, date(2026, 6, 1), date(2026, 6, 15), terms=discount), at(6, 1))
    b1.paid(at(6, 5), 29_400, "b1-p1", 600).add(EventKind.DISCOUNT_APPLIED, at(6, 5), amount_minor=600)
    b1.closed(at(6, 5), "paid", paid=29_400)

    b2 = Story(invoice("B2", "CUST-B", 40_000, date(2026, 2, 2), date(2026, 2, 16)), at(2, 2))
    b2.stages((R, at(2, 17)), (W, at(2, 21)), (F, at(2, 26))).fee(at(2, 26), 1_500).stages((U, at(3, 3)))
    b2.add(EventKind.INVOICE_FACTORED, at(3, 5), factor="acme-factoring", advance_minor=32_000, balance_minor=41_500)
    b2.closed(at(3, 5), "factored", fees=1_500)

    b3 = Story(invoice("B3", "CUST-B", 10_000, date(2025, 9, 1), date(2025, 9, 15)), at(9, 1, 2025))
    b3.stages((R, at(9, 16, 2025)), (W, at(9, 20, 2025)), (F, at(9, 25, 2025))).fee(at(9, 25, 2025), 1_500)
    b3.stages((U, at(9, 30, 2025)), (S, at(10, 5, 2025))).service(EventKind.SERVICE_SUSPENDED, at(10, 5, 2025))
    b3.stages((A, at(12, 14, 2025))).add(EventKind.AGENCY_HANDOVER, at(12, 14, 2025), balance_minor=11_500)
    b3.stages((L, at(1, 13)))
    summary = {
        "balance_minor": 11_500, "fees_minor": 1_500, "paid_minor": 0, "days_overdue": 120,
        "cost_of_action_minor": 150_000, "net_if_recovered_minor": -138_500, "small_claims_limit_minor": 500_000,
        "small_claims_eligible": True, "worth_suing": False, "summary": "not worth suing",
    }
    b3.add(EventKind.LEGAL_REVIEW_OPENED, at(1, 13), **summary)
    b3.add(EventKind.LEGAL_DECISION, at(1, 20), decision="write_off", settle_amount_minor=None, note="",
           balance_minor=11_500)
    b3.closed(at(1, 20), "written_off", fees=1_500, written_off=11_500)

    c1 = Story(invoice("C1", "CUST-C", 200_000, date(2026, 6, 20), date(2026, 7, 4)), at(6, 20))
    return [a1, a2, a3, b1, b2, b3, c1]


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_url)
    yield pool
    await pool.close()


async def append(pool: asyncpg.Pool, events: list[DomainEvent]) -> None:
    await LedgerActivities(pool).append_events(events)


def interleaved(stories: list[Story]) -> list[DomainEvent]:
    """Every story's events, taking turns between invoices as concurrent workflows would."""
    queues = [list(story.events) for story in stories]
    merged = []
    while any(queues):
        for queue in queues:
            if queue:
                merged.append(queue.pop(0))
    return merged


@pytest.fixture
async def ledger(pool) -> list[Story]:
    stories = ledger_events()
    await append(pool, interleaved(stories))
    assert await catch_up(pool) == sum(len(s.events) for s in stories)
    return stories


# --- invoices -----------------------------------------------------------------------------------


async def test_invoice_view_follows_every_kind_of_event(pool, ledger):
    a1 = await invoice_view(pool, "A1")
    assert a1 is not None
    assert (a1.state, a1.escalation, a1.currency) == (InvoiceState.AGENCY, InvoiceState.AGENCY, "EUR")
    assert a1.service == "hosting"
    assert (a1.amount_minor, a1.fees_minor, a1.paid_minor, a1.balance_minor) == (100_000, 3_500, 50_000, 53_500)
    assert a1.suspended and a1.sent_to_agency
    assert a1.stages_reached == [R, W, F, U, S, A]
    assert a1.next_action == NextAction(what="legal_review", at=at(7, 14), kind="stage")  # due 03-16 + 120 days

    a2 = await invoice_view(pool, "A2")
    assert (a2.state, a2.escalation, a2.currency) == (InvoiceState.PAYMENT_PLAN, InvoiceState.REMINDED, "RON")
    assert (a2.credited_minor, a2.paid_minor, a2.balance_minor) == (5_000, 20_000, 25_000)
    assert a2.on_payment_plan and not a2.disputed and a2.next_action is None

    a3 = await invoice_view(pool, "A3")
    assert (a3.state, a3.fees_minor, a3.paid_minor, a3.balance_minor) == (InvoiceState.PAID, 1_500, 21_500, 0)
    assert a3.closed_at == at(3, 1) and a3.next_action is None and a3.stages_reached == [R, W, F]

    b1 = await invoice_view(pool, "B1")
    assert (b1.state, b1.discount_minor, b1.balance_minor, b1.overpaid_minor) == (InvoiceState.PAID, 600, 0, 0)

    b2 = await invoice_view(pool, "B2")
    assert (b2.state, b2.factored_to, b2.balance_minor) == (InvoiceState.FACTORED, "acme-factoring", 41_500)

    b3 = await invoice_view(pool, "B3")
    assert (b3.state, b3.written_off_minor, b3.balance_minor) == (InvoiceState.WRITTEN_OFF, 11_500, 0)
    assert b3.suspended  # a write-off does not restore the service
    assert await invoice_view(pool, "NOPE") is None


async def test_credited_is_dispute_credits_and_the_discount_is_its_own(pool, ledger):
    """``credited_minor`` means credits granted on disputes in the row and in the status alike."""
    for invoice_id, credited, discount in (("A2", 5_000, 0), ("B1", 0, 600)):
        view, status = await invoice_view(pool, invoice_id), await invoice_status(pool, invoice_id)
        assert (view.credited_minor, view.discount_minor) == (credited, discount)
        assert (status.credited_minor, status.discount_minor) == (credited, discount)


async def test_next_action_counts_every_pause(pool):
    stories = {s.invoice.invoice_id: s for s in ledger_events()}
    a2, a3 = stories["A2"].events, stories["A3"].events
    # A2 up to the dispute: paused, no next action; resolved after 5 days: the warning moves 5 days later
    await append(pool, a2[:3])
    await catch_up(pool)
    assert (await invoice_view(pool, "A2")).next_action is None
    await append(pool, a2[3:4])
    await catch_up(pool)
    assert (await invoice_view(pool, "A2")).next_action == NextAction(what="warning", at=at(6, 10), kind="stage")  # 06-05 + 5 days
    # A3's plan ran from 01-22 to the missed instalment on 02-16: 25 days later than 01-24
    await append(pool, a3[:5])
    await catch_up(pool)
    assert (await invoice_view(pool, "A3")).next_action == NextAction(what="warning", at=at(2, 18), kind="stage")


async def test_next_action_after_back_to_agency_is_the_renewed_review(pool):
    story = Story(invoice("D1", "CUST-D", 10_000, date(2026, 1, 5), date(2026, 1, 19)), at(1, 5))
    story.stages((L, at(5, 19)))
    story.add(EventKind.LEGAL_DECISION, at(5, 20), decision="agency", settle_amount_minor=None, note="",
              balance_minor=10_000)
    await append(pool, story.events[:2])
    await catch_up(pool)
    assert (await invoice_view(pool, "D1")).next_action is None  # waiting for a decision
    await append(pool, story.events[2:])
    await catch_up(pool)
    view = await invoice_view(pool, "D1")
    assert view.state == InvoiceState.AGENCY
    assert view.next_action == NextAction(what="legal_review", at=at(5, 20) + timedelta(days=90), kind="legal_review")


async def test_list_invoices_filters_by_customer_and_state(pool, ledger):
    assert [v.invoice_id for v in await list_invoices(pool, customer_id="CUST-A")] == ["A3", "A1", "A2"]
    assert [v.invoice_id for v in await list_invoices(pool, state=InvoiceState.PAID)] == ["A3", "B1"]
    assert [v.invoice_id for v in await list_invoices(pool, limit=2, offset=1)] == ["A3", "B2"]


# --- customers ------------------------------------------------------------------------------------


async def test_customer_view_sums_open_and_overdue_per_currency(pool, ledger):
    a = await customer_view(pool, "CUST-A", as_of=AS_OF)
    assert [(x.currency, x.open_minor, x.overdue_minor) for x in a.amounts] == [
        ("EUR", 53_500, 53_500), ("RON", 25_000, 25_000),
    ]
    assert (a.oldest_overdue_due_date, a.oldest_overdue_days) == (date(2026, 3, 16), 106)
    assert a.invoices_by_state == {InvoiceState.AGENCY: 1, InvoiceState.PAYMENT_PLAN: 1, InvoiceState.PAID: 1}
    assert a.invoices_sent_to_agency == 1
    b = await customer_view(pool, "CUST-B", as_of=AS_OF)
    assert b.amounts == [] and b.oldest_overdue_days is None and b.invoices_sent_to_agency == 1
    c = await customer_view(pool, "CUST-C", as_of=AS_OF)
    assert [(x.currency, x.open_minor, x.overdue_minor) for x in c.amounts] == [("EUR", 200_000, 0)]
    assert await customer_view(pool, "CUST-NOBODY") is None


async def test_customers_rank_by_overdue_then_open(pool, ledger):
    assert [v.customer_id for v in await rank_customers(pool, limit=10, offset=0, as_of=AS_OF)] == ["CUST-A", "CUST-C"]
    assert [v.customer_id for v in await rank_customers(pool, limit=10, offset=0, currency="EUR", as_of=AS_OF)] == [
        "CUST-A", "CUST-C",
    ]
    in_ron = await rank_customers(pool, limit=10, offset=0, currency="RON", as_of=AS_OF)
    assert [v.customer_id for v in in_ron] == ["CUST-A"]
    # before A1 and A2 were due, C's larger open amount ranks first; CUST-B owes nothing
    early = await rank_customers(pool, limit=10, offset=0, as_of=date(2026, 3, 10))
    assert [v.customer_id for v in early] == ["CUST-C", "CUST-A"]
    assert [v.customer_id for v in await rank_customers(pool, limit=1, offset=1, as_of=AS_OF)] == ["CUST-C"]


# --- finance --------------------------------------------------------------------------------------


async def test_aging_now_and_in_the_past(pool, ledger):
    assert await aging_report(pool, AS_OF) == [
        AgingRow(currency="EUR", current=200_000, d1_30=0, d31_60=0, d61_90=0, d90_plus=53_500, total=253_500),
        AgingRow(currency="RON", current=0, d1_30=25_000, d31_60=0, d61_90=0, d90_plus=0, total=25_000),
    ]
    # on 04-01 A1 was 16 days late and unpaid; A3, B2 and B3 were already settled
    assert await aging_report(pool, date(2026, 4, 1)) == [
        AgingRow(currency="EUR", current=0, d1_30=103_500, d31_60=0, d61_90=0, d90_plus=0, total=103_500),
    ]


async def test_aging_bucket_boundaries(pool):
    days_late = {-5: 50, 0: 100, 1: 200, 30: 400, 31: 800, 60: 1_600, 61: 3_200, 90: 6_400, 91: 12_800}
    stories = [
        Story(invoice(f"G{late}", "CUST-G", amount, AS_OF - timedelta(days=late + 14), AS_OF - timedelta(days=late)),
              at(1, 1))
        for late, amount in days_late.items()
    ]
    # 50.00 paid on the day counts, 30.00 paid the day after does not
    partly = Story(invoice("G10", "CUST-G", 5_000, date(2026, 6, 6), date(2026, 6, 20)), at(6, 6))
    partly.paid(at(6, 30, hour=20), 2_000, "g10-1", 3_000).paid(at(7, 1), 3_000, "g10-2", 0)
    ron = Story(invoice("G45", "CUST-G", 999, date(2026, 5, 1), date(2026, 5, 16), currency="RON"), at(5, 1))
    later = Story(invoice("G-later", "CUST-G", 77_777, date(2026, 7, 2), date(2026, 7, 16)), at(7, 2))
    await append(pool, [e for s in [*stories, partly, ron, later] for e in s.events])
    await catch_up(pool)
    assert await aging_report(pool, AS_OF) == [
        AgingRow(currency="EUR", current=150, d1_30=600 + 3_000, d31_60=2_400, d61_90=9_600, d90_plus=12_800,
                 total=150 + 3_600 + 2_400 + 9_600 + 12_800),
        AgingRow(currency="RON", current=0, d1_30=0, d31_60=999, d61_90=0, d90_plus=0, total=999),
    ]


async def test_collections_funnel(pool, ledger):
    funnel = {row.stage: (row.reached, row.paid_at_stage) for row in await collections_funnel(pool)}
    assert list(funnel) == ["issued", "courtesy", "reminder", "warning", "late_fee", "ultimatum", "suspend", "agency",
                            "legal_review"]
    assert funnel == {
        "issued": (7, 1),  # B1 paid before any reminder
        "courtesy": (0, 0),
        "reminder": (5, 0),
        "warning": (4, 0),
        "late_fee": (4, 1),  # A3
        "ultimatum": (3, 0),
        "suspend": (2, 0),
        "agency": (2, 0),
        "legal_review": (1, 0),
    }


async def test_days_sales_outstanding(pool, ledger):
    rows = {row.currency: row for row in await days_sales_outstanding(pool, AS_OF)}
    # EUR: 2,535.00 owed / 2,300.00 invoiced since 04-01 (B1, C1) × 90 days; RON: 250.00 / 500.00 × 90
    eur, ron = rows["EUR"], rows["RON"]
    assert (eur.receivables_minor, eur.invoiced_minor, eur.days) == (253_500, 230_000, Decimal("99.2"))
    assert (ron.receivables_minor, ron.invoiced_minor, ron.days) == (25_000, 50_000, Decimal("45.0"))
    # over 20 days only C1 was invoiced in EUR, and nothing in RON: 253,500 / 200,000 × 20 = 25.35
    rows = {row.currency: row for row in await days_sales_outstanding(pool, AS_OF, period_days=20)}
    assert rows["EUR"].days == Decimal("25.4") and rows["RON"].days is None


# --- the projector ------------------------------------------------------------------------------


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[dict]]:
    return {
        table: [dict(r) for r in await pool.fetch(f"SELECT * FROM {table} ORDER BY 1, 2, 3")] for table in PROJECTION_TABLES
    }


async def test_catch_up_in_batches_equals_a_rebuild_of_events_upcast(pool):
    """Events written before snapshots (format 1) are upcast once, in whatever batches they come."""
    events = interleaved(ledger_events())
    applied = 0
    for start in range(0, len(events), 17):  # appends and catch-ups take turns, in batches of 4
        await append(pool, events[start : start + 17])
        applied += await catch_up(pool, batch_size=4)
    assert applied == len(events)
    assert await catch_up(pool) == 0
    incremental = await snapshot(pool)
    assert all(rows for table, rows in incremental.items() if table != "projected_invoice_story")  # v4 told no story
    assert await rebuild(pool) == len(events)
    assert await snapshot(pool) == incremental
    assert await catch_up(pool) == 0


async def test_a_late_commit_is_never_skipped(pool):
    """Appends take turns, so an event is never committed after a later position was projected."""
    first, second = ledger_events()[2].events[0], ledger_events()[3].events[0]
    async with pool.acquire() as conn:
        slow = conn.transaction()
        await slow.start()
        await conn.execute(
            "INSERT INTO invoice_events (invoice_id, sequence, kind, occurred_at, data) VALUES ($1, $2, $3, $4, $5)",
            first.invoice_id, first.sequence, first.kind.value, first.occurred_at, first.model_dump(mode="json")["data"],
        )
        fast = asyncio.create_task(append(pool, [second]))
        await asyncio.sleep(0.3)
        assert not fast.done()  # waits for the open append to end
        assert await catch_up(pool) == 0
        await slow.commit()
    await asyncio.wait_for(fast, timeout=5)
    assert await catch_up(pool) == 2
    assert [v.invoice_id for v in await list_invoices(pool)] == ["A3", "B1"]


async def test_events_stored_before_the_projections_are_numbered_in_recorded_order(postgres_url):
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlsplit(postgres_url)._replace(path=f"/{name}").geturl()
    try:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute((MIGRATIONS / "001_event_store.sql").read_text())
            await conn.execute(  # as apply_schema left it with only 001 applied
                "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());"
                " INSERT INTO schema_migrations (name) VALUES ('001_event_store.sql')"
            )
            for invoice_id, recorded in [("LATE", "2026-03-02"), ("EARLY", "2026-03-01"), ("EARLY-2", "2026-03-01")]:
                await conn.execute(
                    "INSERT INTO invoice_events (invoice_id, sequence, kind, occurred_at, recorded_at)"
                    " VALUES ($1, 1, 'invoice_resent', now(), $2::date)", invoice_id, date.fromisoformat(recorded),
                )
            await apply_schema(url)
            positions = await conn.fetch("SELECT invoice_id, position FROM invoice_events ORDER BY position")
            assert [(r["invoice_id"], r["position"]) for r in positions] == [("EARLY", 1), ("EARLY-2", 2), ("LATE", 3)]
            await conn.execute(
                "INSERT INTO invoice_events (invoice_id, sequence, kind, occurred_at)"
                " VALUES ('NEW', 1, 'invoice_resent', now())"
            )
            assert await conn.fetchval("SELECT position FROM invoice_events WHERE invoice_id = 'NEW'") == 4
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("UPDATE invoice_events SET position = 9")
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_lag_before_and_after_catch_up(pool):
    events = ledger_events()[0].events
    await append(pool, events)
    lag = await projection_lag(pool)
    assert lag.events_behind == len(events) and lag.seconds_behind > 0
    await catch_up(pool)
    lag = await projection_lag(pool)
    assert lag.events_behind == 0 and lag.seconds_behind == 0


async def test_projector_wakes_on_notify_and_only_one_leads(pool):
    story = ledger_events()[2]  # A3
    await append(pool, story.events[:2])
    stop = asyncio.Event()
    # no polling within the test: only the notification can wake the projector
    projectors = [asyncio.create_task(Projector(poll_interval=600, standby_interval=0.2).run(pool, stop)) for _ in range(2)]
    try:
        await eventually(lambda: _behind(pool, 0))
        await append(pool, story.events[2:4])
        await eventually(lambda: _state_is(pool, "A3", InvoiceState.PAYMENT_PLAN), timeout=15)
        await append(pool, story.events[4:])
        await eventually(lambda: _state_is(pool, "A3", InvoiceState.PAID), timeout=15)
        leaders = await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1", PROJECTOR_LOCK
        )
        assert leaders == 1
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*projectors), timeout=5)


async def _behind(pool: asyncpg.Pool, events: int) -> bool:
    return (await projection_lag(pool)).events_behind == events


async def _state_is(pool: asyncpg.Pool, invoice_id: str, state: InvoiceState) -> bool:
    view = await invoice_view(pool, invoice_id)
    return view is not None and view.state == state


async def test_cli_rebuild_and_lag(pool, db_url):
    await append(pool, ledger_events()[0].events)
    env = {**os.environ, "DATABASE_URL": db_url}
    result = await asyncio.to_thread(CliRunner().invoke, projections_cli, ["lag"], env=env)
    assert result.exit_code == 0 and result.output.startswith("13 events behind")
    result = await asyncio.to_thread(CliRunner().invoke, projections_cli, ["rebuild"], env=env)
    assert result.exit_code == 0, result.output
    assert "Rebuilt from 13 events" in result.output
    assert "projected_invoices" in result.output and "projected_invoice_stages" in result.output
    result = await asyncio.to_thread(CliRunner().invoke, projections_cli, ["lag"], env=env)
    assert result.output == "0 events behind, 0.0 s\n"
    bad = {**env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = await asyncio.to_thread(CliRunner().invoke, projections_cli, ["rebuild"], env=bad)
    assert result.exit_code == 1 and result.output.startswith("error: ")


async def test_a_saved_v4_log_gives_the_reports_v4_gave(pool):
    """Rows written before events carried snapshots are upcast once, and every report stays as it was.

    ``tests/data/v4-log`` was written by release v4's own code (this ledger, its projector and
    reports); an invoice now shows more than v4 showed, so only what v4 showed is compared.
    """
    lines = (V4_LOG / "events.jsonl").read_text().splitlines()
    await append(pool, [DomainEvent.model_validate_json(line) for line in lines])
    assert await catch_up(pool) == len(lines)
    saved = json.loads((V4_LOG / "reports.json").read_text())

    def dumped(rows: list) -> list[dict]:
        return [row.model_dump(mode="json") for row in rows]

    for before, now in zip(saved["invoices"], dumped(await list_invoices(pool, limit=100)), strict=True):
        shown_by_v4 = {name: now[name] for name in before}
        if now["next_action"]:
            shown_by_v4["next_action"] = {k: v for k, v in now["next_action"].items() if k != "kind"}
        assert shown_by_v4 == before
    assert dumped(await collections_funnel(pool)) == saved["funnel"]
    for day in saved["aging"]:
        as_of = date.fromisoformat(day)
        assert dumped(await aging_report(pool, as_of)) == saved["aging"][day]
        assert dumped(await days_sales_outstanding(pool, as_of)) == saved["dso"][day]
        assert dumped(await rank_customers(pool, as_of=as_of)) == saved["customers"][day]
