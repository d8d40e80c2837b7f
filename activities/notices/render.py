"""Turns a ``NoticeRequest`` into notice content: subject, plain text, HTML and attachments.

Every word comes from the reviewed templates (technique 19), in the invoice's language; every
value comes from the validated request or the payee settings, never from a caller's free text.
Templates: ``templates/<kind>.j2`` holds a kind's subject and message (plain text, written once);
``layout.txt.j2`` and ``layout.html.j2`` put it around the facts of the invoice from ``common.j2``.
"""

from __future__ import annotations

import re
import unicodedata

from activities.notices.content import Attachment, Payee, RenderedNotice
from activities.notices.pdf import invoice_pdf
from activities.notices.templating import environment, notice_context, render_block, typeset
from workflows.models import NoticeKind, NoticeRequest

__all__ = ["Attachment", "IncompleteNotice", "Payee", "RenderedNotice", "render_notice"]


class IncompleteNotice(ValueError):
    """The request lacks a fact its kind must state (a bug in the caller: retrying cannot help)."""


def render_notice(notice: NoticeRequest, payee: Payee) -> RenderedNotice:
    """The notice in the invoice's language; the invoice PDF is attached to ``invoice_issued`` (and resends)."""
    _require_facts(notice)
    context = notice_context(notice, payee)
    env = environment(notice.language)
    wording = env.get_template(f"{notice.kind.value}.j2")
    subject = " ".join(
        typeset(line.strip(), notice.language) for line in render_block(wording, "subject", context).splitlines() if line.strip()
    )
    if not subject or any(unicodedata.category(c).startswith("C") for c in subject):
        raise ValueError(f"the {notice.kind.value} subject must be one line of text, not {subject!r}")
    paragraphs = _paragraphs(render_block(wording, "message", context))
    text = typeset(env.get_template("layout.txt.j2").render(context, subject=subject, paragraphs=paragraphs), notice.language)
    html = typeset(env.get_template("layout.html.j2").render(context, subject=subject, paragraphs=paragraphs), notice.language)
    attachments: tuple[Attachment, ...] = ()
    if notice.kind == NoticeKind.INVOICE_ISSUED:
        pdf = invoice_pdf(notice, payee)
        attachments = (Attachment(f"invoice-{notice.invoice_id}.pdf", "application/pdf", pdf),)
    return RenderedNotice(subject=subject, text=text, html=html, attachments=attachments)


def _paragraphs(message: str) -> list[list[str]]:
    """Blank lines separate paragraphs; a paragraph keeps its line breaks (e.g. a list of instalments)."""
    blocks = (block.strip() for block in re.split(r"\n\s*\n", message))
    return [[line.strip() for line in block.splitlines()] for block in blocks if block]




def _require_facts(notice: NoticeRequest) -> None:
    kind = notice.kind
    problem = None
    if kind == NoticeKind.ULTIMATUM and (notice.suspension_at is None or notice.suspension_at.tzinfo is None):
        problem = "an ultimatum names the suspension moment: suspension_at (with its time zone) is required"
    elif kind == NoticeKind.RECEIPT and (notice.payment_minor <= 0 or not notice.detail):
        problem = "a receipt states the payment: payment_minor and detail (the payment id) are required"
    elif kind == NoticeKind.DISPUTE_RESOLVED and notice.detail not in ("upheld", "rejected"):
        problem = f"detail must be the outcome 'upheld' or 'rejected', not {notice.detail!r}"
    elif kind == NoticeKind.PLAN_AGREED and not notice.instalments:
        problem = "a payment plan notice lists the instalments: instalments is required"
    elif kind == NoticeKind.INSTALMENT_MISSED and not 1 <= (notice.missed_instalment or 0) <= len(notice.instalments):
        problem = "missed_instalment must number one of the instalments (from 1)"
    if problem:
        raise IncompleteNotice(f"{kind.value} notice for invoice {notice.invoice_id}: {problem}")
