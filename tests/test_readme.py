"""The README is short, links every doc, and shows the states the ladder table draws."""

import re

import pytest

from docs.state_diagram import README, block_in, generated_block, with_block
from workflows.models import InvoiceState

ROOT = README.parent
MAX_LINES = 250


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
