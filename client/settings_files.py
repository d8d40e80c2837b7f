"""The TOML files ops keep (policies, channels, equipment, customers, interest rates): read and validated in one way,
each error naming the file and what is wrong where, in one line a log or a terminal shows whole."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

Loaded = TypeVar("Loaded")


class SettingsFileError(ValueError):
    """A settings file that cannot be used: which file, and what is wrong where."""


def problems_text(err: ValidationError, document: dict[str, Any]) -> str:
    """Every problem as ``where: what``, on one line."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg'].removeprefix('Value error, ')}"
        for e in err.errors(include_url=False)
    )


def load_toml(
    path: Path,
    what: str,
    validate: Callable[[dict[str, Any]], Loaded],
    error: type[SettingsFileError] = SettingsFileError,
    describe: Callable[[ValidationError, dict[str, Any]], str] = problems_text,
) -> Loaded:
    """The file at ``path`` (the ``what`` of messages, e.g. ``policies file``), parsed and passed to ``validate``;
    ``error`` says why it cannot be read, is not TOML, or does not validate (``describe`` lists the problems)."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise error(f"cannot read the {what} {path}: {reason}") from None
    except tomllib.TOMLDecodeError as err:
        raise error(f"the {what} {path} is not valid TOML: {err}") from None
    try:
        return validate(document)
    except ValidationError as err:
        raise error(f"the {what} {path} is invalid: {describe(err, document)}") from None
