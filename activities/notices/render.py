"""Turns a ``NoticeRequest`` into an e-mail: subject and plain-text body from reviewed templates only."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formataddr
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined

from workflows.models import NoticeKind, NoticeRequest, format_money

SUBJECTS = {
    NoticeKind.INVOICE_ISSUED: "Invoice {id}",
    NoticeKind.COURTESY: "Invoice {id} falls due soon",
    NoticeKind.REMINDER: "Friendly reminder: invoice {id}",
    NoticeKind.WARNING: "Overdue: invoice {id}",
    NoticeKind.LATE_FEE: "Late fee charged: invoice {id}",
    NoticeKind.ULTIMATUM: "Final notice before suspension: invoice {id}",
    NoticeKind.SUSPENDED: "Service suspended: invoice {id}",
    NoticeKind.RESTORED: "Service restored: invoice {id}",
    NoticeKind.RECEIPT: "Payment received: invoice {id}",
    NoticeKind.PLAN_AGREED: "Payment plan agreed: invoice {id}",
    NoticeKind.INSTALMENT_MISSED: "Instalment missed: invoice {id}",
    NoticeKind.DISPUTE_OPENED: "We are looking into invoice {id}",
    NoticeKind.DISPUTE_RESOLVED: "Your query about invoice {id} is resolved",
    NoticeKind.AGENCY_HANDOVER: "Invoice {id} handed to collection agency",
    NoticeKind.LEGAL_REVIEW: "Legal review: invoice {id}",
}

_templates = Environment(
    loader=PackageLoader("activities.notices", "templates"),
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)


def render_notice(
    notice: NoticeRequest, *, sender: str, message_id: str, payee: str, payment_instructions: str
) -> EmailMessage:
    """Build the message; every value comes from the validated request or settings, never free text."""
    suspension_at = ""
    if notice.suspension_at:
        local = notice.suspension_at.astimezone(ZoneInfo(notice.time_zone))
        suspension_at = f"{local:%Y-%m-%d %H:%M} ({notice.time_zone})"
    body = _templates.get_template("notice.en.txt.j2").render(
        n=notice,
        money=lambda minor: format_money(minor, notice.currency),
        suspension_at=suspension_at,
        payee=payee,
        payment_instructions=payment_instructions,
    )
    message = EmailMessage()
    message["Subject"] = SUBJECTS[notice.kind].format(id=notice.invoice_id)
    message["From"] = sender
    message["To"] = formataddr((notice.to_name, str(notice.to_email)))
    message["Message-ID"] = message_id
    message["X-Dunning-Step"] = notice.idempotency_key
    message.set_content(body)
    return message
