"""Customer standing: may this customer get support, place new orders, and must it pay a deposit?

Decision: the standing is computed from the read models at the moment it is asked for. The
customer's workflow (``workflows/customer.py``) decides what of its service and equipment is cut
for which invoices; each invoice writes its suspension and its lifting as ``service_suspended`` /
``service_restored`` facts, and its disputes' outcomes as ``dispute_resolved``, which is what the
rules below read. The answer trails the event log by the projection lag (see
``activities.projections.projection_lag``).

Rules (techniques 2, 12 and 20 of domain.md), each with a plain reason in ``reasons``:

- support: an invoice whose service is suspended blocks support for the service it covers; one
  that names no service blocks all support. The block lifts when the workflow restores the
  service (payment in full, settlement, factoring); a written-off invoice keeps it.
- new orders stop while an open invoice has reached ``new_orders_block_at`` (default: the
  ultimatum), or while the open balance in a currency exceeds the customer's credit limit.
- a deposit of ``deposit_percent`` is required before new work when an invoice was more than
  ``deposit_after_overdue_days`` days overdue at some time in the last 365 days, unless a dispute
  on that invoice was upheld (the lateness was the service's, not the customer's); for a new
  customer, until ``deposit_until_paid_invoices`` of its invoices are paid; and always where the
  customer's ``deposit_always`` is set.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, field_validator

from activities.projections import CurrencyExposure, customer_view
from client.settings_files import SettingsFileError, load_toml
from workflows.ladder import ESCALATION_STATES, NEW_ORDERS_STOP_AT
from workflows.models import (
    Currency,
    DisputeOutcome,
    EventKind,
    Identifier,
    InvoiceState,
    NonNegativeMinor,
    Percent,
    format_money,
)

DEPOSIT_LOOKBACK = timedelta(days=365)
PAID_STATES = (InvoiceState.PAID.value, InvoiceState.SETTLED.value)


def _escalation_state(state: InvoiceState | None) -> InvoiceState | None:
    if state is not None and state not in ESCALATION_STATES:
        raise ValueError(f"must be an escalation state: one of {', '.join(s.value for s in ESCALATION_STATES)}")
    return state


class StandingOverrides(BaseModel):
    """A customer's own settings; what it leaves out comes from ``[defaults]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deposit_percent: Percent | None = None
    deposit_after_overdue_days: int | None = Field(default=None, ge=0)
    deposit_until_paid_invoices: int | None = Field(default=None, ge=0, le=1000)
    deposit_always: bool | None = None
    credit_limit_minor: dict[Currency, NonNegativeMinor] = Field(
        default_factory=dict, description="per currency, merged over the defaults' limits"
    )
    new_orders_block_at: InvoiceState | None = None

    check_new_orders_block_at = field_validator("new_orders_block_at")(_escalation_state)


class StandingTerms(BaseModel):
    """The settings that apply to one customer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deposit_percent: Percent = Decimal(50)
    deposit_after_overdue_days: int = Field(default=30, ge=0)
    deposit_until_paid_invoices: int = Field(
        default=0, ge=0, le=1000, description="a new customer pays a deposit until this many of its invoices are paid"
    )
    deposit_always: bool = Field(default=False, description="a deposit before all new work, whatever the history")
    credit_limit_minor: dict[Currency, NonNegativeMinor] = Field(default_factory=dict)
    new_orders_block_at: InvoiceState = NEW_ORDERS_STOP_AT

    check_new_orders_block_at = field_validator("new_orders_block_at")(_escalation_state)

    def merged(self, overrides: StandingOverrides) -> StandingTerms:
        changes = overrides.model_dump(exclude_none=True, exclude={"credit_limit_minor"})
        changes["credit_limit_minor"] = {**self.credit_limit_minor, **overrides.credit_limit_minor}
        return self.model_copy(update=changes)


class StandingFileError(SettingsFileError):
    """The customers file cannot be read, is not TOML, or does not validate."""


class StandingSettings(BaseModel):
    """The customers file (TOML): ``[defaults]`` and ``[customers."<id>"]`` tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: StandingTerms = Field(default_factory=StandingTerms)
    customers: dict[Identifier, StandingOverrides] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> StandingSettings:
        """Read and validate the file (``StandingFileError`` says what is wrong where); no file means the defaults for
        everyone."""
        if path is None:
            return cls()
        return load_toml(path, "customers file", cls.model_validate, StandingFileError)

    def for_customer(self, customer_id: str) -> StandingTerms:
        overrides = self.customers.get(customer_id)
        return self.defaults.merged(overrides) if overrides else self.defaults


class CustomerStanding(BaseModel):
    """What helpdesk and ordering may do for a customer now, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: str
    as_of: date
    support_allowed: bool = Field(description="false: no support at all; see blocked_services for partial blocks")
    blocked_services: list[str] = Field(description="services without support, when only some are blocked")
    new_orders_allowed: bool
    deposit_required: bool
    deposit_percent: Percent | None = Field(description="the deposit due before new work, when required")
    reasons: list[str]
    suspended_invoices: list[str]
    amounts: list[CurrencyExposure] = Field(description="risk input: open and overdue per currency (minor units)")
    oldest_overdue_days: int | None
    invoices_sent_to_agency: int = Field(description="risk input: invoices ever handed to a collection agency")

    def support_allowed_for(self, service: str | None) -> bool:
        """Whether support for ``service`` (None: the customer in general) is allowed."""
        return self.support_allowed and (service is None or service not in self.blocked_services)


async def customer_standing(
    pool: asyncpg.Pool, customer_id: str, settings: StandingSettings, *, as_of: date | None = None
) -> CustomerStanding:
    """The customer's standing from all of its invoices and its settings (see the module rules)."""
    as_of = as_of or datetime.now(timezone.utc).date()
    terms = settings.for_customer(customer_id)
    invoices = await pool.fetch(
        "SELECT invoice_id, state, escalation, due_date, closed_on, suspended, suspended_service"
        " FROM projected_invoices WHERE customer_id = $1 ORDER BY invoice_id",
        customer_id,
    )
    view = await customer_view(pool, customer_id, as_of=as_of)
    amounts = view.amounts if view else []
    reasons: list[str] = []

    suspended = [row for row in invoices if row["suspended"]]
    support_allowed = all(row["suspended_service"] for row in suspended)
    blocked_services = sorted({row["suspended_service"] for row in suspended if row["suspended_service"]})
    for row in suspended:
        covers = row["suspended_service"] or "all services"
        reasons.append(f"invoice {row['invoice_id']} is suspended ({covers})")

    new_orders_allowed = True
    block_rank = ESCALATION_STATES.index(terms.new_orders_block_at)
    for row in invoices:
        escalation = InvoiceState(row["escalation"])
        if escalation in ESCALATION_STATES and ESCALATION_STATES.index(escalation) >= block_rank:
            new_orders_allowed = False
            reasons.append(
                f"invoice {row['invoice_id']} reached {_label(escalation)}:"
                f" new orders stop from {_label(terms.new_orders_block_at)}"
            )
    for exposure in amounts:
        limit = terms.credit_limit_minor.get(exposure.currency)
        if limit is not None and exposure.open_minor > limit:
            new_orders_allowed = False
            reasons.append(
                f"open balance {format_money(exposure.open_minor, exposure.currency)} exceeds"
                f" the credit limit {format_money(limit, exposure.currency)}"
            )

    deposit_reasons = _deposit_reasons(invoices, await _upheld_disputes(pool, invoices), terms, as_of)
    deposit_required = bool(deposit_reasons)
    ask = f": a {terms.deposit_percent.normalize():f}% deposit is required before new work"
    reasons.extend(reason + ask for reason in deposit_reasons)

    return CustomerStanding(
        customer_id=customer_id,
        as_of=as_of,
        support_allowed=support_allowed,
        blocked_services=blocked_services,
        new_orders_allowed=new_orders_allowed,
        deposit_required=deposit_required,
        deposit_percent=terms.deposit_percent if deposit_required else None,
        reasons=reasons,
        suspended_invoices=[row["invoice_id"] for row in suspended],
        amounts=amounts,
        oldest_overdue_days=view.oldest_overdue_days if view else None,
        invoices_sent_to_agency=view.invoices_sent_to_agency if view else 0,
    )


def _deposit_reasons(
    invoices: list[asyncpg.Record], excused: set[str], terms: StandingTerms, as_of: date
) -> list[str]:
    """Why a deposit is asked, one reason per rule met (none: no deposit)."""
    reasons = []
    if terms.deposit_always:
        reasons.append("the customer's settings ask a deposit for all new work")
    paid = sum(row["state"] in PAID_STATES for row in invoices)
    if paid < terms.deposit_until_paid_invoices:
        reasons.append(f"a new customer: {paid} of its first {terms.deposit_until_paid_invoices} invoices paid so far")
    threshold = terms.deposit_after_overdue_days
    for row in invoices:
        until = row["closed_on"] or as_of
        worst = (until - row["due_date"]).days
        if worst > threshold and until >= as_of - DEPOSIT_LOOKBACK and row["invoice_id"] not in excused:
            tense = "was" if row["closed_on"] else "is"
            reasons.append(
                f"invoice {row['invoice_id']} {tense} {worst} days overdue (more than {threshold}) within the last 365 days"
            )
    return reasons


async def _upheld_disputes(pool: asyncpg.Pool, invoices: list[asyncpg.Record]) -> set[str]:
    """The invoices among ``invoices`` a dispute was upheld on, as their ``dispute_resolved`` facts say."""
    rows = await pool.fetch(
        "SELECT DISTINCT invoice_id FROM invoice_events WHERE invoice_id = ANY($1::text[]) AND kind = $2"
        " AND data->>'outcome' = $3",
        [row["invoice_id"] for row in invoices],
        EventKind.DISPUTE_RESOLVED.value,
        DisputeOutcome.UPHELD.value,
    )
    return {row["invoice_id"] for row in rows}


def _label(state: InvoiceState) -> str:
    return state.value.replace("_", " ")
