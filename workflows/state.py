"""The invoice workflow's input, the state continue-as-new carries to the next run, and its next step.

Kept out of ``workflows.invoice``: the sandbox loads the workflow's own module once per invoice
it holds, and a module it passes through once per worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from workflows.events import PaymentRejectionsCounted, ReceivableEntry
from workflows.interest import InterestState
from workflows.ladder import StepKind
from workflows.models import (
    ActionTaken,
    DomainEvent,
    Fee,
    Instalment,
    Invoice,
    InvoiceState,
    LegalDecision,
    NoticeKind,
    Opening,
    PaymentPlan,
    StageAction,
)

MAX_ACTIONS_KEPT = 200
HISTORY_BYTES_LIMIT = 4 * 1024 * 1024  # continue as new beyond this history size (Temporal terminates at 50 MB)
# continue as new after this many signals: Temporal refuses signals beyond history.maximumSignalsPerExecution
# (150 in the embedded and compose Temporal), so one workflow task never holds more than that many signals
# (each costs ~1-3 ms of the SDK's 2 s deadlock budget) nor, at 256 KiB each, more than 38 MiB of history
SIGNALS_PER_RUN = 100
REJECTIONS_STORED_PER_DAY = 100  # rejected payments stored one by one per invoice per day; beyond, counted
REJECTION_WINDOW = timedelta(days=1)
COUNT_WRITTEN_EVERY = 1_000  # counted rejections are written at least this often (and when the day ends or the invoice closes)
MAX_REASONS_COUNTED = 10  # distinct reasons one count keeps; the rest go under OTHER_REASONS
OTHER_REASONS = "other reasons"


class QueuedNotice(BaseModel):
    """A notice a handler asked for; the run loop sends it."""

    kind: NoticeKind
    step: str
    detail: str = ""
    amount_minor: int = Field(default=0, description="receipt: the payment; dispute resolved: the credit")
    number: int | None = Field(default=None, description="instalment missed: which one")
    residue_minor: int = Field(default=0, description="receipt: the small balance written off after the payment")
    recovery: bool = Field(default=False, description="receipt: the payment is a recovery after a write-off")
    instalments: list[Instalment] = Field(default_factory=list, description="plan agreed / instalment missed")
    principal_paid_minor: int = Field(default=0, description="receipt: what the payment paid of the invoice amount")
    fees_paid_minor: int = Field(default=0, description="receipt: what the payment paid of late fees")
    interest_paid_minor: int = Field(default=0, description="receipt: what the payment paid of statutory interest")
    received_at: datetime | None = Field(default=None, description="receipt: when the payment's money arrived")
    fees_reversed: list[Fee] = Field(default_factory=list, description="receipt: late fees the payment reversed")


class Dispute(BaseModel):
    opened_at: datetime
    reason: str


class CustomerPause(BaseModel):
    """Ops paused the invoice's customer (``workflows.customer_ops``): no step until the customer resumes."""

    since: datetime = Field(description="when the invoice heard of the pause")
    reason: str
    requested_by: str
    until: datetime | None = Field(default=None, description="when the customer's pause ends by itself, if ops said")


class PlanInProgress(BaseModel):
    plan: PaymentPlan
    agreed_at: datetime
    settled_at_agreement_minor: int = Field(description="paid + credited when the plan was agreed")
    checked: int = Field(default=0, description="instalments whose deadline has been checked")


def shown_state(escalation: InvoiceState, *, disputed: bool, on_plan: bool) -> InvoiceState:
    """The state ops see: a pause (dispute, payment plan) shows over the escalation stage it interrupts."""
    if escalation.closed:
        return escalation
    if disputed:
        return InvoiceState.DISPUTED
    if on_plan:
        return InvoiceState.PAYMENT_PLAN
    return escalation


class BatchFacts(BaseModel):
    """What the snapshot at the end of the next batch needs beyond the ledger (``workflows.snapshot``)."""

    model_config = ConfigDict(extra="forbid")

    last_stage: StageAction | None = None
    sent_to_agency: bool = False
    factored_to: str | None = None
    closed_at: datetime | None = None
    notices_failed: int = 0
    receivables: list[ReceivableEntry] = Field(default_factory=list, description="not yet in a snapshot")
    story_told: int = Field(default=0, description="story lines already in a snapshot")


class RejectionTally(BaseModel):
    """Rejected payments beyond ``REJECTIONS_STORED_PER_DAY``: counted, not stored one by one.

    A window opens with the first rejection and lasts ``REJECTION_WINDOW``; within it the first
    rejections are stored whole (``payment_rejected``), the rest only counted here until the count
    is written (``payment_rejections_counted``).
    """

    model_config = ConfigDict(extra="forbid")

    window_start: datetime | None = None
    stored: int = Field(default=0, description="payment_rejected events written in this window")
    counted: int = Field(default=0, description="rejections counted and not yet written")
    first_at: datetime | None = None
    last_at: datetime | None = None
    reasons: dict[str, int] = Field(default_factory=dict, description="reason -> how many of the counted")

    def window_over(self, now: datetime) -> bool:
        return self.window_start is None or now - self.window_start >= REJECTION_WINDOW

    def count(self, at: datetime, reason: str) -> None:
        """One more rejection counted, not stored."""
        self.counted += 1
        self.first_at = self.first_at or at
        self.last_at = at
        if reason not in self.reasons and len(self.reasons) >= MAX_REASONS_COUNTED:
            reason = OTHER_REASONS
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def take_count(self) -> PaymentRejectionsCounted:
        """The count not yet written, as a ``payment_rejections_counted`` event; the tally starts again."""
        assert self.first_at is not None and self.last_at is not None, "nothing counted"
        counted = PaymentRejectionsCounted(
            count=self.counted, first_at=self.first_at, last_at=self.last_at, reasons=dict(self.reasons)
        )
        self.counted, self.first_at, self.last_at, self.reasons = 0, None, None, {}
        return counted


class InvoiceLedger(BaseModel):
    """Mutable state of one invoice; derived amounts are properties, not fields."""

    model_config = ConfigDict(extra="forbid")

    invoice: Invoice
    escalation: InvoiceState = InvoiceState.ISSUED
    next_stage_index: int = 0
    fees: list[Fee] = Field(default_factory=list)
    payments: dict[str, int] = Field(default_factory=dict, description="payment id -> amount (minor)")
    credited_minor: int = Field(default=0, description="credits granted on disputes")
    discount_minor: int = 0
    written_off_minor: int = 0
    paused: timedelta = timedelta(0)
    dispute: Dispute | None = None
    plan: PlanInProgress | None = None
    customer_pause: CustomerPause | None = None
    customer_control_seen: int = Field(default=0, description="the newest customer_control message taken")
    suspended: bool = False
    held_at_customer: bool = Field(default=False, description="suspended through the customer workflow")
    equipment_cut: list[str] = Field(default_factory=list, description="equipment ids cut and not yet restored")
    equipment_failed: dict[str, str] = Field(default_factory=dict, description="equipment id -> last error")
    failed_notices: list[str] = Field(default_factory=list, description="kinds of the notices that failed")
    public_holidays: list[date] = Field(default_factory=list, description="of the client's country, as looked up")
    holiday_years: list[int] = Field(default_factory=list, description="years whose holidays were looked up")
    legal_decision: LegalDecision | None = None
    legal_review_again_at: datetime | None = None
    rejected_payments: int = 0
    rejections: RejectionTally = Field(default_factory=RejectionTally)
    next_sequence: int = 1
    pending_events: list[DomainEvent] = Field(default_factory=list)
    outbox: list[QueuedNotice] = Field(default_factory=list)
    notices_queued: int = 0
    actions: list[ActionTaken] = Field(default_factory=list)
    actions_total: int = Field(default=0, description="story lines told since the start, the dropped ones too")
    batch_facts: BatchFacts = Field(default_factory=BatchFacts)
    money_rules: bool = Field(default=False, description="caps, freezes, small balances, cut interlock, recoveries")
    handed_to_agency: bool = False
    late_charges_stopped: str | None = Field(default=None, description="why no further late fee is charged")
    escalation_stopped: bool = Field(default=False, description="the balance fell below the policy's minimum")
    cut_announced_for: datetime | None = Field(default=None, description="the cut moment a delivered ultimatum named")
    cut_notice_from: datetime | None = Field(default=None, description="when that ultimatum went out, to the minute")
    cut_announcement_tried_at: datetime | None = None
    minimum_notice_override: timedelta | None = Field(default=None, description="InvoiceWorkflowInput.minimum_notice")
    recoveries: dict[str, int] = Field(default_factory=dict, description="payment id -> amount, after a write-off")
    interest_rules: bool = Field(default=False, description="a policy's statutory interest applies (workflows.accrual)")
    interest: InterestState = Field(default_factory=InterestState)
    value_dates: bool = Field(default=False, description="discount and late fees decided by when the money arrived")
    arrived_at: dict[str, datetime] = Field(
        default_factory=dict, description="payment id -> its value date (payments recorded before it was kept lack one)"
    )
    catch_up: bool = Field(default=False, description="steps due together tell one notice (workflows.steps)")
    stages_moved_by: timedelta = Field(
        default=timedelta(0), description="a catch-up or an imported last notice: how far the stages to come moved"
    )

    @property
    def recovered_minor(self) -> int:
        return sum(self.recoveries.values())

    @property
    def fees_minor(self) -> int:
        return sum(f.amount_minor for f in self.fees)

    @property
    def interest_minor(self) -> int:
        """Statutory interest posted (``interest_accrued`` events): owed like a fee, but its own component."""
        return self.interest.posted_minor

    @property
    def late_charges_minor(self) -> int:
        """Fees and interest: what the policy's cap on late charges bounds."""
        return self.fees_minor + self.interest_minor

    @property
    def paid_minor(self) -> int:
        return sum(self.payments.values())

    @property
    def deducted_minor(self) -> int:
        """Everything taken off what is owed but payments: dispute credits, discounts applied, write-offs."""
        return self.credited_minor + self.discount_minor + self.written_off_minor

    @property
    def net_minor(self) -> int:
        """What the client still owes; negative when overpaid."""
        return self.invoice.amount_minor + self.late_charges_minor - self.paid_minor - self.deducted_minor

    @property
    def balance_minor(self) -> int:
        return max(0, self.net_minor)

    @property
    def overpaid_minor(self) -> int:
        return max(0, -self.net_minor)

    @property
    def principal_outstanding_minor(self) -> int:
        """Unpaid part of the invoice amount itself, as the policy allocates payments: the basis of percentage
        late fees and statutory interest (which count as costs with the fees)."""
        principal = max(0, self.invoice.amount_minor - self.deducted_minor)
        paid, _ = self.invoice.policy.allocation.apportion(principal, self.late_charges_minor, self.paid_minor)
        return principal - paid

    @property
    def state(self) -> InvoiceState:
        """What ops see: a pause shows over the escalation stage it interrupts."""
        return shown_state(self.escalation, disputed=self.dispute is not None, on_plan=self.plan is not None)

    def remember(self, at: datetime, what: str) -> None:
        """Add a line to the story shown by the status query (the newest few hundred)."""
        self.actions.append(ActionTaken(at=at, what=what))
        self.actions_total += 1
        del self.actions[:-MAX_ACTIONS_KEPT]


class InvoiceWorkflowInput(BaseModel):
    """Start (or continue-as-new) argument: the invoice, and the state a previous run carried."""

    invoice: Invoice
    carried: InvoiceLedger | None = None
    history_limit: int = Field(default=10_000, ge=50, description="continue-as-new beyond this many events")
    history_bytes_limit: int = Field(
        default=HISTORY_BYTES_LIMIT, ge=64 * 1024, description="continue-as-new beyond this history size in bytes"
    )
    opening: Opening | None = Field(
        default=None, description="an imported invoice: the fees and the last notice of the system that chased it"
    )
    minimum_notice: timedelta | None = Field(
        default=None,
        gt=timedelta(0),
        description="replaces the policy's minimum notice before a cut, only for stacks that run in real time"
        " (the fault tests); the API and the CLI never set it",
    )


@dataclass(frozen=True)
class Step:
    """The next thing the loop will do unless a handler wakes it first."""

    kind: StepKind
    at: datetime
    label: str
    windowed: bool  # talks to the client: waits for the sending window
