"""Decoding the payment signal: every signal is taken (none can fail a workflow task) and judged here.

A signal's arguments arrive undecoded (``RawValue``), so a malformed payment is turned into a
rejection with its reason and what was sent, never lost and never a task failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from temporalio import workflow
from temporalio.common import RawValue

from workflows.models import Payment
from workflows.outbox import one_line

PAYMENT_SIGNAL = "payment_received"


@dataclass(frozen=True)
class Malformed:
    """A payment signal that carries no payment: why, and what it carried (as text the event log can keep)."""

    reason: str
    sent: str


def decode_payment(args: Sequence[RawValue]) -> Payment | Malformed:
    """The one ``Payment`` a payment signal should carry, or why it does not."""
    if len(args) != 1:
        carried = f"{len(args)} arguments, not one payment" if args else "no payment"
        return Malformed(f"malformed payment: the signal carried {carried}", " | ".join(map(raw_text, args)))
    raw = args[0]
    try:
        payment = workflow.payload_converter().from_payload(raw.payload, Payment)
    except Exception as err:  # noqa: BLE001 - any decoding failure is a rejected payment, not a task failure
        return Malformed(f"malformed payment: {one_line(err)}", raw_text(raw))
    if not isinstance(payment, Payment):  # a null or binary payload decodes to None or bytes, unchecked
        return Malformed(f"malformed payment: not a payment object but {type(payment).__name__}", raw_text(raw))
    return payment


def raw_text(raw: RawValue) -> str:
    """A raw argument as text, cut to 2,000 characters."""
    return raw.payload.data.decode("utf-8", errors="replace")[:2000]


def storable(text: str) -> str:
    """Untrusted text as the event log can keep it: PostgreSQL refuses NUL in text and jsonb."""
    return text.replace("\x00", "\ufffd")
