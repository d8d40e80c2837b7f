"""Recording activities: registered under the real names, they remember what the workflow asked for
instead of doing it, so the workflow runs (and is measured, and tested) without its I/O."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.calendar import public_holidays
from activities.customer import hold_at_customer, notice_sent_by_customer, notice_to_customer, release_at_customer
from activities.customer_payments import deliver_allocation, invoice_balances
from activities.interest_rates import InterestRateActivities
from activities.ledger import Batch
from worker.sandbox import workflow_runner
from workflows import contracts
from workflows.customer import CustomerWorkflow
from workflows.digests import DigestRequest
from workflows.events import InvoiceSnapshot
from workflows.invoice import InvoiceWorkflow
from workflows.models import (
    AgencyHandover,
    DomainEvent,
    EquipmentRequest,
    EquipmentResult,
    NoticeDelivery,
    NoticeRequest,
    ServiceAction,
    ServiceChange,
)


@dataclass
class Hold:
    """An activity call kept running: ``reached`` is set when it starts, it returns once ``released`` is set."""

    activity_name: str
    when: Callable[[Any], bool]
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Recorder(contracts.Ledger, contracts.Notices, contracts.Service, contracts.Equipment):
    """Activities registered by the real names that remember what they were asked to do."""

    notices: list[NoticeRequest] = field(default_factory=list)
    digests: list[DigestRequest] = field(default_factory=list)  # one per digest key, however often it was sent
    digest_attempts: int = 0
    events: dict[tuple[str, int], DomainEvent] = field(default_factory=dict)
    service_calls: list[tuple[str, ServiceAction]] = field(default_factory=list)
    equipment_calls: list[tuple[str, EquipmentRequest]] = field(default_factory=list)
    unreachable_equipment: set[str] = field(default_factory=set)
    agency_packages: list[AgencyHandover] = field(default_factory=list)
    failing_channels: dict[str, str] = field(default_factory=dict)
    holds: list[Hold] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)  # every batch appended, with its snapshot, in order
    rates: InterestRateActivities = field(default_factory=InterestRateActivities.load)  # a test may change its table

    def hold(self, activity_name: str, when: Callable[[Any], bool] = lambda _: True) -> Hold:
        """Keep the next call of ``activity_name`` whose argument matches ``when`` running until released."""
        held = Hold(activity_name, when)
        self.holds.append(held)
        return held

    async def _wait_if_held(self, activity_name: str, argument: Any) -> None:
        for held in self.holds:
            if held.activity_name == activity_name and not held.reached.is_set() and held.when(argument):
                held.reached.set()
                await held.released.wait()

    @activity.defn(name="send_notice")
    async def send_notice(self, notice: NoticeRequest) -> NoticeDelivery:
        await self._wait_if_held("send_notice", notice)
        if all(n.idempotency_key != notice.idempotency_key for n in self.notices):
            self.notices.append(notice)
        delivered = [c for c in ("email", "webhook") if c == "email" or c in self.failing_channels]
        return NoticeDelivery(
            message_id=f"<{notice.idempotency_key}>",
            delivered=[c for c in delivered if c not in self.failing_channels],
            failed=dict(self.failing_channels),
        )

    @activity.defn(name="send_digest")
    async def send_digest(self, digest: DigestRequest) -> NoticeDelivery:
        await self._wait_if_held("send_digest", digest)
        self.digest_attempts += 1
        if all(d.idempotency_key != digest.idempotency_key for d in self.digests):
            self.digests.append(digest)
        return NoticeDelivery(message_id=f"<{digest.idempotency_key}>", delivered=["email"])

    @activity.defn(name="suspend_equipment")
    async def suspend_equipment(self, request: EquipmentRequest) -> EquipmentResult:
        return self._equipment("suspend", request, "Off")

    @activity.defn(name="restore_equipment")
    async def restore_equipment(self, request: EquipmentRequest) -> EquipmentResult:
        return self._equipment("restore", request, "On")

    def _equipment(self, action: str, request: EquipmentRequest, state: str) -> EquipmentResult:
        self.equipment_calls.append((action, request))
        if request.equipment_id in self.unreachable_equipment:
            raise ApplicationError(f"{request.equipment_id} refused the connection", type="EquipmentRefused", non_retryable=True)
        return EquipmentResult(equipment_id=request.equipment_id, action=action, changed=True, state=state)

    @activity.defn(name="send_agency_package")
    async def send_agency_package(self, handover: AgencyHandover) -> str:
        await self._wait_if_held("send_agency_package", handover)
        self.agency_packages.append(handover)
        return f"<{handover.idempotency_key}>"

    @activity.defn(name="append_events")
    async def append_events(self, events: list[DomainEvent], snapshot: InvoiceSnapshot | None = None) -> int:
        await self._wait_if_held("append_events", events)
        new = [e for e in events if (e.invoice_id, e.sequence) not in self.events]
        self.events.update({(e.invoice_id, e.sequence): e for e in new})
        if new:
            self.batches.append(Batch(events, snapshot))
        return len(new)

    @activity.defn(name="suspend_service")
    async def suspend_service(self, request: ServiceAction) -> ServiceChange:
        await self._wait_if_held("suspend_service", request)
        self.service_calls.append(("suspend", request))
        return self._service_result(request, blocked=True)

    @activity.defn(name="restore_service")
    async def restore_service(self, request: ServiceAction) -> ServiceChange:
        self.service_calls.append(("restore", request))
        return self._service_result(request, blocked=False)

    @staticmethod
    def _service_result(request: ServiceAction, blocked: bool) -> ServiceChange:
        """What the real activity answers."""
        return ServiceChange(
            support_and_orders_blocked=blocked,
            remote_disconnect_authorized=request.remote_disconnect_authorized,
            equipment_ids=request.equipment_ids if request.remote_disconnect_authorized else [],
        )

    def notice_kinds(self, invoice_id: str | None = None) -> list[str]:
        return [n.kind.value for n in self.notices if invoice_id in (None, n.invoice_id)]

    def event_kinds(self, invoice_id: str) -> list[str]:
        return [e.kind.value for (i, _), e in sorted(self.events.items()) if i == invoice_id]

    def events_of(self, invoice_id: str, kind: str) -> list[DomainEvent]:
        return [e for (i, _), e in sorted(self.events.items()) if i == invoice_id and e.kind.value == kind]

    @property
    def activities(self) -> list[Callable]:
        return [
            self.send_notice,
            self.append_events,
            self.suspend_service,
            self.restore_service,
            self.suspend_equipment,
            self.restore_equipment,
            self.send_agency_package,
            self.send_digest,
            hold_at_customer,  # the real ones: they only ask the customer workflow, which records through these
            release_at_customer,
            invoice_balances,
            deliver_allocation,
            notice_to_customer,
            notice_sent_by_customer,
            public_holidays,
            self.rates.interest_rates,  # the real one, on the packaged rates file unless a test sets another table
        ]


def with_pydantic(client: Client) -> Client:
    """The same connection, with the data converter the service uses."""
    config = client.config()
    config["data_converter"] = pydantic_data_converter
    return Client(**config)


@asynccontextmanager
async def recording_worker(client: Client, recorder: Recorder, task_queue: str | None = None) -> AsyncIterator[str]:
    """Run the invoice and customer workflows with ``recorder``'s activities on ``task_queue`` (default: a
    fresh one); yields the queue name."""
    queue = task_queue or f"recorded-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client, task_queue=queue, workflows=[InvoiceWorkflow, CustomerWorkflow], activities=recorder.activities,
        workflow_runner=workflow_runner(),
    ):
        yield queue
