"""``qmatmul``: multiply by a quantized weight without dequantizing all of it (W8A16, W4A16).

Decoding one token reads every weight of the model once, so its speed is bounded by memory
bandwidth: a weight stored in 8 (or 4) bits instead of 32 is read 4 (or 8) times faster.  To
get that speed the float32 weight must never be written to memory.  ``qmatmul`` decodes the
quantized values of a few rows at a time into a small buffer that stays in cache:

* the ``"numba"`` backend (batch 1 and small batches): each thread takes whole output rows;
  per row and group it sums the integer values times ``x``, then multiplies by the group's
  scale (8 and 4 bits; other widths decode a row of ``q * scale`` into a buffer first);
* the ``"numpy"`` backend: dequantizes a block of rows (about ``chunk_elements`` weights) and
  lets BLAS multiply ``x`` by it; good for large batches, where BLAS's arithmetic dominates.
  With ``backend="auto"`` the blocks are decoded by the numba kernel when it is installed.

Both agree with ``x @ dequantize(qt).T`` up to float32 rounding of the sums (BLAS's own order of
additions is not fixed either).  Note: ``gqlearn.qmatmul`` is the function; this module is
``importlib.import_module("gqlearn.qmatmul")``.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import cast

import numpy as np

from . import _parallel, packing
from ._numba import fused_kernels, numba_threads, pick_backend
from .core import QuantizedTensor

__all__ = ["qmatmul", "dequantize_packed", "QMATMUL_NUMBA_MAX_BATCH"]

# "auto" uses the fused kernel up to this batch; above it BLAS on dequantized blocks wins
# (4096 x 4096, one thread, CPU ms: batch 8 fused 10.8 vs blocks 14.9; batch 16 20.4 vs 18.8).
QMATMUL_NUMBA_MAX_BATCH = 8

# The numba backend uses one thread per this many weight-times-batch products, at most
# ``threads`` (SmolLM2's 0.3 to 0.9 M-weight matrices get one thread at batch 1).
_WEIGHTS_PER_THREAD = 1 << 21


@functools.cache
def _qkernels() -> ModuleType | None:
    """:mod:`gqlearn._qkernels`, or None without numba (looked up once)."""
    if fused_kernels() is None:
        return None
    from . import _qkernels as module

    return module


def _pick(backend: str, batch: int) -> str:
    return pick_backend(backend, numba_pays=batch <= QMATMUL_NUMBA_MAX_BATCH)


def _dequantize_block(qt: QuantizedTensor, r0: int, r1: int, out: np.ndarray) -> None:
    """``out`` (r1-r0, n) float32 = dequantized rows r0:r1 of a 2-D view of ``qt``."""
    n = qt.shape[-1]
    packed = qt.packed.reshape(-1, qt.packed.shape[-1])[r0:r1]
    q = packing.unpack(packed, qt.bits, n) if qt.bits < 8 else packed
    scales = qt.scales.reshape(-1, n // qt.group_size)[r0:r1]
    np.multiply(q.reshape(r1 - r0, -1, qt.group_size), scales[:, :, None],
                out=out.reshape(r1 - r0, -1, qt.group_size), dtype=np.float32)


def dequantize_packed(qt: QuantizedTensor, *, threads: int, chunk: int,
                      backend: str = "auto") -> np.ndarray:
    """:func:`gqlearn.dequantize` for packed storage, decoding a block of rows at a time (no
    int8 copy of the whole tensor).  Bit-identical to dequantizing ``qt.values``."""
    n = qt.shape[-1]
    rows = qt.size // n
    out = np.empty((rows, n), dtype=np.float32)
    if pick_backend(backend, numba_pays=True) == "numba":
        kernels = cast(ModuleType, _qkernels())  # numba is installed
        with numba_threads(threads):
            kernels.dequantize_rows(qt.packed.reshape(rows, -1), qt.scales.reshape(rows, -1),
                                    qt.bits, qt.group_size, n, out)
        return out.reshape(qt.shape)
    step = max(1, chunk // n)

    def kernel(b: _parallel.Block) -> None:
        _dequantize_block(qt, b.g0, b.g1, out[b.g0:b.g1])

    blocks = [_parallel.Block(r, min(r + step, rows), 0, n, 0) for r in range(0, rows, step)]
    _parallel.run_blocks(kernel, blocks, threads)
    return out.reshape(qt.shape)


def qmatmul(x: np.ndarray, qt: QuantizedTensor, *, threads: int | None = None,
            chunk_elements: int | None = None, backend: str = "auto") -> np.ndarray:
    """``x @ dequantize(qt).T`` without materialising the float32 weight.

    Parameters
    ----------
    x : array_like
        Activations, shape ``(in,)`` or ``(batch, in)``; float16, float32 or float64 (computed
        in float32).
    qt : QuantizedTensor
        A weight of shape ``(out, in)`` quantized along ``in`` (its last axis, the usual
        ``nn.Linear`` / Hugging Face layout), any bits from 2 to 8 and any group size.
    threads : int, optional
        Threads for the numba kernel; results do not depend on it.
    chunk_elements : int, optional
        Weights dequantized per block for the BLAS product (default 1048576).  The numba
        backend's result does not depend on it; the numpy backend's may, in the last bits
        (BLAS's summation order can depend on the block's shape).
    backend : {"auto", "numpy", "numba"}, default "auto"
        ``"numba"``: the fused kernel, one row of weights decoded at a time (chosen by
        ``"auto"`` for batches up to ``QMATMUL_NUMBA_MAX_BATCH`` when numba is installed).
        ``"numpy"``: blocks of rows dequantized, then multiplied by BLAS.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(out,)`` for a 1-D ``x``, else ``(batch, out)``.  Equal to
        ``x @ dequantize(qt).T`` up to float32 rounding of the sums.

    Raises
    ------
    TypeError
        If ``qt`` is not a QuantizedTensor or ``x`` is not floating point.
    ValueError
        If ``qt`` is not 2-D, ``x`` is not 1-D or 2-D, or ``x``'s last axis is not ``in``.

    Examples
    --------
    >>> import numpy as np, gqlearn
    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((3, 8)).astype(np.float32)
    >>> qt = gqlearn.quantize(w, group_size=4, bits=4)
    >>> x = np.ones(8, dtype=np.float32)
    >>> y = gqlearn.qmatmul(x, qt)
    >>> y.shape, y.dtype
    ((3,), dtype('float32'))
    >>> bool(np.allclose(y, x @ gqlearn.dequantize(qt).T, rtol=1e-5, atol=1e-5))
    True
    """
    if not isinstance(qt, QuantizedTensor):
        raise TypeError(f"qmatmul expects a QuantizedTensor weight (from gqlearn.quantize), "
                        f"got {type(qt).__name__}")
    if len(qt.shape) != 2:
        raise ValueError(f"qmatmul needs a 2-D weight (out, in) quantized along in; got shape "
                         f"{qt.shape} (reshape the weight to 2-D before quantizing)")
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"x must be floating point (float16, float32 or float64), got "
                        f"{x.dtype}; convert with x.astype(np.float32)")
    out_features, in_features = qt.shape
    if x.ndim not in (1, 2) or x.shape[-1] != in_features:
        raise ValueError(f"x has shape {x.shape}, but a weight of shape {qt.shape} needs "
                         f"({in_features},) or (batch, {in_features})")
    threads = _parallel.check_threads(threads)
    chunk = _parallel.check_chunk_elements(chunk_elements)
    if chunk_elements is None:
        chunk = 1 << 20  # 4 MiB of float32 per block: large enough products for BLAS
    x2 = np.ascontiguousarray(x.reshape(-1, in_features), dtype=np.float32)
    batch = x2.shape[0]
    out = np.empty((batch, out_features), dtype=np.float32)
    if batch and _pick(backend, batch) == "numba":
        # Small products run on one thread: starting the pool costs more than it saves.
        threads = min(threads, max(1, qt.size * batch // _WEIGHTS_PER_THREAD))
        rows_per_task = max(1, -(-out_features // (8 * threads)))
        with numba_threads(threads):
            fused = cast(ModuleType, _qkernels())  # numba is installed
            fused.qmatmul_rows(qt.packed, qt.scales, x2, qt.bits, qt.group_size,
                               in_features, rows_per_task, out)
    elif batch:
        # "auto" decodes the blocks with the numba kernel when installed (same float32 values,
        # several times faster than numpy's unpack and multiply); "numpy" uses numpy only.
        kernels = _qkernels() if backend == "auto" else None
        step = max(1, chunk // in_features)
        block = np.empty((min(step, out_features), in_features), dtype=np.float32)
        packed = qt.packed
        for r0 in range(0, out_features, step):
            r1 = min(r0 + step, out_features)
            w = block[:r1 - r0]
            if kernels is not None:
                kernels.dequantize_rows_serial(packed[r0:r1], qt.scales[r0:r1], qt.bits,
                                               qt.group_size, in_features, w)
            else:
                _dequantize_block(qt, r0, r1, w)
            out[:, r0:r1] = x2 @ w.T  # BLAS into a contiguous result, then copied
    return out[0] if x.ndim == 1 else out
