"""Customers (ranked, balances, standing) and the finance reports: aging, funnel and DSO, as JSON or CSV.

A report is CSV when asked for with ``?format=csv`` or ``Accept: text/csv``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from activities import projections
from activities.projections import AgingRow, CustomerView, DsoRow, FunnelRow
from activities.standing import CustomerStanding, customer_standing
from api.auth import ops_only
from api.context import ApiContext, api_context
from api.params import MAX_OFFSET, CustomerId, Page, Paged
from api.problems import Kind, Problem, problem_responses
from workflows.models import Currency

router = APIRouter(dependencies=[ops_only])
Context = Annotated[ApiContext, Depends(api_context)]
CSV_MEDIA_TYPE = "text/csv"
AsOf = Annotated[
    date | None,
    Query(ge=date(1900, 1, 1), le=date(2999, 12, 31), description="the day the figures are for; default today (UTC)"),
]


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"


FormatQuery = Annotated[Format | None, Query(description="csv, or json (default; also by Accept: text/csv)")]


class AgingReport(BaseModel):
    """Accounts receivable per currency (minor units) by days past the due date: current (not yet due),
    1-30, 31-60, 61-90 and over 90 days."""

    as_of: date
    rows: list[AgingRow]


class FunnelReport(BaseModel):
    """How far invoices escalated, and where they were paid."""

    rows: list[FunnelRow]


class DsoReport(BaseModel):
    """Days sales outstanding per currency."""

    as_of: date
    period_days: int
    rows: list[DsoRow]


def _report_responses(model: type[BaseModel]) -> dict[int | str, dict]:
    csv_content = {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}}
    return {200: {"model": model, "content": csv_content}, **problem_responses(401, 403, 422)}


# --- customers -----------------------------------------------------------------------------------


@router.get(
    "/customers",
    tags=["customers"],
    response_model=Page[CustomerView],
    responses=problem_responses(401, 403, 422),
    summary="Customers ranked by what they owe",
)
async def rank_customers(
    paging: Paged,
    ctx: Context,
    currency: Annotated[Currency | None, Query(description="count only this currency")] = None,
    as_of: AsOf = None,
) -> Page[CustomerView]:
    """Customers who owe something, the most overdue first, then the most open (technique 20)."""
    ranked = await projections.rank_customers(ctx.pool, limit=MAX_OFFSET, offset=0, currency=currency, as_of=as_of)
    return paging.window(ranked)


@router.get(
    "/customers/{customer_id}",
    tags=["customers"],
    response_model=CustomerView,
    responses=problem_responses(401, 403, 404, 422),
    summary="A customer's balances",
)
async def read_customer(customer_id: CustomerId, ctx: Context, as_of: AsOf = None) -> CustomerView:
    """Open and overdue amounts per currency, the oldest overdue invoice, invoices by state."""
    view = await projections.customer_view(ctx.pool, customer_id, as_of=as_of)
    if view is None:
        raise Problem(Kind.CUSTOMER_NOT_FOUND, f"no invoice of customer {customer_id} is known")
    return view


@router.get(
    "/customers/{customer_id}/standing",
    tags=["customers"],
    response_model=CustomerStanding,
    responses=problem_responses(401, 403, 422),
    summary="A customer's standing: support, new orders, deposit",
)
async def standing(customer_id: CustomerId, ctx: Context, as_of: AsOf = None) -> CustomerStanding:
    """May the helpdesk support this customer, may it order, must it pay a deposit first, and why.

    A customer without invoices is in good standing.
    """
    return await customer_standing(ctx.pool, customer_id, ctx.standing, as_of=as_of)


# --- reports -------------------------------------------------------------------------------------


@router.get("/reports/aging", tags=["reports"], response_model=AgingReport, responses=_report_responses(AgingReport), summary="Aging report")
async def aging(request: Request, ctx: Context, as_of: AsOf = None, format: FormatQuery = None) -> AgingReport | Response:
    """What clients owed at the end of ``as_of``, per currency and by days past due."""
    day = as_of or _today()
    report = AgingReport(as_of=day, rows=await projections.aging_report(ctx.pool, day))
    return _csv(report.rows, AgingRow, f"aging-{day}") if _wants_csv(request, format) else report


@router.get("/reports/funnel", tags=["reports"], response_model=FunnelReport, responses=_report_responses(FunnelReport), summary="Collections funnel")
async def funnel(request: Request, ctx: Context, format: FormatQuery = None) -> FunnelReport | Response:
    """Invoices that reached each stage, and those paid in full at it."""
    report = FunnelReport(rows=await projections.collections_funnel(ctx.pool))
    return _csv(report.rows, FunnelRow, "funnel") if _wants_csv(request, format) else report


@router.get("/reports/dso", tags=["reports"], response_model=DsoReport, responses=_report_responses(DsoReport), summary="Days sales outstanding")
async def dso(
    request: Request,
    ctx: Context,
    as_of: AsOf = None,
    period_days: Annotated[int, Query(ge=1, le=3660, description="length of the sales period, in days")] = 90,
    format: FormatQuery = None,
) -> DsoReport | Response:
    """Receivables at the end of ``as_of`` / amount invoiced in the period × its days, per currency."""
    day = as_of or _today()
    report = DsoReport(as_of=day, period_days=period_days, rows=await projections.days_sales_outstanding(ctx.pool, day, period_days))
    return _csv(report.rows, DsoRow, f"dso-{day}") if _wants_csv(request, format) else report


def _today() -> date:
    return datetime.now(timezone.utc).date()


def _wants_csv(request: Request, format: Format | None) -> bool:
    if format is not None:
        return format == Format.CSV
    accepted = [part.split(";")[0].strip().lower() for part in request.headers.get("accept", "").split(",")]
    return CSV_MEDIA_TYPE in accepted and "application/json" not in accepted


def _csv(rows: Sequence[BaseModel], model: type[BaseModel], name: str) -> Response:
    """The rows as CSV with a header line, money in minor units as in JSON."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    columns = list(model.model_fields)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(_cell(getattr(row, column)) for column in columns)
    return Response(
        out.getvalue(),
        media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)
