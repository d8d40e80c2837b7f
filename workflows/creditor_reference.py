"""ISO 11649 structured creditor references (``RF…``): one per invoice, and checking the ones payers quote.

A reference is ``RF``, two check digits (ISO 7064 mod 97-10, as in IBANs) and up to 21 letters or
digits. Each invoice's reference is derived from its id alone (a hash, so any invoice id fits in
the 21 characters), so the notices can print it and a bank statement's line can be matched back
without storing anything.
"""

from __future__ import annotations

import hashlib
import string

_ALPHABET = string.digits + string.ascii_uppercase
_BODY_LENGTH = 15  # 36**15 ~ 2**77 references: no two invoices of a service meet


def _as_number(text: str) -> int:
    """Letters as two digits (A=10 … Z=35), digits as themselves, read as one decimal number."""
    return int("".join(str(_ALPHABET.index(char)) for char in text))


def with_check_digits(body: str) -> str:
    """``RF`` + check digits + ``body`` (1 to 21 letters or digits, case-insensitive)."""
    body = body.upper()
    if not 1 <= len(body) <= 21 or any(char not in _ALPHABET for char in body):
        raise ValueError(f"{body!r} is not 1 to 21 letters or digits")
    check = 98 - _as_number(body + "RF00") % 97
    return f"RF{check:02d}{body}"


def for_invoice(invoice_id: str) -> str:
    """The invoice's creditor reference: always the same for the same invoice id."""
    number = int.from_bytes(hashlib.sha256(invoice_id.encode()).digest(), "big")
    body = ""
    for _ in range(_BODY_LENGTH):
        number, digit = divmod(number, 36)
        body += _ALPHABET[digit]
    return with_check_digits(body)


def normalized(reference: str) -> str | None:
    """The reference without spaces and in capitals if it is a valid ``RF`` reference, else None."""
    compact = "".join(reference.split()).upper()
    if not (5 <= len(compact) <= 25 and compact.startswith("RF") and compact[2:4].isdigit()):
        return None
    if any(char not in _ALPHABET for char in compact):
        return None
    return compact if _as_number(compact[4:] + compact[:4]) % 97 == 1 else None


def printed(reference: str) -> str:
    """In groups of four, as printed on paper: ``RF18 5390 0754 7034``."""
    return " ".join(reference[i : i + 4] for i in range(0, len(reference), 4))
