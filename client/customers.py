"""Client-side customer operations, shared by the CLI and (later) the HTTP API.

A customer's workflow (``customer-<customer id>``) starts on demand: an invoice's first hold
starts it with update-with-start (``activities.customer``), and so does any of these calls.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from workflows.customer import CustomerWorkflow
from workflows.holds import CustomerLedger, CustomerWorkflowInput

ANSWER_TIMEOUT = timedelta(seconds=20)


async def customer_workflow(client: Client, task_queue: str, customer_id: str) -> WorkflowHandle[CustomerWorkflow, None]:
    """The customer's workflow, started now if it is not running."""
    customer = CustomerWorkflowInput(customer_id=customer_id)
    return await client.start_workflow(
        CustomerWorkflow.run,
        customer,
        id=customer.workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"Customer {customer_id}: what its invoices hold of its service and equipment",
    )


async def customer_holds(client: Client, task_queue: str, customer_id: str) -> CustomerLedger:
    """Every piece of the customer's service and equipment, which invoices hold it and what was done to it."""
    handle = await customer_workflow(client, task_queue, customer_id)
    return await handle.query(CustomerWorkflow.holds, rpc_timeout=ANSWER_TIMEOUT)
