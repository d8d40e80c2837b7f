"""Statutory late-payment interest as pure arithmetic: reference rates per half-year, and the days between two dates.

The model of the EU Late Payment Directive (2011/7/EU): simple interest, day by day, on the unpaid
principal, at the central bank's reference rate for the half-year plus a margin of at least 8 points.
Rates come from the rates file ops keep (``activities.interest_rates``), through an activity whose
answer the workflow keeps (``InterestState.rates``), never from this code. Days count as actual/365;
the sum over the rate periods is rounded half up to the minor unit once per posting (docs/interest.md).
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from workflows.models import Currency, NonNegativeMinor, Strict

DAYS_IN_YEAR = 365  # actual/365 (fixed): a day is 1/365 of the yearly rate, leap years included
_HALF_YEAR = re.compile(r"^(\d{4})-H([12])$")


def _half_year_name(value: str) -> str:
    match = _HALF_YEAR.match(value)
    if not match or not 1900 <= int(match.group(1)) <= 2200:
        raise ValueError(f"half-year {value!r} must read YYYY-H1 (January to June) or YYYY-H2 (July to December)")
    return value


HalfYear = Annotated[str, AfterValidator(_half_year_name)]


def half_year_of(day: date) -> str:
    """``2026-H2`` for any day from 1 July to 31 December 2026."""
    return f"{day.year}-H{1 if day.month <= 6 else 2}"


def half_year_start(name: str) -> date:
    year, half = name.split("-H")
    return date(int(year), 1 if half == "1" else 7, 1)


def next_half_year_start(day: date) -> date:
    return date(day.year, 7, 1) if day.month <= 6 else date(day.year + 1, 1, 1)


class ReferenceRate(Strict):
    """The central bank's reference rate that applies to one half-year, with when it was set and who published it."""

    half_year: HalfYear
    reference_percent: Annotated[Decimal, Field(ge=-10, le=100, max_digits=7, decimal_places=4)]
    set_on: date = Field(description="the date the rate took effect (the Directive: in force on the half-year's first day)")
    source: str = Field(min_length=1, max_length=300, description="who published it, where")


class CurrencyRates(Strict):
    """What the rates file says for one currency: the recovery-cost compensation and the reference rates."""

    compensation_minor: NonNegativeMinor | None = Field(
        default=None, description="the Directive's 40 EUR, or its equivalent in this currency (minor units)"
    )
    rates: list[ReferenceRate] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _one_rate_per_half_year(self) -> CurrencyRates:
        seen = [r.half_year for r in self.rates]
        doubled = sorted({h for h in seen if seen.count(h) > 1})
        if doubled:
            raise ValueError(f"more than one rate for half-year(s) {', '.join(doubled)}")
        return self

    def rate_for(self, half_year: str) -> ReferenceRate | None:
        return next((r for r in self.rates if r.half_year == half_year), None)


class InterestRatesRequest(Strict):
    """Which currency's rates the invoice needs (the ``interest_rates`` local activity)."""

    currency: Currency


class InterestPeriod(Strict):
    """Days of one posting at one rate; ``rate_percent`` None: the rates file had no rate, so nothing accrued."""

    first_day: date
    last_day: date
    days: int = Field(ge=1)
    reference_percent: Decimal | None
    rate_percent: Decimal | None = Field(description="reference rate plus the policy's margin")
    source: str


class InterestState(BaseModel):
    """The invoice's interest: where accrual stands, what was posted, the rates the activity answered."""

    model_config = ConfigDict(extra="forbid")

    accrues_from: date | None = Field(default=None, description="the first day not yet posted; None: not started")
    posted_minor: int = 0
    postings: int = 0
    rates: CurrencyRates | None = Field(default=None, description="as the interest_rates activity last answered")
    rates_asked_on: date | None = None
    last_rate_percent: Decimal | None = None
    last_day_posted: date | None = None


class Accrual(Strict):
    """Interest on one principal over consecutive days, split where the rate changes."""

    amount_minor: int
    periods: list[InterestPeriod]


def accrue(principal_minor: int, first_day: date, end: date, margin: Decimal, rates: CurrencyRates | None) -> Accrual:
    """Interest on ``principal_minor`` for the days from ``first_day`` up to ``end`` (exclusive).

    Each half-year at its reference rate plus ``margin``; a half-year without a rate accrues nothing.
    The exact sum is rounded half up to the minor unit.
    """
    periods: list[InterestPeriod] = []
    exact = Decimal(0)
    day = first_day
    while day < end:
        stop = min(end, next_half_year_start(day))
        days = (stop - day).days
        rate = rates.rate_for(half_year_of(day)) if rates else None
        if rate is None:
            periods.append(
                InterestPeriod(
                    first_day=day, last_day=stop - timedelta(days=1), days=days, reference_percent=None,
                    rate_percent=None, source=f"no reference rate for {half_year_of(day)} in the rates file",
                )
            )
        else:
            percent = rate.reference_percent + margin
            exact += Decimal(principal_minor) * percent / 100 * days / DAYS_IN_YEAR
            periods.append(
                InterestPeriod(
                    first_day=day, last_day=stop - timedelta(days=1), days=days,
                    reference_percent=rate.reference_percent, rate_percent=percent, source=rate.source,
                )
            )
        day = stop
    amount = int(max(exact, Decimal(0)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return Accrual(amount_minor=amount if principal_minor > 0 else 0, periods=periods)
