"""Invoices with scripted fates, and the driver that plays every script through real requests.

Each invoice follows a ladder a few seconds long in real time (no sending window) and a fate:
what the test does to it, once it has reached which stage. So its final state is known before
the run, and the notices, cuts and restores it must get follow from the stages it reached
before the test acted (``tests.faults.checks``).

The driver reads the stage of every invoice from Temporal's visibility (one list call for all
of them; it needs no worker), starts invoices through ``client.invoices``, as the CLI and the API
do, reads their status where ``DUNNING_SOAK_STATUS`` says (``projection``, the read model the API
and the CLI answer from by default, or ``live``, the workflow's ``status`` query: ``--live``), and
sends each update under a stable update id of its own: a request
that got no answer (worker dead, server down) is sent again unchanged, and Temporal applies an
update id at most once, so no retry of the test is ever a second request.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import TypeVar

import asyncpg
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities import projections
from client import invoices
from client.invoices import InvoiceError, Refusal
from tests.faults.intake import CLOSED, HttpIntake, NoAnswer
from tests.faults.stack import TASK_QUEUE
from workflows import ladder as rungs
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
    NoticeKind,
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
LATE_FEE_PERCENT = Decimal("1.5")  # per month, of the unpaid principal: the scripted terms
FIXED_LATE_FEE_MINOR = 1_500  # with the first late fee
RETRY_PAUSE_S = 1.0
POLL_INTERVAL_S = 1.0


class StatusReads(StrEnum):
    """Where the driver reads an invoice's status (``DUNNING_SOAK_STATUS``)."""

    PROJECTION = "projection"  # the read model, as the API and the CLI do by default
    LIVE = "live"  # the workflow's ``status`` query, the query path of the SDK defect (test_worker_gone_mid_stage)


STATUS_READS = StatusReads(os.environ.get("DUNNING_SOAK_STATUS", StatusReads.PROJECTION))


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
    shares_with: list[str] = field(default_factory=list)  # invoices of its customer that hold the same equipment
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
                    "late_fee_percent_per_month": str(LATE_FEE_PERCENT),
                    "fixed_late_fee_minor": FIXED_LATE_FEE_MINOR,
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


@dataclass(frozen=True)
class Money:
    """An invoice's amounts once it is closed (minor units)."""

    paid: int
    fees: int
    credited: int
    written_off: int
    balance: int


def first_late_fee(principal_minor: int) -> int:
    """The late fee the scripted terms charge on an unpaid principal: its percentage, rounded half up, and the
    fixed fee (computed here, not by the service's ``policy``, so a wrong fee there shows)."""
    percent = (Decimal(principal_minor) * LATE_FEE_PERCENT / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(percent) + FIXED_LATE_FEE_MINOR


def expected_money(script: ScriptedInvoice) -> list[Money]:
    """The amounts the invoice must close with, from its script alone: each one its fate allows. A fate
    played before the late-fee stage may meet the fee when a fault delays its request, so it allows both;
    the payments are the driver's own (``ScriptedInvoice.payments``), never the log's."""
    amount, fate = script.amount_minor, script.fate
    full_fee = first_late_fee(amount)
    if fate in (Fate.PAID_WHEN_ISSUED, Fate.PAID_EARLY):
        return [Money(amount + fee, fee, 0, 0, 0) for fee in (0, full_fee)]
    if fate == Fate.PAID_IN_TWO:  # half before the fee, unless the fault held the half back past it
        fees = (first_late_fee(amount - amount // 2), full_fee)
        return [Money(amount + fee, fee, 0, 0, 0) for fee in fees]
    if fate == Fate.PAID_AFTER_SUSPENSION:
        return [Money(amount + full_fee, full_fee, 0, 0, 0)]
    if fate == Fate.DISPUTE_UPHELD:  # the credit is the whole balance
        return [Money(0, fee, amount + fee, 0, 0) for fee in (0, full_fee)]
    if fate == Fate.FACTORED:  # the balance is sold, not paid: it stays on the invoice
        return [Money(0, full_fee, 0, 0, amount + full_fee)]
    if fate == Fate.WRITTEN_OFF:
        return [Money(0, full_fee, 0, amount + full_fee, 0)]
    settled = (amount + full_fee) // 2  # SETTLED_AT_LEGAL: for half the balance, then paid
    return [Money(settled, full_fee, 0, amount + full_fee - settled, 0)]


def required_notices(script: ScriptedInvoice) -> Counter[str]:
    """The notices the invoice must have had whatever the timing, from its script alone: the invoice, every
    stage of its ladder before the one its fate waits for (that one's too, unless a request may overtake
    it: a block's notice comes after its cuts), a receipt for each payment the driver got a balance for,
    and what its fate's requests tell the client. A fault may let it climb further: more is allowed."""
    wanted: Counter[str] = Counter({NoticeKind.INVOICE_ISSUED.value: 1})
    trigger = TRIGGER[script.fate]
    for stage, _ in script.ladder:
        rung = rungs.RUNGS[stage]
        if rung.state_after is None or not _reached(trigger, rung.state_after):
            break
        if not (rung.state_after == trigger and rung.suspends_service):
            wanted[rung.notice.value] += 1
    wanted[NoticeKind.RECEIPT.value] += len(script.answered)
    if script.fate == Fate.DISPUTE_UPHELD:
        wanted.update([NoticeKind.DISPUTE_OPENED.value, NoticeKind.DISPUTE_RESOLVED.value])
    if script.fate == Fate.PAID_IN_TWO:
        wanted[NoticeKind.LATE_FEE.value] = 1  # the rest is paid once the fee is charged
    if script.equipment_ids and script.fate != Fate.WRITTEN_OFF and not script.shares_with:
        wanted[NoticeKind.RESTORED.value] += 1  # shared, the last release tells it (the equipment check's)
    return wanted


def scripted_invoices(
    count: int,
    run: str,
    fates: list[Fate] | None = None,
    equipment_per_invoice: int = 2,
    ladder: list[tuple[StageAction, int]] = LADDER,
    shared_equipment: bool = True,
) -> list[ScriptedInvoice]:
    """``count`` invoices taking the ``fates`` in turn (all of them by default); ids start with ``run``. With
    ``shared_equipment``, the invoices with equipment go in pairs: the second of a pair belongs to the first's
    customer and holds the same equipment (so its customer cuts and restores for both)."""
    fates = fates or list(Fate)
    scripts = []
    first_of_pair: ScriptedInvoice | None = None
    for n in range(count):
        fate = fates[n % len(fates)]
        invoice_id = f"{run}-{n:04d}"
        equipment = (
            [f"eq-{invoice_id}-{k}" for k in range(1, equipment_per_invoice + 1)] if fate in WITH_EQUIPMENT else []
        )
        script = ScriptedInvoice(invoice_id, f"C-{run}-{n:04d}", fate, 100_000 + 7 * n, equipment, list(ladder))
        if equipment and shared_equipment:
            if first_of_pair is None:
                first_of_pair = script
            else:
                script.customer_id, script.equipment_ids = first_of_pair.customer_id, list(first_of_pair.equipment_ids)
                script.shares_with, first_of_pair.shares_with = [first_of_pair.invoice_id], [script.invoice_id]
                first_of_pair = None
        scripts.append(script)
    return scripts


def equipment_groups(scripts: list[ScriptedInvoice]) -> list[list[ScriptedInvoice]]:
    """The invoices that hold the same equipment, together: one invoice alone, or the two of a pair."""
    groups: dict[tuple[str, ...], list[ScriptedInvoice]] = {}
    for script in scripts:
        if script.equipment_ids:
            groups.setdefault(tuple(script.equipment_ids), []).append(script)
    return list(groups.values())


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
        self,
        client: Client,
        pool: Callable[[], asyncpg.Pool],
        scripts: list[ScriptedInvoice],
        deadline: float,
        check_alive: Callable[[], None],
        intake: HttpIntake | None = None,
    ) -> None:
        self.client = client
        self.pool = pool  # the stack's current pool (a Postgres restart replaces it)
        self.intake = intake  # pay through the API and the webhook (in turn) instead of the workflow's update
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
            credit = (await self._status(script, shows=lambda status: status.disputed)).balance_minor
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
            at_legal = await self._status(
                script, shows=lambda s: s.state in ESCALATION and _reached(s.state, TRIGGER[fate])
            )
            half = at_legal.balance_minor // 2
            settle = DecideLegal(decision=LegalDecision.SETTLE, settle_amount_minor=half)
            await self._update(script, InvoiceWorkflow.decide_legal, settle, "legal")
            await self._pay_in_full(script, shows=lambda status: status.written_off_minor > 0)
        script.done = True

    async def _wait_until_reached(self, script: ScriptedInvoice, state: InvoiceState) -> None:
        while True:
            seen = self.visible.get(script.workflow_id)
            if seen and seen.state in ESCALATION and _reached(seen.state, state):
                return
            self._check_time(f"see {state.value}", [script])
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _pay_in_full(
        self, script: ScriptedInvoice, shows: Callable[[InvoiceStatus], bool] = lambda status: True
    ) -> None:
        """Pay the balance; again if a fee was charged meanwhile; done when the invoice is closed."""
        while True:
            status = await self._status(script, shows)
            if status.state.closed or await self._pay(script, status.balance_minor) in (0, CLOSED):
                return

    async def _pay(self, script: ScriptedInvoice, amount_minor: int) -> object:
        """One payment under a new id; the balance after it, or ``CLOSED``."""
        payment_id = f"{script.invoice_id}-P{len(script.payments) + 1}"
        script.payments[payment_id] = amount_minor
        payment = Payment(payment_id=payment_id, amount_minor=amount_minor, currency=CURRENCY)
        if self.intake is None:
            balance = await self._update(script, InvoiceWorkflow.record_payment, payment, payment_id)
        else:
            via_webhook = len(script.payments) % 2 == int(script.invoice_id[-1]) % 2  # both ways for every fate
            pay = functools.partial(self.intake.pay, script.invoice_id, payment, via_webhook=via_webhook)
            balance = await self._answered(script, f"payment {payment_id}", pay)
        if balance != CLOSED:
            script.answered.add(payment_id)
        return balance

    async def _status(
        self, script: ScriptedInvoice, shows: Callable[[InvoiceStatus], bool] = lambda status: True
    ) -> InvoiceStatus:
        """The status (``STATUS_READS``), read again until it shows what the driver has done: its answered payments
        and ``shows`` (a read model lags behind the workflow), or the close."""
        paid = sum(script.payments[payment_id] for payment_id in script.answered)
        while True:
            status = await self._answered(script, "status", lambda: self._read_status(script.invoice_id))
            if status is not None and (status.state.closed or (status.paid_minor >= paid and shows(status))):
                return status
            self._check_time(f"read a status of {script.label} that shows the driver's requests", [script])
            await asyncio.sleep(RETRY_PAUSE_S)

    async def _read_status(self, invoice_id: str) -> InvoiceStatus | None:
        """The status from where ``STATUS_READS`` says; None if the read model has not got the invoice yet."""
        if STATUS_READS == StatusReads.LIVE:
            return await invoices.status(self.client, invoice_id)
        return await projections.invoice_status(self.pool(), invoice_id)

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
            except NoAnswer as err:
                reason = str(err)
            except RPCError as err:
                reason = f"{err.status}: {err.message}"
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:  # the read model's Postgres
                reason = f"{type(err).__name__}: {err}"
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
