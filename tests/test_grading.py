"""The nbgrader round trip: tag, build the course, release, autograde a solved and an unsolved copy.

For every chapter found by glob (``teach/nbgrader_release.py``): the student version nbgrader
generates has the chapter's own stubs and checker cells (no solution, no hidden test), a copy
filled with the solutions notebook's code gets full marks, and the unsolved release gets zero.

To keep CI short, the course is built with ``--exercises-only``: each notebook is the solutions
notebook's set-up (imports, model loading) plus the chapter's exercise section, so chapters 05
and 06 are not re-run in full (their full run is nbval's job); the graded cells are the same.
"""

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location("nbgrader_release",
                                               ROOT / "teach" / "nbgrader_release.py")
release = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(release)

CHAPTERS = release.chapters()


def _src(cell: dict) -> str:
    return release._src(cell)


def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    # nbgrader runs `alembic` (its gradebook's migrations) from PATH: the venv's bin first
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path, PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _graded(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if "nbgrader" in c.get("metadata", {})]


def test_every_chapter_is_tagged_and_tagging_is_idempotent():
    assert len(CHAPTERS) >= 7
    for path in CHAPTERS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        again = json.loads(json.dumps(nb))
        n = release.tag_notebook(again, path.stem)
        assert again == nb, f"{path.name}: not tagged; run python teach/nbgrader_release.py tag"
        graded = _graded(nb)
        checks = [c for c in graded if c["metadata"]["nbgrader"]["grade"]]
        assert len(checks) == n >= 1
        ids = [c["metadata"]["nbgrader"]["grade_id"] for c in graded]
        assert len(set(ids)) == len(ids)
        for cell in checks:  # the checker alone: the learner's run shows feedback, no traceback
            assert release._checker_line(_src(cell)) == 0 and "assert" not in _src(cell)
            assert cell["metadata"]["nbgrader"]["points"] > 0


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    course = tmp_path_factory.mktemp("course")
    built = release.build(course, [], exercises_only=True)
    assert built == [p.stem for p in CHAPTERS]
    for name in built:
        _nbgrader(course, "generate_assignment", name, "--force")
        student = json.loads((course / "release" / name / f"{name}.ipynb").read_text())
        source = json.loads((course / "source" / name / f"{name}.ipynb").read_text())
        for who, fill in (("unsolved", False), ("solved", True)):
            nb = json.loads(json.dumps(student))
            if fill:  # what a student who solved it hands in: the solution, without markers
                answers = {c["metadata"]["nbgrader"]["grade_id"]: _src(c)
                           for c in _graded(source) if c["metadata"]["nbgrader"]["solution"]}
                for cell in _graded(nb):
                    meta = cell["metadata"]["nbgrader"]
                    if meta["solution"]:
                        text = re.sub(r"^\s*### (BEGIN|END) SOLUTION\n", "",
                                      answers[meta["grade_id"]] + "\n", flags=re.M)
                        release._set_src(cell, text)
            dest = course / "submitted" / who / name / f"{name}.ipynb"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(json.dumps(nb), encoding="utf-8")
    for name in built:
        _nbgrader(course, "autograde", name, "--force")
    _nbgrader(course, "export")
    return course


def test_the_student_version_is_the_chapters_exercises(course):
    for path in CHAPTERS:
        chapter = {c["metadata"]["nbgrader"]["grade_id"]: _src(c)
                   for c in _graded(json.loads(path.read_text(encoding="utf-8")))}
        student = json.loads((course / "release" / path.stem / path.name).read_text())
        text = json.dumps(student)
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS", "assert "):
            assert marker not in text, f"{path.name}: the student version shows {marker!r}"
        got = {c["metadata"]["nbgrader"]["grade_id"]: _src(c) for c in _graded(student)}
        assert got.keys() == chapter.keys()
        for grade_id, stub in chapter.items():
            if stub.lstrip().startswith("def ") or grade_id.endswith("_check"):
                assert got[grade_id] == stub, grade_id  # the same stub and checker as the chapter
            else:  # a value stub keeps its line, then nbgrader's stub
                assert got[grade_id].splitlines() == [stub, release.STUB], grade_id


def test_autograde_gives_full_marks_to_solutions_and_zero_to_stubs(course):
    with open(course / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    scores = {(r["assignment"], r["student_id"]): (float(r["score"]), float(r["max_score"]))
              for r in rows}
    report = {k: v for k, v in sorted(scores.items())}
    print(report)
    for path in CHAPTERS:
        solved, top = scores[(path.stem, "solved")]
        unsolved, top_u = scores[(path.stem, "unsolved")]
        assert top == top_u > 0
        assert solved == top, f"{path.stem}: solved copy scored {solved} of {top}"
        assert unsolved == 0, f"{path.stem}: unsolved stubs scored {unsolved}"
