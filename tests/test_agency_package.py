"""The collection agency's hand-over package, built from an invoice's events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from activities.notices.agency_package import agency_package
from activities.notices.content import Payee
from workflows.models import AgencyHandover, DomainEvent, EventKind, Fee, Invoice

EXAMPLE = Path(__file__).parents[1] / "examples" / "invoice.json"
START = datetime(2025, 3, 6, 7, 0, tzinfo=UTC)
PAYEE = Payee(name="Tehnoserv SRL", payment_instructions="Bank transfer", iban="RO49AAAA1B31007593840000")
TO = "ana@client.example"


def invoice(**changes: Any) -> Invoice:
    data = json.loads(EXAMPLE.read_text()) | {"issue_date": "2025-03-06", "due_date": "2025-03-20"}
    return Invoice.model_validate(data | changes)


def history(invoice_id: str) -> list[DomainEvent]:
    """Issued, reminded, disputed and rejected, a fee, a payment, a broken plan, then the agency stage."""
    events: list[DomainEvent] = []

    def event(event_kind: EventKind, day: int, **data: Any) -> None:
        events.append(
            DomainEvent(
                invoice_id=invoice_id, sequence=len(events) + 1, kind=event_kind,
                occurred_at=START + timedelta(days=day), data=data,
            )
        )

    event(EventKind.INVOICE_ISSUED, 0, invoice={})
    event(EventKind.NOTICE_SENT, 0, kind="invoice_issued", step="0001-invoice_issued", to=TO, channels=["email"])
    event(EventKind.NOTICE_SENT, 15, kind="reminder", step="0002-reminder", to=TO, channels=["email", "webhook"])
    event(EventKind.DISPUTE_OPENED, 16, reason="Server down <3 days> in March")
    event(EventKind.DISPUTE_RESOLVED, 20, outcome="rejected", credit_minor=0, note="internal: stalling")
    event(EventKind.LATE_FEE_CHARGED, 24, number=1, amount_minor=33_750, reason="late fee")
    event(EventKind.NOTICE_SENT, 24, kind="late_fee", step="0005-late_fee", to=TO)  # from before channels: e-mail
    event(EventKind.PAYMENT_RECORDED, 30, payment_id="PAY-7", amount_minor=250_000,
          received_at=(START + timedelta(days=29)).isoformat(), balance_minor=1_033_750)
    event(EventKind.PAYMENT_PLAN_AGREED, 40, plan={"instalments": [
        {"due_date": "2025-05-01", "amount_minor": 500_000}, {"due_date": "2025-06-01", "amount_minor": 533_750}]})
    event(EventKind.INSTALMENT_MISSED, 57, instalment=1, expected_minor=500_000, received_minor=0)
    event(EventKind.STAGE_REACHED, 110, stage="agency", days_overdue=90)
    return events


def handover(subject: Invoice) -> AgencyHandover:
    return AgencyHandover(
        idempotency_key=f"{subject.workflow_id}/agency-package",
        invoice=subject,
        fees=[Fee(number=1, amount_minor=33_750, charged_at=START + timedelta(days=24), reason="late fee")],
        paid_minor=250_000,
        deducted_minor=0,
        balance_minor=1_033_750,
        days_overdue=90,
    )


@pytest.fixture(scope="module")
def package() -> tuple[Any, dict[str, Any], str]:
    subject = invoice(contact={"name": "Ștefan Țurcanu <Tehnoserv>", "email": "stefan@client.example"})
    rendered = agency_package(handover(subject), history(subject.invoice_id), PAYEE)
    attachments = {a.filename: a for a in rendered.attachments}
    document = json.loads(attachments["handover-INV-2026-0042.json"].data)
    pdf = attachments["handover-INV-2026-0042.pdf"]
    assert attachments["handover-INV-2026-0042.json"].content_type == "application/json"
    assert pdf.content_type == "application/pdf"
    reader = PdfReader(BytesIO(pdf.data))
    text = " ".join(" ".join(page.extract_text() for page in reader.pages).split())
    return rendered, document, text


def test_the_json_lists_notices_payments_fees_and_disputes(package: tuple[Any, dict[str, Any], str]) -> None:
    _, document, _ = package
    assert document["format"] == "dunning.agency-handover/1"
    assert document["as_of"] == "2025-06-24T07:00:00Z"
    assert document["debtor"]["customer_id"] == "RO-40512378"
    assert document["debtor"]["name"] == "Ștefan Țurcanu <Tehnoserv>"
    assert document["invoice"] == {
        "invoice_id": "INV-2026-0042", "currency": "RON", "amount_minor": 1_250_000,
        "issue_date": "2025-03-06", "due_date": "2025-03-20", "service": "hosting",
        "late_fee_percent_per_month": "1.5", "fixed_late_fee_minor": 15_000, "remote_disconnect_authorized": True,
    }
    assert document["amounts"] == {
        "fees_minor": 33_750, "interest_minor": 0, "paid_minor": 250_000, "deducted_minor": 0, "balance_minor": 1_033_750,
        "days_overdue": 90,
    }
    assert document["notices"] == [
        {"sent_at": "2025-03-06T07:00:00Z", "kind": "invoice_issued", "to": TO, "channels": ["email"]},
        {"sent_at": "2025-03-21T07:00:00Z", "kind": "reminder", "to": TO, "channels": ["email", "webhook"]},
        {"sent_at": "2025-03-30T07:00:00Z", "kind": "late_fee", "to": TO, "channels": ["email"]},
    ]
    assert document["payments"] == [
        {"payment_id": "PAY-7", "amount_minor": 250_000, "received_at": "2025-04-04T07:00:00Z",
         "recorded_at": "2025-04-05T07:00:00Z"},
    ]
    assert document["fees"] == [{"number": 1, "amount_minor": 33_750, "charged_at": "2025-03-30T07:00:00Z"}]
    assert document["disputes"] == [
        {"opened_at": "2025-03-22T07:00:00Z", "reason": "Server down <3 days> in March",
         "resolved_at": "2025-03-26T07:00:00Z", "outcome": "rejected", "credit_minor": 0},
    ]
    (plan,) = document["payment_plans"]
    assert plan["missed_instalment"] == 1 and plan["missed_at"] == "2025-05-02T07:00:00Z"
    assert [i["amount_minor"] for i in plan["instalments"]] == [500_000, 533_750]
    assert document["creditor"]["iban"] == "RO49 AAAA 1B31 0075 9384 0000"
    assert "stalling" not in json.dumps(document)  # internal notes stay home


def test_the_pdf_tells_the_same_story(package: tuple[Any, dict[str, Any], str]) -> None:
    _, _, text = package
    assert "Collection hand-over: invoice INV-2026-0042" in text
    assert "Ștefan Țurcanu <Tehnoserv>" in text
    assert "Balance due 10337.50 RON" in text
    assert "2025-03-21 07:00 reminder email, webhook" in text
    assert "2025-04-04 07:00 PAY-7 2500.00 RON" in text
    assert "2025-03-30 07:00 1 337.50 RON" in text
    assert "Server down <3 days> in March" in text and "rejected" in text
    assert "instalment 1" in text


def test_the_email_summarises_and_escapes(package: tuple[Any, dict[str, Any], str]) -> None:
    rendered, _, _ = package
    assert rendered.subject == "Collection hand-over: invoice INV-2026-0042, 10337.50 RON due"
    assert "Balance due:     10337.50 RON" in rendered.text
    assert "Notices sent:    3, the last on 2025-03-30 07:00" in rendered.text
    assert "Disputes:        1 (rejected)" in rendered.text
    assert "Ștefan Țurcanu <Tehnoserv> <stefan@client.example>" in rendered.text
    assert "Ștefan Țurcanu &lt;Tehnoserv&gt; &lt;stefan@client.example&gt;" in rendered.html
    assert "<Tehnoserv>" not in rendered.html


def test_events_of_another_invoice_are_refused() -> None:
    subject = invoice()
    with pytest.raises(ValueError, match="INV-OTHER"):
        agency_package(handover(subject), history(subject.invoice_id) + history("INV-OTHER")[:1], PAYEE)
    with pytest.raises(ValueError, match="no events"):
        agency_package(handover(subject), [], PAYEE)
