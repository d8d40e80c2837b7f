"""The ``dunning`` command line: run the service, and start and steer invoices.

Every error ends as one line on stderr and exit code 1, never a traceback. Settings come from
the environment (``DUNNING_TEMPORAL_ADDRESS``, ``DUNNING_TASK_QUEUE``, ... see ``client.settings``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta, timezone
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, NamedTuple, NoReturn, TypeVar
from urllib.parse import quote

import asyncpg
import typer
from pydantic import BaseModel, ValidationError
from rich import box
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from temporalio.client import Client

from activities.ledger import create_pool
from activities.projections import invoice_status
from cli.amounts import CliError, check_amount_syntax, to_minor
from cli.customer import app as customer_app
from cli.database import redacted_url, unreachable_database
from cli.equipment import app as equipment_app
from cli.payments import app as payments_app
from cli.projections import app as projections_app
from cli.usage import CONTEXT, OneLineUsageErrors
from client import customers, invoice_import, invoices
from client.invoices import InvoiceError
from client.logs import configure_logging
from client.namespace import NotSetUp
from client.policies import InvoiceRequest, PolicyBook, UnknownPolicy
from client.settings import Settings
from client.temporal import connect
from workflows.bounds import Problems
from workflows.models import (
    DecideLegal,
    DisputeOutcome,
    InvoiceStatus,
    LegalDecision,
    MarkFactored,
    OpenDispute,
    Payment,
    PaymentPlan,
    ResolveDispute,
    format_money,
)

app = typer.Typer(
    name="dunning",
    help="Durable per-invoice dunning on Temporal: run the service, start and steer invoices.",
    cls=OneLineUsageErrors,
    context_settings=CONTEXT,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
invoice_app = typer.Typer(help="Start an invoice and act on it (payments, disputes, plans, decisions).", no_args_is_help=True)
app.add_typer(invoice_app, name="invoice")
codec_app = typer.Typer(help="Payload encryption keys.", no_args_is_help=True)
app.add_typer(codec_app, name="codec")
app.add_typer(projections_app, name="projections")
app.add_typer(equipment_app, name="equipment")
app.add_typer(payments_app, name="payments")
app.add_typer(customer_app, name="customer")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
OUR_PACKAGES = ("activities", "api", "client", "worker", "workflows")
InvoiceId = Annotated[str, typer.Argument(help="Invoice id", show_default=False)]
Note = Annotated[str, typer.Option(help="Note for the record")]


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"dunning {version('dunning')}")
        raise typer.Exit()


@app.callback()
def options(
    log_level: Annotated[
        LogLevel | None,
        typer.Option("--log-level", case_sensitive=False, help="Log records from this level on (DUNNING_LOG_LEVEL)"),
    ] = None,
    show_version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit")
    ] = False,
) -> None:
    """Durable per-invoice dunning on Temporal: run the service, start and steer invoices."""
    if log_level is not None:
        os.environ["DUNNING_LOG_LEVEL"] = log_level.value  # read by Settings, like every other setting


def _configure_logging(settings: Settings | None, service: bool, readable: bool = False) -> None:
    """Once per process: services log INFO as JSON lines, `dunning dev` readable lines, commands WARNING."""
    level = (settings.log_level if settings else None) or ("INFO" if service else "WARNING")
    chosen = settings.log_format if settings else None
    configure_logging(level, chosen or ("text" if readable or not service else "json"))


def guarded(command: Callable[..., None]) -> Callable[..., None]:
    """Run an invoice command so that any failure ends as ``error: <one line>`` on stderr, exit code 1."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            _configure_logging(settings_or_none(), service=False)
            command(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            _fail("interrupted", code=130)
        except Exception as err:  # noqa: BLE001 - every failure becomes a message, never a traceback
            _fail(_describe(err, settings_or_none()))

    return run


# --- running the service ----------------------------------------------------------------------


@app.command()
def dev(
    demo: Annotated[
        bool, typer.Option("--demo", help="Also equipment peers and a demo customer whose ladder climbs a rung a minute")
    ] = False,
) -> None:
    """Run everything on this machine: Postgres, the Temporal dev server (with UI), a mail sink, the worker and the API;
    prints a line for each thing the service does."""
    try:
        from worker.dev_stack import run_dev_stack  # the embedded stack's packages are the `dev` extra
    except ModuleNotFoundError as missing:
        _fail(f"`dunning dev` needs the dev extra ({missing.name} is not installed): pip install 'dunning[dev]'")

    _serve(lambda settings: run_dev_stack(settings, demo_unit=timedelta(minutes=1) if demo else None), keep_lines=True)


@app.command()
def worker() -> None:
    """Run the worker against the configured Temporal server, Postgres and SMTP server."""
    from worker.worker import run_worker

    _serve(lambda settings: run_worker(settings), uses_database_url=True)


@app.command()
def api() -> None:
    """Serve the HTTP API (OpenAPI at /docs) against the configured Temporal server and Postgres."""
    _serve(_run_api, uses_database_url=True)


async def _run_api(settings: Settings) -> None:
    from api.server import serve_api

    await serve_api(settings, asyncio.Event(), on_started=lambda url: typer.echo(f"API on {url} (OpenAPI at {url}/docs)"))


@app.command("codec-server")
def codec_server() -> None:
    """Serve the payload codec for the Temporal UI (needs DUNNING_CODEC_KEYS)."""
    _serve(_run_codec_server)


async def _run_codec_server(settings: Settings) -> None:
    from api.codec_server import serve_codec
    from client.codec import codec_from_settings

    codec = codec_from_settings(settings.codec_keys)
    if codec is None:
        raise CliError("DUNNING_CODEC_KEYS is not set: there is nothing to decode")
    token = settings.codec_token.get_secret_value() if settings.codec_token else None
    await serve_codec(
        settings.codec_host, settings.codec_port, codec, settings.codec_allowed_origins, asyncio.Event(),
        token=token, on_started=lambda url: typer.echo(f"codec server on {url}"),
    )


@app.command()
def migrate() -> None:
    """Apply pending database migrations as the schema's owner (DUNNING_DATABASE_OWNER_URL, else DATABASE_URL)."""
    from cli.database import migrate as apply_migrations

    applied = apply_migrations()
    typer.echo(f"applied {', '.join(applied)}" if applied else "the schema is up to date")


@codec_app.command("new-key")
def codec_new_key(key_id: Annotated[str, typer.Argument(help="Id of the new key, e.g. k2")]) -> None:
    """Print a fresh key entry for DUNNING_CODEC_KEYS (put it first to make it current)."""
    from client.codec import new_key

    typer.echo(f"{key_id}:{new_key()}")


@app.command()
@guarded
def setup(
    retention_days: Annotated[int, typer.Option(help="Workflow retention of a namespace this creates", min=1)] = 90,
) -> None:
    """Prepare a real Temporal cluster: create the namespace if missing and register the search attributes."""
    from client.namespace import set_up_namespace

    async def run(client: Client, settings: Settings) -> None:
        done = await set_up_namespace(client, settings.temporal_namespace, timedelta(days=retention_days))
        for line in done or [f"namespace {settings.temporal_namespace} already set up"]:
            typer.echo(line)

    _with_client(run)


async def _until_terminated(service: Awaitable[None]) -> None:
    """Run ``service``; SIGTERM (``docker stop``, a deploy) or SIGHUP cancels it as Ctrl-C does, so that it
    shuts down in order: a worker finishes its running activities and hands its cached invoices back to
    Temporal at once, instead of leaving their next tasks to wait for a worker that is gone."""
    task = asyncio.current_task()
    assert task is not None  # awaited in a task
    if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
        for stop_signal in (signal.SIGTERM, signal.SIGHUP):
            asyncio.get_running_loop().add_signal_handler(stop_signal, task.cancel)
    await service


def _serve(run: Callable[[Settings], Awaitable[None]], keep_lines: bool = False, uses_database_url: bool = False) -> None:
    """Run a long-lived service until Ctrl-C, SIGTERM or SIGHUP, which end it quietly with exit code 0."""
    settings = None
    try:
        settings = Settings()
        _configure_logging(settings, service=True, readable=keep_lines)
        asyncio.run(_until_terminated(run(settings)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise typer.Exit(0) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        if not uses_database_url:
            _fail(_describe(err, settings), keep_lines=keep_lines)
        if isinstance(err, OSError) and settings:
            _fail(unreachable_database(settings.resolved_database_url(), err))
        database = redacted_url(settings.resolved_database_url()) if settings else "the database"
        _fail(f"cannot use the database at {database}: {_describe(err, settings)}", keep_lines=keep_lines)
    except Exception as err:  # noqa: BLE001 - every failure becomes a message, never a traceback
        _fail(_describe(err, settings or settings_or_none()), keep_lines=keep_lines)


# --- invoices -------------------------------------------------------------------------------


@invoice_app.command("start")
@guarded
def start(
    file: Annotated[Path, typer.Argument(help="Invoice JSON (see examples/invoice.json)", show_default=False)],
    policy: Annotated[
        str | None, typer.Option("--policy", help="A policy of DUNNING_POLICIES_FILE, instead of the file's policy_name")
    ] = None,
) -> None:
    """Validate an invoice file and start its workflow; prints the workflow id and its Temporal UI address.

    Its policy: the one named (``--policy`` or the file's ``policy_name``), the file's inline one, or
    the policies file's default one."""
    settings = Settings()
    book = PolicyBook.load(settings.policies_file)
    request = _load(file, InvoiceRequest, "invoice")
    if policy is not None:
        if request.policy is not None or request.policy_name not in (None, policy):
            raise CliError(f"{file} gives its own policy: leave out --policy, or its policy and policy_name")
        request = request.model_copy(update={"policy_name": policy})
    try:
        invoice = book.invoice(request)
    except UnknownPolicy as err:
        raise CliError(f"invalid invoice in {file}: policy_name: {err}") from None
    except ValidationError as err:
        raise CliError(f"invalid invoice in {file}: {validation_text(err)}") from None
    _within_window(settings.date_window().invoice(invoice), f"invoice in {file}")

    async def run(client: Client, settings: Settings) -> None:
        handle = await invoices.start_invoice(client, settings.task_queue, invoice, policy_name=book.name_of(request))
        gathering = timedelta(seconds=settings.notice_digest_gathering_s)
        await customers.register_invoice(client, settings.task_queue, invoice, gathering)  # it may take the customer's credit
        typer.echo(f"Started invoice {invoice.invoice_id}: workflow {handle.id}")
        typer.echo(ui_url(settings, handle.id))

    _with_client(run)


@invoice_app.command("import")
@guarded
def import_invoices(
    file: Annotated[
        Path, typer.Argument(help="JSON Lines: one invoice a line, with optional opening_fees and last_notice", show_default=False)
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Start invoices another system already chased (docs/invoice-import.md); a re-run starts nothing twice.

    Prints each refused line with its reason and the counts; exit code 1 if a line was refused."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"cannot read {file}: {getattr(err, 'strerror', None) or err}") from None

    async def run(client: Client, settings: Settings) -> None:
        console = Console(stderr=True)
        with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task(f"Importing {file.name}", total=len(lines))
            summary = await invoice_import.import_invoices(
                client,
                settings.task_queue,
                lines,
                settings.date_window(),
                PolicyBook.load(settings.policies_file),
                gathering=timedelta(seconds=settings.notice_digest_gathering_s),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        if json_output:
            typer.echo(summary.model_dump_json(indent=2))
        else:
            for line in summary.lines:
                if line.outcome == invoice_import.Outcome.REFUSED:
                    typer.echo(f"line {line.line}{f' ({line.invoice_id})' if line.invoice_id else ''}: refused: {line.reason}")
            typer.echo(f"{summary.started} started, {summary.already_there} already there, {summary.refused} refused")
        if summary.refused:
            raise typer.Exit(1)

    _with_client(run)


@invoice_app.command("pay")
@guarded
def pay(
    invoice_id: Annotated[str, typer.Argument(help="Invoice id, e.g. INV-2026-0042", show_default=False)],
    amount: Annotated[str, typer.Option(help="Amount in major units, e.g. 125.50", show_default=False)],
    payment_id: Annotated[str, typer.Option(help="Unique id of the payment (bank reference)", show_default=False)],
    signal: Annotated[bool, typer.Option("--signal", help="Send fire-and-forget instead of waiting for the new balance")] = False,
    received_at: Annotated[
        str | None,
        typer.Option(help="When the money arrived (its value date), ISO 8601, e.g. 2026-12-03T10:00:00Z; default now"),
    ] = None,
) -> None:
    """Record a payment received from the client."""
    check_amount_syntax(amount, "--amount")

    async def run(client: Client, settings: Settings) -> None:
        currency = await _currency_of(client, settings, invoice_id)
        minor = to_minor(amount, currency, "--amount")
        payment = _model(
            Payment, "payment", payment_id=payment_id, amount_minor=minor, currency=currency, received_at=received_at
        )
        _within_window(settings.date_window().payment(payment), "payment")
        paid = format_money(minor, currency)
        if signal:
            await invoices.send_payment_signal(client, invoice_id, payment)
            typer.echo(
                f"Payment {payment_id} of {paid} sent to invoice {invoice_id}; it is applied asynchronously "
                f"(see `dunning invoice status {invoice_id}`)"
            )
            return
        balance = await invoices.record_payment(client, invoice_id, payment)
        typer.echo(f"Payment {payment_id} of {paid} recorded on invoice {invoice_id}: balance {format_money(balance, currency)}")

    _with_client(run)


@invoice_app.command("status")
@guarded
def status(
    invoice_id: InvoiceId,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON")] = False,
    live: Annotated[bool, typer.Option("--live", help="Ask the workflow now instead of reading its last snapshot")] = False,
) -> None:
    """Show state, amounts, next action and what happened so far (as the workflow last wrote them)."""

    async def run(client: Client, settings: Settings) -> None:
        current = None if live else await _projected_status(settings, invoice_id)
        if current is None:  # asked to, or not projected yet
            current = await invoices.status(client, invoice_id)
        if as_json:
            typer.echo(current.model_dump_json(indent=2))
        else:
            print_status(current, Console())

    _with_client(run)


@invoice_app.command("dispute")
@guarded
def dispute(
    invoice_id: InvoiceId,
    reason: Annotated[str, typer.Option(help="Why the client contests the invoice", show_default=False)],
) -> None:
    """Open a dispute: escalation pauses until it is resolved."""
    request = _model(OpenDispute, "dispute", reason=reason)
    _steer(invoice_id, invoices.open_dispute, request, f"Dispute opened on invoice {invoice_id}: escalation paused")


@invoice_app.command("resolve")
@guarded
def resolve(
    invoice_id: InvoiceId,
    outcome: Annotated[DisputeOutcome, typer.Option(help="What was decided about the dispute", show_default=False)],
    credit: Annotated[str | None, typer.Option(help="Credit granted when upheld, in major units, e.g. 10.00")] = None,
    note: Note = "",
) -> None:
    """Resolve the open dispute; escalation resumes, shifted by the pause."""
    chosen = outcome
    credit_given = _Amount.given(credit, "--credit", "credit_minor", allow_zero=True)
    if credit_given and chosen == DisputeOutcome.REJECTED:
        raise CliError("--credit goes only with --outcome upheld")
    request = functools.partial(_model, ResolveDispute, "resolution", outcome=chosen, note=note)
    _steer(invoice_id, invoices.resolve_dispute, request, f"Dispute on invoice {invoice_id} {chosen.value}", credit_given)


@invoice_app.command("plan")
@guarded
def plan(
    invoice_id: InvoiceId,
    file: Annotated[Path, typer.Argument(help="Payment plan JSON (see examples/payment-plan.json)", show_default=False)],
) -> None:
    """Agree a payment plan: instalments (summing to the balance) replace escalation."""
    request = _load(file, PaymentPlan, "payment plan")
    _within_window(Settings().date_window().plan(request), f"payment plan in {file}")
    first = request.instalments[0]

    def said(current: InvoiceStatus) -> str:
        return (
            f"Payment plan agreed on invoice {invoice_id}: {len(request.instalments)} instalment(s), first "
            f"{format_money(first.amount_minor, current.currency)} due {first.due_date}"
        )

    _steer(invoice_id, invoices.agree_plan, request, said)


@invoice_app.command("resend")
@guarded
def resend(invoice_id: InvoiceId) -> None:
    """Re-send the current invoice (with fees) now, without moving the escalation clock."""

    async def run(client: Client, settings: Settings) -> None:
        await invoices.resend(client, invoice_id)
        typer.echo(f"Invoice {invoice_id} re-sent")

    _with_client(run)


@invoice_app.command("decide")
@guarded
def decide(
    invoice_id: InvoiceId,
    decision: Annotated[LegalDecision, typer.Option(help="What legal review decided", show_default=False)],
    amount: Annotated[str | None, typer.Option(help="Settlement amount in major units (with settle only)")] = None,
    note: Note = "",
) -> None:
    """Decide at legal review: sue, settle for an amount, write off, or back to the agency."""
    chosen = decision
    if (chosen == LegalDecision.SETTLE) != (amount is not None):
        raise CliError("--amount is required with --decision settle, and only with it")
    settlement = _Amount.given(amount, "--amount", "settle_amount_minor")
    request = functools.partial(_model, DecideLegal, "decision", decision=chosen, note=note)
    _steer(invoice_id, invoices.decide_legal, request, f"Legal decision on invoice {invoice_id}: {chosen.value}", settlement)


@invoice_app.command("factored")
@guarded
def factored(
    invoice_id: InvoiceId,
    factor: Annotated[str, typer.Option(help="Id of the factor that bought the receivable", show_default=False)],
    advance: Annotated[str, typer.Option(help="What the factor paid, in major units", show_default=False)],
) -> None:
    """Mark the receivable as sold to a factor: the client-facing escalation ends."""
    paid = _Amount.given(advance, "--advance", "advance_minor", allow_zero=True)
    request = functools.partial(_model, MarkFactored, "factoring", factor=factor)
    _steer(invoice_id, invoices.mark_factored, request, f"Invoice {invoice_id} sold to {factor}", paid)


class _Amount(NamedTuple):
    """An amount option as typed (major units), for the request's ``field`` in the invoice's own minor units."""

    text: str
    option: str
    field: str
    allow_zero: bool = False

    @classmethod
    def given(cls, text: str | None, option: str, field: str, allow_zero: bool = False) -> _Amount | None:
        """The option if it was given, its syntax checked at once (before connecting); None if not."""
        if text is None:
            return None
        check_amount_syntax(text, option, allow_zero)
        return cls(text, option, field, allow_zero)


def _steer(
    invoice_id: str,
    update: Callable[[Client, str, M], Awaitable[InvoiceStatus]],
    request: M | Callable[..., M],
    said: str | Callable[[InvoiceStatus], str],
    amount: _Amount | None = None,
) -> None:
    """Send ``request`` to the invoice by ``update`` (one of ``client.invoices``) and print what was ``said`` with
    the invoice's new state and balance. A ``request`` still to build is called once connected, with the
    ``amount`` (if given) in minor units of the invoice's currency."""

    async def run(client: Client, settings: Settings) -> None:
        if isinstance(request, BaseModel):
            built = request
        elif amount is None:
            built = request()
        else:
            currency = await _currency_of(client, settings, invoice_id)
            minor = to_minor(amount.text, currency, amount.option, amount.allow_zero)
            built = request(**{amount.field: minor})
        current = await update(client, invoice_id, built)
        typer.echo(f"{said if isinstance(said, str) else said(current)} ({_state_line(current)})")

    _with_client(run)


# --- output ---------------------------------------------------------------------------------


def ui_url(settings: Settings, workflow_id: str) -> str:
    """The workflow's page in the Temporal UI."""
    namespace = quote(settings.temporal_namespace, safe="")
    return f"http://localhost:{settings.temporal_ui_port}/namespaces/{namespace}/workflows/{quote(workflow_id, safe='')}"


def print_status(current: InvoiceStatus, console: Console) -> None:
    """The status as two tables: the figures, then the story."""

    def money(minor: int) -> str:
        return format_money(minor, current.currency)

    figures = Table(title=f"Invoice {current.invoice_id} · {current.customer_id}", show_header=False, box=box.SIMPLE)
    figures.add_column(style="bold")
    figures.add_column()
    figures.add_row("State", current.state.value)
    figures.add_row("Amount", money(current.amount_minor))
    figures.add_row("Fees", money(current.fees_minor))
    if current.interest_minor or current.interest_accruing_minor:
        figures.add_row("Interest", money(current.interest_minor))
        figures.add_row("Interest accruing (not yet due)", money(current.interest_accruing_minor))
    figures.add_row("Paid", money(current.paid_minor))
    if current.credited_minor:
        figures.add_row("Credited", money(current.credited_minor))
    if current.discount_minor:
        figures.add_row("Discount", money(current.discount_minor))
    if current.written_off_minor:
        figures.add_row("Written off", money(current.written_off_minor))
    figures.add_row("Balance", f"[bold]{money(current.balance_minor)}[/bold]")
    if current.overpaid_minor:
        figures.add_row("Overpaid", money(current.overpaid_minor))
    if current.discount_available_minor:
        figures.add_row("Discount if paid now", money(current.discount_available_minor))
    figures.add_row("Days overdue", str(current.days_overdue))
    if current.rejected_payments:
        figures.add_row("Rejected payments", str(current.rejected_payments))
    if current.next_action:
        figures.add_row("Next action", f"{current.next_action.what.replace('_', ' ')} at {_utc(current.next_action.at)}")
    else:
        figures.add_row("Next action", "none scheduled")
    if current.legal_summary:
        figures.add_row("Legal review", str(current.legal_summary.get("summary", "")))
    console.print(figures)

    story = Table("When (UTC)", "What", title="Actions", box=box.SIMPLE)
    for action in current.actions:
        story.add_row(_utc(action.at), action.what)
    console.print(story)


def _utc(moment: Any) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _state_line(current: InvoiceStatus) -> str:
    return f"state {current.state.value}, balance {format_money(current.balance_minor, current.currency)}"


# --- input ----------------------------------------------------------------------------------


async def _currency_of(client: Client, settings: Settings, invoice_id: str) -> str:
    """The invoice's currency, which never changes: read from the read models, so routine commands stay off the
    workflow's query path; from the workflow while the invoice is not projected yet, or where this machine
    reaches no read models (a payment needs only Temporal)."""
    try:
        projected = await _projected_status(settings, invoice_id)
    except (OSError, asyncpg.PostgresError):
        projected = None
    return projected.currency if projected else (await invoices.status(client, invoice_id)).currency


def _load(file: Path, model: type[M], what: str) -> M:
    """Read and validate a JSON file as ``model``."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"cannot read {file}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"cannot read {file}: it is a directory") from None
    except UnicodeDecodeError:
        raise CliError(f"cannot read {file}: not UTF-8 text") from None
    except OSError as err:
        raise CliError(f"cannot read {file}: {err.strerror or err}") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        raise CliError(f"{file} is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
    try:
        return model.model_validate_json(text)
    except ValidationError as err:
        raise CliError(f"invalid {what} in {file}: {validation_text(err)}") from None


def _model(model: type[M], what: str, **fields: Any) -> M:
    try:
        return model(**fields)
    except ValidationError as err:
        raise CliError(f"invalid {what}: {validation_text(err)}") from None


def _within_window(problems: Problems, what: str) -> None:
    """Refuse dates outside today's window (``DUNNING_DATE_WINDOW_DAYS``), naming each field."""
    if problems:
        text = "; ".join(f"{'.'.join(map(str, path))}: {message}" for path, message in problems)
        raise CliError(f"invalid {what}: {text}")


def validation_text(err: ValidationError) -> str:
    """Every problem of a validation error on one line: ``field.path: message; ...``."""
    parts = []
    for problem in err.errors(include_url=False):
        where = ".".join(str(p) for p in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


# --- running a command, and its errors -------------------------------------------------------


async def _projected_status(settings: Settings, invoice_id: str) -> InvoiceStatus | None:
    """The invoice's status from the read models (None if not projected yet)."""
    pool = await create_pool(settings.resolved_database_url(), max_size=1)
    try:
        return await invoice_status(pool, invoice_id)
    finally:
        await pool.close()


def _with_client(run: Callable[[Client, Settings], Awaitable[None]]) -> None:
    """Connect to Temporal with the configured settings and run."""
    settings = Settings()

    async def main() -> None:
        await run(await connect(settings), settings)

    asyncio.run(main())


def settings_or_none() -> Settings | None:
    try:
        return Settings()
    except ValidationError:
        return None


def _describe(err: BaseException, settings: Settings | None) -> str:
    """A message for the user, for anything a command can fail with."""
    if isinstance(err, (CliError, InvoiceError, NotSetUp)):
        return str(err)
    if isinstance(err, ValidationError):
        if err.title == Settings.__name__:
            return f"invalid settings (environment variables DUNNING_*): {validation_text(err)}"
        return f"invalid {err.title}: {validation_text(err)}"
    text = str(err)
    if isinstance(err, RuntimeError) and text.startswith("Failed client connect"):
        address = settings.temporal_address if settings else "the configured address"
        reason = re.search(r'message: "([^"]+)"', text)
        detail = reason.group(1).lower() if reason else text.removeprefix("Failed client connect: ")
        return (
            f"cannot connect to Temporal at {address}: {detail}; is the stack running? "
            "Start it with `make run` (or `dunning dev`), or set DUNNING_TEMPORAL_ADDRESS"
        )
    if isinstance(err, (OSError, asyncpg.CannotConnectNowError)) and settings is not None:
        return unreachable_database(settings.resolved_database_url(), err)
    if isinstance(err, OSError):
        return f"{err.strerror or text or type(err).__name__}"
    if text and type(err).__module__.split(".")[0] in OUR_PACKAGES:  # our own errors are written for people
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _fail(message: str, code: int = 1, keep_lines: bool = False) -> NoReturn:
    """Print ``error: message`` on stderr (one line unless told otherwise) and exit with ``code``."""
    if not keep_lines:
        message = " ".join(message.split())
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def main() -> None:
    """Entry point for ``python -m cli.main`` and the ``dunning`` script.

    Ends the process without interpreter finalisation: the Temporal SDK's native threads may
    still be winding down then and can abort the process (SIGABRT/SIGSEGV after the command has
    finished), which would turn a clean exit code into a crash.
    """
    try:
        app()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
