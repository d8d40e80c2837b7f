"""Importing a bank statement: each booked credit is matched to an invoice and recorded once, the rest kept.

Reading the document is ``api.camt``'s concern, naming the invoice ``api.payment_matching``'s. Where a
matched payment goes: through its customer's payment path (``api.cash``), whose cash application splits
it: a line matched to one invoice (by ``RF`` reference or invoice number) pays that invoice first, then the
customer's other open invoices oldest due first, what is left the customer's credit; a line whose
remittance names several invoices of one customer pays those first. A line matched to an invoice whose
customer the read model does not know yet, or without a value date, goes to the invoice's own payment
intake (:func:`_apply`); a payment either refuses (other currency, a value date it may not carry) is kept
unapplied with the reason, as is every line matched to no invoice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from enum import StrEnum

from pydantic import BaseModel, Field, ValidationError

from api import camt, intake
from api.camt import Direction, StatementLine
from api.cash import CustomerPaymentBody, pay_customer, pay_for_invoice
from api.intake import PaymentContext, PaymentReceipt, PaymentStatus, Source
from api.payment_matching import InvoiceReferences, Match
from api.problems import Kind, Problem
from workflows.cash import PaymentApplication
from workflows.models import Payment

# what the customer's payment path refuses as this payment's fault: the line is kept unapplied with the reason
_REFUSALS = (Kind.VALIDATION_FAILED, Kind.WRONG_CURRENCY, Kind.REQUEST_REFUSED)


class LineStatus(StrEnum):
    MATCHED = "matched"  # paid to the customer of the invoice(s) it names (or recorded on the invoice)
    UNMATCHED = "unmatched"  # kept unapplied, with the reason
    DUPLICATE = "duplicate"  # imported before (or twice in this document): nothing recorded
    IGNORED = "ignored"  # a debit, or an entry not booked yet


class LineResult(BaseModel):
    """What became of one line of the statement."""

    line: int = Field(description="position of the transaction in the document, from 1")
    statement_id: str
    entry_ref: str | None
    payment_id: str = Field(description="derived from the line's own ids; the same line always gets the same id")
    status: LineStatus
    amount_minor: int
    currency: str
    value_date: date | None
    invoice_id: str | None = Field(
        default=None, description="matched to one invoice: that invoice (paid first); None for several invoice numbers"
    )
    matched_by: str | None = Field(default=None, description="'creditor reference', 'invoice number' or 'invoice numbers'")
    customer_id: str | None = Field(
        default=None, description="paid to this customer (its cash application split it); None if recorded on the invoice"
    )
    allocations: dict[str, int] = Field(default_factory=dict, description="customer payment: invoice id -> amount")
    credit_minor: int | None = Field(default=None, description="customer payment: what was left as the customer's credit")
    balance_minor: int | None = Field(
        default=None,
        description="matched to one invoice: its balance after the payment (None if the split gave it nothing,"
        " e.g. it was closed or paid already)",
    )
    reason: str | None = Field(default=None, description="unmatched, duplicate or ignored: why")


class ImportSummary(BaseModel):
    """A statement's import: counts per status and every line."""

    document: str = Field(description="camt.053 or camt.054")
    message_id: str
    matched: int
    unmatched: int
    duplicate: int
    ignored: int
    lines: list[LineResult]


async def import_statement(
    ctx: PaymentContext, document: bytes, progress: Callable[[int, int], None] | None = None
) -> ImportSummary:
    """Import a camt.053/054 document. Raises :class:`camt.StatementError` (nothing imported) if unreadable.

    ``progress(done, total)`` is called after each line (the CLI's progress bar)."""
    statement = camt.parse(document)
    references = InvoiceReferences(ctx.pool)
    results = []
    seen: set[str] = set()
    for line in statement.lines:
        results.append(await _import_line(ctx, references, line, seen))
        seen.add(line.payment_id)
        if progress:
            progress(len(results), len(statement.lines))
    counts = {status: sum(1 for r in results if r.status == status) for status in LineStatus}
    return ImportSummary(
        document=statement.kind,
        message_id=statement.message_id,
        matched=counts[LineStatus.MATCHED],
        unmatched=counts[LineStatus.UNMATCHED],
        duplicate=counts[LineStatus.DUPLICATE],
        ignored=counts[LineStatus.IGNORED],
        lines=results,
    )


async def _import_line(
    ctx: PaymentContext, references: InvoiceReferences, line: StatementLine, seen: set[str]
) -> LineResult:
    def result(
        status: LineStatus,
        *,
        reason: str | None = None,
        invoice_id: str | None = None,
        matched_by: str | None = None,
        balance_minor: int | None = None,
    ) -> LineResult:
        return LineResult(
            line=line.line,
            statement_id=line.statement_id,
            entry_ref=line.entry_ref,
            payment_id=line.payment_id,
            status=status,
            amount_minor=line.amount_minor,
            currency=line.currency,
            value_date=line.value_date,
            invoice_id=invoice_id,
            matched_by=matched_by,
            balance_minor=balance_minor,
            reason=reason,
        )

    if line.direction != Direction.CREDIT:
        return result(LineStatus.IGNORED, reason="a debit: only credits pay invoices")
    if not line.booked:
        return result(LineStatus.IGNORED, reason="not booked yet (pending or information only): import it once booked")
    try:
        payment = Payment(
            payment_id=line.payment_id, amount_minor=line.amount_minor, currency=line.currency, received_at=line.received_at
        )
    except ValidationError as err:  # e.g. a value date outside the years a payment may carry
        reason = "; ".join(problem["msg"].removeprefix("Value error, ") for problem in err.errors(include_url=False))
        return result(LineStatus.IGNORED, reason=f"not recorded: {reason}")
    if line.payment_id in seen or await _imported_before(ctx, line.payment_id):
        return result(LineStatus.DUPLICATE, reason="this transaction was imported before: nothing recorded again")
    match = await references.match(line)
    if match.customer_id is not None and payment.received_at is not None:
        try:
            application = await _pay_customer(ctx, payment, match, line)
        except Problem as problem:
            if problem.kind not in _REFUSALS:  # a payment id used for another payment, or no answer: raise
                raise
            where = f"invoice {match.invoice_id} (by {match.matched_by})" if match.invoice_id else f"customer {match.customer_id}"
            reason = f"{where} refused it: {problem.detail}"
            reference = match.invoice_id or match.payer_reference
            receipt = await intake.keep_unapplied(ctx.pool, reference, payment, Source.STATEMENT, reason)
            await _remember(ctx, line, None, LineStatus.UNMATCHED)
            return result(LineStatus.UNMATCHED, reason=receipt.reason)
        delivered = {a.invoice_id: a for a in application.allocations if a.delivered}
        paid = delivered.get(match.invoice_id) if match.invoice_id else None
        await _remember(ctx, line, paid.invoice_id if paid else None, LineStatus.MATCHED)
        return result(
            LineStatus.MATCHED,
            invoice_id=match.invoice_id,
            matched_by=match.matched_by,
            balance_minor=paid.balance_minor if paid else None,
        ).model_copy(
            update={
                "customer_id": match.customer_id,
                "allocations": {invoice_id: a.amount_minor for invoice_id, a in delivered.items()},
                "credit_minor": application.credit_minor,
            }
        )
    receipt = await _apply(ctx, payment, match)
    status = LineStatus.MATCHED if receipt.status == PaymentStatus.APPLIED else LineStatus.UNMATCHED
    await _remember(ctx, line, receipt.invoice_id if status == LineStatus.MATCHED else None, status)
    if status == LineStatus.MATCHED:
        return result(
            status, invoice_id=receipt.invoice_id, matched_by=match.matched_by, balance_minor=receipt.balance_minor
        )
    return result(status, reason=receipt.reason)


async def _apply(ctx: PaymentContext, payment: Payment, match: Match) -> PaymentReceipt:
    """Record the line's payment where it belongs, or keep it unapplied with the reason."""
    if match.invoice_id is None:
        return await intake.keep_unapplied(
            ctx.pool, match.payer_reference, payment, Source.STATEMENT, match.reason or ""
        )
    try:
        return await intake.intake(ctx, match.invoice_id, payment, Source.STATEMENT)
    except Problem as problem:
        if problem.kind != Kind.VALIDATION_FAILED:  # e.g. a payment id already used for another amount
            raise
        reason = f"invoice {match.invoice_id} (by {match.matched_by}) refused it: {problem.detail}"
        return await intake.keep_unapplied(ctx.pool, match.invoice_id, payment, Source.STATEMENT, reason)


async def _remember(ctx: PaymentContext, line: StatementLine, invoice_id: str | None, status: LineStatus) -> None:
    await ctx.pool.execute(
        "INSERT INTO statement_lines (payment_id, statement_id, invoice_id, status) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (payment_id) DO NOTHING",
        line.payment_id,
        line.statement_id,
        invoice_id,
        status.value,
    )


async def _pay_customer(ctx: PaymentContext, payment: Payment, match: Match, line: StatementLine) -> PaymentApplication:
    """The customer's cash application splits the line: the invoice it was matched to first (named ahead of the
    payer's text, as a match by the structured reference is not in it), or the several invoices it names."""
    assert payment.received_at is not None and match.customer_id is not None
    if match.invoice is not None:
        return await pay_for_invoice(ctx, match.invoice, payment, line.unstructured)
    body = CustomerPaymentBody(
        payment_id=payment.payment_id,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        received_at=payment.received_at,
        remittance=intake.storable_remittance(line.unstructured),
    )
    return await pay_customer(ctx, match.customer_id, body)


async def _imported_before(ctx: PaymentContext, payment_id: str) -> bool:
    return await ctx.pool.fetchval("SELECT true FROM statement_lines WHERE payment_id = $1", payment_id) is not None
