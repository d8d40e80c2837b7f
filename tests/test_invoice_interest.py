"""Issue 20 item 4, statutory interest: daily accrual at a reference rate plus a margin, the compensation for
recovery costs once, the cap, freezes, rates across a half-year boundary; the rates file; the notices.

The invoices fall due 15 days before a half-year starts (``B``): the late-fee stage (+10 days) posts the
9 days since the due date, the month-end posting on ``B`` the 5 days left in the old half-year, the next
one (``B`` + 1 month: 1 February or 1 August, each 31 days later) the new half-year's first month.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from activities.interest_rates import (
    PACKAGED_RATES,
    InterestRatesFileError,
    load_interest_rates,
    missing_current_rates,
)
from activities.notices.render import render_notice
from tests.harness import eventually
from tests.notice_samples import CLIENTS, PAYEE, money, notice
from tests.test_invoice_money import assert_replays, custom_policy, snapshots
from tests.test_invoice_workflow import begin, pay, settled_into, sleep_until, status, today
from workflows.interest import CurrencyRates, ReferenceRate, accrue, half_year_of, next_half_year_start
from workflows.invoice import InvoiceWorkflow
from workflows.models import COMPENSATION, DecideLegal, Fee, InvoiceState, NoticeKind, OpenDispute, ResolveDispute

OLD_RATE, NEW_RATE = Decimal("2.00"), Decimal("3.00")  # reference rates of the two half-years, plus 8 points


def policy_with_interest(stages: dict[str, int] | None = None, **settings) -> dict:
    return custom_policy(stages or {"reminder": 1, "late_fee": 10}, interest={"margin_percent": "8"}, **settings)


def rates_around(boundary: date) -> CurrencyRates:
    before = half_year_of(boundary - timedelta(days=1))
    return CurrencyRates(
        compensation_minor=4_000,
        rates=[
            ReferenceRate(half_year=before, reference_percent=OLD_RATE, set_on=boundary - timedelta(days=190), source="test"),
            ReferenceRate(half_year=half_year_of(boundary), reference_percent=NEW_RATE, set_on=boundary, source="test"),
        ],
    )


def interest(principal: int, percent: str, days: int) -> int:
    """Simple interest, actual/365, rounded half up: what the tests expect, written out."""
    exact = Decimal(principal) * Decimal(percent) / 100 * days / 365
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def begin_with_interest(env, client, queue, recorder, stages: dict[str, int] | None = None, **policy_settings):
    """An invoice of 1,000.00 EUR due 15 days before the next half-year starts; returns it, its handle and ``B``."""
    boundary = next_half_year_start(await today(env) + timedelta(days=20))
    recorder.rates.table = {"EUR": rates_around(boundary)}
    invoice, handle = await begin(
        env, client, queue, recorder, due_date=boundary - timedelta(days=15),
        policy=policy_with_interest(stages, **policy_settings),
    )
    return invoice, handle, boundary


def at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


def accrued(recorder, invoice_id: str) -> list[dict]:
    return [e.data for e in recorder.events_of(invoice_id, "interest_accrued")]


def month_after(boundary: date) -> date:
    return boundary.replace(month=boundary.month + 1)


async def test_interest_accrues_daily_with_the_compensation_once(env, client, queue, recorder):
    """From the day after the due date at 10 %: 9 days posted at the late-fee stage with 40.00 compensation;
    then shown as accruing (not owed) until the month end posts it; the compensation is never charged again."""
    invoice, handle, boundary = await begin_with_interest(env, client, queue, recorder)
    due = invoice.due_date
    await sleep_until(env, at(due + timedelta(days=13)))
    await handle.execute_update(InvoiceWorkflow.resend_invoice)  # a query sees the time of the workflow's last step
    current = await status(handle)
    assert current.state == InvoiceState.LATE_FEE
    [posted] = accrued(recorder, invoice.invoice_id)
    assert posted["amount_minor"] == interest(100_000, "10", 9) == 247
    assert (posted["first_day"], posted["last_day"]) == (str(due + timedelta(days=1)), str(due + timedelta(days=9)))
    assert posted["periods"][0]["rate_percent"] == "10.00" and posted["occasion"] == "late-fee stage"
    assert current.fees_minor == 4_000 and current.interest_minor == 247
    assert current.interest_accruing_minor == interest(100_000, "10", 3)  # 3 days since, not yet in the balance
    assert current.balance_minor == 100_000 + 4_000 + 247
    [fee_notice] = [n for n in recorder.notices if n.kind == NoticeKind.LATE_FEE]
    assert fee_notice.interest_minor == 247 and [f.reason for f in fee_notice.fees] == [COMPENSATION]
    assert fee_notice.late_fee_percent_per_month == 0  # the contract's percent fee does not apply
    await sleep_until(env, at(month_after(boundary) + timedelta(days=40)))
    current = await status(handle)
    assert [f.data["reason"] for f in recorder.events_of(invoice.invoice_id, "late_fee_charged")] == [COMPENSATION]
    assert current.fees_minor == 4_000
    assert current.interest_minor == sum(p["amount_minor"] for p in accrued(recorder, invoice.invoice_id))
    last = snapshots(recorder, invoice.invoice_id)[-1]
    assert (last.interest_minor, last.balance_minor) == (current.interest_minor, current.balance_minor)
    entries = [r for s in snapshots(recorder, invoice.invoice_id) for r in s.receivables if r.reason == "interest_accrued"]
    assert sum(r.amount_minor for r in entries) == current.interest_minor
    await assert_replays(handle)


async def test_rates_change_at_the_half_year_boundary(env, client, queue, recorder):
    """The month-end posting on B takes the old half-year's last 5 days at 10 %, the next month at 11 %."""
    invoice, handle, boundary = await begin_with_interest(env, client, queue, recorder)
    await sleep_until(env, at(month_after(boundary)))
    posts = accrued(recorder, invoice.invoice_id)
    assert [p["occasion"] for p in posts] == ["late-fee stage", "month end", "month end"]
    assert [p["amount_minor"] for p in posts] == [
        interest(100_000, "10", 9), interest(100_000, "10", 5), interest(100_000, "11", 31)
    ]
    assert [[q["rate_percent"] for q in p["periods"]] for p in posts] == [["10.00"], ["10.00"], ["11.00"]]
    assert posts[2]["first_day"] == str(boundary)
    assert (await status(handle)).interest_minor == 247 + 137 + 934


def test_a_posting_across_the_boundary_splits_at_it_and_a_missing_rate_accrues_nothing():
    rates = CurrencyRates(
        rates=[ReferenceRate(half_year="2026-H2", reference_percent=Decimal("2.15"), set_on=date(2025, 6, 11), source="ECB")]
    )
    split = accrue(100_000, date(2026, 12, 22), date(2027, 1, 11), Decimal(8), rates)
    assert [(p.first_day, p.last_day, p.days, p.rate_percent) for p in split.periods] == [
        (date(2026, 12, 22), date(2026, 12, 31), 10, Decimal("10.15")),
        (date(2027, 1, 1), date(2027, 1, 10), 10, None),
    ]
    assert split.amount_minor == interest(100_000, "10.15", 10) == 278
    assert "no reference rate for 2027-H1" in split.periods[1].source
    # half a minor unit rounds up: 18.25 EUR at 10 % for a day is exactly 0.5 cent
    ten_percent = CurrencyRates(rates=[rates.rates[0].model_copy(update={"reference_percent": Decimal(2)})])
    assert accrue(1_825, date(2026, 12, 1), date(2026, 12, 2), Decimal(8), ten_percent).amount_minor == 1


async def test_a_payment_stops_accrual_on_the_paid_part(env, client, queue, recorder):
    """600.00 paid 10 days into the new half-year: those days on 1,000.00, the rest of the month on 400.00."""
    invoice, handle, boundary = await begin_with_interest(env, client, queue, recorder)
    await sleep_until(env, at(boundary + timedelta(days=10)))
    await handle.execute_update(InvoiceWorkflow.record_payment, pay("part", 60_000))
    await sleep_until(env, at(month_after(boundary)))
    posts = accrued(recorder, invoice.invoice_id)
    assert [(p["occasion"], p["principal_minor"], p["amount_minor"]) for p in posts[2:]] == [
        ("payment part", 100_000, interest(100_000, "11", 10)),
        ("month end", 40_000, interest(40_000, "11", 21)),
    ]
    current = await status(handle)
    assert current.balance_minor == 40_000 + 4_000 + current.interest_minor


async def test_costs_first_a_payment_pays_compensation_and_interest_before_the_principal(env, client, queue, recorder):
    """With ``allocation: costs_first`` the 600.00 pays 40.00 + 6.85 of costs first: interest runs on 446.85."""
    invoice, handle, boundary = await begin_with_interest(env, client, queue, recorder, allocation="costs_first")
    await sleep_until(env, at(boundary + timedelta(days=10)))
    await handle.execute_update(InvoiceWorkflow.record_payment, pay("part", 60_000))
    await eventually(lambda: recorder.events_of(invoice.invoice_id, "payment_recorded"))
    [recorded] = recorder.events_of(invoice.invoice_id, "payment_recorded")
    costs = 4_000 + 247 + 137 + interest(100_000, "11", 10)
    assert (recorded.data["principal_minor"], recorded.data["fees_minor"]) == (60_000 - costs, costs)
    await eventually(lambda: any(n.kind == NoticeKind.RECEIPT for n in recorder.notices))
    [receipt] = [n for n in recorder.notices if n.kind == NoticeKind.RECEIPT]
    assert (receipt.fees_paid_minor, receipt.interest_paid_minor) == (4_000, costs - 4_000)  # told apart
    await sleep_until(env, at(month_after(boundary)))
    last = accrued(recorder, invoice.invoice_id)[-1]
    left = 100_000 - (60_000 - costs)
    assert (last["principal_minor"], last["amount_minor"]) == (left, interest(left, "11", 21))


async def test_the_cap_on_late_charges_bounds_interest(env, client, queue, recorder):
    """A 5 % cap (50.00): 40.00 compensation and 2.47 + 1.37 interest, then only 6.16 of the next 9.34."""
    invoice, handle, boundary = await begin_with_interest(env, client, queue, recorder, late_charges_cap_percent="5")
    await sleep_until(env, at(month_after(boundary) + timedelta(days=62)))
    posts = accrued(recorder, invoice.invoice_id)
    assert [(p["amount_minor"], p["capped"]) for p in posts] == [(247, False), (137, False), (616, True)]
    [stopped] = recorder.events_of(invoice.invoice_id, "late_charges_stopped")
    assert stopped.data == {"reason": "cap reached", "fees_minor": 4_000}
    assert snapshots(recorder, invoice.invoice_id)[-1].interest_minor == 1_000
    current = await status(handle)
    assert current.fees_minor + current.interest_minor == 5_000 and current.interest_accruing_minor == 0
    assert current.next_action is None


async def test_a_dispute_freezes_interest(env, client, queue, recorder):
    """Disputed from B+5 to B+20: the 5 days before are posted when it opens, none accrue while it is open."""
    invoice, handle, boundary = await begin_with_interest(env, client, queue, recorder)
    await sleep_until(env, at(boundary + timedelta(days=5)))
    await handle.execute_update(InvoiceWorkflow.open_dispute, OpenDispute(reason="hours billed twice"))
    await sleep_until(env, at(boundary + timedelta(days=20)))
    frozen = await status(handle)
    assert frozen.interest_accruing_minor == 0 and frozen.next_action is None
    await handle.execute_update(InvoiceWorkflow.resolve_dispute, ResolveDispute(outcome="rejected"))
    await sleep_until(env, at(month_after(boundary)))
    posts = accrued(recorder, invoice.invoice_id)
    assert [(p["occasion"], p["first_day"], p["amount_minor"]) for p in posts[2:]] == [
        ("dispute opened", str(boundary), interest(100_000, "11", 5)),
        ("month end", str(boundary + timedelta(days=20)), interest(100_000, "11", 11)),
    ]
    await assert_replays(handle)


async def test_interest_stops_at_the_agency_hand_over(env, client, queue, recorder):
    """Handed to the agency at B+25 (``charges_stop_at_agency``, the default): the 25 days are posted, then none."""
    invoice, handle, boundary = await begin_with_interest(
        env, client, queue, recorder, stages={"reminder": 1, "late_fee": 10, "agency": 40}
    )
    await sleep_until(env, at(boundary + timedelta(days=25)))
    await settled_into(handle, InvoiceState.AGENCY)
    handed_over = await status(handle)
    await sleep_until(env, at(boundary + timedelta(days=90)))
    posts = accrued(recorder, invoice.invoice_id)
    assert [(p["occasion"], p["amount_minor"]) for p in posts[2:]] == [("stage agency", interest(100_000, "11", 25))]
    [stopped] = recorder.events_of(invoice.invoice_id, "late_charges_stopped")
    assert stopped.data["reason"] == "handed to the agency"
    assert (await status(handle)).balance_minor == handed_over.balance_minor == 100_000 + 4_000 + 247 + 137 + 753
    assert recorder.agency_packages[-1].interest_minor == 247 + 137 + 753


async def test_a_settlement_freezes_interest_and_paying_it_settles(env, client, queue, recorder):
    """Settled at 800.00 at the legal review (B+25): 35 days later still 800.00, no interest posted since."""
    invoice, handle, boundary = await begin_with_interest(
        env, client, queue, recorder, stages={"reminder": 1, "late_fee": 10, "legal_review": 40}
    )
    await sleep_until(env, at(boundary + timedelta(days=25)))
    await settled_into(handle, InvoiceState.LEGAL_REVIEW)
    decided = await handle.execute_update(
        InvoiceWorkflow.decide_legal, DecideLegal(decision="settle", settle_amount_minor=80_000)
    )
    assert decided.balance_minor == 80_000
    posted = len(accrued(recorder, invoice.invoice_id))
    await sleep_until(env, at(boundary + timedelta(days=60)))
    assert (await status(handle)).balance_minor == 80_000
    assert len(accrued(recorder, invoice.invoice_id)) == posted
    assert accrued(recorder, invoice.invoice_id)[-1]["occasion"] == "stage legal review"
    assert await handle.execute_update(InvoiceWorkflow.record_payment, pay("settlement", 80_000)) == 0
    assert (await handle.result()).state == InvoiceState.SETTLED


async def test_paying_principal_compensation_and_interest_closes_the_invoice(env, client, queue, recorder):
    invoice, handle, boundary = await begin_with_interest(env, client, queue, recorder)
    await sleep_until(env, at(invoice.due_date + timedelta(days=12)))
    owed = (await status(handle)).balance_minor + interest(100_000, "10", 2)  # 2 more days to the payment
    assert await handle.execute_update(InvoiceWorkflow.record_payment, pay("all", owed)) == 0
    outcome = await handle.result()
    assert outcome.state == InvoiceState.PAID and outcome.interest_minor == 247 + interest(100_000, "10", 2)
    await settled_into(handle, InvoiceState.PAID)


# --- the rates file --------------------------------------------------------------------------


def test_the_packaged_rates_file_loads():
    table = load_interest_rates(PACKAGED_RATES)
    eur = table["EUR"]
    assert eur.compensation_minor == 4_000
    assert eur.rate_for("2024-H1").reference_percent == Decimal("4.50")  # type: ignore[union-attr]
    assert missing_current_rates(table, date(2025, 8, 1)) == []
    assert missing_current_rates(table, date(2030, 1, 1)) == ["EUR"]  # what the worker warns of when it starts


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[EUR\n", "Expected ']'"),
        ('[EUR]\n[[EUR.rates]]\nhalf_year = "2026-H3"\nreference_percent = "2"\nset_on = 2026-06-01\nsource = "x"\n',
         "EUR.rates.0.half_year: half-year '2026-H3' must read YYYY-H1"),
        ('[EUR]\n[[EUR.rates]]\nhalf_year = "2026-H2"\nreference_percent = "2"\nsource = "x"\n', "EUR.rates.0.set_on: Field required"),
        ('[EUR]\ncompensation_minor = -1\n', "EUR.compensation_minor: Input should be greater than or equal to 0"),
        ('[EURO]\n', "EURO.[key]"),
        ('[EUR]\n' + '[[EUR.rates]]\nhalf_year = "2026-H2"\nreference_percent = "2"\nset_on = 2026-06-01\nsource = "x"\n' * 2,
         "more than one rate for half-year(s) 2026-H2"),
    ],
)
def test_a_malformed_rates_file_is_refused_with_what_is_wrong_and_where(tmp_path: Path, text: str, problem: str):
    path = tmp_path / "rates.toml"
    path.write_text(text)
    with pytest.raises(InterestRatesFileError) as refused:
        load_interest_rates(path)
    assert str(refused.value).startswith(f"the interest rates file {path} ")
    assert problem in str(refused.value)


# --- notices ---------------------------------------------------------------------------------


@pytest.mark.parametrize("language", list(CLIENTS))
def test_a_notice_shows_interest_and_compensation_apart_from_fees(language: str):
    compensation = Fee(number=1, amount_minor=4_000, charged_at=datetime(2025, 3, 30, 7, 0, tzinfo=UTC), reason=COMPENSATION)
    rendered = render_notice(
        notice(
            NoticeKind.LATE_FEE, language, fees=[compensation], interest_minor=24_657, balance_minor=1_228_657,
            interest_through=date(2025, 3, 29), interest_rate_percent=Decimal("10.15"),
            late_fee_percent_per_month=Decimal(0), fixed_late_fee_minor=0,
        ),
        PAYEE,
    )
    labels = {
        "en": ("Statutory interest up to", "Compensation for recovery costs"),
        "ro": ("Dobândă legală penalizatoare până la", "Compensație pentru costurile de recuperare"),
        "bg": ("Законна лихва за забава до", "Обезщетение за разходите по събирането"),
        "et": ("Seadusjärgne viivisintress kuni", "Hüvitis sissenõudmiskulude eest"),
        "it": ("Interessi legali di mora fino al", "Risarcimento dei costi di recupero"),
    }[language]
    for body in (rendered.text, rendered.html):
        assert money(Decimal("246.57"), language) in body and money(Decimal("40.00"), language) in body
        assert all(label in body for label in labels)
        assert CLIENTS[language].fee_label not in body  # the compensation is no numbered late fee


@pytest.mark.parametrize("language", list(CLIENTS))
def test_a_receipt_tells_what_went_to_interest(language: str):
    rendered = render_notice(
        notice(NoticeKind.RECEIPT, language, principal_paid_minor=53_000, fees_paid_minor=4_000, interest_paid_minor=3_000),
        PAYEE,
    )
    for amount in ("530.00", "40.00", "30.00"):
        assert money(Decimal(amount), language) in rendered.text
