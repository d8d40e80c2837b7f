"""The policies file: named policies, the integration role's bounds, and what a request resolves to. No Temporal."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from client.policies import InvoiceRequest, PoliciesFileError, PolicyBook, UnknownPolicy
from tests.cli_helpers import EXAMPLES, dunning, example_invoice, failed
from workflows.models import DunningPolicy, StageAction

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
FAST = {"stages": [{"action": "suspend", "offset": "PT0S"}]}  # issue 20: a cut the moment the invoice is due


def request(**changes: Any) -> InvoiceRequest:
    """An EUR invoice issued on NOW's date, due in 14 days, with ``changes``."""
    fields: dict[str, Any] = {
        "invoice_id": "INV-1",
        "customer_id": "CUST-1",
        "contact": {"name": "Ana Pop", "email": "ana@client.example"},
        "amount_minor": 100_000,
        "currency": "EUR",
        "issue_date": "2026-12-07",
        "due_date": "2026-12-21",
        "time_zone": "Europe/Bucharest",
    }
    return InvoiceRequest.model_validate({**fields, **changes})


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policies.toml"
    path.write_text(text)
    return path


def test_the_example_file_names_the_default_policy_standard_and_no_file_means_standard_alone():
    book = PolicyBook.load(EXAMPLES / "policies.toml")
    assert book.default_policy == "standard" and book.policies["standard"] == DunningPolicy.default()
    assert "key-account" in book.policies
    assert StageAction.SUSPEND not in (s.action for s in book.policies["key-account"].stages)
    assert PolicyBook.load(None).policies == {"standard": DunningPolicy.default()}


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('[policies.fast]\nstages = [{ action = "suspend", offset = "P1D" }, { action = "reminder", offset = "P2D" }]',
         ["policy 'fast'", "stages are out of order"]),
        ('[policies.fast]\nstages = [{ action = "reminder", offset = "P99999D" }]',
         ["policy 'fast': stages.0.offset: must be at most"]),
        ('[policies.fast]\nstages = [{ action = "reminder", offset = "P1D" }]\ngrace = "P1D"',
         ["policy 'fast': grace: Extra inputs are not permitted"]),
        ('[integration]\nmax_late_fee_percent = "2"', ["integration.max_late_fee_percent: Extra inputs"]),
        ('[integration.max_fixed_late_fee_minor]\nEURO = 100', ["integration.max_fixed_late_fee_minor.EURO"]),
        ('default_policy = "gentle"', ["default_policy 'gentle' is not one of the policies (standard)"]),
        ("[policies", ["is not valid TOML"]),
    ],
)
def test_a_bad_file_fails_with_one_line_naming_the_policy_and_the_field(tmp_path, text, fragments):
    with pytest.raises(PoliciesFileError) as raised:
        PolicyBook.load(write(tmp_path, text))
    message = str(raised.value)
    assert "\n" not in message and str(tmp_path) in message
    for fragment in fragments:
        assert fragment in message


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(PoliciesFileError, match="cannot read the policies file .*: No such file"):
        PolicyBook.load(tmp_path / "nowhere.toml")


def test_a_request_gets_the_named_the_inline_or_the_default_policy_with_its_currencys_thresholds(tmp_path):
    book = PolicyBook.load(EXAMPLES / "policies.toml")
    named = book.invoice(request(policy_name="key-account"))
    assert named.policy.stages == book.policies["key-account"].stages
    assert named.policy.small_balance_tolerance_minor == 100
    default = book.invoice(request())
    assert default.policy == DunningPolicy.default().with_legal_thresholds("EUR")
    assert default.policy.cost_of_legal_action_minor == 150_000
    inline = book.invoice(request(policy=FAST))
    assert [(s.action, s.offset) for s in inline.policy.stages] == [(StageAction.SUSPEND, timedelta(0))]
    assert [book.name_of(request(policy_name="key-account")), book.name_of(request()), book.name_of(request(policy=FAST))] == [
        "key-account", "standard", None
    ]
    with pytest.raises(UnknownPolicy, match="unknown policy 'fast': the policies are key-account, standard"):
        book.invoice(request(policy_name="fast"))
    with pytest.raises(ValidationError, match="give either policy_name or an inline policy, not both"):
        request(policy_name="standard", policy=FAST)
    # a named policy with a legal review, for a currency without default thresholds: the invoice does not validate
    with pytest.raises(ValidationError, match="no default legal thresholds for JPY"):
        book.invoice(request(currency="JPY"))


def test_the_integration_role_may_name_a_policy_with_terms_within_the_bounds():
    book = PolicyBook.load(EXAMPLES / "policies.toml")
    terms = {
        "late_fee_percent_per_month": "2",
        "fixed_late_fee_minor": 4_000,
        "remote_disconnect_authorized": True,
        "equipment_ids": ["fw-1"],
        "early_payment_discount": {"percent": "5", "within_days": 7},
    }
    assert book.integration_refusals(request(policy_name="standard", terms=terms), NOW) == []
    assert book.integration_refusals(request(), NOW) == []  # the default policy
    assert book.integration_refusals(request(currency="RON", terms={"fixed_late_fee_minor": 20_000}), NOW) == []


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"policy": FAST}, ("policy",), "an inline policy needs the ops role"),
        ({"issue_date": "2026-08-01", "due_date": "2026-08-29"}, ("due_date",), "lies 100 days before today (2026-12-07)"),
        ({"due_date": "2027-06-01"}, ("due_date",), "payment term of 176 days after the issue date; the integration role may give 0 to 120"),
        ({"terms": {"late_fee_percent_per_month": "10"}}, ("terms", "late_fee_percent_per_month"), "10 is above the integration role's limit of 2"),
        ({"terms": {"fixed_late_fee_minor": 4_001}}, ("terms", "fixed_late_fee_minor"), "40.01 EUR is above the integration role's limit of 40.00 EUR"),
        ({"currency": "USD", "terms": {"fixed_late_fee_minor": 1}}, ("terms", "fixed_late_fee_minor"), "limit of 0.00 USD"),
        ({"terms": {"early_payment_discount": {"percent": "50", "within_days": 30}}},
         ("terms", "early_payment_discount", "percent"), "50 is above the integration role's limit of 5"),
    ],
)
def test_the_integration_role_is_refused_an_inline_policy_and_terms_beyond_the_bounds(changes, field, fragment):
    book = PolicyBook.load(EXAMPLES / "policies.toml")
    refusals = book.integration_refusals(request(**changes), NOW)
    assert [path for path, _ in refusals] == [field]
    assert fragment in refusals[0][1]


def test_the_bounds_are_settings_of_the_file(tmp_path):
    book = PolicyBook.load(write(tmp_path, """
[integration]
max_days_overdue_at_start = 3
min_payment_term_days = 7
may_authorize_remote_disconnect = false
max_late_fee_percent_per_month = "1.5"
"""))
    assert book.integration.max_late_fee_percent_per_month == Decimal("1.5")
    due_two_days_ago = request(issue_date="2026-11-20", due_date="2026-12-05", terms={"remote_disconnect_authorized": True})
    assert [path for path, _ in book.integration_refusals(due_two_days_ago, NOW)] == [("terms", "remote_disconnect_authorized")]
    short_term = request(due_date=date(2026, 12, 10).isoformat())
    assert "may give 7 to 365 days" in book.integration_refusals(short_term, NOW)[0][1]
    with pytest.raises(PoliciesFileError, match="min_payment_term_days must not exceed max_payment_term_days"):
        PolicyBook.load(write(tmp_path, "[integration]\nmin_payment_term_days = 30\nmax_payment_term_days = 10"))


async def test_the_cli_and_the_api_fail_on_one_line_for_a_bad_file_and_the_cli_for_an_unknown_name(tmp_path):
    path, _ = example_invoice(tmp_path)
    bad = write(tmp_path, '[policies.fast]\nstages = [{ action = "suspend", offset = "P1D" }, { action = "reminder", offset = "P2D" }]')
    env = {"DUNNING_POLICIES_FILE": str(bad)}
    failed(await dunning(env, "invoice", "start", str(path)), "is invalid", "policy 'fast'", "out of order")
    failed(await dunning(env, "api"), "is invalid", "policy 'fast'", "out of order")  # before it connects
    env = {"DUNNING_POLICIES_FILE": str(EXAMPLES / "policies.toml")}
    failed(await dunning(env, "invoice", "start", str(path), "--policy", "fast"), "its own policy: leave out --policy")
    named, _ = example_invoice(tmp_path, policy=None)
    failed(await dunning(env, "invoice", "start", str(named), "--policy", "fast"), "policy_name: unknown policy 'fast'")
