"""The customer digest and its statement of account, in every language: read back as the client reads them.

Expected amounts and dates are computed here with Babel from literal values; a few literal words per language
anchor what a reader sees.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from babel.numbers import format_currency

from activities.notices.digest import StatementLine, digest_context, digest_message, render_digest
from activities.notices.i18n import template_messages
from tests.notice_samples import BALANCE, CLIENTS, INVOICE, PAYEE, SUSPENSION, long_date, money, notice
from tests.test_notice_pdf import pdf_text, spaced
from workflows.digests import STAGE_NOTICES, DigestRequest
from workflows.models import NoticeKind

# what a reader of each language sees: the statement's title, the ultimatum digest's subject up to its date
ANCHORS = {
    "en": ("Statement of account", "Final notice: service suspension on"),
    "ro": ("Extras de cont", "Ultima notificare: suspendarea serviciului la"),
    "bg": ("Извлечение по сметка", "Последно уведомление: спиране на услугата на"),
    "et": ("Konto väljavõte", "Viimane teade: teenuse peatamine"),
    "it": ("Estratto conto", "Ultimo avviso: sospensione del servizio"),
}
SENT = datetime(2025, 4, 8, 22, 30, tzinfo=UTC)  # 9 April in every client's zone but London's
# an open invoice the read models know, in another currency than the digest's
OTHER = StatementLine("INV-2025-0050", "USD", date(2025, 5, 2), 30_000, 0, 10_000, 2_500, 17_500)


def digest_of(language: str, *kinds: NoticeKind) -> DigestRequest:
    notices = [
        notice(kind, language, invoice_id=f"INV-2025-004{i}", idempotency_key=f"invoice-INV-2025-004{i}/0003-{kind.value}")
        for i, kind in enumerate(kinds, start=2)
    ]
    return DigestRequest(
        idempotency_key="customer-RO-40512378/run-1/digest-3", number=3, at=SENT, customer_id="RO-40512378", notices=notices
    )


def subject_of(digest: DigestRequest) -> str:
    return digest_message(digest_context(digest, [], PAYEE)).subject


@pytest.fixture(scope="module")
def english_sentences() -> list[str]:
    ids = [m if isinstance(m, str) else m[0] for m in template_messages()]
    return [m.split("%")[0] for m in ids if len(m.split("%")[0]) >= 20]


@pytest.mark.parametrize("language", list(CLIENTS))
def test_the_digest_lists_each_invoice_in_the_tone_of_the_strongest_stage(language: str, english_sentences: list[str]) -> None:
    rendered = render_digest(digest_of(language, NoticeKind.REMINDER, NoticeKind.ULTIMATUM), [OTHER], PAYEE)
    title, subject = ANCHORS[language]
    assert rendered.subject.startswith(subject) and long_date(SUSPENSION, language) in rendered.subject
    assert "\n" not in rendered.subject
    for body in (rendered.text, rendered.html):
        for invoice_id in ("INV-2025-0042", "INV-2025-0043"):
            assert invoice_id in body
        assert money(INVOICE, language) in body and money(BALANCE, language) in body
        assert money(2 * BALANCE, language) in body  # the total due in the digest's currency
        assert PAYEE.payment_instructions in body
    assert "O'Brien <script>" in rendered.text and "O&#39;Brien &lt;script&gt;" in rendered.html
    if language != "en":
        leaked = [s for s in english_sentences if s in rendered.text or s in rendered.html]
        assert not leaked, f"English text in a {language} digest: {leaked}"


@pytest.mark.parametrize("language", list(CLIENTS))
def test_the_statement_lists_every_open_invoice_and_the_balance_per_currency(language: str) -> None:
    rendered = render_digest(digest_of(language, NoticeKind.WARNING, NoticeKind.LATE_FEE), [OTHER], PAYEE)
    [attachment] = rendered.attachments
    assert attachment.content_type == "application/pdf"
    # dated the day the customer sent it in the client's zone, not by the clock of the machine that renders it
    assert attachment.filename == f"statement-RO-40512378-2025-04-{'08' if language == 'en' else '09'}.pdf"
    reader, text = pdf_text(attachment.data)
    locale = CLIENTS[language].locale
    assert len(reader.pages) == 1
    assert ANCHORS[language][0] in text
    for invoice_id in ("INV-2025-0042", "INV-2025-0043", "INV-2025-0050"):
        assert invoice_id in text
    assert spaced(money(2 * BALANCE, language)) in text
    for usd in ("300.00", "100.00", "25.00", "175.00"):  # amount, paid, credited, due of the read models' invoice
        assert spaced(format_currency(Decimal(usd), "USD", locale=locale)) in text
    assert "RO49 AAAA 1B31 0075 9384 0000" in text
    assert render_digest(digest_of(language, NoticeKind.WARNING, NoticeKind.LATE_FEE), [OTHER], PAYEE).attachments == rendered.attachments


@pytest.mark.parametrize("language", list(CLIENTS))
def test_each_strongest_stage_has_its_own_subject_whatever_the_order(language: str) -> None:
    subjects = set()
    for kind in STAGE_NOTICES:
        milder = NoticeKind.COURTESY if kind != NoticeKind.COURTESY else kind
        first = subject_of(digest_of(language, kind, milder))
        assert subject_of(digest_of(language, milder, kind)) == first
        subjects.add(first)
    assert len(subjects) == len(STAGE_NOTICES)
