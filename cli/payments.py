"""``dunning payments import``: record the payments of a bank statement (camt.053 / camt.054).

Talks to Temporal and the database directly, as the other commands do: each booked credit is matched
and paid to the customer of its invoice (that invoice first, the rest to the customer's other invoices or
its credit), the rest kept unapplied; importing the same file again records nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from activities.ledger import apply_schema, create_pool
from api.camt import StatementError
from api.problems import Problem
from api.statement_import import ImportSummary, LineResult, LineStatus, import_statement
from cli.database import Connections
from client.settings import Settings
from client.temporal import connect
from workflows.models import format_money

app = typer.Typer(
    help="Payments in the formats banks send: import a camt.053 statement or camt.054 notification.",
    no_args_is_help=True,
)


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="The statement: ISO 20022 camt.053 or camt.054 XML", show_default=False)],
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Record the booked credits of a bank statement; print matched, unmatched and duplicate lines."""
    try:
        document = file.read_bytes()
    except OSError as err:
        _fail(f"cannot read {file}: {err.strerror or err}")
    try:
        summary = asyncio.run(_import(document))
    except StatementError as err:
        _fail(f"{file} refused, nothing imported: {err}")
    except Problem as problem:
        _fail(problem.detail)
    except Exception as err:  # noqa: BLE001 - every failure becomes a message, never a traceback
        _fail(" ".join(str(err).split()) or type(err).__name__)
    if json_output:
        typer.echo(summary.model_dump_json(indent=2))
    else:
        _print(summary)


async def _import(document: bytes) -> ImportSummary:
    settings = Settings()
    await apply_schema(settings.resolved_owner_database_url())
    pool = await create_pool(settings.resolved_database_url())
    try:
        console = Console(stderr=True)
        with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("Importing the statement's lines", total=None)
            return await import_statement(
                Connections(await connect(settings), pool, settings),
                document,
                lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        await pool.close()


def _print(summary: ImportSummary) -> None:
    title = (
        f"{summary.document} {summary.message_id}: {summary.matched} matched, {summary.unmatched} unmatched,"
        f" {summary.duplicate} duplicate, {summary.ignored} ignored"
    )
    table = Table("line", "entry", "amount", "value date", "status", "invoice / reason", title=title)
    for line in summary.lines:
        detail = _matched(line) if line.status == LineStatus.MATCHED else line.reason or ""
        value_date = line.value_date.isoformat() if line.value_date else ""
        table.add_row(
            str(line.line),
            line.entry_ref or "",
            format_money(line.amount_minor, line.currency),
            value_date,
            line.status.value,
            detail,
        )
    Console(width=160).print(table)
    if summary.unmatched:
        typer.echo("Unmatched payments are kept: see GET /payments/unapplied and apply each to its invoice.")


def _matched(line: LineResult) -> str:
    """``INV-1 (by creditor reference)``, and where a customer's cash application split it, the split."""
    detail = f"{line.invoice_id or f'customer {line.customer_id}'} (by {line.matched_by})"
    if line.customer_id is None:
        return detail
    split = [f"{format_money(amount, line.currency)} to {invoice_id}" for invoice_id, amount in line.allocations.items()]
    if line.credit_minor:
        split.append(f"{format_money(line.credit_minor, line.currency)} credit")
    return f"{detail}: {', '.join(split) or 'nothing'}"


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
