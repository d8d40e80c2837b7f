"""``dunning projections``: rebuild the read models from the event log, and show how far they trail it.

The database comes from ``DATABASE_URL`` (or the embedded server under ``DUNNING_DATA_DIR``);
pending migrations are applied first, as the worker does at start.
"""

from __future__ import annotations

import json
from typing import Annotated

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from activities.projections import projection_lag, projection_row_counts, rebuild
from cli.database import with_database

app = typer.Typer(
    help="Read models built from the event log: rebuild them, or show how far they trail it.",
    no_args_is_help=True,
)


@app.command("rebuild")
def rebuild_command() -> None:
    """Recompute every projection from the first event (readers see the old ones until it is done)."""
    console = Console(stderr=True)

    async def work(pool: asyncpg.Pool) -> tuple[int, dict[str, int]]:
        with console.status("Rebuilding the read models from the event log") as status:

            def progress(step: str) -> None:
                console.log(step)
                status.update(f"Rebuilding the read models: {step}")

            applied = await rebuild(pool, progress)
        return applied, await projection_row_counts(pool)

    applied, counts = with_database(work)
    table = Table("projection", "rows", title=f"Rebuilt from {applied} events")
    for name, rows in counts.items():
        table.add_row(name, str(rows))
    Console().print(table)


@app.command("lag")
def lag_command(as_json: Annotated[bool, typer.Option("--json", help="Print the lag as JSON")] = False) -> None:
    """How many events are not projected yet, and the age of the oldest of them."""
    lag = with_database(projection_lag)
    if as_json:
        typer.echo(json.dumps({"events_behind": lag.events_behind, "seconds_behind": lag.seconds_behind}))
    else:
        typer.echo(f"{lag.events_behind} events behind, {lag.seconds_behind:.1f} s")
