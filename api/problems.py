"""Every error as an RFC 9457 problem (``application/problem+json``), and invoice errors translated into them.

A problem names its kind in ``type`` (a stable URI a client can switch on), says what went wrong in
``detail`` (a sentence meant for a person), and lists field-level problems in ``errors`` when the
request did not validate. FastAPI's own errors (404, 405, 413, 422) and unexpected failures get the
same shape, so a client needs one error parser.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Sequence
from enum import Enum, unique
from http import HTTPStatus
from typing import Any, TypeVar

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from client.invoices import InvoiceError, Refusal
from workflows.bounds import Problems

Answer = TypeVar("Answer")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://dunning.invalid/problems/"
log = logging.getLogger(__name__)


@unique
class Kind(Enum):
    """The kinds of problem this API reports: ``(HTTP status, title)``; the name gives the type URI."""

    BAD_REQUEST = (400, "Bad request")
    MALFORMED_JSON = (400, "Malformed JSON")
    UNAUTHORIZED = (401, "Authentication required")
    INVALID_SIGNATURE = (401, "Invalid webhook signature")
    FORBIDDEN = (403, "Not allowed for this role")
    NOT_FOUND = (404, "Not found")
    INVOICE_NOT_FOUND = (404, "Unknown invoice")
    CUSTOMER_NOT_FOUND = (404, "Unknown customer")
    METHOD_NOT_ALLOWED = (405, "Method not allowed")
    INVOICE_EXISTS = (409, "Invoice already exists")
    INVOICE_CLOSED = (409, "Invoice closed")
    PAYMENT_CONFLICT = (409, "Payment id already used")
    REQUEST_REFUSED = (409, "Refused by the invoice")
    CONTENT_TOO_LARGE = (413, "Request body too large")
    UNSUPPORTED_MEDIA_TYPE = (415, "Unsupported media type")
    VALIDATION_FAILED = (422, "Request failed validation")
    WRONG_CURRENCY = (422, "Wrong currency")
    EQUIPMENT_REFUSED = (422, "Equipment not in the registry for this customer")
    INTERNAL_ERROR = (500, "Internal server error")
    UNAVAILABLE = (503, "Service unavailable")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def title(self) -> str:
        return self.value[1]

    @property
    def uri(self) -> str:
        return TYPE_BASE + self.name.lower().replace("_", "-")


class FieldProblem(BaseModel):
    """One reason a request did not validate."""

    detail: str = Field(description="what is wrong with this value")
    pointer: str | None = Field(default=None, description="JSON Pointer into the body, e.g. '#/amount_minor'")
    parameter: str | None = Field(default=None, description="the query or path parameter")
    header: str | None = Field(default=None, description="the header")


class ProblemDetails(BaseModel):
    """An RFC 9457 problem: what went wrong, for a program (``type``) and for a person (``detail``)."""

    type: str = Field(description="URI naming the kind of problem; switch on this, not on the title")
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, description="the request path that failed")
    errors: list[FieldProblem] | None = Field(default=None, description="one entry per invalid value")


class Problem(Exception):
    """Raise to answer with a problem; ``detail`` is the human-readable message."""

    def __init__(
        self,
        kind: Kind,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        errors: list[FieldProblem] | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.headers, self.errors = kind, detail, headers or {}, errors


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    """The problem as an ``application/problem+json`` response."""
    body = ProblemDetails(
        type=problem.kind.uri,
        title=problem.kind.title,
        status=problem.kind.status,
        detail=problem.detail,
        instance=request.url.path,
        errors=problem.errors,
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=problem.kind.status,
        headers=problem.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these statuses, each a problem body."""
    schema = {"$ref": "#/components/schemas/ProblemDetails"}
    return {
        status: {"description": HTTPStatus(status).phrase, "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}}}
        for status in statuses
    }


def add_problem_schemas(openapi: dict[str, Any]) -> None:
    """Put ``ProblemDetails`` (referenced by :func:`problem_responses`) into the schema's components."""
    schema = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(schema.pop("$defs", {}))
    schemas["ProblemDetails"] = schema


# --- translating errors ------------------------------------------------------------------------


def invoice_problem(err: InvoiceError) -> Problem:
    """The problem for a failed invoice operation, by the reason it carries."""
    kind, headers = _REFUSAL_KINDS[err.refusal], {}
    if err.refusal == Refusal.UNAVAILABLE:
        headers["Retry-After"] = "5"
    return Problem(kind, str(err), headers=headers)


_REFUSAL_KINDS = {
    Refusal.NOT_FOUND: Kind.INVOICE_NOT_FOUND,
    Refusal.EXISTS: Kind.INVOICE_EXISTS,
    Refusal.CLOSED: Kind.INVOICE_CLOSED,
    Refusal.PAYMENT_CONFLICT: Kind.PAYMENT_CONFLICT,
    Refusal.WRONG_CURRENCY: Kind.WRONG_CURRENCY,
    Refusal.REJECTED: Kind.REQUEST_REFUSED,
    Refusal.UNAVAILABLE: Kind.UNAVAILABLE,
}


async def customer_answer(customer_id: str, asked: Awaitable[Answer]) -> Answer:
    """What the customer's workflow answers: an update it refused is 422 (409 for a payment id already used
    otherwise), no answer in time is 503."""
    try:
        return await asked
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type == "PaymentConflict":
            raise Problem(Kind.PAYMENT_CONFLICT, cause.message) from None
        raise Problem(Kind.REQUEST_REFUSED, getattr(cause, "message", str(cause))) from None
    except (WorkflowUpdateRPCTimeoutOrCancelledError, RPCError) as err:
        reason = getattr(err, "message", None) or str(err)
        detail = f"customer {customer_id} did not answer: {reason}; try again"
        raise Problem(Kind.UNAVAILABLE, detail, headers={"Retry-After": "5"}) from None


def rpc_problem(err: RPCError, detail: str | None = None) -> Problem:
    """A Temporal RPC failure: the service cannot answer now."""
    text = detail or f"Temporal did not answer: {err.message}"
    return Problem(Kind.UNAVAILABLE, text, headers={"Retry-After": "5"})


def _validation_problem(request: Request, err: RequestValidationError) -> Problem:
    if isinstance(err.body, bytes) and err.body:  # a body FastAPI did not parse: it was not declared JSON
        declared = request.headers.get("content-type") or "none"
        return Problem(
            Kind.UNSUPPORTED_MEDIA_TYPE,
            f"the request body must be JSON with Content-Type: application/json (got {declared})",
        )
    return _errors_problem(list(err.errors()))


def body_problem(err: ValidationError) -> Problem:
    """The problem for a request body that failed ``model_validate_json``."""
    return _errors_problem([{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False)])


def out_of_bounds(problems: Problems) -> Problem:
    """The 422 for body values the edge refuses (outside today's window, ``workflows.bounds.DateWindow``; an
    unknown policy name), each field named."""
    return _errors_problem([{"loc": ("body", *path), "msg": message, "type": "value_error"} for path, message in problems])


def _errors_problem(errors: list[dict[str, Any]]) -> Problem:
    if bad_json := next((e for e in errors if e["type"] == "json_invalid"), None):
        reason = bad_json.get("ctx", {}).get("error", "invalid JSON")
        at = bad_json["loc"][1:]
        where = f" (at character {at[0]})" if at and isinstance(at[0], int) else ""
        return Problem(Kind.MALFORMED_JSON, f"the request body is not valid JSON: {reason}{where}")
    problems = [_field_problem(e) for e in errors]
    summary = "; ".join(_where(p) + p.detail for p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return Problem(Kind.VALIDATION_FAILED, f"{summary}{more}", errors=problems)


def pointer(path: Sequence[str | int]) -> str:
    """The JSON Pointer into the body of a field path, e.g. ``#/terms/fixed_late_fee_minor``."""
    return "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _field_problem(error: dict[str, Any]) -> FieldProblem:
    location, *path = error["loc"] or ("body",)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing" and location == "body" and not path:
        message = "a JSON request body is required"
    if location == "body":
        return FieldProblem(detail=message, pointer=pointer(path))
    name = ".".join(str(p) for p in path)
    if location == "header":
        return FieldProblem(detail=message, header=name)
    return FieldProblem(detail=message, parameter=name)


def _where(problem: FieldProblem) -> str:
    if problem.pointer and problem.pointer != "#/":
        return problem.pointer.removeprefix("#/").replace("/", ".") + ": "
    if problem.parameter or problem.header:
        return f"{problem.parameter or problem.header}: "
    return ""


_HTTP_KINDS = {
    404: Kind.NOT_FOUND,
    405: Kind.METHOD_NOT_ALLOWED,
    413: Kind.CONTENT_TOO_LARGE,
    415: Kind.UNSUPPORTED_MEDIA_TYPE,
}


def _http_problem(request: Request, err: HTTPException) -> Problem:
    kind = _HTTP_KINDS.get(err.status_code)
    headers = dict(err.headers or {})
    if kind == Kind.NOT_FOUND:
        return Problem(kind, f"no resource at {request.url.path}; see /docs for the API", headers=headers)
    if kind == Kind.METHOD_NOT_ALLOWED:
        allowed = headers.get("Allow") or headers.get("allow") or "another method"
        return Problem(kind, f"{request.method} is not allowed on {request.url.path}; use {allowed}", headers=headers)
    detail = err.detail if isinstance(err.detail, str) else json.dumps(err.detail)
    fallback = Kind.INTERNAL_ERROR if err.status_code >= 500 else Kind.BAD_REQUEST
    return Problem(kind or fallback, detail, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error, FastAPI's own and unexpected ones included, with a problem body."""

    async def on_problem(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, Problem)
        return problem_response(request, err)

    async def on_invoice_error(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, InvoiceError)
        return problem_response(request, invoice_problem(err))

    async def on_validation(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)
        return problem_response(request, _validation_problem(request, err))

    async def on_http(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, HTTPException)
        return problem_response(request, _http_problem(request, err))

    async def on_temporal(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RPCError)
        return problem_response(request, rpc_problem(err))

    async def on_database(request: Request, err: Exception) -> JSONResponse:
        log.warning("database unavailable for %s %s: %s", request.method, request.url.path, err)
        detail = "the database is not reachable right now; try again shortly"
        return problem_response(request, Problem(Kind.UNAVAILABLE, detail, headers={"Retry-After": "5"}))

    async def on_unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path, exc_info=err)
        detail = "an unexpected error occurred; it has been logged. Retrying may not help."
        return problem_response(request, Problem(Kind.INTERNAL_ERROR, detail))

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(InvoiceError, on_invoice_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(RPCError, on_temporal)
    app.add_exception_handler(asyncpg.PostgresConnectionError, on_database)
    app.add_exception_handler(asyncpg.InterfaceError, on_database)
    app.add_exception_handler(ConnectionError, on_database)
    app.add_exception_handler(Exception, on_unexpected)
