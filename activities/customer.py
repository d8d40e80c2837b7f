"""The activities that carry an invoice's requests to its customer workflow: ``hold_at_customer``,
``release_at_customer``, and for stage notices ``notice_to_customer`` and ``notice_sent_by_customer``.

Each is an update-with-start of ``customer-<customer id>`` (started if it is not running, on the
invoice's task queue) whose update id is the request's idempotency key: a retry after a crash
attaches to the same update, and the customer answers a key it has seen again with the same answer.
The activity heartbeats while the customer cuts or restores, which may take as long as the equipment, or
sends the notices of a sending window.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from activities.equipment.activities import heartbeating
from client.temporal import take_start_outcome
from workflows import contracts
from workflows.digests import DIGEST_GATHERING, CustomerNoticeOutcome, NoticeAsked, NoticeTicket
from workflows.holds import CustomerWorkflowInput, HoldOutcome, HoldRequest, ReleaseRequest
from workflows.models import NoticeRequest

CUSTOMER_WORKFLOW = "CustomerWorkflow"  # by name: activities never import workflow classes


class CustomerActivities(contracts.Customers):
    """Update-with-start of the customer workflow, by name: activities never import workflow classes.

    ``digest_gathering``: how long a customer this starts gathers stage notices (the worker's setting); a running
    customer keeps its own.
    """

    def __init__(self, digest_gathering: timedelta = DIGEST_GATHERING) -> None:
        self.digest_gathering = digest_gathering

    @activity.defn(name="hold_at_customer")
    async def hold_at_customer(self, request: HoldRequest) -> HoldOutcome:
        """Ask the customer to hold the pieces the invoice names; returns them as the customer left them."""
        return await self._ask("hold", request.customer_id, request)

    @activity.defn(name="release_at_customer")
    async def release_at_customer(self, request: ReleaseRequest) -> HoldOutcome:
        """Tell the customer the invoice closed; returns its pieces, restored or still held by others."""
        return await self._ask("release", request.customer_id, request)

    @activity.defn(name="notice_to_customer")
    async def notice_to_customer(self, notice: NoticeRequest) -> NoticeTicket:
        """Hand a stage notice to the customer; returns when the gathered notices go out."""
        return await self._ask("take_stage_notice", notice.customer_id, notice, NoticeTicket)

    @activity.defn(name="notice_sent_by_customer")
    async def notice_sent_by_customer(self, asked: NoticeAsked) -> CustomerNoticeOutcome:
        """How the customer sent a stage notice: alone or in a digest, on which channels."""
        return await self._ask("stage_notice_sent", asked.customer_id, asked, CustomerNoticeOutcome, "/sent")

    async def _ask(
        self,
        update: str,
        customer_id: str,
        request: HoldRequest | ReleaseRequest | NoticeRequest | NoticeAsked,
        answer: type[Any] = HoldOutcome,
        suffix: str = "",
    ) -> Any:
        """The update's answer; its id is the request's key (and ``suffix``, when two updates share the key)."""
        customer = CustomerWorkflowInput(customer_id=customer_id, digest_gathering=self.digest_gathering)
        start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            CUSTOMER_WORKFLOW,
            customer,
            id=customer.workflow_id,
            task_queue=activity.info().task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"Customer {customer_id}: what its invoices hold of its service and equipment",
        )
        try:
            return await heartbeating(
                activity.client().execute_update_with_start_workflow(
                    update, request, start_workflow_operation=start, id=request.idempotency_key + suffix, result_type=answer
                )
            )
        finally:
            take_start_outcome(start)


_customer_activities = CustomerActivities()  # the default gathering delay
hold_at_customer = _customer_activities.hold_at_customer
release_at_customer = _customer_activities.release_at_customer
notice_to_customer = _customer_activities.notice_to_customer
notice_sent_by_customer = _customer_activities.notice_sent_by_customer
