"""The library's layers point down, and nothing reaches into another module's private names.

The map (CONTRIBUTING.md draws it):

    lessons, CLI     gqlearn.lessons.*, gqlearn.__main__
    models           gqlearn.models.* (encoder, explorer), gqlearn.llm.* (decoder)
    io               gqlearn.io.* (safetensors, GGUF, saved models, fetching)
    measures         gqlearn (the package's front door), metrics, group_size, memory, roles,
                     synthetic
    core             core, formats, packing, qmatmul and the private helpers (_checks, ...)

A module may import from its own layer and the layers below.  Within the models layer the
encoder family (``models``) and the decoder family (``llm``) do not import each other, and a
chapter's lesson module imports only the shared ``display`` and ``exercises`` modules, not
another chapter's.  These tests read the source with :mod:`ast`, so lazy imports inside
functions count too.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gqlearn"

LAYERS = {  # module prefix -> layer; the longest matching prefix wins
    "gqlearn.core": 0, "gqlearn.formats": 0, "gqlearn.packing": 0, "gqlearn.qmatmul": 0,
    "gqlearn._": 0,  # private helpers: _checks, _parallel, _fused, _qkernels, ...
    "gqlearn": 1, "gqlearn.metrics": 1, "gqlearn.group_size": 1, "gqlearn.memory": 1,
    "gqlearn.roles": 1, "gqlearn.synthetic": 1,
    "gqlearn.io": 2,
    "gqlearn.models": 3, "gqlearn.llm": 3,
    "gqlearn.lessons": 4, "gqlearn.__main__": 4,
}
NAMES = {0: "core", 1: "measures", 2: "io", 3: "models", 4: "lessons/CLI"}
SHARED_LESSON_MODULES = {"gqlearn.lessons", "gqlearn.lessons.display", "gqlearn.lessons.exercises"}
TEST_MODULES = {p.stem for p in (ROOT / "tests").glob("*.py")} - {"__init__"}


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p if p.endswith("_")
                                                                      else p + ".")), key=len)
    return LAYERS[best]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, absolute module, imported names)`` for every import in a file."""
    tree = ast.parse(path.read_text("utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module, [a.name for a in node.names]))
    return out


def gqlearn_imports(path: Path) -> list[tuple[int, str]]:
    """Every gqlearn module a file imports (``from . import core`` counts as gqlearn.core)."""
    found = []
    for line, module, names in imports(path):
        if module != "gqlearn" and not module.startswith("gqlearn."):
            continue
        submodules = [f"{module}.{n}" for n in names
                      if (PACKAGE.parent / f"{module}.{n}".replace(".", "/")).with_suffix(".py")
                      .exists() or (PACKAGE.parent / f"{module}.{n}".replace(".", "/")).is_dir()]
        found += [(line, m) for m in submodules] or [(line, module)]
    return found


LIBRARY = sorted(PACKAGE.rglob("*.py"))


def test_the_layer_map_covers_every_module() -> None:
    assert len(LIBRARY) > 30
    for path in LIBRARY:
        layer(module_name(path))  # raises if no prefix matches


def test_layers_point_down() -> None:
    wrong = []
    for path in LIBRARY:
        me = module_name(path)
        for line, other in gqlearn_imports(path):
            if layer(other) > layer(me):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {me} ({NAMES[layer(me)]}) "
                             f"imports {other} ({NAMES[layer(other)]}), a layer above it")
    assert not wrong, "\n".join(wrong)


def test_model_families_and_chapters_stand_alone() -> None:
    wrong = []
    for path in LIBRARY:
        me = module_name(path)
        for line, other in gqlearn_imports(path):
            family = {"gqlearn.models": "gqlearn.llm", "gqlearn.llm": "gqlearn.models"}
            for a, b in family.items():
                if me.startswith(a) and other.startswith(b):
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: {me} imports {other}")
            if (me.startswith("gqlearn.lessons.") and me not in SHARED_LESSON_MODULES
                    and other.startswith("gqlearn.lessons") and other not in SHARED_LESSON_MODULES):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: chapter module {me} imports "
                             f"chapter module {other}")
    assert not wrong, "\n".join(wrong)


def test_no_private_names_across_modules() -> None:
    """``from gqlearn.x import _y`` reaches into x's internals; private *modules* (gqlearn._x)
    are the package's shared internals and may be imported anywhere inside gqlearn."""
    wrong = []
    for path in LIBRARY:
        for line, module, names in imports(path):
            if not module.startswith("gqlearn"):
                continue
            for n in names:
                target = f"{module}.{n}"
                is_module = ((PACKAGE.parent / target.replace(".", "/")).with_suffix(".py")
                             .exists())
                if n.startswith("_") and not n.startswith("__") and not is_module:
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {n} from {module}")
    assert not wrong, "\n".join(wrong)


def _code_outside_tests() -> list[tuple[str, str]]:
    sources = [(str(p.relative_to(ROOT)), p.read_text("utf-8"))
               for folder in ("gqlearn", "bench", "teach", "book")
               for p in sorted((ROOT / folder).rglob("*.py")) if "_build" not in p.parts]
    for nb in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        cells = json.loads(nb.read_text("utf-8"))["cells"]
        sources += [(f"{nb.relative_to(ROOT)} cell {i}", "".join(c["source"]))
                    for i, c in enumerate(cells) if c["cell_type"] == "code"]
    return sources


@pytest.mark.parametrize("where, source", _code_outside_tests(), ids=lambda x: x[:60])
def test_nothing_imports_tests(where: str, source: str) -> None:
    assert not re.search(r"sys\.path.*[\"'/]tests\b", source), f"{where} puts tests/ on sys.path"
    try:
        tree = ast.parse(source)
    except SyntaxError:  # notebook cells with IPython magics
        return
    for node in ast.walk(tree):
        mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for m in mods:
            assert m.split(".")[0] not in TEST_MODULES | {"tests"}, f"{where} imports {m}"
