"""The public-holiday calendar the sending window needs (the ``holidays`` package, read by an activity).

A calendar is outside data: a ``holidays`` upgrade may move a date, so the workflow asks once and
keeps the answer in its history instead of computing it on replay.
"""

from __future__ import annotations

from datetime import date

import holidays
from temporalio import activity

from workflows import contracts
from workflows.models import PublicHolidaysRequest


class CalendarActivities(contracts.Calendar):
    """The local activity that reads the ``holidays`` package."""

    @activity.defn(name="public_holidays")
    async def public_holidays(self, request: PublicHolidaysRequest) -> list[date]:
        """The country's public holidays in the requested years (none where the package has no calendar)."""
        try:
            calendar = holidays.country_holidays(request.country, years=request.years, categories=(holidays.PUBLIC,))
        except NotImplementedError:
            return []
        return sorted(calendar)


public_holidays = CalendarActivities().public_holidays
"""The activity as workers register it (it holds no state)."""
