"""``dunning equipment``: the kill switches that stop every cut and restore, for one customer or all.

Adapters read the switches at every call, so a switch takes effect on the next attempt.
"""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import asyncpg
import typer

from activities.equipment.journal import EVERY_CUSTOMER, clear_kill_switch, kill_switch_for, set_kill_switch
from cli.database import with_database

app = typer.Typer(help="Equipment safety: kill switches for cuts and restores.", no_args_is_help=True)
Customer = Annotated[str | None, typer.Option(help="Customer id; without it, the switch covers every customer")]


@app.command("stop")
def stop(
    reason: Annotated[str, typer.Option(help="Why (recorded with who set it)", show_default=False)],
    customer: Customer = None,
) -> None:
    """Turn a kill switch on: no equipment of the customer (or of anyone) is cut or restored."""

    async def work(pool: asyncpg.Pool) -> None:
        await set_kill_switch(pool, customer, reason, getpass.getuser())

    with_database(work)
    typer.echo(f"kill switch on for {customer or EVERY_CUSTOMER}: {reason}")


@app.command("resume")
def resume(customer: Customer = None) -> None:
    """Turn a kill switch off again."""
    cleared = with_database(lambda pool: clear_kill_switch(pool, customer))
    scope = customer or EVERY_CUSTOMER
    typer.echo(f"kill switch off for {scope}" if cleared else f"no kill switch was on for {scope}")


@app.command("status")
def status(
    customer: Annotated[str, typer.Argument(help="Customer id", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the switch as JSON")] = False,
) -> None:
    """Whether cuts and restores are stopped for this customer, and by whom."""
    switch = with_database(lambda pool: kill_switch_for(pool, customer))
    if as_json:
        stopped = None
        if switch:
            stopped = {"scope": switch.scope, "reason": switch.reason, "set_by": switch.set_by, "set_at": switch.set_at.isoformat()}
        typer.echo(json.dumps({"customer_id": customer, "stopped": stopped}))
    else:
        typer.echo(f"stopped ({switch.scope}): {switch.reason}, by {switch.set_by}" if switch else "not stopped")
