"""The ``dunning`` CLI against the Temporal dev server, with a recording worker on a fresh task queue.

The commands run through ``typer.testing.CliRunner`` in a worker thread: each command calls
``asyncio.run`` itself, which cannot happen on the test's own (running) event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from bench.recording import Recorder, with_pydantic
from cli.amounts import to_minor
from client.invoices import invoice_details, invoice_summary
from tests.cli_helpers import EXAMPLES, dunning, example_invoice, failed, local_today, succeeded, usage_error
from tests.cli_helpers import cli_env as cli_environment
from tests.conftest import free_port
from tests.harness import eventually
from workflows import search_attributes as sa
from workflows.invoice import InvoiceWorkflow
from workflows.models import Invoice, InvoiceState, InvoiceStatus, PaymentPlan, invoice_workflow_id

# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def client(dev_env: WorkflowEnvironment) -> Client:
    return with_pydantic(dev_env.client)


@pytest.fixture
def cli_env(dev_env: WorkflowEnvironment, queue: str, db_url: str) -> dict[str, str]:
    """Settings for the CLI: the dev server, the recording worker's queue, and a database (status reads it first)."""
    return {**cli_environment(dev_env, queue), "DUNNING_DATABASE_URL": db_url}


async def started(env: dict[str, str], tmp_path: Path, recorder: Recorder, **changes: Any) -> dict[str, Any]:
    path, data = example_invoice(tmp_path, **changes)
    succeeded(await dunning(env, "invoice", "start", str(path)))
    await eventually(lambda: "invoice_issued" in recorder.notice_kinds(data["invoice_id"]))
    return data


async def status_of(env: dict[str, str], invoice_id: str) -> InvoiceStatus:
    return InvoiceStatus.model_validate_json(succeeded(await dunning(env, "invoice", "status", invoice_id, "--json")))


def due_now_policy(*stages: tuple[str, str], time_zone: str = "Europe/Bucharest") -> dict[str, Any]:
    """Fields making an invoice due a minute ago (local), with ``stages`` as (action, ISO offset), sent at
    any hour (the default sending window would hold a stage due in the evening until the next morning)."""
    moment = datetime.now(ZoneInfo(time_zone)) - timedelta(minutes=1)
    return {
        "issue_date": moment.date().isoformat(),
        "due_date": moment.date().isoformat(),
        "policy": {
            "stages": [{"action": action, "offset": offset} for action, offset in stages],
            "due_time": moment.time().replace(microsecond=0).isoformat(),
            "sending_window": None,
        },
    }


# --- the examples --------------------------------------------------------------------------


def test_examples_validate():
    invoice = Invoice.model_validate_json((EXAMPLES / "invoice.json").read_text())
    assert (invoice.currency, invoice.time_zone, invoice.language) == ("RON", "Europe/Bucharest", "ro")
    assert invoice.terms.late_fee_percent_per_month > 0 and invoice.terms.fixed_late_fee_minor > 0
    assert invoice.terms.remote_disconnect_authorized and len(invoice.terms.equipment_ids) == 2
    assert invoice.terms.early_payment_discount is not None
    assert invoice.terms.early_payment_discount.within_days == 7
    plan = PaymentPlan.model_validate_json((EXAMPLES / "payment-plan.json").read_text())
    # the balance when the README's quick tour agrees the plan: paid 500.00 and 100.00, credited 50.00
    assert plan.total_minor == invoice.amount_minor - 65_000


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("125.50", "RON", 12550), ("125.5", "EUR", 12550), ("7", "EUR", 700), ("1500", "JPY", 1500), ("10.000", "EUR", 1000)],
)
def test_amounts_convert_to_minor_units(amount, currency, minor):
    assert to_minor(amount, currency) == minor


# --- happy paths ---------------------------------------------------------------------------


async def test_start_names_a_policy_of_the_policies_file(cli_env, client, recorder, tmp_path):
    env = {**cli_env, "DUNNING_POLICIES_FILE": str(EXAMPLES / "policies.toml")}
    by_option, option_data = example_invoice(tmp_path, policy=None)
    in_file, file_data = example_invoice(tmp_path, policy=None, policy_name="standard")
    succeeded(await dunning(env, "invoice", "start", str(by_option), "--policy", "key-account"))
    succeeded(await dunning(env, "invoice", "start", str(in_file)))
    for data, shown in ((option_data, "key-account: courtesy -3d, reminder +3d"), (file_data, "standard: reminder +1d")):
        await eventually(lambda data=data: "invoice_issued" in recorder.notice_kinds(data["invoice_id"]))
        description = await client.get_workflow_handle(invoice_workflow_id(data["invoice_id"])).describe()
        assert f"**Policy:** {shown}" in (await description.static_details() or "")


async def test_start_pay_and_status(cli_env, client, recorder, tmp_path):
    path, data = example_invoice(tmp_path)
    invoice_id = data["invoice_id"]
    out = succeeded(await dunning(cli_env, "invoice", "start", str(path)))
    workflow_id = invoice_workflow_id(invoice_id)
    assert workflow_id in out
    assert f"http://localhost:8233/namespaces/{client.namespace}/workflows/{workflow_id}" in out.splitlines()

    # the start carries the summary, the details and the initial search attributes
    description = await client.get_workflow_handle(workflow_id).describe()
    invoice = Invoice.model_validate(data)
    assert await description.static_summary() == invoice_summary(invoice)
    assert f"Invoice {invoice_id} · RO-40512378 · 12500.00 RON due {invoice.due_date}" == invoice_summary(invoice)
    details = await description.static_details()
    assert details == invoice_details(invoice)
    assert "Andreea Ionescu" in details and "1.5 % per started month" in details and "bmc-srv-cluj-01" in details
    attributes = description.typed_search_attributes
    assert attributes.get(sa.CUSTOMER_ID) == "RO-40512378"
    assert attributes.get(sa.CURRENCY) == "RON"
    assert attributes.get(sa.DUE_DATE) == datetime(
        invoice.due_date.year, invoice.due_date.month, invoice.due_date.day, 9, tzinfo=ZoneInfo("Europe/Bucharest")
    )
    assert attributes.get(sa.INVOICE_STATE) == "issued" and attributes.get(sa.REJECTED_PAYMENTS) == 0
    await eventually(lambda: "invoice_issued" in recorder.notice_kinds(invoice_id))
    # started with all of them, the issued invoice has upserted none (only the SDK's TemporalChangeVersion)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    upserted = {
        name
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        for name in event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    }
    assert not upserted & {key.name for key in sa.INVOICE}, upserted

    # the status, as a table and as JSON
    table = succeeded(await dunning(cli_env, "invoice", "status", invoice_id))
    for text in ("State", "issued", "12500.00 RON", "Balance", "Next action", "Invoice issued for 12500.00 RON"):
        assert text in table, table
    assert "250.00 RON" in table  # the early-payment discount on offer

    # a payment in major units, through the update
    out = succeeded(await dunning(cli_env, "invoice", "pay", invoice_id, "--amount", "125.50", "--payment-id", "P1"))
    assert out.strip() == f"Payment P1 of 125.50 RON recorded on invoice {invoice_id}: balance 12374.50 RON"
    # the same payment again is idempotent
    out = succeeded(await dunning(cli_env, "invoice", "pay", invoice_id, "--amount", "125.50", "--payment-id", "P1"))
    assert "balance 12374.50 RON" in out

    # a payment through the signal lands asynchronously
    out = succeeded(await dunning(cli_env, "invoice", "pay", invoice_id, "--amount", "1000", "--payment-id", "P2", "--signal"))
    assert "sent to invoice" in out
    await eventually(lambda: _paid(cli_env, invoice_id, 112550))
    current = await status_of(cli_env, invoice_id)
    assert (current.state, current.balance_minor) == (InvoiceState.ISSUED, 1_137_450)
    assert [a.what for a in current.actions][-2:] == ["Payment P1: 125.50 RON", "Payment P2: 1000.00 RON"]
    await eventually(lambda: recorder.notice_kinds(invoice_id) == ["invoice_issued", "receipt", "receipt"])

    # a signal the invoice cannot accept is recorded as rejected, never lost
    succeeded(await dunning(cli_env, "invoice", "pay", invoice_id, "--amount", "5", "--payment-id", "P2", "--signal"))
    await eventually(lambda: _rejected(cli_env, invoice_id, 1))
    assert "Rejected payments" in succeeded(await dunning(cli_env, "invoice", "status", invoice_id))

    # paying the rest (less the early-payment discount) closes the invoice
    rest = current.balance_minor - current.discount_available_minor
    out = succeeded(await dunning(cli_env, "invoice", "pay", invoice_id, "--amount", f"{rest / 100:.2f}", "--payment-id", "P3"))
    assert out.strip().endswith("balance 0.00 RON")
    outcome = await client.get_workflow_handle_for(InvoiceWorkflow.run, invoice_workflow_id(invoice_id)).result()
    assert outcome.state == InvoiceState.PAID
    # the closed invoice still answers its status, and refuses further requests
    assert (await status_of(cli_env, invoice_id)).state == InvoiceState.PAID
    failed(await dunning(cli_env, "invoice", "pay", invoice_id, "--amount", "1", "--payment-id", "P4"), f"invoice {invoice_id} is closed")
    failed(await dunning(cli_env, "invoice", "resend", invoice_id), "is closed")
    # and its id can never be used again
    failed(await dunning(cli_env, "invoice", "start", str(path)), f"invoice {invoice_id} already exists")


async def _paid(env: dict[str, str], invoice_id: str, minor: int) -> bool:
    return (await status_of(env, invoice_id)).paid_minor == minor


async def _rejected(env: dict[str, str], invoice_id: str, count: int) -> bool:
    return (await status_of(env, invoice_id)).rejected_payments == count


async def test_pay_with_the_date_the_money_arrived(cli_env, recorder, tmp_path):
    """Issue 20: the value date goes with the payment; one in the future is refused before it reaches the workflow."""
    invoice_id = (await started(cli_env, tmp_path, recorder))["invoice_id"]
    tomorrow = (datetime.now(ZoneInfo("UTC")) + timedelta(days=1)).isoformat()
    pay = ("invoice", "pay", invoice_id, "--amount", "10", "--payment-id", "P1", "--received-at")
    failed(await dunning(cli_env, *pay, tomorrow), "invalid payment: received_at: must not be in the future")
    failed(await dunning(cli_env, *pay, "last tuesday"), "invalid payment: received_at")
    an_hour_ago = (datetime.now(ZoneInfo("UTC")) - timedelta(hours=1)).replace(microsecond=0)
    assert "balance 12490.00 RON" in succeeded(await dunning(cli_env, *pay, an_hour_ago.isoformat()))
    await eventually(lambda: recorder.events_of(invoice_id, "payment_recorded"))
    [recorded] = recorder.events_of(invoice_id, "payment_recorded")
    assert datetime.fromisoformat(recorded.data["received_at"]) == an_hour_ago


async def test_dispute_resolve_and_resend(cli_env, recorder, tmp_path):
    invoice_id = (await started(cli_env, tmp_path, recorder))["invoice_id"]

    out = succeeded(await dunning(cli_env, "invoice", "dispute", invoice_id, "--reason", "Lucrarea nu a fost recepționată"))
    assert "state disputed" in out
    current = await status_of(cli_env, invoice_id)
    assert current.disputed and current.state == InvoiceState.DISPUTED and current.next_action is None
    failed(await dunning(cli_env, "invoice", "dispute", invoice_id, "--reason", "again"), "a dispute is already open on this invoice")
    # a credit larger than the balance is refused by the workflow; one with too many decimals by the CLI
    failed(
        await dunning(cli_env, "invoice", "resolve", invoice_id, "--outcome", "upheld", "--credit", "20000"),
        "credit 20000.00 RON exceeds the balance 12500.00 RON",
    )
    failed(
        await dunning(cli_env, "invoice", "resolve", invoice_id, "--outcome", "upheld", "--credit", "1.001"),
        "--credit 1.001 has more decimals than RON allows (2 decimals)",
    )
    usage_error(await dunning(cli_env, "invoice", "resolve", invoice_id, "--outcome", "maybe"), "'maybe' is not one of 'upheld', 'rejected'")

    out = succeeded(await dunning(cli_env, "invoice", "resolve", invoice_id, "--outcome", "upheld", "--credit", "10.00"))
    assert "upheld" in out and "balance 12490.00 RON" in out
    current = await status_of(cli_env, invoice_id)
    assert (current.state, current.credited_minor, current.disputed) == (InvoiceState.ISSUED, 1000, False)
    failed(await dunning(cli_env, "invoice", "resolve", invoice_id, "--outcome", "rejected"), "no dispute is open on this invoice")

    assert succeeded(await dunning(cli_env, "invoice", "resend", invoice_id)).strip() == f"Invoice {invoice_id} re-sent"
    await eventually(lambda: recorder.notice_kinds(invoice_id).count("invoice_issued") == 2)
    resent = [n for n in recorder.notices if n.invoice_id == invoice_id and n.detail == "resend"]
    assert len(resent) == 1 and resent[0].balance_minor == 1_249_000
    assert recorder.notice_kinds(invoice_id) == ["invoice_issued", "dispute_opened", "dispute_resolved", "invoice_issued"]


async def test_payment_plan(cli_env, recorder, tmp_path):
    invoice_id = (await started(cli_env, tmp_path, recorder))["invoice_id"]
    plan = json.loads((EXAMPLES / "payment-plan.json").read_text())
    today = local_today()
    for month, (instalment, amount) in enumerate(zip(plan["instalments"], (416_700, 416_700, 416_600), strict=True), 1):
        instalment.update(due_date=(today + timedelta(days=30 * month)).isoformat(), amount_minor=amount)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))

    out = succeeded(await dunning(cli_env, "invoice", "plan", invoice_id, str(path)))
    assert "3 instalment(s), first 4167.00 RON" in out and "state payment_plan" in out
    current = await status_of(cli_env, invoice_id)
    assert current.on_payment_plan and current.next_action is not None
    # "(next sending window)" follows when the check falls on a weekend or a holiday (Epiphany, 6 January)
    assert current.next_action.what.startswith("instalment 1 check")
    failed(await dunning(cli_env, "invoice", "plan", invoice_id, str(path)), "already has an open dispute or payment plan")

    plan["instalments"][0]["amount_minor"] = 1
    path.write_text(json.dumps(plan))
    failed(await dunning(cli_env, "invoice", "plan", invoice_id, str(path)))  # refused by the validator
    plan["instalments"] = []
    path.write_text(json.dumps(plan))
    failed(await dunning(cli_env, "invoice", "plan", invoice_id, str(path)), f"invalid payment plan in {path}: instalments:")


async def test_legal_decisions(cli_env, recorder, tmp_path):
    path, data = example_invoice(tmp_path, **due_now_policy(("legal_review", "PT0S")))
    succeeded(await dunning(cli_env, "invoice", "start", str(path)))  # due at the start: its notice tells the invoice
    invoice_id = data["invoice_id"]
    await eventually(lambda: "legal_review" in recorder.notice_kinds(invoice_id))
    table = succeeded(await dunning(cli_env, "invoice", "status", invoice_id))
    assert "legal_review" in table and "Legal review" in table

    usage_error(
        await dunning(cli_env, "invoice", "decide", invoice_id, "--decision", "pray"),
        "'pray' is not one of 'sue', 'settle', 'write_off', 'agency'",
    )
    failed(await dunning(cli_env, "invoice", "decide", invoice_id, "--decision", "settle"), "--amount is required with --decision settle")
    failed(await dunning(cli_env, "invoice", "decide", invoice_id, "--decision", "sue", "--amount", "5"), "--amount is required with --decision settle")
    failed(
        await dunning(cli_env, "invoice", "decide", invoice_id, "--decision", "settle", "--amount", "99999"),
        "settlement 99999.00 RON exceeds the balance 12500.00 RON",
    )

    out = succeeded(await dunning(cli_env, "invoice", "decide", invoice_id, "--decision", "settle", "--amount", "10000.00"))
    assert "settle" in out and "state legal_action" in out and "balance 10000.00 RON" in out
    failed(await dunning(cli_env, "invoice", "decide", invoice_id, "--decision", "agency"), "legal action is under way: only settle or write off")
    out = succeeded(await dunning(cli_env, "invoice", "decide", invoice_id, "--decision", "write_off", "--note", "client insolvent"))
    assert "state written_off" in out
    assert (await status_of(cli_env, invoice_id)).state == InvoiceState.WRITTEN_OFF
    failed(await dunning(cli_env, "invoice", "decide", invoice_id, "--decision", "write_off"), "is closed")


async def test_decide_without_legal_review_is_refused(cli_env, recorder, tmp_path):
    invoice_id = (await started(cli_env, tmp_path, recorder))["invoice_id"]
    failed(await dunning(cli_env, "invoice", "decide", invoice_id, "--decision", "sue"), "no legal review is open (invoice is issued)")


# --- bad input -----------------------------------------------------------------------------


async def test_bad_files_are_one_line_errors(cli_env, tmp_path):
    missing = tmp_path / "missing.json"
    failed(await dunning(cli_env, "invoice", "start", str(missing)), f"cannot read {missing}: no such file")
    failed(await dunning(cli_env, "invoice", "start", str(tmp_path)), "it is a directory")

    broken = tmp_path / "broken.json"
    broken.write_text('{"invoice_id": "INV-1",\n "amount_minor": }')
    failed(await dunning(cli_env, "invoice", "start", str(broken)), f"{broken} is not valid JSON: Expecting value (line 2, column 18)")

    path, _ = example_invoice(
        tmp_path,
        currency="XYZ",
        contact={"name": "Andreea Ionescu", "email": "not-an-email"},
        due_date="2020-01-01",
        colour="blue",
    )
    line = failed(await dunning(cli_env, "invoice", "start", str(path)), f"invalid invoice in {path}:")
    assert "currency: unknown currency 'XYZ'" in line
    assert "contact.email: value is not a valid email address" in line
    assert "colour: Extra inputs are not permitted" in line

    path, _ = example_invoice(tmp_path, due_date="2020-01-01")
    failed(await dunning(cli_env, "invoice", "start", str(path)), "due date 2020-01-01 is before issue date")
    path, _ = example_invoice(tmp_path, policy={"stages": [{"action": "warning", "offset": "P5D"}, {"action": "reminder", "offset": "P1D"}]})
    failed(await dunning(cli_env, "invoice", "start", str(path)), "stages are out of order")

    failed(await dunning(cli_env, "invoice", "plan", "INV-1", str(missing)), "no such file")

    far = (local_today() + timedelta(days=4000)).isoformat()
    path, _ = example_invoice(tmp_path, due_date=far)
    failed(await dunning(cli_env, "invoice", "start", str(path)), f"invalid invoice in {path}: due_date: must lie within 1096 days")
    path, _ = example_invoice(tmp_path, due_date="9999-12-31")
    failed(await dunning(cli_env, "invoice", "start", str(path)), "due_date: must lie in the years 2000 to 2099, not 9999-12-31")
    plan = tmp_path / "far-plan.json"
    plan.write_text(json.dumps({"instalments": [{"due_date": far, "amount_minor": 100}]}))
    failed(await dunning(cli_env, "invoice", "plan", "INV-1", str(plan)), "instalments.0.due_date: must lie within")


async def test_unknown_invoice(cli_env):
    unknown = f"INV-{uuid.uuid4().hex[:10]}"
    for args in (
        ["status", unknown],
        ["status", unknown, "--json"],
        ["pay", unknown, "--amount", "1", "--payment-id", "P1"],
        ["pay", unknown, "--amount", "1", "--payment-id", "P1", "--signal"],
        ["dispute", unknown, "--reason", "why"],
        ["resolve", unknown, "--outcome", "rejected"],
        ["resend", unknown],
        ["decide", unknown, "--decision", "sue"],
    ):
        failed(await dunning(cli_env, "invoice", *args), f"unknown invoice {unknown}: no workflow invoice-{unknown}")


async def test_bad_amounts_and_options(cli_env, recorder, tmp_path):
    invoice_id = (await started(cli_env, tmp_path, recorder))["invoice_id"]

    def pay(amount: str, payment_id: str = "P1") -> list[str]:
        return ["invoice", "pay", invoice_id, "--amount", amount, "--payment-id", payment_id]

    failed(await dunning(cli_env, *pay("10.005")), "--amount 10.005 has more decimals than RON allows (2 decimals)")
    failed(await dunning(cli_env, *pay("ten")), "--amount must be a plain decimal number such as 125.50, not 'ten'")
    failed(await dunning(cli_env, *pay("-5")), "plain decimal number")
    failed(await dunning(cli_env, *pay("1e3")), "plain decimal number")
    failed(await dunning(cli_env, *pay("0.00")), "--amount must be greater than 0")
    failed(await dunning(cli_env, *pay("5", payment_id="bad id!")), "invalid payment: payment_id: String should match pattern")
    failed(await dunning(cli_env, "invoice", "dispute", invoice_id, "--reason", ""), "invalid dispute: reason:")
    assert (await status_of(cli_env, invoice_id)).paid_minor == 0
    assert recorder.notice_kinds(invoice_id) == ["invoice_issued"]


async def test_temporal_unreachable(cli_env, tmp_path):
    env = {**cli_env, "DUNNING_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}
    path, _ = example_invoice(tmp_path)
    failed(await dunning(env, "invoice", "start", str(path)), f"cannot connect to Temporal at {env['DUNNING_TEMPORAL_ADDRESS']}: connection refused")
    failed(await dunning(env, "invoice", "status", "INV-1"), "cannot connect to Temporal")
    failed(await dunning({**cli_env, "DUNNING_TEMPORAL_UI_PORT": "lots"}, "invoice", "status", "INV-1"), "invalid settings")


async def test_no_worker_on_the_queue(cli_env, tmp_path, monkeypatch):
    monkeypatch.setattr("client.invoices.ANSWER_TIMEOUT", timedelta(seconds=1))
    env = {**cli_env, "DUNNING_TASK_QUEUE": f"nobody-{uuid.uuid4().hex[:8]}"}
    path, data = example_invoice(tmp_path)
    succeeded(await dunning(env, "invoice", "start", str(path)))
    failed(await dunning(env, "invoice", "status", data["invoice_id"]), "no worker answered", "within 1 s")
    failed(await dunning(env, "invoice", "resend", data["invoice_id"]), "no worker answered")


# --- as a real process ---------------------------------------------------------------------


async def test_as_a_process(cli_env, recorder, tmp_path):
    """``python -m cli.main``: exit codes and streams as a shell sees them, and a clean interpreter exit."""
    data = await started(cli_env, tmp_path, recorder)
    env = {**os.environ, **cli_env}
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True, timeout=60
    )
    ok = await asyncio.to_thread(run, "invoice", "status", data["invoice_id"], "--json")
    assert (ok.returncode, ok.stderr) == (0, "")
    assert InvoiceStatus.model_validate_json(ok.stdout).invoice_id == data["invoice_id"]

    bad = await asyncio.to_thread(run, "invoice", "pay", data["invoice_id"], "--amount", "1.234", "--payment-id", "P1")
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr == "error: --amount 1.234 has more decimals than RON allows (2 decimals)\n"

    env["DUNNING_TEMPORAL_ADDRESS"] = f"127.0.0.1:{free_port()}"
    down = await asyncio.to_thread(run, "invoice", "status", data["invoice_id"])
    assert (down.returncode, down.stdout) == (1, "")
    assert down.stderr.startswith("error: cannot connect to Temporal") and down.stderr.count("\n") == 1


async def test_worker_command_reports_an_unreachable_database(cli_env):
    env = {**cli_env, "DUNNING_DATABASE_URL": f"postgresql://dunning:secret@127.0.0.1:{free_port()}/dunning"}
    line = failed(await dunning(env, "worker"), "cannot use the database at postgresql://dunning:***@127.0.0.1:")
    assert "secret" not in line
    env = {**cli_env, "DUNNING_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}
    failed(await dunning(env, "worker"), "cannot connect to Temporal at")
