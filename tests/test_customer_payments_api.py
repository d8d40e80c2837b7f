"""Cash application over the API, on the dev server with a real worker and Postgres: one transfer split over
three invoices of one customer, a payment id that is one payment per customer, and kept payments applied once
however many applications race."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

from activities.ledger import read_events
from tests.api_stack import (
    INTEGRATION_TOKEN,
    METRICS_TOKEN,
    ApiStack,
    assert_problem,
    eventually,
    invoice_json,
    local_today,
)
from tests.cli_helpers import cli_env, dunning, succeeded
from tests.test_statement_import import stripe_signed


def customer_payment(payment_id: str, amount_minor: int, remittance: str = "") -> dict[str, Any]:
    return {
        "payment_id": payment_id,
        "amount_minor": amount_minor,
        "currency": "EUR",
        "received_at": datetime.now(timezone.utc).isoformat(),
        "remittance": remittance,
    }


async def recorded(stack: ApiStack, invoice_id: str) -> dict[str, int]:
    """The payments the invoice's event log records: payment id -> amount."""
    return {
        e.payload().payment_id: e.payload().amount_minor
        for e in await read_events(stack.pool, invoice_id)
        if e.kind.value == "payment_recorded"
    }


async def test_one_transfer_pays_three_invoices_of_one_customer_and_its_id_stays_one_payment(api_stack: ApiStack, dev_env):
    customer = f"CUST-{uuid.uuid4().hex[:8]}"
    today = local_today()
    ids = []
    async with api_stack.http() as ops:
        for days in (10, 14, 20, 30):
            invoice = invoice_json(customer, due_date=(today + timedelta(days=days)).isoformat())
            assert (await ops.post("/invoices", json=invoice)).status_code == 201
            ids.append(invoice["invoice_id"])
        oldest, middle, named, spare = ids

        transfer = customer_payment("T-1", 250_000, remittance=f"invoice {named} and the rest")
        async with api_stack.http(METRICS_TOKEN) as scraper, api_stack.http(None) as anonymous:
            assert (await scraper.post(f"/customers/{customer}/payments", json=transfer)).status_code == 403
            assert (await anonymous.post(f"/customers/{customer}/payments", json=transfer)).status_code == 401
        async with api_stack.http(INTEGRATION_TOKEN) as integration:
            paid = await integration.post(f"/customers/{customer}/payments", json=transfer)
        assert paid.status_code == 200, paid.text
        answer = paid.json()
        assert [(a["invoice_id"], a["amount_minor"], a["payment_id"]) for a in answer["allocations"]] == [
            (named, 100_000, f"T-1--{named}"),
            (oldest, 100_000, f"T-1--{oldest}"),
            (middle, 50_000, f"T-1--{middle}"),
        ]
        assert answer["credit_minor"] == 0 and all(a["delivered"] for a in answer["allocations"])
        for invoice_id, amount in ((named, 100_000), (oldest, 100_000), (middle, 50_000)):
            await eventually(lambda i=invoice_id, a=amount: _has(api_stack, i, {f"T-1--{i}": a}))
        assert (await ops.get(f"/invoices/{middle}/status")).json()["balance_minor"] == 50_000
        book = (await ops.get(f"/customers/{customer}/payments")).json()
        assert list(book["payments"]) == ["T-1"] and book["payments"]["T-1"]["credit_minor"] == 0
        printed = succeeded(await dunning(cli_env(dev_env, api_stack.settings.task_queue), "customer", "cash", customer))
        assert printed.splitlines()[-1] == "credit: none"
        assert f"-> 1000.00 EUR to {named}, 1000.00 EUR to {oldest}, 500.00 EUR to {middle}" in printed, printed

        # the same transfer again: the same answer; other content under its id, or its id on an invoice: 409
        again = await ops.post(f"/customers/{customer}/payments", json=transfer)
        assert (again.status_code, again.json()) == (200, answer)
        assert_problem(
            await ops.post(f"/customers/{customer}/payments", json={**transfer, "amount_minor": 1}), 409, "payment-conflict"
        )
        on_invoice = await ops.post(f"/invoices/{spare}/payments", json={"payment_id": "T-1", "amount_minor": 250_000, "currency": "EUR"})
        assert_problem(on_invoice, 409, "payment-conflict", "customer's payment path")

        # one payment id posted concurrently to two invoices of the customer: recorded once
        posts = [
            ops.post(f"/invoices/{i}/payments", json={"payment_id": "C-7", "amount_minor": 10_000, "currency": "EUR"})
            for i in (middle, spare)
        ]
        answers = await asyncio.gather(*posts)
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]

        async def recorded_once() -> bool:
            return [i for i in ids if "C-7" in await recorded(api_stack, i)] in ([middle], [spare])

        await eventually(recorded_once)


async def test_concurrent_applications_of_one_kept_payment_credit_it_once(api_stack: ApiStack):
    customer = f"CUST-{uuid.uuid4().hex[:8]}"
    async with api_stack.http() as ops:
        invoices = [invoice_json(customer) for _ in range(2)]
        for invoice in invoices:
            assert (await ops.post("/invoices", json=invoice)).status_code == 201
        kept = await ops.post("/invoices/NO-SUCH-INVOICE/payments", json={"payment_id": "U-1", "amount_minor": 30_000, "currency": "EUR"})
        assert kept.status_code == 202, kept.text

        targets = [{"customer_id": customer}] * 3 + [{"invoice_id": i["invoice_id"]} for i in invoices]
        answers = await asyncio.gather(*(ops.post("/payments/unapplied/U-1/apply", json=t) for t in targets))
        won = [t for t, a in zip(targets, answers, strict=True) if a.status_code == 200]
        assert all(a.status_code in (200, 409) for a in answers), [a.text for a in answers]
        assert won and all(t == won[0] for t in won), [a.text for a in answers]

        async def credited_once() -> bool:
            found = [
                (invoice["invoice_id"], pid, amount)
                for invoice in invoices
                for pid, amount in (await recorded(api_stack, invoice["invoice_id"])).items()
                if pid.startswith("U-1")
            ]
            return len(found) == 1 and found[0][2] == 30_000

        await eventually(credited_once)
        applied = (await ops.get("/payments/unapplied", params={"include_applied": "true"})).json()["items"]
        assert [p["applied_invoice_id"] for p in applied if p["payment_id"] == "U-1"] == [
            won[0].get("invoice_id") or f"customer:{customer}"
        ]


async def _has(stack: ApiStack, invoice_id: str, payments: dict[str, int]) -> bool:
    return await recorded(stack, invoice_id) == payments


def statement(today: date, remittance: str, amount: str) -> bytes:
    """A camt.053 with one booked credit of ``amount`` (major units) whose free text is ``remittance``."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>
<GrpHdr><MsgId>STMT-CASH-{uuid.uuid4().hex[:8]}</MsgId><CreDtTm>{today}T18:05:12+02:00</CreDtTm></GrpHdr>
<Stmt><Id>STMT-CASH-A</Id><CreDtTm>{today}T18:00:00+02:00</CreDtTm>
<Acct><Id><IBAN>RO49AAAA1B31007593840000</IBAN></Id><Ccy>EUR</Ccy></Acct>
<Ntry><NtryRef>1</NtryRef><Amt Ccy="EUR">{amount}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
<ValDt><Dt>{today}</Dt></ValDt><AcctSvcrRef>CASH-{uuid.uuid4().hex[:8]}</AcctSvcrRef>
<NtryDtls><TxDtls><Amt Ccy="EUR">{amount}</Amt><CdtDbtInd>CRDT</CdtDbtInd>
<RmtInf><Ustrd>{remittance}</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>
</Stmt></BkToCstmrStmt></Document>""".encode()


async def test_a_statement_line_naming_several_invoices_and_a_stripe_payment_for_a_customer_are_split(api_stack: ApiStack):
    customer = f"CUST-{uuid.uuid4().hex[:8]}"
    today = local_today()
    async with api_stack.http() as ops, api_stack.http(None) as stripe:
        ids = []
        for days in (5, 10, 20):
            invoice = invoice_json(customer, due_date=(today + timedelta(days=days)).isoformat())
            assert (await ops.post("/invoices", json=invoice)).status_code == 201
            ids.append(invoice["invoice_id"])
        soonest, first, second = ids
        projected = "SELECT count(*) = 3 FROM projected_invoices WHERE customer_id = $1"
        await eventually(lambda: api_stack.pool.fetchval(projected, customer))  # statements match against the read model

        document = statement(today, f"Payment of {second} and {first}", "1500.00")
        imported = await ops.post("/payments/statements", content=document, headers={"Content-Type": "application/xml"})
        assert imported.status_code == 200, imported.text
        [line] = imported.json()["lines"]
        assert (line["status"], line["customer_id"], line["matched_by"]) == ("matched", customer, "invoice numbers")
        assert line["allocations"] == {second: 100_000, first: 50_000} and line["credit_minor"] == 0
        again = await ops.post("/payments/statements", content=document, headers={"Content-Type": "application/xml"})
        assert again.json()["duplicate"] == 1

        event = {
            "id": f"evt_{uuid.uuid4().hex[:10]}",
            "type": "payment_intent.succeeded",
            "created": int(datetime.now(timezone.utc).timestamp()),
            "data": {
                "object": {
                    "id": "pi_cash1",
                    "amount_received": 120_000,
                    "currency": "eur",
                    "description": f"pays {soonest}",
                    "metadata": {"customer_id": customer},
                }
            },
        }
        body, headers = stripe_signed(event)
        paid = await stripe.post("/webhooks/stripe", content=body, headers=headers)
        assert paid.status_code == 200, paid.text
        assert [(a["invoice_id"], a["amount_minor"]) for a in paid.json()["allocations"]] == [
            (soonest, 100_000),
            (first, 20_000),
        ]
        await eventually(lambda: _has(api_stack, soonest, {f"pi_cash1--{soonest}": 100_000}))
