"""What the browser test's fixtures and tests share (no fixtures here: see conftest.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# notebook -> (controls, moves), and the session's times; printed at the end of the run
RESULTS: dict[str, object] = {}


def unavailable(reason: str) -> None:
    """Skip on a learner's machine; fail in CI, where the browser test must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def widget_notebooks() -> list[Path]:
    """Every notebook under notebooks/ whose stored outputs contain a widget view."""
    found = []
    for path in sorted(NOTEBOOKS.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        nb = json.loads(path.read_text(encoding="utf-8"))
        if any(WIDGET_VIEW in out.get("data", {}) for cell in nb["cells"]
               if cell["cell_type"] == "code" for out in cell.get("outputs", [])):
            found.append(path)
    return found
