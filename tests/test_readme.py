"""The README is short, links every doc, shows the states the ladder table draws, and its quick tour
runs, command by command, against ``make demo``'s stack."""

import asyncio
import json
import re
import subprocess
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from docs.state_diagram import README, block_in, generated_block, with_block
from tests.dev_stacks import dev_stack
from workflows.models import InvoiceState

ROOT = README.parent
MAX_LINES = 250
TOUR_TOKENS = '{"dev-ops-token": "ops"}'


def test_the_readme_shows_the_state_diagram_the_ladder_table_draws():
    pytest.importorskip("workflows.ladder")
    assert block_in(README.read_text()) == generated_block(), "run: python -m docs.state_diagram --write"


def test_the_readme_picture_names_every_state_an_invoice_can_be_in():
    block = block_in(README.read_text())
    assert block.startswith("```mermaid\nstateDiagram-v2\n") and block.endswith("\n```")
    missing = [state.value for state in InvoiceState if not re.search(rf"\b{state.value}\b", block)]
    assert not missing, f"the picture leaves out {missing}"


def test_redrawing_replaces_only_what_stands_between_the_markers():
    text = "intro\n<!-- states:begin -->\nold picture\n<!-- states:end -->\noutro\n"
    redrawn = with_block(text, "new picture")
    assert redrawn == "intro\n<!-- states:begin -->\nnew picture\n<!-- states:end -->\noutro\n"
    assert block_in(redrawn) == "new picture"
    assert with_block(redrawn, "new picture") == redrawn


@pytest.mark.parametrize(
    "text",
    [
        "no markers at all\n",
        "<!-- states:end -->\nbackwards\n<!-- states:begin -->\n",
        "<!-- states:begin -->\na\n<!-- states:end -->\n<!-- states:begin -->\nb\n<!-- states:end -->\n",
    ],
)
def test_a_readme_without_one_pair_of_markers_is_refused(text: str):
    with pytest.raises(ValueError, match="states:begin"):
        with_block(text, "picture")


def test_the_readme_is_short_and_links_every_doc():
    readme = README.read_text()
    assert len(readme.splitlines()) <= MAX_LINES, "move the detail to docs/ and link it"
    pages = [*(ROOT / "docs").glob("*.md"), ROOT / "bench" / "README.md"]
    docs = sorted(path.relative_to(ROOT).as_posix() for path in pages)
    assert docs, "no docs found"
    unlinked = [doc for doc in docs if f"]({doc})" not in readme]
    assert not unlinked, f"the README does not link {unlinked}"


def test_the_docs_link_only_to_files_that_exist():
    broken = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in [*(ROOT / "docs").glob("*.md"), ROOT / "bench" / "README.md"]
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text())
        if not (page.parent / target).exists()
    ]
    assert not broken, broken


def test_the_command_reports_a_stale_picture_and_redraws_it(tmp_path, monkeypatch, capsys):
    pytest.importorskip("workflows.ladder")
    from docs import state_diagram

    readme = tmp_path / "README.md"
    readme.write_text(with_block(README.read_text(), "```mermaid\nstateDiagram-v2\n    [*] --> issued\n```"))
    monkeypatch.setattr(state_diagram, "README", readme)
    assert state_diagram.main([]) == 1
    assert "out of date" in capsys.readouterr().err
    assert state_diagram.main(["--write"]) == 0
    assert block_in(readme.read_text()) == generated_block()
    assert state_diagram.main([]) == 0


def tour_commands(readme: str) -> list[str]:
    """Every command of the code blocks under "## Try it", in order; a trailing backslash joins lines."""
    section = readme.split("\n## Try it\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"^```\n(.*?)^```$", section, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip():
                commands.append(line.strip())
    return commands


def test_the_tour_is_found_and_starts_the_invoice_first():
    commands = tour_commands(README.read_text())
    assert commands[0].startswith(".venv/bin/dunning invoice start examples/invoice.json")
    assert sum(command.startswith("curl ") for command in commands) == 3
    assert commands[-1].startswith(".venv/bin/dunning invoice factored")


def examples_from_today(folder: Path) -> None:
    """``examples/`` in ``folder``, with the invoice issued today (in its zone) and its plan's dates moved as
    much: the tour then runs the same on any day (no stage falls due while it runs)."""
    (folder / "examples").mkdir()
    invoice = json.loads((ROOT / "examples" / "invoice.json").read_text())
    shift = datetime.now(ZoneInfo(invoice["time_zone"])).date() - date.fromisoformat(invoice["issue_date"])
    for field in ("issue_date", "due_date"):
        invoice[field] = (date.fromisoformat(invoice[field]) + shift).isoformat()
    (folder / "examples" / "invoice.json").write_text(json.dumps(invoice))
    plan = json.loads((ROOT / "examples" / "payment-plan.json").read_text())
    for instalment in plan["instalments"]:
        instalment["due_date"] = (date.fromisoformat(instalment["due_date"]) + shift).isoformat()
    (folder / "examples" / "payment-plan.json").write_text(json.dumps(plan))


async def test_every_tour_command_succeeds_in_order_against_the_demo_stack(tmp_path):
    """Run as written, in a folder with the repository's ``.venv`` and the examples; only the API's port
    is the test's own instead of 8000."""
    examples_from_today(tmp_path)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    async with dev_stack(demo_unit=timedelta(minutes=1), DUNNING_API_TOKENS=TOUR_TOKENS) as stack:
        for command in tour_commands(README.read_text()):
            command = command.replace("127.0.0.1:8000", f"127.0.0.1:{stack.env['DUNNING_API_PORT']}")
            result = await asyncio.to_thread(
                subprocess.run, ["bash", "-c", command], cwd=tmp_path, env=stack.process_env(),
                capture_output=True, text=True, timeout=120,
            )
            assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
            if command.startswith(".venv/bin/dunning invoice status INV-2026-0042 --json"):
                status = json.loads(result.stdout)
                assert (status["state"], status["balance_minor"]) == ("payment_plan", 1_185_000)
