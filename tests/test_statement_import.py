"""Bank statements and Stripe events end to end: the API stack and a real worker record the payments once."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx

from activities.ledger import read_events
from api.camt import parse
from tests.api_stack import INTEGRATION_TOKEN, STRIPE_SECRET, assert_problem, eventually, invoice_json, local_today
from tests.cli_helpers import cli_env, dunning, succeeded
from tests.test_payment_formats import BILLION_LAUGHS, XXE
from workflows.events import PaymentRecorded

SAMPLE = Path(__file__).parent / "data" / "camt" / "statement.camt.053.001.08.xml"
SAMPLE_DAY = date(2026, 12, 4)  # the sample's statement date: its dates are moved so that this is today
XML = {"Content-Type": "application/xml"}


def sample_as_of_today() -> bytes:
    """The sample statement with every date moved by the same number of days, the last statement's being today."""
    shift = local_today() - SAMPLE_DAY
    return re.sub(
        rb"\d{4}-\d{2}-\d{2}",
        lambda m: (date.fromisoformat(m.group().decode()) + shift).isoformat().encode(),
        SAMPLE.read_bytes(),
    )


async def live_balance(ops: httpx.AsyncClient, invoice_id: str) -> int:
    """The balance as the invoice's workflow (or, once closed, its last status) has it now."""
    return (await ops.get(f"/invoices/{invoice_id}/status", params={"live": True})).json()["balance_minor"]


async def test_a_statement_records_its_matched_credits_once_and_keeps_the_rest(api_stack, dev_env, tmp_path):
    today = local_today()
    async with api_stack.http() as ops:
        for invoice_id in ("INV-2026-1107", "INV-2026-1108"):
            invoice = invoice_json(invoice_id=invoice_id, issue_date=(today - timedelta(days=5)).isoformat())
            assert (await ops.post("/invoices", json=invoice)).status_code == 201  # an inline policy: ops
        projected = "SELECT count(*) = 2 FROM projected_invoices WHERE invoice_id IN ('INV-2026-1107', 'INV-2026-1108')"
        await eventually(lambda: api_stack.pool.fetchval(projected))  # statements are matched against the read model
        document = sample_as_of_today()
        lines = parse(document).lines

        imported = await ops.post("/payments/statements", content=document, headers=XML)
        assert imported.status_code == 200, imported.text
        summary = imported.json()
        assert (
            summary["document"],
            summary["matched"],
            summary["unmatched"],
            summary["duplicate"],
            summary["ignored"],
        ) == ("camt.053", 2, 1, 1, 2)
        by_line = {line["line"]: line for line in summary["lines"]}
        assert (by_line[1]["status"], by_line[1]["invoice_id"], by_line[1]["matched_by"]) == (
            "matched",
            "INV-2026-1107",
            "creditor reference",
        )
        assert by_line[1]["balance_minor"] == 0
        assert (by_line[2]["invoice_id"], by_line[2]["matched_by"], by_line[2]["balance_minor"]) == (
            "INV-2026-1108",
            "invoice number",
            60_000,
        )
        assert (
            by_line[3]["status"] == "unmatched"
            and "no creditor reference and no invoice number" in by_line[3]["reason"]
        )
        assert [by_line[n]["status"] for n in (4, 5, 6)] == ["ignored", "duplicate", "ignored"]

        # the workflow recorded the payment with the line's id and value date
        async def recorded_payments() -> list[PaymentRecorded]:
            events = [e.payload() for e in await read_events(api_stack.pool, "INV-2026-1108")]
            return [p for p in events if isinstance(p, PaymentRecorded)]

        payments = await eventually(recorded_payments)
        assert [(p.payment_id, p.amount_minor) for p in payments] == [(lines[1].payment_id, 40_000)]
        assert payments[0].received_at == datetime.combine(today - timedelta(days=1), datetime.min.time(), timezone.utc)
        assert await live_balance(ops, "INV-2026-1107") == 0

        kept = [k for k in (await ops.get("/payments/unapplied")).json()["items"] if k["source"] == "statement"]
        assert [(k["payment_id"], k["amount_minor"], k["source"], k["invoice_id"]) for k in kept] == [
            (lines[2].payment_id, 7_550, "statement", "Membership fee December")
        ]

        again = (await ops.post("/payments/statements", content=document, headers=XML)).json()
        assert (again["matched"], again["unmatched"], again["duplicate"], again["ignored"]) == (0, 0, 4, 2)
        assert await live_balance(ops, "INV-2026-1108") == 60_000
        assert [p.payment_id for p in await recorded_payments()] == [lines[1].payment_id]
        assert [
            k["payment_id"]
            for k in (await ops.get("/payments/unapplied")).json()["items"]
            if k["source"] == "statement"
        ] == [lines[2].payment_id]

        # the CLI imports the same file: nothing new, the summary as JSON
        statement = tmp_path / "statement.xml"
        statement.write_bytes(document)
        env = {
            **cli_env(dev_env, api_stack.settings.task_queue),
            "DATABASE_URL": api_stack.settings.database_url,
            "DUNNING_DATABASE_OWNER_URL": api_stack.settings.database_owner_url,
        }
        printed = json.loads(succeeded(await dunning(env, "payments", "import", str(statement), "--json")))
        assert (printed["matched"], printed["duplicate"]) == (0, 4)
        table = succeeded(await dunning(env, "payments", "import", str(statement)))
        assert "0 matched, 0 unmatched, 4 duplicate, 2 ignored" in table
        refused = await dunning(env, "payments", "import", str(tmp_path / "missing.xml"))
        assert refused.exit_code == 1 and "cannot read" in refused.output


async def test_a_statement_that_is_unsafe_or_not_xml_is_refused_and_changes_nothing(api_stack):
    async with api_stack.http() as ops, api_stack.http(INTEGRATION_TOKEN) as integration:
        lines_before = await api_stack.pool.fetchval("SELECT count(*) FROM statement_lines")
        for document in (BILLION_LAUGHS, XXE):
            assert_problem(
                await ops.post("/payments/statements", content=document, headers=XML),
                400,
                "bad-request",
                "DTD or entities",
            )
        assert_problem(
            await ops.post("/payments/statements", content=b"{}", headers={"Content-Type": "application/json"}),
            415,
            "unsupported-media-type",
        )
        assert_problem(
            await integration.post("/payments/statements", content=sample_as_of_today(), headers=XML), 403, "forbidden"
        )
        big = b"<Document>" + b" " * (9 * 1024 * 1024) + b"</Document>"
        assert_problem(await ops.post("/payments/statements", content=big, headers=XML), 413, "content-too-large")
        assert await api_stack.pool.fetchval("SELECT count(*) FROM statement_lines") == lines_before


def stripe_signed(event: dict, secret: str = STRIPE_SECRET, at: float | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    timestamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={timestamp},v1={digest}", "Content-Type": "application/json"}


async def test_stripe_events_record_a_payment_once_and_flag_a_refund(api_stack):
    async with api_stack.http(None) as stripe, api_stack.http() as ops:
        invoice = invoice_json()
        assert (await ops.post("/invoices", json=invoice)).status_code == 201  # an inline policy: ops
        succeeded_event = {
            "id": "evt_3Pay1",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": "pi_3Pay1",
                    "object": "payment_intent",
                    "amount_received": 25_000,
                    "currency": "eur",
                    "metadata": {"invoice_id": invoice["invoice_id"]},
                }
            },
        }
        body, headers = stripe_signed(succeeded_event)
        first = await stripe.post("/webhooks/stripe", content=body, headers=headers)
        assert first.status_code == 200 and first.json()["balance_minor"] == 75_000, first.text
        redelivered = await stripe.post("/webhooks/stripe", content=body, headers=headers)
        assert (redelivered.status_code, redelivered.json()) == (200, first.json())
        assert await live_balance(ops, invoice["invoice_id"]) == 75_000

        assert_problem(
            await stripe.post(
                "/webhooks/stripe", content=body, headers=stripe_signed(succeeded_event, "whsec_wrong")[1]
            ),
            401,
            "invalid-signature",
            "no v1 signature matches",
        )
        stale = stripe_signed(succeeded_event, at=time.time() - 600)
        assert_problem(
            await stripe.post("/webhooks/stripe", content=stale[0], headers=stale[1]),
            401,
            "invalid-signature",
            "tolerance",
        )

        refund_event = {
            "id": "evt_3Refund1",
            "type": "charge.refunded",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": "ch_3Pay1",
                    "amount_refunded": 5_000,
                    "currency": "eur",
                    "payment_intent": "pi_3Pay1",
                    "metadata": {"invoice_id": invoice["invoice_id"]},
                }
            },
        }
        refunded = await stripe.post(
            "/webhooks/stripe", content=(signed := stripe_signed(refund_event))[0], headers=signed[1]
        )
        assert refunded.status_code == 202 and "records no refunds" in refunded.json()["reason"], refunded.text
        kept = [k for k in (await ops.get("/payments/unapplied")).json()["items"] if k["source"] == "stripe"]
        assert [(k["payment_id"], k["kind"], k["source"]) for k in kept] == [("evt_3Refund1", "refund", "stripe")]
        assert_problem(
            await ops.post("/payments/unapplied/evt_3Refund1/apply", json={"invoice_id": invoice["invoice_id"]}),
            409,
            "request-refused",
            "refund",
        )
        assert await live_balance(ops, invoice["invoice_id"]) == 75_000

        ignored = {"id": "evt_other", "type": "customer.created", "created": int(time.time()), "data": {"object": {}}}
        acknowledged = await stripe.post(
            "/webhooks/stripe", content=(signed := stripe_signed(ignored))[0], headers=signed[1]
        )
        assert acknowledged.status_code == 200 and acknowledged.json()["status"] == "ignored"
