"""Notices per customer (issue 19, item 3): the stage notices an invoice hands to its customer, and the digest
that carries several of them in one message.

An invoice at a stage notice asks its customer workflow to send it (``notice_at_customer``); the customer
gathers the requests that reach it within a short delay and sends each recipient one message: the single
notice as the invoice built it, or a digest listing every invoice with its stage and amounts, its tone and
subject set by the strongest stage in it, with a statement of account. Receipts and the answers to the
client's own requests never wait: they are not digestible. Pure data: ``workflows.customer_notices`` gathers.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from workflows import ladder
from workflows.models import Identifier, NoticeDelivery, NoticeKind, NoticeRequest, Strict

# the stage notices, mildest first: the rank of the strongest sets a digest's subject and tone
STAGE_NOTICES: tuple[NoticeKind, ...] = tuple(rung.notice for rung in ladder.LADDER)
DIGESTIBLE = frozenset(STAGE_NOTICES)
# how long the customer waits after the first request for others from the same sending window
DIGEST_GATHERING = timedelta(minutes=3)
MAX_DIGEST_ANSWERS_KEPT = 500


def strongest(kinds: list[NoticeKind]) -> NoticeKind:
    """The strongest stage among ``kinds`` (all of them digestible)."""
    return max(kinds, key=STAGE_NOTICES.index)


class DigestRequest(Strict):
    """One message to one recipient of a customer, listing the stage notices of several invoices."""

    idempotency_key: str = Field(description="the customer workflow (id and first run) and the digest's number")
    number: int = Field(ge=1, description="the customer's digests so far, this one included")
    at: datetime = Field(description="when the customer sent it: the statement's date")
    customer_id: Identifier
    notices: list[NoticeRequest] = Field(min_length=2, description="each invoice's notice as it would have sent it alone")

    @property
    def strongest(self) -> NoticeKind:
        return strongest([n.kind for n in self.notices])

    @property
    def lead(self) -> NoticeRequest:
        """The notice of the strongest stage (its recipient, language and zone are every notice's)."""
        return next(n for n in self.notices if n.kind == self.strongest)

    @property
    def invoice_ids(self) -> list[str]:
        return [n.invoice_id for n in self.notices]


class CustomerNoticeOutcome(Strict):
    """The customer's answer to an invoice's notice: how it went out and with which other invoices."""

    delivery: NoticeDelivery | None = Field(default=None, description="None: no channel took it (see error)")
    error: str = ""
    digest: int | None = Field(default=None, description="the digest's number; None: the notice went out alone")
    digest_key: str = ""
    invoices: list[str] = Field(default_factory=list, description="every invoice the message listed")


class NoticeTicket(Strict):
    """The customer took a stage notice: it goes out at ``send_at``, when the gathering delay ends."""

    send_at: datetime


class NoticeAsked(Strict):
    """An invoice asks how its stage notice went out (once its ticket's moment came)."""

    customer_id: Identifier
    idempotency_key: str = Field(min_length=1, max_length=200, description="the notice's key")


class NoticeDesk(BaseModel):
    """The customer's notices in flight and sent: carried by continue-as-new."""

    model_config = ConfigDict(extra="forbid")

    gathering: list[NoticeRequest] = Field(default_factory=list, description="requests waiting for the next send")
    send_at: datetime | None = Field(default=None, description="when the gathered requests go out")
    sending: list[NoticeRequest] = Field(default_factory=list, description="requests being sent now")
    digests_sent: int = Field(default=0, description="digests numbered so far")
    answers: dict[str, CustomerNoticeOutcome] = Field(default_factory=dict, description="idempotency key -> answer")

    def knows(self, key: str) -> bool:
        """Whether a request with this key was taken (and may still be on its way)."""
        return key in self.answers or any(n.idempotency_key == key for n in [*self.gathering, *self.sending])

    def answer(self, key: str, outcome: CustomerNoticeOutcome) -> None:
        self.answers[key] = outcome
        for old in list(self.answers)[: -MAX_DIGEST_ANSWERS_KEPT or None]:
            del self.answers[old]


def recipients(notices: list[NoticeRequest]) -> list[list[NoticeRequest]]:
    """The notices grouped by the message they share: one recipient in one language, in the order they came."""
    groups: dict[tuple[str, str, str], list[NoticeRequest]] = {}
    for notice in notices:
        groups.setdefault((str(notice.to_email).lower(), notice.language, notice.time_zone), []).append(notice)
    return list(groups.values())
