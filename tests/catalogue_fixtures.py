"""The notice catalogue's test data: one client per language, and for each kind of notice the
request the workflow would build at that point of the invoice's life.

Each client owes the same invoice (12,345.67 in its currency, issued 1 October 2025, due
31 October 2025), under a contract with a late fee of 1.5 % per started month plus a one-time
150.00. The stages follow the default policy: a fee at +10 days and one more every 30 days, the
suspension at +20 days at 09:00 on the client's clock, a payment plan of three instalments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from workflows.models import Fee, Instalment, NoticeKind, NoticeRequest


@dataclass(frozen=True)
class Client:
    """Who gets the notices in one language, and the locale they are written for."""

    language: str
    locale: str  # the CLDR locale the expected strings are formatted in
    country: str
    zone: str
    currency: str
    invoice_id: str
    customer_id: str
    name: str
    email: str
    remote_disconnect: bool  # whether the contract lets us cut the equipment


CLIENTS = (
    Client("en", "en_GB", "GB", "Europe/London", "GBP", "GB-2025-0417", "CUST-GB-118",
           "Siobhán O'Neill", "accounts@brightwell.example", False),
    Client("ro", "ro_RO", "RO", "Europe/Bucharest", "RON", "RO-2025-0417", "CUST-RO-407",
           "Ioana Rădulescu", "contabilitate@tehnoserv.example", True),
    Client("bg", "bg_BG", "BG", "Europe/Sofia", "BGN", "BG-2025-0417", "CUST-BG-052",
           "Иван Петров", "schetovodstvo@balkan-net.example", True),
    Client("et", "et_EE", "EE", "Europe/Tallinn", "EUR", "EE-2025-0417", "CUST-EE-233",
           "Jüri Õunapuu", "raamatupidamine@poldur.example", False),
    Client("it", "it_IT", "IT", "Europe/Rome", "EUR", "IT-2025-0417", "CUST-IT-761",
           "Giulia Esposito", "amministrazione@ferrari-servizi.example", False),
)

ISSUED = date(2025, 10, 1)
DUE = date(2025, 10, 31)
INVOICE_MINOR = 1_234_567
LATE_FEE_PERCENT = Decimal("1.5")
FIXED_LATE_FEE_MINOR = 15_000
FIRST_FEE_MINOR = 33_519  # the one-time 150.00 plus 1.5 % of 12,345.67 for the first started month
MONTHLY_FEE_MINOR = 18_519  # 1.5 % of 12,345.67 for each further started month
DISCOUNT_MINOR = 24_691  # 2 % off when paid within 10 days of issue
PAYMENT_MINOR = 500_000
CREDIT_MINOR = 34_567
PLAN = ((30, 400_000), (61, 400_000), (91, 468_086))  # days after the due date, amount: sums to the balance
SUSPENSION_DAY = DUE + timedelta(days=20)


def at_nine(client: Client, day: date) -> datetime:
    """09:00 on ``day`` on the client's clock, as the UTC moment the workflow hands over."""
    return datetime.combine(day, time(9, 0), ZoneInfo(client.zone)).astimezone(UTC)


def late_fees(client: Client, count: int) -> list[Fee]:
    """The first ``count`` late fees: at +10 days, then every 30 days."""
    return [
        Fee(
            number=number,
            amount_minor=FIRST_FEE_MINOR if number == 1 else MONTHLY_FEE_MINOR,
            charged_at=at_nine(client, DUE + timedelta(days=10 + 30 * (number - 1))),
            reason=f"contract late fee, month {number} of delay",
        )
        for number in range(1, count + 1)
    ]


def plan() -> list[Instalment]:
    """The agreed instalments."""
    return [Instalment(due_date=DUE + timedelta(days=days), amount_minor=amount) for days, amount in PLAN]


def _stage(client: Client, kind: NoticeKind) -> dict[str, Any]:
    """What differs between the kinds: days overdue, fees charged so far, payments and the kind's own facts."""
    suspension = {"suspension_at": at_nine(client, SUSPENSION_DAY), "remote_disconnect": client.remote_disconnect}
    stages: dict[NoticeKind, dict[str, Any]] = {
        NoticeKind.INVOICE_ISSUED: {
            "discount_minor": DISCOUNT_MINOR,
            "discount_until": ISSUED + timedelta(days=10),
        },
        NoticeKind.COURTESY: {},
        NoticeKind.REMINDER: {"days_overdue": 1},
        NoticeKind.WARNING: {"days_overdue": 5},
        NoticeKind.LATE_FEE: {"days_overdue": 10, "fees": late_fees(client, 1)},
        NoticeKind.ULTIMATUM: {"days_overdue": 15, "fees": late_fees(client, 1), **suspension},
        NoticeKind.SUSPENDED: {"days_overdue": 20, "fees": late_fees(client, 1), **suspension},
        NoticeKind.RESTORED: {
            "days_overdue": 25,
            "fees": late_fees(client, 1),
            "paid_minor": INVOICE_MINOR + FIRST_FEE_MINOR,
        },
        NoticeKind.RECEIPT: {
            "days_overdue": 22,
            "fees": late_fees(client, 1),
            "paid_minor": PAYMENT_MINOR,
            "payment_minor": PAYMENT_MINOR,
            "detail": f"BT-{client.country}-20251124-7",
        },
        NoticeKind.PLAN_AGREED: {"days_overdue": 24, "fees": late_fees(client, 1), "instalments": plan()},
        NoticeKind.INSTALMENT_MISSED: {
            "days_overdue": 64,
            "fees": late_fees(client, 1),
            "paid_minor": PLAN[0][1],
            "instalments": plan(),
            "missed_instalment": 2,
        },
        NoticeKind.DISPUTE_OPENED: {"days_overdue": 3},
        NoticeKind.DISPUTE_RESOLVED: {
            "days_overdue": 12,
            "detail": "upheld",
            "credit_minor": CREDIT_MINOR,
            "deducted_minor": CREDIT_MINOR,
        },
        NoticeKind.AGENCY_HANDOVER: {"days_overdue": 90, "fees": late_fees(client, 3)},
        NoticeKind.LEGAL_REVIEW: {"days_overdue": 120, "fees": late_fees(client, 4)},
    }
    return stages[kind]


def catalogue_request(client: Client, kind: NoticeKind) -> NoticeRequest:
    """The ``kind`` notice for ``client``'s invoice, keyed as the workflow keys its steps."""
    step = list(NoticeKind).index(kind) + 1
    fields: dict[str, Any] = {
        "idempotency_key": f"invoice-{client.invoice_id}/{step:04d}-{kind.value}",
        "kind": kind,
        "invoice_id": client.invoice_id,
        "customer_id": client.customer_id,
        "to_name": client.name,
        "to_email": client.email,
        "language": client.language,
        "time_zone": client.zone,
        "country": client.country,
        "currency": client.currency,
        "invoice_amount_minor": INVOICE_MINOR,
        "fees": [],
        "paid_minor": 0,
        "deducted_minor": 0,
        "issue_date": ISSUED,
        "due_date": DUE,
        "late_fee_percent_per_month": LATE_FEE_PERCENT,
        "fixed_late_fee_minor": FIXED_LATE_FEE_MINOR,
        "service": "hosting",
    }
    fields.update(_stage(client, kind))
    fields["balance_minor"] = (
        INVOICE_MINOR + sum(fee.amount_minor for fee in fields["fees"]) - fields["paid_minor"] - fields["deducted_minor"]
    )
    return NoticeRequest.model_validate(fields)
