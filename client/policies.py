"""Named dunning policies, and what the integration role may choose when it starts an invoice.

The policies file (``DUNNING_POLICIES_FILE``, TOML; see ``examples/policies.toml``) names the policies
invoices refer to (``policy_name``) and bounds the contract terms the integration role may give. The API
and the CLI read and validate it once, when they start. Without a file there is one policy, ``standard``
(``DunningPolicy.default()``), and the default bounds. The workflow still gets the whole policy.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from client.settings_files import SettingsFileError, load_toml
from workflows.bounds import Problems
from workflows.models import (
    Currency,
    DunningPolicy,
    Identifier,
    Invoice,
    InvoiceFields,
    NonNegativeMinor,
    Percent,
    format_money,
)

STANDARD = "standard"


class PoliciesFileError(SettingsFileError):
    """The policies file cannot be read or is invalid; ``str()`` is one line naming the policy and field."""


class UnknownPolicy(ValueError):
    """An invoice names a policy the policies file does not have."""


class InvoiceRequest(InvoiceFields):
    """An invoice as a caller sends it: its policy by name, inline (the ops role only), or neither (the default)."""

    policy_name: Identifier | None = Field(
        default=None, description="a policy of the policies file; with neither this nor policy: its default policy"
    )
    policy: DunningPolicy | None = Field(default=None, description="a policy given inline: needs the ops role")

    @model_validator(mode="after")
    def _one_policy(self) -> InvoiceRequest:
        if self.policy_name is not None and self.policy is not None:
            raise ValueError("give either policy_name or an inline policy, not both")
        return self


class IntegrationBounds(BaseModel):
    """What the integration role may give in an invoice; anything beyond needs the ops role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_days_overdue_at_start: int = Field(
        default=0, ge=0, le=36_500, description="the due date lies at most this many days before today (client's date)"
    )
    min_payment_term_days: int = Field(default=0, ge=0, le=36_500, description="days from issue date to due date, at least")
    max_payment_term_days: int = Field(default=365, ge=0, le=36_500, description="days from issue date to due date, at most")
    max_late_fee_percent_per_month: Percent = Decimal("2")
    max_fixed_late_fee_minor: dict[Currency, NonNegativeMinor] = Field(
        default_factory=lambda: {"EUR": 4_000}, description="per currency; a currency not listed: no fixed fee"
    )
    max_early_payment_discount_percent: Percent = Decimal("5")
    may_authorize_remote_disconnect: bool = True

    @model_validator(mode="after")
    def _term_range(self) -> IntegrationBounds:
        if self.min_payment_term_days > self.max_payment_term_days:
            raise ValueError("min_payment_term_days must not exceed max_payment_term_days")
        return self

    def refusals(self, invoice: InvoiceFields, now: datetime) -> Problems:
        """Each value of ``invoice`` outside these bounds, with why."""
        found: Problems = []
        today = now.astimezone(ZoneInfo(invoice.time_zone)).date()
        overdue = (today - invoice.due_date).days
        if overdue > self.max_days_overdue_at_start:
            found.append((("due_date",), f"lies {overdue} days before today ({today}); the integration role may start an"
                          f" invoice at most {self.max_days_overdue_at_start} days overdue"))
        term = (invoice.due_date - invoice.issue_date).days
        if not self.min_payment_term_days <= term <= self.max_payment_term_days:
            found.append((("due_date",), f"gives a payment term of {term} days after the issue date; the integration role"
                          f" may give {self.min_payment_term_days} to {self.max_payment_term_days} days"))
        terms, currency = invoice.terms, invoice.currency
        if terms.late_fee_percent_per_month > self.max_late_fee_percent_per_month:
            found.append((("terms", "late_fee_percent_per_month"), f"{terms.late_fee_percent_per_month} is above the"
                          f" integration role's limit of {self.max_late_fee_percent_per_month}"))
        fixed_limit = self.max_fixed_late_fee_minor.get(currency, 0)
        if terms.fixed_late_fee_minor > fixed_limit:
            found.append((("terms", "fixed_late_fee_minor"), f"{format_money(terms.fixed_late_fee_minor, currency)} is above"
                          f" the integration role's limit of {format_money(fixed_limit, currency)}"))
        discount = terms.early_payment_discount
        if discount and discount.percent > self.max_early_payment_discount_percent:
            found.append((("terms", "early_payment_discount", "percent"), f"{discount.percent} is above the integration"
                          f" role's limit of {self.max_early_payment_discount_percent}"))
        if terms.remote_disconnect_authorized and not self.may_authorize_remote_disconnect:
            found.append((("terms", "remote_disconnect_authorized"), "the integration role may not authorise remote"
                          " disconnection"))
        return found


def _standard() -> dict[str, DunningPolicy]:
    return {STANDARD: DunningPolicy.default()}


class PolicyBook(BaseModel):
    """The policies file: ``default_policy``, ``[policies.<name>]`` tables and ``[integration]`` bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_policy: Identifier = Field(default=STANDARD, description="the policy of an invoice that names none")
    policies: dict[Identifier, DunningPolicy] = Field(default_factory=_standard, min_length=1)
    integration: IntegrationBounds = Field(default_factory=IntegrationBounds)

    @model_validator(mode="after")
    def _default_named(self) -> PolicyBook:
        if self.default_policy not in self.policies:
            raise ValueError(f"default_policy {self.default_policy!r} is not one of the policies ({self._names()})")
        return self

    @classmethod
    def load(cls, path: Path | None) -> PolicyBook:
        """Read and validate the file (None: ``standard`` only); raises :class:`PoliciesFileError`."""
        if path is None:
            return cls()
        return load_toml(path, "policies file", cls.model_validate, PoliciesFileError, _errors_text)

    def _names(self) -> str:
        return ", ".join(sorted(self.policies))

    def named(self, name: str) -> DunningPolicy:
        """The policy called ``name``; raises :class:`UnknownPolicy`."""
        try:
            return self.policies[name]
        except KeyError:
            raise UnknownPolicy(f"unknown policy {name!r}: the policies are {self._names()}") from None

    def invoice(self, request: InvoiceRequest) -> Invoice:
        """The invoice with its policy: the inline one, the one named, or the default one.

        Raises :class:`UnknownPolicy`, or ``ValidationError`` if the policy does not fit the invoice.
        """
        policy = request.policy or self.named(request.policy_name or self.default_policy)
        fields = {name: getattr(request, name) for name in InvoiceFields.model_fields}
        return Invoice.model_validate({**fields, "policy": policy})

    def name_of(self, request: InvoiceRequest) -> str | None:
        """The name of the policy ``request`` gets (None: its inline one)."""
        return None if request.policy is not None else request.policy_name or self.default_policy

    def integration_refusals(self, request: InvoiceRequest, now: datetime) -> Problems:
        """Why the integration role may not start ``request`` (empty: it may): an inline policy, or terms
        outside the bounds."""
        found: Problems = []
        if request.policy is not None:
            found.append((("policy",), f"an inline policy needs the ops role; the integration role names one in"
                          f" policy_name ({self._names()})"))
        return found + self.integration.refusals(request, now)


def _errors_text(err: ValidationError, document: dict[str, Any]) -> str:
    """Every problem on one line, a policy's named as ``policy 'fast': stages.1.offset: ...``."""
    parts = []
    for problem in err.errors(include_url=False):
        location = [str(p) for p in problem["loc"]]
        message = problem["msg"].removeprefix("Value error, ")
        if location[:1] == ["policies"] and len(location) > 1:
            where = f"policy {location[1]!r}" + (f": {'.'.join(location[2:])}" if location[2:] else "")
        else:
            where = ".".join(location)
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
