"""The FastAPI application: its lifespan (Temporal client, Postgres pool, projector), routes and errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from activities.equipment.registry import Registry
from activities.ledger import apply_schema, create_pool
from activities.projections import ProjectionLag, Projector, projection_lag
from activities.standing import StandingSettings
from api import routes_customer_control, routes_invoices, routes_payment_formats, routes_payments, routes_reports
from api.auth import metrics_scraper
from api.context import ApiContext
from api.metrics import metrics_router
from api.problems import (
    Kind,
    Problem,
    add_problem_schemas,
    install_problem_handlers,
    problem_response,
    problem_responses,
)
from api.routes_invoices import IMPORT_PATH, MAX_IMPORT_BYTES
from api.routes_payment_formats import MAX_STATEMENT_BYTES, STATEMENTS_PATH
from client.logs import bound_ids
from client.policies import PolicyBook
from client.settings import Settings
from client.temporal import connect

MAX_BODY_BYTES = 64 * 1024
PROJECTOR_STOP_SECONDS = 10
log = logging.getLogger(__name__)

DESCRIPTION = """
Durable per-invoice dunning. Every change to an invoice goes through its Temporal workflow; lists
and reports come from projections of the event log, which may trail it by a moment.

**Money** is an integer in minor units (cents) with an ISO 4217 currency.
**Authentication**: `Authorization: Bearer <token>`; the `integration` role may start invoices
(naming a policy of the policies file, with contract terms within its bounds), record payments and
read invoices, the `ops` role may do everything (an inline policy too). The payment provider's
webhook is authenticated by its HMAC signature instead.
**Errors** are RFC 9457 problem details (`application/problem+json`); switch on `type`.
**Lists** are paginated with `limit` and `offset`; the `Link` header names the next page.
"""


class Health(BaseModel):
    """The API and what it depends on are up."""

    status: str
    projection_lag: ProjectionLag


def create_app(settings: Settings) -> FastAPI:
    """The API for ``settings``; Temporal and Postgres are connected when it starts (its lifespan).

    The policies file is read now: a bad one raises ``PoliciesFileError`` before anything starts.
    """
    policies = PolicyBook.load(settings.policies_file)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.api_tokens:
            log.warning("no API tokens are configured (DUNNING_API_TOKENS): every API request will be refused")
        standing = StandingSettings.load(settings.customers_file)
        client = await connect(settings)
        await apply_schema(settings.resolved_owner_database_url())
        pool = await create_pool(settings.resolved_database_url())
        stop = asyncio.Event()
        projector = asyncio.create_task(Projector().run(pool, stop), name="projector")
        registry = Registry.load(settings.equipment_file) if settings.equipment_file else Registry()
        app.state.context = ApiContext(
            client=client, pool=pool, settings=settings, standing=standing, registry=registry, policies=policies
        )
        try:
            yield
        finally:
            stop.set()
            try:
                await asyncio.wait_for(projector, PROJECTOR_STOP_SECONDS)
            finally:
                await pool.close()

    app = FastAPI(
        title="dunning",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    larger = {STATEMENTS_PATH: MAX_STATEMENT_BYTES, IMPORT_PATH: MAX_IMPORT_BYTES}
    app.add_middleware(BodySizeLimit, limit=MAX_BODY_BYTES, larger=larger)
    app.add_middleware(LogIds)
    install_problem_handlers(app)
    app.include_router(routes_invoices.router)
    app.include_router(routes_payments.router)
    app.include_router(routes_payment_formats.router)
    app.include_router(routes_reports.router)
    app.include_router(routes_customer_control.router)
    app.include_router(metrics_router(lambda: app.state.context.pool), dependencies=[metrics_scraper])

    @app.get("/health", tags=["service"], response_model=Health, responses=problem_responses(503), summary="Health")
    async def health() -> Health:
        """200 when Temporal and Postgres answer; reports how far the projections trail the event log."""
        context: ApiContext = app.state.context
        if not await context.client.service_client.check_health():
            raise Problem(Kind.UNAVAILABLE, "Temporal reports that it is not serving")
        return Health(status="ok", projection_lag=await projection_lag(context.pool))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            add_problem_schemas(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


class LogIds:
    """Every log line of a request about one invoice or customer carries its id (``client.logs``)."""

    PATH = re.compile(r"^/(?P<what>invoices|customers)/(?P<id>[^/]+)")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if not found:
            await self.app(scope, receive, send)
            return
        key = "invoice_id" if found["what"] == "invoices" else "customer_id"
        with bound_ids(**{key: unquote(found["id"])}):
            await self.app(scope, receive, send)


class BodySizeLimit:
    """Refuse a request body over ``limit`` bytes with a 413 problem: by its Content-Length, or while it arrives.

    ``larger`` names the paths allowed more (a bank statement is larger than any JSON request).
    """

    def __init__(self, app: ASGIApp, limit: int, larger: dict[str, int] | None = None) -> None:
        self.app, self.default_limit, self.larger = app, limit, larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.default_limit)
        detail = f"the request body exceeds the limit of {limit} bytes"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await problem_response(Request(scope), Problem(Kind.CONTENT_TOO_LARGE, detail))(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, detail)  # inside the route: answered by the problem handlers
            return message

        await self.app(scope, receive_within_limit, send)


def _version() -> str:
    try:
        return version("dunning")
    except PackageNotFoundError:
        return "dev"
