"""The README's picture of an invoice's states, drawn from the workflow's ladder table.

README.md holds, between its ``states`` markers, the Mermaid diagram that
``workflows.ladder.mermaid_state_diagram()`` returns for the default policy, fenced for GitHub to render::

    python -m docs.state_diagram           # exits 1 when the README's picture is out of date
    python -m docs.state_diagram --write   # redraws it
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN = "<!-- states:begin -->"
END = "<!-- states:end -->"


def generated_block() -> str:
    """The fenced Mermaid diagram the ladder table draws."""
    # imported here, not at the top: the README's own checks need this module, not the ladder
    from workflows.ladder import mermaid_state_diagram
    from workflows.models import DunningPolicy

    return f"```mermaid\n{mermaid_state_diagram(DunningPolicy.default()).strip()}\n```"


def block_in(text: str) -> str:
    """What stands between the markers, without the blank lines around it."""
    start, end = _bounds(text)
    return text[start:end].strip("\n")


def with_block(text: str, block: str) -> str:
    """``text`` with what stands between the markers replaced by ``block``."""
    start, end = _bounds(text)
    return f"{text[:start]}\n{block}\n{text[end:]}"


def _bounds(text: str) -> tuple[int, int]:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(END) < text.index(BEGIN):
        raise ValueError(f"the README needs one {BEGIN} line and, after it, one {END} line")
    return text.index(BEGIN) + len(BEGIN), text.index(END)


def main(argv: list[str] | None = None) -> int:
    """Check the README's picture against the ladder table, or redraw it with ``--write``."""
    parser = argparse.ArgumentParser(prog="python -m docs.state_diagram", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="redraw the picture in README.md")
    args = parser.parse_args(argv)
    text, block = README.read_text(), generated_block()
    if block_in(text) == block:
        print("README.md: the state diagram is up to date")
    elif args.write:
        README.write_text(with_block(text, block))
        print("README.md: state diagram redrawn from the ladder table")
    else:
        print("README.md: the state diagram is out of date; run python -m docs.state_diagram --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
