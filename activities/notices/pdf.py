"""PDF documents (fpdf2) in the bundled DejaVu fonts, which print Romanian ș/ț and Cyrillic.

The invoice, and the page helpers the agency package shares. Output is deterministic: the same
input gives the same bytes (the creation date is a fact of the document, e.g. the issue date).

The fonts are parsed once per process into a blank document that every new document is a deep
copy of: parsing them anew took most of a PDF's time. The bundled fonts are cut down to
the Latin, Greek and Cyrillic scripts, without the layout tables fpdf2 drops at output (see
``fonts/LICENSE``), which keeps both the copy and the subsetting at ``output()`` small; the
subset keeps each glyph's bounding box as the font has it instead of recomputing them all.
"""

from __future__ import annotations

import copy
import functools
import io
from collections.abc import Sequence
from datetime import UTC, datetime, time
from importlib import resources
from pathlib import Path
from typing import Any

from fontTools.ttLib import TTFont
from fpdf import FPDF, FontFace
from fpdf.fonts import TTFFont

from activities.notices.content import Payee
from activities.notices.templating import notice_context, typeset
from workflows.models import NoticeRequest

FONT = "DejaVuSans"
_FONTS = Path(str(resources.files("activities.notices").joinpath("fonts")))
BOLD = FontFace(emphasis="BOLD")
LINE = 6  # mm, the height of a line of 10 pt text


@functools.cache
def _blank_document() -> FPDF:
    """An A4 document with the fonts added: their widths and glyph maps are parsed once."""
    pdf = FPDF(format="A4")
    pdf.add_font(FONT, "", _FONTS / "DejaVuSans.ttf")
    pdf.add_font(FONT, "B", _FONTS / "DejaVuSans-Bold.ttf")
    return pdf


@functools.cache
def _font_file(path: Path) -> bytes:
    return path.read_bytes()


def _embedded_fonts(pdf: FPDF) -> list[TTFFont]:
    """The document's fonts: only embedded TrueType ones are added (``_blank_document``)."""
    return [font for font in pdf.fonts.values() if isinstance(font, TTFFont)]


def new_document(*, title: str, author: str, language: str, created: datetime) -> FPDF:
    """An A4 document with its metadata set and a first page, ready for text."""
    blank = _blank_document()
    # the width and glyph tables are the font's, whatever the document: shared, not copied
    shared = {id(table): table for font in _embedded_fonts(blank) for table in (font.cw, font.glyph_ids)}
    pdf = copy.deepcopy(blank, shared)
    for font in _embedded_fonts(pdf):  # fpdf2 shares the font file across copies; output() subsets it in place
        font.ttfont = TTFont(
            io.BytesIO(_font_file(font.ttffile)), recalcTimestamp=False, recalcBBoxes=False, lazy=True
        )
    pdf.set_creation_date(created)
    pdf.set_title(title)
    pdf.set_author(author)
    pdf.set_creator("dunning")
    pdf.set_lang(language)
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_page()
    pdf.set_font(FONT, size=10)
    return pdf


def heading(pdf: FPDF, text: str, size: int = 12) -> None:
    """A bold heading on its own line, with space above it."""
    pdf.ln(LINE / 2)
    pdf.set_font(FONT, "B", size)
    pdf.multi_cell(0, LINE * size / 10, text, align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 10)


def paragraph(pdf: FPDF, text: str, link: str = "") -> None:
    """Wrapped text across the page width."""
    pdf.multi_cell(0, LINE, text, align="L", link=link, new_x="LMARGIN", new_y="NEXT")


def table(
    pdf: FPDF,
    rows: Sequence[Sequence[str]],
    *,
    header: Sequence[str] | None = None,
    total: Sequence[str] | None = None,
    col_widths: Sequence[int] = (2, 3),
    align: Sequence[str] = ("LEFT", "LEFT"),
) -> None:
    """A table across the page: with a ``header`` (bold) it has rules between rows; ``total`` is a bold last row."""
    with pdf.table(
        col_widths=tuple(col_widths),
        text_align=tuple(align),
        first_row_as_headings=header is not None,
        borders_layout="HORIZONTAL_LINES" if header else "NONE",
        line_height=LINE,
        padding=(1, 2),
    ) as grid:
        for row in [header, *rows] if header else rows:
            grid.row(tuple(row))
        if total:
            grid.row(tuple(total), style=BOLD)


def invoice_pdf(notice: NoticeRequest, payee: Payee) -> bytes:
    """The invoice as it stands: amount, each late fee, payments and credits, balance due, how to pay."""
    common = notice_context(notice, payee)["common"]
    pdf = new_document(
        title=common.invoice_title,
        author=payee.name,
        language=notice.language,
        created=datetime.combine(notice.issue_date, time(0), tzinfo=UTC),
    )
    heading(pdf, payee.name, size=16)
    heading(pdf, common.invoice_title, size=14)
    table(pdf, [(common.billed_to, f"{notice.to_name}\n{notice.to_email}"), *common.details])
    pdf.ln(LINE)
    table(
        pdf,
        common.amounts,
        header=(common.description, common.amount),
        total=common.amount_due,
        col_widths=(7, 3),
        align=("LEFT", "RIGHT"),
    )
    for sentence in common.terms:
        pdf.ln(LINE / 2)
        paragraph(pdf, typeset(sentence, notice.language))
    if notice.balance_minor > 0:
        how_to_pay(pdf, common, payee)
        paragraph(pdf, common.quote_reference)
    return bytes(pdf.output())


def how_to_pay(pdf: FPDF, common: Any, payee: Payee) -> None:
    """The "how to pay" section: the payee's instructions, name, IBAN and payment link, as ``common.j2`` labels them."""
    heading(pdf, common.how_to_pay)
    if payee.payment_instructions:
        paragraph(pdf, payee.payment_instructions)
    paragraph(pdf, f"{common.payee_label}: {payee.name}")
    if payee.iban:
        paragraph(pdf, f"IBAN: {payee.iban}")
    if payee.payment_link:
        paragraph(pdf, f"{common.pay_online}: {payee.payment_link}", link=payee.payment_link)
