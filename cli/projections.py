"""``dunning projections``: rebuild the read models from the event log, show how far they trail it,
and list or retry the events the projector could not apply (the quarantine).

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

from activities.projections import (
    QuarantinedEvent,
    RetryOutcome,
    projection_lag,
    projection_row_counts,
    quarantined_events,
    rebuild,
    retry_quarantined,
)
from cli.database import with_database

app = typer.Typer(
    help="Read models built from the event log: rebuild them, show how far they trail it, see the quarantine.",
    no_args_is_help=True,
)
quarantine_app = typer.Typer(
    help="Events the projector could not apply: the read models leave them out until a retry applies them.",
    no_args_is_help=True,
)
app.add_typer(quarantine_app, name="quarantine")


@app.command("rebuild")
def rebuild_command() -> None:
    """Recompute every projection from the first event (readers see the old ones until it is done)."""
    console = Console(stderr=True)

    async def work(pool: asyncpg.Pool) -> tuple[int, dict[str, int], int]:
        with console.status("Rebuilding the read models from the event log") as status:

            def progress(step: str) -> None:
                console.log(step)
                status.update(f"Rebuilding the read models: {step}")

            applied = await rebuild(pool, progress)
        return applied, await projection_row_counts(pool), len(await quarantined_events(pool))

    applied, counts, skipped = with_database(work)
    table = Table("projection", "rows", title=f"Rebuilt from {applied} events")
    for name, rows in counts.items():
        table.add_row(name, str(rows))
    Console().print(table)
    if skipped:
        typer.echo(f"Skipped {skipped} quarantined event(s): dunning projections quarantine list")


@app.command("lag")
def lag_command(as_json: Annotated[bool, typer.Option("--json", help="Print the lag as JSON")] = False) -> None:
    """How many events are not projected yet, and the age of the oldest of them."""
    lag = with_database(projection_lag)
    if as_json:
        typer.echo(json.dumps({"events_behind": lag.events_behind, "seconds_behind": lag.seconds_behind}))
    else:
        typer.echo(f"{lag.events_behind} events behind, {lag.seconds_behind:.1f} s")


@quarantine_app.command("list")
def quarantine_list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the events as a JSON array")] = False,
) -> None:
    """The quarantined events, in log order, each with the error that stopped it."""
    events = with_database(quarantined_events)
    if as_json:
        typer.echo(json.dumps([event.model_dump(mode="json") for event in events], indent=2))
        return
    if not events:
        typer.echo("No event is quarantined.")
        return
    Console(width=200).print(_quarantine_table(events, f"{len(events)} quarantined event(s)"))


@quarantine_app.command("retry")
def quarantine_retry_command(
    position: int | None = typer.Option(None, "--position", min=1, help="only the event at this position of the log"),
) -> None:
    """Apply the quarantined events again (after a fix): each invoice concerned is projected anew.

    Exit 1 if an event still cannot be applied (it stays quarantined, one more attempt counted).
    """
    outcome: RetryOutcome = with_database(lambda pool: retry_quarantined(pool, position))
    typer.echo(f"Applied {len(outcome.released)} event(s){_positions(outcome.released)}.")
    if outcome.still_quarantined:
        Console(width=200).print(_quarantine_table(outcome.still_quarantined, "Still quarantined"))
        raise typer.Exit(1)


def _positions(positions: list[int]) -> str:
    return f" (position {', '.join(map(str, positions))})" if positions else ""


def _quarantine_table(events: list[QuarantinedEvent], title: str) -> Table:
    table = Table("position", "invoice", "sequence", "kind", "attempts", "since", "error", title=title)
    for event in events:
        table.add_row(
            str(event.position),
            event.invoice_id,
            str(event.sequence),
            event.kind,
            str(event.attempts),
            f"{event.quarantined_at:%Y-%m-%d %H:%M:%S %Z}",
            event.error,
        )
    return table
