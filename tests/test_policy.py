"""The pure policy functions: moments, fees, discount, instalments and the legal summary. No Temporal."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests import harness
from tests.notice_samples import notice
from tests.test_agency_package import handover
from workflows import policy
from workflows.ladder import StepKind
from workflows.models import Allocation, DunningPolicy, Fee, Invoice, InvoiceState, NoticeKind, PaymentPlan, StageAction
from workflows.publishing import status_of
from workflows.state import Dispute, InvoiceLedger, PlanInProgress

UTC = timezone.utc
BUCHAREST = ZoneInfo("Europe/Bucharest")
NEW_YORK = ZoneInfo("America/New_York")
DEFAULT = DunningPolicy.default()


def make_invoice(**overrides: Any) -> Invoice:
    """EUR 1,000.00 issued 1 March 2024, due 15 March, 2 % a month plus EUR 15.00; any field overridden."""
    return harness.make_invoice(date(2024, 3, 1), **{"invoice_id": "INV-1", **overrides})


def fee(number: int, amount: int = 1_000) -> Fee:
    return Fee(number=number, amount_minor=amount, charged_at=datetime(2024, 3, 25, 9, tzinfo=UTC), reason="late fee")


def ledger_with(invoice: Invoice | None = None, **fields: Any) -> InvoiceLedger:
    return InvoiceLedger(invoice=invoice or make_invoice(), **fields)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- due moment and stages -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("due", "expected_utc", "utc_offset_hours"),
    [
        (date(2024, 3, 30), utc(2024, 3, 30, 7), 2),  # last winter day: EET, UTC+2
        (date(2024, 3, 31), utc(2024, 3, 31, 6), 3),  # clocks went forward at 03:00: EEST, UTC+3
        (date(2024, 10, 26), utc(2024, 10, 26, 6), 3),  # last summer day
        (date(2024, 10, 27), utc(2024, 10, 27, 7), 2),  # clocks went back at 04:00
        (date(2024, 1, 15), utc(2024, 1, 15, 7), 2),
        (date(2024, 7, 15), utc(2024, 7, 15, 6), 3),
    ],
)
def test_due_moment_is_nine_local_in_the_clients_zone(due: date, expected_utc: datetime, utc_offset_hours: int) -> None:
    invoice = make_invoice(issue_date=date(2024, 1, 1), due_date=due, time_zone="Europe/Bucharest")
    moment = policy.due_moment(invoice)
    assert moment == expected_utc
    assert moment.astimezone(BUCHAREST).hour == 9
    assert moment.utcoffset() == timedelta(hours=utc_offset_hours)


def test_due_moment_follows_the_policy_due_time() -> None:
    invoice = make_invoice(
        due_date=date(2024, 7, 15),
        time_zone="Europe/Bucharest",
        policy={**DEFAULT.model_dump(), "due_time": "17:30"},
    )
    assert policy.due_moment(invoice) == utc(2024, 7, 15, 14, 30)


def test_stage_due_at_is_the_offset_after_the_due_moment() -> None:
    invoice = make_invoice()
    due = utc(2024, 3, 15, 9)
    assert policy.due_moment(invoice) == due
    expected = {
        StageAction.REMINDER: due + timedelta(days=1),
        StageAction.WARNING: due + timedelta(days=5),
        StageAction.LATE_FEE: due + timedelta(days=10),
        StageAction.SUSPEND: due + timedelta(days=20),
        StageAction.AGENCY: due + timedelta(days=90),
    }
    for action, moment in expected.items():
        assert policy.stage_due_at(invoice, DEFAULT.stage(action), timedelta(0)) == moment


@pytest.mark.parametrize("paused", [timedelta(days=3), timedelta(days=3, hours=4, minutes=5), timedelta(seconds=1)])
def test_stage_due_at_is_shifted_by_the_pause(paused: timedelta) -> None:
    invoice = make_invoice()
    warning = DEFAULT.stage(StageAction.WARNING)
    unpaused = policy.stage_due_at(invoice, warning, timedelta(0))
    assert policy.stage_due_at(invoice, warning, paused) - unpaused == paused


def test_stage_across_a_dst_change_keeps_the_local_due_time() -> None:
    invoice = make_invoice(due_date=date(2024, 3, 25), time_zone="Europe/Bucharest")  # EET; EEST from 31 March
    warning = policy.stage_due_at(invoice, DEFAULT.stage(StageAction.WARNING), timedelta(0))
    late_fee = policy.stage_due_at(invoice, DEFAULT.stage(StageAction.LATE_FEE), timedelta(0))
    assert warning == utc(2024, 3, 30, 7)
    assert late_fee == utc(2024, 4, 4, 6)
    assert late_fee.astimezone(BUCHAREST).replace(tzinfo=None) == datetime(2024, 4, 4, 9)


def test_courtesy_stage_comes_before_the_due_moment() -> None:
    invoice = make_invoice(
        policy={"stages": [{"action": "courtesy", "offset": "-P3D"}, {"action": "reminder", "offset": "P1D"}]}
    )
    courtesy = invoice.policy.stage(StageAction.COURTESY)
    assert policy.stage_due_at(invoice, courtesy, timedelta(0)) == utc(2024, 3, 12, 9)


# --- add_months ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2024, 1, 31), 1, date(2024, 2, 29)),  # leap year
        (date(2023, 1, 31), 1, date(2023, 2, 28)),
        (date(2024, 3, 31), 1, date(2024, 4, 30)),
        (date(2024, 1, 30), 1, date(2024, 2, 29)),
        (date(2024, 1, 31), 2, date(2024, 3, 31)),  # from the start, not from the clamped month
        (date(2024, 1, 15), 1, date(2024, 2, 15)),
        (date(2024, 12, 15), 1, date(2025, 1, 15)),
        (date(2024, 11, 30), 3, date(2025, 2, 28)),
        (date(2024, 1, 31), 12, date(2025, 1, 31)),
        (date(2024, 2, 29), 12, date(2025, 2, 28)),
        (date(2024, 1, 31), 25, date(2026, 2, 28)),
        (date(2024, 3, 31), -1, date(2024, 2, 29)),
        (date(2024, 1, 15), -1, date(2023, 12, 15)),
        (date(2024, 5, 17), 0, date(2024, 5, 17)),
    ],
)
def test_add_months_clamps_to_the_last_day_of_the_month(start: date, months: int, expected: date) -> None:
    moment = datetime(start.year, start.month, start.day, 9, 30, tzinfo=UTC)
    assert policy.add_months(moment, months) == datetime(expected.year, expected.month, expected.day, 9, 30, tzinfo=UTC)


def test_add_months_keeps_the_local_time_across_dst() -> None:
    winter = datetime(2024, 3, 15, 9, tzinfo=BUCHAREST)
    summer = policy.add_months(winter, 1)
    assert summer.replace(tzinfo=None) == datetime(2024, 4, 15, 9)
    assert summer.astimezone(UTC) == utc(2024, 4, 15, 6)


# --- late fees -------------------------------------------------------------------------------


def test_first_fee_is_the_percentage_plus_the_fixed_fee() -> None:
    ledger = ledger_with()
    assert policy.late_fee_amount(ledger, 1) == 2_000 + 1_500


@pytest.mark.parametrize("number", [2, 3, 12])
def test_later_fees_are_the_percentage_only(number: int) -> None:
    ledger = ledger_with(fees=[fee(n) for n in range(1, number)])
    assert policy.late_fee_amount(ledger, number) == 2_000


@pytest.mark.parametrize(
    ("amount", "percent", "expected"),
    [
        (250, "1", 3),  # 2.5 -> 3 (banker's rounding would give 2)
        (650, "1", 7),  # 6.5 -> 7 (banker's rounding would give 6)
        (249, "1", 2),  # 2.49 -> 2
        (100, "1.5", 2),  # 1.5 -> 2
        (12_345, "1.5", 185),  # 185.175 -> 185
        (33, "1", 0),  # 0.33 -> 0
        (100_000, "0.0001", 0),  # 0.1 -> 0
        (10**15, "100", 10**15),
    ],
)
def test_percentage_is_rounded_half_up_in_minor_units(amount: int, percent: str, expected: int) -> None:
    invoice = make_invoice(amount_minor=amount, terms={"late_fee_percent_per_month": percent})
    assert policy.late_fee_amount(ledger_with(invoice), 2) == expected


@pytest.mark.parametrize(
    ("fields", "basis"),
    [
        ({"payments": {"p1": 60_000}}, 40_000),
        ({"payments": {"p1": 30_000, "p2": 20_000}}, 50_000),
        ({"credited_minor": 25_000}, 75_000),
        ({"discount_minor": 2_000}, 98_000),
        ({"written_off_minor": 10_000}, 90_000),
        ({"payments": {"p1": 10_000}, "credited_minor": 10_000}, 80_000),
    ],
)
def test_partial_payments_and_credits_lower_the_fee_basis(fields: dict[str, Any], basis: int) -> None:
    ledger = ledger_with(**fields)
    assert ledger.principal_outstanding_minor == basis
    assert policy.late_fee_amount(ledger, 1) == basis * 2 // 100 + 1_500
    assert policy.late_fee_amount(ledger, 2) == basis * 2 // 100


def test_fees_are_not_charged_on_fees() -> None:
    ledger = ledger_with(fees=[fee(1, 3_500), fee(2, 2_000)])
    assert ledger.balance_minor == 105_500
    assert policy.late_fee_amount(ledger, 3) == 2_000


def test_principal_paid_in_full_leaves_only_the_fixed_first_fee() -> None:
    ledger = ledger_with(payments={"p1": 100_000})
    assert policy.late_fee_amount(ledger, 1) == 1_500
    assert policy.late_fee_amount(ledger, 2) == 0


def test_fixed_fee_only_contract() -> None:
    ledger = ledger_with(make_invoice(terms={"fixed_late_fee_minor": 4_000}))
    assert policy.late_fee_amount(ledger, 1) == 4_000
    assert policy.late_fee_amount(ledger, 2) == 0


def test_no_late_fee_terms_means_no_fee() -> None:
    ledger = ledger_with(make_invoice(terms={}))
    assert policy.late_fee_amount(ledger, 1) == 0


def test_no_monthly_fee_is_due_before_the_first_fee() -> None:
    assert policy.late_fee_due_at(ledger_with()) is None


@pytest.mark.parametrize(
    ("charged", "expected"),
    [
        (1, utc(2024, 2, 29, 9)),  # fee 2 when the second month of delay starts
        (2, utc(2024, 3, 31, 9)),  # fee 3 from the due date, not from the clamped 29 February
        (3, utc(2024, 4, 30, 9)),
        (12, utc(2025, 1, 31, 9)),
    ],
)
def test_fee_n_is_due_n_minus_1_months_after_the_due_moment(charged: int, expected: datetime) -> None:
    invoice = make_invoice(issue_date=date(2024, 1, 1), due_date=date(2024, 1, 31))
    ledger = ledger_with(invoice, fees=[fee(n) for n in range(1, charged + 1)])
    assert policy.late_fee_due_at(ledger) == expected


def test_monthly_fee_is_never_before_the_late_fee_stage() -> None:
    late_policy = {
        "stages": [
            {"action": "reminder", "offset": "P1D"},
            {"action": "late_fee", "offset": "P40D"},
            {"action": "agency", "offset": "P90D"},
        ]
    }
    invoice = make_invoice(policy=late_policy)
    stage_at = utc(2024, 3, 15, 9) + timedelta(days=40)
    assert policy.late_fee_due_at(ledger_with(invoice, fees=[fee(1)])) == stage_at  # not 15 April
    assert policy.late_fee_due_at(ledger_with(invoice, fees=[fee(1), fee(2)])) == utc(2024, 5, 15, 9)


def test_no_monthly_fee_without_a_percentage() -> None:
    invoice = make_invoice(terms={"late_fee_percent_per_month": "0", "fixed_late_fee_minor": 1_500})
    assert policy.late_fee_due_at(ledger_with(invoice, fees=[fee(1, 1_500)])) is None


def test_no_monthly_fee_without_a_late_fee_stage() -> None:
    invoice = make_invoice(policy={"stages": [{"action": "reminder", "offset": "P1D"}]})
    assert policy.late_fee_due_at(ledger_with(invoice, fees=[fee(1)])) is None


def test_monthly_fee_is_shifted_by_pauses() -> None:
    paused = timedelta(days=7, hours=5)
    ledger = ledger_with(fees=[fee(1)], paused=paused)
    assert policy.late_fee_due_at(ledger) == utc(2024, 4, 15, 9) + paused


def test_monthly_fee_keeps_the_local_due_time_across_dst() -> None:
    invoice = make_invoice(time_zone="Europe/Bucharest")  # due 15 March 09:00 EET
    due = policy.late_fee_due_at(ledger_with(invoice, fees=[fee(1)]))
    assert due == utc(2024, 4, 15, 6)  # 09:00 EEST


def test_a_monthly_fee_is_only_scheduled_when_it_charges_something() -> None:
    ledger = ledger_with(fees=[fee(1, 3_500)], payments={"p1": 99_980})
    assert ledger.principal_outstanding_minor == 20
    due = policy.late_fee_due_at(ledger)
    assert due is None or policy.late_fee_amount(ledger, len(ledger.fees) + 1) > 0


# --- days overdue ----------------------------------------------------------------------------


def test_still_the_due_date_locally_though_the_next_day_in_utc() -> None:
    now = utc(2024, 3, 16, 2)  # 15 March 22:00 in New York
    assert now.astimezone(NEW_YORK).date() == date(2024, 3, 15)
    assert policy.days_overdue(make_invoice(time_zone="America/New_York"), now) == 0
    assert policy.days_overdue(make_invoice(time_zone="UTC"), now) == 1


def test_already_the_next_day_locally_though_still_the_due_date_in_utc() -> None:
    now = utc(2024, 3, 15, 22, 30)  # 16 March 00:30 in Bucharest
    assert policy.days_overdue(make_invoice(time_zone="Europe/Bucharest"), now) == 1
    assert policy.days_overdue(make_invoice(time_zone="UTC"), now) == 0


@pytest.mark.parametrize(
    ("now", "days"),
    [
        (utc(2024, 3, 1, 12), 0),
        (utc(2024, 3, 15, 23, 59), 0),
        (utc(2024, 3, 16, 0, 0), 1),
        (utc(2024, 3, 25, 12), 10),
        (utc(2024, 6, 13, 12), 90),
    ],
)
def test_days_overdue_counts_whole_local_days_and_never_goes_negative(now: datetime, days: int) -> None:
    assert policy.days_overdue(make_invoice(), now) == days


# --- early-payment discount ------------------------------------------------------------------


def discount_invoice(**overrides: Any) -> Invoice:
    """Issued 1 March with 2 % off if paid within 10 days (until 11 March, local)."""
    terms = {"early_payment_discount": {"percent": "2", "within_days": 10}}
    return make_invoice(terms=terms, time_zone="Europe/Bucharest", **overrides)


def test_discount_deadline_is_within_days_after_issue() -> None:
    assert policy.discount_deadline(discount_invoice()) == date(2024, 3, 11)
    assert policy.discount_deadline(make_invoice()) is None


@pytest.mark.parametrize(
    ("now", "discount"),
    [
        (utc(2024, 3, 1, 10), 2_000),
        (utc(2024, 3, 11, 21, 0), 2_000),  # 11 March 23:00 in Bucharest: last day of the window
        (utc(2024, 3, 11, 22, 30), 0),  # 12 March 00:30 in Bucharest, though still 11 March in UTC
        (utc(2024, 3, 20, 10), 0),
    ],
)
def test_discount_is_available_inside_the_window_only(now: datetime, discount: int) -> None:
    assert policy.discount_available(ledger_with(discount_invoice()), now) == discount


def test_discount_is_not_offered_twice() -> None:
    ledger = ledger_with(discount_invoice(), discount_minor=2_000)
    assert policy.discount_available(ledger, utc(2024, 3, 5, 10)) == 0


def test_no_discount_without_the_term() -> None:
    assert policy.discount_available(ledger_with(), utc(2024, 3, 2, 10)) == 0


def test_discount_is_rounded_half_up() -> None:
    terms = {"early_payment_discount": {"percent": "2.5", "within_days": 10}}
    invoice = make_invoice(amount_minor=12_345, terms=terms)  # 308.625
    assert policy.discount_available(ledger_with(invoice), utc(2024, 3, 2, 10)) == 309


# --- payment plan ----------------------------------------------------------------------------


def plan_ledger(**fields: Any) -> InvoiceLedger:
    """Bucharest invoice; 10,000 already paid when a plan of 300 + 300 + 400 was agreed on 1 April."""
    plan = PaymentPlan.model_validate(
        {
            "instalments": [
                {"due_date": "2024-04-15", "amount_minor": 30_000},
                {"due_date": "2024-05-15", "amount_minor": 30_000},
                {"due_date": "2024-06-15", "amount_minor": 40_000},
            ]
        }
    )
    progress = PlanInProgress(plan=plan, agreed_at=utc(2024, 4, 1, 10), settled_at_agreement_minor=10_000)
    fields.setdefault("payments", {"before": 10_000})
    return ledger_with(make_invoice(time_zone="Europe/Bucharest"), plan=progress, **fields)


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (0, utc(2024, 4, 16, 6)),  # 16 April 09:00 EEST: the morning after the due date
        (1, utc(2024, 5, 16, 6)),
        (2, utc(2024, 6, 16, 6)),
    ],
)
def test_instalment_is_checked_the_morning_after_its_due_date(index: int, expected: datetime) -> None:
    assert policy.instalment_check_at(plan_ledger(), index) == expected


@pytest.mark.parametrize(("instalments", "expected"), [(0, 0), (1, 30_000), (2, 60_000), (3, 100_000)])
def test_amount_expected_after_instalments(instalments: int, expected: int) -> None:
    assert policy.plan_amount_expected(plan_ledger(), instalments) == expected


def test_amount_received_counts_only_what_came_after_the_plan() -> None:
    ledger = plan_ledger(payments={"before": 10_000, "i1": 30_000})
    assert policy.plan_amount_received(ledger) == 30_000
    ledger.credited_minor = 5_000
    assert policy.plan_amount_received(ledger) == 35_000
    ledger.payments["i2"] = 20_000
    assert policy.plan_amount_received(ledger) < policy.plan_amount_expected(ledger, 2)


# --- legal summary ---------------------------------------------------------------------------


def test_legal_summary_fields() -> None:
    ledger = ledger_with(fees=[fee(1, 3_500), fee(2, 2_000)], payments={"p1": 20_000})
    summary = policy.legal_summary(ledger, utc(2024, 7, 1, 12))
    assert summary["balance_minor"] == 100_000 + 5_500 - 20_000
    assert summary["fees_minor"] == 5_500
    assert summary["paid_minor"] == 20_000
    assert summary["days_overdue"] == 108
    assert summary["cost_of_action_minor"] == 150_000
    assert summary["net_if_recovered_minor"] == 85_500 - 150_000
    assert summary["small_claims_limit_minor"] == 500_000
    assert summary["worth_suing"] is False
    assert summary["small_claims_eligible"] is True
    assert summary["summary"] == (
        "Owed 855.00 EUR after 108 days; action costs about 1500.00 EUR; within the small-claims limit."
    )


@pytest.mark.parametrize(
    ("amount", "worth_suing", "small_claims"),
    [
        (100_000, False, True),
        (150_000, False, True),  # recovering exactly the cost gains nothing
        (150_001, True, True),
        (500_000, True, True),  # at the limit is still small claims
        (500_001, True, False),
        (5_000_000, True, False),
    ],
)
def test_legal_summary_weighs_cost_and_small_claims_limit(amount: int, worth_suing: bool, small_claims: bool) -> None:
    summary = policy.legal_summary(ledger_with(make_invoice(amount_minor=amount)), utc(2024, 7, 1))
    assert summary["worth_suing"] is worth_suing
    assert summary["small_claims_eligible"] is small_claims
    assert ("within the small-claims limit" in summary["summary"]) is small_claims
    assert ("above the small-claims limit" in summary["summary"]) is not small_claims


def test_legal_summary_uses_the_policy_settings_and_the_currency() -> None:
    settings = {**DEFAULT.model_dump(), "cost_of_legal_action_minor": 50_000, "small_claims_limit_minor": 80_000}
    invoice = make_invoice(currency="BHD", amount_minor=100_000, policy=settings)
    summary = policy.legal_summary(ledger_with(invoice), utc(2024, 3, 20))
    assert summary["worth_suing"] is True
    assert summary["small_claims_eligible"] is False
    assert summary["net_if_recovered_minor"] == 50_000
    assert summary["summary"] == (
        "Owed 100.000 BHD after 5 days; action costs about 50.000 BHD; above the small-claims limit."
    )


def test_legal_summary_of_an_overpaid_invoice_owes_nothing() -> None:
    summary = policy.legal_summary(ledger_with(payments={"p1": 120_000}), utc(2024, 7, 1))
    assert summary["balance_minor"] == 0
    assert summary["worth_suing"] is False


# --- sending window ----------------------------------------------------------------------------

ROMANIAN_HOLIDAYS = frozenset({date(2026, 11, 30), date(2026, 12, 1), date(2026, 12, 25), date(2026, 12, 26)})


def windowed(**overrides: Any) -> Invoice:
    """A Bucharest invoice with the default policy's window: Monday to Friday, 09:00-17:00."""
    return make_invoice(**{"time_zone": "Europe/Bucharest", "country": "RO", "policy": DEFAULT, **overrides})


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BUCHAREST)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (local(2026, 11, 25, 10, 30), local(2026, 11, 25, 10, 30)),  # Wednesday, office hours: as is
        (local(2026, 11, 25, 9, 0), local(2026, 11, 25, 9, 0)),  # the opening itself
        (local(2026, 11, 25, 7, 15), local(2026, 11, 25, 9, 0)),  # too early: later that morning
        (local(2026, 11, 25, 17, 0), local(2026, 11, 26, 9, 0)),  # the closing: next morning
        (local(2026, 11, 27, 22, 0), local(2026, 12, 2, 9, 0)),  # Friday night, weekend, two holidays
        (local(2026, 11, 28, 9, 0), local(2026, 12, 2, 9, 0)),  # Saturday
        (local(2026, 12, 24, 16, 59), local(2026, 12, 24, 16, 59)),  # Christmas Eve is a working day
        (local(2026, 12, 24, 17, 30), local(2026, 12, 28, 9, 0)),  # Christmas and the weekend
    ],
)
def test_next_sending_moment_waits_for_business_hours_and_holidays(moment, expected):
    assert policy.next_sending_moment(windowed(), moment, ROMANIAN_HOLIDAYS) == expected


def test_moment_in_utc_is_judged_in_the_clients_zone():
    # 06:30 UTC is 08:30 in Bucharest: before the window opens at 09:00 local
    assert policy.next_sending_moment(windowed(), utc(2026, 11, 25, 6, 30), ROMANIAN_HOLIDAYS) == local(2026, 11, 25, 9)


def test_no_window_sends_at_any_moment():
    invoice = make_invoice(time_zone="Europe/Bucharest", country="RO")  # harness policy: no window
    assert policy.next_sending_moment(invoice, local(2026, 11, 28, 3, 0), ROMANIAN_HOLIDAYS) == local(2026, 11, 28, 3, 0)


def test_window_can_ignore_holidays_and_allow_saturdays():
    window = {"weekdays": [0, 1, 2, 3, 4, 5], "opens": "10:00:00", "closes": "14:00:00", "skip_public_holidays": False}
    invoice = windowed(policy={"stages": [s.model_dump(mode="json") for s in DEFAULT.stages], "sending_window": window})
    assert policy.next_sending_moment(invoice, local(2026, 11, 27, 15, 0), ROMANIAN_HOLIDAYS) == local(2026, 11, 28, 10)
    assert policy.next_sending_moment(invoice, local(2026, 11, 30, 11, 0), ROMANIAN_HOLIDAYS) == local(2026, 11, 30, 11)


def test_window_opening_across_the_autumn_clock_change():
    # Saturday 24 October 2026 is in summer time, Monday 26 October in winter time: 09:00 local either way
    assert policy.next_sending_moment(windowed(), local(2026, 10, 24, 12, 0), frozenset()) == local(2026, 10, 26, 9)
    assert local(2026, 10, 26, 9).utcoffset() == timedelta(hours=2)


def test_holiday_years_are_this_one_and_the_next_only_when_needed():
    assert list(policy.holiday_years_needed(windowed(), local(2026, 12, 31, 23, 30))) == [2026, 2027]
    assert list(policy.holiday_years_needed(windowed(country=None), local(2026, 12, 31))) == []
    assert list(policy.holiday_years_needed(make_invoice(country="RO"), utc(2026, 5, 1))) == []  # no window


def test_a_window_must_close_after_it_opens():
    with pytest.raises(ValueError, match="close after it opens"):
        windowed(policy={"stages": [{"action": "reminder", "offset": "P1D"}],
                         "sending_window": {"opens": "17:00:00", "closes": "09:00:00"}})


# --- the next step ---------------------------------------------------------------------------


def test_next_step_is_the_policys_next_stage() -> None:
    ledger = ledger_with(next_stage_index=2)  # reminder and warning done
    step = policy.next_step(ledger, utc(2024, 3, 21), window_applies=True)
    assert step is not None
    assert (step.kind, step.label, step.at, step.windowed) == (StepKind.STAGE, "late_fee", utc(2024, 3, 25, 9), True)


def test_no_next_step_while_disputed_or_once_closed() -> None:
    disputed = ledger_with(dispute=Dispute(opened_at=utc(2024, 3, 20), reason="not delivered"))
    assert policy.next_step(disputed, utc(2024, 3, 21), window_applies=True) is None
    assert policy.next_step(ledger_with(escalation=InvoiceState.PAID), utc(2024, 3, 21), window_applies=True) is None


def test_on_a_plan_the_next_step_is_the_instalment_check_only() -> None:
    step = policy.next_step(plan_ledger(), utc(2024, 4, 2), window_applies=True)
    assert step is not None
    assert (step.kind, step.label, step.at) == (StepKind.INSTALMENT, "instalment 1 check", utc(2024, 4, 16, 6))
    done = plan_ledger()
    assert done.plan is not None
    done.plan.checked = 3
    assert policy.next_step(done, utc(2024, 6, 20), window_applies=True) is None


def test_monthly_fee_and_renewed_legal_review_are_steps_between_rungs() -> None:
    ledger = ledger_with(fees=[fee(1)], next_stage_index=len(DEFAULT.stages))
    step = policy.next_step(ledger, utc(2024, 3, 26), window_applies=True)
    assert step is not None
    assert (step.kind, step.label, step.at) == (StepKind.LATE_FEE, "late fee 2", utc(2024, 4, 15, 9))
    ledger.legal_review_again_at = utc(2024, 4, 1)
    step = policy.next_step(ledger, utc(2024, 3, 26), window_applies=True)
    assert step is not None
    assert (step.kind, step.label) == (StepKind.LEGAL_REVIEW, "legal review again")


def test_a_stage_waits_for_the_sending_window_but_the_discount_end_does_not() -> None:
    invoice = windowed(terms={"early_payment_discount": {"percent": "2", "within_days": 7}})
    ledger = ledger_with(invoice)
    discount_ends = policy.next_step(ledger, local(2024, 3, 1, 10), window_applies=True)
    assert discount_ends is not None  # 8 March is the last day: it lapses on Saturday 9 March, at 09:00
    assert (discount_ends.kind, discount_ends.at, discount_ends.windowed) == (
        StepKind.DISCOUNT_ENDS,
        local(2024, 3, 9, 9),
        False,
    )
    reminder = policy.next_step(ledger, local(2024, 3, 10), window_applies=True)
    assert reminder is not None  # due Friday 15 March: the reminder's Saturday moves to Monday
    assert (reminder.label, reminder.at) == ("reminder (next sending window)", local(2024, 3, 18, 9))
    unwindowed = policy.next_step(ledger, local(2024, 3, 10), window_applies=False)
    assert unwindowed is not None
    assert (unwindowed.label, unwindowed.at) == ("reminder", local(2024, 3, 16, 9))


def test_the_suspension_date_a_notice_announces_is_in_the_sending_window() -> None:
    ledger = ledger_with(windowed())  # suspend stage +20 days: Thursday 4 April, a working day
    assert policy.suspension_at(ledger, window_applies=True) == local(2024, 4, 4, 9)
    ledger.paused = timedelta(days=2)  # Saturday 6 April: the next window opens on Monday
    assert policy.suspension_at(ledger, window_applies=True) == local(2024, 4, 8, 9)
    assert policy.suspension_at(ledger, window_applies=False) == local(2024, 4, 6, 9)
    no_cut = {"stages": [{"action": "reminder", "offset": "P1D"}]}
    assert policy.suspension_at(ledger_with(windowed(policy=no_cut)), window_applies=True) is None


# --- issue 20: the notice before a cut, the cap on late charges ------------------------------


def test_an_ultimatum_held_to_monday_names_a_cut_five_days_on_inside_the_window() -> None:
    """Due Friday 15 March 2024: the ultimatum (+15, a Saturday) goes on Monday 1 April, so the cut is not
    the suspend stage's Thursday but the next opening five days on, Monday 8 April; the stage waits for it."""
    ledger = ledger_with(make_invoice(policy=DEFAULT), money_rules=True, next_stage_index=4)
    assert policy.cut_to_announce(ledger, utc(2024, 4, 1, 9, 0, 20), window_applies=True) == utc(2024, 4, 8, 9)
    # one sent on Friday 29 March: five days on comes before the stage, so it names the stage's own moment
    assert policy.cut_to_announce(ledger, utc(2024, 3, 29, 9, 0, 20), window_applies=True) == utc(2024, 4, 4, 9)
    assert policy.next_step(ledger, utc(2024, 4, 4, 9), True).at == utc(2024, 4, 4, 9)  # none delivered: due, to send one
    told = ledger.model_copy(update={"cut_announced_for": utc(2024, 4, 8, 9), "cut_notice_from": utc(2024, 4, 1, 9)})
    step = policy.next_step(told, utc(2024, 4, 4, 9), True)
    assert step is not None and (step.kind, step.at) == (StepKind.STAGE, utc(2024, 4, 8, 9))
    assert not policy.cut_announced(told, utc(2024, 4, 5, 9)) and policy.cut_announced(told, utc(2024, 4, 8, 9))
    legacy = ledger.model_copy(update={"money_rules": False})
    assert policy.next_step(legacy, utc(2024, 4, 4, 9), True).at == utc(2024, 4, 4, 9)


def test_late_fees_are_cut_down_to_the_cap_and_stop_once_stopped() -> None:
    invoice = make_invoice(
        terms={"late_fee_percent_per_month": "10"}, policy={**DEFAULT.model_dump(), "late_charges_cap_percent": 25}
    )
    ledger = ledger_with(invoice, money_rules=True, fees=[fee(1, 10_000), fee(2, 10_000)])
    assert policy.late_fee_amount(ledger, 3) == 5_000  # 10 % of 1,000.00, cut to what is left of 250.00
    assert policy.late_charges_stop(ledger) is None
    capped = ledger.model_copy(update={"fees": [*ledger.fees, fee(3, 5_000)]})
    assert policy.late_fee_amount(capped, 4) == 0 and policy.late_fee_due_at(capped) is None
    assert policy.late_charges_stop(capped) == "cap reached"
    assert policy.late_fee_amount(ledger.model_copy(update={"money_rules": False}), 3) == 10_000
    stopped = ledger.model_copy(update={"late_charges_stopped": "handed to the agency"})
    assert policy.late_fee_amount(stopped, 3) == 0


def test_credited_is_dispute_credits_everywhere_and_deducted_the_sum() -> None:
    """The status names each amount; notices and the agency package carry the sum as ``deducted_minor``."""
    ledger = ledger_with(credited_minor=5_000, discount_minor=600, written_off_minor=1_000, payments={"p1": 10_000})
    assert ledger.deducted_minor == 6_600
    assert ledger.balance_minor == ledger.invoice.amount_minor - 10_000 - 6_600
    status = status_of(ledger, None, datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert (status.credited_minor, status.discount_minor, status.written_off_minor) == (5_000, 600, 1_000)


def test_a_notice_or_package_scheduled_before_v6_reads_its_sum_as_deducted() -> None:
    """An activity scheduled by a worker before release v6 carries the sum under its old name."""
    for sample in (notice(NoticeKind.REMINDER, "en", deducted_minor=5_600), handover(make_invoice())):
        before_v6 = {("credited_minor" if k == "deducted_minor" else k): v for k, v in sample.model_dump().items()}
        assert type(sample).model_validate(before_v6) == sample


# --- value dates and allocation (issue 20 items 1 and 2) -------------------------------------


@pytest.mark.parametrize(
    ("allocation", "paid", "expected"),
    [
        ("principal_first", 50_000, (50_000, 0)),
        ("principal_first", 101_000, (100_000, 1_000)),
        ("principal_first", 200_000, (100_000, 3_500)),  # the rest is an overpayment
        ("costs_first", 50_000, (46_500, 3_500)),
        ("costs_first", 2_000, (0, 2_000)),
        ("costs_first", 200_000, (100_000, 3_500)),
    ],
)
def test_the_allocation_apportions_a_payment(allocation: str, paid: int, expected: tuple[int, int]):
    assert Allocation(allocation).apportion(100_000, 3_500, paid) == expected


def test_costs_first_percentage_fees_run_on_the_principal_the_payments_left():
    costs_first = make_invoice(policy={**harness.ROUND_THE_CLOCK.model_dump(mode="json"), "allocation": "costs_first"})
    for invoice, outstanding in ((make_invoice(), 50_000), (costs_first, 53_500)):
        ledger = ledger_with(invoice, fees=[fee(1, 3_500)], payments={"p1": 50_000})
        assert ledger.principal_outstanding_minor == outstanding


def test_a_fee_is_paid_in_time_when_the_money_that_had_arrived_covered_the_principal():
    fees = [
        Fee(number=1, amount_minor=3_500, charged_at=utc(2024, 3, 25, 9), reason="late fee"),
        Fee(number=2, amount_minor=2_000, charged_at=utc(2024, 4, 15, 9), reason="late fee, month 2 of delay"),
    ]
    arrived_between = ledger_with(fees=fees, payments={"p1": 100_000}, arrived_at={"p1": utc(2024, 4, 1)})
    assert [f.number for f in policy.late_fees_paid_in_time(arrived_between)] == [2]
    costs_first = make_invoice(policy={**harness.ROUND_THE_CLOCK.model_dump(mode="json"), "allocation": "costs_first"})
    fee_paid_first = ledger_with(costs_first, fees=fees, payments={"p1": 100_000}, arrived_at={"p1": utc(2024, 4, 1)})
    assert policy.late_fees_paid_in_time(fee_paid_first) == []  # the money paid fee 1 first: principal still owed
    arrived_early = ledger_with(fees=fees, payments={"p1": 100_000}, arrived_at={"p1": utc(2024, 3, 17)})
    assert [f.number for f in policy.late_fees_paid_in_time(arrived_early)] == [1, 2]
    partly = ledger_with(fees=fees, payments={"p1": 60_000}, arrived_at={"p1": utc(2024, 3, 17)})
    assert policy.late_fees_paid_in_time(partly) == []
    unknown_arrival = ledger_with(fees=fees, payments={"p1": 100_000})
    assert policy.late_fees_paid_in_time(unknown_arrival) == []
