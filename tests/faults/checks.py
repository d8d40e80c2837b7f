"""The end-of-run checks the fault tests share: nothing lost, nothing duplicated, and one line that says so.

For every invoice, once its workflow has completed:

- its outcome is the state its fate predicts, and no workflow task of it failed;
- its money (paid, fees, credits, write-off, balance) is the same in the workflow's result, in the sum
  of its events and in the projections, and is one its script allows (``fates.expected_money``,
  computed from the script, never from the log); each payment recorded is the amount the driver sent;
- the workflow's last event (its result's ``last_sequence``) is the log's last and the projection's:
  a lost trailing event, invisible to the gap check, fails here;
- its events (Postgres) are numbered 1..n without a gap, each fact appears once (a stage, a
  payment, a notice step, a cut...), the stages reached are the start of the ladder and include
  the one the driver acted on, nothing escalates after the close, every payment the driver got an
  answer for is there;
- the notices it got include those its script guarantees (``fates.required_notices``), and are exactly
  those its events call for (``expected_notices``: the events are checked complete above), numbered
  without a gap, and the SMTP server received each step exactly once (a second copy with the
  same Message-ID around a fault is the documented at-least-once window: counted as
  ``redelivered``, which a receiver drops by Message-ID; any other second copy is a duplicate);
- each piece of equipment was cut once at the controller if the invoice was suspended, restored
  once if it was then paid, settled or factored (never if written off), and a piece nothing
  answers for is a ``suspend_failed`` event and showed in ``FailedEquipment`` for ops while the
  invoice was open (the workflow drops a piece never cut from it at the close);
- the projections have caught up and equal a rebuild from the events;
- its history replays with the current code (``unreplayable`` counts those that do not: a history the
  SDK defect of ``test_worker_gone_mid_stage`` wrote would fail the invoice's next replay);
- no activity failure in its history is one Temporal replaced for its size ("Failure exceeds size limit."): ops
  would see no reason for it (``client.failures`` bounds every failure the worker sends).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

from activities.projections import PROJECTION_TABLES, projection_lag, rebuild
from tests.faults.fates import (
    TRIGGER,
    Driver,
    Money,
    ScriptedInvoice,
    equipment_groups,
    equipment_owners,
    expected_money,
    play_through,
    required_notices,
)
from tests.faults.intake import HttpIntake
from tests.faults.stack import API_TOKEN, WEBHOOK_SECRET, Delivery, Fault, FaultStack, fault_stack, wait_for_poller
from worker.sandbox import workflow_runner
from workflows import ladder, policy
from workflows.invoice import InvoiceWorkflow
from workflows.models import EventKind, InvoiceOutcome, InvoiceState, LegalDecision, NoticeKind, StageAction

# the event that commits the workflow to a notice (a stage's own notice comes with ``stage_reached``, except
# suspension's and the hand-over's, which come at the end of their stage: a close before it stops them)
STAGE_NOTICE = {
    StageAction.COURTESY: NoticeKind.COURTESY,
    StageAction.REMINDER: NoticeKind.REMINDER,
    StageAction.WARNING: NoticeKind.WARNING,
    StageAction.ULTIMATUM: NoticeKind.ULTIMATUM,
}
EVENT_NOTICE = {
    EventKind.INVOICE_ISSUED: NoticeKind.INVOICE_ISSUED,
    EventKind.INVOICE_RESENT: NoticeKind.INVOICE_ISSUED,
    EventKind.LATE_FEE_CHARGED: NoticeKind.LATE_FEE,
    EventKind.LEGAL_REVIEW_OPENED: NoticeKind.LEGAL_REVIEW,
    EventKind.PAYMENT_RECORDED: NoticeKind.RECEIPT,
    EventKind.DISPUTE_OPENED: NoticeKind.DISPUTE_OPENED,
    EventKind.DISPUTE_RESOLVED: NoticeKind.DISPUTE_RESOLVED,
    EventKind.SERVICE_RESTORED: NoticeKind.RESTORED,
    EventKind.PAYMENT_PLAN_AGREED: NoticeKind.PLAN_AGREED,
    EventKind.INSTALMENT_MISSED: NoticeKind.INSTALMENT_MISSED,
}
OPEN_INVOICE_NOTICE = {
    EventKind.SERVICE_SUSPENDED: NoticeKind.SUSPENDED,
    EventKind.AGENCY_HANDOVER: NoticeKind.AGENCY_HANDOVER,
}
# facts that happen at most once in these runs (per invoice; equipment facts per piece)
ONCE = {
    EventKind.INVOICE_ISSUED,
    EventKind.INVOICE_CLOSED,
    EventKind.LATE_FEE_CHARGED,
    EventKind.DISPUTE_OPENED,
    EventKind.DISPUTE_RESOLVED,
    EventKind.SERVICE_SUSPENDED,
    EventKind.SERVICE_RESTORED,
    EventKind.AGENCY_HANDOVER,
    EventKind.LEGAL_REVIEW_OPENED,
    EventKind.LEGAL_DECISION,
    EventKind.INVOICE_FACTORED,
}
# a new step of escalation: none may follow ``invoice_closed``
ESCALATION_EVENTS = {EventKind.STAGE_REACHED, EventKind.LATE_FEE_CHARGED, EventKind.LEGAL_REVIEW_OPENED}
CUT_EVENTS = {EventKind.EQUIPMENT_SUSPENDED, EventKind.SUSPEND_FAILED}
STAGE_OF_STATE = {state: stage for stage, state in ladder.STATE_AFTER_STAGE.items()}
OVERSIZED = "exceeds size limit"  # Temporal's message for a failure it replaced because of its size
# a fault under way at any moment from 5 s before a first copy to 30 s after it (and begun before the second)
# explains a second copy: a copy sent while PostgreSQL is down cannot be recorded sent
REDELIVERY_WINDOW_S = (5.0, 30.0)
CATCH_UP_TIMEOUT_S = 60.0
PARALLEL_READS = 10


@dataclass
class Event:
    sequence: int
    kind: EventKind
    data: dict
    occurred_at: float = 0.0  # epoch seconds, as ``time.time()``


@dataclass(frozen=True)
class Projected:
    """What the read models say of one invoice: its row's amounts and last sequence, and its receivable."""

    money: Money
    last_sequence: int
    receivable: int  # the sum of its dated receivable entries


@dataclass
class RunReport:
    """What the checks counted, and every problem they found (``lost``, ``duplicated``, ``other``)."""

    title: str
    invoices: int = 0
    messages: int = 0
    cuts: int = 0
    restores: int = 0
    events: int = 0
    redelivered: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unreplayable: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The one line a fault test prints."""
        return (
            f"{self.title}: invoices={self.invoices} messages={self.messages} cuts={self.cuts}"
            f" restores={self.restores} events={self.events} lost={len(self.lost)}"
            f" duplicated={len(self.duplicated)} redelivered={len(self.redelivered)}"
            f" unreplayable={len(self.unreplayable)}"
        )

    def print(self) -> None:
        """The line, then the redeliveries and the notes, indented."""
        print(self.line())
        for detail in [*(f"redelivered: {r}" for r in self.redelivered), *self.notes]:
            print(f"    {detail}")

    def problems(self) -> list[str]:
        """Every problem found, each with its kind."""
        problems = [f"lost: {p}" for p in self.lost] + [f"duplicated: {p}" for p in self.duplicated]
        return problems + [f"does not replay: {p}" for p in self.unreplayable] + [f"wrong: {p}" for p in self.other]

    def assert_clean(self) -> None:
        problems = self.problems()
        assert not problems, f"{self.line()}; {len(problems)} problem(s):\n" + "\n".join(problems[:60])


def expected_notices(events: list[Event]) -> Counter[str]:
    """The notices an invoice's events call for, by kind (README: what an invoice does)."""
    wanted: Counter[str] = Counter()
    closed = next((e.sequence for e in events if e.kind == EventKind.INVOICE_CLOSED), None)
    for event in events:
        notice = _notice_of(event, events, closed)
        if notice:
            wanted[notice.value] += 1
    return wanted - caught_up_notices(events)


def caught_up_notices(events: list[Event]) -> Counter[str]:
    """The rungs' notices a catch-up held back: of several rungs reached before any notice went out (a
    worker back after a kill, a cut that waited for its ultimatum), only the highest rung's is told, and
    it is the next notice sent. A notice sent between two rungs shows they were not taken together.

    A catch-up tells its highest rung only once its last step is done; a close that came meanwhile (a
    factoring while the hand-over that followed the cut was under way) leaves every rung of it untold, as
    ``Outbox.tell_highest`` says. So several stages reached with no notice between them (one step alone
    is told at once), then the close and none of their notices after it: all of them were held back."""
    closed = next((e.sequence for e in events if e.kind == EventKind.INVOICE_CLOSED), None)
    held_back: Counter[str] = Counter()
    together: list[NoticeKind] = []
    stages = 0  # reached since the last notice sent: more than one, they were taken together
    cut_short = False  # the close came after them, before any notice

    def dropped_by_the_close() -> None:
        if stages > 1 and cut_short:
            held_back.update(n.value for n in together)

    for event in events:
        if event.kind == EventKind.NOTICE_SENT:
            highest = max(together, key=ladder.NOTICE_HEIGHT.__getitem__, default=None)
            if len(together) > 1 and highest is not None and event.data["kind"] == highest.value:
                held_back.update(n.value for n in together)
                held_back[highest.value] -= 1
            else:
                dropped_by_the_close()
            together, stages, cut_short = [], 0, False
            continue
        stages += event.kind == EventKind.STAGE_REACHED
        if (notice := _notice_of(event, events, closed)) in ladder.NOTICE_HEIGHT:
            together.append(notice)
        elif event.kind == EventKind.INVOICE_CLOSED:
            cut_short = bool(together)
    dropped_by_the_close()
    return +held_back


def _notice_of(event: Event, events: list[Event], closed: int | None) -> NoticeKind | None:
    if event.kind == EventKind.STAGE_REACHED:
        return STAGE_NOTICE.get(StageAction(event.data["stage"]))
    if event.kind in OPEN_INVOICE_NOTICE:
        overtaken = closed is not None and closed < _stage_end(event, events)
        return None if overtaken else OPEN_INVOICE_NOTICE[event.kind]
    if event.kind == EventKind.SERVICE_RESTORED and event.data.get("support_and_orders_blocked"):
        return None  # released, but another invoice of the customer still holds the block: nothing to tell
    return EVENT_NOTICE.get(event.kind)


def _stage_end(event: Event, events: list[Event]) -> int:
    """The sequence that ends the stage of a block or a hand-over: a block's cuts are recorded after it (a close
    during the cuts stops the stage before its notice, README: a stage overtaken by a payment stops there)."""
    if event.kind != EventKind.SERVICE_SUSPENDED:
        return event.sequence
    cuts = [e.sequence for e in events if e.kind in CUT_EVENTS and e.sequence > event.sequence]
    return max(cuts, default=event.sequence)


async def run_under_fault(
    scripts: list[ScriptedInvoice],
    per_second: float,
    deadline_s: float,
    fault: Callable[[FaultStack], Awaitable[None]],
    title: str,
    *,
    unreachable: frozenset[str] = frozenset(),
    codec_keys: str | None = None,
    through_api: bool = False,
    workers: int = 1,
    also_check: Callable[[FaultStack], Awaitable[list[str]]] | None = None,
) -> RunReport:
    """Play ``scripts`` on a stack of their own, started ``per_second``, while ``fault(stack)`` runs; then run
    every check (``check_run``) and ``also_check``'s, print the one-line result and fail on any problem;
    returns the report.

    ``codec_keys``: the stack encrypts payloads; ``through_api``: payments go through ``dunning api`` (the
    intake and the webhook in turn) instead of the workflow's update; ``workers``: how many worker processes
    (each with its projector) share the task queue."""
    options = {"unreachable": unreachable, "codec_keys": codec_keys, "api": through_api}
    async with fault_stack(equipment_owners(scripts), **options) as stack, AsyncExitStack() as cleanup:
        for _ in range(workers - 1):
            stack.workers.start()
        await wait_for_poller(stack.client, pids=stack.workers.pids())
        intake = None
        if through_api:
            intake = HttpIntake(stack.api_url, API_TOKEN, WEBHOOK_SECRET)
            cleanup.push_async_callback(intake.close)
        driver = Driver(
            stack.client, lambda: stack.pool, scripts, time.monotonic() + deadline_s, stack.assert_workers_alive, intake
        )
        await play_through(driver, per_second, fault(stack))
        report = await check_run(stack, driver, title, unreachable=unreachable)
        if also_check:
            report.other += await also_check(stack)
        report.notes.append(driver.timeline())
    if unreachable:
        report.notes.append(f"never answering: {', '.join(sorted(unreachable))}")
    report.print()
    report.assert_clean()
    return report


async def check_run(
    stack: FaultStack, driver: Driver, title: str, *, unreachable: frozenset[str] = frozenset()
) -> RunReport:
    """Every check of the module docstring, once ``driver.wait_closed()`` has returned.

    ``unreachable``: the equipment nothing ever answers for (``fault_stack(unreachable=...)``).
    """
    scripts = driver.scripts
    report = RunReport(title, invoices=len(scripts))
    events = await _events(stack.pool)
    report.events = sum(len(e) for e in events.values())
    deliveries = _by_step(stack.smtp.deliveries)
    outcomes, task_failures, retried, histories = await _read_workflows(stack.client, scripts)
    report.other += oversized_failures(histories, {s.workflow_id: s.label for s in scripts})
    replay_began = time.monotonic()
    report.unreplayable = await _unreplayable(
        histories, {s.workflow_id: s.label for s in scripts}, stack.client.data_converter
    )
    report.notes.append(f"replayed {len(histories)} histories in {time.monotonic() - replay_began:.1f} s")
    faults = [*stack.faults, *stack.smtp.slow_answers]
    if faults:
        report.notes.append("faults: " + ", ".join(f"{f.what} for {f.ended - f.started:.1f} s" for f in faults))
    if retried:
        report.notes.append("activities retried: " + "; ".join(f"{what} x{n}" for what, n in retried.most_common()))
    report.other += await _projections_caught_up(stack.pool)
    projected = await _projected(stack.pool)
    started = {h.workflow_id: h.events[0].event_time.ToDatetime(tzinfo=UTC) for h in histories if h.events}
    for script in scripts:
        _check_invoice(
            report,
            stack,
            script,
            events.get(script.invoice_id, []),
            deliveries,
            outcomes[script.invoice_id],
            task_failures[script.invoice_id],
            unreachable,
            started.get(script.workflow_id),
        )
        invoice_events = events.get(script.invoice_id, [])
        check_books(report, script, invoice_events, outcomes[script.invoice_id], projected.get(script.invoice_id))
    for group in equipment_groups(scripts):
        check_equipment(report, stack, group, events, unreachable)
    known = {s.workflow_id for s in scripts}
    strays = sorted(step for step in deliveries if step.split("/")[0] not in known)
    report.other += [f"a message for no invoice of the run: {step}" for step in strays]
    report.other += await _projections_equal_rebuild(stack.pool, scripts)
    return report


def check_books(
    report: RunReport,
    script: ScriptedInvoice,
    events: list[Event],
    outcome: InvoiceOutcome | str,
    projected: Projected | None,
) -> None:
    """The invoice's money and last sequence agree between the workflow, the log, the projections and the
    script: a payment, fee or trailing event the log (or a read model) lost, or holds twice, shows here."""
    who = script.label
    logged, last_logged = money_in_log(events), max((e.sequence for e in events), default=0)
    for pid, amount in payments_in_log(events).items():
        if pid in script.payments and amount != script.payments[pid]:
            report.other.append(f"{who}: payment {pid} recorded as {amount}, the driver sent {script.payments[pid]}")
    if isinstance(outcome, str):
        return  # no result to compare with: reported by the state check
    result = Money(
        outcome.paid_minor, outcome.fees_minor, outcome.credited_minor, outcome.written_off_minor, outcome.balance_minor
    )
    allowed = expected_money(script)
    if result not in allowed:
        report.other.append(f"{who}: the workflow ended with {result}; its script allows {allowed}")
    _compare_money(report, who, "the log", result, logged)
    if outcome.last_sequence > last_logged:
        report.lost.append(f"{who}: the workflow wrote up to event #{outcome.last_sequence}, the log ends at #{last_logged}")
    elif outcome.last_sequence < last_logged:
        report.duplicated.append(
            f"{who}: the log goes to event #{last_logged}, the workflow wrote only up to #{outcome.last_sequence}"
        )
    if projected is None:
        report.lost.append(f"{who}: not in the projections")
        return
    _compare_money(report, who, "the projection", result, projected.money)
    if projected.last_sequence != outcome.last_sequence:
        report.other.append(
            f"{who}: projected up to event #{projected.last_sequence}, the workflow wrote up to #{outcome.last_sequence}"
        )
    owed = 0 if script.final_state == InvoiceState.FACTORED else result.balance  # a factored balance is sold
    if projected.receivable != owed:
        report.other.append(f"{who}: the projected receivable is {projected.receivable}, the balance {owed}")


def _compare_money(report: RunReport, who: str, where: str, result: Money, found: Money) -> None:
    """Each amount of ``found`` against the workflow's: less paid, charged, credited or written off is lost."""
    for name in ("paid", "fees", "credited", "written_off"):
        want, got = getattr(result, name), getattr(found, name)
        if got < want:
            report.lost.append(f"{who}: {name} {got} in {where}, the workflow says {want}")
        elif got > want:
            report.duplicated.append(f"{who}: {name} {got} in {where}, the workflow says {want}")
    if found.balance != result.balance:
        report.other.append(f"{who}: balance {found.balance} in {where}, the workflow says {result.balance}")


def payments_in_log(events: list[Event]) -> dict[str, int]:
    """Each recorded payment's amount, by payment id (the last one if recorded twice: counted as a duplicate)."""
    return {e.data["payment_id"]: int(e.data["amount_minor"]) for e in events if e.kind == EventKind.PAYMENT_RECORDED}


def money_in_log(events: list[Event]) -> Money:
    """The invoice's amounts as the sum of its facts: what a reader of the log alone would conclude."""
    amount = paid = fees = credited = written_off = discount = 0
    for event in events:
        data = event.data
        if event.kind == EventKind.INVOICE_ISSUED:
            amount = int(data["invoice"]["amount_minor"])
        elif event.kind == EventKind.PAYMENT_RECORDED:
            paid += int(data["amount_minor"])
        elif event.kind == EventKind.LATE_FEE_CHARGED:
            fees += int(data["amount_minor"])
        elif event.kind == EventKind.LATE_FEE_REVERSED:  # a payment whose money arrived before the fee was charged
            fees -= int(data["amount_minor"])
        elif event.kind == EventKind.SMALL_BALANCE_WRITTEN_OFF:  # a residue under the policy's tolerance
            written_off += int(data["amount_minor"])
        elif event.kind == EventKind.DISPUTE_RESOLVED:
            credited += int(data["credit_minor"])
        elif event.kind == EventKind.DISCOUNT_APPLIED:
            discount += int(data["amount_minor"])
        elif event.kind == EventKind.LEGAL_DECISION and data["decision"] == LegalDecision.WRITE_OFF:
            written_off += int(data["balance_minor"])
        elif event.kind == EventKind.LEGAL_DECISION and data["decision"] == LegalDecision.SETTLE:
            written_off += int(data["balance_minor"]) - int(data["settle_amount_minor"])
    balance = max(0, amount + fees - paid - credited - discount - written_off)
    return Money(paid, fees, credited, written_off, balance)


def _check_invoice(
    report: RunReport,
    stack: FaultStack,
    script: ScriptedInvoice,
    events: list[Event],
    deliveries: dict[str, list[Delivery]],
    outcome: InvoiceOutcome | str,
    task_failures: list[str],
    unreachable: frozenset[str],
    started_at: datetime | None,
) -> None:
    who = script.label
    if isinstance(outcome, str) or outcome.state != script.final_state:
        report.other.append(f"{who}: ended {getattr(outcome, 'state', outcome)}, expected {script.final_state.value}")
    report.other += [f"{who}: workflow task failed: {failure}" for failure in task_failures]

    # the event log
    sequences = [e.sequence for e in events]
    if sequences != list(range(1, len(events) + 1)):
        missing = sorted(set(range(1, max(sequences, default=0) + 1)) - set(sequences))
        report.lost.append(f"{who}: event sequence has gaps: missing {missing[:10]} of {len(events)}")
    kinds = Counter(e.kind for e in events)
    for kind in ONCE:
        if kinds[kind] > 1:
            report.duplicated.append(f"{who}: {kind.value} recorded {kinds[kind]} times")
    for kind in (EventKind.INVOICE_ISSUED, EventKind.INVOICE_CLOSED):
        if not kinds[kind]:
            report.lost.append(f"{who}: no {kind.value} event")
    closed = [e for e in events if e.kind == EventKind.INVOICE_CLOSED]
    if closed and closed[0].data["state"] != script.final_state.value:
        report.other.append(f"{who}: invoice_closed says {closed[0].data['state']}")
    if closed:
        _check_nothing_escalates_after(report, who, closed[0], events)
    report.other += [f"{who}: notice failed: {e.data}" for e in events if e.kind == EventKind.NOTICE_FAILED]

    stages = [StageAction(e.data["stage"]) for e in events if e.kind == EventKind.STAGE_REACHED]
    for stage, count in Counter(stages).items():
        if count > 1:
            report.duplicated.append(f"{who}: stage {stage.value} reached {count} times")
    ladder = [stage for stage, _ in script.ladder]
    if stages != ladder[: len(stages)]:
        report.lost.append(f"{who}: stages reached {[s.value for s in stages]} skip one of the ladder")
    trigger = STAGE_OF_STATE.get(TRIGGER[script.fate])
    if trigger and trigger not in stages:
        report.lost.append(f"{who}: stage {trigger.value}, which the driver acted on, is not in the events")

    paid = Counter(e.data["payment_id"] for e in events if e.kind == EventKind.PAYMENT_RECORDED)
    report.duplicated += [f"{who}: payment {pid} recorded {n} times" for pid, n in paid.items() if n > 1]
    report.other += [f"{who}: payment {pid} recorded, never sent" for pid in paid if pid not in script.payments]
    report.lost += [f"{who}: payment {pid} answered, not recorded" for pid in script.answered if pid not in paid]

    check_notices(report, script, events, deliveries, [*stack.faults, *stack.smtp.slow_answers], started_at)


def _check_nothing_escalates_after(report: RunReport, who: str, close: Event, events: list[Event]) -> None:
    """Nothing escalates after the close: no new stage, fee or review; and a stage that was under way when a
    request closed the invoice stops there. A service block recorded after the close is followed by no cut
    and no suspension notice (it is lifted); a hand-over recorded after the close by no hand-over notice."""
    after = [e for e in events if e.sequence > close.sequence]
    kinds_after = {e.kind for e in after}
    late = [e for e in after if e.kind in ESCALATION_EVENTS]
    if EventKind.SERVICE_SUSPENDED in kinds_after:
        late += [e for e in after if e.kind in CUT_EVENTS]
    report.other += [
        f"{who}: {e.kind.value} #{e.sequence} {_brief(e)}after the close (#{close.sequence})" for e in late
    ]
    for cause, notice in OPEN_INVOICE_NOTICE.items():
        if cause in kinds_after:
            told = [e.data["step"] for e in events if e.kind == EventKind.NOTICE_SENT and e.data["kind"] == notice]
            if told:
                report.other.append(
                    f"{who}: {cause.value} after the close (#{close.sequence}), and notice {told[0]} tells the client"
                )


def _after_close(kind: EventKind, events: list[Event]) -> bool:
    """An event of ``kind`` follows the close (the after-close check reports what it caused)."""
    closed = next((e.sequence for e in events if e.kind == EventKind.INVOICE_CLOSED), None)
    return closed is not None and any(e.kind == kind and e.sequence > closed for e in events)


def trail(events: list[Event]) -> str:
    """The invoice's log in one line, to read a finding by: ``#7 service_suspended, #8 notice_sent (ultimatum), ...``."""
    return ", ".join(f"#{e.sequence} {e.kind.value}{_told(e)}" for e in events)


def _told(event: Event) -> str:
    detail = event.data.get("kind") or event.data.get("stage") or event.data.get("equipment_id") or event.data.get("reason")
    return f" ({detail})" if isinstance(detail, str) else ""


def _brief(event: Event) -> str:
    detail = event.data.get("stage") or event.data.get("equipment_id")
    return f"({detail}) " if detail else ""


def check_notices(
    report: RunReport,
    script: ScriptedInvoice,
    events: list[Event],
    deliveries: dict[str, list[Delivery]],
    faults: list[Fault],
    started_at: datetime | None = None,
) -> None:
    """Every notice the invoice's script and log call for was recorded sent and reached the SMTP server once
    (a second copy only with its Message-ID, around a fault); ``started_at``: when Temporal started it."""
    who, prefix = script.label, f"{script.workflow_id}/"
    sent = [e.data for e in events if e.kind == EventKind.NOTICE_SENT]
    steps = Counter(s["step"] for s in sent)
    report.duplicated += [f"{who}: notice step {step} recorded sent {n} times" for step, n in steps.items() if n > 1]
    numbers = sorted(int(step.split("-", 1)[0]) for step in steps)
    if numbers != list(range(1, len(numbers) + 1)):
        report.lost.append(f"{who}: notice steps are not numbered 1..{len(numbers)}: {sorted(steps)}")
    # started with a stage already due (its start retried past it, say): that stage's notice tells the invoice
    told_by_a_stage = Counter({NoticeKind.INVOICE_ISSUED.value: int(_stage_due_at_start(script, started_at))})
    wanted, got = expected_notices(events) - told_by_a_stage, Counter(s["kind"] for s in sent)
    required = required_notices(script) - caught_up_notices(events) - told_by_a_stage
    report.lost += [
        f"{who}: {kind} notice missing: its script guarantees {n}, {got[kind]} recorded sent"
        for kind, n in required.items()
        if got[kind] < n
    ]
    report.lost += [
        f"{who}: {kind} notice missing ({n} of {wanted[kind]}); its log: {trail(events)}"
        for kind, n in (wanted - got).items()
    ]
    told_after_close = {notice.value for cause, notice in OPEN_INVOICE_NOTICE.items() if _after_close(cause, events)}
    report.duplicated += [
        f"{who}: {n} {kind} notice(s) too many" for kind, n in (got - wanted).items() if kind not in told_after_close
    ]

    expected = {prefix + step for step in steps}
    handovers = [e.data for e in events if e.kind == EventKind.AGENCY_HANDOVER]
    if handovers:
        expected.add(prefix + "agency-package")
        if not handovers[0]["package_sent"]:
            report.lost.append(f"{who}: the agency package was not sent")
    for step in sorted(expected):
        copies = deliveries.get(step, [])
        if not copies:
            report.lost.append(f"{who}: no message for step {step}")
            continue
        report.messages += 1
        for first, again in itertools.pairwise(copies):
            fault = _fault_between(first, again, faults)
            if again.message_id == first.message_id and fault:
                report.redelivered.append(f"{step} again {again.received_at - first.received_at:.1f} s later ({fault})")
            else:
                report.duplicated.append(
                    f"{who}: step {step} received {len(copies)} times (Message-IDs {[c.message_id for c in copies]},"
                    f" at {[_clock(c.received_at) for c in copies]}; faults {[_clock(f.started) for f in faults]})"
                )
                break
    for step in sorted(s for s in deliveries if s.startswith(prefix) and s not in expected):
        report.lost.append(f"{who}: message {step} received, but no notice_sent event records it")


def _stage_due_at_start(script: ScriptedInvoice, started_at: datetime | None) -> bool:
    if script.invoice is None or started_at is None:
        return False
    first = script.invoice.policy.stages[0]
    return policy.stage_due_at(script.invoice, first, timedelta(0)) <= started_at


def _clock(moment: float) -> str:
    return datetime.fromtimestamp(moment).strftime("%H:%M:%S.%f")[:-4]


def _fault_between(first: Delivery, again: Delivery, faults: list[Fault]) -> str | None:
    """A fault under way around the first copy, begun before the second: why a step may arrive twice."""
    before, after = REDELIVERY_WINDOW_S
    for fault in faults:
        if fault.ended >= first.received_at - before and fault.started <= min(again.received_at, first.received_at + after):
            return fault.what
    return None


def check_equipment(
    report: RunReport,
    stack: FaultStack,
    group: list[ScriptedInvoice],
    events: dict[str, list[Event]],
    unreachable: frozenset[str],
) -> None:
    """Each piece the ``group`` holds (one invoice's own, or two invoices of one customer sharing it): cut
    while an invoice holds it, restored when none holds it any more, never while one does, and kept cut by a
    written-off holder; no action twice in a row at the controller; each holder suspended while open records
    its cut (one nothing answers for: its failure, shown in ``FailedEquipment``); every restore is recorded by
    the invoice whose release made it. A block made after a holder's close is the after-close check's: there,
    whatever was cut must have been restored."""
    who = " + ".join(s.label for s in group)
    holders = [(s, events.get(s.invoice_id, [])) for s in group]
    late_block = any(_after_close(EventKind.SERVICE_SUSPENDED, ev) for _, ev in holders)
    suspended = [
        (s, ev) for s, ev in holders if _reached_suspension(ev) and not _after_close(EventKind.SERVICE_SUSPENDED, ev)
    ]
    keeps_cut = any(s.final_state == InvoiceState.WRITTEN_OFF for s, _ in suspended)
    for equipment_id in group[0].equipment_ids:
        reachable = equipment_id not in unreachable
        calls = [c for c in stack.controller.peer.calls_to(equipment_id) if c["action"] in ("suspend", "restore")]
        actions = [c["action"] for c in calls]
        report.cuts += actions.count("suspend")
        report.restores += actions.count("restore")
        if any(a == b for a, b in itertools.pairwise(actions)) or actions[:1] == ["restore"]:
            report.duplicated.append(f"{who}: {equipment_id} got {actions} at the controller")
        for script, ev in holders:
            kinds = Counter(e.kind for e in ev if e.data.get("equipment_id") == equipment_id)
            if (script, ev) in suspended:
                cut, failed = int(reachable), int(not reachable)
                _compare(report, script.label, f"equipment_suspended events of {equipment_id}", cut, kinds[EventKind.EQUIPMENT_SUSPENDED])
                _compare(report, script.label, f"suspend_failed events of {equipment_id}", failed, kinds[EventKind.SUSPEND_FAILED])
                if not late_block and bool(failed) != (equipment_id in script.failed_seen):
                    shown = sorted(script.failed_seen) or "never anything"
                    report.other.append(
                        f"{script.label}: {equipment_id} {'failed' if failed else 'did not fail'}; FailedEquipment showed {shown}"
                    )
            elif not late_block:
                _compare(report, script.label, f"equipment_suspended events of {equipment_id}", 0, kinds[EventKind.EQUIPMENT_SUSPENDED])
            _compare(report, script.label, f"restore_failed events of {equipment_id}", 0, kinds[EventKind.RESTORE_FAILED])
        restored_events = sum(
            1 for _, ev in holders for e in ev if e.kind == EventKind.EQUIPMENT_RESTORED and e.data["equipment_id"] == equipment_id
        )
        # the restore that left it on is recorded by the invoice whose release made it; one overtaken by a new
        # holder's cut (the customer answered the release once the piece was held again) may be told by none
        told = int(bool(actions) and actions[-1] == "restore")
        if restored_events < told:
            report.lost.append(f"{who}: the last restore of {equipment_id} is in no invoice's events")
        elif restored_events > actions.count("restore"):
            report.duplicated.append(f"{who}: {restored_events} equipment_restored events of {equipment_id}, {actions}")
        if late_block and not suspended:
            should = "active"  # whatever the late block cut, the close lifted
            _compare(report, who, f"cuts of {equipment_id} at the controller", min(actions.count("suspend"), 1), actions.count("suspend"))
        else:
            should = "suspended" if suspended and reachable and keeps_cut else "active"
            if suspended and reachable and not actions:
                report.lost.append(f"{who}: {equipment_id} was never cut at the controller")
            if not suspended or not reachable:
                _compare(report, who, f"cuts of {equipment_id} at the controller", 0, actions.count("suspend"))
        left = stack.controller.peer.state(equipment_id)
        if left != should:
            report.other.append(f"{who}: {equipment_id} is left {left}, expected {should}")
        for call in (c for c in calls if c["action"] == "restore"):
            report.other += [
                f"{who}: {equipment_id} restored at {_clock(call['at'])} while {s.label} held it"
                for s, ev in holders
                if _held_at(s, ev, equipment_id, call["at"])
            ]


def _reached_suspension(events: list[Event]) -> bool:
    return any(e.kind == EventKind.STAGE_REACHED and e.data["stage"] == StageAction.SUSPEND.value for e in events)


def _held_at(script: ScriptedInvoice, events: list[Event], equipment_id: str, moment: float) -> bool:
    """Whether the invoice held the piece at ``moment``: its cut recorded before, and not closed before (a
    written-off invoice holds on after its close)."""
    cut = [e.occurred_at for e in events if e.kind == EventKind.EQUIPMENT_SUSPENDED and e.data["equipment_id"] == equipment_id]
    if not cut or cut[0] >= moment:
        return False
    closed = [e.occurred_at for e in events if e.kind == EventKind.INVOICE_CLOSED]
    return script.final_state == InvoiceState.WRITTEN_OFF or not closed or closed[0] >= moment


def _compare(report: RunReport, who: str, what: str, wanted: int, got: int) -> None:
    if got < wanted:
        report.lost.append(f"{who}: {what}: {got}, expected {wanted}")
    elif got > wanted:
        report.duplicated.append(f"{who}: {what}: {got}, expected {wanted}")


# --- reading what happened -----------------------------------------------------------------------


async def _events(pool: asyncpg.Pool) -> dict[str, list[Event]]:
    rows = await pool.fetch(
        "SELECT invoice_id, sequence, kind, data, occurred_at FROM invoice_events ORDER BY invoice_id, sequence"
    )
    events: dict[str, list[Event]] = defaultdict(list)
    for row in rows:
        event = Event(row["sequence"], EventKind(row["kind"]), row["data"], row["occurred_at"].timestamp())
        events[row["invoice_id"]].append(event)
    return events


def _by_step(deliveries: list[Delivery]) -> dict[str, list[Delivery]]:
    steps: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in deliveries:
        steps[delivery.step].append(delivery)
    return steps


async def _read_workflows(
    client: Client, scripts: list[ScriptedInvoice]
) -> tuple[dict[str, InvoiceOutcome | str], dict[str, list[str]], Counter[str], list[WorkflowHistory]]:
    """Each workflow's result (or why there is none), the failures of its workflow tasks, the activities
    that took more than one attempt, by type and the last attempt's failure (what the faults cost), and
    every history."""
    limit = asyncio.Semaphore(PARALLEL_READS)
    outcomes: dict[str, InvoiceOutcome | str] = {}
    failures: dict[str, list[str]] = {}
    retried: Counter[str] = Counter()
    histories: list[WorkflowHistory] = []

    async def read(script: ScriptedInvoice) -> None:
        handle = client.get_workflow_handle(script.workflow_id, result_type=InvoiceOutcome)
        async with limit:
            try:
                outcomes[script.invoice_id] = await asyncio.wait_for(handle.result(), timeout=30)
            except Exception as err:  # noqa: BLE001 - reported as the invoice's problem
                outcomes[script.invoice_id] = f"no result ({type(err).__name__}: {err})"
            failures[script.invoice_id] = []
            scheduled: dict[int, str] = {}
            history = await handle.fetch_history()
            histories.append(history)
            for event in history.events:
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                    failures[script.invoice_id].append(event.workflow_task_failed_event_attributes.failure.message)
                elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                    scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
                elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                    started = event.activity_task_started_event_attributes
                    if started.attempt > 1:
                        cause = " ".join(started.last_failure.message.split())[:70]
                        retried[f"{scheduled.get(started.scheduled_event_id)} ({cause})"] += 1

    await asyncio.gather(*(read(s) for s in scripts))
    return outcomes, failures, retried, histories


def oversized_failures(histories: list[WorkflowHistory], labels: dict[str, str]) -> list[str]:
    """Every activity failure of ``histories`` (an attempt's, as the next attempt's last failure, or the last one)
    that Temporal replaced because of its size, with its invoice, the activity and what is left of the reason."""
    problems = []
    for history in histories:
        scheduled: dict[int, str] = {}
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
                continue
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started = event.activity_task_started_event_attributes
                failure, scheduled_id = started.last_failure, started.scheduled_event_id
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
                failed = event.activity_task_failed_event_attributes
                failure, scheduled_id = failed.failure, failed.scheduled_event_id
            else:
                continue
            messages = failure_messages(failure)
            if any(OVERSIZED in message for message in messages):
                reason = " ".join(" / ".join(messages).split())[:200]
                problems.append(
                    f"{labels.get(history.workflow_id, history.workflow_id)}: a failure of {scheduled.get(scheduled_id)}"
                    f" exceeded Temporal's size limit (event {event.event_id}): {reason}"
                )
    return problems


def failure_messages(failure: Failure) -> list[str]:
    """The message of ``failure`` and of each of its causes."""
    messages = []
    level: Failure | None = failure
    while level is not None and (level.message or level.HasField("cause")):
        messages.append(level.message)
        level = level.cause if level.HasField("cause") else None
    return messages


async def _unreplayable(
    histories: list[WorkflowHistory], labels: dict[str, str], converter: DataConverter
) -> list[str]:
    """The histories that fail to replay with the current code, each with its invoice and the failure;
    ``converter`` is the stack's (it decrypts where the stack encrypts)."""
    replayer = Replayer(workflows=[InvoiceWorkflow], data_converter=converter, workflow_runner=workflow_runner())

    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    replayed = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    run_ids = {h.run_id: h.workflow_id for h in histories}
    return [
        f"{labels[run_ids[run_id]]}: {' '.join(str(failure).split())[:300]}"
        for run_id, failure in replayed.replay_failures.items()
    ]


async def _projections_caught_up(pool: asyncpg.Pool) -> list[str]:
    """Until the projector has caught up with the log (a problem if it has not within a minute)."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while (lag := await projection_lag(pool)).events_behind:
        if time.monotonic() > deadline:
            return [f"the projections are still {lag.events_behind} events behind after {CATCH_UP_TIMEOUT_S:.0f} s"]
        await asyncio.sleep(0.5)
    return []


async def _projected(pool: asyncpg.Pool) -> dict[str, Projected]:
    rows = await pool.fetch(
        """
        SELECT i.invoice_id, i.paid_minor, i.fees_minor, i.credited_minor, i.written_off_minor, i.balance_minor,
               i.last_sequence, (SELECT coalesce(sum(amount_minor), 0) FROM projected_receivables r
                                 WHERE r.invoice_id = i.invoice_id) AS receivable
        FROM projected_invoices i
        """
    )
    return {
        row["invoice_id"]: Projected(
            Money(row["paid_minor"], row["fees_minor"], row["credited_minor"], row["written_off_minor"], row["balance_minor"]),
            row["last_sequence"],
            int(row["receivable"]),
        )
        for row in rows
    }


async def _projections_equal_rebuild(pool: asyncpg.Pool, scripts: list[ScriptedInvoice]) -> list[str]:
    """Each invoice's projected state is its final one, and a rebuild changes nothing (once caught up)."""
    problems = []
    states = dict(await pool.fetch("SELECT invoice_id, state FROM projected_invoices"))
    for script in scripts:
        if states.get(script.invoice_id) != script.final_state.value:
            problems.append(f"{script.label}: projected state {states.get(script.invoice_id)}")
    projected = await _snapshot(pool)
    await rebuild(pool)
    rebuilt = await _snapshot(pool)
    for table in PROJECTION_TABLES:
        if projected[table] != rebuilt[table]:
            differing = [row for row in rebuilt[table] if row not in projected[table]]
            sizes = f"{len(projected[table])} vs {len(rebuilt[table])} rows"
            problems.append(f"{table} differs from its rebuild ({sizes}), e.g. {differing[:2]}")
    return problems


async def _snapshot(pool: asyncpg.Pool) -> dict[str, list[dict]]:
    return {
        table: [dict(r) for r in await pool.fetch(f"SELECT * FROM {table} ORDER BY 1, 2, 3")]
        for table in PROJECTION_TABLES
    }
