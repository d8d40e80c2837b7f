"""``dunning customer``: what a customer's invoices hold of its service and equipment."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from client.customers import customer_cash, customer_holds
from client.settings import Settings
from client.temporal import connect
from workflows.cash import CashBook
from workflows.holds import CustomerLedger
from workflows.models import format_money

app = typer.Typer(
    help="A customer's workflow: the service and equipment its invoices hold, its payments and credit.", no_args_is_help=True
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
        payment = application.payment
        parts = ", ".join(
            f"{format_money(a.amount_minor, payment.currency)} to {a.invoice_id}{' (refused)' if a.refused else ''}"
            for a in application.allocations
        )
        left = f"; credit {format_money(application.credit_minor, payment.currency)}" if application.credit_minor else ""
        typer.echo(f"{payment.payment_id} ({payment.received_at.date()}): {format_money(payment.amount_minor, payment.currency)}"
                   f" -> {parts or 'no invoice'}{left}")
    credit = ", ".join(format_money(amount, currency) for currency, amount in sorted(book.credit().items()))
    typer.echo(f"credit: {credit or 'none'}")
