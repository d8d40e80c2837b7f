"""Event streams written by hand for the projection and standing tests: one ``Story`` per invoice."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from tests.harness import make_invoice
from workflows.models import DomainEvent, EventKind, Invoice, StageAction


def at(month: int, day: int, year: int = 2026, hour: int = 9) -> datetime:
    """A moment in UTC, 09:00 unless told."""
    return datetime(year, month, day, hour, tzinfo=timezone.utc)


def invoice(invoice_id: str, customer_id: str, amount: int, issued: date, due: date, **fields: Any) -> Invoice:
    """An invoice with the default policy, sending at any hour."""
    return make_invoice(issued, invoice_id=invoice_id, customer_id=customer_id, amount_minor=amount, due_date=due, **fields)


class Story:
    """The events of one invoice, numbered as the workflow numbers them."""

    def __init__(self, invoice: Invoice, issued_at: datetime) -> None:
        self.invoice = invoice
        self.events: list[DomainEvent] = []
        self.add(EventKind.INVOICE_ISSUED, issued_at, invoice=invoice.model_dump(mode="json"))

    def add(self, kind: EventKind, when: datetime, /, **data: Any) -> Story:
        self.events.append(
            DomainEvent(
                invoice_id=self.invoice.invoice_id, sequence=len(self.events) + 1, kind=kind, occurred_at=when, data=data
            )
        )
        return self

    def stages(self, *moments: tuple[StageAction, datetime]) -> Story:
        for action, when in moments:
            self.add(EventKind.STAGE_REACHED, when, stage=action.value, days_overdue=0)
        return self

    def fee(self, when: datetime, amount: int, number: int = 1) -> Story:
        return self.add(EventKind.LATE_FEE_CHARGED, when, number=number, amount_minor=amount, reason="late fee")

    def paid(self, when: datetime, amount: int, payment_id: str, balance: int) -> Story:
        return self.add(
            EventKind.PAYMENT_RECORDED, when, payment_id=payment_id, amount_minor=amount,
            received_at=when.isoformat(), balance_minor=balance,
        )

    def closed(self, when: datetime, state: str, paid: int = 0, fees: int = 0, written_off: int = 0) -> Story:
        return self.add(
            EventKind.INVOICE_CLOSED, when, state=state, paid_minor=paid, fees_minor=fees,
            written_off_minor=written_off, overpaid_minor=0,
        )

    def service(self, kind: EventKind, when: datetime) -> Story:
        """Service suspended or restored for the service the invoice names."""
        return self.add(
            kind, when, support_and_orders_blocked=kind == EventKind.SERVICE_SUSPENDED,
            remote_disconnect_authorized=False, equipment_ids=[], service=self.invoice.service,
        )
