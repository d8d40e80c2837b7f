"""The invoice workflow's outbox: the events it records and the notices it sends, in order.

            batch, now = self._next_batch(), workflow.now()
            step = policy.next_step(ledger, now, self._window_applies)
            taken = snapshot.take(ledger, step, now, through=batch[-1].sequence)
            await workflow.execute_activity_method(
                contracts.Ledger.append_events,
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows import contracts, ladder, policy, snapshot
from workflows.digests import DIGESTIBLE, CustomerNoticeOutcome, NoticeAsked, NoticeTicket
from workflows.events import CutAnnounced, EventPayload, NoticeFailed, NoticeSent
from workflows.models import DomainEvent, NoticeDelivery, NoticeKind, NoticeRequest
from workflows.patches import PATCH_SPLIT_EVENT_BATCHES
from workflows.state import InvoiceLedger, QueuedNotice

# the customer answers how a stage notice went out once its message did (rendering and SMTP, retried)
CUSTOMER_NOTICE_TIMEOUT = timedelta(hours=2)
NOTICE_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=10), non_retryable_error_types=["PermanentDeliveryFailure"])
IO_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
# one append's events: with its snapshot (at most ~120 KB: 200 story lines) well below the 256 KB
# payload limit of the embedded and compose Temporal (docs/guarantees.md), and far below the default 2 MB
BATCH_EVENTS = 200
BATCH_BYTES = 64 * 1024


class Outbox:
    """Queues and sends what one invoice tells the world; its state lives in the ledger, so it carries over."""

    def __init__(self, ledger: InvoiceLedger, window_applies: bool, via_customer: bool) -> None:
        self.ledger = ledger
        self._window_applies = window_applies
        # the customer-notices patch, taken once a run: runs started before it take it at continue-as-new
        self._via_customer = via_customer
        self._gathered: list[QueuedNotice] | None = None  # a catch-up's rung notices, held back (``gather``)

    def record(self, payload: EventPayload) -> None:
        """Record a domain event of the payload's kind; ``flush`` appends it to the event log, with the
        snapshot of what it changed."""
        ledger = self.ledger
        event = DomainEvent(
            invoice_id=ledger.invoice.invoice_id,
            sequence=ledger.next_sequence,
            kind=payload.event_kind,
            occurred_at=workflow.now(),
            data=payload.data(),
        )
        ledger.pending_events.append(event)
        ledger.next_sequence += 1
        snapshot.observe(ledger.batch_facts, ledger.invoice, event)

    def queue_notice(self, kind: NoticeKind, detail: str = "", **facts: Any) -> None:
        """Queue a notice to the client; ``flush`` sends it, keyed by its place in the queue."""
        notice = QueuedNotice(kind=kind, step="", detail=detail, **facts)
        if self._gathered is not None and kind in ladder.NOTICE_HEIGHT:
            self._gathered.append(notice)
            return
        self._enqueue(notice)

    def _enqueue(self, notice: QueuedNotice) -> None:
        self.ledger.notices_queued += 1
        step = f"{self.ledger.notices_queued:04d}-{notice.kind.value}"
        self.ledger.outbox.append(notice.model_copy(update={"step": step}))

    def gather(self) -> None:
        """Hold the rungs' notices back until ``tell_highest``; the others (a receipt, ...) are queued as ever."""
        self._gathered = []

    def tell_highest(self) -> int:
        """Queue the highest rung's notice held back since ``gather`` (the latest of equals); none if the invoice
        closed meanwhile. Returns how many were held back."""
        gathered, self._gathered = self._gathered or [], None
        if gathered and not self.ledger.escalation.closed:
            _, highest = max(enumerate(gathered), key=lambda n: (ladder.NOTICE_HEIGHT[n[1].kind], n[0]))
            self._enqueue(highest)
        return len(gathered)

    async def flush(self) -> None:
        """Send every queued notice, then write every pending event, until nothing is left.

        Each batch of events goes with the invoice's snapshot after it (``workflows.snapshot``): what the
        workflow decided, for the read models to copy.
        """
        ledger = self.ledger
        while ledger.outbox or ledger.pending_events:
            if ledger.outbox:
                await self._send_notice(ledger.outbox[0])
                ledger.outbox.pop(0)
                continue
            await self._append_batch()

    async def _append_batch(self) -> None:
        """Append the oldest pending events, with the snapshot after them."""
        ledger = self.ledger
        batch, now = self._next_batch(), workflow.now()
        step = policy.next_step(ledger, now, self._window_applies)
        taken = snapshot.take(ledger, step, now, through=batch[-1].sequence)
        await workflow.execute_activity_method(
            contracts.Ledger.append_events,
            args=[batch, taken],
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=IO_RETRY,
            summary=f"Record {len(batch)} event(s)",
        )
        del ledger.pending_events[: len(batch)]

    def _next_batch(self) -> list[DomainEvent]:
        """The oldest pending events up to ``BATCH_EVENTS`` and ``BATCH_BYTES`` (at least one, however large).

        Invoices whose history appended a larger batch whole keep doing so on replay (the patch).
        """
        pending, size, end = self.ledger.pending_events, 0, 0
        while end < min(len(pending), BATCH_EVENTS):
            size += len(pending[end].model_dump_json())
            if end and size > BATCH_BYTES:
                break
            end += 1
        if end < len(pending) and workflow.patched(PATCH_SPLIT_EVENT_BATCHES):
            return pending[:end]
        return list(pending)

    def notice_failed(self, kind: str, step: str, channel: str, error: object) -> None:
        """Record a message that could not be delivered, for ops (event, failed-notice list, story)."""
        if isinstance(error, ActivityError):
            error = error.cause or error
        if kind not in self.ledger.failed_notices:
            self.ledger.failed_notices.append(kind)
        self.record(NoticeFailed(kind=kind, step=step, channel=channel, error=one_line(error)))
        self.ledger.remember(workflow.now(), f"Notice FAILED: {kind.replace('_', ' ')} ({channel}): {one_line(error)}")

    async def _send_notice(self, queued: QueuedNotice) -> None:
        ledger, now = self.ledger, workflow.now()
        announces_cut = queued.kind == NoticeKind.ULTIMATUM and ledger.money_rules
        cut_at = policy.cut_to_announce(ledger, now, self._window_applies) if announces_cut else None
        request = self._notice_request(queued, cut_at)
        label = queued.kind.value.replace("_", " ")
        digest, via_customer = "", self._via_customer and queued.kind in DIGESTIBLE and ledger.invoice.policy.sending_window is not None
        try:
            if via_customer:
                result, digest = await self._send_via_customer(request)
            else:
                result = await workflow.execute_activity_method(
                    contracts.Notices.send_notice,
                    request,
                    start_to_close_timeout=timedelta(minutes=1),  # SMTP and webhook time out well within it
                    retry_policy=NOTICE_RETRY,
                    summary=f"Send {label} notice",
                )
        except (ActivityError, NoticeNotSent) as err:
            self.notice_failed(queued.kind.value, queued.step, "all", err)
            return
        if result.delivered:
            self.record(
                NoticeSent(kind=queued.kind, step=queued.step, to=str(request.to_email), channels=result.delivered, digest=digest)
            )
            if cut_at is not None:  # through the customer, it went out after the gathering: notice counts from then
                self._cut_announced(cut_at, policy.notice_counts_from(workflow.now() if via_customer else now))
        for channel, error in sorted(result.failed.items()):
            self.notice_failed(queued.kind.value, queued.step, channel, error)

    async def _send_via_customer(self, request: NoticeRequest) -> tuple[NoticeDelivery, str]:
        """Hand a stage notice to the customer workflow, which sends it with the others of the sending window;
        returns its delivery and the digest that carried it ("" when it went out alone).

        The invoice waits for the gathering on a timer of its own, not inside an activity."""
        label = request.kind.value.replace("_", " ")
        ticket: NoticeTicket = await workflow.execute_activity_method(
            contracts.Customers.notice_to_customer,
            request,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=IO_RETRY,
            summary=f"Hand the {label} notice to customer {request.customer_id}",
        )
        while self.ledger.pending_events:  # the stage is a fact now, whenever its notice goes out
            await self._append_batch()
        if ticket.send_at > workflow.now():
            await workflow.sleep(ticket.send_at - workflow.now(), summary="the customer gathers this window's notices")
        answer: CustomerNoticeOutcome = await workflow.execute_activity_method(
            contracts.Customers.notice_sent_by_customer,
            NoticeAsked(customer_id=request.customer_id, idempotency_key=request.idempotency_key),
            start_to_close_timeout=CUSTOMER_NOTICE_TIMEOUT,
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=IO_RETRY,
            summary=f"Learn how customer {request.customer_id} sent the {label} notice",
        )
        if answer.delivery is None:
            raise NoticeNotSent(answer.error)
        if answer.digest is not None:
            others = ", ".join(i for i in answer.invoices if i != request.invoice_id)
            self.ledger.remember(
                workflow.now(),
                f"{request.kind.value.replace('_', ' ').capitalize()} notice sent in digest {answer.digest}"
                f" of customer {request.customer_id}, with invoice {others}",
            )
        return answer.delivery, answer.digest_key

    def _cut_announced(self, cut_at: datetime, notice_from: datetime) -> None:
        """An ultimatum naming ``cut_at`` was delivered: the interlock lets the cut happen from then."""
        self.ledger.cut_announced_for, self.ledger.cut_notice_from = cut_at, notice_from
        self.record(CutAnnounced(cut_at=cut_at, notice_from=notice_from))
        self.ledger.remember(workflow.now(), f"Client told the service is cut from {cut_at:%Y-%m-%d %H:%M %Z}")

    def _notice_request(self, queued: QueuedNotice, cut_at: datetime | None = None) -> NoticeRequest:
        ledger, invoice, now = self.ledger, self.ledger.invoice, workflow.now()
        terms, interest = invoice.terms, policy.interest_applies(ledger)
        names_cut = queued.kind in ladder.NOTICES_NAMING_CUT_DATE
        suspension_at = cut_at or (policy.suspension_at(ledger, self._window_applies) if names_cut else None)
        return NoticeRequest(
            idempotency_key=f"{workflow.info().workflow_id}/{queued.step}",
            kind=queued.kind,
            invoice_id=invoice.invoice_id,
            customer_id=invoice.customer_id,
            to_name=invoice.contact.name,
            to_email=invoice.contact.email,
            language=invoice.language,
            time_zone=invoice.time_zone,
            currency=invoice.currency,
            invoice_amount_minor=invoice.amount_minor,
            fees=list(ledger.fees),
            paid_minor=ledger.paid_minor,
            deducted_minor=ledger.deducted_minor,
            balance_minor=ledger.balance_minor,
            issue_date=invoice.issue_date,
            due_date=invoice.due_date,
            suspension_at=suspension_at,
            discount_minor=policy.discount_available(ledger, now) or ledger.discount_minor,
            discount_until=policy.discount_deadline(invoice),
            detail=queued.detail,
            country=invoice.country,
            days_overdue=policy.days_overdue(invoice, now),
            # statutory interest replaces the contract's late-fee terms
            late_fee_percent_per_month=Decimal(0) if interest else terms.late_fee_percent_per_month,
            fixed_late_fee_minor=0 if interest else terms.fixed_late_fee_minor,
            payment_minor=queued.amount_minor if queued.kind == NoticeKind.RECEIPT else 0,
            credit_minor=queued.amount_minor if queued.kind == NoticeKind.DISPUTE_RESOLVED else 0,
            instalments=list(queued.instalments),
            missed_instalment=queued.number,
            remote_disconnect=terms.remote_disconnect_authorized and bool(terms.equipment_ids),
            service=invoice.service,
            residue_minor=queued.residue_minor,
            recovery=queued.recovery,
            unrecovered_minor=max(0, ledger.written_off_minor - ledger.recovered_minor) if queued.recovery else 0,
            interest_minor=ledger.interest_minor,
            interest_through=ledger.interest.last_day_posted,
            interest_rate_percent=ledger.interest.last_rate_percent,
            principal_paid_minor=queued.principal_paid_minor,
            fees_paid_minor=queued.fees_paid_minor,
            interest_paid_minor=queued.interest_paid_minor,
            received_on=policy.local_date(invoice, queued.received_at) if queued.received_at else None,
            fees_reversed=list(queued.fees_reversed),
        )


class NoticeNotSent(Exception):
    """The customer could not send a stage notice on any channel (its error says why)."""


def one_line(err: object) -> str:
    """An error as one line of at most 500 characters, as events and the story keep it."""
    return " ".join(str(err).split())[:500]
