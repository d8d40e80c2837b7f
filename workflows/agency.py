"""The agency rung's work: send the collection agency its hand-over package, then record the hand-over."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows import contracts, policy
from workflows.charges import note_late_charges_stop
from workflows.events import AgencyHandedOver
from workflows.models import AgencyHandover
from workflows.outbox import NOTICE_RETRY, Outbox
from workflows.patches import PATCH_AGENCY_PACKAGE, closed_meanwhile


async def hand_over(outbox: Outbox) -> None:
    """Send the package (histories without the patch send none), then record the hand-over.

    No hand-over is recorded when the package was not sent because a request closed the invoice meanwhile.
    """
    sent = await _send_package(outbox) if workflow.patched(PATCH_AGENCY_PACKAGE) else False
    if sent or not closed_meanwhile(outbox.ledger):
        outbox.record(AgencyHandedOver(balance_minor=outbox.ledger.balance_minor, package_sent=sent))
        outbox.ledger.handed_to_agency = True
        note_late_charges_stop(outbox)


async def _send_package(outbox: Outbox) -> bool:
    """Write the history first, then send the hand-over package to the agency; False if it failed or the
    invoice closed meanwhile."""
    await outbox.flush()
    ledger = outbox.ledger
    if closed_meanwhile(ledger):
        return False
    handover = AgencyHandover(
        idempotency_key=f"{workflow.info().workflow_id}/agency-package",
        invoice=ledger.invoice,
        fees=list(ledger.fees),
        paid_minor=ledger.paid_minor,
        deducted_minor=ledger.deducted_minor,
        balance_minor=ledger.balance_minor,
        days_overdue=policy.days_overdue(ledger.invoice, workflow.now()),
        interest_minor=ledger.interest_minor,
    )
    try:
        await workflow.execute_activity_method(
            contracts.Notices.send_agency_package,
            handover,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=NOTICE_RETRY,
            summary="Send the hand-over package to the collection agency",
        )
    except ActivityError as err:
        outbox.notice_failed("agency_package", "agency-package", "agency", err)
        return False
    ledger.remember(workflow.now(), "Hand-over package sent to the collection agency")
    return True
