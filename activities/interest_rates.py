"""The rates file for statutory interest (``activities/data/interest_rates.toml``), read once at worker start.

The workflow asks for a currency's rates through the ``interest_rates`` local activity and keeps
the answer in its history, so a rate ops add or correct later never changes an invoice on replay.
"""

from __future__ import annotations

import logging
from datetime import date
from importlib.resources import files
from pathlib import Path

from pydantic import TypeAdapter
from temporalio import activity

from client.settings_files import SettingsFileError, load_toml
from workflows import contracts
from workflows.interest import CurrencyRates, InterestRatesRequest, half_year_of
from workflows.models import Currency

PACKAGED_RATES = Path(str(files("activities") / "data" / "interest_rates.toml"))
_TABLE = TypeAdapter(dict[Currency, CurrencyRates])
log = logging.getLogger(__name__)


class InterestRatesFileError(SettingsFileError):
    """The rates file cannot be used: what is wrong, and where."""


def load_interest_rates(path: Path) -> dict[str, CurrencyRates]:
    """Every currency's rates from ``path`` (TOML), validated; ``InterestRatesFileError`` names each problem."""
    return load_toml(path, "interest rates file", _TABLE.validate_python, InterestRatesFileError)


def missing_current_rates(table: dict[str, CurrencyRates], today: date) -> list[str]:
    """The currencies whose rates lack the half-year ``today`` falls in: interest on its days would not accrue."""
    current = half_year_of(today)
    return sorted(currency for currency, rates in table.items() if rates.rate_for(current) is None)


class InterestRateActivities(contracts.InterestRates):
    """The local activity that answers from the rates file the worker loaded."""

    def __init__(self, table: dict[str, CurrencyRates]) -> None:
        self.table = table

    @classmethod
    def load(cls, path: Path | None = None) -> InterestRateActivities:
        """From ``path``, or the packaged file (ECB rates for EUR); fails now if the file is malformed, and warns
        of each currency without a rate for the current half-year."""
        source = path or PACKAGED_RATES
        table = load_interest_rates(source)
        today = date.today()
        for currency in missing_current_rates(table, today):
            log.warning(
                "interest rates file %s has no %s rate for %s: statutory interest on its days does not accrue"
                " until ops add it", source, currency, half_year_of(today),
            )
        return cls(table)

    @activity.defn(name="interest_rates")
    async def interest_rates(self, request: InterestRatesRequest) -> CurrencyRates:
        """The currency's rates and compensation; none for a currency the file does not list."""
        return self.table.get(request.currency, CurrencyRates())
