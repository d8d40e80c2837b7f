"""What a rendered notice is made of, and the payee details (from settings) every notice states."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from workflows.models import Strict


def _one_line(text: str) -> str:
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text) or not text.strip():
        raise ValueError("must be one non-blank line of text without control characters")
    return text


def _https_url(url: str) -> str:
    parts = urlsplit(_one_line(url))
    if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in url):
        raise ValueError(f"payment link {url!r} must be an https URL")
    return url


def _iban(value: str) -> str:
    """Validate the checksum (ISO 13616 mod 97) and print in groups of four."""
    compact = re.sub(r"\s+", "", value).upper()
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}", compact):
        raise ValueError(f"{value!r} is not an IBAN")
    rearranged = compact[4:] + compact[:4]
    if int("".join(str(int(c, 36)) for c in rearranged)) % 97 != 1:
        raise ValueError(f"IBAN {value!r} has a wrong check digit")
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


OneLine = Annotated[str, Field(max_length=500), AfterValidator(_one_line)]


class Payee(Strict):
    """Who is paid and how (settings): stated on every notice and on the invoice PDF."""

    name: Annotated[OneLine, Field(max_length=200)]
    payment_instructions: OneLine | None = Field(
        default=None, description="printed as is in every language: keep it language-neutral (e.g. 'SWIFT: BTRLRO22')"
    )
    iban: Annotated[str, AfterValidator(_iban)] | None = None
    payment_link: Annotated[str, Field(max_length=2000), AfterValidator(_https_url)] | None = None


@dataclass(frozen=True)
class Attachment:
    """A file sent with a notice."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class RenderedNotice:
    """A notice ready for any channel: one-line subject, plain text, escaped HTML and attachments."""

    subject: str
    text: str
    html: str
    attachments: tuple[Attachment, ...] = ()
