"""Bank statements and Stripe events end to end: the API stack and a real worker record the payments once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx

from activities.ledger import read_events
from api.camt import parse
from tests.api_stack import INTEGRATION_TOKEN, STRIPE_SECRET, assert_problem, eventually, invoice_json, local_today
from tests.cli_helpers import cli_env, dunning, succeeded
from tests.test_payment_formats import BILLION_LAUGHS, XXE
from workflows import creditor_reference
from workflows.cash import allocation_id
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
    customer = f"CUST-{uuid.uuid4().hex[:8]}"  # its own: another module's customer may be left without a worker
    async with api_stack.http() as ops:
        for invoice_id in ("INV-2026-1107", "INV-2026-1108"):
            invoice = invoice_json(customer, invoice_id=invoice_id, issue_date=(today - timedelta(days=5)).isoformat())
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
        # paid through the invoices' customer: the matched invoice first (exact and partial payments: nothing left)
        assert (by_line[1]["customer_id"], by_line[1]["allocations"], by_line[1]["credit_minor"]) == (
            customer,
            {"INV-2026-1107": 100_000},
            0,
        )
        assert by_line[1]["balance_minor"] == 0
        assert (by_line[2]["invoice_id"], by_line[2]["matched_by"], by_line[2]["balance_minor"]) == (
            "INV-2026-1108",
            "invoice number",
            60_000,
        )
        assert (by_line[2]["customer_id"], by_line[2]["allocations"]) == (customer, {"INV-2026-1108": 40_000})
        assert (
            by_line[3]["status"] == "unmatched"
            and "no creditor reference and no invoice number" in by_line[3]["reason"]
        )
        assert [by_line[n]["status"] for n in (4, 5, 6)] == ["ignored", "duplicate", "ignored"]

        # the invoice recorded the customer's payment with the line's id (and its own) and the value date
        async def recorded_payments() -> list[PaymentRecorded]:
            events = [e.payload() for e in await read_events(api_stack.pool, "INV-2026-1108")]
            return [p for p in events if isinstance(p, PaymentRecorded)]

        payments = await eventually(recorded_payments)
        line_2_id = allocation_id(lines[1].payment_id, "INV-2026-1108")
        assert [(p.payment_id, p.amount_minor) for p in payments] == [(line_2_id, 40_000)]
        assert payments[0].received_at == datetime.combine(today - timedelta(days=1), datetime.min.time(), timezone.utc)
        assert await live_balance(ops, "INV-2026-1107") == 0

        kept = [k for k in (await ops.get("/payments/unapplied")).json()["items"] if k["source"] == "statement"]
        assert [(k["payment_id"], k["amount_minor"], k["source"], k["invoice_id"]) for k in kept] == [
            (lines[2].payment_id, 7_550, "statement", "Membership fee December")
        ]

        again = (await ops.post("/payments/statements", content=document, headers=XML)).json()
        assert (again["matched"], again["unmatched"], again["duplicate"], again["ignored"]) == (0, 0, 4, 2)
        assert await live_balance(ops, "INV-2026-1108") == 60_000
        assert [p.payment_id for p in await recorded_payments()] == [line_2_id]
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
        invoice = invoice_json(f"CUST-{uuid.uuid4().hex[:8]}")
        assert (await ops.post("/invoices", json=invoice)).status_code == 201  # an inline policy: ops
        await eventually(lambda: projected(api_stack, invoice["invoice_id"]))  # its customer is known: paid through it
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
        assert first.status_code == 200, first.text
        [allocation] = first.json()["allocations"]
        assert (allocation["invoice_id"], allocation["amount_minor"], allocation["balance_minor"]) == (
            invoice["invoice_id"],
            25_000,
            75_000,
        )
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


async def projected(stack, invoice_id: str) -> bool:
    return bool(await stack.pool.fetchval("SELECT true FROM projected_invoices WHERE invoice_id = $1", invoice_id))


async def recorded(stack, invoice_id: str) -> dict[str, int]:
    """The payments the invoice's event log records: payment id -> amount."""
    return {
        p.payment_id: p.amount_minor
        for p in (e.payload() for e in await read_events(stack.pool, invoice_id))
        if isinstance(p, PaymentRecorded)
    }


async def open_invoices(ops: httpx.AsyncClient, stack, customer_id: str, *due_in_days: int) -> list[str]:
    """Invoices of EUR 1,000.00 of a customer, due in so many days, once the read model has them all."""
    ids = []
    for days in due_in_days:
        invoice = invoice_json(customer_id, due_date=(local_today() + timedelta(days=days)).isoformat())
        assert (await ops.post("/invoices", json=invoice)).status_code == 201
        ids.append(invoice["invoice_id"])
    for invoice_id in ids:
        await eventually(lambda i=invoice_id: projected(stack, i))
    return ids


def credits(today: date, *entries: tuple[str, str, str | None, str]) -> bytes:
    """A camt.053 whose booked credits are ``(amount, currency, structured RF reference or None, free text)``."""
    ntries = "".join(
        f"""<Ntry><NtryRef>{n}</NtryRef><Amt Ccy="{currency}">{amount}</Amt><CdtDbtInd>CRDT</CdtDbtInd>
<Sts><Cd>BOOK</Cd></Sts><ValDt><Dt>{today}</Dt></ValDt><AcctSvcrRef>ONE-{uuid.uuid4().hex[:10]}</AcctSvcrRef>
<NtryDtls><TxDtls><Amt Ccy="{currency}">{amount}</Amt><CdtDbtInd>CRDT</CdtDbtInd><RmtInf><Ustrd>{text}</Ustrd>"""
        + (f"<Strd><CdtrRefInf><Tp><CdOrPrtry><Cd>SCOR</Cd></CdOrPrtry></Tp><Ref>{rf}</Ref></CdtrRefInf></Strd>" if rf else "")
        + "</RmtInf></TxDtls></NtryDtls></Ntry>"
        for n, (amount, currency, rf, text) in enumerate(entries, 1)
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>
<GrpHdr><MsgId>STMT-ONE-{uuid.uuid4().hex[:8]}</MsgId><CreDtTm>{today}T18:05:12+02:00</CreDtTm></GrpHdr>
<Stmt><Id>STMT-ONE-{uuid.uuid4().hex[:8]}</Id><CreDtTm>{today}T18:00:00+02:00</CreDtTm>
<Acct><Id><IBAN>RO49AAAA1B31007593840000</IBAN></Id><Ccy>EUR</Ccy></Acct>{ntries}
</Stmt></BkToCstmrStmt></Document>""".encode()


async def test_a_line_matched_to_one_invoice_pays_it_first_and_its_customer_gets_the_rest(api_stack):
    """By RF reference, more than the invoice owes: it closes paid, the rest pays the customer's next-oldest
    invoice; by invoice number, the rest is the customer's credit; a line in another currency is kept with the
    reason while the others import; the same statement again records nothing."""
    customer = f"CUST-{uuid.uuid4().hex[:8]}"
    async with api_stack.http() as ops:
        later, sooner = await open_invoices(ops, api_stack, customer, 20, 10)  # the matched one is due after the other
        document = credits(
            local_today(),
            ("300.00", "USD", None, f"Invoice {sooner}"),  # the customer's invoices are in EUR
            ("1750.00", "EUR", creditor_reference.for_invoice(later), "Thank you"),
            ("500.00", "EUR", None, f"Invoice {sooner}, rest on account"),
        )
        lines = parse(document).lines
        imported = await ops.post("/payments/statements", content=document, headers=XML)
        assert imported.status_code == 200, imported.text
        summary = imported.json()
        assert (summary["matched"], summary["unmatched"], summary["duplicate"], summary["ignored"]) == (2, 1, 0, 0)
        usd, by_reference, by_number = summary["lines"]

        assert usd["status"] == "unmatched" and usd["customer_id"] is None and usd["allocations"] == {}
        assert f"invoice {sooner} (by invoice number) refused it" in usd["reason"]
        assert "payment currency USD does not match invoice currency EUR" in usd["reason"]
        kept = [k for k in (await ops.get("/payments/unapplied")).json()["items"] if k["payment_id"] == lines[0].payment_id]
        assert [(k["invoice_id"], k["amount_minor"], k["currency"], k["reason"]) for k in kept] == [
            (sooner, 30_000, "USD", usd["reason"])
        ]

        # the invoice named by the structured reference first (though due later), its overpayment to the other
        assert (by_reference["status"], by_reference["invoice_id"], by_reference["matched_by"]) == (
            "matched",
            later,
            "creditor reference",
        )
        assert (by_reference["customer_id"], by_reference["balance_minor"], by_reference["credit_minor"]) == (customer, 0, 0)
        assert list(by_reference["allocations"].items()) == [(later, 100_000), (sooner, 75_000)]
        # the rest of the sooner invoice, then the customer's credit
        assert (by_number["invoice_id"], by_number["matched_by"], by_number["customer_id"]) == (
            sooner,
            "invoice number",
            customer,
        )
        assert (by_number["allocations"], by_number["balance_minor"], by_number["credit_minor"]) == (
            {sooner: 25_000},
            0,
            25_000,
        )

        await eventually(lambda: _recorded_as(api_stack, later, {allocation_id(lines[1].payment_id, later): 100_000}))
        both = {allocation_id(lines[1].payment_id, sooner): 75_000, allocation_id(lines[2].payment_id, sooner): 25_000}
        await eventually(lambda: _recorded_as(api_stack, sooner, both))
        for invoice_id in (later, sooner):
            await eventually(lambda i=invoice_id: _in_state(ops, i, "paid"))
        book = (await ops.get(f"/customers/{customer}/payments")).json()
        assert sorted(book["payments"]) == sorted([lines[1].payment_id, lines[2].payment_id])
        assert book["payments"][lines[1].payment_id]["payment"]["remittance"].startswith(later)

        again = (await ops.post("/payments/statements", content=document, headers=XML)).json()
        assert (again["matched"], again["unmatched"], again["duplicate"], again["ignored"]) == (0, 0, 3, 0)
        assert await recorded(api_stack, later) == {allocation_id(lines[1].payment_id, later): 100_000}
        assert await recorded(api_stack, sooner) == both
        again_book = (await ops.get(f"/customers/{customer}/payments")).json()
        assert sorted(again_book["payments"]) == sorted(book["payments"])
        assert credit_of(again_book) == credit_of(book) == 25_000


async def test_the_same_statement_posted_twice_at_once_records_each_payment_once(api_stack):
    """Two imports of one statement racing (a retried upload, two operators): each line's money reaches its
    invoices once, the customer's credit is left once, the refused line is kept once, whichever import saw it first."""
    customer = f"CUST-{uuid.uuid4().hex[:8]}"
    async with api_stack.http() as ops:
        later, sooner = await open_invoices(ops, api_stack, customer, 20, 10)
        document = credits(
            local_today(),
            ("1750.00", "EUR", creditor_reference.for_invoice(later), "Thank you"),
            ("1500.00", "EUR", None, f"Invoice {sooner}"),
            ("300.00", "USD", None, f"Invoice {sooner}"),
        )
        lines = parse(document).lines
        first, second = await asyncio.gather(
            *(ops.post("/payments/statements", content=document, headers=XML) for _ in range(2))
        )
        assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
        for n, expected in enumerate(("matched", "matched", "unmatched")):
            statuses = {first.json()["lines"][n]["status"], second.json()["lines"][n]["status"]}
            assert statuses <= {expected, "duplicate"} and expected in statuses, (n, statuses)

        by_reference, by_number = (allocation_id(line.payment_id, i) for line, i in ((lines[0], later), (lines[1], sooner)))
        spill = allocation_id(lines[0].payment_id, sooner)
        await eventually(lambda: _recorded_as(api_stack, later, {by_reference: 100_000}))
        await eventually(lambda: _recorded_as(api_stack, sooner, {spill: 75_000, by_number: 25_000}))
        book = (await ops.get(f"/customers/{customer}/payments")).json()
        assert sorted(book["payments"]) == sorted([lines[0].payment_id, lines[1].payment_id])
        assert credit_of(book) == 125_000
        kept = [k for k in (await ops.get("/payments/unapplied")).json()["items"] if k["payment_id"] == lines[2].payment_id]
        assert [(k["invoice_id"], k["amount_minor"], k["currency"]) for k in kept] == [(sooner, 30_000, "USD")]


def credit_of(book: dict) -> int:
    """The customer's credit (one currency) in its cash book as ``GET /customers/{id}/payments`` shows it."""
    return sum(application["credit_minor"] for application in book["payments"].values())


async def _recorded_as(stack, invoice_id: str, payments: dict[str, int]) -> bool:
    return await recorded(stack, invoice_id) == payments


async def _in_state(ops: httpx.AsyncClient, invoice_id: str, state: str) -> bool:
    return (await ops.get(f"/invoices/{invoice_id}/status", params={"live": True})).json()["state"] == state


def payment_intent(
    event_id: str, intent_id: str, amount_minor: int, created: int, currency: str = "eur", **metadata: str
) -> dict:
    return {
        "id": event_id,
        "type": "payment_intent.succeeded",
        "created": created,
        "data": {
            "object": {
                "id": intent_id,
                "object": "payment_intent",
                "amount_received": amount_minor,
                "currency": currency,
                "metadata": metadata,
            }
        },
    }


async def test_a_stripe_payment_naming_an_invoice_pays_its_customer_once_however_often_it_comes(api_stack):
    customer = f"CUST-{uuid.uuid4().hex[:8]}"
    intent, now = f"pi_{uuid.uuid4().hex[:12]}", int(time.time())
    async with api_stack.http(None) as stripe, api_stack.http() as ops:
        named, sooner = await open_invoices(ops, api_stack, customer, 20, 10)
        event = payment_intent(f"evt_{uuid.uuid4().hex[:10]}", intent, 250_000, now - 5, invoice_id=named)
        first = await stripe.post("/webhooks/stripe", content=(signed := stripe_signed(event))[0], headers=signed[1])
        assert first.status_code == 200, first.text
        answer = first.json()
        assert [(a["invoice_id"], a["amount_minor"], a["named"], a["balance_minor"]) for a in answer["allocations"]] == [
            (named, 100_000, True, 0),
            (sooner, 100_000, False, 0),
        ]
        assert (answer["payment"]["customer_id"], answer["credit_minor"]) == (customer, 50_000)

        # redelivered (the same event id): the first answer; another event for the same PaymentIntent (another
        # id, another time): the payment as first received, credited once
        redelivered = await stripe.post("/webhooks/stripe", content=signed[0], headers=signed[1])
        assert (redelivered.status_code, redelivered.json()) == (200, answer)
        other = payment_intent(f"evt_{uuid.uuid4().hex[:10]}", intent, 250_000, now, invoice_id=named)
        again = await stripe.post("/webhooks/stripe", content=(resent := stripe_signed(other))[0], headers=resent[1])
        assert (again.status_code, again.json()) == (200, answer)

        for invoice_id in (named, sooner):
            expected = {allocation_id(intent, invoice_id): 100_000}
            await eventually(lambda i=invoice_id, e=expected: _recorded_as(api_stack, i, e))
        book = (await ops.get(f"/customers/{customer}/payments")).json()
        assert list(book["payments"]) == [intent] and credit_of(book) == 50_000
        assert await api_stack.pool.fetchval(
            "SELECT target FROM payment_claims WHERE customer_id = $1 AND payment_id = $2", customer, intent
        ) == "customer"


async def test_a_stripe_payment_whose_customer_is_not_its_invoices_is_kept_and_pays_neither(api_stack):
    customer, stranger = f"CUST-{uuid.uuid4().hex[:8]}", f"CUST-{uuid.uuid4().hex[:8]}"
    intent = f"pi_{uuid.uuid4().hex[:12]}"
    async with api_stack.http(None) as stripe, api_stack.http() as ops:
        [invoice_id] = await open_invoices(ops, api_stack, customer, 14)
        event = payment_intent(
            f"evt_{uuid.uuid4().hex[:10]}", intent, 40_000, int(time.time()), invoice_id=invoice_id, customer_id=stranger
        )
        kept = await stripe.post("/webhooks/stripe", content=(signed := stripe_signed(event))[0], headers=signed[1])
        assert kept.status_code == 202, kept.text
        assert (kept.json()["status"], kept.json()["invoice_id"]) == ("unapplied", invoice_id)
        assert f"metadata.customer_id '{stranger}' is not the customer of invoice {invoice_id} ({customer})" in (
            kept.json()["reason"]
        )
        again = await stripe.post("/webhooks/stripe", content=signed[0], headers=signed[1])
        assert (again.status_code, again.json()) == (202, kept.json())

        listed = [k for k in (await ops.get("/payments/unapplied")).json()["items"] if k["payment_id"] == intent]
        assert [(k["source"], k["amount_minor"], k["applied_at"]) for k in listed] == [("stripe", 40_000, None)]
        assert await recorded(api_stack, invoice_id) == {}
        assert await live_balance(ops, invoice_id) == 100_000
        for who in (customer, stranger):
            assert (await ops.get(f"/customers/{who}/payments")).json()["payments"] == {}
        assert await api_stack.pool.fetchval("SELECT count(*) FROM payment_claims WHERE payment_id = $1", intent) == 0

        # in another currency than the invoice's: kept too, its customer not paid
        dollars = f"pi_{uuid.uuid4().hex[:12]}"
        event = payment_intent(f"evt_{uuid.uuid4().hex[:10]}", dollars, 40_000, int(time.time()), "usd", invoice_id=invoice_id)
        kept = await stripe.post("/webhooks/stripe", content=(signed := stripe_signed(event))[0], headers=signed[1])
        assert kept.status_code == 202 and "payment currency USD does not match invoice currency EUR" in kept.json()["reason"]
        assert (await ops.get(f"/customers/{customer}/payments")).json()["payments"] == {}
        assert await recorded(api_stack, invoice_id) == {}


async def test_a_stripe_payment_recorded_on_its_invoice_before_is_answered_there_not_paid_again(api_stack):
    """A PaymentIntent recorded on the invoice itself (its id claimed for the invoice, as before Stripe payments went
    through the customer): another event for it gets the invoice's answer, and the customer is not paid it."""
    customer = f"CUST-{uuid.uuid4().hex[:8]}"
    intent = f"pi_{uuid.uuid4().hex[:12]}"
    async with api_stack.http(None) as stripe, api_stack.http() as ops:
        [invoice_id] = await open_invoices(ops, api_stack, customer, 14)
        direct = {"payment_id": intent, "amount_minor": 30_000, "currency": "EUR"}
        assert (await ops.post(f"/invoices/{invoice_id}/payments", json=direct)).status_code == 200
        event = payment_intent(f"evt_{uuid.uuid4().hex[:10]}", intent, 30_000, int(time.time()), invoice_id=invoice_id)
        answered = await stripe.post("/webhooks/stripe", content=(signed := stripe_signed(event))[0], headers=signed[1])
        assert answered.status_code == 200, answered.text
        assert (answered.json()["status"], answered.json()["balance_minor"]) == ("applied", 70_000)
        await eventually(lambda: _recorded_as(api_stack, invoice_id, {intent: 30_000}))
        assert (await ops.get(f"/customers/{customer}/payments")).json()["payments"] == {}
