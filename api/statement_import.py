"""Importing a bank statement: each booked credit is matched to an invoice and recorded once, the rest kept.

Reading the document is ``api.camt``'s concern, naming the invoice ``api.payment_matching``'s;
:func:`_apply` is the one place that decides where a matched payment goes (today the invoice's own
payment intake), so that target can change without touching parsing or matching.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from enum import StrEnum

from pydantic import BaseModel, Field, ValidationError

from api import camt, intake
from api.camt import Direction, StatementLine
from api.intake import PaymentContext, PaymentReceipt, PaymentStatus, Source
from api.payment_matching import InvoiceReferences, Match
from api.problems import Kind, Problem
from workflows.models import Payment


class LineStatus(StrEnum):
    MATCHED = "matched"  # recorded on the invoice it names
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
    invoice_id: str | None = Field(default=None, description="matched: the invoice it was recorded on")
    matched_by: str | None = Field(default=None, description="'creditor reference' or 'invoice number'")
    balance_minor: int | None = Field(default=None, description="matched: the invoice's balance after it")
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
    receipt = await _apply(ctx, payment, match)
    status = LineStatus.MATCHED if receipt.status == PaymentStatus.APPLIED else LineStatus.UNMATCHED
    await ctx.pool.execute(
        "INSERT INTO statement_lines (payment_id, statement_id, invoice_id, status) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (payment_id) DO NOTHING",
        line.payment_id,
        line.statement_id,
        receipt.invoice_id if status == LineStatus.MATCHED else None,
        status.value,
    )
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


async def _imported_before(ctx: PaymentContext, payment_id: str) -> bool:
    return await ctx.pool.fetchval("SELECT true FROM statement_lines WHERE payment_id = $1", payment_id) is not None
