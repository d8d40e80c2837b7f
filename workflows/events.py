"""The typed payload of every domain event kind: what each fact in the event log carries.

``DomainEvent.data`` is stored as JSON; these models say what it must contain, so a malformed
event is refused before it is written (``append_events``) and readers get typed payloads.
A field added to a payload later gets a default, so events written before it still validate.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

from pydantic import Field, JsonValue, field_validator

from workflows.models import (
    ActionTaken,
    DisputeOutcome,
    DomainEvent,
    EventKind,
    Invoice,
    InvoiceState,
    LegalDecision,
    NextAction,
    NoticeKind,
    PaymentPlan,
    PositiveMinor,
    StageAction,
    Strict,
)

Minor = Annotated[int, Field(strict=True, ge=0, description="amount in minor units (cents)")]
Count = Annotated[int, Field(strict=True, ge=0)]


class Payload(Strict):
    """Base of every payload: unknown fields are errors, instances are immutable."""


class InvoiceIssued(Payload):
    invoice: Invoice = Field(description="the whole invoice as started: terms, policy, contact")


class InvoiceResent(Payload):
    balance_minor: Minor


class NoticeSent(Payload):
    kind: NoticeKind
    step: str
    to: str
    channels: list[str] = Field(default_factory=list, description="channels that delivered it, e.g. ['email']")


class NoticeFailed(Payload):
    kind: str = Field(description="a notice kind, or another message such as 'agency_package'")
    step: str
    error: str
    channel: str = Field(default="all", description="the channel that failed; 'all' when nothing was delivered")


class StageReached(Payload):
    stage: StageAction
    days_overdue: Count


class LateFeeCharged(Payload):
    number: Annotated[int, Field(strict=True, ge=1)]
    amount_minor: PositiveMinor
    reason: str


class PaymentRecorded(Payload):
    payment_id: str
    amount_minor: PositiveMinor
    received_at: datetime
    balance_minor: Minor = Field(description="the balance after this payment")


class PaymentRejected(Payload):
    reason: str
    payload: JsonValue = Field(description="what was received: the raw text, or the payment as JSON")


class AmountApplied(Payload):
    """An early-payment discount granted, or an overpayment credited to the client."""

    amount_minor: PositiveMinor


class DisputeOpened(Payload):
    reason: str


class DisputeResolved(Payload):
    outcome: DisputeOutcome
    credit_minor: Minor
    note: str = ""
    escalation_moved_by: timedelta | None = Field(
        default=None, description="how far the stages still to come moved (None: events written before it was told)"
    )


class PaymentPlanAgreed(Payload):
    plan: PaymentPlan


class InstalmentMissed(Payload):
    instalment: Annotated[int, Field(strict=True, ge=1)]
    expected_minor: Minor
    received_minor: int


class ServiceChanged(Payload):
    """Support and new orders blocked (suspended) or unblocked (restored) for one invoice."""

    support_and_orders_blocked: bool
    remote_disconnect_authorized: bool
    equipment_ids: list[str]
    service: str | None = Field(default=None, description="the service the invoice covers; None: all of them")


class EquipmentChanged(Payload):
    """One piece of equipment cut or restored, with the state read back from it."""

    equipment_id: str
    state: str
    changed: bool
    dry_run: bool


class EquipmentFailed(Payload):
    equipment_id: str
    error: str


class AgencyHandedOver(Payload):
    balance_minor: Minor
    package_sent: bool = False


class InvoiceFactored(Payload):
    factor: str
    advance_minor: Minor
    balance_minor: Minor


class LegalReviewOpened(Payload):
    """The cost-benefit summary put before the human deciding (``policy.legal_summary``)."""

    balance_minor: Minor
    fees_minor: Minor
    paid_minor: Minor
    days_overdue: Count
    cost_of_action_minor: Minor
    net_if_recovered_minor: int
    small_claims_limit_minor: Minor
    small_claims_eligible: bool
    worth_suing: bool
    summary: str


class LegalDecisionTaken(Payload):
    decision: LegalDecision
    settle_amount_minor: PositiveMinor | None = None
    note: str = ""
    balance_minor: Minor = Field(description="the balance when the decision was taken")


class InvoiceClosed(Payload):
    state: InvoiceState
    paid_minor: Minor
    fees_minor: Minor
    written_off_minor: Minor
    overpaid_minor: Minor

    @field_validator("state")
    @classmethod
    def _a_closed_state(cls, state: InvoiceState) -> InvoiceState:
        if not state.closed:
            raise ValueError(f"{state.value!r} is not a closed state")
        return state


class DiscountLapsed(Payload):
    """The early-payment discount was not used in time: the full amount is due."""

    last_day: date = Field(description="the last local date on which the discount applied")


class LateChargesStopped(Payload):
    """No further late fee is charged: the cap was reached, or the invoice went to the agency or to law."""

    reason: str = Field(description="'cap reached', 'handed to the agency' or 'legal action'")
    fees_minor: Minor = Field(description="the late fees charged, which stay owed")


class SmallBalanceWrittenOff(Payload):
    """The residue a payment left was below the policy's tolerance: written off, and the invoice closes as paid."""

    amount_minor: PositiveMinor
    payment_id: str = Field(description="the payment that left it")


class EscalationStopped(Payload):
    """The balance is below the policy's minimum: no further stage (no fee, ultimatum, cut or agency)."""

    balance_minor: Minor
    minimum_minor: Minor
    stage: StageAction = Field(description="the stage that was due and was not climbed")


class CutAnnounced(Payload):
    """An ultimatum naming the moment of the cut was delivered: no cut before ``cut_at``."""

    cut_at: datetime
    notice_from: datetime = Field(description="when the client was told, to the minute; the notice counts from it")


class RecoveryRecorded(Payload):
    """A payment on a written-off invoice."""

    payment_id: str
    amount_minor: PositiveMinor
    received_at: datetime
    recovered_minor: Minor = Field(description="all recovered so far")
    unrecovered_minor: Minor = Field(description="what is still written off")


PAYLOADS: dict[EventKind, type[Payload]] = {
    EventKind.INVOICE_ISSUED: InvoiceIssued,
    EventKind.INVOICE_RESENT: InvoiceResent,
    EventKind.NOTICE_SENT: NoticeSent,
    EventKind.NOTICE_FAILED: NoticeFailed,
    EventKind.STAGE_REACHED: StageReached,
    EventKind.LATE_FEE_CHARGED: LateFeeCharged,
    EventKind.PAYMENT_RECORDED: PaymentRecorded,
    EventKind.PAYMENT_REJECTED: PaymentRejected,
    EventKind.DISCOUNT_APPLIED: AmountApplied,
    EventKind.OVERPAYMENT_CREDITED: AmountApplied,
    EventKind.DISPUTE_OPENED: DisputeOpened,
    EventKind.DISPUTE_RESOLVED: DisputeResolved,
    EventKind.PAYMENT_PLAN_AGREED: PaymentPlanAgreed,
    EventKind.INSTALMENT_MISSED: InstalmentMissed,
    EventKind.SERVICE_SUSPENDED: ServiceChanged,
    EventKind.SERVICE_RESTORED: ServiceChanged,
    EventKind.EQUIPMENT_SUSPENDED: EquipmentChanged,
    EventKind.EQUIPMENT_RESTORED: EquipmentChanged,
    EventKind.SUSPEND_FAILED: EquipmentFailed,
    EventKind.RESTORE_FAILED: EquipmentFailed,
    EventKind.AGENCY_HANDOVER: AgencyHandedOver,
    EventKind.INVOICE_FACTORED: InvoiceFactored,
    EventKind.LEGAL_REVIEW_OPENED: LegalReviewOpened,
    EventKind.LEGAL_DECISION: LegalDecisionTaken,
    EventKind.INVOICE_CLOSED: InvoiceClosed,
    EventKind.DISCOUNT_LAPSED: DiscountLapsed,
    EventKind.LATE_CHARGES_STOPPED: LateChargesStopped,
    EventKind.SMALL_BALANCE_WRITTEN_OFF: SmallBalanceWrittenOff,
    EventKind.ESCALATION_STOPPED: EscalationStopped,
    EventKind.CUT_ANNOUNCED: CutAnnounced,
    EventKind.RECOVERY_RECORDED: RecoveryRecorded,
}


# --- what the workflow decided: the snapshot that ends each batch of events -----------------


class ReceivableEntry(Payload):
    """A change to what the client owes, made by one event, dated in the client's time zone."""

    sequence: Annotated[int, Field(strict=True, ge=1)] = Field(description="the event that made it")
    effective_on: date
    amount_minor: int = Field(description="positive: more is owed (invoice, fee); negative: less (payment, credit)")
    reason: EventKind


class InvoiceSnapshot(Payload):
    """The invoice as the workflow left it after a batch of events: every fact a read model shows.

    Read models copy these fields; they never re-derive a state, an amount or a next action.
    Amounts are minor units of ``currency``; ``credited_minor`` is dispute credits only, and the
    discount and write-offs are their own components.
    """

    taken_at: datetime
    last_sequence: Annotated[int, Field(strict=True, ge=1)]
    customer_id: str
    currency: str
    service: str | None
    time_zone: str
    issue_date: date
    due_date: date
    state: InvoiceState = Field(description="what ops see: a pause shows over the escalation stage")
    escalation: InvoiceState
    last_stage: StageAction | None
    amount_minor: Minor
    fees_minor: Minor
    paid_minor: Minor
    credited_minor: Minor
    discount_minor: Minor
    written_off_minor: Minor
    balance_minor: Minor
    overpaid_minor: Minor
    discount_available_minor: Minor = Field(description="the discount if paid in full now, as of ``taken_at``")
    days_overdue: Count = Field(description="as of ``taken_at``")
    next_action: NextAction | None = Field(description="what the workflow will do next, unless a request comes first")
    disputed: bool
    on_payment_plan: bool
    suspended: bool
    suspended_service: str | None
    sent_to_agency: bool
    factored_to: str | None
    equipment_held: list[str] = Field(description="equipment cut for this invoice and not yet restored")
    legal_review_again_at: datetime | None
    legal_summary: dict[str, Any] | None
    rejected_payments: Count
    failed_notices: Count = Field(description="notice deliveries that failed (notice_failed events)")
    closed_at: datetime | None
    closed_on: date | None = Field(description="the local date it closed")
    late_charges_stopped: str | None = Field(default=None, description="why no further late fee is charged")
    escalation_stopped: bool = Field(default=False, description="the balance fell below the policy's minimum")
    cut_announced_for: datetime | None = Field(default=None, description="the cut moment a delivered ultimatum named")
    recovered_minor: Minor = Field(default=0, description="paid on the invoice after it was written off")
    receivables: list[ReceivableEntry] = Field(description="the changes to what is owed made by this batch")
    story: list[ActionTaken] = Field(description="the lines of the invoice's story told since the previous batch")


def payload_of(event: DomainEvent) -> Payload:
    """The event's data validated as its kind's payload (``pydantic.ValidationError`` if malformed)."""
    return PAYLOADS[event.kind].model_validate(event.data)


class RecordedEvent(DomainEvent):
    """An event as read back from the store: with its global position and a typed payload."""

    position: int = Field(ge=1, description="global order of appends across all invoices")

    def payload(self) -> Payload:
        """The typed payload of this event."""
        return payload_of(self)
