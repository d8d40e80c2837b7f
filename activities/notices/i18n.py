"""Languages of client notices: the locale, the message catalogs, and proof that they are complete.

English is the source language: its text is the msgids in the templates. Romanian, Bulgarian,
Estonian and Italian come from ``locale/<lang>/LC_MESSAGES/messages.po``, read at run time with
Babel; a message a catalog lacks raises :class:`MissingTranslation` instead of printing English.

After changing the wording of a template, update the catalogs and translate what is new::

    pybabel extract -F activities/notices/locale/babel.cfg -o activities/notices/locale/messages.pot \\
        --project=dunning --copyright-holder=dunning activities/notices/templates
    pybabel update -i activities/notices/locale/messages.pot -d activities/notices/locale --no-fuzzy-matching

``check_catalogs()`` (run by the tests, and cheap enough for a worker's start-up) fails until
every language translates every message.
"""

from __future__ import annotations

import gettext
import re
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from io import BytesIO
from pathlib import Path

from babel import Locale, localedata
from babel.core import get_global
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.plurals import get_plural
from babel.messages.pofile import read_po

from workflows.models import SUPPORTED_LANGUAGES

SOURCE_LANGUAGE = "en"
TRANSLATED_LANGUAGES = tuple(lang for lang in SUPPORTED_LANGUAGES if lang != SOURCE_LANGUAGE)

MessageId = str | tuple[str, ...]  # a msgid, or (singular, plural)
_PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


class MissingTranslation(LookupError):
    """A template used a message the language's catalog does not translate."""


class StrictTranslations(gettext.GNUTranslations):
    """A compiled catalog that raises on an untranslated message rather than falling back to English."""

    # set by ``GNUTranslations._parse``; typeshed's stub leaves them out
    plural: Callable[[int], int]
    _catalog: dict[str | tuple[str, int], str]

    def gettext(self, message: str) -> str:
        return self._translated(message, message)

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        return self._translated((msgid1, self.plural(n)), msgid1)

    def _translated(self, key: str | tuple[str, int], msgid: str) -> str:
        translated = self._catalog.get(key)
        if not translated:
            raise MissingTranslation(f"{self.info().get('language', '?')}: no translation of {msgid!r}")
        return translated


def _package_path(*parts: str) -> Path:
    return Path(str(resources.files("activities.notices").joinpath(*parts)))


def load_catalog(language: str) -> Catalog:
    """The parsed ``.po`` catalog of a translated language."""
    with _package_path("locale", language, "LC_MESSAGES", "messages.po").open("rb") as po:
        return read_po(po, locale=language, abort_invalid=True)


@cache
def translations(language: str) -> gettext.NullTranslations:
    """gettext translations for ``language``: the identity for English, strict for the others."""
    if language == SOURCE_LANGUAGE:
        return gettext.NullTranslations()
    if language not in TRANSLATED_LANGUAGES:
        raise ValueError(f"no notices in language {language!r}: use one of {', '.join(SUPPORTED_LANGUAGES)}")
    compiled = BytesIO()
    write_mo(compiled, load_catalog(language))
    compiled.seek(0)
    return StrictTranslations(compiled)


def locale_for(language: str, country: str | None) -> Locale:
    """The locale for dates and money: ``ro`` + ``RO`` -> ``ro_RO``; the language's home territory otherwise."""
    if country and localedata.exists(f"{language}_{country}"):
        return Locale(language, country)
    home = Locale.parse(get_global("likely_subtags")[language]).territory  # en -> en_Latn_US -> US
    return Locale(language, home)


def template_messages() -> dict[MessageId, list[str]]:
    """Every message the templates use, with the places (``file:line``) that use it."""
    with _package_path("locale", "babel.cfg").open() as mapping:
        methods, options = parse_mapping_cfg(mapping)  # the same extraction as ``pybabel extract``
    found: dict[MessageId, list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(_package_path("templates")), method_map=methods, options_map=options
    ):
        found.setdefault(message, []).append(f"{filename}:{lineno}")
    return found


def catalog_problems(catalog: Catalog, used: Iterable[MessageId]) -> list[str]:
    """Why ``catalog`` cannot serve the ``used`` messages; empty when it is complete and clean."""
    language = str(catalog.locale)
    problems = []
    expected_plural = get_plural(catalog.locale)
    if catalog.num_plurals != expected_plural.num_plurals or catalog.plural_expr != expected_plural.plural_expr:
        problems.append(f"{language}: Plural-Forms must be {expected_plural.plural_forms!r}")
    if catalog.fuzzy:
        problems.append(f"{language}: the catalog header is marked fuzzy")
    if catalog.obsolete:
        problems.append(f"{language}: {len(catalog.obsolete)} obsolete message(s); remove them")
    wanted = {(m if isinstance(m, str) else m[0]): m for m in used}
    for entry in catalog:
        if entry.id and (entry.id if isinstance(entry.id, str) else entry.id[0]) not in wanted:
            problems.append(f"{language}: {entry.id!r} is translated but no template uses it")
    for key, msgid in wanted.items():
        message = catalog.get(key)
        if message is None:
            problems.append(f"{language}: no translation of {msgid!r}")
            continue
        problems.extend(f"{language}: {msgid!r}: {problem}" for problem in _message_problems(message, msgid, catalog))
    return problems


def _message_problems(message: Message, msgid: MessageId, catalog: Catalog) -> list[str]:
    if message.fuzzy:
        return ["marked fuzzy"]
    if isinstance(msgid, str) != isinstance(message.id, str) or message.id != msgid:
        return [f"the catalog's msgid is {message.id!r}"]
    string = message.string
    forms: list[str | None] = [string] if string is None or isinstance(string, str) else list(string)
    if not isinstance(msgid, str) and len(forms) != catalog.num_plurals:
        return [f"{len(forms)} plural forms, the language has {catalog.num_plurals}"]
    placeholders = set(_PLACEHOLDER.findall(msgid if isinstance(msgid, str) else msgid[1]))
    problems = []
    for index, form in enumerate(forms):
        if not form or not form.strip():
            problems.append(f"form {index} is empty")
        elif set(_PLACEHOLDER.findall(form)) != placeholders:
            problems.append(f"form {index} uses {sorted(set(_PLACEHOLDER.findall(form)))}, not {sorted(placeholders)}")
    return problems


def check_catalogs() -> None:
    """Raise ``ValueError`` listing every message a language lacks (or gets wrong)."""
    used = template_messages()
    problems = [p for language in TRANSLATED_LANGUAGES for p in catalog_problems(load_catalog(language), used)]
    if problems:
        raise ValueError("incomplete notice translations:\n" + "\n".join(problems))
