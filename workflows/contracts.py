"""What the invoice and customer workflows ask of their activities: each one's name, input and result, declared once.

The implementations in ``activities/`` (and the recording ones in ``bench/``) subclass these
protocols, and the workflow calls the methods by reference (``workflow.execute_activity_method``),
so the type checker holds both sides to one signature. Kept here, free of I/O, so the workflow
(and the client library that imports it) never loads the activities' dependencies.
"""

from __future__ import annotations

from datetime import date
from typing import Protocol

from temporalio import activity

from workflows.cash import DeliverAllocation, Delivered, InvoiceBalance
from workflows.digests import CustomerNoticeOutcome, DigestRequest, NoticeAsked, NoticeTicket
from workflows.events import InvoiceSnapshot
from workflows.holds import HoldOutcome, HoldRequest, ReleaseRequest
from workflows.interest import CurrencyRates, InterestRatesRequest
from workflows.models import (
    AgencyHandover,
    DomainEvent,
    EquipmentRequest,
    EquipmentResult,
    NoticeDelivery,
    NoticeRequest,
    PublicHolidaysRequest,
    ServiceAction,
    ServiceChange,
)


class Ledger(Protocol):
    @activity.defn(name="append_events")
    async def append_events(self, events: list[DomainEvent], snapshot: InvoiceSnapshot | None = None) -> int:
        """Append a batch of events and the invoice's snapshot after them; returns rows inserted."""
        ...


class Notices(Protocol):
    @activity.defn(name="send_notice")
    async def send_notice(self, notice: NoticeRequest) -> NoticeDelivery:
        """Deliver a notice to the client on each of their channels."""
        ...

    @activity.defn(name="send_agency_package")
    async def send_agency_package(self, handover: AgencyHandover) -> str:
        """E-mail the hand-over package to the collection agency; returns its Message-ID."""
        ...

    @activity.defn(name="send_digest")
    async def send_digest(self, digest: DigestRequest) -> NoticeDelivery:
        """Deliver one message listing several invoices' stage notices, with the statement of account."""
        ...


class Service(Protocol):
    @activity.defn(name="suspend_service")
    async def suspend_service(self, request: ServiceAction) -> ServiceChange:
        """Block support and new orders for the customer."""
        ...

    @activity.defn(name="restore_service")
    async def restore_service(self, request: ServiceAction) -> ServiceChange:
        """Lift the block that this invoice's suspension put in place."""
        ...


class Calendar(Protocol):
    @activity.defn(name="public_holidays")
    async def public_holidays(self, request: PublicHolidaysRequest) -> list[date]:
        """The country's public holidays in the requested years (a local activity)."""
        ...


class InterestRates(Protocol):
    @activity.defn(name="interest_rates")
    async def interest_rates(self, request: InterestRatesRequest) -> CurrencyRates:
        """The currency's reference rates and recovery-cost compensation from the rates file (a local activity)."""
        ...


class Equipment(Protocol):
    @activity.defn(name="suspend_equipment")
    async def suspend_equipment(self, request: EquipmentRequest) -> EquipmentResult:
        """Cut one piece of the customer's equipment."""
        ...

    @activity.defn(name="restore_equipment")
    async def restore_equipment(self, request: EquipmentRequest) -> EquipmentResult:
        """Bring one piece of the customer's equipment back."""
        ...


class Customers(Protocol):
    @activity.defn(name="hold_at_customer")
    async def hold_at_customer(self, request: HoldRequest) -> HoldOutcome:
        """Ask the customer to hold the pieces the invoice names; returns them as the customer left them."""
        ...

    @activity.defn(name="release_at_customer")
    async def release_at_customer(self, request: ReleaseRequest) -> HoldOutcome:
        """Tell the customer the invoice closed; returns its pieces, restored or still held by others."""
        ...

    @activity.defn(name="notice_to_customer")
    async def notice_to_customer(self, notice: NoticeRequest) -> NoticeTicket:
        """Hand a stage notice to the customer, who gathers it with the others of its sending window."""
        ...

    @activity.defn(name="notice_sent_by_customer")
    async def notice_sent_by_customer(self, asked: NoticeAsked) -> CustomerNoticeOutcome:
        """How the customer sent a stage notice handed to it, alone or in a digest."""
        ...


class CustomerPayments(Protocol):
    @activity.defn(name="invoice_balances")
    async def invoice_balances(self, invoice_ids: list[str]) -> list[InvoiceBalance]:
        """Each invoice's balance and whether it still takes payments, as its workflow answers now."""
        ...

    @activity.defn(name="deliver_allocation")
    async def deliver_allocation(self, allocation: DeliverAllocation) -> Delivered:
        """Record an allocation on its invoice as a payment (idempotent by its payment id)."""
        ...
