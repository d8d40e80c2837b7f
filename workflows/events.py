"""The typed payload of every domain event kind: what each fact in the event log carries.

``DomainEvent.data`` is stored as JSON; these models say what it must contain. The workflow
records payload objects (``Outbox.record(LateFeeCharged(...))``): each class knows its kind, so a
wrong shape fails the type checker or the model, not the append. Readers get typed payloads too.
A field added to a payload later gets a default, so events written before it still validate.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any, ClassVar, Self

from pydantic import Field, JsonValue, PlainSerializer, field_validator

from workflows.interest import InterestPeriod
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
    ServiceChange,
    StageAction,
    Strict,
)

Minor = Annotated[int, Field(strict=True, ge=0, description="amount in minor units (cents)")]
Count = Annotated[int, Field(strict=True, ge=0)]
# written as ``datetime.isoformat()`` ("+00:00", not pydantic's "Z"), as events have always carried it
IsoMoment = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str, when_used="json")]


class Payload(Strict):
    """Base of every payload: unknown fields are errors, instances are immutable."""


class EventPayload(Payload):
    """The payload of one kind of event; ``event_kind`` says which, so the kind follows from the class."""

    event_kind: ClassVar[EventKind]

    def data(self) -> dict[str, Any]:
        """The payload as the event log stores it (``DomainEvent.data``)."""
        return self.model_dump(mode="json")


class InvoiceIssued(EventPayload):
    event_kind = EventKind.INVOICE_ISSUED

    invoice: Invoice = Field(description="the whole invoice as started: terms, policy, contact")


class InvoiceResent(EventPayload):
    event_kind = EventKind.INVOICE_RESENT

    balance_minor: Minor


class NoticeSent(EventPayload):
    event_kind = EventKind.NOTICE_SENT

    kind: NoticeKind
    step: str
    to: str
    channels: list[str] = Field(default_factory=list, description="channels that delivered it, e.g. ['email']")
    digest: str = Field(default="", description="the customer digest that carried it (its key); '' when sent alone")

    def data(self) -> dict[str, Any]:
        """As rows always were; a notice that went out in a customer digest adds the digest's key."""
        return self.model_dump(mode="json", exclude={"digest"} if not self.digest else None)


class NoticeFailed(EventPayload):
    event_kind = EventKind.NOTICE_FAILED

    kind: str = Field(description="a notice kind, or another message such as 'agency_package'")
    step: str
    channel: str = Field(default="all", description="the channel that failed; 'all' when nothing was delivered")
    error: str


class StageReached(EventPayload):
    event_kind = EventKind.STAGE_REACHED

    stage: StageAction
    days_overdue: Count


class LateFeeCharged(EventPayload):
    event_kind = EventKind.LATE_FEE_CHARGED

    number: Annotated[int, Field(strict=True, ge=1)]
    amount_minor: PositiveMinor
    reason: str


class PaymentRecorded(EventPayload):
    event_kind = EventKind.PAYMENT_RECORDED

    payment_id: str
    amount_minor: PositiveMinor
    received_at: IsoMoment = Field(description="the value date: when the money arrived")
    balance_minor: Minor = Field(description="the balance after this payment (and the fees and discount its value date decided)")
    principal_minor: Minor | None = Field(
        default=None, description="what it paid of the invoice amount, as the policy allocates (None: not told)"
    )
    fees_minor: Minor | None = Field(default=None, description="what it paid of late fees (None: not told)")


class PaymentRejected(EventPayload):
    event_kind = EventKind.PAYMENT_REJECTED

    reason: str
    payload: JsonValue = Field(
        description="what was received: the payment as JSON, or the raw text (its first 1 KB since v6, 2,000 characters before)"
    )
    payload_bytes: Count | None = Field(default=None, description="raw text only: the size of the whole payload")
    payload_sha256: str | None = Field(default=None, description="raw text only: the SHA-256 of the whole payload")


class PaymentRejectionsCounted(EventPayload):
    """Rejected payments beyond the number an invoice stores one by one per day: how many, when, and why."""

    event_kind = EventKind.PAYMENT_REJECTIONS_COUNTED

    count: Annotated[int, Field(strict=True, ge=1)]
    first_at: IsoMoment
    last_at: IsoMoment
    reasons: dict[str, Count] = Field(description="reason -> how many (at most ten reasons, then 'other reasons')")


class AmountApplied(EventPayload):
    """An early-payment discount granted, or an overpayment credited to the client."""

    amount_minor: PositiveMinor


class DiscountApplied(AmountApplied):
    event_kind = EventKind.DISCOUNT_APPLIED

    paid_on: date | None = Field(
        default=None, description="the local date the money paying in full arrived (None: recorded before value dates)"
    )


class OverpaymentCredited(AmountApplied):
    event_kind = EventKind.OVERPAYMENT_CREDITED


class DisputeOpened(EventPayload):
    event_kind = EventKind.DISPUTE_OPENED

    reason: str


class DisputeResolved(EventPayload):
    event_kind = EventKind.DISPUTE_RESOLVED

    outcome: DisputeOutcome
    credit_minor: Minor
    note: str = ""
    escalation_moved_by: timedelta | None = Field(
        default=None, description="how far the stages still to come moved (None: events written before it was told)"
    )


class PaymentPlanAgreed(EventPayload):
    event_kind = EventKind.PAYMENT_PLAN_AGREED

    plan: PaymentPlan


class InstalmentMissed(EventPayload):
    event_kind = EventKind.INSTALMENT_MISSED

    instalment: Annotated[int, Field(strict=True, ge=1)]
    expected_minor: Minor
    received_minor: int


class ServiceChanged(EventPayload):
    """Support and new orders blocked (suspended) or unblocked (restored) for one invoice."""

    support_and_orders_blocked: bool
    remote_disconnect_authorized: bool
    equipment_ids: list[str]
    service: str | None = Field(default=None, description="the service the invoice covers; None: all of them")

    @classmethod
    def after(cls, change: ServiceChange, service: str | None) -> Self:
        """The event recording what ``suspend_service`` / ``restore_service`` did for the invoice's service."""
        return cls(
            support_and_orders_blocked=change.support_and_orders_blocked,
            remote_disconnect_authorized=change.remote_disconnect_authorized,
            equipment_ids=change.equipment_ids,
            service=service,
        )


class ServiceSuspended(ServiceChanged):
    event_kind = EventKind.SERVICE_SUSPENDED


class ServiceRestored(ServiceChanged):
    event_kind = EventKind.SERVICE_RESTORED


class EquipmentChanged(EventPayload):
    """One piece of equipment cut or restored, with the state read back from it."""

    equipment_id: str
    changed: bool
    state: str
    dry_run: bool


class EquipmentSuspended(EquipmentChanged):
    event_kind = EventKind.EQUIPMENT_SUSPENDED


class EquipmentRestored(EquipmentChanged):
    event_kind = EventKind.EQUIPMENT_RESTORED


class EquipmentFailed(EventPayload):
    """A piece of equipment that could not be cut or restored."""

    equipment_id: str
    error: str


class SuspendFailed(EquipmentFailed):
    event_kind = EventKind.SUSPEND_FAILED


class RestoreFailed(EquipmentFailed):
    event_kind = EventKind.RESTORE_FAILED


class AgencyHandedOver(EventPayload):
    event_kind = EventKind.AGENCY_HANDOVER

    balance_minor: Minor
    package_sent: bool = False


class InvoiceFactored(EventPayload):
    event_kind = EventKind.INVOICE_FACTORED

    factor: str
    advance_minor: Minor
    balance_minor: Minor


class LegalReviewOpened(EventPayload):
    """The cost-benefit summary put before the human deciding (``policy.legal_summary``)."""

    event_kind = EventKind.LEGAL_REVIEW_OPENED

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


class LegalDecisionTaken(EventPayload):
    event_kind = EventKind.LEGAL_DECISION

    decision: LegalDecision
    settle_amount_minor: PositiveMinor | None = None
    note: str = ""
    balance_minor: Minor = Field(description="the balance when the decision was taken")


class InvoiceClosed(EventPayload):
    event_kind = EventKind.INVOICE_CLOSED

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


class DiscountLapsed(EventPayload):
    """The early-payment discount was not used in time: the full amount is due."""

    event_kind = EventKind.DISCOUNT_LAPSED

    last_day: date = Field(description="the last local date on which the discount applied")


class LateChargesStopped(EventPayload):
    """No further late fee is charged: the cap was reached, or the invoice went to the agency or to law."""

    event_kind = EventKind.LATE_CHARGES_STOPPED

    reason: str = Field(description="'cap reached', 'handed to the agency' or 'legal action'")
    fees_minor: Minor = Field(description="the late fees charged, which stay owed")


class SmallBalanceWrittenOff(EventPayload):
    """The residue a payment left was below the policy's tolerance: written off, and the invoice closes as paid."""

    event_kind = EventKind.SMALL_BALANCE_WRITTEN_OFF

    amount_minor: PositiveMinor
    payment_id: str = Field(description="the payment that left it")


class EscalationStopped(EventPayload):
    """The balance is below the policy's minimum: no further stage (no fee, ultimatum, cut or agency)."""

    event_kind = EventKind.ESCALATION_STOPPED

    balance_minor: Minor
    minimum_minor: Minor
    stage: StageAction = Field(description="the stage that was due and was not climbed")


class CutAnnounced(EventPayload):
    """An ultimatum naming the moment of the cut was delivered: no cut before ``cut_at``."""

    event_kind = EventKind.CUT_ANNOUNCED

    cut_at: IsoMoment
    notice_from: IsoMoment = Field(description="when the client was told, to the minute; the notice counts from it")


class RecoveryRecorded(EventPayload):
    """A payment on a written-off invoice."""

    event_kind = EventKind.RECOVERY_RECORDED

    payment_id: str
    amount_minor: PositiveMinor
    received_at: IsoMoment
    recovered_minor: Minor = Field(description="all recovered so far")
    unrecovered_minor: Minor = Field(description="what is still written off")


class InterestAccrued(EventPayload):
    """Statutory interest posted: the days since the last posting on the unpaid principal, now owed (docs/interest.md)."""

    event_kind = EventKind.INTEREST_ACCRUED

    amount_minor: Minor = Field(description="this posting, rounded half up to the minor unit (within the cap)")
    principal_minor: Minor = Field(description="the unpaid principal it accrued on")
    first_day: date
    last_day: date
    periods: list[InterestPeriod] = Field(description="the days at each rate, with the rate's source")
    capped: bool = Field(default=False, description="the cap on late charges cut this posting short")
    interest_minor: Minor = Field(description="all interest posted so far")
    occasion: str = Field(description="what posted it: the late-fee stage, a stage, a payment, the month end, ...")
class LateFeeReversed(EventPayload):
    """A late fee charged after a payment's money had arrived (by its value date): the principal was paid by
    then, so the fee is taken back."""

    event_kind = EventKind.LATE_FEE_REVERSED

    number: Annotated[int, Field(strict=True, ge=1)] = Field(description="the fee reversed (its late_fee_charged number)")
    amount_minor: PositiveMinor
    charged_at: IsoMoment = Field(description="when the fee was charged")
    payment_id: str = Field(description="the payment whose value date reverses it")
    received_at: IsoMoment = Field(description="that payment's value date")


PAYLOADS: dict[EventKind, type[EventPayload]] = {
    cls.event_kind: cls
    for cls in (
        InvoiceIssued,
        InvoiceResent,
        NoticeSent,
        NoticeFailed,
        StageReached,
        LateFeeCharged,
        PaymentRecorded,
        PaymentRejected,
        PaymentRejectionsCounted,
        DiscountApplied,
        OverpaymentCredited,
        DisputeOpened,
        DisputeResolved,
        PaymentPlanAgreed,
        InstalmentMissed,
        ServiceSuspended,
        ServiceRestored,
        EquipmentSuspended,
        EquipmentRestored,
        SuspendFailed,
        RestoreFailed,
        AgencyHandedOver,
        InvoiceFactored,
        LegalReviewOpened,
        LegalDecisionTaken,
        InvoiceClosed,
        DiscountLapsed,
        LateChargesStopped,
        SmallBalanceWrittenOff,
        EscalationStopped,
        CutAnnounced,
        RecoveryRecorded,
        InterestAccrued,
        LateFeeReversed,
    )
}
"""The payload class of each kind, for reading events back."""


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
    interest_minor: Minor = Field(default=0, description="statutory interest posted (in the balance)")
    interest_accruing_minor: Minor = Field(
        default=0, description="interest accrued since the last posting as of ``taken_at``, not yet in the balance"
    )
    receivables: list[ReceivableEntry] = Field(description="the changes to what is owed made by this batch")
    story: list[ActionTaken] = Field(description="the lines of the invoice's story told since the previous batch")


def payload_of(event: DomainEvent) -> EventPayload:
    """The event's data validated as its kind's payload (``pydantic.ValidationError`` if malformed)."""
    return PAYLOADS[event.kind].model_validate(event.data)


class RecordedEvent(DomainEvent):
    """An event as read back from the store: with its global position and a typed payload."""

    position: int = Field(ge=1, description="global order of appends across all invoices")

    def payload(self) -> EventPayload:
        """The typed payload of this event."""
        return payload_of(self)
