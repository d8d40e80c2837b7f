"""Invoices with scripted fates, and the driver that plays every script through real requests.

Each invoice follows a ladder a few seconds long in real time (no sending window) and a fate:
what the test does to it, once it has reached which stage. So its final state is known before
the run, and the notices, cuts and restores it must get follow from the stages it reached
before the test acted (``tests.faults.checks``).

The driver reads the stage of every invoice from Temporal's visibility (one list call for all
of them; it needs no worker), starts invoices and asks their status through ``client.invoices``,
as the CLI and the API do, and sends each update under a stable update id of its own: a request
that got no answer (worker dead, server down) is sent again unchanged, and Temporal applies an
update id at most once, so no retry of the test is ever a second request.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from client import invoices
from client.invoices import InvoiceError, Refusal
from tests.faults.stack import TASK_QUEUE
from workflows import search_attributes as sa
from workflows.invoice import InvoiceWorkflow
from workflows.models import (
    DecideLegal,
    DisputeOutcome,
    Invoice,
    InvoiceState,
    InvoiceStatus,
    LegalDecision,
    MarkFactored,
    OpenDispute,
    Payment,
    ResolveDispute,
    StageAction,
)

T = TypeVar("T")
CURRENCY = "EUR"
LEAD = timedelta(seconds=3)  # from start to the due moment
# the cut's notice after the ultimatum, in place of the policy's day or more: the ladder runs in seconds
MINIMUM_NOTICE = timedelta(seconds=1)
# the ladder, seconds after the due moment: gaps of 3 s leave time to act on a stage before the next
LADDER = [
    (StageAction.REMINDER, 3),
    (StageAction.WARNING, 6),
    (StageAction.LATE_FEE, 9),
    (StageAction.ULTIMATUM, 12),
    (StageAction.SUSPEND, 15),
    (StageAction.AGENCY, 19),
    (StageAction.LEGAL_REVIEW, 23),
]
# visible states in escalation order: "reached at least" compares positions in this list
ESCALATION = [
    InvoiceState.ISSUED,
    InvoiceState.REMINDED,
    InvoiceState.WARNED,
    InvoiceState.LATE_FEE,
    InvoiceState.ULTIMATUM,
    InvoiceState.SUSPENDED,
    InvoiceState.AGENCY,
    InvoiceState.LEGAL_REVIEW,
]
RETRY_PAUSE_S = 1.0
CLOSED = "closed"  # what a request answers when the invoice is closed (or its workflow completed)
POLL_INTERVAL_S = 1.0


class Fate(StrEnum):
    """What the test does to an invoice, and so how it ends."""

    PAID_WHEN_ISSUED = "paid_when_issued"  # paid in full as soon as it is issued
    PAID_EARLY = "paid_early"  # paid in full once reminded
    PAID_IN_TWO = "paid_in_two"  # half once warned, the rest (with the late fee) after the fee
    PAID_AFTER_SUSPENSION = "paid_after_suspension"  # equipment cut, then paid in full: restored
    DISPUTE_UPHELD = "dispute_upheld"  # disputed once reminded, upheld with a credit of the balance
    FACTORED = "factored"  # sold to a factor at the ultimatum
    WRITTEN_OFF = "written_off"  # legal review, written off: the equipment stays cut
    SETTLED_AT_LEGAL = "settled_at_legal"  # legal review, settled for half and paid: restored


FINAL_STATE = {
    Fate.PAID_WHEN_ISSUED: InvoiceState.PAID,
    Fate.PAID_EARLY: InvoiceState.PAID,
    Fate.PAID_IN_TWO: InvoiceState.PAID,
    Fate.PAID_AFTER_SUSPENSION: InvoiceState.PAID,
    Fate.DISPUTE_UPHELD: InvoiceState.SETTLED,
    Fate.FACTORED: InvoiceState.FACTORED,
    Fate.WRITTEN_OFF: InvoiceState.WRITTEN_OFF,
    Fate.SETTLED_AT_LEGAL: InvoiceState.SETTLED,
}
# the stage each fate's first request waits for
TRIGGER = {
    Fate.PAID_WHEN_ISSUED: InvoiceState.ISSUED,
    Fate.PAID_EARLY: InvoiceState.REMINDED,
    Fate.PAID_IN_TWO: InvoiceState.WARNED,
    Fate.PAID_AFTER_SUSPENSION: InvoiceState.SUSPENDED,
    Fate.DISPUTE_UPHELD: InvoiceState.REMINDED,
    Fate.FACTORED: InvoiceState.ULTIMATUM,
    Fate.WRITTEN_OFF: InvoiceState.LEGAL_REVIEW,
    Fate.SETTLED_AT_LEGAL: InvoiceState.LEGAL_REVIEW,
}
# fates whose invoices have equipment the contract allows to cut
WITH_EQUIPMENT = frozenset({Fate.PAID_AFTER_SUSPENSION, Fate.WRITTEN_OFF, Fate.SETTLED_AT_LEGAL})


@dataclass
class ScriptedInvoice:
    """One invoice of the run: who it is, its fate, and what the driver asked of it."""

    invoice_id: str
    customer_id: str
    fate: Fate
    amount_minor: int
    equipment_ids: list[str]
    ladder: list[tuple[StageAction, int]] = field(default_factory=lambda: list(LADDER))  # (stage, seconds after due)
    invoice: Invoice | None = None  # built when started: its due moment is LEAD after the start
    payments: dict[str, int] = field(default_factory=dict)  # payment id -> amount, every one the driver sent
    answered: set[str] = field(default_factory=set)  # the payments answered with a balance: surely recorded
    failed_seen: set[str] = field(default_factory=set)  # equipment ever shown in its FailedEquipment
    done: bool = False

    @property
    def workflow_id(self) -> str:
        return f"invoice-{self.invoice_id}"

    @property
    def label(self) -> str:
        return f"{self.invoice_id} ({self.fate.value})"

    @property
    def final_state(self) -> InvoiceState:
        return FINAL_STATE[self.fate]

    def build(self, now: datetime) -> Invoice:
        due = (now + LEAD).astimezone(UTC).replace(microsecond=0)
        return Invoice.model_validate(
            {
                "invoice_id": self.invoice_id,
                "customer_id": self.customer_id,
                "contact": {
                    "name": f"Billing {self.customer_id}",
                    "email": f"billing@{self.customer_id.lower()}.example",
                },
                "amount_minor": self.amount_minor,
                "currency": CURRENCY,
                "issue_date": due.date(),
                "due_date": due.date(),
                "time_zone": "UTC",
                "terms": {
                    "late_fee_percent_per_month": "1.5",
                    "fixed_late_fee_minor": 1_500,
                    "remote_disconnect_authorized": bool(self.equipment_ids),
                    "equipment_ids": self.equipment_ids,
                },
                "policy": {
                    "stages": [{"action": a.value, "offset": timedelta(seconds=s)} for a, s in self.ladder],
                    "due_time": due.time(),
                    "sending_window": None,
                    "recoveries_accepted_for": timedelta(0),  # a written-off invoice's workflow ends at once
                },
            }
        )


def scripted_invoices(
    count: int,
    run: str,
    fates: list[Fate] | None = None,
    equipment_per_invoice: int = 2,
    ladder: list[tuple[StageAction, int]] = LADDER,
) -> list[ScriptedInvoice]:
    """``count`` invoices taking the ``fates`` in turn (all of them by default); ids start with ``run``."""
    fates = fates or list(Fate)
    scripts = []
    for n in range(count):
        fate = fates[n % len(fates)]
        invoice_id = f"{run}-{n:04d}"
        equipment = (
            [f"eq-{invoice_id}-{k}" for k in range(1, equipment_per_invoice + 1)] if fate in WITH_EQUIPMENT else []
        )
        scripts.append(ScriptedInvoice(invoice_id, f"C-{run}-{n:04d}", fate, 100_000 + 7 * n, equipment, list(ladder)))
    return scripts


def equipment_owners(scripts: list[ScriptedInvoice]) -> dict[str, str]:
    """``{equipment id: customer id}`` for the registry."""
    return {eid: s.customer_id for s in scripts for eid in s.equipment_ids}


@dataclass(frozen=True)
class Visible:
    """What Temporal's visibility says of one invoice."""

    running: bool
    state: InvoiceState | None
    failed_equipment: tuple[str, ...]


class Driver:
    """Starts the invoices and plays each one's fate; every wait ends at ``deadline`` (monotonic), or as soon
    as ``check_alive`` raises (a worker that died on its own)."""

    def __init__(
        self, client: Client, scripts: list[ScriptedInvoice], deadline: float, check_alive: Callable[[], None]
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.deadline = deadline
        self.check_alive = check_alive
        self.visible: dict[str, Visible] = {}
        self._acting: dict[str, asyncio.Task] = {}
        self._began = time.monotonic()
        self.milestones: dict[str, float] = {}  # what was over, seconds after the driver was made

    def timeline(self) -> str:
        """``started 25 s, played 61 s, closed 190 s``."""
        return ", ".join(f"{what} {at:.0f} s" for what, at in self.milestones.items())

    def _reached_milestone(self, what: str) -> None:
        self.milestones[what] = time.monotonic() - self._began

    # --- starting ------------------------------------------------------------------------------

    async def start_all(self, per_second: float) -> None:
        """Start every invoice, ``per_second`` of them a second."""
        for script in self.scripts:
            script.invoice = script.build(datetime.now(UTC))
            await self._answered(script, "start", functools.partial(self._start, script.invoice))
            await asyncio.sleep(1 / per_second)
        self._reached_milestone("started")

    async def _start(self, invoice: Invoice) -> None:
        try:
            await invoices.start_invoice(self.client, TASK_QUEUE, invoice, minimum_notice=MINIMUM_NOTICE)
        except InvoiceError as err:
            if err.refusal != Refusal.EXISTS:  # EXISTS: an earlier attempt started it, its answer was lost
                raise

    # --- playing the fates ---------------------------------------------------------------------

    async def play(self) -> None:
        """Until every fate is played: read the stages, start each request whose stage has come."""
        try:
            while not all(s.done for s in self.scripts):
                self._check_time("play the fates", [s for s in self.scripts if not s.done])
                await self.refresh()
                for script in self.scripts:
                    if script.done or script.invoice_id in self._acting:
                        continue
                    seen = self.visible.get(script.workflow_id)
                    if seen and seen.state in ESCALATION and _reached(seen.state, TRIGGER[script.fate]):
                        self._acting[script.invoice_id] = asyncio.create_task(self._act(script))
                for invoice_id, task in list(self._acting.items()):
                    if task.done():
                        del self._acting[invoice_id]
                        task.result()  # a failed request fails the test here
                await asyncio.sleep(POLL_INTERVAL_S)
            self._reached_milestone("played")
        finally:
            for task in self._acting.values():
                task.cancel()

    async def refresh(self) -> None:
        """Read every invoice's visible state (kept as it was if the server does not answer)."""
        try:
            seen = {}
            async for execution in self.client.list_workflows(page_size=1000):
                attributes = execution.typed_search_attributes
                state = attributes.get(sa.INVOICE_STATE)
                seen[execution.id] = Visible(
                    running=execution.status == WorkflowExecutionStatus.RUNNING,
                    state=InvoiceState(state) if state else None,
                    failed_equipment=tuple(attributes.get(sa.FAILED_EQUIPMENT) or ()),
                )
        except RPCError:
            return
        self.visible = seen
        for script in self.scripts:
            if script.workflow_id in seen:
                script.failed_seen.update(seen[script.workflow_id].failed_equipment)

    async def wait_closed(self) -> None:
        """Until every invoice's workflow has completed."""
        while True:
            self.check_alive()
            await self.refresh()
            open_ = [s for s in self.scripts if self.visible.get(s.workflow_id, Visible(True, None, ())).running]
            if not open_:
                self._reached_milestone("closed")
                return
            if time.monotonic() > self.deadline:
                raise AssertionError(
                    f"could not close every invoice before the deadline: {len(open_)} invoice(s) open:\n"
                    + "\n".join([await self._why_open(s) for s in open_[:10]])
                )
            self._check_time("close every invoice", open_)
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _why_open(self, script: ScriptedInvoice) -> str:
        """What an open invoice waits on, from the server: its visible state, its pending activities and a pending
        workflow task with its last failure."""
        seen = getattr(self.visible.get(script.workflow_id), "state", None)
        try:
            description = await self.client.get_workflow_handle(script.workflow_id).describe()
        except RPCError as err:
            return f"{script.label} seen {seen}; not described: {err.message}"
        raw = description.raw_description
        pending = [
            f"{a.activity_type.name} attempt {a.attempt} ({PendingActivityState.Name(a.state)}, next try in "
            f"{a.current_retry_interval.ToTimedelta()}), last failure: {a.last_failure.message or None}"
            for a in raw.pending_activities
        ]
        if raw.HasField("pending_workflow_task"):
            failures = [
                e.workflow_task_failed_event_attributes
                async for e in self.client.get_workflow_handle(script.workflow_id).fetch_history_events()
                if e.HasField("workflow_task_failed_event_attributes")
            ]
            last = f", last failure: {failures[-1].failure.message[:2000]}" if failures else ""
            pending.append(f"workflow task attempt {raw.pending_workflow_task.attempt}{last}")
        return f"{script.label} seen {seen}; pending: {'; '.join(pending) or 'nothing'}"

    async def _act(self, script: ScriptedInvoice) -> None:
        fate, amount = script.fate, script.amount_minor
        if fate == Fate.PAID_IN_TWO:
            await self._pay(script, amount // 2)
            await self._wait_until_reached(script, InvoiceState.LATE_FEE)
        if fate in (Fate.PAID_WHEN_ISSUED, Fate.PAID_EARLY, Fate.PAID_IN_TWO, Fate.PAID_AFTER_SUSPENSION):
            await self._pay_in_full(script)
        elif fate == Fate.DISPUTE_UPHELD:
            await self._update(
                script, InvoiceWorkflow.open_dispute, OpenDispute(reason="fault test dispute"), "dispute"
            )
            credit = (await self._status(script)).balance_minor
            upheld = ResolveDispute(outcome=DisputeOutcome.UPHELD, credit_minor=credit, note="fault test")
            await self._update(script, InvoiceWorkflow.resolve_dispute, upheld, "resolve")
        elif fate == Fate.FACTORED:
            factoring = MarkFactored(factor="factor-1", advance_minor=amount // 2)
            await self._update(script, InvoiceWorkflow.mark_factored, factoring, "factored")
        elif fate == Fate.WRITTEN_OFF:
            await self._update(
                script, InvoiceWorkflow.decide_legal, DecideLegal(decision=LegalDecision.WRITE_OFF), "legal"
            )
        elif fate == Fate.SETTLED_AT_LEGAL:
            half = (await self._status(script)).balance_minor // 2
            settle = DecideLegal(decision=LegalDecision.SETTLE, settle_amount_minor=half)
            await self._update(script, InvoiceWorkflow.decide_legal, settle, "legal")
            await self._pay_in_full(script)
        script.done = True

    async def _wait_until_reached(self, script: ScriptedInvoice, state: InvoiceState) -> None:
        while True:
            seen = self.visible.get(script.workflow_id)
            if seen and seen.state in ESCALATION and _reached(seen.state, state):
                return
            self._check_time(f"see {state.value}", [script])
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _pay_in_full(self, script: ScriptedInvoice) -> None:
        """Pay the balance; again if a fee was charged meanwhile; done when the invoice is closed."""
        while True:
            status = await self._status(script)
            if status.state.closed or await self._pay(script, status.balance_minor) in (0, CLOSED):
                return

    async def _pay(self, script: ScriptedInvoice, amount_minor: int) -> object:
        """One payment under a new id; the balance after it, or ``CLOSED``."""
        payment_id = f"{script.invoice_id}-P{len(script.payments) + 1}"
        script.payments[payment_id] = amount_minor
        payment = Payment(payment_id=payment_id, amount_minor=amount_minor, currency=CURRENCY)
        balance = await self._update(script, InvoiceWorkflow.record_payment, payment, payment_id)
        if balance != CLOSED:
            script.answered.add(payment_id)
        return balance

    async def _status(self, script: ScriptedInvoice) -> InvoiceStatus:
        return await self._answered(script, "status", lambda: invoices.status(self.client, script.invoice_id))

    async def _update(self, script: ScriptedInvoice, update: Callable, argument: object, name: str) -> object:
        """An update under a stable id (``<invoice>/<name>``), sent until answered: Temporal applies an id at
        most once, so resending after a lost answer is safe for every request. ``CLOSED`` if the invoice is."""
        handle = invoices.invoice_handle(self.client, script.invoice_id)
        update_id = f"{script.invoice_id}/{name}"

        async def send() -> object:
            try:
                return await handle.execute_update(update, argument, id=update_id, rpc_timeout=invoices.ANSWER_TIMEOUT)
            except WorkflowUpdateFailedError as err:
                if isinstance(err.cause, ApplicationError) and err.cause.type == "InvoiceClosed":
                    return CLOSED
                raise AssertionError(f"{script.label}: update {update_id} refused: {err.cause}") from None
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:  # the workflow has completed
                    return CLOSED
                raise

        return await self._answered(script, f"update {update_id}", send)

    async def _answered(self, script: ScriptedInvoice, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` until it is answered; no worker or no server means try again."""
        while True:
            try:
                return await call()
            except InvoiceError as err:
                if err.refusal != Refusal.UNAVAILABLE:
                    raise AssertionError(f"{script.label}: {what}: {err}") from None
                reason = str(err)
            except WorkflowUpdateRPCTimeoutOrCancelledError:
                reason = "no answer in time"
            except RPCError as err:
                reason = f"{err.status}: {err.message}"
            if time.monotonic() > self.deadline:
                raise AssertionError(f"{script.label}: {what}: no answer before the deadline (last: {reason})")
            await asyncio.sleep(RETRY_PAUSE_S)

    def _check_time(self, what: str, waiting: list[ScriptedInvoice]) -> None:
        self.check_alive()
        if time.monotonic() <= self.deadline:
            return
        shown = ", ".join(
            f"{s.label} seen {getattr(self.visible.get(s.workflow_id), 'state', None)}" for s in waiting[:10]
        )
        raise AssertionError(f"could not {what} before the deadline: {len(waiting)} invoice(s) waiting: {shown}")


def _reached(seen: InvoiceState, wanted: InvoiceState) -> bool:
    return ESCALATION.index(seen) >= ESCALATION.index(wanted)


async def play_through(driver: Driver, per_second: float, *faults: Awaitable[None]) -> None:
    """Start every invoice, play every fate and cause the ``faults`` meanwhile; then wait until every
    invoice's workflow has completed."""
    async with asyncio.TaskGroup() as run:
        run.create_task(driver.start_all(per_second))
        run.create_task(driver.play())
        for fault in faults:
            run.create_task(fault)
    await driver.wait_closed()
