"""Real peers for the notice tests (an SMTP server with AUTH and TLS, a webhook receiver), and the
notices and activities that talk to them.

Both run on 127.0.0.1 in threads of their own. The SMTP server checks a username and password,
speaks STARTTLS or implicit TLS with a certificate from a test CA (``trustme``), and can be told
to refuse recipients or stall; the webhook receiver checks signatures with its own HMAC code
(not the service's) and answers with scripted status codes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import json
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import asyncpg
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from temporalio.testing import ActivityEnvironment

from activities.ledger import apply_schema, create_pool
from activities.notices.channels import ChannelsConfig
from activities.notices.delivery import NoticeActivities
from activities.notices.render import Payee
from activities.notices.smtp import SmtpConfig
from tests.conftest import free_port, whsec
from workflows.models import NoticeKind, NoticeRequest

SMTP_USER = "dunning"
SMTP_PASSWORD = "s3cret-pässword"


@dataclass
class CertAuthority:
    """A CA for the tests, its certificate as a file, and a server context for 127.0.0.1."""

    ca: trustme.CA
    ca_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        return context


def make_ca(folder: Path, name: str) -> CertAuthority:
    ca = trustme.CA()
    path = folder / f"{name}.pem"
    ca.cert_pem.write_to_path(str(path))
    return CertAuthority(ca, path)


@pytest.fixture(scope="session")
def trusted_ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    """The CA the service is configured to trust."""
    return make_ca(tmp_path_factory.mktemp("ca"), "trusted")


@pytest.fixture(scope="session")
def rogue_ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    """A CA the service does not trust."""
    return make_ca(tmp_path_factory.mktemp("ca"), "rogue")


@dataclass
class Received:
    """One message as the server got it."""

    message: EmailMessage
    raw: bytes
    mail_from: str
    rcpt_tos: list[str]
    tls: bool
    login: str | None
    smtputf8: bool  # the client asked for SMTPUTF8 (RFC 6531)


def parsed(raw: bytes, smtputf8: bool) -> EmailMessage:
    """A received message; with SMTPUTF8 its headers are UTF-8 (RFC 6532), not only ASCII."""
    if smtputf8:
        return email.message_from_string(raw.decode(), policy=email.policy.default)
    return email.message_from_bytes(raw, policy=email.policy.default)


class MailServer:
    """An aiosmtpd server on 127.0.0.1 that keeps what it accepts.

    ``rcpt_replies``: replies to the next RCPT commands, in order (then "250 OK").
    ``hold_data()``: keep the next messages but hold the reply to DATA back until ``release_data()``.
    ``smtputf8``: whether the server offers SMTPUTF8 (internationalised addresses).
    """

    def __init__(
        self, security: Literal["none", "starttls", "tls"], ca: CertAuthority | None, smtputf8: bool = False
    ) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.received: list[Received] = []
        self.rcpt_commands = 0
        self.rcpt_replies: list[str] = []
        self._replies_released = threading.Event()
        self._replies_released.set()
        self.failed_logins = 0
        options: dict[str, Any] = {
            "authenticator": self._authenticate, "auth_required": security != "none", "enable_SMTPUTF8": smtputf8
        }
        if security == "starttls":
            assert ca
            options.update(tls_context=ca.server_context(), require_starttls=True)
        elif security == "tls":
            assert ca
            # the whole connection is TLS, which aiosmtpd's STARTTLS-minded check cannot see
            options.update(ssl_context=ca.server_context(), auth_require_tls=False)
        self.controller = Controller(self, hostname=self.host, port=self.port, server_hostname="mail.test", **options)

    @property
    def messages(self) -> list[EmailMessage]:
        return [r.message for r in self.received]

    def _authenticate(self, server, session, envelope, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (
            mechanism in ("LOGIN", "PLAIN")
            and isinstance(auth_data, LoginPassword)
            and auth_data.login == SMTP_USER.encode()
            and auth_data.password == SMTP_PASSWORD.encode()
        )
        if not ok:
            self.failed_logins += 1
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options: list[str]) -> str:
        self.rcpt_commands += 1
        if self.rcpt_replies:
            reply = self.rcpt_replies.pop(0)
            if not reply.startswith("2"):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.received.append(
            Received(
                message=parsed(envelope.original_content, envelope.smtp_utf8),
                raw=envelope.original_content,
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                tls=server.transport.get_extra_info("ssl_object") is not None,
                login=login,
                smtputf8=envelope.smtp_utf8,
            )
        )
        deadline = time.monotonic() + 15
        while not self._replies_released.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return "250 OK"

    def hold_data(self) -> None:
        self._replies_released.clear()

    def release_data(self) -> None:
        self._replies_released.set()


@pytest.fixture
def starttls_server(trusted_ca: CertAuthority) -> Iterator[MailServer]:
    """SMTP on a plain port that requires STARTTLS, then AUTH."""
    with running_server(MailServer("starttls", trusted_ca)) as server:
        yield server


@pytest.fixture
def tls_server(trusted_ca: CertAuthority) -> Iterator[MailServer]:
    """SMTP over implicit TLS (like port 465), with AUTH."""
    with running_server(MailServer("tls", trusted_ca)) as server:
        yield server


@pytest.fixture
def rogue_server(rogue_ca: CertAuthority) -> Iterator[MailServer]:
    """SMTP over implicit TLS with a certificate from a CA the service does not trust."""
    with running_server(MailServer("tls", rogue_ca)) as server:
        yield server


@contextmanager
def running_server(server: MailServer) -> Iterator[MailServer]:
    """``server``, serving until the block ends."""
    server.controller.start()
    try:
        yield server
    finally:
        server.controller.stop()


# --- the webhook receiver ----------------------------------------------------------------------


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that accepts only correctly signed, fresh posts.

    ``statuses``: status codes to answer the next valid posts with, in order (then 200).
    """

    secret: str
    statuses: list[int] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/dunning"

    def check(self, headers: Any, body: bytes) -> str | None:
        """Why the post is refused, or None: the Standard Webhooks reference verifier, not the service's code
        (which allows 5 minutes either side)."""
        try:
            Webhook(whsec(self.secret)).verify(body, dict(headers), json_parse=False)
        except WebhookVerificationError as refused:
            return str(refused)
        return None

    def handle(self, headers: Any, body: bytes) -> int:
        problem = self.check(headers, body)
        if problem:
            self.rejected.append(problem)
            return 401
        status = self.statuses.pop(0) if self.statuses else 200
        self.answered.append(status)
        if status == 200:
            self.accepted.append({"headers": dict(headers), "body": json.loads(body)})
        return status


def _handler_for(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = receiver.handle(self.headers, body) if self.path == "/hooks/dunning" else 404
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A receiver for one test, with the secret ``hook-secret``."""
    receiver = WebhookReceiver(secret="hook-secret")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(receiver))
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


# --- the service side: notices, the activities, a way to run them -------------------------------

SENDER = "billing@dunning.example"
AGENCY_EMAIL = "collections@agency.example"
PAYEE = Payee(
    name="Dunning Demo SRL",
    payment_instructions="Bank transfer, reference: the invoice number.",
    iban="RO49AAAA1B31007593840000",
)


def notice_request(kind: NoticeKind = NoticeKind.INVOICE_ISSUED, **overrides: Any) -> NoticeRequest:
    """A notice for a EUR 1,000.00 invoice to a Bulgarian contact, with any field overridden."""
    invoice_id = overrides.pop("invoice_id", f"INV-{uuid.uuid4().hex[:8]}")
    fields: dict[str, Any] = {
        "idempotency_key": f"invoice-{invoice_id}/0001-{kind.value}",
        "kind": kind,
        "invoice_id": invoice_id,
        "customer_id": "CUST-1",
        "to_name": "Иван Петров",
        "to_email": "ivan@client.example",
        "language": "en",
        "time_zone": "Europe/Sofia",
        "currency": "EUR",
        "invoice_amount_minor": 100_000,
        "fees": [],
        "paid_minor": 0,
        "deducted_minor": 0,
        "balance_minor": 100_000,
        "issue_date": date(2026, 3, 2),
        "due_date": date(2026, 3, 16),
    }
    fields.update(overrides)
    return NoticeRequest.model_validate(fields)


def smtp_config(
    server: MailServer, ca: CertAuthority | None, security: Literal["none", "starttls", "tls"], **overrides: Any
) -> SmtpConfig:
    """Settings that reach ``server`` with the test credentials."""
    fields: dict[str, Any] = {"host": server.host, "port": server.port, "security": security, "timeout": 10}
    if security != "none":
        fields.update(username=SMTP_USER, password=SMTP_PASSWORD, ca_file=ca.ca_file if ca else None)
    fields.update(overrides)
    return SmtpConfig(**fields)


def notice_activities(
    pool: asyncpg.Pool, smtp: SmtpConfig, channels: ChannelsConfig | None = None, **overrides: Any
) -> NoticeActivities:
    """The activities as the worker builds them, sending as ``SENDER`` with the test webhook secret."""
    fields: dict[str, Any] = {
        "sender": SENDER,
        "payee": PAYEE,
        "channels": channels or ChannelsConfig(),
        "agency_email": AGENCY_EMAIL,
        "webhook_secret": {"HOOK_SECRET": "hook-secret"}.get,
    }
    fields.update(overrides)
    return NoticeActivities(pool, smtp, **fields)


async def run_activity(fn: Callable[[Any], Awaitable[Any]], arg: Any, lease: timedelta = timedelta(seconds=1)) -> Any:
    """Run an activity method outside a worker, with ``lease`` as its start-to-close timeout."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, start_to_close_timeout=lease)
    return await env.run(fn, arg)


async def delivery_rows(pool: asyncpg.Pool, key: str) -> dict[str, asyncpg.Record]:
    """The delivery records of one step, by channel."""
    rows = await pool.fetch("SELECT * FROM notice_deliveries WHERE idempotency_key = $1", key)
    return {row["channel"]: row for row in rows}


@pytest.fixture(scope="module")
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a new database with the schema applied, shared by a module's tests (their
    invoice ids and step keys are unique, so they never see each other's rows); dropped after."""
    name = f"notices_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = urlsplit(postgres_url)._replace(path=f"/{name}").geturl()
        await apply_schema(url)
        pool = await create_pool(url)
        yield pool
        await pool.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
