"""How the ``dunning`` command reports a usage error: one line saying what to fix, exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

try:  # typer 0.24 and later carry their own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer on click
    from click import exceptions as click_errors  # type: ignore[no-redef]

CONTEXT = {"help_option_names": ["-h", "--help"]}


class OneLineUsageErrors(TyperGroup):
    """A group that ends a usage error (unknown option, bad choice, missing argument) as
    ``error: <what> (see `dunning <command> -h`)`` on stderr with exit code 2, instead of a box of usage."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            result = super().main(
                args, prog_name, complete_var, standalone_mode=False, windows_expand_args=windows_expand_args, **extra
            )
        except click_errors.NoArgsIsHelpError as err:
            typer.echo(err.ctx.get_help() if err.ctx else err.format_message())
            result = 0
        except click_errors.ClickException as err:
            ctx = getattr(err, "ctx", None)
            hint = f" (see `{ctx.command_path} -h`)" if ctx is not None else ""
            message = " ".join(err.format_message().replace("Value error, ", "").split())
            typer.echo(f"error: {message}{hint}", err=True)
            result = err.exit_code
        except typer.Abort:
            typer.echo("error: interrupted", err=True)
            result = 130
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)
