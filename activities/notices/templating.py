"""Jinja2 for notices: one environment per language, the client's locale formats, the shared wording."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_time, get_timezone_name
from babel.numbers import format_currency, format_percent, get_currency_precision
from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape

from activities.notices.content import Payee
from activities.notices.i18n import locale_for, translations
from workflows import creditor_reference
from workflows.models import NoticeRequest


@cache
def environment(language: str) -> Environment:
    """Templates in ``language``: undefined values and untranslated messages are errors; HTML is escaped."""
    env = Environment(
        loader=PackageLoader("activities.notices", "templates"),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False, default=False),
        extensions=["jinja2.ext.i18n", "jinja2.ext.do"],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


@dataclass(frozen=True)
class LocalFormat:
    """Money, dates and moments as the client's locale writes them, in the client's time zone."""

    locale: Locale
    zone: ZoneInfo
    currency: str

    def money(self, minor: int) -> str:
        """Minor units in the locale's currency format, exact (``Decimal``, never float)."""
        exact = Decimal(minor).scaleb(-get_currency_precision(self.currency))
        return format_currency(exact, self.currency, locale=self.locale)

    def long_date(self, value: date | datetime) -> str:
        """The long date; a moment counts on the client's calendar."""
        if isinstance(value, datetime):
            value = self._local(value).date()
        return format_date(value, format="long", locale=self.locale)

    def moment(self, value: datetime) -> str:
        """Long date and time of day in the client's zone, with the zone's name."""
        local = self._local(value)
        joined = str(self.locale.datetime_formats["long"]).replace("'", "")  # e.g. "{1}, {0}"
        time_of_day = format_time(local, "short", locale=self.locale)
        when = joined.replace("{1}", self.long_date(local)).replace("{0}", time_of_day)
        return f"{when} ({get_timezone_name(local, width='long', locale=self.locale)})"

    def percent(self, value: Decimal) -> str:
        """``Decimal('1.5')`` -> ``'1,5 %'`` (ro): every digit kept."""
        return format_percent(value / 100, locale=self.locale, decimal_quantization=False)

    def _local(self, value: datetime) -> datetime:
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(self.zone)


def notice_context(notice: NoticeRequest, payee: Payee) -> dict[str, Any]:
    """What every template sees: the notice ``n``, the ``payee``, the locale's formatters, and
    ``common``: ``common.j2`` evaluated for this notice (labels, invoice facts, shared sentences), and the
    invoice's ISO 11649 ``payment_reference`` (``RF…``, in groups of four) that bank statements are matched by."""
    fmt = LocalFormat(locale_for(notice.language, notice.country), ZoneInfo(notice.time_zone), notice.currency)
    context: dict[str, Any] = {
        "n": notice,
        "payee": payee,
        "lang": notice.language,
        "money": fmt.money,
        "date": fmt.long_date,
        "moment": fmt.moment,
        "percent": fmt.percent,
        "payment_reference": creditor_reference.printed(creditor_reference.for_invoice(notice.invoice_id)),
    }
    context["common"] = environment(notice.language).get_template("common.j2").make_module(context)
    return context


def render_block(template: Template, block: str, context: dict[str, Any]) -> str:
    """One block of a template, rendered on its own."""
    return "".join(template.blocks[block](template.new_context(context)))


# a sentence ending on a value that ends in a full stop ("150,00 лв.", "31 октомври 2025 г.") keeps one stop
_DOUBLE_STOP = re.compile(r"(?<!\.)\.\.(?!\.)")
# Italian elides the article before a day that starts with a vowel: l'8, dell'11, all'1
_ITALIAN_ELISION = re.compile(r"\b(il|del|al|dal|nel|sul) (1|8|11)(?= )")
_ELIDED = {"il": "l'", "del": "dell'", "al": "all'", "dal": "dall'", "nel": "nell'", "sul": "sull'"}


def typeset(line: str, language: str) -> str:
    """What translations cannot know in advance, once values are in: one full stop, Italian elision."""
    line = _DOUBLE_STOP.sub(".", line)
    if language == "it":
        line = _ITALIAN_ELISION.sub(lambda m: _ELIDED[m.group(1)] + m.group(2), line)
    return line
