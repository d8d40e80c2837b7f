"""``dunning customer``: what a customer's invoices hold of its service and equipment, its payments, and ops
control (pause, resume, exclude-from-cuts, include-in-cuts)."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, NoReturn, TypeVar

import asyncpg
import typer
from pydantic import TypeAdapter, ValidationError
from temporalio.client import Client, WorkflowUpdateFailedError

from api.cash import CustomerPaymentBody, pay_customer
from cli.amounts import CliError, to_minor
from cli.database import Connections, with_database
from client import customers
from client.customers import customer_cash, customer_holds
from client.settings import Settings
from client.temporal import connect
from workflows.cash import CashBook, PaymentApplication
from workflows.customer_control import CustomerControl, CutsRequest, PauseCustomer, ResumeCustomer
from workflows.holds import CustomerLedger
from workflows.models import Currency, format_money

app = typer.Typer(
    help="A customer's workflow: the service and equipment its invoices hold, its payments and credit, and ops control.",
    no_args_is_help=True,
)


@app.command("holds")
def holds(customer_id: Annotated[str, typer.Argument(help="Customer id", show_default=False)]) -> None:
    """Each piece (support-and-orders block, equipment), whether it is cut and which invoices hold it."""
    settings = Settings()

    async def ask() -> CustomerLedger:
        return await customer_holds(await connect(settings), settings.task_queue, customer_id)

    ledger = asyncio.run(ask())
    if not ledger.pieces:
        typer.echo(f"customer {customer_id}: nothing held")
    for piece in ledger.pieces.values():
        state = "cut" if piece.cut else "not cut"
        held = ", ".join(piece.holders) or "nobody"
        trouble = f" (last action failed: {piece.error})" if piece.error else ""
        typer.echo(f"{piece.name}: {state}, held by {held}{trouble}")


@app.command("cash")
def cash(customer_id: Annotated[str, typer.Argument(help="Customer id", show_default=False)]) -> None:
    """The customer's payments, how each was split across its invoices, and its credit."""
    settings = Settings()

    async def ask() -> CashBook:
        return await customer_cash(await connect(settings), customer_id)

    book = asyncio.run(ask())
    if not book.payments:
        typer.echo(f"customer {customer_id}: no payments")
    for application in book.payments.values():
        typer.echo(_split(application))
    credit = ", ".join(format_money(amount, currency) for currency, amount in sorted(book.credit().items()))
    typer.echo(f"credit: {credit or 'none'}")


@app.command("pay")
def pay(
    customer_id: Annotated[str, typer.Argument(help="Customer id", show_default=False)],
    amount: Annotated[str, typer.Option(help="Amount in major units, e.g. 1500.00", show_default=False)],
    currency: Annotated[str, typer.Option(help="ISO 4217 code, e.g. RON", show_default=False)],
    payment_id: Annotated[str, typer.Option(help="Unique id of the transfer (bank reference)", show_default=False)],
    remittance: Annotated[str, typer.Option(help="The payer's text: invoice numbers in it are paid first")] = "",
    received_at: Annotated[
        str | None,
        typer.Option(help="When the money arrived (its value date), ISO 8601, e.g. 2026-12-03T10:00:00Z; default now"),
    ] = None,
) -> None:
    """Record one transfer from the customer: split across its open invoices (those named in the remittance
    first, then the oldest due), the rest kept as the customer's credit. Once per payment id."""
    try:
        code = TypeAdapter(Currency).validate_python(currency)
        body = CustomerPaymentBody.model_validate(
            {
                "payment_id": payment_id,
                "amount_minor": to_minor(amount, code, "--amount"),
                "currency": code,
                "received_at": received_at or datetime.now(timezone.utc),
                "remittance": remittance,
            }
        )
    except ValidationError as err:
        _fail(f"invalid payment: {'; '.join(_problem(p) for p in err.errors(include_url=False))}")
    except CliError as err:
        _fail(str(err))

    async def work(pool: asyncpg.Pool) -> PaymentApplication:
        settings = Settings()
        return await pay_customer(Connections(await connect(settings), pool, settings), customer_id, body)

    typer.echo(_split(with_database(work)))


def _split(application: PaymentApplication) -> str:
    """``BT-1 (2026-12-03): 1,500.00 RON -> 1,250.00 RON to INV-1, 250.00 RON to INV-2; credit ...``"""
    payment = application.payment
    parts = ", ".join(
        f"{format_money(a.amount_minor, payment.currency)} to {a.invoice_id}{' (refused)' if a.refused else ''}"
        for a in application.allocations
    )
    left = f"; credit {format_money(application.credit_minor, payment.currency)}" if application.credit_minor else ""
    return (
        f"{payment.payment_id} ({payment.received_at.date()}): {format_money(payment.amount_minor, payment.currency)}"
        f" -> {parts or 'no invoice'}{left}"
    )


M = TypeVar("M", PauseCustomer, ResumeCustomer, CutsRequest)
CustomerArg = Annotated[str, typer.Argument(help="Customer id", show_default=False)]
Reason = Annotated[str, typer.Option(help="Why (kept with the decision)", show_default=False)]
By = Annotated[str | None, typer.Option("--by", help="Who asks; default the login name")]


@app.command("pause")
def pause(
    customer_id: CustomerArg,
    reason: Reason,
    until: Annotated[
        str | None, typer.Option(help="Ends by itself then, ISO 8601 with a zone, e.g. 2027-01-31T09:00:00Z; at most a year")
    ] = None,
    by: By = None,
) -> None:
    """Pause every escalation of the customer's invoices (their steps come later by the pause's length)."""
    request = _request(
        PauseCustomer, customer_id=customer_id, reason=reason, requested_by=by or getpass.getuser(), until=until
    )
    _decide(lambda client, queue, gathering: customers.pause(client, queue, request, gathering))


@app.command("resume")
def resume(customer_id: CustomerArg, reason: Annotated[str, typer.Option(help="Why")] = "", by: By = None) -> None:
    """End the customer's pause now."""
    request = _request(ResumeCustomer, customer_id=customer_id, reason=reason, requested_by=by or getpass.getuser())
    _decide(lambda client, queue, gathering: customers.resume(client, queue, request, gathering))


@app.command("exclude-from-cuts")
def exclude_from_cuts(customer_id: CustomerArg, reason: Reason, by: By = None) -> None:
    """Never cut the customer's equipment automatically: suspension blocks support and orders only (equipment
    already cut stays cut until its invoices release it)."""
    _cuts(customer_id, reason, by, excluded=True)


@app.command("include-in-cuts")
def include_in_cuts(customer_id: CustomerArg, reason: Reason, by: By = None) -> None:
    """Undo ``exclude-from-cuts``: equipment a suspended invoice holds is cut now."""
    _cuts(customer_id, reason, by, excluded=False)


def _cuts(customer_id: str, reason: str, by: str | None, *, excluded: bool) -> None:
    request = _request(CutsRequest, customer_id=customer_id, excluded=excluded, reason=reason, requested_by=by or getpass.getuser())
    _decide(lambda client, queue, gathering: customers.set_cuts(client, queue, request, gathering))


def _request(model: type[M], **fields: Any) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as err:
        _fail(f"invalid request: {'; '.join(_problem(p) for p in err.errors(include_url=False))}")


def _decide(update: Callable[[Client, str, timedelta], Awaitable[CustomerControl]]) -> None:
    settings = Settings()

    async def work() -> CustomerControl:
        return await update(await connect(settings), settings.task_queue, timedelta(seconds=settings.notice_digest_gathering_s))

    try:
        control = asyncio.run(work())
    except WorkflowUpdateFailedError as err:
        _fail(f"refused: {getattr(err.cause, 'message', err.cause)}")
    pause = control.pause
    until = f" until {pause.until.isoformat()}" if pause and pause.until else ""
    typer.echo(f"paused since {pause.since.isoformat()}{until} ({pause.requested_by}: {pause.reason})" if pause else "not paused")
    typer.echo("excluded from automatic cuts" if control.cuts_excluded else "in automatic cuts")


def _problem(problem: Any) -> str:
    where = ".".join(str(part) for part in problem["loc"])
    message = str(problem["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
