"""Example requests shown at /docs (and tried first by schema-driven testing): one invoice's life."""

from __future__ import annotations

from typing import Any

INVOICE_ID = "INV-2026-0042"
CUSTOMER_ID = "RO-40512378"


def _one(summary: str, value: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"example": {"summary": summary, "value": value}}


INVOICE = _one(
    "A hosting invoice in RON with late-fee terms",
    {
        "invoice_id": INVOICE_ID,
        "customer_id": CUSTOMER_ID,
        "contact": {"name": "Andreea Ionescu", "email": "contabilitate@tehnoserv-cluj.example"},
        "amount_minor": 1_250_000,
        "currency": "RON",
        "issue_date": "2026-11-23",
        "due_date": "2026-12-07",
        "language": "ro",
        "time_zone": "Europe/Bucharest",
        "country": "RO",
        "service": "hosting",
        "terms": {"late_fee_percent_per_month": "1.5", "fixed_late_fee_minor": 15_000},
        "policy_name": "standard",
    },
)
PAYMENT = _one(
    "Half of it, by bank transfer",
    {"payment_id": "BT-2026-118842", "amount_minor": 625_000, "currency": "RON", "received_at": "2026-12-01T08:30:00Z"},
)
DISPUTE = _one("The client contests a line", {"reason": "two hours of on-site support were billed twice"})
RESOLUTION = {
    "upheld": {"summary": "Upheld, with a credit", "value": {"outcome": "upheld", "credit_minor": 30_000, "note": "2 h credited"}},
    "rejected": {"summary": "Rejected", "value": {"outcome": "rejected", "note": "time sheets signed by the client"}},
}
PLAN = _one(
    "Two monthly instalments",
    {"instalments": [{"due_date": "2027-01-15", "amount_minor": 625_000}, {"due_date": "2027-02-15", "amount_minor": 625_000}]},
)
LEGAL_DECISION = {
    "settle": {"summary": "Settle for less", "value": {"decision": "settle", "settle_amount_minor": 1_000_000, "note": "offer accepted"}},
    "write_off": {"summary": "Write it off", "value": {"decision": "write_off", "note": "cost of action exceeds the claim"}},
}
FACTORED = _one("Sold to a factor at 80 %", {"factor": "FACTOR-RO-1", "advance_minor": 1_000_000})
APPLY = _one("The invoice the payer meant", {"invoice_id": INVOICE_ID})
NOTIFICATION = _one(
    "A card payment reported by the provider",
    {
        "invoice_id": INVOICE_ID,
        "payment_id": "PSP-7781",
        "amount_minor": 625_000,
        "currency": "RON",
        "received_at": "2026-12-01T08:30:00Z",
    },
)
