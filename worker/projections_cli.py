"""``dunning projections``: rebuild the read models from the event log, and show how far they trail it.

The database comes from ``DATABASE_URL`` (or the embedded server under ``DUNNING_DATA_DIR``);
pending migrations are applied first, as the worker does at start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from activities.ledger import apply_schema, create_pool
from activities.projections import projection_lag, projection_row_counts, rebuild
from worker.settings import Settings

T = TypeVar("T")

app = typer.Typer(
    help="Read models built from the event log: rebuild them, or show how far they trail it.",
    no_args_is_help=True,
)


def _with_pool(work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Apply pending migrations, run ``work`` with a pool; any failure is one line on stderr, exit 1."""

    async def run() -> T:
        database_url = Settings().resolved_database_url()
        await apply_schema(database_url)
        pool = await create_pool(database_url)
        try:
            return await work(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(run())
    except Exception as err:  # noqa: BLE001 - every failure becomes a message, never a traceback
        typer.echo(f"error: {' '.join(str(err).split()) or type(err).__name__}", err=True)
        raise typer.Exit(1) from None


@app.command("rebuild")
def rebuild_command() -> None:
    """Recompute every projection from the first event (readers see the old ones until it is done)."""

    async def work(pool: asyncpg.Pool) -> tuple[int, dict[str, int]]:
        return await rebuild(pool), await projection_row_counts(pool)

    applied, counts = _with_pool(work)
    table = Table("projection", "rows", title=f"Rebuilt from {applied} events")
    for name, rows in counts.items():
        table.add_row(name, str(rows))
    Console().print(table)


@app.command("lag")
def lag_command() -> None:
    """How many events are not projected yet, and the age of the oldest of them."""
    lag = _with_pool(projection_lag)
    typer.echo(f"{lag.events_behind} events behind, {lag.seconds_behind:.1f} s")
