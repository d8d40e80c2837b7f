"""Invoices: start one, read it (projection, status, events) and act on it through its workflow.

Every change goes through the invoice's workflow (``client.invoices``); reads come from the
projections, which copy the workflow's own snapshot of each invoice. ``?live=true`` asks the
workflow itself (its ``status`` query), as does a read of an invoice not projected yet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError
from temporalio.service import RPCError, RPCStatusCode

from activities import projections
from activities.equipment.registry import EquipmentRefused
from activities.ledger import read_events
from activities.projections import InvoiceView
from api import examples
from api.auth import REALM, Role, any_role, ops_only
from api.context import ApiContext, api_context
from api.params import InvoiceId, Page, Paged
from api.problems import (
    FieldProblem,
    Kind,
    Problem,
    body_problem,
    invoice_problem,
    out_of_bounds,
    pointer,
    problem_responses,
)
from client import customers, invoice_import, invoices
from client.invoice_import import InvoiceImportSummary
from client.invoices import InvoiceError
from client.policies import InvoiceRequest, UnknownPolicy
from workflows.events import RecordedEvent
from workflows.models import (
    DecideLegal,
    Invoice,
    InvoiceState,
    InvoiceStatus,
    MarkFactored,
    OpenDispute,
    PaymentPlan,
    ResolveDispute,
)
from workflows.state import InvoiceWorkflowInput

router = APIRouter(prefix="/invoices", tags=["invoices"])
Context = Annotated[ApiContext, Depends(api_context)]
ACTION_ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 503)
Action = TypeVar("Action", bound=Callable[..., Awaitable[Any]])
READ_ERRORS = problem_responses(401, 403, 404, 422, 503)
IMPORT_PATH = "/invoices/import"
MAX_IMPORT_BYTES = 16 * 1024 * 1024
JSON_LINES = ("application/jsonl", "application/x-ndjson")


InvoiceBody = Annotated[InvoiceRequest, Body(openapi_examples=examples.INVOICE)]


Live = Annotated[
    bool, Query(description="ask the workflow now instead of reading its last snapshot (slower; use for a check)")
]


class InvoiceDetail(BaseModel):
    """The invoice from the projections, and its status (from its snapshot, or live from its workflow)."""

    invoice: InvoiceView | None = Field(description="the projection; null until its first event is projected")
    status: InvoiceStatus | None = Field(description="null once the invoice's history is gone and it was never projected")


async def _status(ctx: ApiContext, invoice_id: str, live: bool) -> InvoiceStatus:
    """The status from the projection, or from the workflow if asked to or if not projected yet."""
    if not live and (projected := await projections.invoice_status(ctx.pool, invoice_id)) is not None:
        return projected
    return await invoices.status(ctx.client, invoice_id)


# --- starting and reading --------------------------------------------------------------------


def _authorize(ctx: ApiContext, role: Role, request: InvoiceRequest) -> None:
    """The integration role may only name a policy and give terms within the policies file's bounds (else 403)."""
    if role == Role.OPS:
        return
    refusals = ctx.policies.integration_refusals(request, datetime.now(timezone.utc))
    if not refusals:
        return
    reasons = "; ".join(f"{'.'.join(map(str, path))}: {message}" for path, message in refusals)
    raise Problem(
        Kind.FORBIDDEN,
        "this invoice needs the ops role: the integration role may only name a policy and give contract terms"
        f" within the policies file's bounds ({reasons})",
        headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope"'},
        errors=[FieldProblem(detail=message, pointer=pointer(path)) for path, message in refusals],
    )


def _resolved(ctx: ApiContext, request: InvoiceRequest) -> Invoice:
    """The invoice with its policy (422 for an unknown policy name or a policy that does not fit the invoice)."""
    try:
        return ctx.policies.invoice(request)
    except UnknownPolicy as err:
        raise out_of_bounds([(("policy_name",), str(err))]) from None
    except ValidationError as err:
        raise body_problem(err) from None


def _check_equipment(ctx: ApiContext, invoice: Invoice) -> None:
    """Equipment is named only by registry id, and only the customer's own (issue: no SSRF, no cross-customer cuts)."""
    if not invoice.terms.remote_disconnect_authorized:
        return
    for equipment_id in invoice.terms.equipment_ids:
        try:
            ctx.registry.resolve(equipment_id, invoice.customer_id)
        except EquipmentRefused as err:
            raise Problem(Kind.EQUIPMENT_REFUSED, f"{err}: the invoice names equipment only by its registry id") from None


@router.post(
    "",
    status_code=201,
    response_model=InvoiceStatus,
    responses={
        200: {"model": InvoiceStatus, "description": "The same invoice was already started: nothing changed."},
        **problem_responses(400, 401, 403, 409, 413, 415, 422, 503),
    },
    summary="Start an invoice",
)
async def create_invoice(
    request: InvoiceBody, response: Response, ctx: Context, role: Annotated[Role, any_role]
) -> InvoiceStatus:
    """Validate the invoice and start its workflow: it is sent at once and escalates per its policy.

    The policy is one of the policies file's, by ``policy_name`` (unknown: 422), or its default one; an
    inline ``policy``, or contract terms beyond the file's bounds for the integration role, need the ops
    role (403). Posting the very same invoice again is harmless (200); another invoice with a used id is
    409. Issue and due dates must lie within ``DUNNING_DATE_WINDOW_DAYS`` of today (422).
    """
    _authorize(ctx, role, request)
    invoice = _resolved(ctx, request)
    if problems := ctx.settings.date_window().invoice(invoice):
        raise out_of_bounds(problems)
    _check_equipment(ctx, invoice)
    created = False
    if not await _issued(ctx, invoice.invoice_id):  # an id the event log knows is never started again
        try:
            policy_name = ctx.policies.name_of(request)
            await invoices.start_invoice(ctx.client, ctx.settings.task_queue, invoice, policy_name=policy_name)
            created = True
        except InvoiceError as err:
            problem = invoice_problem(err)
            if problem.kind != Kind.INVOICE_EXISTS:
                raise problem from None
    if not created and await _started_with(ctx, invoice.invoice_id) != invoice:
        raise Problem(
            Kind.INVOICE_EXISTS,
            f"invoice {invoice.invoice_id} already exists with other content, or was closed and archived;"
            " invoice ids cannot be reused",
        )
    gathering = timedelta(seconds=ctx.settings.notice_digest_gathering_s)
    await customers.register_invoice(ctx.client, ctx.settings.task_queue, invoice, gathering)  # again on a repeat: harmless
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/invoices/{invoice.invoice_id}"
    return await invoices.status(ctx.client, invoice.invoice_id)


@router.post(
    "/import",
    response_model=InvoiceImportSummary,
    responses=problem_responses(400, 401, 403, 413, 415, 503),
    openapi_extra={"requestBody": {"required": True, "content": {t: {"schema": {"type": "string"}} for t in JSON_LINES}}},
    summary="Import invoices another system already chased (JSON Lines)",
)
async def import_invoices(request: Request, ctx: Context, role: Annotated[Role, any_role]) -> InvoiceImportSummary:
    """Start each invoice of a JSON Lines body, one invoice a line as for ``POST /invoices``, with optional
    ``opening_fees`` and ``last_notice`` (docs/invoice-import.md).

    Idempotent by invoice id: a line whose invoice exists is reported ``already_there``; a line that does not
    validate, or that the role may not start (as for ``POST /invoices``), is reported ``refused`` with its line
    number and reason, and the others go on. No invoice notice is sent: each invoice starts at the stage its
    days overdue reach, with one notice for it.
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in JSON_LINES:
        raise Problem(Kind.UNSUPPORTED_MEDIA_TYPE, f"send JSON Lines as {JSON_LINES[0]}, not {media_type or 'no type'}")
    try:
        lines = (await request.body()).decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise Problem(Kind.BAD_REQUEST, "the body is not UTF-8 text") from None

    def check(given: InvoiceRequest, invoice: Invoice) -> None:
        try:
            _authorize(ctx, role, given)
            _check_equipment(ctx, invoice)
        except Problem as problem:
            raise ValueError(problem.detail) from None

    try:
        return await invoice_import.import_invoices(
            ctx.client,
            ctx.settings.task_queue,
            lines,
            ctx.settings.date_window(),
            ctx.policies,
            gathering=timedelta(seconds=ctx.settings.notice_digest_gathering_s),
            check=check,
        )
    except InvoiceError as err:
        raise invoice_problem(err) from None


async def _issued(ctx: ApiContext, invoice_id: str) -> bool:
    """Whether the event log knows the invoice."""
    return bool(await ctx.pool.fetchval("SELECT 1 FROM invoice_events WHERE invoice_id = $1 LIMIT 1", invoice_id))


async def _started_with(ctx: ApiContext, invoice_id: str) -> Invoice | None:
    """The invoice the (latest run of the) workflow was started with; None if there is no such workflow."""
    try:
        async for event in invoices.invoice_handle(ctx.client, invoice_id).fetch_history_events():
            started = event.workflow_execution_started_event_attributes
            [params] = await ctx.client.data_converter.decode(started.input.payloads, [InvoiceWorkflowInput])
            return params.invoice
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
    return None


@router.get(
    "",
    dependencies=[any_role],
    response_model=Page[InvoiceView],
    responses=problem_responses(401, 403, 422),
    summary="List invoices",
)
async def list_invoices(
    paging: Paged,
    ctx: Context,
    customer_id: Annotated[str | None, Query(min_length=1, max_length=64, description="only this customer's")] = None,
    state: Annotated[InvoiceState | None, Query(description="only invoices in this state")] = None,
) -> Page[InvoiceView]:
    """Invoices from the projections, by due date."""
    items = await projections.list_invoices(
        ctx.pool, customer_id=customer_id, state=state, limit=paging.limit, offset=paging.offset
    )
    total = await ctx.pool.fetchval(
        "SELECT count(*) FROM projected_invoices WHERE ($1::text IS NULL OR customer_id = $1)"
        " AND ($2::text IS NULL OR state = $2)",
        customer_id,
        state.value if state else None,
    )
    return paging.page(items, total)


@router.get(
    "/{invoice_id}",
    dependencies=[any_role],
    response_model=InvoiceDetail,
    responses=READ_ERRORS,
    summary="Read an invoice",
)
async def read_invoice(invoice_id: InvoiceId, ctx: Context, live: Live = False) -> InvoiceDetail:
    """The projected invoice and its status."""
    view = await projections.invoice_view(ctx.pool, invoice_id)
    try:
        status = await _status(ctx, invoice_id, live)
    except InvoiceError as err:
        problem = invoice_problem(err)
        if problem.kind != Kind.INVOICE_NOT_FOUND or view is None:
            raise problem from None
        status = None
    return InvoiceDetail(invoice=view, status=status)


@router.get(
    "/{invoice_id}/status",
    dependencies=[any_role],
    response_model=InvoiceStatus,
    responses=READ_ERRORS,
    summary="Status of an invoice",
)
async def invoice_status(invoice_id: InvoiceId, ctx: Context, live: Live = False) -> InvoiceStatus:
    """State, amounts, next action and story, as the workflow last wrote them (``live``: from the workflow now)."""
    return await _status(ctx, invoice_id, live)


@router.get(
    "/{invoice_id}/events",
    dependencies=[any_role],
    response_model=Page[RecordedEvent],
    responses=READ_ERRORS,
    summary="Events of an invoice",
)
async def invoice_events(invoice_id: InvoiceId, paging: Paged, ctx: Context) -> Page[RecordedEvent]:
    """The invoice's facts from the event log, oldest first."""
    events = await read_events(ctx.pool, invoice_id)
    if not events:
        await invoices.status(ctx.client, invoice_id)  # 404 if no such invoice; else it has no event yet
    return paging.window(events)


# --- acting on an invoice (ops) --------------------------------------------------------------


def ops_action(path: str, summary: str) -> Callable[[Action], Action]:
    """``POST`` an ops request to one invoice: answered with its status, refused as ``ACTION_ERRORS`` say."""
    return router.post(path, dependencies=[ops_only], response_model=InvoiceStatus, responses=ACTION_ERRORS, summary=summary)


@ops_action("/{invoice_id}/disputes", "Open a dispute")
async def open_dispute(invoice_id: InvoiceId, dispute: Annotated[OpenDispute, Body(openapi_examples=examples.DISPUTE)], ctx: Context) -> InvoiceStatus:
    """The client contests the invoice: escalation pauses until the dispute is resolved."""
    return await invoices.open_dispute(ctx.client, invoice_id, dispute)


@ops_action("/{invoice_id}/disputes/resolve", "Resolve the open dispute")
async def resolve_dispute(invoice_id: InvoiceId, resolution: Annotated[ResolveDispute, Body(openapi_examples=examples.RESOLUTION)], ctx: Context) -> InvoiceStatus:
    """Upheld (with an optional credit) or rejected; escalation resumes, shifted by the pause."""
    return await invoices.resolve_dispute(ctx.client, invoice_id, resolution)


@ops_action("/{invoice_id}/payment-plan", "Agree a payment plan")
async def agree_plan(invoice_id: InvoiceId, plan: Annotated[PaymentPlan, Body(openapi_examples=examples.PLAN)], ctx: Context) -> InvoiceStatus:
    """Instalments summing to the balance replace escalation; a missed one resumes it. Their dates must lie
    within ``DUNNING_DATE_WINDOW_DAYS`` of today (422)."""
    if problems := ctx.settings.date_window().plan(plan):
        raise out_of_bounds(problems)
    return await invoices.agree_plan(ctx.client, invoice_id, plan)


@router.post(
    "/{invoice_id}/resend",
    dependencies=[ops_only],
    response_model=InvoiceStatus,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
    summary="Re-send the invoice",
)
async def resend(invoice_id: InvoiceId, ctx: Context) -> InvoiceStatus:
    """Send the current invoice (with fees) again now, without moving the escalation clock."""
    await invoices.resend(ctx.client, invoice_id)
    return await invoices.status(ctx.client, invoice_id)


@ops_action("/{invoice_id}/legal-decision", "Decide at legal review")
async def decide_legal(invoice_id: InvoiceId, decision: Annotated[DecideLegal, Body(openapi_examples=examples.LEGAL_DECISION)], ctx: Context) -> InvoiceStatus:
    """Sue, settle for an amount, write off, or send back to the agency."""
    return await invoices.decide_legal(ctx.client, invoice_id, decision)


@ops_action("/{invoice_id}/factored", "Mark the invoice factored")
async def mark_factored(invoice_id: InvoiceId, factoring: Annotated[MarkFactored, Body(openapi_examples=examples.FACTORED)], ctx: Context) -> InvoiceStatus:
    """The receivable was sold to a factor: client-facing escalation ends."""
    return await invoices.mark_factored(ctx.client, invoice_id, factoring)
