"""Importing invoices another system already chased (``dunning invoice import``, ``POST /invoices/import``).

A JSON Lines file, one invoice a line (the fields of ``POST /invoices``, its policy by ``policy_name``,
inline, or the policies file's default) with two optional keys:
``opening_fees`` (the late fees it charged, ``[{"amount_minor", "charged_on"}]``) and ``last_notice``
(``{"stage", "sent_at"}``, the last stage notice it sent). Each invoice starts at the stage its days overdue
reach, with one notice (``docs/invoice.md``, catch-up), or none if its last notice is the stage's. The
workflow id comes from the invoice id, so a re-run starts nothing twice; each refused line is reported
with its number and reason.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, Field, ValidationError
from temporalio.client import Client

from client import customers, invoices
from client.invoices import InvoiceError, Refusal
from client.policies import InvoiceRequest, PolicyBook, UnknownPolicy
from workflows import opening as openings
from workflows.bounds import DateWindow
from workflows.models import Invoice, Opening

MAX_LINE_BYTES = 64 * 1024
STARTS_AT_ONCE = 16  # lines started in parallel: a large file's import is bound by round trips to Temporal
OPENING_KEYS = {"opening_fees": "fees", "last_notice": "last_notice"}  # line key -> Opening field


class Outcome(StrEnum):
    STARTED = "started"
    ALREADY_THERE = "already_there"  # its workflow exists (a re-run, or the same id twice): nothing started
    REFUSED = "refused"


class LineOutcome(BaseModel):
    """What became of one line of the file."""

    line: int = Field(description="its line number in the file, from 1")
    invoice_id: str | None = Field(default=None, description="null when the line has none that could be read")
    outcome: Outcome
    reason: str | None = Field(default=None, description="refused or already there: why")


class InvoiceImportSummary(BaseModel):
    """An import's counts and every non-blank line's outcome."""

    started: int
    already_there: int
    refused: int
    lines: list[LineOutcome]


class LineRefused(ValueError):
    """A line that cannot be imported; ``str()`` is the reason."""


def read_line(text: str, window: DateWindow, book: PolicyBook) -> tuple[InvoiceRequest, Invoice, Opening]:
    """The invoice as given, with its policy from ``book``, and the opening of one line, checked as
    ``POST /invoices`` checks an invoice (``LineRefused``)."""
    if len(text.encode()) > MAX_LINE_BYTES:
        raise LineRefused(f"longer than {MAX_LINE_BYTES} bytes")
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as err:
        raise LineRefused(f"not JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(fields, dict):
        raise LineRefused("not a JSON object")
    brought = {field: fields.pop(key) for key, field in OPENING_KEYS.items() if key in fields}
    try:
        request, opening = InvoiceRequest.model_validate(fields), Opening.model_validate(brought)
        invoice = book.invoice(request)
    except UnknownPolicy as err:
        raise LineRefused(f"policy_name: {err}") from None
    except ValidationError as err:
        raise LineRefused(_validation_text(err)) from None
    problems = [f"{'.'.join(map(str, path))}: {message}" for path, message in window.invoice(invoice)]
    problems += openings.problems(invoice, opening)
    if opening.last_notice and opening.last_notice.sent_at > window.now + window.skew:
        problems.append("last_notice: sent_at is in the future")
    if problems:
        raise LineRefused("; ".join(problems))
    return request, invoice, opening


def _validation_text(err: ValidationError) -> str:
    """Every problem, located by the line's own keys (``opening_fees``, not the model's ``fees``)."""
    renamed = {field: key for key, field in OPENING_KEYS.items()} if err.title == Opening.__name__ else {}
    parts = []
    for problem in err.errors():
        location = [str(part) for part in problem["loc"]]
        if location:
            location[0] = renamed.get(location[0], location[0])
        parts.append(f"{'.'.join(location) or 'line'}: {problem['msg']}")
    return "; ".join(parts)


async def import_invoices(
    client: Client,
    task_queue: str,
    lines: Sequence[str],
    window: DateWindow,
    book: PolicyBook,
    *,
    gathering: timedelta,
    check: Callable[[InvoiceRequest, Invoice], None] = lambda *_: None,
    progress: Callable[[int, int], None] | None = None,
) -> InvoiceImportSummary:
    """Start the invoice of each line not started yet, and register it with its customer.

    ``check`` refuses a line by raising ``ValueError`` (the API's role and equipment checks); ``progress(done,
    total)`` is called as lines are done (blank lines do not count). Raises ``InvoiceError`` (unavailable) if Temporal cannot be reached: a re-run
    then takes up where it stopped."""
    numbered = [(number, text) for number, text in enumerate(lines, 1) if text.strip()]
    outcomes: list[LineOutcome] = []
    for first in range(0, len(numbered), STARTS_AT_ONCE):
        batch = numbered[first : first + STARTS_AT_ONCE]
        results = await asyncio.gather(
            *(_import_line(client, task_queue, n, text, window, book, gathering, check) for n, text in batch),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result  # once the batch's other starts are done, so none runs on unseen
            outcomes.append(result)
        if progress:
            progress(len(outcomes), len(numbered))
    counts = {outcome: sum(1 for o in outcomes if o.outcome == outcome) for outcome in Outcome}
    return InvoiceImportSummary(
        started=counts[Outcome.STARTED],
        already_there=counts[Outcome.ALREADY_THERE],
        refused=counts[Outcome.REFUSED],
        lines=outcomes,
    )


async def _import_line(
    client: Client,
    task_queue: str,
    number: int,
    text: str,
    window: DateWindow,
    book: PolicyBook,
    gathering: timedelta,
    check: Callable[[InvoiceRequest, Invoice], None],
) -> LineOutcome:
    try:
        request, invoice, opening = read_line(text, window, book)
        check(request, invoice)
    except ValueError as err:
        return LineOutcome(line=number, invoice_id=_invoice_id(text), outcome=Outcome.REFUSED, reason=str(err))
    outcome, reason = Outcome.STARTED, None
    try:
        await invoices.start_invoice(client, task_queue, invoice, opening=opening, policy_name=book.name_of(request))
    except InvoiceError as err:
        if err.refusal != Refusal.EXISTS:
            raise
        outcome, reason = Outcome.ALREADY_THERE, "already running (or closed): its workflow exists"
    await customers.register_invoice(client, task_queue, invoice, gathering)  # again on a re-run: harmless
    return LineOutcome(line=number, invoice_id=invoice.invoice_id, outcome=outcome, reason=reason)


def _invoice_id(text: str) -> str | None:
    """The line's invoice id, if it has a readable one, to name a refused line by."""
    try:
        found = json.loads(text).get("invoice_id")
    except (json.JSONDecodeError, AttributeError):
        return None
    return found[:64] if isinstance(found, str) else None
