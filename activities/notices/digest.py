"""The customer digest: one message listing several invoices' stage notices, and the statement of account with it.

The message takes its subject and tone from the strongest stage in it (``templates/digest.j2``) and lists each
invoice with its stage and amounts (``digest_common.j2``, ``digest_layout.*.j2``). The statement (a PDF) lists
every open invoice of the customer: those of the digest as their workflows told, the others as the read models
have them (``projected_invoices``), with fees, payments and credits, and the balance per currency.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from activities.notices.content import Attachment, Payee, RenderedNotice
from activities.notices.i18n import locale_for
from activities.notices.pdf import LINE, heading, how_to_pay, new_document, paragraph, table
from activities.notices.templating import LocalFormat, environment, notice_context, render_block, typeset
from workflows.digests import DigestRequest
from workflows.models import NoticeKind, NoticeRequest


@dataclass(frozen=True)
class StatementLine:
    """One open invoice on the statement of account."""

    invoice_id: str
    currency: str
    due_date: date
    amount_minor: int
    fees_minor: int
    paid_minor: int
    credited_minor: int  # dispute credits, discounts and write-offs
    balance_minor: int
    stage: NoticeKind | None = None  # the stage notice this message brings, for an invoice of the digest


def line_of(notice: NoticeRequest) -> StatementLine:
    """The statement line of an invoice of the digest, as its workflow told it."""
    return StatementLine(
        invoice_id=notice.invoice_id,
        currency=notice.currency,
        due_date=notice.due_date,
        amount_minor=notice.invoice_amount_minor,
        fees_minor=sum(fee.amount_minor for fee in notice.fees),
        paid_minor=notice.paid_minor,
        credited_minor=notice.deducted_minor,
        balance_minor=notice.balance_minor,
        stage=notice.kind,
    )


async def open_invoices(pool: asyncpg.Pool, customer_id: str, exclude: Iterable[str]) -> list[StatementLine]:
    """The customer's other open invoices, as the read models have them, oldest due first."""
    rows = await pool.fetch(
        "SELECT invoice_id, currency, due_date, amount_minor, fees_minor, paid_minor,"
        " credited_minor + discount_minor + written_off_minor AS credited_minor, balance_minor"
        " FROM projected_invoices WHERE customer_id = $1 AND closed_at IS NULL AND NOT invoice_id = ANY($2::text[])"
        " ORDER BY due_date, invoice_id",
        customer_id,
        list(exclude),
    )
    return [StatementLine(**dict(row)) for row in rows]


def statement_lines(digest: DigestRequest, others: list[StatementLine]) -> list[StatementLine]:
    """Every open invoice: the digest's, then the others, oldest due first."""
    return sorted([*(line_of(n) for n in digest.notices), *others], key=lambda line: (line.due_date, line.invoice_id))


def digest_context(digest: DigestRequest, others: list[StatementLine], payee: Payee) -> dict[str, Any]:
    """What the digest's templates see: the lead notice's context (greeting, payee, how to pay), ``items`` (the
    digest's invoices), ``lines`` (the statement), ``totals`` (balance per currency), ``money_in`` and ``strongest``."""
    lead = digest.lead
    context = notice_context(lead, payee)
    locale = locale_for(lead.language, lead.country)
    zone = ZoneInfo(lead.time_zone)

    def money_in(minor: int, currency: str) -> str:
        return LocalFormat(locale, zone, currency).money(minor)

    lines = statement_lines(digest, others)
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.currency] = totals.get(line.currency, 0) + line.balance_minor
    ultimatums = [n.suspension_at for n in digest.notices if n.kind == NoticeKind.ULTIMATUM and n.suspension_at]
    context.update(
        digest=digest,
        strongest=digest.strongest.value,
        suspension_at=min(ultimatums) if ultimatums else None,
        remote_disconnect=any(n.remote_disconnect for n in digest.notices if n.kind == digest.strongest),
        items=[line_of(n) for n in digest.notices],
        lines=lines,
        totals=sorted(totals.items()),
        money_in=money_in,
        statement_date=date_of(digest),
    )
    context["labels"] = environment(lead.language).get_template("digest_common.j2").make_module(context)
    return context


def date_of(digest: DigestRequest) -> date:
    """The statement's date: the day the customer sent the digest, on the client's calendar (the same bytes on a retry)."""
    return digest.at.astimezone(ZoneInfo(digest.lead.time_zone)).date()


def render_digest(digest: DigestRequest, others: list[StatementLine], payee: Payee) -> RenderedNotice:
    """The digest in the recipient's language, with the statement of account attached."""
    context = digest_context(digest, others, payee)
    message = digest_message(context)
    name = f"statement-{digest.customer_id}-{context['statement_date'].isoformat()}.pdf"
    return replace(message, attachments=(Attachment(name, "application/pdf", statement_pdf(context)),))


def digest_message(context: dict[str, Any]) -> RenderedNotice:
    """The digest's subject, text and HTML (``digest_context``), without its attachment."""
    language = context["lang"]
    env = environment(language)
    wording = env.get_template("digest.j2")
    subject = " ".join(
        typeset(line.strip(), language) for line in render_block(wording, "subject", context).splitlines() if line.strip()
    )
    paragraphs = [
        [line.strip() for line in block.strip().splitlines()]
        for block in render_block(wording, "message", context).split("\n\n")
        if block.strip()
    ]
    text = typeset(env.get_template("digest_layout.txt.j2").render(context, subject=subject, paragraphs=paragraphs), language)
    html = typeset(env.get_template("digest_layout.html.j2").render(context, subject=subject, paragraphs=paragraphs), language)
    return RenderedNotice(subject=subject, text=text, html=html)


def statement_pdf(context: dict[str, Any]) -> bytes:
    """The statement of account: every open invoice with its fees, payments and credits, the balance per currency."""
    digest: DigestRequest = context["digest"]
    labels, common, payee, lead = context["labels"], context["common"], context["payee"], digest.lead
    money_in = context["money_in"]
    pdf = new_document(
        title=labels.statement_title,
        author=payee.name,
        language=lead.language,
        created=datetime.combine(context["statement_date"], time(0), tzinfo=UTC),
    )
    heading(pdf, payee.name, size=16)
    heading(pdf, labels.statement_title, size=14)
    table(
        pdf,
        [
            (common.billed_to, f"{lead.to_name}\n{lead.to_email}"),
            (labels.customer_number, digest.customer_id),
            (labels.statement_date_label, context["date"](context["statement_date"])),
        ],
    )
    pdf.ln(LINE)
    pdf.set_font_size(8)
    table(
        pdf,
        [
            (
                line.invoice_id,
                context["date"](line.due_date),
                money_in(line.amount_minor, line.currency),
                money_in(line.fees_minor, line.currency),
                money_in(line.paid_minor, line.currency),
                money_in(line.credited_minor, line.currency),
                money_in(line.balance_minor, line.currency),
            )
            for line in context["lines"]
        ],
        header=labels.statement_header,
        col_widths=(4, 4, 3, 3, 3, 3, 3),
        align=("LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT"),
    )
    pdf.set_font_size(10)
    pdf.ln(LINE / 2)
    table(pdf, labels.total_rows, col_widths=(7, 3), align=("LEFT", "RIGHT"))
    how_to_pay(pdf, common, payee)
    paragraph(pdf, typeset(labels.quote_references, lead.language))
    return bytes(pdf.output())


def digest_payload(digest: DigestRequest, rendered: RenderedNotice, message_id: str) -> dict[str, Any]:
    """The webhook body of a digest: the message and each invoice's stage and amounts."""
    return {
        "message_id": message_id,
        "step": digest.idempotency_key,
        "kind": "digest",
        "stage": digest.strongest.value,
        "customer_id": digest.customer_id,
        "language": digest.lead.language,
        "subject": rendered.subject,
        "text": rendered.text,
        "invoices": [
            {
                "invoice_id": n.invoice_id,
                "kind": n.kind.value,
                "balance_minor": n.balance_minor,
                "invoice_amount_minor": n.invoice_amount_minor,
                "fees_minor": sum(fee.amount_minor for fee in n.fees),
                "currency": n.currency,
                "due_date": n.due_date.isoformat(),
                "suspension_at": n.suspension_at.isoformat() if n.suspension_at else None,
            }
            for n in digest.notices
        ],
    }
