"""The customer workflow's ops desk: pause and resume every escalation of the customer's invoices, and keep
its equipment out of automatic cuts (``workflows.customer_control``).

Each decision is an update (with who and why, in the history), a line of the customer's story and of its
``decisions``, and shows as the ``OnHold`` search attribute and the details. A pause or a resume reaches
each open invoice the customer knows (registered at its start, holding a piece, or named by a payment) as
a ``customer_control`` signal, sent from the run loop; the invoice pauses as for a dispute, and its
steps come later by the pause's length. An invoice that opens while the customer is paused is told too.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.customer_control import (
    CUSTOMER_CONTROL_SIGNAL,
    ControlMessage,
    CustomerControl,
    CutsRequest,
    Pause,
    PauseCustomer,
    ResumeCustomer,
    until_problem,
)
from workflows.holds import CustomerLedger
from workflows.models import invoice_workflow_id
from workflows.outbox import one_line


class OpsDesk:
    """Ops decisions about one customer; state in ``ledger.control``."""

    def __init__(self, ledger: CustomerLedger) -> None:
        self.ledger = ledger

    @property
    def control(self) -> CustomerControl:
        return self.ledger.control

    # --- what handlers call (no awaiting) ------------------------------------------------------

    def check_pause(self, request: PauseCustomer) -> None:
        """Refuse an until-date in the past or more than a year ahead."""
        if problem := until_problem(request.until, workflow.now()):
            raise ApplicationError(problem, type="InvalidRequest")

    def pause(self, request: PauseCustomer) -> CustomerControl:
        """Pause the customer (or change the reason or until-date of its pause); a repeat changes nothing."""
        control, now = self.control, workflow.now()
        pause = control.pause
        if pause is not None and (pause.until, pause.reason, pause.requested_by) == (
            request.until,
            request.reason,
            request.requested_by,
        ):
            return control
        until = f" until {request.until.isoformat(timespec='minutes')}" if request.until else ""
        if pause is None:
            control.pause = Pause(
                since=now, until=request.until, reason=request.reason, requested_by=request.requested_by
            )
            self._announce()
            what = f"paused{until}"
        else:
            pause.until, pause.reason, pause.requested_by = request.until, request.reason, request.requested_by
            self._announce()  # the invoices show the new reason and until-date; their pause goes on
            what = f"pause changed: now{until or ' until resumed'}"
        self._decided(what, request.reason, request.requested_by)
        return control

    def resume(self, request: ResumeCustomer) -> CustomerControl:
        """End the pause now; nothing to do if the customer is not paused."""
        if self.control.pause is not None:
            self._end("resumed", request.reason, request.requested_by)
        return self.control

    def set_cuts(self, request: CutsRequest) -> CustomerControl:
        """Exclude the customer's equipment from automatic cuts, or include it again; a repeat changes nothing.

        Equipment already cut stays cut (restored when no invoice holds it, as usual); included again, equipment
        that a suspended invoice holds is cut then."""
        if self.control.cuts_excluded != request.excluded:
            self.control.cuts_excluded = request.excluded
            what = "excluded from automatic cuts" if request.excluded else "included in automatic cuts again"
            self._decided(what, request.reason, request.requested_by)
        return self.control

    def opened(self, invoice_id: str) -> None:
        """An invoice opened while the customer is paused hears of the pause too."""
        if self.control.pause is not None and invoice_id not in self.control.to_tell:
            self.control.to_tell.append(invoice_id)

    def excluded(self, names: list[str]) -> list[str]:
        """Of the pieces ``names``, the equipment the exclusion keeps from being cut."""
        return [n for n in names if self.ledger.cut_held_back(self.ledger.pieces[n])]

    # --- what the run loop does ---------------------------------------------------------------

    def pause_left(self) -> timedelta | None:
        """How long until the pause's until-date (None: no pause, or none with an until-date)."""
        pause = self.control.pause
        if pause is None or pause.until is None:
            return None
        return max(timedelta(0), pause.until - workflow.now())

    def end_if_due(self) -> bool:
        """End the pause if its until-date came; whether it did."""
        if self.pause_left() != timedelta(0):
            return False
        pause = self.control.pause
        assert pause is not None
        self._end("pause ended: its until-date came", pause.reason, pause.requested_by)
        return True

    async def tell(self) -> None:
        """Send the latest pause or resume to every invoice not told yet, in parallel."""
        control = self.control
        sequence, invoice_ids = control.sequence, list(control.to_tell)
        message = control.message(self.ledger.customer_id)
        await asyncio.gather(*(self._tell(invoice_id, message) for invoice_id in invoice_ids))
        if control.sequence == sequence:  # no newer decision meanwhile (it would have a new list)
            control.to_tell = [i for i in control.to_tell if i not in invoice_ids]

    async def _tell(self, invoice_id: str, message: ControlMessage) -> None:
        handle = workflow.get_external_workflow_handle(invoice_workflow_id(invoice_id))
        try:
            await handle.signal(CUSTOMER_CONTROL_SIGNAL, message)
        except Exception as err:  # noqa: BLE001 - closed or gone: it escalates no more, nothing to pause
            self.ledger.cash.open_invoices.pop(invoice_id, None)
            workflow.logger.info("invoice %s not told of the pause: %s", invoice_id, one_line(err))

    # --- bookkeeping -----------------------------------------------------------------------------

    def _end(self, what: str, reason: str, requested_by: str) -> None:
        pause = self.control.pause
        assert pause is not None
        self.control.pause = None
        self._announce()
        length = workflow.now() - pause.since
        self._decided(f"{what} after {_days(length)}", reason, requested_by)

    def _announce(self) -> None:
        """A new message for every open invoice the customer knows."""
        self.control.sequence += 1
        self.control.to_tell = sorted({*self.ledger.invoices, *self.ledger.cash.open_invoices})
        self.ledger.on_hold = self.control.pause is not None

    def _decided(self, what: str, reason: str, requested_by: str) -> None:
        now = workflow.now()
        self.control.decide(now, what, reason, requested_by)
        why = f": {reason}" if reason else ""
        self.ledger.remember(now, f"Ops ({requested_by}): {what}{why}")


def _days(length: timedelta) -> str:
    hours = length.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 24 else f"{hours:.1f} hours"
