"""Sample notices for the notice tests: invoice INV-2025-0042 in each language's locale."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date
from babel.numbers import format_currency

from activities.notices.content import Payee
from workflows.models import Fee, Instalment, NoticeKind, NoticeRequest


@dataclass(frozen=True)
class Client:
    country: str | None
    currency: str
    zone: str
    locale: str  # what the renderer must pick for this language and country
    fee_label: str  # the translated "Late fee 1" (fees are named by number, never by their reason)


CLIENTS = {
    "en": Client("GB", "GBP", "Europe/London", "en_GB", "Late fee 1"),
    "ro": Client("RO", "RON", "Europe/Bucharest", "ro_RO", "Penalitate de întârziere 1"),
    "bg": Client("BG", "BGN", "Europe/Sofia", "bg_BG", "Неустойка за забава 1"),
    "et": Client(None, "EUR", "Europe/Tallinn", "et_EE", "Viivis 1"),  # no country: the language's home
    "it": Client("IT", "EUR", "Europe/Rome", "it_IT", "Penale di mora 1"),
}
PAYEE = Payee(
    name="Tehnoserv & Co SRL",
    payment_instructions="Bank transfer to Banca Transilvania; quote the invoice number.",
    iban="RO49AAAA1B31007593840000",
    payment_link="https://pay.example/i/INV-2025-0042",
)
INVOICE = Decimal("12000.00")
FEES = [  # the second, late in the UTC evening, is 29 or 30 April by the client's zone
    (Decimal("500.00"), datetime(2025, 3, 30, 7, 0, tzinfo=UTC)),
    (Decimal("225.00"), datetime(2025, 4, 29, 22, 30, tzinfo=UTC)),
]
BALANCE = Decimal("12725.00")
DUE = date(2025, 3, 20)
SUSPENSION = datetime(2025, 4, 9, 6, 0, tzinfo=UTC)


def notice(kind: NoticeKind | str, language: str = "ro", **changes: Any) -> NoticeRequest:
    """A notice for invoice INV-2025-0042: 12,000.00 plus two late fees, nothing paid."""
    client = CLIENTS[language]
    fields: dict[str, Any] = dict(
        idempotency_key="invoice-INV-2025-0042/0001",
        kind=kind,
        invoice_id="INV-2025-0042",
        customer_id="RO-40512378",
        to_name="O'Brien <script>alert(1)</script>",
        to_email="contabilitate@client.example",
        language=language,
        time_zone=client.zone,
        country=client.country,
        currency=client.currency,
        invoice_amount_minor=1_200_000,
        fees=[
            Fee(number=n, amount_minor=int(amount * 100), charged_at=at, reason=f"late fee, month {n} of delay")
            for n, (amount, at) in enumerate(FEES, start=1)
        ],
        paid_minor=0,
        deducted_minor=0,
        balance_minor=1_272_500,
        issue_date=date(2025, 3, 6),
        due_date=DUE,
        suspension_at=SUSPENSION,
        days_overdue=20,
        late_fee_percent_per_month=Decimal("1.5"),
        fixed_late_fee_minor=15_000,
        instalments=[
            Instalment(due_date=date(2025, 5, 1), amount_minor=600_000),
            Instalment(due_date=date(2025, 6, 1), amount_minor=672_500),
        ],
        missed_instalment=1,
        service="hosting",
    )
    fields.update(
        {
            NoticeKind.RECEIPT: {"detail": "PAY-77", "payment_minor": 10_000},
            NoticeKind.DISPUTE_RESOLVED: {"detail": "upheld", "credit_minor": 5_000},
        }.get(NoticeKind(kind), {})
    )
    fields.update(changes)
    return NoticeRequest(**fields)


def money(amount: Decimal, language: str) -> str:
    return format_currency(amount, CLIENTS[language].currency, locale=CLIENTS[language].locale)


def long_date(day: date | datetime, language: str) -> str:
    client = CLIENTS[language]
    if isinstance(day, datetime):
        day = day.astimezone(ZoneInfo(client.zone)).date()
    return format_date(day, "long", locale=client.locale)
