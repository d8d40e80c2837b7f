"""The customer's side of notices per customer: gather the stage notices its invoices hand over, send one message
per recipient, answer each invoice with how its notice went out.

An invoice hands its notice over (``take``: the first of a gathering sets when they go out, the gathering delay
from now), waits on its own timer until then, and asks how it went out (``outcome``): the first to ask sends
everything gathered. Both sides wait on timers, not inside an activity, so a time-skipping test server skips
them too. A recipient with one notice gets it as the invoice built it, under the invoice's own key (as if the
invoice had sent it); one with several gets a digest keyed by the customer workflow (its id and first run) and
the digest's number, so a retry or a replay never sends it twice. The requests wait in the ledger
(``NoticeDesk``); an answer is kept under the request's key, so a retry after continue-as-new gets it again.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import contracts
from workflows.digests import DIGESTIBLE, CustomerNoticeOutcome, DigestRequest, NoticeAsked, NoticeTicket, recipients
from workflows.holds import CustomerLedger
from workflows.models import NoticeRequest
from workflows.outbox import NOTICE_RETRY, one_line

DIGEST_SEND_TIMEOUT = timedelta(minutes=2)  # rendering the statement and the SMTP dialogue, well within it


class CustomerNotices:
    """Gathers and sends a customer's stage notices; state in ``desk`` (the customer's ledger carries it)."""

    def __init__(self, ledger: CustomerLedger, gathering: timedelta) -> None:
        self.ledger = ledger
        self.desk = ledger.notices
        self.customer_id = ledger.customer_id
        self.gathering = gathering
        self._sending = False  # a handler is waiting out the delay or sending: the others wait for their answers

    def validate(self, notice: NoticeRequest) -> None:
        """Refuse a request before it reaches history: another customer's, or a notice that goes at once."""
        if notice.customer_id != self.customer_id:
            raise ApplicationError(f"customer {notice.customer_id} asked the notices of {self.customer_id}", type="InvalidRequest")
        if notice.kind not in DIGESTIBLE:
            raise ApplicationError(f"a {notice.kind.value} notice goes out at once, not through the customer", type="InvalidRequest")

    def validate_asked(self, asked: NoticeAsked) -> None:
        """Refuse to wait for a notice nobody handed over (it would never be answered)."""
        if asked.customer_id != self.customer_id:
            raise ApplicationError(f"customer {asked.customer_id} asked the notices of {self.customer_id}", type="InvalidRequest")
        if not self.desk.knows(asked.idempotency_key):
            raise ApplicationError(f"no stage notice {asked.idempotency_key} was handed to this customer", type="InvalidRequest")

    def take(self, notice: NoticeRequest) -> NoticeTicket:
        """Gather ``notice`` with the others that come within the gathering delay; says when they go out."""
        desk, now = self.desk, workflow.now()
        if notice.idempotency_key in desk.answers or any(n.idempotency_key == notice.idempotency_key for n in desk.sending):
            return NoticeTicket(send_at=now)  # a retry: it went out, or is going out now
        if not desk.gathering:
            desk.send_at = now + self.gathering
        if all(n.idempotency_key != notice.idempotency_key for n in desk.gathering):
            desk.gathering.append(notice)
        assert desk.send_at is not None
        return NoticeTicket(send_at=desk.send_at)

    async def outcome(self, key: str) -> CustomerNoticeOutcome:
        """How the notice ``key`` went out; the first to ask sends what was gathered, once the delay is over."""
        desk = self.desk
        while key not in desk.answers:
            if desk.gathering and not self._sending:
                await self._send_gathered()
            else:
                await workflow.wait_condition(lambda: key in desk.answers or bool(desk.gathering and not self._sending))
        return desk.answers[key]

    async def _send_gathered(self) -> None:
        """Wait out the gathering delay (requests still join), then send what was gathered, a message per recipient."""
        desk = self.desk
        assert desk.send_at is not None
        self._sending = True
        try:
            wait = desk.send_at - workflow.now()
            if wait > timedelta(0):
                await workflow.sleep(wait, summary="gather the stage notices of this sending window")
            desk.sending, desk.gathering, desk.send_at = desk.gathering, [], None
            await asyncio.gather(*(self._send_to(group) for group in recipients(desk.sending)))
            desk.sending = []
        finally:
            self._sending = False

    async def _send_to(self, notices: list[NoticeRequest]) -> None:
        if len(notices) == 1:
            await self._alone(notices[0])
        else:
            await self._digest(notices)

    async def _alone(self, notice: NoticeRequest) -> None:
        """A lone notice goes out as its invoice built it, under the invoice's key."""
        try:
            delivery = await workflow.execute_activity_method(
                contracts.Notices.send_notice,
                notice,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=NOTICE_RETRY,
                summary=f"Send {notice.kind.value.replace('_', ' ')} notice of invoice {notice.invoice_id}",
            )
            outcome = CustomerNoticeOutcome(delivery=delivery, invoices=[notice.invoice_id])
        except ActivityError as err:
            outcome = CustomerNoticeOutcome(error=one_line(err.cause or err), invoices=[notice.invoice_id])
        self.desk.answer(notice.idempotency_key, outcome)

    async def _digest(self, notices: list[NoticeRequest]) -> None:
        desk, info = self.desk, workflow.info()
        desk.digests_sent += 1
        number = desk.digests_sent
        digest = DigestRequest(
            idempotency_key=f"{info.workflow_id}/{info.first_execution_run_id}/digest-{number}",
            number=number,
            at=workflow.now(),
            customer_id=self.customer_id,
            notices=notices,
        )
        ids = digest.invoice_ids
        try:
            delivery = await workflow.execute_activity_method(
                contracts.Notices.send_digest,
                digest,
                start_to_close_timeout=DIGEST_SEND_TIMEOUT,
                retry_policy=NOTICE_RETRY,
                summary=f"Send digest {number} ({digest.strongest.value.replace('_', ' ')}) for invoices {', '.join(ids)}",
            )
            outcome = CustomerNoticeOutcome(delivery=delivery, digest=number, digest_key=digest.idempotency_key, invoices=ids)
            self.ledger.remember(workflow.now(), f"Digest {number} ({digest.strongest.value.replace('_', ' ')}) sent for invoices {', '.join(ids)}")
        except ActivityError as err:
            error = one_line(err.cause or err)
            outcome = CustomerNoticeOutcome(error=error, digest=number, digest_key=digest.idempotency_key, invoices=ids)
            self.ledger.remember(workflow.now(), f"Digest {number} for invoices {', '.join(ids)} FAILED ({error})")
        for notice in notices:
            desk.answer(notice.idempotency_key, outcome)
