"""Every notice kind in every language, sent by the real ``send_notice`` activity to a real SMTP
server (AUTH over STARTTLS, loopback) and read back with the stdlib e-mail parser.

Expected amounts and dates are computed here with Babel from the requests' values, in the
client's locale and time zone, never with the renderer's own helpers. One server and one
database serve the whole module: the 75 notices are sent once, then each is checked on its own.
"""

from __future__ import annotations

import asyncio
import html
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from babel.dates import format_date, format_time
from babel.numbers import format_currency
from pypdf import PdfReader

from activities.notices.delivery import NoticeActivities
from activities.notices.smtp import message_id_for
from tests.catalogue_fixtures import CLIENTS, FIXED_LATE_FEE_MINOR, Client, catalogue_request
from tests.notice_servers import (  # noqa: F401 - fixtures
    PAYEE,
    SENDER,
    SMTP_USER,
    CertAuthority,
    MailServer,
    Received,
    notice_activities,
    pool,
    run_activity,
    smtp_config,
    trusted_ca,
)
from workflows.models import SUPPORTED_LANGUAGES, NoticeKind, NoticeRequest

DOUBLE_FULL_STOP = re.compile(r"(?<!\.)\.\.(?!\.)")  # "лв.." or "г..", not an ellipsis
CASES = [(kind, client) for kind in NoticeKind for client in CLIENTS]
LEASE = timedelta(minutes=2)  # send_notice's start-to-close timeout in the invoice workflow


@dataclass(frozen=True)
class Delivery:
    """One notice: what was asked, what the activity answered, what the server received."""

    client: Client
    notice: NoticeRequest
    result: dict
    received: Received


@dataclass(frozen=True)
class Catalogue:
    """The module's one server, the activities that sent to it, and every delivery by (kind, language)."""

    server: MailServer
    activities: NoticeActivities
    deliveries: dict[tuple[NoticeKind, str], Delivery]


@pytest.fixture(scope="module")
def catalogue_server(trusted_ca: CertAuthority) -> Iterator[MailServer]:  # noqa: F811 - the fixture
    """One SMTP server for the module: STARTTLS required, then AUTH."""
    server = MailServer("starttls", trusted_ca)
    server.controller.start()
    try:
        yield server
    finally:
        server.controller.stop()


@pytest.fixture(scope="module")
async def catalogue(
    pool: asyncpg.Pool,  # noqa: F811 - the fixture
    catalogue_server: MailServer,
    trusted_ca: CertAuthority,  # noqa: F811 - the fixture
) -> Catalogue:
    """All 75 notices, each sent once through the activity."""
    activities = notice_activities(pool, smtp_config(catalogue_server, trusted_ca, "starttls"))
    notices = {(kind, client.language): (client, catalogue_request(client, kind)) for kind, client in CASES}
    results = {}
    async with asyncio.timeout(60):
        for case, (_, notice) in notices.items():
            results[case] = await run_activity(activities.send_notice, notice, LEASE)
    by_step = {received.message["X-Dunning-Step"]: received for received in catalogue_server.received}
    deliveries = {
        case: Delivery(client, notice, results[case], by_step[notice.idempotency_key])
        for case, (client, notice) in notices.items()
        if notice.idempotency_key in by_step
    }
    return Catalogue(catalogue_server, activities, deliveries)


# --- what the client reads, formatted here with Babel ----------------------------------------------


def money(client: Client, minor: int) -> str:
    return format_currency(Decimal(minor) / 100, client.currency, locale=client.locale)


def long_date(client: Client, day: date | datetime) -> str:
    """The long date on the client's calendar (a moment is first moved into the client's zone)."""
    if isinstance(day, datetime):
        day = day.astimezone(ZoneInfo(client.zone)).date()
    return format_date(day, "long", locale=client.locale)


def expected_facts(client: Client, notice: NoticeRequest) -> Counter[str]:
    """Each string the plain text must state, with how many times at least."""
    facts: list[str] = [
        notice.invoice_id,
        client.name,
        PAYEE.name,
        money(client, notice.invoice_amount_minor),
        money(client, notice.balance_minor),
        long_date(client, notice.issue_date),
        long_date(client, notice.due_date),
    ]
    for fee in notice.fees:
        facts += [money(client, fee.amount_minor), long_date(client, fee.charged_at)]
    if notice.paid_minor:
        facts.append(money(client, notice.paid_minor))
    if notice.deducted_minor:
        facts.append(money(client, notice.deducted_minor))
    if notice.balance_minor > 0:
        assert PAYEE.iban
        facts += [PAYEE.payment_instructions, PAYEE.iban, money(client, FIXED_LATE_FEE_MINOR)]
    kind = notice.kind
    if kind == NoticeKind.INVOICE_ISSUED:
        assert notice.discount_until
        facts += [
            money(client, notice.discount_minor),
            money(client, notice.balance_minor - notice.discount_minor),
            long_date(client, notice.discount_until),
        ]
    elif kind == NoticeKind.ULTIMATUM:
        facts += suspension_facts(client, notice)
    elif kind == NoticeKind.RECEIPT:
        facts += [money(client, notice.payment_minor), notice.detail]
    elif kind == NoticeKind.PLAN_AGREED:
        for instalment in notice.instalments:
            facts += [money(client, instalment.amount_minor), long_date(client, instalment.due_date)]
    elif kind == NoticeKind.INSTALMENT_MISSED:
        assert notice.missed_instalment
        facts.append(long_date(client, notice.instalments[notice.missed_instalment - 1].due_date))
    elif kind == NoticeKind.DISPUTE_RESOLVED:
        facts.append(money(client, notice.credit_minor))
    return Counter(facts)


def suspension_facts(client: Client, notice: NoticeRequest) -> list[str]:
    """The suspension's date and time of day on the client's clock."""
    assert notice.suspension_at
    local = notice.suspension_at.astimezone(ZoneInfo(client.zone))
    return [long_date(client, local.date()), format_time(local, "short", locale=client.locale)]


def masked_subject(delivery: Delivery) -> str:
    """The subject without the invoice number, so that only the wording is compared."""
    return str(delivery.received.message["Subject"]).replace(delivery.notice.invoice_id, "{invoice}")


def leaf_parts(message: EmailMessage) -> list[EmailMessage]:
    return [part for part in message.walk() if not part.is_multipart()]


# --- the tests ---------------------------------------------------------------------------------


def test_the_catalogue_covers_every_supported_language():
    assert tuple(client.language for client in CLIENTS) == SUPPORTED_LANGUAGES
    assert len(CASES) == len(NoticeKind) * len(SUPPORTED_LANGUAGES) == 75


@pytest.mark.parametrize(
    ("kind", "client"), CASES, ids=[f"{kind.value}-{client.language}" for kind, client in CASES]
)
async def test_the_notice_arrives_stating_its_facts(catalogue: Catalogue, kind: NoticeKind, client: Client):
    what = f"{kind.value} in {client.language}"
    delivery = catalogue.deliveries.get((kind, client.language))
    assert delivery, f"{what}: the server received no message with this step key"
    notice, received, message = delivery.notice, delivery.received, delivery.received.message

    message_id = message_id_for(notice.idempotency_key, SENDER)
    assert message["Message-ID"] == message_id, what
    assert delivery.result == {"message_id": message_id, "delivered": ["email"], "failed": {}}, what
    assert received.tls and received.login == SMTP_USER, what
    assert (received.mail_from, received.rcpt_tos) == (SENDER, [client.email]), what
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == (client.name, client.email), what

    subject = str(message["Subject"])
    assert notice.invoice_id in subject, f"{what}: subject {subject!r}"
    assert "\n" not in subject and "\r" not in subject, f"{what}: subject {subject!r}"
    if kind == NoticeKind.ULTIMATUM:
        suspension_day = suspension_facts(client, notice)[0]
        assert suspension_day in subject, f"{what}: subject {subject!r} lacks {suspension_day!r}"

    plain, rich = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and rich is not None, f"{what}: text/plain and text/html are both required"
    text, page = plain.get_content(), html.unescape(rich.get_content())
    wanted = expected_facts(client, notice)
    missing = {fact: count for fact, count in wanted.items() if text.count(fact) < count}
    assert not missing, f"{what}: the text lacks (fact: times) {missing}\n{text}"
    in_html = [notice.invoice_id, money(client, notice.balance_minor), long_date(client, notice.due_date), PAYEE.name]
    assert all(fact in page for fact in in_html), f"{what}: the HTML lacks one of {in_html}"
    assert f'<html lang="{client.language}">' in rich.get_content(), what

    others = [part for part in leaf_parts(message) if part not in (plain, rich)]
    if kind == NoticeKind.INVOICE_ISSUED:
        assert [(p.get_content_type(), p.get_filename(), p.is_attachment()) for p in others] == [
            ("application/pdf", f"invoice-{notice.invoice_id}.pdf", True)
        ], what
        pdf = PdfReader(io.BytesIO(others[0].get_content()))
        assert notice.invoice_id in "".join(sheet.extract_text() for sheet in pdf.pages), what
    else:
        assert others == [], f"{what}: unexpected parts {[p.get_content_type() for p in others]}"


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
async def test_no_sentence_ends_with_two_full_stops(catalogue: Catalogue, language: str):
    doubled = {
        kind.value: line
        for kind in NoticeKind
        for line in _text(catalogue.deliveries[kind, language]).splitlines()
        if DOUBLE_FULL_STOP.search(line)
    }
    assert not doubled, f"{language}: {doubled}"


def _text(delivery: Delivery) -> str:
    plain = delivery.received.message.get_body(("plain",))
    assert plain is not None
    return plain.get_content()


async def test_message_ids_are_the_step_ids_and_unique(catalogue: Catalogue):
    ids = [str(r.message["Message-ID"]) for r in catalogue.server.received]
    assert len(ids) == len(set(ids)) == 75
    assert set(ids) == {message_id_for(d.notice.idempotency_key, SENDER) for d in catalogue.deliveries.values()}


async def test_subjects_escalate_within_a_language_and_are_translated(catalogue: Catalogue):
    deliveries = catalogue.deliveries
    for client in CLIENTS:
        subjects = {kind: masked_subject(deliveries[kind, client.language]) for kind in NoticeKind}
        repeated = {s: [k.value for k in subjects if subjects[k] == s] for s in subjects.values()}
        assert len(set(subjects.values())) == len(NoticeKind), (
            f"{client.language}: kinds share a subject: {[ks for ks in repeated.values() if len(ks) > 1]}"
        )
    for kind in NoticeKind:
        subjects = {client.language: masked_subject(deliveries[kind, client.language]) for client in CLIENTS}
        assert len(set(subjects.values())) == len(CLIENTS), f"{kind.value}: untranslated subject in {subjects}"


async def test_nothing_is_sent_twice(catalogue: Catalogue, pool: asyncpg.Pool):  # noqa: F811 - the fixture
    assert len(catalogue.server.received) == 75

    async with asyncio.timeout(60):
        for (kind, language), delivery in catalogue.deliveries.items():
            again = await run_activity(catalogue.activities.send_notice, delivery.notice, LEASE)
            assert again == delivery.result, f"{kind.value} in {language}"

    assert len(catalogue.server.received) == 75 and catalogue.server.rcpt_commands == 75
    rows = await pool.fetch(
        "SELECT status, attempts FROM notice_deliveries WHERE idempotency_key = ANY($1::text[])",
        [d.notice.idempotency_key for d in catalogue.deliveries.values()],
    )
    assert Counter((row["status"], row["attempts"]) for row in rows) == {("sent", 1): 75}
