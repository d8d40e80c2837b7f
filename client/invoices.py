"""Client-side invoice operations, shared by the CLI and the HTTP API.

Each operation is one short async function over a ``temporalio.client.Client`` that uses the
pydantic data converter (``client.temporal.connect`` gives one). Every Temporal failure a caller
can act on is translated into :class:`InvoiceError`, whose message is meant for a human.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, FailureError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from workflows import policy
from workflows import search_attributes as sa
from workflows.invoice import InvoiceWorkflow
from workflows.models import (
    DecideLegal,
    Invoice,
    InvoiceOutcome,
    InvoiceState,
    InvoiceStatus,
    MarkFactored,
    OpenDispute,
    Opening,
    Payment,
    PaymentPlan,
    ResolveDispute,
    format_money,
    invoice_workflow_id,
)
from workflows.state import InvoiceWorkflowInput

ANSWER_TIMEOUT = timedelta(seconds=20)
# An invoice's run may hold up to 150 signals of 256 KiB (a flood; docs/guarantees.md): a worker that fetches and
# replays that much on a busy machine needs more than Temporal's default 10 s; continued runs keep it.
INVOICE_TASK_TIMEOUT = timedelta(seconds=30)
"""How long a query or update waits for a worker to answer before giving up."""


class Refusal(StrEnum):
    """Why an invoice operation failed, for callers that answer differently per reason (the API)."""

    NOT_FOUND = "not_found"
    EXISTS = "exists"
    CLOSED = "closed"
    PAYMENT_CONFLICT = "payment_conflict"
    WRONG_CURRENCY = "wrong_currency"
    REJECTED = "rejected"  # any other refusal by the workflow's validators
    UNAVAILABLE = "unavailable"  # no answer now (no worker, Temporal down, between runs): try again


# the error types of the workflow's update validators
_VALIDATOR_REFUSALS = {
    "InvoiceClosed": Refusal.CLOSED,
    "PaymentConflict": Refusal.PAYMENT_CONFLICT,
    "WrongCurrency": Refusal.WRONG_CURRENCY,
}


class InvoiceError(Exception):
    """An invoice operation failed for a reason worth telling the user; ``str()`` is the message."""

    def __init__(self, message: str, refusal: Refusal) -> None:
        super().__init__(message)
        self.refusal = refusal


# --- starting ---------------------------------------------------------------------------------


def invoice_summary(invoice: Invoice) -> str:
    """One line for the Temporal UI, e.g. ``Invoice INV-1 · CUST-1 · 1000.00 EUR due 2026-12-07``."""
    amount = format_money(invoice.amount_minor, invoice.currency)
    return f"Invoice {invoice.invoice_id} · {invoice.customer_id} · {amount} due {invoice.due_date.isoformat()}"


def invoice_details(invoice: Invoice, policy_name: str | None = None) -> str:
    """Markdown for the Temporal UI: contact, contract terms and the policy the invoice follows (by its name, if
    it has one)."""
    terms, currency = invoice.terms, invoice.currency
    due_at = f"{invoice.due_date.isoformat()} {invoice.policy.due_time:%H:%M} {invoice.time_zone}"
    lines = [
        f"**Contact:** {invoice.contact.name} <{invoice.contact.email}>",
        f"**Issued:** {invoice.issue_date.isoformat()} · **Due:** {due_at} · **Language:** {invoice.language}",
    ]
    fee_parts = []
    if terms.late_fee_percent_per_month:
        fee_parts.append(f"{_percent(terms.late_fee_percent_per_month)} % per started month")
    if terms.fixed_late_fee_minor:
        fee_parts.append(f"{format_money(terms.fixed_late_fee_minor, currency)} fixed")
    lines.append(f"**Late fee:** {' + '.join(fee_parts) if fee_parts else 'none'}")
    if terms.remote_disconnect_authorized:
        equipment = ", ".join(terms.equipment_ids) or "no equipment listed"
        lines.append(f"**Remote disconnect:** authorised ({equipment})")
    else:
        lines.append("**Remote disconnect:** not authorised (suspension stops work and support only)")
    if offer := terms.early_payment_discount:
        lines.append(
            f"**Early-payment discount:** {_percent(offer.percent)} % if paid in full by {policy.discount_deadline(invoice)}"
        )
    stages = ", ".join(f"{s.action.value} {_offset(s.offset)}" for s in invoice.policy.stages)
    lines.append(f"**Policy:** {f'{policy_name}: ' if policy_name else ''}{stages}")
    return "\n\n".join(lines)


def _percent(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _offset(offset: timedelta) -> str:
    sign = "-" if offset < timedelta(0) else "+"
    offset = abs(offset)
    if offset % timedelta(days=1) == timedelta(0):
        return f"{sign}{offset.days}d"
    if offset % timedelta(hours=1) == timedelta(0):
        return f"{sign}{offset // timedelta(hours=1)}h"
    if offset % timedelta(minutes=1) == timedelta(0):
        return f"{sign}{offset // timedelta(minutes=1)}min"
    return f"{sign}{offset.total_seconds():g}s"


def initial_search_attributes(invoice: Invoice) -> TypedSearchAttributes:
    """Every search attribute an issued invoice has (its keyword lists are empty, so absent): the UI and the
    list filters see it at once, and the workflow upserts nothing until something changes."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.INVOICE_STATE, InvoiceState.ISSUED.value),
            SearchAttributePair(sa.CUSTOMER_ID, invoice.customer_id),
            SearchAttributePair(sa.AMOUNT_DUE, invoice.amount_minor),
            SearchAttributePair(sa.CURRENCY, invoice.currency),
            SearchAttributePair(sa.DUE_DATE, policy.due_moment(invoice)),
            SearchAttributePair(sa.DAYS_OVERDUE, policy.days_overdue(invoice, datetime.now(timezone.utc))),
            SearchAttributePair(sa.REJECTED_PAYMENTS, 0),
        ]
    )


async def start_invoice(
    client: Client,
    task_queue: str,
    invoice: Invoice,
    minimum_notice: timedelta | None = None,
    opening: Opening | None = None,
    policy_name: str | None = None,
) -> WorkflowHandle[InvoiceWorkflow, InvoiceOutcome]:
    """Start the invoice's workflow; an invoice id maps to one workflow, ever (within the namespace's retention).

    ``minimum_notice`` replaces the policy's notice before a cut: only for test stacks that run in real time.
    ``opening``: an imported invoice's fees and last notice from the system that chased it before.
    ``policy_name`` (the policies file's name of the invoice's policy) is shown in the Temporal UI.
    """
    try:
        return await client.start_workflow(
            InvoiceWorkflow.run,
            InvoiceWorkflowInput(invoice=invoice, minimum_notice=minimum_notice, opening=opening),
            id=invoice.workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            task_timeout=INVOICE_TASK_TIMEOUT,
            search_attributes=initial_search_attributes(invoice),
            static_summary=invoice_summary(invoice),
            static_details=invoice_details(invoice, policy_name),
        )
    except WorkflowAlreadyStartedError:
        raise InvoiceError(
            f"invoice {invoice.invoice_id} already exists (workflow {invoice.workflow_id}); invoice ids cannot be reused",
            Refusal.EXISTS,
        ) from None
    except RPCError as err:
        raise InvoiceError(f"could not start invoice {invoice.invoice_id}: {_rpc_text(err)}", Refusal.UNAVAILABLE) from None


# --- requests to a running invoice ------------------------------------------------------------


def invoice_handle(client: Client, invoice_id: str) -> WorkflowHandle[InvoiceWorkflow, InvoiceOutcome]:
    """The (latest run of the) invoice's workflow; no call is made."""
    return client.get_workflow_handle_for(InvoiceWorkflow.run, invoice_workflow_id(invoice_id))


async def status(client: Client, invoice_id: str) -> InvoiceStatus:
    """The invoice's state, amounts, next action and story (the ``status`` query)."""
    async with _translated(client, invoice_id):
        return await invoice_handle(client, invoice_id).query(InvoiceWorkflow.status, rpc_timeout=ANSWER_TIMEOUT)


async def record_payment(client: Client, invoice_id: str, payment: Payment) -> int:
    """Record a payment and wait for it; returns the new balance in minor units (idempotent by payment id)."""
    return await _update(client, invoice_id, InvoiceWorkflow.record_payment, payment)


async def send_payment_signal(client: Client, invoice_id: str, payment: Payment) -> None:
    """Report a payment fire-and-forget; a payment the invoice cannot accept is recorded as rejected."""
    async with _translated(client, invoice_id):
        await invoice_handle(client, invoice_id).signal("payment_received", payment)


async def open_dispute(client: Client, invoice_id: str, dispute: OpenDispute) -> InvoiceStatus:
    """Open a dispute: escalation pauses until it is resolved."""
    return await _update(client, invoice_id, InvoiceWorkflow.open_dispute, dispute)


async def resolve_dispute(client: Client, invoice_id: str, resolution: ResolveDispute) -> InvoiceStatus:
    """Resolve the open dispute (upheld with an optional credit, or rejected)."""
    return await _update(client, invoice_id, InvoiceWorkflow.resolve_dispute, resolution)


async def agree_plan(client: Client, invoice_id: str, plan: PaymentPlan) -> InvoiceStatus:
    """Replace escalation by a payment plan whose instalments sum to the balance."""
    return await _update(client, invoice_id, InvoiceWorkflow.agree_payment_plan, plan)


async def resend(client: Client, invoice_id: str) -> None:
    """Re-send the current invoice (with fees) now, without moving the escalation clock."""
    await _update(client, invoice_id, InvoiceWorkflow.resend_invoice)


async def decide_legal(client: Client, invoice_id: str, decision: DecideLegal) -> InvoiceStatus:
    """A human's decision at legal review: sue, settle, write off or back to agency."""
    return await _update(client, invoice_id, InvoiceWorkflow.decide_legal, decision)


async def mark_factored(client: Client, invoice_id: str, factoring: MarkFactored) -> InvoiceStatus:
    """Mark the receivable as sold to a factor: the client-facing escalation ends."""
    return await _update(client, invoice_id, InvoiceWorkflow.mark_factored, factoring)


async def _update(client: Client, invoice_id: str, update: Any, *args: Any) -> Any:
    """Run one of the workflow's updates and wait for its result, with errors translated."""
    async with _translated(client, invoice_id):
        return await invoice_handle(client, invoice_id).execute_update(update, args=args, rpc_timeout=ANSWER_TIMEOUT)


# --- error translation ------------------------------------------------------------------------


@asynccontextmanager
async def _translated(client: Client, invoice_id: str) -> AsyncIterator[None]:
    """Turn the Temporal errors of a call on one invoice into :class:`InvoiceError`."""
    try:
        yield
    except WorkflowUpdateFailedError as err:
        raise InvoiceError(_failure_text(err.cause), _refusal_of(err.cause)) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise InvoiceError(_no_answer(invoice_id), Refusal.UNAVAILABLE) from None
    except WorkflowQueryFailedError as err:
        raise InvoiceError(f"status of invoice {invoice_id} failed: {err.message}", Refusal.UNAVAILABLE) from None
    except WorkflowQueryRejectedError as err:
        raise InvoiceError(f"status of invoice {invoice_id} was rejected ({err.status})", Refusal.REJECTED) from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise await _not_found(client, invoice_id) from None
        if err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):  # our rpc_timeout expired
            raise InvoiceError(_no_answer(invoice_id), Refusal.UNAVAILABLE) from None
        raise InvoiceError(f"invoice {invoice_id}: {_rpc_text(err)}", Refusal.UNAVAILABLE) from None


def _refusal_of(failure: BaseException) -> Refusal:
    kind = failure.type if isinstance(failure, ApplicationError) else None
    return _VALIDATOR_REFUSALS.get(kind or "", Refusal.REJECTED)


async def _not_found(client: Client, invoice_id: str) -> InvoiceError:
    """NOT_FOUND means either no such workflow or one that has already completed; tell which."""
    try:
        description = await invoice_handle(client, invoice_id).describe()
    except RPCError:
        return InvoiceError(f"unknown invoice {invoice_id}: no workflow {invoice_workflow_id(invoice_id)}", Refusal.NOT_FOUND)
    if description.status == WorkflowExecutionStatus.RUNNING:  # raced with a continue-as-new
        return InvoiceError(f"invoice {invoice_id} is between runs; try again", Refusal.UNAVAILABLE)
    state = description.status.name.lower().replace("_", " ") if description.status else "closed"
    return InvoiceError(
        f"invoice {invoice_id} is closed (workflow {state}); it accepts no further requests", Refusal.CLOSED
    )


def _no_answer(invoice_id: str) -> str:
    return (
        f"no worker answered for invoice {invoice_id} within {ANSWER_TIMEOUT.total_seconds():g} s: is a worker "
        "running on the invoice's task queue? A request may still be applied once one picks it up."
    )


def _failure_text(failure: BaseException) -> str:
    if isinstance(failure, ApplicationError):
        return failure.message
    if isinstance(failure, FailureError):
        return failure.message
    return str(failure)


def _rpc_text(err: RPCError) -> str:
    return f"{err.message} ({err.status.name if err.status else 'unknown status'})"
