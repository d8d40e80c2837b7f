"""Ops control of a customer (ops role): pause and resume every escalation of its invoices, keep its equipment
out of automatic cuts, and read what ops decided. Each is an update of the customer's workflow (``workflows.customer_ops``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from api.auth import ops_only
from api.context import ApiContext, api_context
from api.params import CustomerId
from api.problems import customer_answer, out_of_bounds, problem_responses
from client import customers
from workflows.bounds import BoundedMoment
from workflows.customer_control import CustomerControl, CutsRequest, PauseCustomer, ResumeCustomer, until_problem
from workflows.models import FreeText

router = APIRouter(tags=["customers"], dependencies=[ops_only])
Context = Annotated[ApiContext, Depends(api_context)]
RESPONSES = problem_responses(400, 401, 403, 409, 413, 415, 422, 503)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requested_by: FreeText = Field(min_length=1, max_length=200, description="who asks (an ops user), kept with the decision")


class PauseBody(_Body):
    """Pause every escalation of the customer's invoices."""

    reason: FreeText = Field(min_length=1, max_length=500)
    until: BoundedMoment | None = Field(default=None, description="ends by itself then: in the future, at most 366 days ahead")


class ResumeBody(_Body):
    """End the customer's pause now."""

    reason: FreeText = Field(default="", max_length=500)


class CutsBody(_Body):
    """Keep the customer's equipment out of automatic cuts (``excluded``), or put it back in."""

    excluded: bool
    reason: FreeText = Field(min_length=1, max_length=500)


@router.post("/customers/{customer_id}/pause", response_model=CustomerControl, responses=RESPONSES, summary="Pause a customer")
async def pause(customer_id: CustomerId, body: PauseBody, ctx: Context) -> CustomerControl:
    """No invoice of the customer escalates until ``/resume`` or ``until``; their steps then come later by the
    pause's length. Again while paused: changes its reason or until-date (the same request again changes nothing)."""
    if problem := until_problem(body.until, datetime.now(timezone.utc)):
        raise out_of_bounds([(("until",), problem)])
    request = PauseCustomer(customer_id=customer_id, **body.model_dump())
    return await customer_answer(customer_id, customers.pause(ctx.client, ctx.settings.task_queue, request, _gathering(ctx)))


@router.post("/customers/{customer_id}/resume", response_model=CustomerControl, responses=RESPONSES, summary="Resume a customer")
async def resume(customer_id: CustomerId, body: ResumeBody, ctx: Context) -> CustomerControl:
    """End the customer's pause now (nothing to do if it is not paused)."""
    request = ResumeCustomer(customer_id=customer_id, **body.model_dump())
    return await customer_answer(customer_id, customers.resume(ctx.client, ctx.settings.task_queue, request, _gathering(ctx)))


@router.post(
    "/customers/{customer_id}/cuts", response_model=CustomerControl, responses=RESPONSES, summary="Exclude from automatic cuts"
)
async def cuts(customer_id: CustomerId, body: CutsBody, ctx: Context) -> CustomerControl:
    """``excluded: true``: suspension blocks support and orders only, no equipment is cut automatically (what is
    already cut stays cut until its invoices release it). ``false``: equipment a suspended invoice holds is cut now."""
    request = CutsRequest(customer_id=customer_id, **body.model_dump())
    return await customer_answer(customer_id, customers.set_cuts(ctx.client, ctx.settings.task_queue, request, _gathering(ctx)))


@router.get(
    "/customers/{customer_id}/control",
    response_model=CustomerControl,
    responses=problem_responses(401, 403, 422, 503),
    summary="What ops decided about a customer",
)
async def control(customer_id: CustomerId, ctx: Context) -> CustomerControl:
    """The customer's pause, its exclusion from cuts, and the latest decisions with who and why."""
    return await customer_answer(customer_id, customers.customer_control(ctx.client, customer_id))


def _gathering(ctx: ApiContext) -> timedelta:
    return timedelta(seconds=ctx.settings.notice_digest_gathering_s)
