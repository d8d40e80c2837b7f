"""The API over real HTTP against the embedded stack (dev server, Postgres, worker, SMTP).

One customer's story: an invoice paid in parts around a dispute and a payment plan; another one
escalated in real time to suspension, which blocks the customer's support and new orders until a
signed webhook payment (part of it first kept unapplied under a mistyped reference) pays it off.
At the end the projections served by the API equal a rebuild from the event log.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from activities.ledger import read_events
from activities.projections import rebuild
from client.invoices import invoice_handle
from tests.api_stack import (
    INTEGRATION_TOKEN,
    METRICS_TOKEN,
    ApiStack,
    assert_problem,
    due_in,
    eventually,
    invoice_json,
    local_today,
    signed,
)

CUSTOMER = f"CUST-{uuid.uuid4().hex[:6]}"


def payment(payment_id: str, amount_minor: int, currency: str = "EUR") -> dict[str, Any]:
    return {"payment_id": payment_id, "amount_minor": amount_minor, "currency": currency}


async def event_kinds(stack: ApiStack, invoice_id: str) -> list[str]:
    return [e.kind.value for e in await read_events(stack.pool, invoice_id)]


async def test_invoice_paid_in_parts_around_a_dispute_and_a_plan(api_stack: ApiStack):
    invoice = {**invoice_json(CUSTOMER, policy_name="standard"), "policy": None}  # the integration role names a policy
    invoice_id = invoice["invoice_id"]
    async with api_stack.http(INTEGRATION_TOKEN) as integration, api_stack.http() as ops:
        created = await integration.post("/invoices", json=invoice)
        assert created.status_code == 201, created.text
        assert created.headers["location"] == f"/invoices/{invoice_id}"
        assert created.json()["state"] == "issued" and created.json()["balance_minor"] == 100_000

        again = await integration.post("/invoices", json=invoice)
        assert again.status_code == 200 and again.json()["invoice_id"] == invoice_id
        assert_problem(await integration.post("/invoices", json={**invoice, "amount_minor": 5}), 409, "invoice-exists")

        paid = await integration.post(f"/invoices/{invoice_id}/payments", json=payment("P-1", 30_000))
        assert paid.status_code == 200, paid.text
        assert paid.json() == {
            "payment_id": "P-1",
            "invoice_id": invoice_id,
            "status": "applied",
            "amount_minor": 30_000,
            "currency": "EUR",
            "balance_minor": 70_000,
            "reason": None,
        }
        repeated = await integration.post(f"/invoices/{invoice_id}/payments", json=payment("P-1", 30_000))
        assert (repeated.status_code, repeated.json()) == (200, paid.json())
        assert_problem(
            await integration.post(f"/invoices/{invoice_id}/payments", json=payment("P-1", 31_000)),
            409,
            "payment-conflict",
            "already recorded",
        )

        assert_problem(
            await integration.post(f"/invoices/{invoice_id}/disputes", json={"reason": "hours billed twice"}), 403, "forbidden"
        )
        disputed = await ops.post(f"/invoices/{invoice_id}/disputes", json={"reason": "hours billed twice"})
        assert disputed.status_code == 200 and disputed.json()["state"] == "disputed"
        resolved = await ops.post(
            f"/invoices/{invoice_id}/disputes/resolve", json={"outcome": "upheld", "credit_minor": 10_000, "note": "2 h"}
        )
        assert resolved.json()["state"] == "issued" and resolved.json()["balance_minor"] == 60_000

        today = local_today()
        plan = {
            "instalments": [
                {"due_date": (today + timedelta(days=7)).isoformat(), "amount_minor": 30_000},
                {"due_date": (today + timedelta(days=37)).isoformat(), "amount_minor": 30_000},
            ]
        }
        planned = await ops.post(f"/invoices/{invoice_id}/payment-plan", json=plan)
        assert planned.status_code == 200, planned.text
        assert planned.json()["state"] == "payment_plan" and planned.json()["on_payment_plan"]

        first = await integration.post(f"/invoices/{invoice_id}/payments", json=payment("P-2", 30_000))
        assert first.json()["balance_minor"] == 30_000
        last = await integration.post(f"/invoices/{invoice_id}/payments", json=payment("P-3", 30_000))
        assert last.json()["balance_minor"] == 0
        outcome = await invoice_handle(api_stack.client, invoice_id).result()
        assert outcome.state.value == "paid"

        # the workflow has ended: a repeat is answered from the event log, a new payment is refused
        after_close = await integration.post(f"/invoices/{invoice_id}/payments", json=payment("P-3", 30_000))
        assert (after_close.status_code, after_close.json()) == (200, last.json())
        assert_problem(
            await integration.post(f"/invoices/{invoice_id}/payments", json=payment("P-4", 100)), 409, "invoice-closed"
        )
        assert_problem(await ops.post(f"/invoices/{invoice_id}/resend"), 409, "invoice-closed")

        kinds = await event_kinds(api_stack, invoice_id)
        assert kinds.count("payment_recorded") == 3
        assert {"dispute_opened", "dispute_resolved", "payment_plan_agreed", "invoice_closed"} <= set(kinds)

        detail = await eventually(lambda: _projected(integration, invoice_id, "paid"))
        assert detail["status"]["state"] == "paid" and detail["invoice"]["paid_minor"] == 90_000
        assert detail["invoice"]["credited_minor"] == 10_000

        events = await integration.get(f"/invoices/{invoice_id}/events", params={"limit": 2, "offset": 1})
        assert events.status_code == 200
        body = events.json()
        assert (body["limit"], body["offset"], body["total"]) == (2, 1, len(kinds))
        assert [e["kind"] for e in body["items"]] == kinds[1:3]
        assert 'rel="next"' in events.headers["link"] and "offset=3" in events.headers["link"]

        listed = await integration.get("/invoices", params={"customer_id": CUSTOMER, "state": "paid"})
        assert [i["invoice_id"] for i in listed.json()["items"]] == [invoice_id]


async def _projected(http: httpx.AsyncClient, invoice_id: str, state: str) -> dict[str, Any] | None:
    detail = (await http.get(f"/invoices/{invoice_id}")).json()
    return detail if detail["invoice"] and detail["invoice"]["state"] == state else None


async def test_a_recovery_after_a_write_off_is_applied_and_its_repeat_answered_from_the_log(api_stack: ApiStack):
    invoice = due_in(1, [{"action": "legal_review", "offset": "PT1S"}], customer_id=CUSTOMER)
    invoice["policy"]["recoveries_accepted_for"] = "PT8S"
    invoice_id = invoice["invoice_id"]
    async with api_stack.http(INTEGRATION_TOKEN) as integration, api_stack.http() as ops:
        assert (await ops.post("/invoices", json=invoice)).status_code == 201  # an inline policy: ops

        async def in_review() -> bool:
            return (await ops.get(f"/invoices/{invoice_id}/status")).json()["state"] == "legal_review"

        await eventually(in_review, timeout=30)
        written_off = await ops.post(f"/invoices/{invoice_id}/legal-decision", json={"decision": "write_off"})
        assert written_off.json()["state"] == "written_off", written_off.text
        recovered = await integration.post(f"/invoices/{invoice_id}/payments", json=payment("R-1", 30_000))
        assert recovered.status_code == 200, recovered.text
        assert recovered.json()["status"] == "applied" and recovered.json()["balance_minor"] == 0
        outcome = await invoice_handle(api_stack.client, invoice_id).result()
        assert outcome.state.value == "written_off" and outcome.recovered_minor == 30_000
        # the workflow has ended: the repeat is answered from the event log's recovery
        repeated = await integration.post(f"/invoices/{invoice_id}/payments", json=payment("R-1", 30_000))
        assert (repeated.status_code, repeated.json()) == (200, recovered.json())
        assert "recovery_recorded" in await event_kinds(api_stack, invoice_id)


async def test_an_ultimatum_stops_orders_without_a_cut_until_a_webhook_payment_closes_it(api_stack: ApiStack):
    """A suspend stage three seconds after the due moment: the ultimatum names a cut five days ahead (the
    minimum notice), new orders stop, nothing is cut; the payments close the invoice before the cut."""
    stages = [{"action": "reminder", "offset": "PT1S"}, {"action": "ultimatum", "offset": "PT2S"},
              {"action": "suspend", "offset": "PT3S"}]
    invoice = due_in(1, stages, customer_id=CUSTOMER, service="hosting")
    invoice_id = invoice["invoice_id"]
    async with api_stack.http() as ops, api_stack.http(None) as anonymous:
        assert (await ops.post("/invoices", json=invoice)).status_code == 201  # an inline policy: ops

        async def cut_announced() -> dict[str, Any] | None:
            status = (await ops.get(f"/invoices/{invoice_id}/status")).json()
            return status if status["state"] == "ultimatum" and status["next_action"] else None

        status = await eventually(cut_announced, timeout=30)
        cut_at = datetime.fromisoformat(status["next_action"]["at"])
        assert cut_at - datetime.now(timezone.utc) > timedelta(days=4, hours=23)
        standing = (await ops.get(f"/customers/{CUSTOMER}/standing")).json()
        assert standing["suspended_invoices"] == [] and standing["blocked_services"] == []
        assert not standing["new_orders_allowed"]

        # the payer mistyped the reference: the money is kept, shown, then applied by ops
        typo = {"invoice_id": invoice_id + "-X", "payment_id": "W-1", "amount_minor": 40_000, "currency": "EUR",
                "received_at": datetime.now(timezone.utc).isoformat()}
        raw, headers = signed(typo)
        kept = await anonymous.post("/webhooks/payments", content=raw, headers=headers)
        assert kept.status_code == 202, kept.text
        assert kept.json()["status"] == "unapplied" and "unknown invoice" in kept.json()["reason"]
        replayed = await anonymous.post("/webhooks/payments", content=raw, headers=headers)
        assert (replayed.status_code, replayed.json()) == (202, kept.json())
        unapplied = (await ops.get("/payments/unapplied")).json()
        assert [(p["payment_id"], p["invoice_id"], p["source"]) for p in unapplied["items"]] == [
            ("W-1", invoice_id + "-X", "webhook")
        ]
        applied = await ops.post("/payments/unapplied/W-1/apply", json={"invoice_id": invoice_id})
        assert applied.status_code == 200, applied.text
        assert applied.json()["balance_minor"] == 60_000
        assert (await ops.get("/payments/unapplied")).json()["total"] == 0
        everything = (await ops.get("/payments/unapplied", params={"include_applied": "true"})).json()
        assert everything["items"][0]["applied_invoice_id"] == invoice_id

        rest = {"invoice_id": invoice_id, "payment_id": "W-2", "amount_minor": 60_000, "currency": "EUR",
                "received_at": datetime.now(timezone.utc).isoformat()}
        raw, headers = signed(rest)
        settled = await anonymous.post("/webhooks/payments", content=raw, headers=headers)
        assert settled.status_code == 200, settled.text
        assert settled.json()["balance_minor"] == 0
        await invoice_handle(api_stack.client, invoice_id).result()
        events_before_replay = await event_kinds(api_stack, invoice_id)
        replayed = await anonymous.post("/webhooks/payments", content=raw, headers=headers)
        assert (replayed.status_code, replayed.json()) == (200, settled.json())
        assert await event_kinds(api_stack, invoice_id) == events_before_replay
        assert events_before_replay.count("payment_recorded") == 2
        assert "cut_announced" in events_before_replay and "service_suspended" not in events_before_replay

        # money that arrives for the closed invoice is kept, not lost
        late = {**rest, "payment_id": "W-3", "amount_minor": 500}
        raw, headers = signed(late)
        kept_late = await anonymous.post("/webhooks/payments", content=raw, headers=headers)
        assert kept_late.status_code == 202, kept_late.text
        assert "closed" in kept_late.json()["reason"]
        assert [p["payment_id"] for p in (await ops.get("/payments/unapplied")).json()["items"]] == ["W-3"]

        async def restored() -> dict[str, Any] | None:
            standing = (await ops.get(f"/customers/{CUSTOMER}/standing")).json()
            return standing if not standing["suspended_invoices"] else None

        standing = await eventually(restored)
        assert standing["support_allowed"] and standing["blocked_services"] == [] and standing["new_orders_allowed"]


async def test_projections_served_equal_a_rebuild_from_the_events(api_stack: ApiStack):
    reads = [
        ("/invoices", {"customer_id": CUSTOMER, "limit": 500}),
        (f"/customers/{CUSTOMER}", {}),
        ("/customers", {}),
        ("/reports/aging", {}),
        ("/reports/funnel", {}),
        ("/reports/dso", {"period_days": 30}),
        ("/reports/aging", {"format": "csv"}),
    ]
    async with api_stack.http() as ops:
        open_invoice = invoice_json(CUSTOMER)
        assert (await ops.post("/invoices", json=open_invoice)).status_code == 201

        async def caught_up() -> bool:
            health = (await ops.get("/health")).json()
            return health["projection_lag"]["events_behind"] == 0 and bool(
                (await ops.get(f"/invoices/{open_invoice['invoice_id']}")).json()["invoice"]
            )

        await eventually(caught_up)
        served = [await ops.get(path, params=params) for path, params in reads]
        assert all(r.status_code == 200 for r in served), [r.text for r in served]
        assert served[0].json()["total"] >= 3
        assert served[-1].headers["content-type"].startswith("text/csv")
        assert served[-1].text.splitlines()[0] == "currency,current,d1_30,d31_60,d61_90,d90_plus,total"
        funnel_csv = await ops.get("/reports/funnel", headers={"Accept": "text/csv"})
        # the customer's invoices of the tests above and this one: four issued, one paid while only issued
        assert funnel_csv.text.splitlines()[:2] == ["stage,reached,paid_at_stage", "issued,4,1"]

        await rebuild(api_stack.pool)
        rebuilt = [await ops.get(path, params=params) for path, params in reads]
        assert [_body(r) for r in rebuilt] == [_body(r) for r in served]


def _body(response: httpx.Response) -> Any:
    return response.text if response.headers["content-type"].startswith("text/csv") else response.json()


async def test_concurrent_repeats_of_a_payment_record_it_once(api_stack: ApiStack):
    invoice = invoice_json(CUSTOMER)
    async with api_stack.http(INTEGRATION_TOKEN) as integration, api_stack.http() as ops:
        assert (await ops.post("/invoices", json=invoice)).status_code == 201  # an inline policy: ops
        url = f"/invoices/{invoice['invoice_id']}/payments"
        answers = await asyncio.gather(*(integration.post(url, json=payment("C-1", 25_000)) for _ in range(5)))
        # the workflow's own record (the read models follow within a moment)
        status = (await integration.get(f"/invoices/{invoice['invoice_id']}/status", params={"live": "true"})).json()
    assert {(a.status_code, a.json()["balance_minor"]) for a in answers} == {(200, 75_000)}
    assert status["paid_minor"] == 25_000

    async def receipt_sent() -> list[str]:
        kinds = await event_kinds(api_stack, invoice["invoice_id"])
        return kinds if kinds.count("notice_sent") == 2 else []

    assert (await eventually(receipt_sent)).count("payment_recorded") == 1


async def test_the_api_serves_the_service_metrics_from_the_event_log(api_stack: ApiStack):
    """After the stories above: /metrics (a scraper's token) counts what Postgres recorded; without a token, or
    with an integration's, it tells nothing."""
    async with api_stack.http(token=None) as http:
        assert_problem(await http.get("/metrics"), 401, "unauthorized", "bearer token")
    async with api_stack.http(token=INTEGRATION_TOKEN) as http:
        assert_problem(await http.get("/metrics"), 403, "forbidden", "metrics or ops role")
    async with api_stack.http(token=METRICS_TOKEN) as http:
        assert_problem(await http.get("/invoices"), 403, "forbidden")  # a scraper's token reads nothing else
        response = await http.get("/metrics")
    assert response.status_code == 200
    sent = await api_stack.pool.fetchval("SELECT count(*) FROM notice_deliveries WHERE status = 'sent'")
    payments = await api_stack.pool.fetchval("SELECT count(*) FROM invoice_events WHERE kind = 'payment_recorded'")
    assert sent > 0 and payments > 0
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in response.text.splitlines()
        if line and not line.startswith("#")
    }
    assert sum(v for k, v in samples.items() if k.startswith("dunning_notices_total") and 'status="sent"' in k) == sent
    assert sum(v for k, v in samples.items() if k.startswith("dunning_payments_recorded_total")) == payments
    assert "dunning_projection_lag_events" in samples
