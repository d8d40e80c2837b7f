"""Bad requests to every endpoint get the right status and a clear RFC 9457 problem, and change nothing:
not the event log, not the unapplied payments or webhook notifications, not the workflow's history.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from tests.api_stack import (
    INTEGRATION_TOKEN,
    OPS_TOKEN,
    ApiStack,
    assert_problem,
    eventually,
    invoice_json,
    signed,
)

UNKNOWN = "NO-SUCH-INVOICE"


@dataclass
class Bad:
    """A bad request and the problem it must get; ``{id}`` in the path is the test invoice."""

    method: str
    path: str
    status: int
    kind: str
    fragment: str = ""
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    token: str | None = OPS_TOKEN
    webhook: Callable[[str], tuple[bytes, dict[str, str]]] | None = None  # builds a (signed) webhook request


def pay(**fields: Any) -> dict[str, Any]:
    return {"payment_id": "BAD-1", "amount_minor": 100, "currency": "EUR", **fields}


def notification(invoice_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "invoice_id": invoice_id,
        "payment_id": "HOOK-1",
        "amount_minor": 100,
        "currency": "EUR",
        "received_at": datetime.now(timezone.utc).isoformat(),
        **fields,
    }


def hook(at_offset: float = 0, secret: str | None = None, **fields: Any) -> Callable[[str], tuple[bytes, dict[str, str]]]:
    def build(invoice_id: str) -> tuple[bytes, dict[str, str]]:
        kwargs: dict[str, Any] = {"at": time.time() + at_offset}
        if secret:
            kwargs["secret"] = secret
        return signed(notification(invoice_id, **fields), **kwargs)

    return build


def hook_raw(raw: bytes) -> Callable[[str], tuple[bytes, dict[str, str]]]:
    return lambda invoice_id: signed(raw)


def body_swapped(invoice_id: str) -> tuple[bytes, dict[str, str]]:
    _, headers = signed(notification(invoice_id))
    return json_bytes(notification(invoice_id, amount_minor=1)), headers


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def unsigned(invoice_id: str) -> tuple[bytes, dict[str, str]]:
    return json_bytes(notification(invoice_id)), {"Content-Type": "application/json"}


def bad_timestamp(invoice_id: str) -> tuple[bytes, dict[str, str]]:
    raw, headers = signed(notification(invoice_id))
    return raw, {**headers, "webhook-timestamp": "yesterday"}


IN_A_MONTH = (date.today() + timedelta(days=30)).isoformat()
PLAN_WRONG_SUM = {"instalments": [{"due_date": IN_A_MONTH, "amount_minor": 1}]}
CASES: dict[str, Bad] = {
    # authentication and roles
    "no token": Bad("POST", "/invoices", 401, "unauthorized", "bearer token", json=invoice_json(), token=None),
    "unknown token": Bad("GET", "/invoices/{id}", 401, "unauthorized", "not valid", token="guess"),
    "basic auth": Bad("GET", "/invoices", 401, "unauthorized", "bearer token", token=None,
                      headers={"Authorization": "Basic b3BzOm9wcw=="}),
    "integration opens dispute": Bad("POST", "/invoices/{id}/disputes", 403, "forbidden", "ops role",
                                     json={"reason": "x"}, token=INTEGRATION_TOKEN),
    "integration marks factored": Bad("POST", "/invoices/{id}/factored", 403, "forbidden", "ops role",
                                      json={"factor": "F", "advance_minor": 1}, token=INTEGRATION_TOKEN),
    "integration reads aging": Bad("GET", "/reports/aging", 403, "forbidden", token=INTEGRATION_TOKEN),
    "integration lists unapplied": Bad("GET", "/payments/unapplied", 403, "forbidden", token=INTEGRATION_TOKEN),
    "integration reads standing": Bad("GET", "/customers/C/standing", 403, "forbidden", token=INTEGRATION_TOKEN),
    # malformed bodies
    "truncated json": Bad("POST", "/invoices", 400, "malformed-json", "not valid JSON", content=b'{"invoice_id": ',
                          headers={"Content-Type": "application/json"}),
    "trailing comma": Bad("POST", "/invoices/{id}/payments", 400, "malformed-json", "not valid JSON",
                          content=b'{"payment_id": "x",}', headers={"Content-Type": "application/json"}),
    "form body": Bad("POST", "/invoices/{id}/disputes", 415, "unsupported-media-type", "application/json",
                     content=b"reason=late", headers={"Content-Type": "application/x-www-form-urlencoded"}),
    "no body": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", "body is required"),
    "array body": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", json=[]),
    "too large": Bad("POST", "/invoices", 413, "content-too-large", "limit", content=b" " * 100_000,
                     headers={"Content-Type": "application/json"}),
    # equipment is named only by registry id, and only the customer's own
    "unknown equipment": Bad("POST", "/invoices", 422, "equipment-refused", "'rtr-nowhere' is not in the registry",
                             json=invoice_json(terms={"remote_disconnect_authorized": True, "equipment_ids": ["rtr-nowhere"]})),
    "another customer's equipment": Bad("POST", "/invoices", 422, "equipment-refused", "does not belong to customer",
                                        json=invoice_json(terms={"remote_disconnect_authorized": True,
                                                                 "equipment_ids": ["fw-other-customer"]})),
    "equipment as a url": Bad("POST", "/invoices", 422, "validation-failed", "equipment_ids",
                              json=invoice_json(terms={"remote_disconnect_authorized": True,
                                                       "equipment_ids": ["http://169.254.169.254/latest"]})),
    # wrong types
    "amount as string": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", "amount_minor",
                            json=pay(amount_minor="100")),
    "amount as float": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", "amount_minor",
                           json=pay(amount_minor=1.5)),
    "amount as bool": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", "amount_minor",
                          json=pay(amount_minor=True)),
    "payment id as number": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", "payment_id",
                                json=pay(payment_id=42)),
    "unknown field": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", "Extra inputs",
                         json=pay(note="hi")),
    "dispute reason number": Bad("POST", "/invoices/{id}/disputes", 422, "validation-failed", "reason", json={"reason": 5}),
    "resolve outcome": Bad("POST", "/invoices/{id}/disputes/resolve", 422, "validation-failed", "outcome",
                           json={"outcome": "maybe"}),
    "plan not a list": Bad("POST", "/invoices/{id}/payment-plan", 422, "validation-failed", "instalments",
                           json={"instalments": "soon"}),
    "settle without amount": Bad("POST", "/invoices/{id}/legal-decision", 422, "validation-failed", "settle_amount_minor",
                                 json={"decision": "settle"}),
    "due before issue": Bad("POST", "/invoices", 422, "validation-failed", "before issue date",
                            json=invoice_json(issue_date="2026-02-01", due_date="2026-01-01")),
    "unsupported language": Bad("POST", "/invoices", 422, "validation-failed", "unsupported language",
                                json=invoice_json(language="xx")),
    # negative and huge amounts
    "negative payment": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", "greater than 0",
                            json=pay(amount_minor=-1)),
    "zero payment": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", "greater than 0",
                        json=pay(amount_minor=0)),
    "huge payment": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", "amount_minor",
                        json=pay(amount_minor=10**16)),
    "enormous payment": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", "amount_minor",
                            json=pay(amount_minor=10**40)),
    "negative invoice": Bad("POST", "/invoices", 422, "validation-failed", "amount_minor",
                            json=invoice_json(amount_minor=-5)),
    "negative credit": Bad("POST", "/invoices/{id}/disputes/resolve", 422, "validation-failed", "credit_minor",
                           json={"outcome": "upheld", "credit_minor": -1}),
    "huge factoring advance": Bad("POST", "/invoices/{id}/factored", 422, "validation-failed", "advance_minor",
                                  json={"factor": "F", "advance_minor": 10**20}),
    "negative instalment": Bad("POST", "/invoices/{id}/payment-plan", 422, "validation-failed", "amount_minor",
                               json={"instalments": [{"due_date": IN_A_MONTH, "amount_minor": -3}]}),
    # unknown ids and paths
    "read unknown": Bad("GET", f"/invoices/{UNKNOWN}", 404, "invoice-not-found", UNKNOWN),
    "status unknown": Bad("GET", f"/invoices/{UNKNOWN}/status", 404, "invoice-not-found", UNKNOWN),
    "events unknown": Bad("GET", f"/invoices/{UNKNOWN}/events", 404, "invoice-not-found", UNKNOWN),
    "dispute unknown": Bad("POST", f"/invoices/{UNKNOWN}/disputes", 404, "invoice-not-found", UNKNOWN, json={"reason": "x"}),
    "resolve unknown": Bad("POST", f"/invoices/{UNKNOWN}/disputes/resolve", 404, "invoice-not-found",
                           json={"outcome": "rejected"}),
    "plan unknown": Bad("POST", f"/invoices/{UNKNOWN}/payment-plan", 404, "invoice-not-found", json=PLAN_WRONG_SUM),
    "resend unknown": Bad("POST", f"/invoices/{UNKNOWN}/resend", 404, "invoice-not-found"),
    "decide unknown": Bad("POST", f"/invoices/{UNKNOWN}/legal-decision", 404, "invoice-not-found", json={"decision": "sue"}),
    "factor unknown": Bad("POST", f"/invoices/{UNKNOWN}/factored", 404, "invoice-not-found",
                          json={"factor": "F", "advance_minor": 1}),
    "customer unknown": Bad("GET", f"/customers/{UNKNOWN}", 404, "customer-not-found", UNKNOWN),
    "apply unknown payment": Bad("POST", "/payments/unapplied/NOPE/apply", 404, "not-found", "NOPE",
                                 json={"invoice_id": "{id}"}),
    "malformed invoice id": Bad("GET", "/invoices/bad id", 422, "validation-failed", "invoice_id"),
    "no such path": Bad("GET", "/nowhere", 404, "not-found", "/nowhere"),
    "wrong method": Bad("DELETE", "/invoices/{id}", 405, "method-not-allowed", "DELETE"),
    # currencies
    "wrong currency": Bad("POST", "/invoices/{id}/payments", 422, "wrong-currency", "does not match invoice currency EUR",
                          json=pay(currency="USD")),
    "not a currency code": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", "currency",
                               json=pay(currency="EURO")),
    "unknown currency": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", "unknown currency",
                            json=pay(currency="XXX")),
    # requests the invoice's state refuses
    "resolve without dispute": Bad("POST", "/invoices/{id}/disputes/resolve", 409, "request-refused", "no dispute",
                                   json={"outcome": "rejected"}),
    "decide without review": Bad("POST", "/invoices/{id}/legal-decision", 409, "request-refused", "no legal review",
                                 json={"decision": "sue"}),
    "plan of wrong sum": Bad("POST", "/invoices/{id}/payment-plan", 409, "request-refused", "sum to", json=PLAN_WRONG_SUM),
    # query parameters
    "limit zero": Bad("GET", "/invoices?limit=0", 422, "validation-failed", "limit"),
    "limit text": Bad("GET", "/invoices?limit=ten", 422, "validation-failed", "limit"),
    "offset negative": Bad("GET", "/invoices/{id}/events?offset=-1", 422, "validation-failed", "offset"),
    "unknown state": Bad("GET", "/invoices?state=bogus", 422, "validation-failed", "state"),
    "dso period zero": Bad("GET", "/reports/dso?period_days=0", 422, "validation-failed", "period_days"),
    "aging date": Bad("GET", "/reports/aging?as_of=yesterday", 422, "validation-failed", "as_of"),
    "report format": Bad("GET", "/reports/funnel?format=xml", 422, "validation-failed", "format"),
    # the payment webhook
    "webhook unsigned": Bad("POST", "/webhooks/payments", 401, "invalid-signature", "not signed", token=None, webhook=unsigned),
    "webhook bearer only": Bad("POST", "/webhooks/payments", 401, "invalid-signature", "not signed", webhook=unsigned),
    "webhook stale": Bad("POST", "/webhooks/payments", 401, "invalid-signature", "stale", token=None, webhook=hook(-3600)),
    "webhook from the future": Bad("POST", "/webhooks/payments", 401, "invalid-signature", "stale", token=None,
                                   webhook=hook(3600)),
    "webhook forged": Bad("POST", "/webhooks/payments", 401, "invalid-signature", "does not match", token=None,
                          webhook=hook(secret="not-the-secret")),
    "webhook body swapped": Bad("POST", "/webhooks/payments", 401, "invalid-signature", "does not match", token=None,
                                webhook=body_swapped),
    # past the year 9999: once an unauthenticated 500 (datetime overflow)
    "webhook timestamp past year 9999": Bad("POST", "/webhooks/payments", 401, "invalid-signature", "stale", token=None,
                                            webhook=lambda invoice_id: signed(notification(invoice_id), at=253_402_300_800)),
    "webhook timestamp of 12 nines": Bad("POST", "/webhooks/payments", 401, "invalid-signature", "stale", token=None,
                                         webhook=lambda invoice_id: signed(notification(invoice_id), at=999_999_999_999)),
    # dates and durations: fixed bounds (any year 2000-2099, offsets of 5 years at most) and today's window
    "invoice due 9999-12-31": Bad("POST", "/invoices", 422, "validation-failed", "due_date: must lie in the years 2000 to 2099",
                                  json=invoice_json(due_date="9999-12-31")),
    "invoice issued ten years ago": Bad("POST", "/invoices", 422, "validation-failed", "issue_date: must lie within 1096 days",
                                        json=invoice_json(issue_date=(date.today() - timedelta(days=3653)).isoformat())),
    "stage offset of 30 years": Bad("POST", "/invoices", 422, "validation-failed", "policy.stages.0.offset: must be at most",
                                    json=invoice_json(policy={"stages": [{"action": "reminder", "offset": "P10950D"}]})),
    "legal review every 20 years": Bad("POST", "/invoices", 422, "validation-failed", "legal_review_again_after",
                                       json=invoice_json(policy={"stages": [{"action": "reminder", "offset": "P1D"}],
                                                                 "legal_review_again_after": "P7300D"})),
    "payment received in year 1": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", "received_at: must lie in the years",
                                      json=pay(received_at="0001-01-01T00:00:00+14:00")),
    "payment received tomorrow": Bad("POST", "/invoices/{id}/payments", 422, "validation-failed", "received_at: must not be in the future",
                                     json=pay(received_at=(datetime.now(timezone.utc) + timedelta(days=1)).isoformat())),
    "instalment in 2098": Bad("POST", "/invoices/{id}/payment-plan", 422, "validation-failed", "instalments.0.due_date: must lie within",
                              json={"instalments": [{"due_date": "2098-01-01", "amount_minor": 100_000}]}),
    "webhook received in year 1": Bad("POST", "/webhooks/payments", 422, "validation-failed", "received_at", token=None,
                                      webhook=hook(received_at="0001-01-01T00:00:00+14:00")),
    "webhook received tomorrow": Bad("POST", "/webhooks/payments", 422, "validation-failed", "received_at: must not be in the future",
                                     token=None, webhook=hook(received_at=(datetime.now(timezone.utc) + timedelta(days=1)).isoformat())),
    "webhook bad timestamp": Bad("POST", "/webhooks/payments", 401, "invalid-signature", "unix seconds", token=None,
                                 webhook=bad_timestamp),
    "webhook malformed json": Bad("POST", "/webhooks/payments", 400, "malformed-json", "not valid JSON", token=None,
                                  webhook=hook_raw(b"{nope")),
    "webhook negative amount": Bad("POST", "/webhooks/payments", 422, "validation-failed", "amount_minor", token=None,
                                   webhook=hook(amount_minor=-100)),
    "webhook unknown currency": Bad("POST", "/webhooks/payments", 422, "validation-failed", "currency", token=None,
                                    webhook=hook(currency="ABC")),
}


@pytest.fixture(scope="module")
async def invoice_id(api_stack: ApiStack) -> AsyncIterator[str]:
    """An open invoice (EUR, due in 14 days) whose workflow has settled into waiting."""
    invoice = invoice_json()
    async with api_stack.http() as http:
        assert (await http.post("/invoices", json=invoice)).status_code == 201

    async def settled() -> bool:
        sent = await api_stack.pool.fetchval(
            "SELECT count(*) FROM invoice_events WHERE invoice_id = $1 AND kind = 'notice_sent'", invoice["invoice_id"]
        )
        before = await api_stack.history_length(invoice["invoice_id"])
        return bool(sent) and before == await api_stack.history_length(invoice["invoice_id"])

    await eventually(settled)
    yield invoice["invoice_id"]


async def snapshot(stack: ApiStack, invoice_id: str) -> tuple[Any, ...]:
    """Everything a request could change: event rows, kept payments, notifications, the workflow's history."""
    return (
        [tuple(r) for r in await stack.pool.fetch("SELECT invoice_id, sequence, kind FROM invoice_events ORDER BY position")],
        [tuple(r) for r in await stack.pool.fetch("SELECT * FROM unapplied_payments ORDER BY payment_id")],
        [tuple(r) for r in await stack.pool.fetch("SELECT signature FROM payment_notifications ORDER BY signature")],
        await stack.history_length(invoice_id),
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_bad_request_gets_a_problem_and_changes_nothing(api_stack: ApiStack, invoice_id: str, case: Bad):
    before = await snapshot(api_stack, invoice_id)
    content, headers = case.content, dict(case.headers)
    if case.webhook:
        content, signed_headers = case.webhook(invoice_id)
        headers.update(signed_headers)
    body = _with_id(case.json, invoice_id)
    async with api_stack.http(case.token) as http:
        response = await http.request(
            case.method, case.path.replace("{id}", invoice_id), json=body, content=content, headers=headers
        )
    assert_problem(response, case.status, case.kind, case.fragment)
    if case.status == 401:
        assert response.headers["www-authenticate"].split()[0] in ("Bearer", "HMAC")
    if case.status == 405:
        assert "GET" in response.headers["allow"]
    assert await snapshot(api_stack, invoice_id) == before


def _with_id(body: Any, invoice_id: str) -> Any:
    if isinstance(body, dict):
        return {k: (invoice_id if v == "{id}" else v) for k, v in body.items()}
    return body


async def test_a_payment_received_before_the_invoice_was_issued_is_refused(api_stack: ApiStack, invoice_id: str):
    async def projected() -> date | None:
        return await api_stack.pool.fetchval("SELECT issue_date FROM projected_invoices WHERE invoice_id = $1", invoice_id)

    issued = await eventually(projected)
    before = await snapshot(api_stack, invoice_id)
    received = datetime.combine(issued - timedelta(days=2), datetime.min.time(), timezone.utc).isoformat()
    async with api_stack.http() as http:
        response = await http.post(f"/invoices/{invoice_id}/payments", json=pay(received_at=received))
    assert_problem(response, 422, "validation-failed", f"received_at: must not be before the invoice's issue date {issued}")
    assert await snapshot(api_stack, invoice_id) == before


async def test_the_invoice_is_untouched_after_all_of_them(api_stack: ApiStack, invoice_id: str):
    async with api_stack.http() as http:
        status = (await http.get(f"/invoices/{invoice_id}/status")).json()
    assert (status["state"], status["balance_minor"], status["paid_minor"], status["rejected_payments"]) == (
        "issued",
        100_000,
        0,
        0,
    )
