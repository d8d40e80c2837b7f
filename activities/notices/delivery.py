"""The notice activities: render a notice once, deliver it on each of the customer's channels.

Guarantee, per notice step and channel (``notice_deliveries`` keyed by idempotency key and
channel, recorded ``sending`` before the send and ``sent`` after it):

- a channel recorded ``sent`` is never sent again, so a retry after a lost reply (the activity
  finished but Temporal never heard) sends nothing twice;
- if the worker dies after the server accepted a message and before ``sent`` is recorded, the
  retry sends it again with the same ``Message-ID`` (e-mail) or ``Idempotency-Key`` and
  ``message_id`` (webhook): in that window delivery is at-least-once, with a stable id the
  receiver can drop the duplicate by;
- while one attempt is sending, a lease (the activity's start-to-close timeout) keeps any other
  attempt of the same step and channel from sending at the same time; such an attempt is retried
  as the lease ends (not after the retry policy's backoff, which grows with every attempt);
- a permanent refusal is recorded ``failed`` and never retried; a transient one leaves the
  channel ``sending`` (with the error) for the next attempt.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Literal, NamedTuple, TypeVar

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.ledger import read_events
from activities.notices.agency_package import agency_package
from activities.notices.channels import Channel, ChannelsConfig, CustomerChannels, SecretResolver
from activities.notices.digest import digest_payload, open_invoices, render_digest
from activities.notices.render import Payee, RenderedNotice, render_notice
from activities.notices.smtp import (
    SmtpConfig,
    SmtpDeliveryError,
    checked_address,
    compose_email,
    message_id_for,
    send_email,
)
from activities.notices.webhook import WebhookDeliveryError, post_webhook, webhook_payload
from workflows import contracts
from workflows.digests import DigestRequest
from workflows.models import AgencyHandover, NoticeDelivery, NoticeRequest

T = TypeVar("T")
AGENCY_CHANNEL = "agency"
DEFAULT_LEASE = timedelta(minutes=2)
LEASE_MARGIN = timedelta(seconds=1)  # a retry that waits out another attempt's lease comes this much after it
# a channel of a step: "ours" to send (claimed), "sent", "failed" for good, "retry" after a transient
# failure, or "busy" while another attempt holds its lease
ChannelState = Literal["ours", "sent", "failed", "retry", "busy"]


class Channeled(NamedTuple):
    """Where one channel of a step stands (``lease_left``: of the attempt that holds it, when ``busy``)."""

    state: ChannelState
    error: str = ""
    lease_left: timedelta = timedelta(0)


def permanent_failure(message: str) -> ApplicationError:
    """The error the workflow's retry policy does not retry: it records ``notice_failed`` and goes on."""
    return ApplicationError(message, type="PermanentDeliveryFailure", non_retryable=True)


def transient_failure(message: str, retry_after: timedelta | None = None) -> ApplicationError:
    """An error Temporal retries with the activity's retry policy, or after ``retry_after`` if given."""
    return ApplicationError(message, type="TransientDeliveryFailure", next_retry_delay=retry_after)


@contextmanager
def _delivery_record(key: str, channel: str) -> Iterator[None]:
    """A database error reading or writing the delivery record of ``key`` on ``channel`` (PostgreSQL down, a
    connection lost) as a transient failure that names the step: as retryable as the error itself, and short
    (the error is its cause; ``client.failures`` cuts asyncpg's long stack trace)."""
    try:
        yield
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        raise transient_failure(f"recording the delivery failed: {type(err).__name__}: {err} ({key} on {channel})") from err


class Outgoing(NamedTuple):
    """One message to deliver: its key, whom it goes to, and how to build it (rendered once, if a channel needs it)."""

    key: str
    customer_id: str
    invoice_id: str  # the invoice, or the digest's invoices joined by commas
    kind: str
    to_name: str
    to_email: str
    render: Callable[[], Awaitable[RenderedNotice]]
    payload: Callable[[RenderedNotice, str], dict[str, Any]]  # the webhook body, given the rendered message and its id


class NoticeActivities(contracts.Notices):
    """Activities that deliver notices to clients and the hand-over package to the agency."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        smtp: SmtpConfig,
        sender: str,
        payee: Payee,
        channels: ChannelsConfig,
        agency_email: str,
        webhook_secret: SecretResolver = os.environ.get,
        webhook_timeout: float = 10.0,
        renderer: Executor | None = None,
    ) -> None:
        """``renderer``: where notices render (``rendering_pool``); None: the event loop's default threads."""
        missing = channels.missing_secrets(webhook_secret)
        if missing:
            raise ValueError(f"webhook secrets not set: {', '.join(missing)} (named by the channels file)")
        self.pool = pool
        self.smtp = smtp
        self.sender = checked_address(sender)
        self.payee = payee
        self.channels = channels
        self.agency_email = checked_address(agency_email)
        self.webhook_secret = webhook_secret
        self.webhook_timeout = webhook_timeout
        self.renderer = renderer

    @activity.defn(name="send_notice")
    async def send_notice(self, notice: NoticeRequest) -> NoticeDelivery:
        """Deliver the notice on each of the customer's channels not delivered yet.

        Returns the channels that delivered it and those that refused it for good. Raises a
        retryable error while any channel failed transiently, and ``PermanentDeliveryFailure``
        when no channel delivered and every failure was permanent.
        """
        outgoing = Outgoing(
            key=notice.idempotency_key,
            customer_id=notice.customer_id,
            invoice_id=notice.invoice_id,
            kind=notice.kind.value,
            to_name=notice.to_name,
            to_email=str(notice.to_email),
            render=lambda: self._on_renderer(render_notice, notice, self.payee),
            payload=lambda rendered, message_id: webhook_payload(notice, rendered, message_id),
        )
        return await self._deliver(outgoing)

    @activity.defn(name="send_digest")
    async def send_digest(self, digest: DigestRequest) -> NoticeDelivery:
        """Deliver one message listing several invoices' stage notices, with the statement of account (every open
        invoice of the customer: those of the digest as their workflows tell, the others from the read models),
        once per digest and channel, as ``send_notice`` does for a notice."""
        lead = digest.lead

        async def render() -> RenderedNotice:
            others = await open_invoices(self.pool, digest.customer_id, exclude=digest.invoice_ids)
            return await self._on_renderer(render_digest, digest, others, self.payee)

        outgoing = Outgoing(
            key=digest.idempotency_key,
            customer_id=digest.customer_id,
            invoice_id=",".join(digest.invoice_ids),
            kind="digest",
            to_name=lead.to_name,
            to_email=str(lead.to_email),
            render=render,
            payload=lambda rendered, message_id: digest_payload(digest, rendered, message_id),
        )
        return await self._deliver(outgoing)

    async def _deliver(self, outgoing: Outgoing) -> NoticeDelivery:
        """Deliver on each of the customer's channels not delivered yet (see ``send_notice``)."""
        key = outgoing.key
        message_id = message_id_for(key, self.sender)
        customer = self.channels.for_customer(outgoing.customer_id)
        rendering: asyncio.Future[RenderedNotice] | None = None

        async def render() -> RenderedNotice:  # once, and only if a channel needs it
            nonlocal rendering
            if rendering is None:
                rendering = asyncio.ensure_future(outgoing.render())
            return await rendering

        outcomes = {
            channel: await self._deliver_once(outgoing, customer, channel, message_id, render)
            for channel in customer.channels
        }
        delivered = [channel for channel, done in outcomes.items() if done.state == "sent"]
        failed = {channel: done.error for channel, done in outcomes.items() if done.state == "failed"}
        transient = {channel: done for channel, done in outcomes.items() if done.state in ("retry", "busy")}
        if transient:
            # only leased by other attempts: retry as the last lease ends, however many attempts came before
            leased = all(done.state == "busy" for done in transient.values())
            retry_after = max(done.lease_left for done in transient.values()) + LEASE_MARGIN if leased else None
            errors = {channel: done.error for channel, done in transient.items()}
            raise transient_failure(f"notice {key} not yet delivered: {_describe(errors)}", retry_after)
        if not delivered:
            raise permanent_failure(f"notice {key} refused on every channel: {_describe(failed)}")
        return NoticeDelivery(
            message_id=message_id,
            delivered=[channel.value for channel in delivered],
            failed={channel.value: error for channel, error in failed.items()},
        )

    async def _deliver_once(
        self,
        outgoing: Outgoing,
        customer: CustomerChannels,
        channel: Channel,
        message_id: str,
        render: Callable[[], Awaitable[RenderedNotice]],
    ) -> Channeled:
        """Send on one channel unless it is done or being sent."""
        key = outgoing.key
        recipient = outgoing.to_email if channel == Channel.EMAIL else str(customer.webhook_url)
        claim = await self._claim(key, channel, outgoing.invoice_id, outgoing.kind, recipient, message_id)
        if claim.state != "ours":
            return claim
        try:
            rendered = await render()
        except ValueError as err:  # facts missing for this kind of notice: no retry can supply them
            await self._record_failure(key, channel, f"cannot render: {err}", permanent=True)
            return Channeled("failed", f"cannot render: {err}")
        try:
            if channel == Channel.EMAIL:
                await self._email(rendered, outgoing.to_name, outgoing.to_email, message_id, key)
            else:
                await self._webhook(customer, outgoing.payload(rendered, message_id), key)
        except (SmtpDeliveryError, WebhookDeliveryError) as err:
            activity.logger.warning("notice %s on %s failed: %s", key, channel, err)
            await self._record_failure(key, channel, str(err), permanent=err.permanent)
            return Channeled("failed" if err.permanent else "retry", str(err))
        await self._record_sent(key, channel)
        return Channeled("sent")

    @activity.defn(name="send_agency_package")
    async def send_agency_package(self, handover: AgencyHandover) -> str:
        """E-mail the hand-over package (invoice, notices, payments, fees, disputes) to the agency
        once per hand-over; returns its Message-ID."""
        key, invoice_id = handover.idempotency_key, handover.invoice.invoice_id
        message_id = message_id_for(key, self.sender)
        claim = await self._claim(key, AGENCY_CHANNEL, invoice_id, "agency_package", self.agency_email, message_id)
        if claim.state == "sent":
            return message_id
        if claim.state == "failed":
            raise permanent_failure(f"agency package {key} was refused: {claim.error}")
        if claim.state == "busy":
            raise transient_failure(f"agency package {key}: {claim.error}", claim.lease_left + LEASE_MARGIN)
        try:
            events = await read_events(self.pool, invoice_id)
            package = await self._on_renderer(agency_package, handover, events, self.payee)
        except ValueError as err:
            await self._record_failure(key, AGENCY_CHANNEL, f"cannot build: {err}", permanent=True)
            raise permanent_failure(f"agency package {key} cannot be built: {err}") from err
        try:
            await self._email(package, None, self.agency_email, message_id, key)
        except SmtpDeliveryError as err:
            await self._record_failure(key, AGENCY_CHANNEL, str(err), permanent=err.permanent)
            failure = permanent_failure if err.permanent else transient_failure
            raise failure(f"agency package {key} not delivered: {err}") from err
        await self._record_sent(key, AGENCY_CHANNEL)
        return message_id

    def _on_renderer(self, build: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """``build(*args)`` (CPU-bound: a notice, a PDF) on the renderer, off the event loop."""
        return asyncio.get_running_loop().run_in_executor(self.renderer, build, *args)

    # --- channels ----------------------------------------------------------------------------

    async def _email(
        self, rendered: RenderedNotice, to_name: str | None, to_email: str, message_id: str, key: str
    ) -> None:
        try:
            message = compose_email(rendered, self.sender, to_name, to_email, message_id, key)
        except ValueError as err:
            raise SmtpDeliveryError(f"refused to compose the e-mail: {err}", permanent=True) from err
        await send_email(self.smtp, message, self.sender, to_email)

    async def _webhook(self, customer: CustomerChannels, payload: dict, key: str) -> None:
        assert customer.webhook_url and customer.webhook_secret_env  # guaranteed by CustomerChannels
        secret = self.webhook_secret(customer.webhook_secret_env)
        if not secret:
            raise WebhookDeliveryError(f"webhook secret {customer.webhook_secret_env} is not set", permanent=True)
        await post_webhook(str(customer.webhook_url), secret, payload, key, timeout=self.webhook_timeout)

    # --- the delivery record -----------------------------------------------------------------

    async def _claim(
        self, key: str, channel: str, invoice_id: str, kind: str, recipient: str, message_id: str
    ) -> Channeled:
        """Record an attempt as ``sending`` under a lease, unless the channel is done or leased."""
        with _delivery_record(key, channel):
            return await self._claim_record(key, channel, invoice_id, kind, recipient, message_id)

    async def _claim_record(
        self, key: str, channel: str, invoice_id: str, kind: str, recipient: str, message_id: str
    ) -> Channeled:
        lease = activity.info().start_to_close_timeout or DEFAULT_LEASE
        claimed = await self.pool.fetchval(
            "INSERT INTO notice_deliveries AS d"
            " (idempotency_key, channel, invoice_id, kind, recipient, message_id, status, lease_until)"
            " VALUES ($1, $2, $3, $4, $5, $6, 'sending', now() + make_interval(secs => $7))"
            " ON CONFLICT (idempotency_key, channel) DO UPDATE"
            " SET attempts = d.attempts + 1, lease_until = EXCLUDED.lease_until"
            " WHERE d.status = 'sending' AND (d.lease_until IS NULL OR d.lease_until < now())"
            " RETURNING true",
            key,
            channel,
            invoice_id,
            kind,
            recipient,
            message_id,
            lease.total_seconds(),
        )
        if claimed:
            return Channeled("ours")
        row = await self.pool.fetchrow(
            "SELECT status, error, lease_until, greatest(lease_until - now(), interval '0') AS lease_left"
            " FROM notice_deliveries WHERE idempotency_key = $1 AND channel = $2",
            key,
            channel,
        )
        assert row is not None  # the claim above found it there
        if row["status"] == "sending":
            until = f"{row['lease_until']:%H:%M:%S}"
            return Channeled("busy", f"another attempt is sending it (lease until {until})", row["lease_left"])
        return Channeled(row["status"], row["error"] or "")

    async def _record_sent(self, key: str, channel: str) -> None:
        with _delivery_record(key, channel):
            await self.pool.execute(
                "UPDATE notice_deliveries SET status = 'sent', sent_at = now(), error = NULL, lease_until = NULL"
                " WHERE idempotency_key = $1 AND channel = $2",
                key,
                channel,
            )

    async def _record_failure(self, key: str, channel: str, error: str, *, permanent: bool) -> None:
        with _delivery_record(key, channel):
            await self.pool.execute(
                "UPDATE notice_deliveries SET status = CASE WHEN $3 THEN 'failed' ELSE status END,"
                " error = $4, lease_until = NULL WHERE idempotency_key = $1 AND channel = $2",
                key,
                channel,
                permanent,
                error,
            )


def _describe(errors: dict[Channel, str]) -> str:
    return "; ".join(f"{channel}: {error}" for channel, error in errors.items())
