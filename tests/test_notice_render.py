"""Notice content: every kind in every language, formatted for the client's locale, complete catalogs.

Expected dates and amounts are computed here with Babel from literal values (not by the renderer's
helpers), plus a few literal strings that anchor what a reader of each language sees.
"""

from __future__ import annotations

import gettext
import unicodedata
from datetime import date
from decimal import Decimal
from io import BytesIO
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from babel import Locale
from babel.dates import format_date, format_time, get_timezone_name
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from pydantic import ValidationError

from activities.notices.i18n import (
    MissingTranslation,
    StrictTranslations,
    catalog_problems,
    check_catalogs,
    load_catalog,
    locale_for,
    template_messages,
    translations,
)
from activities.notices.render import IncompleteNotice, Payee, RenderedNotice, render_notice
from activities.notices.templating import typeset
from tests.notice_samples import BALANCE, CLIENTS, DUE, FEES, INVOICE, PAYEE, SUSPENSION, long_date, money, notice
from workflows.models import NoticeKind


@pytest.fixture(scope="module")
def english_sentences() -> list[str]:
    """The English source sentences (up to their first value): none may show up in a translated notice."""
    ids = [m if isinstance(m, str) else m[0] for m in template_messages()]
    return [m.split("%")[0] for m in ids if len(m.split("%")[0]) >= 20]


# --- every kind, every language ------------------------------------------------------------


@pytest.mark.parametrize("language", list(CLIENTS))
@pytest.mark.parametrize("kind", list(NoticeKind))
def test_every_notice_states_what_a_clear_invoice_states(
    kind: NoticeKind, language: str, english_sentences: list[str]
) -> None:
    rendered = render_notice(notice(kind, language), PAYEE)
    assert "INV-2025-0042" in rendered.subject
    assert "\n" not in rendered.subject and "\r" not in rendered.subject
    for body in (rendered.text, rendered.html):
        assert "INV-2025-0042" in body
        assert money(BALANCE, language) in body
        assert money(INVOICE, language) in body
        for amount, charged_at in FEES:
            assert money(amount, language) in body
            assert long_date(charged_at, language) in body  # the client's calendar day
        assert CLIENTS[language].fee_label in body
        assert "month 2 of delay" not in body  # the workflow's reason is never printed
        assert long_date(DUE, language) in body
        assert PAYEE.payment_instructions in body
        assert "RO49 AAAA 1B31 0075 9384 0000" in body
        assert "RF03 4F7R EE0J V0RU 7EU" in body  # the invoice's ISO 11649 reference, that statements are matched by
        assert PAYEE.payment_link in body
    assert PAYEE.name in rendered.text
    assert "Tehnoserv &amp; Co SRL" in rendered.html
    if language != "en":
        leaked = [s for s in english_sentences if s in rendered.text or s in rendered.html]
        assert not leaked, f"English text in a {language} notice: {leaked}"


def test_the_locale_follows_language_and_country() -> None:
    assert str(locale_for("ro", "RO")) == "ro_RO"
    assert str(locale_for("en", "GB")) == "en_GB"
    assert str(locale_for("et", None)) == "et_EE"
    assert str(locale_for("bg", None)) == "bg_BG"
    assert str(locale_for("en", "EE")) == "en_US"  # CLDR has no en_EE: English's home territory
    us = render_notice(notice(NoticeKind.REMINDER, "en", country="US", currency="USD"), PAYEE)
    assert "March 20, 2025" in us.text and "$12,725.00" in us.text
    gb = render_notice(notice(NoticeKind.REMINDER, "en"), PAYEE)
    assert "20 March 2025" in gb.text and "£12,725.00" in gb.text


def test_romanian_reads_as_romanian() -> None:
    rendered = render_notice(notice(NoticeKind.WARNING, "ro"), PAYEE)
    assert rendered.subject == "Plată restantă: factura INV-2025-0042"
    assert rendered.text.startswith("Bună ziua, O'Brien <script>alert(1)</script>,\n")
    assert "12.725,00\xa0RON" in rendered.text
    assert "20 martie 2025" in rendered.text
    assert "o penalitate de 1,5\xa0% din valoarea neachitată a facturii" in rendered.text
    assert "plus o taxă unică de 150,00\xa0RON" in rendered.text


# --- the ultimatum and suspension ---------------------------------------------------------


@pytest.mark.parametrize("language", list(CLIENTS))
def test_the_ultimatum_names_the_suspension_moment_in_the_clients_zone(language: str) -> None:
    client = CLIENTS[language]
    local = SUSPENSION.astimezone(ZoneInfo(client.zone))
    rendered = render_notice(notice(NoticeKind.ULTIMATUM, language), PAYEE)
    assert format_date(local.date(), "long", locale=client.locale) in rendered.subject
    for body in (rendered.text, rendered.html):
        assert format_date(local.date(), "long", locale=client.locale) in body
        assert format_time(local, "short", locale=client.locale) in body
        assert get_timezone_name(local, "long", locale=client.locale) in body


def test_the_ultimatum_in_bucharest_says_nine_in_the_morning() -> None:
    rendered = render_notice(notice(NoticeKind.ULTIMATUM, "ro"), PAYEE)
    assert "înainte de 9 aprilie 2025, 09:00 (Ora de vară a Europei de Est)" in rendered.text  # 06:00 UTC
    english = render_notice(notice(NoticeKind.ULTIMATUM, "en", time_zone="Europe/Bucharest"), PAYEE)
    assert "before 9 April 2025, 09:00 (Eastern European Summer Time)" in english.text


@pytest.mark.parametrize("kind", [NoticeKind.ULTIMATUM, NoticeKind.SUSPENDED])
def test_suspension_says_whether_equipment_is_disconnected(kind: NoticeKind) -> None:
    cut = render_notice(notice(kind, "en", remote_disconnect=True), PAYEE).text
    support_only = render_notice(notice(kind, "en", remote_disconnect=False), PAYEE).text
    assert "disconnected remotely" in cut and "not be disconnected" not in cut
    assert "technical support" in support_only and "new orders" in support_only
    assert "disconnected remotely" not in support_only
    not_cut = "have not been disconnected" if kind == NoticeKind.SUSPENDED else "will not be disconnected"
    assert not_cut in support_only
    ro = render_notice(notice(kind, "ro", remote_disconnect=False), PAYEE).text
    assert "nu au fost deconectate" in ro or "nu vor fi deconectate" in ro


def test_an_ultimatum_without_a_suspension_moment_is_refused() -> None:
    with pytest.raises(IncompleteNotice, match="suspension_at"):
        render_notice(notice(NoticeKind.ULTIMATUM, suspension_at=None), PAYEE)


@pytest.mark.parametrize(
    ("kind", "changes", "missing"),
    [
        (NoticeKind.RECEIPT, {"detail": ""}, "payment id"),
        (NoticeKind.DISPUTE_RESOLVED, {"detail": "maybe"}, "upheld"),
        (NoticeKind.PLAN_AGREED, {"instalments": []}, "instalments"),
        (NoticeKind.INSTALMENT_MISSED, {"missed_instalment": 3}, "missed_instalment"),
    ],
)
def test_a_notice_lacking_its_facts_is_refused(kind: NoticeKind, changes: dict[str, Any], missing: str) -> None:
    with pytest.raises(IncompleteNotice, match=missing):
        render_notice(notice(kind, **changes), PAYEE)


# --- plural forms ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "days", "expected"),
    [
        ("ro", 1, "este restantă de 1 zi."),
        ("ro", 2, "este restantă de 2 zile."),
        ("ro", 19, "este restantă de 19 zile."),
        ("ro", 20, "este restantă de 20 de zile."),
        ("ro", 101, "este restantă de 101 zile."),
        ("ro", 120, "este restantă de 120 de zile."),
        ("bg", 1, "е просрочена с 1 ден."),
        ("bg", 5, "е просрочена с 5 дни."),
        ("et", 1, "on möödunud 1 päev."),
        ("et", 5, "on möödunud 5 päeva."),
        ("it", 1, "è scaduta da 1 giorno."),
        ("it", 21, "è scaduta da 21 giorni."),
        ("en", 1, "is 1 day overdue."),
        ("en", 2, "is 2 days overdue."),
    ],
)
def test_days_overdue_take_the_right_plural_form(language: str, days: int, expected: str) -> None:
    assert expected in render_notice(notice(NoticeKind.WARNING, language, days_overdue=days), PAYEE).text


@pytest.mark.parametrize("language", ["ro", "bg", "et", "it"])
def test_catalog_plural_forms_agree_with_cldr(language: str) -> None:
    """For 0..999 days the .po Plural-Forms pick the form of CLDR's category: one, (few,) other.

    (Italian's CLDR 'many' is for round millions only, which gettext's two forms leave to 'other'.)
    """
    rules, numbers = Locale.parse(language).plural_form, range(1000)
    categories = [c for c in ("zero", "one", "two", "few", "many", "other") if any(rules(n) == c for n in numbers)]
    assert load_catalog(language).num_plurals == len(categories)
    compiled = translations(language)
    assert isinstance(compiled, StrictTranslations)
    assert [categories[compiled.plural(n)] for n in numbers] == [rules(n) for n in numbers]


# --- HTML and subjects ----------------------------------------------------------------------


def test_html_escapes_the_contact_name_and_the_text_does_not() -> None:
    rendered = render_notice(notice(NoticeKind.REMINDER, "en"), PAYEE)
    assert "<script>" not in rendered.html
    assert "Dear O&#39;Brien &lt;script&gt;alert(1)&lt;/script&gt;," in rendered.html
    assert rendered.text.startswith("Dear O'Brien <script>alert(1)</script>,\n")
    assert '<a href="https://pay.example/i/INV-2025-0042">' in rendered.html


@pytest.mark.parametrize("language", list(CLIENTS))
def test_subjects_are_distinct_single_lines(language: str) -> None:
    subjects = [render_notice(notice(kind, language), PAYEE).subject for kind in NoticeKind]
    for subject in subjects:
        assert subject == subject.strip() and "  " not in subject
        assert not any(unicodedata.category(c).startswith(("C", "Zl", "Zp")) for c in subject), subject
    assert len(set(subjects)) == len(subjects)


def test_tone_escalates_from_friendly_to_final() -> None:
    subjects = {k: render_notice(notice(k, "en"), PAYEE).subject for k in NoticeKind}
    assert subjects[NoticeKind.REMINDER] == "Friendly reminder: invoice INV-2025-0042"
    assert subjects[NoticeKind.WARNING] == "Payment overdue: invoice INV-2025-0042"
    assert subjects[NoticeKind.LATE_FEE] == "Late fee charged: invoice INV-2025-0042"
    assert subjects[NoticeKind.ULTIMATUM] == "Final notice: service suspension on 9 April 2025, invoice INV-2025-0042"
    agency = render_notice(notice(NoticeKind.AGENCY_HANDOVER, "en"), PAYEE).text
    assert "passed the debt to a collection agency" in agency
    assert "under legal review" in render_notice(notice(NoticeKind.LEGAL_REVIEW, "en"), PAYEE).text


# --- kinds with their own facts -----------------------------------------------------------


def test_the_invoice_and_its_resend_carry_the_invoice_pdf() -> None:
    issued = render_notice(notice(NoticeKind.INVOICE_ISSUED, "it"), PAYEE)
    resent = render_notice(notice(NoticeKind.INVOICE_ISSUED, "it", detail="resend"), PAYEE)
    assert issued.subject == "Fattura INV-2025-0042"
    assert resent.subject == "Fattura INV-2025-0042 (copia aggiornata)"
    for rendered in (issued, resent):
        (attachment,) = rendered.attachments
        assert (attachment.filename, attachment.content_type) == ("invoice-INV-2025-0042.pdf", "application/pdf")
        assert attachment.data.startswith(b"%PDF-")
    assert render_notice(notice(NoticeKind.REMINDER, "it"), PAYEE).attachments == ()


def test_a_receipt_in_full_asks_for_nothing() -> None:
    rendered = render_notice(
        notice(NoticeKind.RECEIPT, "en", paid_minor=1_272_500, balance_minor=0, payment_minor=1_272_500), PAYEE
    )
    assert "received your payment of £12,725.00 for invoice INV-2025-0042 (payment reference PAY-77)" in rendered.text
    assert "The invoice is now paid in full." in rendered.text
    assert "How to pay" not in rendered.text and "How to pay" not in rendered.html
    assert "Late payment terms" not in rendered.text
    assert "Paid:" in rendered.text and "£0.00" in rendered.text


@pytest.mark.parametrize("language", ["en", "ro", "bg", "et", "it"])
def test_a_receipt_tells_a_small_balance_written_off_and_a_recovery(language: str) -> None:
    adjusted = render_notice(
        notice(NoticeKind.RECEIPT, language, balance_minor=0, payment_minor=1_272_499, residue_minor=1), PAYEE
    )
    assert money(Decimal("0.01"), language) in adjusted.text
    recovery = notice(NoticeKind.RECEIPT, language, balance_minor=0, payment_minor=10_000, recovery=True)
    partly = render_notice(recovery.model_copy(update={"unrecovered_minor": 5_000}), PAYEE).text
    fully = render_notice(recovery, PAYEE).text
    assert money(Decimal("50.00"), language) in partly and partly != fully
    if language == "en":
        assert "The small remaining balance of £0.01 has been written off." in adjusted.text
        assert "we have recorded this payment as a recovery" in partly
        assert "Of the amount written off, £50.00 remains unpaid." in partly
        assert "any block on your service is lifted" in fully


@pytest.mark.parametrize("language", ["en", "ro", "bg", "et", "it"])
def test_a_receipt_tells_the_fee_its_value_date_reversed_and_what_the_payment_paid(language: str) -> None:
    """Issue 20: a late fee charged after the money arrived is reversed, and the receipt says what the payment paid."""
    base = notice(NoticeKind.RECEIPT, language)
    reversed_fee = base.fees[0]
    rendered = render_notice(
        base.model_copy(
            update={
                "fees": base.fees[1:],
                "fees_reversed": [reversed_fee],
                "received_on": date(2025, 3, 28),
                "payment_minor": 1_210_000,
                "principal_paid_minor": 1_200_000,
                "fees_paid_minor": 10_000,
            }
        ),
        PAYEE,
    ).text
    assert long_date(date(2025, 3, 28), language) in rendered
    assert money(Decimal(reversed_fee.amount_minor) / 100, language) in rendered
    assert money(Decimal("12000.00"), language) in rendered and money(Decimal("100.00"), language) in rendered
    plain = render_notice(base, PAYEE).text
    assert long_date(date(2025, 3, 28), language) not in plain
    if language == "en":
        assert f"Your payment arrived on 28 March 2025, before late fee 1 of {money(Decimal(reversed_fee.amount_minor) / 100, 'en')}" in rendered
        assert "Of this payment, £12,000.00 went to the invoice amount and £100.00 to late fees." in rendered
        assert "went to the invoice amount" not in plain


def test_the_payment_plan_lists_each_instalment() -> None:
    text = render_notice(notice(NoticeKind.PLAN_AGREED, "ro"), PAYEE).text
    assert f"Rata 1: {money(Decimal('6000.00'), 'ro')}, scadentă la 1 mai 2025\n" in text
    assert f"Rata 2: {money(Decimal('6725.00'), 'ro')}, scadentă la 1 iunie 2025\n" in text
    missed = render_notice(notice(NoticeKind.INSTALMENT_MISSED, "ro"), PAYEE).text
    assert "Nu am primit rata 1 din planul de plată pentru factura INV-2025-0042, scadentă la 1 mai 2025." in missed


def test_dispute_outcomes() -> None:
    upheld_request = notice(NoticeKind.DISPUTE_RESOLVED, "en", deducted_minor=5_000, balance_minor=1_267_500)
    upheld = render_notice(upheld_request, PAYEE)
    assert "agree with you. We have credited £50.00 to the invoice." in upheld.text
    assert "Credited:" in upheld.text
    rejected = render_notice(notice(NoticeKind.DISPUTE_RESOLVED, "en", detail="rejected", credit_minor=0), PAYEE)
    assert "found the invoice to be correct" in rejected.text and "credited" not in rejected.text


def test_early_payment_discount_and_late_fee_terms_are_stated() -> None:
    text = render_notice(
        notice(NoticeKind.INVOICE_ISSUED, "en", fees=[], balance_minor=1_200_000, discount_minor=24_000,
               discount_until=date(2025, 3, 13)),
        PAYEE,
    ).text
    assert "Early-payment discount: pay £11,760.00 by 13 March 2025 and save £240.00." in text
    assert "1.5% of the unpaid invoice amount for each month of delay, plus a one-time fee of £150.00." in text
    fixed_only = render_notice(notice(NoticeKind.WARNING, "en", late_fee_percent_per_month=Decimal(0)), PAYEE).text
    assert "Late payment terms of our contract: a one-time late fee of £150.00." in fixed_only
    no_fees = notice(NoticeKind.WARNING, "en", late_fee_percent_per_month=Decimal(0), fixed_late_fee_minor=0)
    none = render_notice(no_fees, PAYEE)
    assert "Late payment terms" not in none.text and "a late fee will be charged" not in none.text


# --- catalogs: complete, and strict when they are not ------------------------------------------


def test_every_language_translates_every_template_message() -> None:
    check_catalogs()  # raises with the list of problems


def _without(catalog: Catalog, msgid: str) -> Catalog:
    copy = Catalog(locale=catalog.locale, fuzzy=False)
    copy.mime_headers = catalog.mime_headers
    for message in catalog:
        if message.id and (message.id if isinstance(message.id, str) else message.id[0]) != msgid:
            copy.add(message.id, message.string, flags=message.flags)
    return copy


def test_the_completeness_check_fails_on_a_removed_translation() -> None:
    used = template_messages()
    catalog = load_catalog("bg")
    assert catalog_problems(catalog, used) == []
    problems = catalog_problems(_without(catalog, "How to pay"), used)
    assert problems == ["bg: no translation of 'How to pay'"]


def test_the_completeness_check_fails_on_empty_fuzzy_obsolete_and_wrong_placeholders() -> None:
    used = template_messages()
    plural = ("Invoice %(invoice)s is %(num)d day overdue.", "Invoice %(invoice)s is %(num)d days overdue.")
    catalog = load_catalog("ro")
    catalog[plural[0]].string = ("Factura %(invoice)s: %(num)d zi.", "", "Factura %(invoice)s: %(num)d de zile.")
    catalog["How to pay"].flags.add("fuzzy")
    catalog["Payee"].string = "Beneficiar %(name)s"
    catalog.obsolete["Old wording"] = catalog["Paid"]
    problems = "\n".join(catalog_problems(catalog, used))
    assert "'Invoice %(invoice)s is %(num)d day overdue.'" in problems and "form 1 is empty" in problems
    assert "'How to pay': marked fuzzy" in problems
    assert "'Payee': form 0 uses ['name'], not []" in problems
    assert "1 obsolete message(s)" in problems


def test_the_completeness_check_fails_on_wrong_plural_forms_and_unused_messages() -> None:
    catalog = load_catalog("et")
    catalog.mime_headers = [(k, v) for k, v in catalog.mime_headers if k != "Plural-Forms"] + [
        ("Plural-Forms", "nplurals=1; plural=0;")
    ]
    catalog.add("Nobody uses this", "Keegi ei kasuta seda")
    problems = catalog_problems(catalog, template_messages())
    assert "et: Plural-Forms must be 'nplurals=2; plural=(n != 1);'" in problems
    assert "et: 'Nobody uses this' is translated but no template uses it" in problems


def test_rendering_raises_instead_of_falling_back_to_english() -> None:
    compiled = BytesIO()
    write_mo(compiled, _without(load_catalog("it"), "How to pay"))
    compiled.seek(0)
    strict = StrictTranslations(compiled)
    assert strict.gettext("Payee") == "Beneficiario"
    with pytest.raises(MissingTranslation, match="How to pay"):
        strict.gettext("How to pay")
    with pytest.raises(MissingTranslation):
        strict.ngettext("%(num)d apple", "%(num)d apples", 2)
    assert isinstance(translations("en"), gettext.NullTranslations)


# --- payee settings ---------------------------------------------------------------------------


def test_payee_settings_are_validated() -> None:
    spaced_lower = Payee(name="A", payment_instructions="B", iban="ro49 aaaa 1b31 0075 9384 0000")
    assert spaced_lower.iban == "RO49 AAAA 1B31 0075 9384 0000"
    with pytest.raises(ValidationError, match="check digit"):
        Payee(name="A", payment_instructions="B", iban="RO48 AAAA 1B31 0075 9384 0000")
    with pytest.raises(ValidationError, match="https"):
        Payee(name="A", payment_instructions="B", payment_link="http://pay.example/x")
    with pytest.raises(ValidationError, match="one non-blank line"):
        Payee(name="A\nB", payment_instructions="B")


def test_the_result_is_content_not_a_mime_message() -> None:
    rendered = render_notice(notice(NoticeKind.COURTESY, "et"), PAYEE)
    assert isinstance(rendered, RenderedNotice)
    assert rendered.subject == "Arve INV-2025-0042 maksetähtaeg on 20. märts 2025"
    assert rendered.html.startswith("<!DOCTYPE html>") and '<html lang="et">' in rendered.html


@pytest.mark.parametrize(
    ("language", "line", "typeset_line"),
    [
        ("bg", "такса от 150,00 лв..", "такса от 150,00 лв."),
        ("bg", "с падеж 31 октомври 2025 г..", "с падеж 31 октомври 2025 г."),
        ("en", "Wait for it...", "Wait for it..."),
        ("it", "Scade il 8 febbraio 2026, entro il 11 marzo, dal 1 aprile.", "Scade l'8 febbraio 2026, entro l'11 marzo, dall'1 aprile."),
        ("it", "il 18 febbraio e il 28 marzo", "il 18 febbraio e il 28 marzo"),
        ("ro", "la 8 februarie", "la 8 februarie"),
    ],
)
def test_typesetting_once_the_values_are_in(language, line, typeset_line):
    assert typeset(line, language) == typeset_line


def test_payment_instructions_are_optional():
    payee = Payee(name="Tehnoserv SRL", iban="RO49AAAA1B31007593840000")
    rendered = render_notice(notice(NoticeKind.REMINDER, "ro"), payee)
    assert "IBAN: RO49 AAAA 1B31 0075 9384 0000" in rendered.text and "None" not in rendered.text
