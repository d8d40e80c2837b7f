"""Validation at the edge: every bad value is refused with a message that names the problem."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from workflows.bounds import DateWindow
from workflows.models import (
    LEGAL_THRESHOLDS,
    ContractTerms,
    DecideLegal,
    DunningPolicy,
    EarlyPaymentDiscount,
    Invoice,
    MarkFactored,
    Payment,
    PaymentPlan,
    ResolveDispute,
    Stage,
    StageAction,
    format_money,
    minor_units_per_major,
)


def invoice_fields(**overrides: Any) -> dict[str, Any]:
    """A valid invoice as the API would receive it, with any field replaced."""
    fields: dict[str, Any] = {
        "invoice_id": "INV-2024.001",
        "customer_id": "CUST_7",
        "contact": {"name": "Ana Pop", "email": "ana@client.example"},
        "amount_minor": 100_000,
        "currency": "EUR",
        "issue_date": "2024-03-01",
        "due_date": "2024-03-15",
        "language": "ro",
        "time_zone": "Europe/Bucharest",
        "terms": {"late_fee_percent_per_month": "2", "fixed_late_fee_minor": 1_500},
    }
    fields.update(overrides)
    return fields


def rejection(model: type[BaseModel], data: dict[str, Any]) -> list[tuple[tuple, str]]:
    """``(location, message)`` of every error ``model`` reports for ``data`` (fails if it accepts it)."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [(tuple(error["loc"]), error["msg"]) for error in caught.value.errors()]


def assert_rejected(model: type[BaseModel], data: dict[str, Any], loc: tuple, *fragments: str) -> None:
    """``model`` refuses ``data`` with exactly one error, at ``loc``, whose message contains every fragment."""
    errors = rejection(model, data)
    assert len(errors) == 1, errors
    where, message = errors[0]
    assert where == loc, errors
    for fragment in fragments:
        assert fragment in message, message


def stages(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"stages": [{"action": action, "offset": offset} for action, offset in pairs]}


# --- the baseline ----------------------------------------------------------------------------


def test_a_complete_invoice_is_accepted_with_its_terms() -> None:
    invoice = Invoice.model_validate(invoice_fields())
    assert invoice.amount_minor == 100_000
    assert invoice.due_date == date(2024, 3, 15)
    assert invoice.terms.late_fee_percent_per_month == Decimal("2")
    assert invoice.workflow_id == "invoice-INV-2024.001"


def test_optional_terms_default_to_nothing_assumed() -> None:
    fields = invoice_fields()
    for optional in ("language", "time_zone", "terms"):
        del fields[optional]
    invoice = Invoice.model_validate(fields)
    assert (invoice.language, invoice.time_zone) == ("en", "UTC")
    assert invoice.terms.late_fee_percent_per_month == 0 and invoice.terms.fixed_late_fee_minor == 0
    assert invoice.terms.remote_disconnect_authorized is False
    assert invoice.terms.early_payment_discount is None
    assert invoice.policy == DunningPolicy.default().with_legal_thresholds("EUR")


def test_models_are_immutable() -> None:
    invoice = Invoice.model_validate(invoice_fields())
    with pytest.raises(ValidationError, match="frozen"):
        invoice.amount_minor = 1  # type: ignore[misc]


# --- amounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (0, "Input should be greater than 0"),
        (-1, "Input should be greater than 0"),
        (-100_000, "Input should be greater than 0"),
        (10**15 + 1, "Input should be less than or equal to 1000000000000000"),
        (12.5, "Input should be a valid integer"),
        ("12.50", "Input should be a valid integer"),
    ],
)
def test_invoice_amount_must_be_a_positive_whole_number_of_minor_units(amount: Any, message: str) -> None:
    assert_rejected(Invoice, invoice_fields(amount_minor=amount), ("amount_minor",), message)


@pytest.mark.parametrize("amount", [0, -500, 10**15 + 1])
def test_payment_amount_is_checked_like_the_invoice_amount(amount: int) -> None:
    data = {"payment_id": "pay-1", "amount_minor": amount, "currency": "EUR"}
    errors = rejection(Payment, data)
    assert [loc for loc, _ in errors] == [("amount_minor",)]


def test_the_largest_amount_is_accepted() -> None:
    assert Invoice.model_validate(invoice_fields(amount_minor=10**15)).amount_minor == 10**15


# --- currency, language, time zone -----------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "message"),
    [
        ("ABC", "unknown currency 'ABC': use an ISO 4217 code"),
        ("QQQ", "unknown currency 'QQQ'"),
        ("eur", "unknown currency 'eur'"),
        ("Eur", "unknown currency 'Eur'"),
        ("EU", "String should have at least 3 characters"),
        ("EURO", "String should have at most 3 characters"),
        ("", "String should have at least 3 characters"),
    ],
)
def test_unknown_currency_is_rejected(currency: str, message: str) -> None:
    assert_rejected(Invoice, invoice_fields(currency=currency), ("currency",), message)


def test_payment_currency_is_validated_too() -> None:
    data = {"payment_id": "pay-1", "amount_minor": 100, "currency": "eur"}
    assert_rejected(Payment, data, ("currency",), "unknown currency 'eur'")


@pytest.mark.parametrize("currency", ["EUR", "RON", "BGN", "USD", "JPY", "BHD", "XOF"])
def test_iso_currencies_are_accepted(currency: str) -> None:
    # a currency without default legal thresholds needs them in the policy (its legal review uses them)
    thresholds = {"cost_of_legal_action_minor": 150_000, "small_claims_limit_minor": 500_000}
    policy = {**DunningPolicy.default().model_dump(mode="json"), **thresholds}
    assert Invoice.model_validate(invoice_fields(currency=currency, policy=policy)).currency == currency


@pytest.mark.parametrize("currency", ["XXX", "XTS", "XAU", "DEM"])
def test_codes_that_are_not_money_in_use_are_rejected(currency: str) -> None:
    assert_rejected(Invoice, invoice_fields(currency=currency), ("currency",), f"unknown currency '{currency}'")


@pytest.mark.parametrize("language", ["de", "EN", "ro-RO", ""])
def test_unknown_language_is_rejected(language: str) -> None:
    errors = rejection(Invoice, invoice_fields(language=language))
    assert errors == [((), f"Value error, unsupported language {language!r}: use one of en, ro, bg, et, it")]


@pytest.mark.parametrize("language", ["en", "ro", "bg", "et", "it"])
def test_each_language_of_the_articles_is_accepted(language: str) -> None:
    assert Invoice.model_validate(invoice_fields(language=language)).language == language


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe/Bucuresti", "utc", "Europe", "", "../etc/passwd", "UTC "])
def test_unknown_time_zone_is_rejected(zone: str) -> None:
    assert_rejected(
        Invoice,
        invoice_fields(time_zone=zone),
        ("time_zone",),
        f"unknown time zone {zone!r}: use an IANA name such as Europe/Bucharest",
    )


@pytest.mark.parametrize("zone", ["Europe/Bucharest", "Europe/Sofia", "Europe/Tallinn", "Europe/Rome", "UTC"])
def test_iana_time_zones_are_accepted(zone: str) -> None:
    assert Invoice.model_validate(invoice_fields(time_zone=zone)).time_zone == zone


# --- dates -----------------------------------------------------------------------------------


def test_due_date_before_issue_date_is_rejected() -> None:
    errors = rejection(Invoice, invoice_fields(issue_date="2024-03-10", due_date="2024-03-09"))
    assert errors == [((), "Value error, due date 2024-03-09 is before issue date 2024-03-10")]


def test_due_on_the_day_of_issue_is_accepted() -> None:
    invoice = Invoice.model_validate(invoice_fields(issue_date="2024-03-10", due_date="2024-03-10"))
    assert invoice.due_date == invoice.issue_date


# --- identifiers -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["invoice_id", "customer_id"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("INV 1", "String should match pattern"),
        (" INV1", "String should match pattern"),
        ("INV1\n", "String should match pattern"),
        ("INV/1", "String should match pattern"),
        ("-INV1", "String should match pattern"),
        ("FACTURĂ-1", "String should match pattern"),
        ("", "String should have at least 1 character"),
        ("A" * 65, "String should have at most 64 characters"),
    ],
)
def test_bad_identifiers_are_rejected(field: str, value: str, message: str) -> None:
    assert_rejected(Invoice, invoice_fields(**{field: value}), (field,), message)


def test_identifier_of_64_characters_is_accepted() -> None:
    assert Invoice.model_validate(invoice_fields(invoice_id="A" * 64)).invoice_id == "A" * 64


def test_bad_payment_id_is_rejected() -> None:
    data = {"payment_id": "pay 1", "amount_minor": 100, "currency": "EUR"}
    assert_rejected(Payment, data, ("payment_id",), "String should match pattern")


# --- unknown fields --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        (invoice_fields(amount=100_000), ("amount",)),
        (invoice_fields(contact={"name": "Ana Pop", "email": "ana@client.example", "phone": "+40"}), ("contact", "phone")),
        (invoice_fields(terms={"late_fee_percent": "2"}), ("terms", "late_fee_percent")),
    ],
)
def test_unknown_fields_are_rejected_not_ignored(data: dict[str, Any], loc: tuple) -> None:
    assert_rejected(Invoice, data, loc, "Extra inputs are not permitted")


def test_unknown_field_on_a_request_is_rejected() -> None:
    data = {"payment_id": "pay-1", "amount_minor": 100, "currency": "EUR", "method": "card"}
    assert_rejected(Payment, data, ("method",), "Extra inputs are not permitted")


# --- contact ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("not-an-email", "value is not a valid email address: An email address must have an @-sign"),
        ("ana@client", "value is not a valid email address: The part after the @-sign is not valid"),
        ("ana@@client.example", "value is not a valid email address"),
        ("", "value is not a valid email address"),
        ("ana@client.example\nBcc: all@victims.example", "Carriage return and line feed characters are not allowed"),
    ],
)
def test_bad_email_is_rejected(email: str, message: str) -> None:
    contact = {"name": "Ana Pop", "email": email}
    assert_rejected(Invoice, invoice_fields(contact=contact), ("contact", "email"), message)


@pytest.mark.parametrize(
    "name",
    [
        "Ana Pop\nBcc: all@victims.example",
        "Ana Pop\r\nBcc: all@victims.example",
        "Ana Pop\rBcc: all@victims.example",
        "Ana Pop\n",
        "\nAna Pop",
    ],
)
def test_header_injection_in_the_contact_name_is_rejected(name: str) -> None:
    contact = {"name": name, "email": "ana@client.example"}
    assert_rejected(Invoice, invoice_fields(contact=contact), ("contact", "name"), "without control characters")


@pytest.mark.parametrize("control", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e"])
def test_other_line_breaks_in_the_contact_name_are_rejected(control: str) -> None:
    contact = {"name": f"Ana Pop{control}Bcc: all@victims.example", "email": "ana@client.example"}
    assert_rejected(Invoice, invoice_fields(contact=contact), ("contact", "name"))


def test_empty_contact_name_is_rejected() -> None:
    contact = {"name": "", "email": "ana@client.example"}
    assert_rejected(Invoice, invoice_fields(contact=contact), ("contact", "name"), "at least 1 character")


def test_non_ascii_contact_name_is_accepted() -> None:
    contact = {"name": "Ștefan Țăranu – Ăîâ SRL", "email": "stefan@client.example"}
    assert Invoice.model_validate(invoice_fields(contact=contact)).contact.name == contact["name"]


# --- policy ----------------------------------------------------------------------------------


def test_default_policy_has_the_published_offsets() -> None:
    policy = DunningPolicy.default()
    offsets = {stage.action: stage.offset for stage in policy.stages}
    assert [stage.action for stage in policy.stages] == [
        StageAction.REMINDER,
        StageAction.WARNING,
        StageAction.LATE_FEE,
        StageAction.ULTIMATUM,
        StageAction.SUSPEND,
        StageAction.AGENCY,
        StageAction.LEGAL_REVIEW,
    ]
    assert offsets[StageAction.REMINDER] == timedelta(days=1)
    assert offsets[StageAction.WARNING] == timedelta(days=5)
    assert offsets[StageAction.LATE_FEE] == timedelta(days=10)
    assert offsets[StageAction.ULTIMATUM] == timedelta(days=15)
    assert offsets[StageAction.SUSPEND] == timedelta(days=20)
    assert offsets[StageAction.AGENCY] == timedelta(days=90)
    assert offsets[StageAction.LEGAL_REVIEW] > offsets[StageAction.AGENCY]


def test_default_policy_has_no_courtesy_note_and_sane_legal_settings() -> None:
    policy = DunningPolicy.default()
    with pytest.raises(KeyError):
        policy.stage(StageAction.COURTESY)
    assert policy.legal_review_again_after > timedelta(0)
    assert policy.cost_of_legal_action_minor is None and policy.small_claims_limit_minor is None  # per currency
    for thresholds in LEGAL_THRESHOLDS.values():
        assert thresholds["cost_of_legal_action_minor"] < thresholds["small_claims_limit_minor"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P5D", timedelta(days=5)),
        ("P90D", timedelta(days=90)),
        ("-P3D", timedelta(days=-3)),
        ("PT36H", timedelta(hours=36)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("P2W", timedelta(weeks=2)),
    ],
)
def test_offsets_parse_from_iso_8601_durations(text: str, expected: timedelta) -> None:
    assert Stage.model_validate({"action": "warning", "offset": text}).offset == expected


def test_a_policy_written_as_json_durations_equals_the_default() -> None:
    written = stages(
        ("reminder", "P1D"),
        ("warning", "P5D"),
        ("late_fee", "P10D"),
        ("ultimatum", "P15D"),
        ("suspend", "P20D"),
        ("agency", "P90D"),
        ("legal_review", "P120D"),
    )
    assert DunningPolicy.model_validate(written) == DunningPolicy.default()


def test_policy_survives_a_json_round_trip() -> None:
    policy = DunningPolicy.model_validate(stages(("courtesy", "-P3D"), ("reminder", "PT12H"), ("warning", "P5D")))
    dumped = policy.model_dump(mode="json")
    assert dumped["stages"][0]["offset"] == "-P3D"
    assert DunningPolicy.model_validate(dumped) == policy


@pytest.mark.parametrize(
    "pairs",
    [
        [("warning", "P1D"), ("reminder", "P5D")],
        [("reminder", "P1D"), ("suspend", "P5D"), ("ultimatum", "P10D")],
        [("legal_review", "P1D"), ("agency", "P2D")],
        [("reminder", "P1D"), ("courtesy", "P2D")],
    ],
)
def test_stages_out_of_action_order_are_rejected(pairs: list[tuple[str, str]]) -> None:
    errors = rejection(DunningPolicy, stages(*pairs))
    assert len(errors) == 1
    message = errors[0][1]
    assert "stages are out of order: actions must follow" in message
    assert "courtesy < reminder < warning < late_fee < ultimatum < suspend < agency < legal_review" in message


@pytest.mark.parametrize(
    "pairs",
    [
        [("reminder", "P5D"), ("warning", "P1D")],
        [("reminder", "P5D"), ("warning", "P5D")],
        [("reminder", "P1D"), ("warning", "P5D"), ("late_fee", "P10D"), ("suspend", "P9D")],
        [("courtesy", "-P1D"), ("reminder", "-P2D")],
    ],
)
def test_stages_out_of_offset_order_are_rejected(pairs: list[tuple[str, str]]) -> None:
    errors = rejection(DunningPolicy, stages(*pairs))
    assert errors == [((), "Value error, stages are out of order: each stage's offset must be later than the one before")]


@pytest.mark.parametrize(
    "pairs",
    [
        [("reminder", "P1D"), ("reminder", "P2D")],
        [("reminder", "P1D"), ("warning", "P5D"), ("late_fee", "P10D"), ("late_fee", "P40D")],
    ],
)
def test_duplicate_actions_are_rejected(pairs: list[tuple[str, str]]) -> None:
    errors = rejection(DunningPolicy, stages(*pairs))
    assert errors == [((), "Value error, each stage action may appear only once in a policy")]


@pytest.mark.parametrize("offset", ["P0D", "PT1H", "P1D"])
def test_courtesy_stage_must_come_before_the_due_date(offset: str) -> None:
    errors = rejection(DunningPolicy, stages(("courtesy", offset), ("reminder", "P2D")))
    assert errors == [((), "Value error, the courtesy note goes before the due date: its offset must be negative")]


def test_courtesy_stage_before_the_due_date_is_accepted() -> None:
    policy = DunningPolicy.model_validate(stages(("courtesy", "-P3D"), ("reminder", "P1D")))
    assert policy.stage(StageAction.COURTESY).offset == timedelta(days=-3)


def test_a_policy_needs_at_least_one_stage() -> None:
    assert_rejected(DunningPolicy, {"stages": []}, ("stages",), "List should have at least 1 item")


def test_unknown_stage_action_is_rejected() -> None:
    errors = rejection(DunningPolicy, stages(("nag", "P1D")))
    assert errors[0][0] == ("stages", 0, "action")
    assert "Input should be 'courtesy', 'reminder'" in errors[0][1]


@pytest.mark.parametrize("value", ["P0D", "-P1D"])
def test_legal_review_repeat_interval_must_be_positive(value: str) -> None:
    data = {**stages(("reminder", "P1D")), "legal_review_again_after": value}
    assert_rejected(DunningPolicy, data, ("legal_review_again_after",), "greater than 0")


def test_invalid_policy_inside_an_invoice_is_rejected_at_the_edge() -> None:
    errors = rejection(Invoice, invoice_fields(policy=stages(("warning", "P1D"), ("reminder", "P5D"))))
    assert [loc for loc, _ in errors] == [("policy",)]
    assert "stages are out of order" in errors[0][1]


# --- requests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dates",
    [
        ["2024-04-01", "2024-04-01"],
        ["2024-05-01", "2024-04-01"],
        ["2024-04-01", "2024-05-01", "2024-04-15"],
    ],
)
def test_payment_plan_dates_must_ascend_strictly(dates: list[str]) -> None:
    data = {"instalments": [{"due_date": day, "amount_minor": 10_000} for day in dates]}
    errors = rejection(PaymentPlan, data)
    assert errors == [((), "Value error, instalment due dates must be strictly ascending")]


def test_payment_plan_with_ascending_dates_is_accepted() -> None:
    plan = PaymentPlan.model_validate(
        {"instalments": [{"due_date": f"2024-0{m}-01", "amount_minor": 10_000 * m} for m in (4, 5, 6)]}
    )
    assert plan.total_minor == 150_000


def test_payment_plan_needs_an_instalment_with_a_positive_amount() -> None:
    assert_rejected(PaymentPlan, {"instalments": []}, ("instalments",), "at least 1 item")
    data = {"instalments": [{"due_date": "2024-04-01", "amount_minor": 0}]}
    assert_rejected(PaymentPlan, data, ("instalments", 0, "amount_minor"), "greater than 0")


def test_rejected_dispute_with_a_credit_is_rejected() -> None:
    errors = rejection(ResolveDispute, {"outcome": "rejected", "credit_minor": 5_000})
    assert errors == [((), "Value error, a rejected dispute carries no credit")]


@pytest.mark.parametrize(
    ("data", "credit"),
    [
        ({"outcome": "rejected"}, 0),
        ({"outcome": "upheld", "credit_minor": 5_000}, 5_000),
        ({"outcome": "upheld"}, 0),
    ],
)
def test_valid_dispute_resolutions_are_accepted(data: dict[str, Any], credit: int) -> None:
    assert ResolveDispute.model_validate(data).credit_minor == credit


def test_negative_dispute_credit_is_rejected() -> None:
    data = {"outcome": "upheld", "credit_minor": -1}
    assert_rejected(ResolveDispute, data, ("credit_minor",), "greater than or equal to 0")


@pytest.mark.parametrize(
    "data",
    [
        {"decision": "settle"},
        {"decision": "sue", "settle_amount_minor": 50_000},
        {"decision": "write_off", "settle_amount_minor": 50_000},
        {"decision": "agency", "settle_amount_minor": 50_000},
    ],
)
def test_settle_amount_goes_with_settle_and_only_with_settle(data: dict[str, Any]) -> None:
    errors = rejection(DecideLegal, data)
    assert errors == [((), "Value error, settle_amount_minor is required for 'settle' and only for 'settle'")]


@pytest.mark.parametrize(
    "data",
    [
        {"decision": "settle", "settle_amount_minor": 50_000},
        {"decision": "sue"},
        {"decision": "write_off", "note": "not worth it"},
        {"decision": "agency"},
    ],
)
def test_valid_legal_decisions_are_accepted(data: dict[str, Any]) -> None:
    assert DecideLegal.model_validate(data).settle_amount_minor == data.get("settle_amount_minor")


def test_settle_amount_must_be_positive() -> None:
    data = {"decision": "settle", "settle_amount_minor": 0}
    assert_rejected(DecideLegal, data, ("settle_amount_minor",), "greater than 0")


# --- money -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (12_345, "EUR", "123.45 EUR"),
        (100_000, "RON", "1000.00 RON"),
        (5, "EUR", "0.05 EUR"),
        (0, "EUR", "0.00 EUR"),
        (-5, "EUR", "-0.05 EUR"),
        (-12_345, "EUR", "-123.45 EUR"),
        (12_345, "JPY", "12345 JPY"),
        (-500, "JPY", "-500 JPY"),
        (12_345, "BHD", "12.345 BHD"),
        (1, "BHD", "0.001 BHD"),
        (-1_234, "BHD", "-1.234 BHD"),
    ],
)
def test_format_money_uses_the_currency_precision(amount: int, currency: str, text: str) -> None:
    assert format_money(amount, currency) == text


@pytest.mark.parametrize(("currency", "per_major"), [("EUR", 100), ("JPY", 1), ("BHD", 1000), ("RON", 100)])
def test_minor_units_per_major(currency: str, per_major: int) -> None:
    assert minor_units_per_major(currency) == per_major


# --- percentages -----------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["1.5", 1.5, Decimal("1.5")])
def test_percentages_are_decimals_and_dump_exactly(given: Any) -> None:
    terms = ContractTerms(late_fee_percent_per_month=given)
    assert type(terms.late_fee_percent_per_month) is Decimal
    assert terms.late_fee_percent_per_month == Decimal("1.5")
    dumped = terms.model_dump(mode="json")
    assert dumped["late_fee_percent_per_month"] == "1.5"
    assert ContractTerms.model_validate(dumped) == terms


def test_a_float_percentage_does_not_carry_binary_noise() -> None:
    terms = ContractTerms(late_fee_percent_per_month=0.1)
    assert terms.late_fee_percent_per_month == Decimal("0.1")
    assert terms.model_dump(mode="json")["late_fee_percent_per_month"] == "0.1"


def test_invoice_json_round_trip_keeps_every_percentage_exact() -> None:
    terms = {
        "late_fee_percent_per_month": "1.5",
        "early_payment_discount": {"percent": "2.25", "within_days": 10},
    }
    invoice = Invoice.model_validate(invoice_fields(terms=terms))
    dumped = invoice.model_dump(mode="json")
    assert dumped["terms"]["late_fee_percent_per_month"] == "1.5"
    assert dumped["terms"]["early_payment_discount"]["percent"] == "2.25"
    assert '"late_fee_percent_per_month":"1.5"' in invoice.model_dump_json()
    again = Invoice.model_validate(dumped)
    assert again == invoice
    assert again.terms.early_payment_discount is not None
    assert again.terms.early_payment_discount.percent == Decimal("2.25")


@pytest.mark.parametrize(
    ("percent", "message"),
    [
        ("-0.5", "greater than or equal to 0"),
        ("100.01", "less than or equal to 100"),
        ("1.23456", "no more than 4 decimal places"),
        ("one", "Input should be a valid decimal"),
    ],
)
def test_bad_late_fee_percentages_are_rejected(percent: str, message: str) -> None:
    assert_rejected(ContractTerms, {"late_fee_percent_per_month": percent}, ("late_fee_percent_per_month",), message)


@pytest.mark.parametrize(
    ("data", "loc", "message"),
    [
        ({"percent": "0", "within_days": 10}, ("percent",), "greater than 0"),
        ({"percent": "100", "within_days": 10}, ("percent",), "less than 100"),
        ({"percent": "2", "within_days": 0}, ("within_days",), "greater than or equal to 1"),
        ({"percent": "2", "within_days": 366}, ("within_days",), "less than or equal to 365"),
    ],
)
def test_bad_early_payment_discounts_are_rejected(data: dict[str, Any], loc: tuple, message: str) -> None:
    assert_rejected(EarlyPaymentDiscount, data, loc, message)


def test_negative_fixed_late_fee_is_rejected() -> None:
    assert_rejected(ContractTerms, {"fixed_late_fee_minor": -1}, ("fixed_late_fee_minor",), "greater than or equal to 0")


def test_equipment_ids_are_identifiers() -> None:
    assert_rejected(
        ContractTerms,
        {"equipment_ids": ["bmc-1", "port 7"]},
        ("equipment_ids", 1),
        "String should match pattern",
    )


# --- country, service, sending window, factoring ------------------------------------------------


@pytest.mark.parametrize("country", ["RO", "BG", "EE", "IT", "GB"])
def test_invoice_accepts_iso_countries(country):
    assert Invoice.model_validate(invoice_fields(country=country)).country == country


@pytest.mark.parametrize("country", ["XX", "ro", "SU", "YU", "EU", "ROU"])
def test_invoice_refuses_unknown_or_historic_countries(country):
    errors = rejection(Invoice, invoice_fields(country=country))
    assert errors and errors[0][0] == ("country",)


def test_invoice_service_is_an_identifier():
    assert Invoice.model_validate(invoice_fields(service="hosting")).service == "hosting"
    assert_rejected(Invoice, invoice_fields(service="hosting\r\nBcc: x@y"), ("service",), "pattern")


def test_default_policy_sends_on_weekdays_in_office_hours():
    window = DunningPolicy.default().sending_window
    assert window is not None
    assert (window.weekdays, window.opens.hour, window.closes.hour, window.skip_public_holidays) == ([0, 1, 2, 3, 4], 9, 17, True)


@pytest.mark.parametrize(
    ("window", "fragment"),
    [
        ({"weekdays": [0, 7]}, "weekdays are distinct numbers"),
        ({"weekdays": [1, 1]}, "weekdays are distinct numbers"),
        ({"weekdays": []}, "at least 1 item"),
        ({"opens": "18:00:00", "closes": "08:00:00"}, "close after it opens"),
    ],
)
def test_bad_sending_windows_are_refused(window, fragment):
    data = {"stages": [{"action": "reminder", "offset": "P1D"}], "sending_window": window}
    errors = rejection(DunningPolicy, data)
    assert any(fragment in message for _, message in errors), errors


def test_mark_factored_needs_a_factor_id_and_a_non_negative_advance():
    assert MarkFactored(factor="factor-1", advance_minor=0).advance_minor == 0
    assert_rejected(MarkFactored, {"factor": "factor-1", "advance_minor": -1}, ("advance_minor",), "greater than or equal")
    assert_rejected(MarkFactored, {"factor": "", "advance_minor": 5}, ("factor",), "at least 1")


@pytest.mark.parametrize("field", ["opens", "closes"])
def test_window_times_are_local_without_an_offset(field):
    data = {"stages": [{"action": "reminder", "offset": "P1D"}], "sending_window": {field: "09:00:00+02:00"}}
    errors = rejection(DunningPolicy, data)
    assert any("without a UTC offset" in message for _, message in errors), errors


def test_due_time_is_local_without_an_offset():
    assert_rejected(
        DunningPolicy, {"stages": [{"action": "reminder", "offset": "P1D"}], "due_time": "09:00:00Z"},
        ("due_time",), "without a UTC offset",
    )


# --- bounds on dates and durations ----------------------------------------------------------------
# Fixed ones in the models (deterministic: the workflow applies them too), a window around today
# only at the edge (``DateWindow``, given its clock).


@pytest.mark.parametrize(
    ("field", "value"),
    [("due_date", "9999-12-31"), ("due_date", "2100-01-01"), ("issue_date", "1999-12-31"), ("issue_date", "0001-01-01")],
)
def test_invoice_dates_outside_the_years_2000_to_2099_are_refused(field: str, value: str) -> None:
    assert_rejected(Invoice, invoice_fields(**{field: value}), (field,), "must lie in the years 2000 to 2099")


@pytest.mark.parametrize("received_at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "1999-12-31T23:00:00Z"])
def test_a_payment_received_outside_the_years_2000_to_2099_is_refused_without_overflow(received_at: str) -> None:
    data = {"payment_id": "P-1", "amount_minor": 100, "currency": "EUR", "received_at": received_at}
    assert_rejected(Payment, data, ("received_at",), "must lie in the years 2000 to 2099")


def test_instalment_dates_are_bounded_like_invoice_dates() -> None:
    data = {"instalments": [{"due_date": "2024-05-01", "amount_minor": 1}, {"due_date": "2100-05-01", "amount_minor": 1}]}
    assert_rejected(PaymentPlan, data, ("instalments", 1, "due_date"), "must lie in the years 2000 to 2099")


@pytest.mark.parametrize("offset", ["P1831D", "-P1831D", "P999999999D"])
def test_a_stage_offset_of_more_than_five_years_is_refused(offset: str) -> None:
    assert_rejected(DunningPolicy, stages(("reminder", offset)), ("stages", 0, "offset"), "at most 1830 days")


def test_a_legal_review_interval_of_more_than_five_years_is_refused() -> None:
    data = {**stages(("reminder", "P1D")), "legal_review_again_after": "P2000D"}
    assert_rejected(DunningPolicy, data, ("legal_review_again_after",), "at most 1830 days")
    assert DunningPolicy.model_validate({**data, "legal_review_again_after": "P1830D"})


NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
WINDOW = DateWindow(now=NOW, days=365)


def test_the_window_names_each_invoice_date_outside_it() -> None:
    inside = Invoice.model_validate(invoice_fields(issue_date="2026-01-01", due_date="2027-12-07"))
    assert WINDOW.invoice(inside) == []
    outside = Invoice.model_validate(invoice_fields(issue_date="2025-12-06", due_date="2027-12-08"))
    assert [path for path, _ in WINDOW.invoice(outside)] == [("issue_date",), ("due_date",)]
    assert "must lie within 365 days of today (2026-12-07), not 2027-12-08" in WINDOW.invoice(outside)[1][1]


def test_the_window_names_each_instalment_outside_it() -> None:
    plan = PaymentPlan.model_validate({"instalments": [{"due_date": "2027-01-01", "amount_minor": 1}, {"due_date": "2028-01-01", "amount_minor": 1}]})
    assert [path for path, _ in WINDOW.plan(plan)] == [("instalments", 1, "due_date")]


@pytest.mark.parametrize(
    ("received_at", "issued", "message"),
    [
        (NOW + timedelta(minutes=4), None, None),  # within the clock skew
        (NOW + timedelta(minutes=6), None, "must not be in the future"),
        (NOW - timedelta(days=366), None, "must lie within 365 days of now"),
        (NOW - timedelta(days=2), date(2026, 12, 6), "must not be before the invoice's issue date 2026-12-06"),
        (NOW - timedelta(days=1), date(2026, 12, 6), None),
        (None, date(2026, 12, 6), None),  # recorded as received now
    ],
)
def test_the_window_bounds_when_a_payment_was_received(received_at: datetime | None, issued: date | None, message: str | None) -> None:
    payment = Payment(payment_id="P-1", amount_minor=100, currency="EUR", received_at=received_at)
    problems = WINDOW.payment(payment, issued)
    assert [m for _, m in problems if message and message in m] == [m for _, m in problems] and bool(problems) == bool(message)
    assert all(path == ("received_at",) for path, _ in problems)
