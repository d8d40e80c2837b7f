"""The ``send_notice`` activity: SMTP delivery, recorded in Postgres before and after sending.

Guarantee: a notice step is sent at most once once its send is recorded; if the worker dies
between the SMTP server accepting the message and the record, the retry sends again with the
same ``Message-ID``, which receiving systems use to drop the duplicate.
"""

from __future__ import annotations

import hashlib

import aiosmtplib
import asyncpg
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.notices.render import render_notice
from workflows.models import NoticeRequest


class SmtpConfig(BaseModel):
    """Where and how notices are sent."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    implicit_tls: bool = False
    sender: str
    payee: str
    payment_instructions: str


def message_id_for(idempotency_key: str, sender: str) -> str:
    """A stable Message-ID derived from the workflow and step."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{sender.rpartition('@')[2] or 'dunning.invalid'}>"


class NoticeActivities:
    """Activities that talk to clients."""

    def __init__(self, pool: asyncpg.Pool, smtp: SmtpConfig) -> None:
        self.pool = pool
        self.smtp = smtp

    @activity.defn(name="send_notice")
    async def send_notice(self, notice: NoticeRequest) -> str:
        """Send one notice unless this step was already sent; returns the Message-ID."""
        message_id = message_id_for(notice.idempotency_key, self.smtp.sender)
        status = await self.pool.fetchval(
            "INSERT INTO notice_deliveries (idempotency_key, invoice_id, kind, recipient, message_id, status)"
            " VALUES ($1, $2, $3, $4, $5, 'sending')"
            " ON CONFLICT (idempotency_key) DO UPDATE SET attempts = notice_deliveries.attempts + 1"
            " RETURNING status",
            notice.idempotency_key,
            notice.invoice_id,
            notice.kind.value,
            str(notice.to_email),
            message_id,
        )
        if status == "sent":
            activity.logger.info("notice %s already sent, not sending again", notice.idempotency_key)
            return message_id
        message = render_notice(
            notice,
            sender=self.smtp.sender,
            message_id=message_id,
            payee=self.smtp.payee,
            payment_instructions=self.smtp.payment_instructions,
        )
        try:
            await aiosmtplib.send(
                message,
                hostname=self.smtp.host,
                port=self.smtp.port,
                username=self.smtp.username,
                password=self.smtp.password,
                start_tls=self.smtp.starttls,
                use_tls=self.smtp.implicit_tls,
                timeout=30,
            )
        except aiosmtplib.SMTPResponseException as err:
            if 500 <= err.code < 600:
                await self._mark(notice.idempotency_key, "failed", f"{err.code} {err.message}")
                raise ApplicationError(
                    f"SMTP refused the notice permanently: {err.code} {err.message}",
                    type="PermanentDeliveryFailure",
                    non_retryable=True,
                ) from err
            raise
        await self._mark(notice.idempotency_key, "sent")
        return message_id

    async def _mark(self, key: str, status: str, error: str | None = None) -> None:
        await self.pool.execute(
            "UPDATE notice_deliveries SET status = $2, error = $3,"
            " sent_at = CASE WHEN $2 = 'sent' THEN now() END WHERE idempotency_key = $1",
            key,
            status,
            error,
        )
