"""The public-holiday lookup the sending window relies on (the real ``holidays`` package)."""

from datetime import date

from activities.calendar import public_holidays
from workflows.models import PublicHolidaysRequest


async def test_romanian_public_holidays_include_national_day_and_orthodox_easter():
    days = await public_holidays(PublicHolidaysRequest(country="RO", years=[2026, 2027]))
    assert date(2026, 12, 1) in days  # National Day
    assert date(2026, 4, 13) in days  # Orthodox Easter Monday 2026
    assert date(2027, 1, 24) in days  # Union Day
    assert date(2026, 12, 2) not in days
    assert days == sorted(days)


async def test_each_country_has_its_own_calendar():
    estonia = await public_holidays(PublicHolidaysRequest(country="EE", years=[2026]))
    assert date(2026, 2, 24) in estonia  # Independence Day
    assert date(2026, 12, 1) not in estonia


async def test_a_country_without_a_calendar_has_no_holidays():
    assert await public_holidays(PublicHolidaysRequest(country="TA", years=[2026])) == []
