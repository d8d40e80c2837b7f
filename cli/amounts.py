"""Amounts as people type them (``125.50``) into minor units, and the error a command reports for bad input."""

from __future__ import annotations

import re
from decimal import Decimal

from workflows.models import minor_units_per_major

AMOUNT = re.compile(r"[0-9]+(\.[0-9]+)?")


class CliError(Exception):
    """A problem with what the user asked for; ``str()`` is the one-line message."""


def check_amount_syntax(amount: str, option: str, allow_zero: bool = False) -> None:
    """A plain decimal number, greater than 0 unless ``allow_zero``."""
    if not AMOUNT.fullmatch(amount):
        raise CliError(f"{option} must be a plain decimal number such as 125.50, not {amount!r}")
    if not allow_zero and Decimal(amount) == 0:
        raise CliError(f"{option} must be greater than 0")


def to_minor(amount: str, currency: str, option: str = "amount", allow_zero: bool = False) -> int:
    """``'125.50', 'RON'`` -> ``12550``; more decimals than the currency has is an error."""
    check_amount_syntax(amount, option, allow_zero)
    per_major = minor_units_per_major(currency)
    minor = Decimal(amount) * per_major
    if minor != minor.to_integral_value():
        digits = len(str(per_major)) - 1
        allowed = f"{digits} decimal{'s' if digits != 1 else ''}" if digits else "no decimals"
        raise CliError(f"{option} {amount} has more decimals than {currency} allows ({allowed})")
    return int(minor)
