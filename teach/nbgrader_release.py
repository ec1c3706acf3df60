"""Gradable exercises with nbgrader: tag the chapters, build a course directory.

Two commands, both finding the notebooks by glob (``notebooks/[0-9A-Z]*.ipynb``, each with its
``notebooks/solutions/<same name>``), so a new chapter needs no edit here:

``python teach/nbgrader_release.py tag``
    Writes nbgrader metadata into the chapters' exercise cells (re-runnable, idempotent): each
    learner stub becomes an *autograded answer* cell (``solution: true``, not locked) and each
    checker an *autograder test* cell (``grade: true``, locked, with points). A cell that holds
    both a stub line and its checker (``answer = None`` then ``check_x(answer)``) is split in two,
    its stored output kept on the checker. Nothing else in the chapter changes, so the committed
    outputs stay valid for nbval.

``python teach/nbgrader_release.py build COURSE_DIR [--exercises-only] [NAME ...]``
    Writes an nbgrader course directory: ``nbgrader_config.py`` and
    ``source/<chapter>/<chapter>.ipynb`` for every tagged chapter (or those named). The source
    version is the chapter with each answer cell's solution filled in from
    ``notebooks/solutions/`` between ``### BEGIN SOLUTION`` / ``### END SOLUTION``, and each
    checker cell followed by a hidden test
    (``### BEGIN HIDDEN TESTS`` / ``assert check_x(...)``). In the student version nbgrader
    makes from it (``nbgrader generate_assignment``) the answer cells are the chapter's stubs
    again and the checker cells show the same friendly feedback as the chapter; when
    ``nbgrader autograde`` runs, the hidden assert fails on a wrong answer, so the cell scores 0.

    ``--exercises-only`` keeps, of each chapter, only the solutions notebook's set-up cells (its
    imports, model loading) and the exercise section: grading then takes seconds instead of
    re-running a whole chapter (what tests/test_grading.py does).

Then, in COURSE_DIR: ``nbgrader generate_assignment 01_single_scale``, hand out
``release/01_single_scale/``, collect into ``submitted/<student>/01_single_scale/`` and run
``nbgrader autograde 01_single_scale`` and ``nbgrader export`` (see docs/teaching.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = NOTEBOOKS / "solutions"

CHECK = re.compile(r"^\s*(?:\w+\.)?check_\w+\(.*\)\s*$")
STUB = "...  # your code here"
POINTS_FUNCTION, POINTS_VALUE = 2, 1

CONFIG = '''\
# nbgrader configuration of the gqlearn course (written by teach/nbgrader_release.py).
c = get_config()  # noqa: F821 - nbgrader defines get_config() in its config files
c.CourseDirectory.course_id = "gqlearn"
# The stub a student sees in an answer cell: the chapter's own, which runs without an error.
c.ClearSolutions.code_stub = {"python": "...  # your code here"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
# Chapters 05 and 06 load real models; a chapter cell may take minutes on a small machine.
c.ExecutePreprocessor.timeout = 1200
'''


def _src(cell: dict) -> str:
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


def _set_src(cell: dict, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True)


def chapters() -> list[Path]:
    """Every chapter and appendix with a solutions notebook of the same name, sorted."""
    return sorted(p for p in NOTEBOOKS.glob("*.ipynb")
                  if (SOLUTIONS / p.name).exists() and ".ipynb_checkpoints" not in p.parts)


def _exercises_start(cells: list[dict]) -> int:
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "markdown" and re.search(r"^## Exercises", _src(cell), re.M):
            return i
    raise SystemExit("no '## Exercises' heading")


def _checker_line(text: str) -> int | None:
    """Index of the (last) checker-call line in a code cell's text, or None."""
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if CHECK.match(line)]
    return hits[-1] if hits else None


def _nbg(grade_id: str, *, solution: bool, points: int = 0) -> dict:
    meta = {"grade": not solution, "grade_id": grade_id, "locked": not solution,
            "schema_version": 3, "solution": solution}
    if not solution:
        meta["points"] = points
    return meta


def _new_code_cell(text: str, metadata: dict | None = None) -> dict:
    cell = {"cell_type": "code", "execution_count": None, "metadata": metadata or {},
            "outputs": [], "source": []}
    _set_src(cell, text)
    return cell


def tag_notebook(nb: dict, stem: str) -> int:
    """Split combined stub+checker cells and write nbgrader metadata; return #exercises."""
    cells = nb["cells"]
    start = _exercises_start(cells)
    i, k = start, 0
    last_check = start
    while i < len(cells):
        cell = cells[i]
        if cell["cell_type"] != "code":
            i += 1
            continue
        text = _src(cell)
        line = _checker_line(text)
        if line is None:
            i += 1
            continue
        lines = text.splitlines()
        if line > 0:  # stub lines above the checker: split them into their own answer cell
            answer = _new_code_cell("\n".join(lines[:line]),
                                    {k_: v for k_, v in cell["metadata"].items()
                                     if k_ != "nbgrader"})
            answer["execution_count"] = cell.get("execution_count")  # it ran, with no output
            if "id" in cell:  # nbformat 4.5 cell ids: unique within the notebook
                answer["id"] = f"{stem}-ex{k + 1}-answer"[-64:]
            _set_src(cell, "\n".join(lines[line:]))
            cells.insert(i, answer)
            i += 1
        k += 1
        answers = [j for j in range(last_check + 1, i) if cells[j]["cell_type"] == "code"]
        if not answers:
            raise SystemExit(f"{stem}: exercise {k} has a checker but no answer cell")
        is_function = any(_src(cells[j]).lstrip().startswith("def ") for j in answers)
        for n, j in enumerate(answers):
            suffix = "" if len(answers) == 1 else f"_{n + 1}"
            cells[j]["metadata"]["nbgrader"] = _nbg(f"{stem}_ex{k}_answer{suffix}", solution=True)
        cell["metadata"]["nbgrader"] = _nbg(
            f"{stem}_ex{k}_check", solution=False,
            points=POINTS_FUNCTION if is_function else POINTS_VALUE)
        last_check = i
        i += 1
    return k


def tag(paths: list[Path]) -> None:
    for path in paths:
        nb = json.loads(path.read_text(encoding="utf-8"))
        before = json.dumps(nb, sort_keys=True)
        n = tag_notebook(nb, path.stem)
        if json.dumps(nb, sort_keys=True) != before:
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"{path.relative_to(ROOT)}: {n} exercises tagged")
        else:
            print(f"{path.relative_to(ROOT)}: {n} exercises, already tagged")


def _solution_blocks(nb: dict) -> tuple[list[str], list[str]]:
    """The solutions notebook's set-up code and, per exercise, the code before its checker."""
    cells = nb["cells"]
    setup, blocks, current = [], [], []
    seen_exercise = False
    for cell in cells:
        if cell["cell_type"] == "markdown":
            if re.match(r"\s*\*\*\d+\.", _src(cell)):
                seen_exercise = True
                current = []
            continue
        text = _src(cell)
        if not seen_exercise:
            setup.append(text)
            continue
        line = _checker_line(text)
        if line is None:
            current.append(text)
            continue
        current.append("\n".join(text.splitlines()[:line]))
        blocks.append("\n".join(t for t in current if t.strip()))
        current = []
    return setup, blocks


def _with_solution(stub: str, solution: str) -> str:
    """The stub with the solution between nbgrader's markers, in place of its body."""
    stub_lines = [line for line in stub.splitlines() if line.strip() != STUB]
    sol_lines = solution.splitlines()
    if (stub_lines and stub_lines[0].startswith("def ") and sol_lines
            and sol_lines[0] == stub_lines[0]):
        body = sol_lines[1:]
        indent = re.match(r"\s*", next(line for line in body if line.strip())).group(0)
        return "\n".join([stub_lines[0], f"{indent}### BEGIN SOLUTION", *body,
                          f"{indent}### END SOLUTION"])
    return "\n".join([*stub_lines, "### BEGIN SOLUTION", *sol_lines, "### END SOLUTION"])


def source_notebook(chapter: Path, exercises_only: bool = False) -> dict:
    """The nbgrader source version of a tagged chapter (solutions and hidden tests filled in)."""
    nb = json.loads(chapter.read_text(encoding="utf-8"))
    solution_nb = json.loads((SOLUTIONS / chapter.name).read_text(encoding="utf-8"))
    setup, blocks = _solution_blocks(solution_nb)
    cells = nb["cells"]
    graded = [c for c in cells if "nbgrader" in c.get("metadata", {})]
    if not graded:
        raise SystemExit(f"{chapter.name}: no nbgrader metadata; run `tag` first")
    checks = [c for c in graded if c["metadata"]["nbgrader"]["grade"]]
    if len(checks) != len(blocks):
        raise SystemExit(f"{chapter.name}: {len(checks)} exercises, but the solutions notebook "
                         f"has {len(blocks)} checked solutions")
    out = copy.deepcopy(nb)
    k = 0
    pending: list[dict] = []
    for cell in out["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader")
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        if not meta:
            continue
        if meta["solution"]:
            pending.append(cell)
            continue
        # a checker: fill its answer cell(s) with this exercise's solution, add the hidden test
        if pending:
            _set_src(pending[0], _with_solution(_src(pending[0]), blocks[k]))
            for extra in pending[1:]:
                _set_src(extra, _with_solution(_src(extra), ""))
        check = _src(cell).rstrip("\n").splitlines()[-1].strip()
        _set_src(cell, _src(cell).rstrip("\n") + "\n### BEGIN HIDDEN TESTS\n"
                 f"assert {check}, 'the checker says: not yet'\n### END HIDDEN TESTS")
        pending, k = [], k + 1
    if exercises_only:
        start = _exercises_start(out["cells"])
        head = [out["cells"][0]] + [_new_code_cell(text) for text in setup]
        out["cells"] = head + out["cells"][start:]
    return out


def build(course: Path, names: list[str], exercises_only: bool) -> list[str]:
    course.mkdir(parents=True, exist_ok=True)
    (course / "nbgrader_config.py").write_text(CONFIG, encoding="utf-8")
    built = []
    for chapter in chapters():
        if names and chapter.stem not in names:
            continue
        nb = source_notebook(chapter, exercises_only)
        dest = course / "source" / chapter.stem / chapter.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        built.append(chapter.stem)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tag", help="write nbgrader metadata into the chapters' exercise cells")
    b = sub.add_parser("build", help="write an nbgrader course directory")
    b.add_argument("course", type=Path)
    b.add_argument("names", nargs="*", help="chapter names (default: all)")
    b.add_argument("--exercises-only", action="store_true",
                   help="only the solutions' set-up and the exercise section of each chapter")
    args = parser.parse_args(argv)
    if args.command == "tag":
        tag(chapters())
    else:
        built = build(args.course, args.names, args.exercises_only)
        print(f"{args.course}: source/ for {', '.join(built)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
