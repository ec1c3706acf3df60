"""numba is optional: the fused kernels when it is installed, and its thread count.

:mod:`gqlearn._fused` (quantize, dequantize, error sums) and :mod:`gqlearn._qkernels`
(products on quantized weights) import numba at module level, so they are loaded through
:func:`fused_kernels` only when numba is there; everything else falls back to numpy.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from types import ModuleType

__all__ = ["fused_kernels", "require_fused_kernels", "pick_backend", "numba_threads"]


@functools.cache
def fused_kernels() -> ModuleType | None:
    """The :mod:`gqlearn._fused` module, or None without numba (looked up once)."""
    try:
        from . import _fused as module
    except ImportError:
        return None
    return module


def require_fused_kernels() -> ModuleType:
    """:func:`fused_kernels` for a caller that has chosen the numba backend."""
    module = fused_kernels()
    if module is None:
        raise ImportError("backend='numba' needs numba: pip install 'gqlearn[fast]'")
    return module


def pick_backend(backend: str, numba_pays: bool) -> str:
    """``"numba"`` or ``"numpy"`` for a ``backend`` argument: ``"auto"`` takes numba when it is
    installed and the caller says it pays off for this call (``numba_pays``)."""
    if backend not in ("auto", "numpy", "numba"):
        raise ValueError(f"unknown backend {backend!r}; use 'auto', 'numpy' or 'numba'")
    if backend == "numba":
        require_fused_kernels()
        return "numba"
    use = backend == "auto" and numba_pays and fused_kernels() is not None
    return "numba" if use else "numpy"


@contextlib.contextmanager
def numba_threads(threads: int) -> Iterator[None]:
    """Run numba's parallel loops on ``threads`` threads (at most numba's own limit)."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(previous)
