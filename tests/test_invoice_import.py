"""Importing invoices another system already chased (issue 20 item 7): the CLI on the time-skipping server and
the API on the embedded stack. A good line starts once, a re-run starts nothing twice, a bad line is reported."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone

import pytest

from client.invoice_import import InvoiceImportSummary, LineRefused, read_line
from client.policies import PolicyBook
from tests.api_stack import INTEGRATION_TOKEN, METRICS_TOKEN, local_today
from tests.cli_helpers import cli_env, dunning
from tests.harness import eventually, make_invoice
from tests.test_invoice_workflow import status, today
from workflows.bounds import DateWindow
from workflows.invoice import InvoiceWorkflow
from workflows.models import Invoice, InvoiceState

JSON_LINES = {"Content-Type": "application/jsonl"}


def overdue(start, days: int, **fields) -> Invoice:
    return make_invoice(start, issue_date=start - timedelta(days=days + 14), due_date=start - timedelta(days=days), **fields)


def line(invoice: Invoice, **opening) -> str:
    return json.dumps({**invoice.model_dump(mode="json"), **opening})


@pytest.mark.parametrize(
    ("opening", "reason"),
    [
        ({"last_notice": {"stage": "courtesy", "sent_at": "2026-11-20T09:00:00Z"}}, "the invoice's policy has no courtesy stage"),
        ({"last_notice": {"stage": "agency", "sent_at": "2026-11-20T09:00:00Z"}}, "agency stage does more than tell"),
        ({"last_notice": {"stage": "reminder", "sent_at": "2026-10-01T09:00:00Z"}}, "sent before the issue date 2026-11-01"),
        ({"last_notice": {"stage": "reminder", "sent_at": "2026-12-07T13:00:00Z"}}, "sent_at is in the future"),
        ({"opening_fees": [{"amount_minor": 100, "charged_on": "2026-11-10"}]}, "charged before the due date 2026-11-15"),
        ({"opening_fees": [{"amount_minor": 0, "charged_on": "2026-11-20"}]}, "opening_fees.0.amount_minor"),
        ({"policy_name": "no-such"}, "policy_name: unknown policy 'no-such'"),
    ],
)
def test_a_line_that_does_not_fit_is_refused_with_its_reason(opening, reason):
    invoice = make_invoice(date(2026, 11, 1), due_date=date(2026, 11, 15)).model_dump(mode="json")
    if "policy_name" in opening:
        del invoice["policy"]
    window = DateWindow(now=datetime(2026, 12, 7, 12, tzinfo=timezone.utc), days=1096)
    with pytest.raises(LineRefused, match=re.escape(reason)):
        read_line(json.dumps({**invoice, **opening}), window, PolicyBook())


async def test_the_cli_imports_each_invoice_once_and_reports_refused_lines(env, client, queue, recorder, tmp_path):
    start = await today(env)
    imported, plain = overdue(start, 12), overdue(start, 100)
    told_at = f"{(start - timedelta(days=1)).isoformat()}T09:00:00Z"
    lines = [
        line(imported, opening_fees=[{"amount_minor": 1_500, "charged_on": (start - timedelta(days=2)).isoformat()}],
             last_notice={"stage": "late_fee", "sent_at": told_at}),
        '{"invoice_id": "INV-BAD", "amount_minor": -5}',
        "",
        line(plain),
        line(overdue(start, 3), last_notice={"stage": "suspend", "sent_at": told_at}),
    ]
    path = tmp_path / "invoices.jsonl"
    path.write_text("\n".join(lines) + "\n")
    settings = cli_env(env, queue)

    first = await dunning(settings, "invoice", "import", str(path))
    assert first.exit_code == 1, first.output
    assert "2 started, 0 already there, 2 refused" in first.stdout
    assert "line 2 (INV-BAD): refused: customer_id: Field required; contact: Field required" in first.stdout
    assert "line 5 " in first.stdout and "suspend stage does more than tell" in first.stdout

    handle = client.get_workflow_handle_for(InvoiceWorkflow.run, imported.workflow_id)
    await eventually(lambda: recorder.events_of(imported.invoice_id, "stage_reached"))
    current = await status(handle)
    assert current.state == InvoiceState.LATE_FEE and current.fees_minor == 1_500
    await eventually(lambda: recorder.events_of(plain.invoice_id, "cut_announced"))
    assert recorder.notice_kinds(imported.invoice_id) == []  # no invoice notice, the late-fee notice went out before
    assert recorder.notice_kinds(plain.invoice_id) == ["ultimatum"]

    again = await dunning(settings, "invoice", "import", str(path), "--json")
    assert again.exit_code == 1, again.output
    summary = InvoiceImportSummary.model_validate_json(again.stdout)
    assert (summary.started, summary.already_there, summary.refused) == (0, 2, 2)
    assert [(o.line, o.outcome.value) for o in summary.lines] == [
        (1, "already_there"), (2, "refused"), (4, "already_there"), (5, "refused"),
    ]
    assert recorder.notice_kinds(plain.invoice_id) == ["ultimatum"]  # nothing started twice


async def test_the_api_imports_and_refuses_what_the_role_may_not_start(api_stack):
    """Ops import an invoice with an inline policy; the integration role may not (item 9's rule holds in an import)."""
    start = local_today()
    invoice = overdue(start, 30, customer_id="CUST-API", time_zone="Europe/Bucharest")
    body = "\n".join([line(invoice), "not json"]).encode()
    async with api_stack.http(INTEGRATION_TOKEN) as integration, api_stack.http() as ops, api_stack.http(METRICS_TOKEN) as metrics:
        assert (await metrics.post("/invoices/import", content=body, headers=JSON_LINES)).status_code == 403
        wrong_type = await ops.post("/invoices/import", content=body, headers={"Content-Type": "text/plain"})
        assert wrong_type.status_code == 415
        refused = InvoiceImportSummary.model_validate(
            (await integration.post("/invoices/import", content=body, headers=JSON_LINES)).json()
        )
        assert (refused.started, refused.already_there, refused.refused) == (0, 0, 2)
        assert refused.lines[0].reason is not None and "needs the ops role" in refused.lines[0].reason

        first = await ops.post("/invoices/import", content=body, headers=JSON_LINES)
        assert first.status_code == 200, first.text
        summary = InvoiceImportSummary.model_validate(first.json())
        assert (summary.started, summary.already_there, summary.refused) == (1, 0, 1)
        assert summary.lines[1].line == 2 and summary.lines[1].reason is not None
        assert summary.lines[1].reason.startswith("not JSON")
        again = InvoiceImportSummary.model_validate((await ops.post("/invoices/import", content=body, headers=JSON_LINES)).json())
        assert (again.started, again.already_there, again.refused) == (0, 1, 1)
