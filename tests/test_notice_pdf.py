"""The invoice PDF: read back with pypdf, in Romanian (ș, ț, ă) and Bulgarian (Cyrillic)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from io import BytesIO
from pathlib import Path

import pytest
from babel.numbers import format_currency
from fontTools.ttLib import TTFont
from pypdf import PdfReader

import activities.notices
from activities.notices.pdf import invoice_pdf
from tests.notice_samples import PAYEE, notice
from workflows.models import NoticeKind

FONTS = Path(activities.notices.__file__).parent / "fonts"


def pdf_text(data: bytes) -> tuple[PdfReader, str]:
    """The reader and the text of all pages, with every run of white space (NBSP too) as one space."""
    reader = PdfReader(BytesIO(data))
    return reader, " ".join(" ".join(page.extract_text() for page in reader.pages).split())


def spaced(text: str) -> str:
    return " ".join(text.split())


def test_romanian_invoice_reads_back_with_diacritics() -> None:
    reader, text = pdf_text(invoice_pdf(notice(NoticeKind.INVOICE_ISSUED, "ro"), PAYEE))
    assert len(reader.pages) == 1
    assert "Factura INV-2025-0042" in text
    assert spaced(f"Sumă de plată {format_currency(Decimal('12725.00'), 'RON', locale='ro_RO')}") in text
    assert spaced(format_currency(Decimal("500.00"), "RON", locale="ro_RO")) in text
    assert "Penalitate de întârziere 1, aplicată la 30 martie 2025" in text
    assert "Data scadenței 20 martie 2025" in text
    assert "Cum puteți plăti" in text
    assert PAYEE.payment_instructions in text
    assert "IBAN: RO49 AAAA 1B31 0075 9384 0000" in text
    assert "Referință de plată RF03 4F7R EE0J V0RU 7EU" in text  # ISO 11649, matched on bank statements
    assert "O'Brien <script>alert(1)</script>" in text  # a PDF is not HTML: the name prints as given


def test_bulgarian_invoice_reads_back_in_cyrillic() -> None:
    _, text = pdf_text(invoice_pdf(notice(NoticeKind.INVOICE_ISSUED, "bg"), PAYEE))
    assert "Фактура INV-2025-0042" in text
    assert spaced(f"Дължима сума {format_currency(Decimal('12725.00'), 'BGN', locale='bg_BG')}") in text
    assert "Неустойка за забава 2" in text
    assert "Референция за плащане RF03 4F7R EE0J V0RU 7EU" in text
    assert "Как да платите" in text


def test_the_pdf_is_deterministic_and_dated_by_its_issue_date() -> None:
    request = notice(NoticeKind.INVOICE_ISSUED, "it")
    first, second = invoice_pdf(request, PAYEE), invoice_pdf(request, PAYEE)
    assert first == second
    reader, _ = pdf_text(first)
    assert reader.metadata.title == "Fattura INV-2025-0042"
    assert reader.metadata.author == PAYEE.name
    assert reader.metadata.creation_date == datetime(2025, 3, 6, tzinfo=UTC)
    other_day = invoice_pdf(notice(NoticeKind.INVOICE_ISSUED, "it", issue_date=date(2025, 3, 7)), PAYEE)
    assert other_day != first


def test_the_payment_link_is_clickable() -> None:
    reader, _ = pdf_text(invoice_pdf(notice(NoticeKind.INVOICE_ISSUED, "en"), PAYEE))
    uris = [
        annotation.get_object()["/A"]["/URI"]
        for page in reader.pages
        for annotation in page.get("/Annots", [])
        if annotation.get_object().get("/A", {}).get("/URI")
    ]
    assert uris == [PAYEE.payment_link]


def test_fonts_are_bundled_and_embedded() -> None:
    assert {p.name for p in FONTS.iterdir()} >= {"DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "LICENSE"}
    assert "Bitstream Vera" in (FONTS / "LICENSE").read_text()
    reader, _ = pdf_text(invoice_pdf(notice(NoticeKind.INVOICE_ISSUED, "bg"), PAYEE))
    embedded = {
        font.get_object()["/BaseFont"]
        for font in reader.pages[0]["/Resources"]["/Font"].values()
    }
    assert all("DejaVuSans" in name for name in embedded) and len(embedded) == 2  # regular and bold


def test_fonts_carry_no_layout_tables_and_embed_only_the_glyphs_used() -> None:
    """fpdf2 drops the OpenType layout tables at output: bundled, they were parsed for every PDF."""
    for path in FONTS.glob("*.ttf"):
        assert not {"GDEF", "GPOS", "GSUB", "MATH"} & set(TTFont(path).keys()), path.name
    reader, text = pdf_text(invoice_pdf(notice(NoticeKind.INVOICE_ISSUED, "bg"), PAYEE))
    for font in reader.pages[0]["/Resources"]["/Font"].values():
        descriptor = font.get_object()["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object()
        embedded = TTFont(BytesIO(descriptor["/FontFile2"].get_object().get_data()))
        glyphs = embedded.getGlyphOrder()
        assert 10 < len(glyphs) <= len(set(text)) + 5  # the characters printed, .notdef and the recommended few
        glyf = embedded["glyf"]
        for name in glyphs:  # the boxes are not recomputed at output: the stored ones must fit the outlines
            glyph = glyf[name]
            if glyph.numberOfContours:
                stored = (glyph.xMin, glyph.yMin, glyph.xMax, glyph.yMax)
                glyph.recalcBounds(glyf)
                assert stored == (glyph.xMin, glyph.yMin, glyph.xMax, glyph.yMax), name


@pytest.mark.parametrize("balance", [0, 1_272_500])
def test_how_to_pay_only_when_something_is_due(balance: int) -> None:
    request = notice(NoticeKind.INVOICE_ISSUED, "en", balance_minor=balance, paid_minor=1_272_500 - balance)
    _, text = pdf_text(invoice_pdf(request, PAYEE))
    assert ("How to pay" in text) == (balance > 0)
    assert ("Paid £" in text) == (balance == 0)
