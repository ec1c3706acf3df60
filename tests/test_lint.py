"""The linter is part of the test suite, so the README's test command (and CI) runs it.

Configuration: ``[tool.ruff]`` in pyproject.toml.  A suppression (``# noqa: CODE``) must name
its rule and say why on the same line; ruff's RUF100 reports the ones that suppress nothing.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed: pip install -e '.[dev]' -c constraints.txt"
    proc = subprocess.run([ruff, "check", "--no-cache", "--output-format=concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, ("ruff found problems (fix them or `ruff check --fix`):\n"
                                  f"{proc.stdout}{proc.stderr}")


def test_every_suppression_says_why() -> None:
    """``# noqa: X`` and ``# type: ignore[x]`` need a reason after them on the same line."""
    bare = []
    for path in sorted([*ROOT.glob("gqlearn/**/*.py"), *ROOT.glob("tests/**/*.py"),
                        *ROOT.glob("bench/*.py"), *ROOT.glob("teach/*.py"),
                        *ROOT.glob("book/*.py")]):
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            for match in re.finditer(r"#\s*(noqa(?::\s*[A-Z0-9, ]+)?"
                                     r"|type:\s*ignore(?:\[[\w\-, ]+\])?)(.*)$", line):
                reason = match.group(2).strip(" -—:()")
                if len(reason) < 3:
                    bare.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bare, "suppressions without a reason:\n" + "\n".join(bare)
