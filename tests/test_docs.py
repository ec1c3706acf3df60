"""The glossary and references: every chapter links its terms' first use, and every link lands."""

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

_spec = importlib.util.spec_from_file_location("link_glossary", ROOT / "teach" / "link_glossary.py")
linker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(linker)

LINK = re.compile(r"\]\(\.\./docs/(\w+)\.md#([^)\s]+)\)")


def _anchors(page: str) -> set[str]:
    """Jupyter-style heading ids of a docs page (what the notebooks and the book use)."""
    text = (DOCS / f"{page}.md").read_text(encoding="utf-8")
    return {line.lstrip("#").strip().replace(" ", "-") for line in text.splitlines()
            if re.match(r"#{1,6} ", line)}


def _markdown(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def test_every_term_and_method_has_an_entry():
    glossary, references = _anchors("glossary"), _anchors("references")
    for _, doc, anchor in linker.TERMS:
        assert anchor in (glossary if doc == linker.GLOSSARY else references), anchor
    assert len(glossary) - 1 >= 40 and len(references) >= 25  # minus the page title
    text = (DOCS / "references.md").read_text(encoding="utf-8")
    for entry in text.split("\n### ")[1:]:  # authors, title, year, link
        assert re.search(r"\b(19|20)\d\d\b", entry) and "<http" in entry, entry.split("\n")[0]


def test_every_chapter_links_first_uses_and_every_link_lands():
    chapters = sorted(ROOT.glob("notebooks/*.ipynb"))
    assert chapters
    anchors = {"glossary": _anchors("glossary"), "references": _anchors("references")}
    for path in chapters:
        nb = json.loads(path.read_text(encoding="utf-8"))
        assert linker.link_notebook(nb) == [], (
            f"{path.name}: unlinked first uses; run python teach/link_glossary.py")
        links = LINK.findall(_markdown(path))
        assert len(links) >= 5, path.name
        assert len(set(links)) == len(links), f"{path.name}: a term linked twice"
        for page, anchor in links:
            assert anchor in anchors[page], f"{path.name}: no {anchor} in docs/{page}.md"


def test_docs_cross_links_land():
    for page in ("glossary", "references", "teaching"):
        text = (DOCS / f"{page}.md").read_text(encoding="utf-8")
        for target, anchor in re.findall(r"\]\((\w*)(?:\.md)?#([^)\s]+)\)", text):
            assert anchor in _anchors(target or page), f"{page}.md: #{anchor} ({target})"


CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _markdown_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


def test_every_chapter_is_sized_for_a_learner():
    """Each chapter (solutions excluded): the header, at most 2,000 words of prose and 200 per
    markdown cell, a Summary and Exercises.  A new chapter is checked without being listed."""
    assert len(CHAPTERS) >= 8
    for path in CHAPTERS:
        cells = _markdown_cells(path)
        words = [len(text.split()) for text in cells]
        assert sum(words) <= 2000 and max(words) <= 200, (path.name, sum(words), max(words))
        for part in ("**Prerequisites**", "**Time**", "**You will learn**", "**You will build**"):
            assert part in cells[0], (path.name, part)
        headings = {line.strip() for text in cells for line in text.splitlines()}
        assert {"## Summary", "## Exercises"} <= headings, path.name
