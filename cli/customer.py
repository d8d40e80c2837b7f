"""``dunning customer``: what a customer's invoices hold of its service and equipment."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from client.customers import customer_holds
from client.settings import Settings
from client.temporal import connect
from workflows.holds import CustomerLedger

app = typer.Typer(help="A customer's workflow: the service and equipment its invoices hold.", no_args_is_help=True)


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
