"""The collection agency's hand-over package (technique 16), in English for the agency.

Built from the ``AgencyHandover`` and the invoice's events (the caller reads them from the event
log): an e-mail summary with ``handover-<invoice id>.json`` for the agency's systems and
``handover-<invoice id>.pdf`` for people. The JSON carries amounts in minor units and moments in
ISO 8601; the e-mail and PDF print amounts locale-free (``12725.00 RON``) and moments in UTC.
The client's stated dispute reasons are included (the agency must know a debt was contested);
internal notes (dispute resolutions, legal decisions) are not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from activities.notices.content import Attachment, Payee, RenderedNotice
from activities.notices.pdf import heading, new_document, paragraph, table
from activities.notices.templating import environment
from workflows.models import AgencyHandover, DomainEvent, EventKind, Instalment, format_money

PACKAGE_FORMAT = "dunning.agency-handover/1"


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Creditor(_Part):
    name: str
    iban: str | None
    payment_link: str | None
    payment_instructions: str | None


class Debtor(_Part):
    customer_id: str
    name: str
    email: str
    country: str | None
    language: str
    time_zone: str


class InvoiceTerms(_Part):
    invoice_id: str
    currency: str
    amount_minor: int
    issue_date: date
    due_date: date
    service: str | None
    late_fee_percent_per_month: Decimal
    fixed_late_fee_minor: int
    remote_disconnect_authorized: bool


class Amounts(_Part):
    fees_minor: int
    interest_minor: int = 0  # statutory interest posted (interest_accrued events)
    paid_minor: int
    deducted_minor: int  # dispute credits, discounts applied and write-offs
    balance_minor: int
    days_overdue: int


class NoticeSent(_Part):
    sent_at: datetime
    kind: str
    to: str | None = None
    channels: list[str] = Field(default_factory=lambda: ["email"])


class PaymentReceived(_Part):
    payment_id: str
    amount_minor: int
    received_at: datetime
    recorded_at: datetime


class LateFee(_Part):
    number: int
    amount_minor: int
    charged_at: datetime


class Dispute(_Part):
    opened_at: datetime
    reason: str
    resolved_at: datetime | None = None
    outcome: str | None = None
    credit_minor: int = 0


class PaymentPlan(_Part):
    agreed_at: datetime
    instalments: list[Instalment]
    missed_instalment: int | None = None
    missed_at: datetime | None = None


class HandoverPackage(_Part):
    """The JSON attachment: everything the agency needs to pursue the debt."""

    format: str = PACKAGE_FORMAT
    as_of: datetime = Field(description="the moment of the latest event: the history is complete up to here")
    creditor: Creditor
    debtor: Debtor
    invoice: InvoiceTerms
    amounts: Amounts
    notices: list[NoticeSent]
    payments: list[PaymentReceived]
    fees: list[LateFee]
    disputes: list[Dispute]
    payment_plans: list[PaymentPlan]


def agency_package(handover: AgencyHandover, events: list[DomainEvent], payee: Payee) -> RenderedNotice:
    """The hand-over e-mail to the agency with the JSON and PDF package attached."""
    package = handover_package(handover, events, payee)
    invoice_id = package.invoice.invoice_id
    money = _money(package.invoice.currency)
    context = {"p": package, "money": money, "moment": _moment}
    env = environment("en")
    subject = f"Collection hand-over: invoice {invoice_id}, {money(package.amounts.balance_minor)} due"
    return RenderedNotice(
        subject=subject,
        text=env.get_template("agency_package.txt.j2").render(context),
        html=env.get_template("agency_package.html.j2").render(context, subject=subject),
        attachments=(
            Attachment(f"handover-{invoice_id}.json", "application/json", package.model_dump_json(indent=2).encode()),
            Attachment(f"handover-{invoice_id}.pdf", "application/pdf", handover_pdf(package)),
        ),
    )


def handover_package(handover: AgencyHandover, events: Sequence[DomainEvent], payee: Payee) -> HandoverPackage:
    """The package content: the hand-over's amounts and the history told by the events."""
    invoice = handover.invoice
    strangers = sorted({e.invoice_id for e in events} - {invoice.invoice_id})
    if strangers:
        raise ValueError(f"events of other invoices ({', '.join(strangers)}) in the package of {invoice.invoice_id}")
    if not events:
        raise ValueError(f"no events for invoice {invoice.invoice_id}: the package needs its history")
    ordered = sorted(events, key=lambda e: e.sequence)
    return HandoverPackage(
        as_of=max(e.occurred_at for e in ordered),
        creditor=Creditor(**payee.model_dump()),
        debtor=Debtor(
            customer_id=invoice.customer_id,
            name=invoice.contact.name,
            email=str(invoice.contact.email),
            country=invoice.country,
            language=invoice.language,
            time_zone=invoice.time_zone,
        ),
        invoice=InvoiceTerms(
            invoice_id=invoice.invoice_id,
            currency=invoice.currency,
            amount_minor=invoice.amount_minor,
            issue_date=invoice.issue_date,
            due_date=invoice.due_date,
            service=invoice.service,
            late_fee_percent_per_month=invoice.terms.late_fee_percent_per_month,
            fixed_late_fee_minor=invoice.terms.fixed_late_fee_minor,
            remote_disconnect_authorized=invoice.terms.remote_disconnect_authorized,
        ),
        amounts=Amounts(
            fees_minor=sum(f.amount_minor for f in handover.fees),
            interest_minor=handover.interest_minor,
            paid_minor=handover.paid_minor,
            deducted_minor=handover.deducted_minor,
            balance_minor=handover.balance_minor,
            days_overdue=handover.days_overdue,
        ),
        notices=[NoticeSent(sent_at=e.occurred_at, **e.data) for e in ordered if e.kind == EventKind.NOTICE_SENT],
        payments=[
            PaymentReceived(recorded_at=e.occurred_at, **e.data)
            for e in ordered
            if e.kind == EventKind.PAYMENT_RECORDED
        ],
        fees=[LateFee(number=f.number, amount_minor=f.amount_minor, charged_at=f.charged_at) for f in handover.fees],
        disputes=_disputes(ordered),
        payment_plans=_payment_plans(ordered),
    )


def _disputes(events: Sequence[DomainEvent]) -> list[Dispute]:
    """Pair each opening with the resolution that follows it (one dispute is open at a time)."""
    disputes: list[Dispute] = []
    for event in events:
        if event.kind == EventKind.DISPUTE_OPENED:
            disputes.append(Dispute(opened_at=event.occurred_at, reason=event.data["reason"]))
        elif event.kind == EventKind.DISPUTE_RESOLVED and disputes and disputes[-1].resolved_at is None:
            disputes[-1] = disputes[-1].model_copy(
                update={
                    "resolved_at": event.occurred_at,
                    "outcome": event.data["outcome"],
                    "credit_minor": event.data.get("credit_minor", 0),
                }
            )
    return disputes


def _payment_plans(events: Sequence[DomainEvent]) -> list[PaymentPlan]:
    plans: list[PaymentPlan] = []
    for event in events:
        if event.kind == EventKind.PAYMENT_PLAN_AGREED:
            plans.append(PaymentPlan(agreed_at=event.occurred_at, **event.data["plan"]))
        elif event.kind == EventKind.INSTALMENT_MISSED and plans and plans[-1].missed_at is None:
            plans[-1] = plans[-1].model_copy(
                update={"missed_instalment": event.data["instalment"], "missed_at": event.occurred_at}
            )
    return plans


def handover_pdf(package: HandoverPackage) -> bytes:
    """The package for people: the same content as the JSON, laid out."""
    invoice, amounts, money = package.invoice, package.amounts, _money(package.invoice.currency)
    creditor, debtor = package.creditor, package.debtor
    title = f"Collection hand-over: invoice {invoice.invoice_id}"
    pdf = new_document(title=title, author=creditor.name, language="en", created=package.as_of)
    heading(pdf, title, size=16)
    facts = {
        "Creditor": [
            ("Name", creditor.name),
            ("IBAN", creditor.iban or "-"),
            ("Payment link", creditor.payment_link or "-"),
            ("Payment instructions", creditor.payment_instructions or "-"),
        ],
        "Debtor": [
            ("Customer", debtor.customer_id),
            ("Contact", f"{debtor.name}\n{debtor.email}"),
            ("Country", debtor.country or "-"),
            ("Language, time zone", f"{debtor.language}, {debtor.time_zone}"),
        ],
        "Invoice and contract terms": [
            ("Invoice", invoice.invoice_id),
            ("Service", invoice.service or "-"),
            ("Issued, due", f"{invoice.issue_date.isoformat()}, {invoice.due_date.isoformat()}"),
            ("Days overdue", str(amounts.days_overdue)),
            ("Late fee per month of delay", f"{invoice.late_fee_percent_per_month} %"),
            ("One-time late fee", money(invoice.fixed_late_fee_minor)),
            ("Remote disconnection agreed", "yes" if invoice.remote_disconnect_authorized else "no"),
        ],
    }
    for section, rows in facts.items():
        heading(pdf, section)
        table(pdf, rows)
    heading(pdf, "Amounts")
    table(
        pdf,
        [
            ("Invoice amount", money(invoice.amount_minor)),
            ("Late fees", money(amounts.fees_minor)),
            *([("Statutory interest", money(amounts.interest_minor))] if amounts.interest_minor else []),
            ("Paid", money(amounts.paid_minor)),
            ("Credits and discounts", money(amounts.deducted_minor)),
        ],
        header=("", "Amount"),
        total=("Balance due", money(amounts.balance_minor)),
        col_widths=(7, 3),
        align=("LEFT", "RIGHT"),
    )
    history: dict[str, tuple[tuple[str, ...], list[tuple[str, ...]]]] = {
        "Notices sent to the debtor": (
            ("Sent (UTC)", "Notice", "Channels"),
            [(_moment(n.sent_at), n.kind.replace("_", " "), ", ".join(n.channels)) for n in package.notices],
        ),
        "Payments": (
            ("Received (UTC)", "Payment", "Amount"),
            [(_moment(p.received_at), p.payment_id, money(p.amount_minor)) for p in package.payments],
        ),
        "Late fees": (
            ("Charged (UTC)", "Fee", "Amount"),
            [(_moment(f.charged_at), str(f.number), money(f.amount_minor)) for f in package.fees],
        ),
        "Disputes": (
            ("Opened (UTC)", "Client's reason", "Outcome"),
            [(_moment(d.opened_at), d.reason, _dispute_outcome(d, money)) for d in package.disputes],
        ),
        "Payment plans": (
            ("Agreed (UTC)", "Instalments", "Missed"),
            [(_moment(p.agreed_at), _instalments(p, money), _missed(p)) for p in package.payment_plans],
        ),
    }
    for section, (header, entries) in history.items():
        heading(pdf, section)
        if entries:
            table(pdf, entries, header=header, col_widths=(3, 4, 3), align=("LEFT", "LEFT", "RIGHT"))
        else:
            paragraph(pdf, "None.")
    return bytes(pdf.output())


def _dispute_outcome(dispute: Dispute, money: Callable[[int], str]) -> str:
    if dispute.resolved_at is None:
        return "open"
    credit = f", credit {money(dispute.credit_minor)}" if dispute.credit_minor else ""
    return f"{dispute.outcome}{credit}, {_moment(dispute.resolved_at)}"


def _instalments(plan: PaymentPlan, money: Callable[[int], str]) -> str:
    return "\n".join(f"{i.due_date.isoformat()}: {money(i.amount_minor)}" for i in plan.instalments)


def _missed(plan: PaymentPlan) -> str:
    return f"instalment {plan.missed_instalment}, {_moment(plan.missed_at)}" if plan.missed_at else "-"


def _money(currency: str) -> Callable[[int], str]:
    return lambda minor: format_money(minor, currency)


def _moment(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
