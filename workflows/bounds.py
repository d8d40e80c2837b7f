"""Bounds on every date and duration a caller gives.

Two tiers. The fixed ones (``BoundedDate``, ``BoundedMoment``, ``BoundedOffset``) are part of the
models, so they hold everywhere, the workflow included, and never depend on a clock: a date far
enough from any real one to overflow a timer or a projection never validates. The window around
today (``DateWindow``) needs a clock, so only the edge (the API, the CLI, the payment webhook)
applies it, with its own ``now``; workflow code never does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

if TYPE_CHECKING:
    from workflows.models import Invoice, Payment, PaymentPlan

EARLIEST_YEAR, LATEST_YEAR = 2000, 2099
MAX_OFFSET = timedelta(days=5 * 366)  # a stage, a review interval: at most five years


def _in_years(value: date) -> date:
    # the year alone: a moment's UTC offset cannot then push it out of range (year 1 +14:00 overflowed)
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"must lie in the years {EARLIEST_YEAR} to {LATEST_YEAR}, not {value.isoformat()}")
    return value


def _short(value: timedelta) -> timedelta:
    if abs(value) > MAX_OFFSET:
        raise ValueError(f"must be at most {MAX_OFFSET.days} days either way, not {value.days} days")
    return value


BoundedDate = Annotated[date, AfterValidator(_in_years)]
BoundedMoment = Annotated[datetime, AfterValidator(_in_years)]
BoundedOffset = Annotated[timedelta, AfterValidator(_short)]

Problems = list[tuple[tuple[str | int, ...], str]]
"""``(field path, message)`` of each value out of bounds, e.g. ``(("instalments", 0, "due_date"), "...")``."""


@dataclass(frozen=True)
class DateWindow:
    """What the edge accepts now: dates within ``days`` of today, moments no later than ``now`` plus ``skew``
    (clocks differ) and no earlier than ``days`` before it."""

    now: datetime
    days: int
    skew: timedelta = timedelta(minutes=5)

    def _date(self, path: tuple[str | int, ...], value: date) -> Problems:
        today = self.now.date()
        if abs((value - today).days) <= self.days:
            return []
        return [(path, f"must lie within {self.days} days of today ({today.isoformat()}), not {value.isoformat()}")]

    def invoice(self, invoice: Invoice) -> Problems:
        """The issue and due dates out of the window."""
        return self._date(("issue_date",), invoice.issue_date) + self._date(("due_date",), invoice.due_date)

    def plan(self, plan: PaymentPlan) -> Problems:
        """The instalment dates out of the window."""
        return [p for n, i in enumerate(plan.instalments) for p in self._date(("instalments", n, "due_date"), i.due_date)]

    def payment(self, payment: Payment, issued: date | None = None) -> Problems:
        """``received_at`` in the future (beyond the skew), too long ago, or before the invoice was ``issued``."""
        received = payment.received_at
        if received is None:
            return []
        at = received if received.tzinfo else received.replace(tzinfo=self.now.tzinfo)
        if at > self.now + self.skew:
            return [(("received_at",), f"must not be in the future: {received.isoformat()} is after {self.now.isoformat()}")]
        if at < self.now - timedelta(days=self.days):
            return [(("received_at",), f"must lie within {self.days} days of now, not {received.isoformat()}")]
        if issued is not None and at.date() < issued:
            return [(("received_at",), f"must not be before the invoice's issue date {issued.isoformat()}")]
        return []
