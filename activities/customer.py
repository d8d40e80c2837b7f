"""The ``hold_at_customer``, ``release_at_customer`` and ``notice_at_customer`` activities: an invoice's requests to
its customer workflow.

Each is an update-with-start of ``customer-<customer id>`` (started if it is not running, on the
invoice's task queue) whose update id is the request's idempotency key: a retry after a crash
attaches to the same update, and the customer answers a key it has seen again with the same answer.
The activity heartbeats while the customer cuts or restores, which may take as long as the equipment, or
gathers and sends the notices of a sending window.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from activities.equipment.activities import heartbeating
from workflows import contracts
from workflows.digests import CustomerNoticeOutcome
from workflows.holds import CustomerWorkflowInput, HoldOutcome, HoldRequest, ReleaseRequest
from workflows.models import NoticeRequest

CUSTOMER_WORKFLOW = "CustomerWorkflow"  # by name: activities never import workflow classes


class CustomerActivities(contracts.Customers):
    """Update-with-start of the customer workflow, by name: activities never import workflow classes."""

    @activity.defn(name="hold_at_customer")
    async def hold_at_customer(self, request: HoldRequest) -> HoldOutcome:
        """Ask the customer to hold the pieces the invoice names; returns them as the customer left them."""
        return await _ask("hold", request.customer_id, request)

    @activity.defn(name="release_at_customer")
    async def release_at_customer(self, request: ReleaseRequest) -> HoldOutcome:
        """Tell the customer the invoice closed; returns its pieces, restored or still held by others."""
        return await _ask("release", request.customer_id, request)

    @activity.defn(name="notice_at_customer")
    async def notice_at_customer(self, notice: NoticeRequest) -> CustomerNoticeOutcome:
        """Hand a stage notice to the customer; returns how it went out, alone or in a digest."""
        return await _ask("send_stage_notice", notice.customer_id, notice, CustomerNoticeOutcome)


_customer_activities = CustomerActivities()  # holds no state
hold_at_customer = _customer_activities.hold_at_customer
release_at_customer = _customer_activities.release_at_customer
notice_at_customer = _customer_activities.notice_at_customer


async def _ask(
    update: str,
    customer_id: str,
    request: HoldRequest | ReleaseRequest | NoticeRequest,
    answer: type[Any] = HoldOutcome,
) -> Any:
    customer = CustomerWorkflowInput(customer_id=customer_id)
    start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
        CUSTOMER_WORKFLOW,
        customer,
        id=customer.workflow_id,
        task_queue=activity.info().task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"Customer {customer_id}: what its invoices hold of its service and equipment",
    )
    return await heartbeating(
        activity.client().execute_update_with_start_workflow(
            update, request, start_workflow_operation=start, id=request.idempotency_key, result_type=answer
        )
    )
