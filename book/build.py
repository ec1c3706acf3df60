"""Build the course book: ``python book/build.py`` (what ``.ci/book`` runs).

1. Lays out a Sphinx source directory, ``_build/book_src/``: this folder's ``conf.py`` and
   helpers, every notebook under ``notebooks/`` (found by glob, copied with its folder layout),
   the glossary, references and teacher's guide of ``docs/`` (links from the notebooks to
   ``../docs/`` adjusted to the book's layout), and ``index.md`` with the course outline
   generated from the notebooks' first headings.
2. Fetches the page scripts that Sphinx would otherwise take from a CDN, pinned by version and
   SHA-512 from the npm registry (``npm pack``), into ``_static/vendor/``: the Jupyter widget
   manager ``@jupyter-widgets/html-manager`` (BSD-3-Clause) that draws each widget's saved view,
   ``requirejs`` (MIT) that it needs, and ``mathjax`` (Apache-2.0) for the formulas. The
   tarballs are cached in ``_build/npm-cache/``, so later builds work offline.
3. Runs ``sphinx-build -W`` (warnings are errors) into ``_build/book/``.

Open ``_build/book/index.html`` in a browser.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
NOTEBOOKS = ROOT / "notebooks"
DOCS = ROOT / "docs"
# Pages of docs/ in the book, in this order (then any other docs/*.md, sorted).
DOC_ORDER = ["glossary", "references", "teaching"]
BUILD = ROOT / "_build"
SRC = BUILD / "book_src"
OUT = BUILD / "book"
CACHE = BUILD / "npm-cache"

# name, version, npm's integrity string, {path in the package: path under _static/vendor/}
VENDOR = [
    ("@jupyter-widgets/html-manager", "1.0.15",
     "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
     {"package/dist/": "html-manager/", "package/LICENSE": "html-manager/LICENSE"}),
    ("requirejs", "2.3.8",
     "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
     {"package/require.js": "require.min.js", "package/README.md": "requirejs-README.md"}),
    ("mathjax", "3.2.2",
     "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
     {"package/es5/tex-chtml.js": "mathjax/tex-chtml.js",
      "package/es5/output/chtml/fonts/woff-v2/": "mathjax/output/chtml/fonts/woff-v2/",
      "package/LICENSE": "mathjax/LICENSE"}),
]

GROUPS = [  # (caption, glob under notebooks/, test on the file's stem)
    ("Chapters", "*.ipynb", lambda stem: stem[:1].isdigit()),
    ("Appendix", "*.ipynb", lambda stem: not stem[:1].isdigit()),
    ("Solutions", "solutions/*.ipynb", lambda stem: True),
]


def notebook_title(path: Path) -> str:
    """The text of the notebook's first Markdown heading (the page title in the book)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for line in source.splitlines():
            match = re.match(r"#{1,6}\s+(.*\S)", line)
            if match:
                return match.group(1).strip("# ")
    raise SystemExit(f"{path}: no Markdown heading; every notebook needs a title heading")


def outline() -> str:
    """The landing page's course outline: one toctree per group, titles from the notebooks."""
    parts = []
    for caption, pattern, keep in GROUPS:
        paths = sorted(p for p in NOTEBOOKS.glob(pattern)
                       if keep(p.stem) and ".ipynb_checkpoints" not in p.parts)
        if not paths:
            continue
        lines = [f"## {caption}", ""]
        docs = []
        for p in paths:
            doc = p.relative_to(NOTEBOOKS).with_suffix("").as_posix()
            lines.append(f"- [{notebook_title(p)}]({doc}.ipynb)")
            docs.append(doc)
        lines += ["", "```{toctree}", ":hidden:", f":caption: {caption}", ""]
        lines += docs + ["```", ""]
        parts.append("\n".join(lines))
    if not parts:
        raise SystemExit(f"no notebooks found under {NOTEBOOKS}")
    docs = doc_pages()
    if docs:
        lines = ["## Reference and teaching", ""]
        lines += [f"- [{doc_title(p)}](docs/{p.name})" for p in docs]
        lines += ["", "```{toctree}", ":hidden:", ":caption: Reference and teaching", ""]
        lines += [f"docs/{p.stem}" for p in docs] + ["```", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts)


def doc_pages() -> list[Path]:
    """The Markdown pages of docs/ (glossary, references, teacher's guide) in book order."""
    pages = list(DOCS.glob("*.md"))
    return sorted(pages, key=lambda p: (DOC_ORDER.index(p.stem) if p.stem in DOC_ORDER
                                        else len(DOC_ORDER), p.stem))


def doc_title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    raise SystemExit(f"{path}: no '# ' title heading")


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch(name: str, version: str, integrity: str) -> Path:
    """The npm tarball of ``name@version``, from the cache or ``npm pack``, hash-checked."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tgz = CACHE / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not tgz.exists() or _integrity(tgz) != integrity:
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit(f"npm is needed once to fetch {name}@{version} into {CACHE} "
                             "(Debian: apt-get install npm); later builds use the cache")
        done = subprocess.run([npm, "pack", f"{name}@{version}", "--silent",
                               "--pack-destination", str(CACHE)],
                              capture_output=True, text=True)
        if done.returncode != 0 or not tgz.exists():
            raise SystemExit(f"npm pack {name}@{version} failed:\n{done.stderr.strip()}")
    if _integrity(tgz) != integrity:
        raise SystemExit(f"{tgz}: SHA-512 differs from the pinned {integrity}; delete it and retry")
    return tgz


def vendor(static: Path) -> None:
    """Extract the pinned files of each package into ``static/vendor/``."""
    for name, version, integrity, files in VENDOR:
        with tarfile.open(fetch(name, version, integrity)) as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                for prefix, target in files.items():
                    if member.name == prefix or (prefix.endswith("/")
                                                 and member.name.startswith(prefix)):
                        dest = static / "vendor" / (target + member.name[len(prefix):]
                                                    if prefix.endswith("/") else target)
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.write_bytes(tar.extractfile(member).read())


def layout() -> int:
    """Fill ``SRC`` afresh; return the number of notebooks copied."""
    if SRC.exists():
        shutil.rmtree(SRC)
    SRC.mkdir(parents=True)
    for name in ("conf.py", "jupyter_slug.py"):
        shutil.copy2(BOOK / name, SRC / name)
    shutil.copytree(NOTEBOOKS, SRC, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    # docs/ beside the notebooks; a notebook's link ../docs/x.md then points one level less up
    for page in doc_pages():
        (SRC / "docs").mkdir(exist_ok=True)
        shutil.copy2(page, SRC / "docs" / page.name)
    for nb in SRC.rglob("*.ipynb"):
        depth = len(nb.relative_to(SRC).parts) - 1
        text = nb.read_text(encoding="utf-8")
        fixed = text.replace("](" + "../" * (depth + 1) + "docs/", "](" + "../" * depth + "docs/")
        if fixed != text:
            nb.write_text(fixed, encoding="utf-8")
    template = (BOOK / "index.md").read_text(encoding="utf-8")
    (SRC / "index.md").write_text(template.replace("{outline}", outline()), encoding="utf-8")
    (SRC / "_static").mkdir()
    shutil.copy2(BOOK / "widgets_setup.js", SRC / "_static" / "widgets_setup.js")
    vendor(SRC / "_static")
    return len(list(SRC.rglob("*.ipynb")))


def main() -> int:
    start = time.perf_counter()
    n = layout()
    if OUT.exists():
        shutil.rmtree(OUT)
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q",
                           "-b", "html", "-d", str(BUILD / "book_doctrees"), str(SRC), str(OUT)])
    if done.returncode != 0:
        return done.returncode
    pages = sum(1 for p in OUT.rglob("*.html")
                if "_static" not in p.parts and p.name not in ("genindex.html", "search.html"))
    print(f"book: {n} notebooks, {pages} pages in {time.perf_counter() - start:.1f} s; "
          f"open {OUT / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
