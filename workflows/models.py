"""Pydantic models shared by workflows, activities, the CLI and the API.

Money is always integer minor units plus an ISO 4217 currency; percentages are ``Decimal``.
Every model validates at the edge, so a bad invoice or payment never reaches a workflow.
"""

from __future__ import annotations

import unicodedata
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Any
from zoneinfo import available_timezones

import email_validator  # noqa: F401 - loaded now, not lazily inside the workflow sandbox
from babel.core import get_global
from babel.numbers import get_currency_precision, get_territory_currencies
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    model_validator,
)

from workflows.bounds import BoundedDate, BoundedMoment, BoundedOffset

# ISO 4217 codes that are legal tender somewhere (not XXX, XTS, gold or withdrawn currencies);
# fixed dates keep the set the same whenever it is computed
ISO_CURRENCIES = frozenset(
    code
    for territory in get_global("territory_currencies")
    for code in get_territory_currencies(territory, start_date=date(2020, 1, 1), end_date=date(2100, 1, 1))
)
# IANA zones, less the host-dependent aliases that would make workers disagree
TIME_ZONES = frozenset(available_timezones() - {"localtime", "Factory", "posixrules"})
SUPPORTED_LANGUAGES = ("en", "ro", "bg", "et", "it")
# ISO 3166-1 alpha-2 countries: Babel's two-letter territories with a currency today (no USSR, no EU)
COUNTRIES = frozenset(
    code
    for code in get_global("territory_currencies")
    if len(code) == 2 and code not in ("EU", "ZZ")
    and get_territory_currencies(code, start_date=date(2020, 1, 1), end_date=date(2100, 1, 1))
)


def _known_currency(code: str) -> str:
    if code not in ISO_CURRENCIES:
        raise ValueError(f"unknown currency {code!r}: use an ISO 4217 code such as EUR or RON")
    return code


def _known_country(code: str) -> str:
    if code not in COUNTRIES:
        raise ValueError(f"unknown country {code!r}: use an ISO 3166-1 alpha-2 code such as RO or EE")
    return code


def _known_time_zone(name: str) -> str:
    if name not in TIME_ZONES:
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Europe/Bucharest")
    return name


def _printable_line(text: str) -> str:
    # control and separator characters would read as line breaks in e-mail headers
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text):
        raise ValueError("must be one line of text without control characters")
    if not text.strip():
        raise ValueError("must not be blank")
    return text


def _plain_text(text: str) -> str:
    # line breaks and tabs are text; other control characters are not (PostgreSQL cannot even store NUL)
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in text):
        raise ValueError("must be text without control characters (line breaks and tabs are allowed)")
    return text


FreeText = Annotated[str, AfterValidator(_plain_text)]
Currency = Annotated[str, Field(min_length=3, max_length=3), AfterValidator(_known_currency)]
TimeZone = Annotated[str, AfterValidator(_known_time_zone)]
Country = Annotated[str, Field(min_length=2, max_length=2), AfterValidator(_known_country)]


def _wall_clock(moment: time) -> time:
    if moment.tzinfo is not None:
        raise ValueError("a local time of day in the client's time zone, without a UTC offset")
    return moment


LocalTime = Annotated[time, AfterValidator(_wall_clock)]
PositiveMinor = Annotated[int, Field(strict=True, gt=0, le=10**15, description="amount in minor units (cents)")]
NonNegativeMinor = Annotated[int, Field(strict=True, ge=0, le=10**15, description="amount in minor units (cents)")]
Percent = Annotated[Decimal, Field(ge=0, le=100, max_digits=7, decimal_places=4)]
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


def minor_units_per_major(currency: str) -> int:
    """10 for a one-decimal currency, 100 for EUR, 1 for JPY."""
    return 10 ** get_currency_precision(currency)


def format_money(amount_minor: int, currency: str) -> str:
    """``12345, 'EUR'`` -> ``'123.45 EUR'`` (locale-free; notices format per locale)."""
    digits = get_currency_precision(currency)
    sign = "-" if amount_minor < 0 else ""
    major, minor = divmod(abs(amount_minor), 10**digits)
    return f"{sign}{major}.{minor:0{digits}d} {currency}" if digits else f"{sign}{major} {currency}"


class Strict(BaseModel):
    """Base for every model: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- contract and policy -------------------------------------------------------------------


class EarlyPaymentDiscount(Strict):
    """Percent off the invoice amount when paid in full within ``within_days`` of issue."""

    percent: Annotated[Percent, Field(gt=0, lt=100)]
    within_days: int = Field(ge=1, le=365)


class ContractTerms(Strict):
    """What the client agreed to before work started (technique 1)."""

    late_fee_percent_per_month: Percent = Decimal("0")
    fixed_late_fee_minor: NonNegativeMinor = 0
    remote_disconnect_authorized: bool = False
    equipment_ids: list[Identifier] = Field(default_factory=list, max_length=100)
    early_payment_discount: EarlyPaymentDiscount | None = None


class StageAction(StrEnum):
    """What happens at a policy stage, in escalation order."""

    COURTESY = "courtesy"
    REMINDER = "reminder"
    WARNING = "warning"
    LATE_FEE = "late_fee"
    ULTIMATUM = "ultimatum"
    SUSPEND = "suspend"
    AGENCY = "agency"
    LEGAL_REVIEW = "legal_review"


ESCALATION_ORDER = list(StageAction)


class Stage(Strict):
    """One rung of the escalation ladder: ``action`` at ``offset`` after the due moment."""

    action: StageAction
    offset: BoundedOffset = Field(description="time after the due moment, e.g. 'P5D'; negative before it")


class SendingWindow(Strict):
    """When notices and escalation steps may happen, in the client's time zone (technique 7: stay polite)."""

    weekdays: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1, max_length=7)
    opens: LocalTime = time(9, 0)
    closes: LocalTime = time(17, 0)
    skip_public_holidays: bool = Field(default=True, description="skip the public holidays of the invoice's country")

    @model_validator(mode="after")
    def _sane(self) -> SendingWindow:
        if any(not 0 <= d <= 6 for d in self.weekdays) or len(set(self.weekdays)) != len(self.weekdays):
            raise ValueError("weekdays are distinct numbers 0 (Monday) to 6 (Sunday)")
        if self.closes <= self.opens:
            raise ValueError("the sending window must close after it opens")
        return self


class StatutoryInterest(Strict):
    """Late-payment interest instead of the percent-per-month fee (Directive 2011/7/EU; docs/interest.md).

    Simple interest on the unpaid principal, day by day from the day after the due date, at the
    currency's reference rate for the half-year (the rates file ops keep) plus ``margin_percent``;
    and a fixed compensation for recovery costs, once per invoice.
    """

    margin_percent: Annotated[Decimal, Field(ge=8, le=50, max_digits=6, decimal_places=4)] = Field(
        default=Decimal("8"), description="points above the reference rate (the Directive: at least 8)"
    )
    compensation_minor: NonNegativeMinor | None = Field(
        default=None, description="recovery costs, once per invoice; None: the rates file's amount for the currency (40 EUR)"
    )
class Allocation(StrEnum):
    """What a payment pays first inside an invoice (``DunningPolicy.allocation``)."""

    PRINCIPAL_FIRST = "principal_first"
    COSTS_FIRST = "costs_first"  # late charges first, then the principal (the rule of several civil codes)

    def apportion(self, principal_minor: int, costs_minor: int, paid_minor: int) -> tuple[int, int]:
        """How much of ``paid_minor`` goes to the principal owed and how much to the costs owed, in this order
        of precedence; what exceeds both is an overpayment."""
        if self == Allocation.COSTS_FIRST:
            costs = min(paid_minor, costs_minor)
            return min(paid_minor - costs, principal_minor), costs
        principal = min(paid_minor, principal_minor)
        return principal, min(paid_minor - principal, costs_minor)


class DunningPolicy(Strict):
    """The escalation ladder as data (domain.md, default policy); every value is a setting."""

    stages: list[Stage] = Field(min_length=1)
    due_time: LocalTime = Field(default=time(9, 0), description="local time on the due date the clock starts")
    legal_review_again_after: BoundedOffset = Field(default=timedelta(days=90), gt=timedelta(0))
    cost_of_legal_action_minor: NonNegativeMinor | None = Field(
        default=None, description="in the invoice's currency; None: the currency's default (LEGAL_THRESHOLDS)"
    )
    small_claims_limit_minor: NonNegativeMinor | None = Field(
        default=None, description="in the invoice's currency; None: the currency's default (LEGAL_THRESHOLDS)"
    )
    sending_window: SendingWindow | None = Field(
        default_factory=SendingWindow, description="null sends at any hour, weekends and holidays included"
    )
    late_charges_cap_percent: Annotated[Decimal, Field(ge=0, le=1000, max_digits=8, decimal_places=4)] = Field(
        default=Decimal("100"), description="late fees stop once they reach this share of the invoice amount"
    )
    charges_stop_at_agency: bool = Field(default=True, description="no late fee once the invoice is handed to the agency")
    small_balance_tolerance_minor: NonNegativeMinor = Field(
        default=0, description="a residue below it after a payment is written off and the invoice closes as paid"
    )
    minimum_balance_to_escalate_minor: NonNegativeMinor = Field(
        default=0, description="below this balance escalation stops at the reminder: no fee, ultimatum, cut or agency"
    )
    minimum_notice: BoundedOffset = Field(
        default=timedelta(days=5),
        ge=timedelta(days=1),
        description="no cut sooner than this after the delivered ultimatum that names the cut's moment",
    )
    allocation: Allocation = Field(
        default=Allocation.PRINCIPAL_FIRST,
        description="what a payment pays first: the principal (principal_first) or late charges (costs_first)",
    )
    recoveries_accepted_for: BoundedOffset = Field(
        default=timedelta(days=365),
        ge=timedelta(0),
        description="after a write-off, the invoice takes payments as recoveries this long",
    )
    interest: StatutoryInterest | None = Field(
        default=None, description="statutory interest and compensation from the late-fee stage, instead of late fees"
    )

    @model_validator(mode="after")
    def _stages_in_order(self) -> DunningPolicy:
        actions = [s.action for s in self.stages]
        if len(set(actions)) != len(actions):
            raise ValueError("each stage action may appear only once in a policy")
        if actions != sorted(actions, key=ESCALATION_ORDER.index):
            raise ValueError(
                "stages are out of order: actions must follow " + " < ".join(a.value for a in ESCALATION_ORDER)
            )
        offsets = [s.offset for s in self.stages]
        if any(later <= earlier for earlier, later in pairwise(offsets)):
            raise ValueError("stages are out of order: each stage's offset must be later than the one before")
        if StageAction.ULTIMATUM in actions and StageAction.SUSPEND not in actions:
            raise ValueError("an ultimatum names the suspension date: a policy with an ultimatum needs a suspend stage")
        if StageAction.COURTESY in actions and self.stage(StageAction.COURTESY).offset >= timedelta(0):
            raise ValueError("the courtesy note goes before the due date: its offset must be negative")
        if self.interest is not None and StageAction.LATE_FEE not in actions:
            raise ValueError("statutory interest is charged from the late-fee stage: a policy with interest needs one")
        return self

    def stage(self, action: StageAction) -> Stage:
        """The stage with this action (KeyError if the policy has none)."""
        for stage in self.stages:
            if stage.action == action:
                return stage
        raise KeyError(action)

    def with_legal_thresholds(self, currency: str) -> DunningPolicy:
        """The policy with the currency's default legal thresholds where it sets none (ValueError if it needs one
        and the currency has no default)."""
        defaults = LEGAL_THRESHOLDS.get(currency)
        missing = {
            name: (defaults or {}).get(name)
            for name in ("cost_of_legal_action_minor", "small_claims_limit_minor")
            if getattr(self, name) is None
        }
        if not missing:
            return self
        if defaults is None and StageAction.LEGAL_REVIEW in (s.action for s in self.stages):
            raise ValueError(
                f"no default legal thresholds for {currency}: the policy must set "
                + " and ".join(sorted(missing))
                + " (in minor units of the invoice's currency)"
            )
        return self.model_copy(update=missing)

    @classmethod
    def default(cls) -> DunningPolicy:
        """domain.md's published policy: +1 reminder, +5 warning, +10 fee, +15 ultimatum, +20 cut, +90 agency."""
        days = {
            StageAction.REMINDER: 1,
            StageAction.WARNING: 5,
            StageAction.LATE_FEE: 10,
            StageAction.ULTIMATUM: 15,
            StageAction.SUSPEND: 20,
            StageAction.AGENCY: 90,
            StageAction.LEGAL_REVIEW: 120,
        }
        return cls(stages=[Stage(action=a, offset=timedelta(days=d)) for a, d in days.items()])


# the legal review's thresholds where a policy sets none, per currency in its minor units: the cost of
# legal action, and the small-claims limit (EU procedure 5,000 EUR; Romania 10,000 RON; England 10,000 GBP).
# A currency not listed needs them set in the policy if the policy has a legal review.
LEGAL_THRESHOLDS: dict[str, dict[str, int]] = {
    "EUR": {"cost_of_legal_action_minor": 150_000, "small_claims_limit_minor": 500_000},
    "RON": {"cost_of_legal_action_minor": 750_000, "small_claims_limit_minor": 1_000_000},
    "BGN": {"cost_of_legal_action_minor": 300_000, "small_claims_limit_minor": 977_900},
    "GBP": {"cost_of_legal_action_minor": 130_000, "small_claims_limit_minor": 1_000_000},
    "USD": {"cost_of_legal_action_minor": 160_000, "small_claims_limit_minor": 550_000},
}


# --- invoice ---------------------------------------------------------------------------------


class Contact(Strict):
    """Who receives the notices."""

    name: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable_line)]
    email: EmailStr


class InvoiceFields(Strict):
    """An issued invoice with its contract terms, less the policy that dunns it (``Invoice`` adds it)."""

    invoice_id: Identifier
    customer_id: Identifier
    contact: Contact
    amount_minor: PositiveMinor
    currency: Currency
    issue_date: BoundedDate
    due_date: BoundedDate
    language: str = Field(default="en", description="one of " + ", ".join(SUPPORTED_LANGUAGES))
    time_zone: TimeZone = "UTC"
    country: Country | None = Field(default=None, description="the client's country: public holidays, locale")
    service: Identifier | None = Field(default=None, description="the service this invoice covers, e.g. 'hosting'")
    terms: ContractTerms = Field(default_factory=ContractTerms)

    @model_validator(mode="after")
    def _consistent(self) -> InvoiceFields:
        if self.due_date < self.issue_date:
            raise ValueError(f"due date {self.due_date} is before issue date {self.issue_date}")
        if self.language not in SUPPORTED_LANGUAGES:
            raise ValueError(f"unsupported language {self.language!r}: use one of {', '.join(SUPPORTED_LANGUAGES)}")
        return self


class Invoice(InvoiceFields):
    """An issued invoice with its contract terms and the policy that dunns it."""

    policy: DunningPolicy = Field(default_factory=DunningPolicy.default)

    @model_validator(mode="after")
    def _with_thresholds(self) -> Invoice:
        # the thresholds in this invoice's currency become part of it (the issued event carries them)
        object.__setattr__(self, "policy", self.policy.with_legal_thresholds(self.currency))
        return self

    @property
    def workflow_id(self) -> str:
        """Temporal workflow id of this invoice."""
        return invoice_workflow_id(self.invoice_id)


def _utc_if_naive(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


OPENING_FEE = "opening fee"  # the reason of a fee another system charged before the invoice was imported


class OpeningFee(Strict):
    """A late fee the other system charged before the invoice was imported: owed like the policy's own."""

    amount_minor: PositiveMinor
    charged_on: BoundedDate


class LastNotice(Strict):
    """The last stage notice the other system sent: not sent again, and the next stage counts from it."""

    stage: StageAction
    sent_at: Annotated[BoundedMoment, AfterValidator(_utc_if_naive)] = Field(
        description="when it went out (UTC if no offset is given)"
    )


class Opening(Strict):
    """What an imported invoice brings from the system that chased it before (``dunning invoice import``)."""

    fees: list[OpeningFee] = Field(default_factory=list, max_length=100)
    last_notice: LastNotice | None = None


def invoice_workflow_id(invoice_id: str) -> str:
    """``invoice-<invoice id>``: one workflow per invoice."""
    return f"invoice-{invoice_id}"


def customer_workflow_id(customer_id: str) -> str:
    """``customer-<customer id>``: one workflow per customer, for what its invoices share."""
    return f"customer-{customer_id}"


# --- requests (update / signal inputs) ------------------------------------------------------


class Payment(Strict):
    """A payment received from the client; idempotent by ``payment_id``."""

    payment_id: Identifier
    amount_minor: PositiveMinor
    currency: Currency
    received_at: BoundedMoment | None = Field(
        default=None,
        description="the value date: when the money arrived (UTC if no offset is given); defaults to now."
        " Not later than now plus 5 minutes, not more than 31 days before the invoice's issue date",
    )


class OpenDispute(Strict):
    """The client contests the invoice; escalation pauses."""

    reason: FreeText = Field(min_length=1, max_length=500)


class DisputeOutcome(StrEnum):
    UPHELD = "upheld"
    REJECTED = "rejected"


class ResolveDispute(Strict):
    """End a dispute: upheld (with a credit) or rejected."""

    outcome: DisputeOutcome
    credit_minor: NonNegativeMinor = 0
    note: FreeText = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _credit_only_when_upheld(self) -> ResolveDispute:
        if self.outcome == DisputeOutcome.REJECTED and self.credit_minor:
            raise ValueError("a rejected dispute carries no credit")
        return self


class Instalment(Strict):
    due_date: BoundedDate
    amount_minor: PositiveMinor


class PaymentPlan(Strict):
    """Instalments that replace escalation while they arrive on time."""

    instalments: list[Instalment] = Field(min_length=1, max_length=60)

    @model_validator(mode="after")
    def _dates_ascending(self) -> PaymentPlan:
        dates = [i.due_date for i in self.instalments]
        if any(later <= earlier for earlier, later in pairwise(dates)):
            raise ValueError("instalment due dates must be strictly ascending")
        return self

    @property
    def total_minor(self) -> int:
        return sum(i.amount_minor for i in self.instalments)


class LegalDecision(StrEnum):
    SUE = "sue"
    SETTLE = "settle"
    WRITE_OFF = "write_off"
    AGENCY = "agency"


class DecideLegal(Strict):
    """A human's decision at legal review."""

    decision: LegalDecision
    settle_amount_minor: PositiveMinor | None = None
    note: FreeText = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _amount_only_for_settle(self) -> DecideLegal:
        if (self.decision == LegalDecision.SETTLE) != (self.settle_amount_minor is not None):
            raise ValueError("settle_amount_minor is required for 'settle' and only for 'settle'")
        return self


# --- state, events, status ------------------------------------------------------------------


class InvoiceState(StrEnum):
    """Where an invoice stands: escalation stages, the two pauses, then the closed states."""

    ISSUED = "issued"
    REMINDED = "reminded"
    WARNED = "warned"
    LATE_FEE = "late_fee"
    ULTIMATUM = "ultimatum"
    SUSPENDED = "suspended"
    AGENCY = "agency"
    LEGAL_REVIEW = "legal_review"
    LEGAL_ACTION = "legal_action"
    DISPUTED = "disputed"
    PAYMENT_PLAN = "payment_plan"
    PAID = "paid"
    SETTLED = "settled"
    WRITTEN_OFF = "written_off"
    FACTORED = "factored"

    @property
    def closed(self) -> bool:
        return self in (InvoiceState.PAID, InvoiceState.SETTLED, InvoiceState.WRITTEN_OFF, InvoiceState.FACTORED)


class EventKind(StrEnum):
    """Kinds of domain events in the append-only event log."""

    INVOICE_ISSUED = "invoice_issued"
    INVOICE_RESENT = "invoice_resent"
    NOTICE_SENT = "notice_sent"
    NOTICE_FAILED = "notice_failed"
    STAGE_REACHED = "stage_reached"
    LATE_FEE_CHARGED = "late_fee_charged"
    PAYMENT_RECORDED = "payment_recorded"
    PAYMENT_REJECTED = "payment_rejected"
    PAYMENT_REJECTIONS_COUNTED = "payment_rejections_counted"
    DISCOUNT_APPLIED = "discount_applied"
    OVERPAYMENT_CREDITED = "overpayment_credited"
    DISPUTE_OPENED = "dispute_opened"
    DISPUTE_RESOLVED = "dispute_resolved"
    PAYMENT_PLAN_AGREED = "payment_plan_agreed"
    INSTALMENT_MISSED = "instalment_missed"
    SERVICE_SUSPENDED = "service_suspended"
    SERVICE_RESTORED = "service_restored"
    EQUIPMENT_SUSPENDED = "equipment_suspended"
    EQUIPMENT_RESTORED = "equipment_restored"
    SUSPEND_FAILED = "suspend_failed"
    RESTORE_FAILED = "restore_failed"
    AGENCY_HANDOVER = "agency_handover"
    INVOICE_FACTORED = "invoice_factored"
    LEGAL_REVIEW_OPENED = "legal_review_opened"
    LEGAL_DECISION = "legal_decision"
    INVOICE_CLOSED = "invoice_closed"
    DISCOUNT_LAPSED = "discount_lapsed"
    LATE_CHARGES_STOPPED = "late_charges_stopped"
    SMALL_BALANCE_WRITTEN_OFF = "small_balance_written_off"
    ESCALATION_STOPPED = "escalation_stopped"
    CUT_ANNOUNCED = "cut_announced"
    RECOVERY_RECORDED = "recovery_recorded"
    INTEREST_ACCRUED = "interest_accrued"
    LATE_FEE_REVERSED = "late_fee_reversed"


class DomainEvent(Strict):
    """One fact about an invoice; ``(invoice_id, sequence)`` is its identity."""

    invoice_id: str
    sequence: int = Field(ge=1)
    kind: EventKind
    occurred_at: datetime
    data: dict[str, Any] = Field(default_factory=dict)


class NoticeKind(StrEnum):
    """Every message the service sends to a client."""

    INVOICE_ISSUED = "invoice_issued"
    COURTESY = "courtesy"
    REMINDER = "reminder"
    WARNING = "warning"
    LATE_FEE = "late_fee"
    ULTIMATUM = "ultimatum"
    SUSPENDED = "suspended"
    RESTORED = "restored"
    RECEIPT = "receipt"
    PLAN_AGREED = "plan_agreed"
    INSTALMENT_MISSED = "instalment_missed"
    DISPUTE_OPENED = "dispute_opened"
    DISPUTE_RESOLVED = "dispute_resolved"
    AGENCY_HANDOVER = "agency_handover"
    LEGAL_REVIEW = "legal_review"


COMPENSATION = "compensation for recovery costs"  # the reason of the fee statutory interest comes with


class Fee(Strict):
    """A late fee charged on an invoice."""

    number: int = Field(ge=1)
    amount_minor: PositiveMinor
    charged_at: datetime
    reason: str


# dispute credits, discounts applied and write-offs, as a request to an activity carries them
DeductedMinor = Annotated[
    int,
    Field(
        validation_alias=AliasChoices("deducted_minor", "credited_minor"),  # so named before release v6
        description="dispute credits, discounts applied and write-offs (InvoiceLedger.deducted_minor)",
    ),
]


class NoticeRequest(Strict):
    """Everything a notice needs; built by the workflow, rendered and sent by an activity.

    Only validated data reaches a notice: no free text from callers (reasons, notes) is carried.
    """

    idempotency_key: str
    kind: NoticeKind
    invoice_id: str
    customer_id: str
    to_name: str
    to_email: EmailStr
    language: str
    time_zone: str
    currency: str
    invoice_amount_minor: int
    fees: list[Fee]
    paid_minor: int
    deducted_minor: DeductedMinor
    balance_minor: int
    issue_date: date
    due_date: date
    suspension_at: datetime | None = None
    discount_minor: int = 0
    discount_until: date | None = None
    detail: str = Field(default="", description="a payment id (receipt) or a dispute outcome; identifiers only")
    country: str | None = None
    days_overdue: int = 0
    late_fee_percent_per_month: Decimal = Decimal("0")
    fixed_late_fee_minor: int = 0
    payment_minor: int = Field(default=0, description="receipt: the amount of this payment")
    credit_minor: int = Field(default=0, description="dispute resolved: the credit granted")
    instalments: list[Instalment] = Field(default_factory=list, description="plan agreed / instalment missed")
    missed_instalment: int | None = Field(default=None, description="instalment missed: its number, from 1")
    remote_disconnect: bool = Field(default=False, description="ultimatum/suspended: equipment is cut, not only support")
    service: str | None = None
    residue_minor: int = Field(default=0, description="receipt: the small balance written off after the payment")
    recovery: bool = Field(default=False, description="receipt: a payment on a written-off invoice")
    unrecovered_minor: int = Field(default=0, description="receipt of a recovery: what is still written off")
    interest_minor: int = Field(default=0, description="statutory interest posted so far (part of the balance)")
    interest_through: date | None = Field(default=None, description="the last day the posted interest covers")
    interest_rate_percent: Decimal | None = Field(
        default=None, description="the statutory rate (reference rate plus margin) of the last day posted"
    )
    principal_paid_minor: int = Field(default=0, description="receipt: what this payment paid of the invoice amount")
    fees_paid_minor: int = Field(default=0, description="receipt: what this payment paid of late fees")
    interest_paid_minor: int = Field(default=0, description="receipt: what this payment paid of statutory interest")
    received_on: date | None = Field(default=None, description="receipt: the local date the money arrived")
    fees_reversed: list[Fee] = Field(
        default_factory=list, description="receipt: late fees charged after this payment's money had arrived, reversed"
    )


class AgencyHandover(Strict):
    """The agency stage's hand-over package request; the activity adds the history from the event log."""

    idempotency_key: str
    invoice: Invoice
    fees: list[Fee]
    paid_minor: int
    deducted_minor: DeductedMinor
    balance_minor: int
    days_overdue: int
    interest_minor: int = Field(default=0, description="statutory interest posted, part of the balance")


# how long one suspend_equipment/restore_equipment attempt may run; the registry refuses entries
# whose waits cannot finish inside it (a BMC's graceful wait, then ForceOff and its wait)
EQUIPMENT_ACTIVITY_TIMEOUT = timedelta(minutes=5)


class EquipmentRequest(Strict):
    """Cut or restore one piece of a customer's equipment, named only by its registry id."""

    idempotency_key: str
    equipment_id: Identifier
    customer_id: Identifier
    invoice_id: Identifier
    reason: str = Field(max_length=200)
    requested_by: str = Field(max_length=200, description="who asks: the workflow id, or an ops user")


class EquipmentResult(Strict):
    """What the adapter read back after acting."""

    equipment_id: str
    action: str  # "suspend" | "restore"
    changed: bool = Field(description="false when it was already in the wanted state")
    state: str = Field(description="the state read back from the equipment, e.g. 'Off' or 'down'")
    dry_run: bool = False


class PublicHolidaysRequest(Strict):
    """Which public holidays the sending window needs: a country and some years."""

    country: Country
    years: list[int] = Field(min_length=1, max_length=5)


class MarkFactored(Strict):
    """The receivable was sold to a factor (technique 17): client-facing escalation ends."""

    factor: Identifier
    advance_minor: NonNegativeMinor = Field(description="what the factor paid for the receivable")


class ServiceAction(Strict):
    """A request to block or unblock a customer's service for one invoice."""

    idempotency_key: str
    customer_id: str
    invoice_id: str
    remote_disconnect_authorized: bool
    equipment_ids: list[str]
    reason: str


class ServiceChange(Strict):
    """What ``suspend_service`` / ``restore_service`` did: the block, and the equipment that may be cut."""

    support_and_orders_blocked: bool
    # results recorded before equipment existed (release v1) carry the block alone
    remote_disconnect_authorized: bool = False
    equipment_ids: list[str] = Field(default_factory=list)


class NoticeDelivery(Strict):
    """What ``send_notice`` did: the channels that delivered the notice and those that refused it."""

    message_id: str
    delivered: list[str] = Field(description="channels that delivered it, e.g. ['email']")
    failed: dict[str, str] = Field(default_factory=dict, description="channel: why it refused the notice")

    @model_validator(mode="before")
    @classmethod
    def _bare_message_id(cls, value: Any) -> Any:
        """Results recorded before channels (release v1) are the e-mail's bare Message-ID."""
        return {"message_id": value, "delivered": ["email"]} if isinstance(value, str) else value


class ActionTaken(Strict):
    """A line of the invoice's story for the status query."""

    at: datetime
    what: str


class NextAction(Strict):
    """What the workflow will do next unless a request comes first, and when."""

    what: str
    at: datetime
    kind: str | None = Field(default=None, description="stage, late_fee, instalment, legal_review, discount_ends or interest")


class InvoiceStatus(Strict):
    """Answer of the ``status`` query: everything ops want to know at a glance."""

    invoice_id: str
    customer_id: str
    state: InvoiceState
    time_zone: str
    currency: str
    amount_minor: int
    fees_minor: int
    paid_minor: int
    credited_minor: int = Field(description="credits granted on disputes (before release v6: with the discount)")
    discount_minor: int = Field(
        default=0, description="early-payment discount applied (0 from a worker before release v6)"
    )
    written_off_minor: int
    balance_minor: int
    overpaid_minor: int
    interest_minor: int = Field(default=0, description="statutory interest posted, part of the balance")
    interest_accruing_minor: int = Field(default=0, description="interest accrued since the last posting, not yet owed")
    discount_available_minor: int
    days_overdue: int
    disputed: bool
    on_payment_plan: bool
    rejected_payments: int
    next_action: NextAction | None
    actions: list[ActionTaken]
    legal_summary: dict[str, Any] | None = None


class InvoiceOutcome(Strict):
    """The workflow's result. The fields with defaults came later: results of older runs lack them."""

    invoice_id: str
    state: InvoiceState
    paid_minor: int
    fees_minor: int
    written_off_minor: int
    overpaid_minor: int
    credited_minor: int = 0
    balance_minor: int = 0
    last_sequence: int = Field(default=0, description="the sequence of the last event the workflow wrote to the log")
    recovered_minor: int = Field(default=0, description="paid after the write-off")
    interest_minor: int = Field(default=0, description="statutory interest posted")
