"""Error metrics of a quantized tensor against the original, computed in one chunked pass.

All metrics compare the float32 weights with ``dequantize(qt)`` (``q * scale`` in float32, as
the reference Rust loop does), without materialising the dequantized tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _parallel
from ._checks import as_weights
from ._numba import numba_threads, require_fused_kernels
from ._parallel import Block, plan_blocks, run_blocks, scratch
from .core import QuantizedTensor

__all__ = ["ErrorReport", "error_report"]


@dataclass(frozen=True)
class ErrorReport:
    """Quantization error of one tensor.

    Attributes
    ----------
    group_max_error : numpy.ndarray
        float32 max ``|w - w'|`` of each group, shape ``qt.scales.shape`` (the reference Rust
        loop's ``group_error``).
    group_mse : numpy.ndarray
        float64 mean squared error of each group, shape ``qt.scales.shape``.
    max_abs_error : float
        Largest ``|w - w'|`` over the tensor.
    mean_abs_error : float
        Mean ``|w - w'|``.
    mse : float
        Mean squared error.
    sqnr_db : float
        Signal-to-quantization-noise ratio, ``10 log10(sum w^2 / sum (w - w')^2)``; ``inf`` when
        the reconstruction is exact.
    relative_frobenius_error : float
        ``||w - w'||_F / ||w||_F``.
    zeroed_fraction : float
        Fraction of the nonzero weights whose quantized value is 0 (0.0 if all weights are 0).
    n_zeroed : int
        How many nonzero weights became 0.
    sum_sq_error, sum_sq_signal : float
        ``sum (w - w')^2`` and ``sum w^2`` in float64, for totals over many tensors.
    """

    group_max_error: np.ndarray
    group_mse: np.ndarray
    max_abs_error: float
    mean_abs_error: float
    mse: float
    sqnr_db: float
    relative_frobenius_error: float
    zeroed_fraction: float
    n_zeroed: int
    sum_sq_error: float
    sum_sq_signal: float

    def __repr__(self) -> str:
        """A short summary: the scalar metrics, and only the shape of the per-group arrays
        (they stay reachable as attributes).

        >>> import numpy as np, gqlearn
        >>> w = np.linspace(-1, 1, 4096 * 32, dtype=np.float32).reshape(4096, 32)
        >>> rep = gqlearn.error_report(w, gqlearn.quantize(w, 8))
        >>> rep  # doctest: +NORMALIZE_WHITESPACE
        ErrorReport(max_abs_error=0.000106871, mean_abs_error=5.2691e-05, mse=4.002e-09,
                    sqnr_db=79.21, relative_frobenius_error=0.0001096, zeroed_fraction=0,
                    n_zeroed=0, group_max_error=<float32 (4096, 4)>, group_mse=<float64 (4096, 4)>)
        >>> rep.group_max_error.shape
        (4096, 4)
        """
        def arr(a: np.ndarray) -> str:
            return f"<{a.dtype} {tuple(a.shape)}>"

        return (f"ErrorReport(max_abs_error={self.max_abs_error:.6g}, "
                f"mean_abs_error={self.mean_abs_error:.6g}, mse={self.mse:.5g},\n"
                f"            sqnr_db={self.sqnr_db:.2f}, "
                f"relative_frobenius_error={self.relative_frobenius_error:.4g}, "
                f"zeroed_fraction={self.zeroed_fraction:.6g},\n"
                f"            n_zeroed={self.n_zeroed}, "
                f"group_max_error={arr(self.group_max_error)}, "
                f"group_mse={arr(self.group_mse)})")

    def summary(self) -> dict[str, float]:
        """The scalar metrics as a dict (handy for tables)."""
        return {"max_abs_error": self.max_abs_error, "mean_abs_error": self.mean_abs_error,
                "mse": self.mse, "sqnr_db": self.sqnr_db,
                "relative_frobenius_error": self.relative_frobenius_error,
                "zeroed_fraction": self.zeroed_fraction}


def error_report(w: np.ndarray, qt: QuantizedTensor, *, threads: int | None = None,
                 chunk_elements: int | None = None, backend: str = "numpy") -> ErrorReport:
    """Compute every error metric of ``qt`` against the original weights ``w``.

    Parameters
    ----------
    w : array_like
        The weights that were quantized (same shape as ``qt``).
    qt : QuantizedTensor
        Result of :func:`gqlearn.quantize` on ``w``.
    threads, chunk_elements : int, optional
        As in :func:`gqlearn.quantize`.  The per-group arrays and the maximum do not depend on
        them; sums are accumulated per group in float64, so the totals do not depend on the
        thread count either.
    backend : {"numpy", "numba"}, default "numpy"
        ``"numba"`` uses the fused kernel: the same per-group maxima and counts, and sums that
        may differ from numpy's pairwise summation in the last bits.  The default stays numpy so
        that printed figures do not depend on whether numba is installed.

    Returns
    -------
    ErrorReport

    Examples
    --------
    >>> import numpy as np, gqlearn
    >>> w = np.array([10.5, -8.2, 9.1, -7.8, 0.001, -0.002, 0.0015, -0.0008], np.float32)
    >>> gqlearn.metrics.error_report(w, gqlearn.quantize(w, 8)).zeroed_fraction
    0.5
    """
    w = as_weights(w)
    if not isinstance(qt, QuantizedTensor):
        raise TypeError(f"qt must be a QuantizedTensor, got {type(qt).__name__}")
    if w.shape != qt.shape:
        raise ValueError(f"w has shape {w.shape} but the quantized tensor has shape {qt.shape}")
    threads = _parallel.check_threads(threads)
    chunk = _parallel.check_chunk_elements(chunk_elements)
    gs = qt.group_size
    groups = np.ascontiguousarray(w).reshape(-1, gs)
    values = qt.values.reshape(-1, gs)
    scales = qt.scales.reshape(-1)
    n_groups = scales.size
    if backend not in ("numpy", "numba"):
        raise ValueError(f"unknown backend {backend!r}; use 'numpy' or 'numba'")
    if backend == "numba":
        return _report(qt, *_fused_sums(groups, values, scales, threads))
    blocks, n_pieces = plan_blocks(n_groups, gs, chunk)
    gmax = np.empty((n_groups, n_pieces), np.float32)
    gsq = np.empty((n_groups, n_pieces), np.float64)
    gsig = np.empty((n_groups, n_pieces), np.float64)
    gabs = np.empty((n_groups, n_pieces), np.float64)
    zeroed = np.zeros(len(blocks), np.int64)
    nonzero = np.zeros(len(blocks), np.int64)
    index = {b: i for i, b in enumerate(blocks)}

    def kernel(b: Block) -> None:
        src = groups[b.g0:b.g1, b.c0:b.c1]
        q = values[b.g0:b.g1, b.c0:b.c1]
        x = scratch("metric_w", src.size).reshape(src.shape)
        with np.errstate(over="ignore"):  # float64 beyond float32's range: reported after
            np.copyto(x, src, casting="unsafe")
        err = scratch("metric_err", src.size).reshape(src.shape)
        np.multiply(q, scales[b.g0:b.g1, None], out=err, dtype=np.float32)
        with np.errstate(over="ignore"):  # a mismatched qt: reported after
            np.subtract(err, x, out=err)
        np.abs(err, out=err)
        gmax[b.g0:b.g1, b.piece] = err.max(axis=1)
        gabs[b.g0:b.g1, b.piece] = err.sum(axis=1, dtype=np.float64)
        e64 = scratch("metric_f64", src.size, np.float64).reshape(src.shape)
        np.multiply(err, err, out=e64, dtype=np.float64)
        gsq[b.g0:b.g1, b.piece] = e64.sum(axis=1)
        np.multiply(x, x, out=e64, dtype=np.float64)
        gsig[b.g0:b.g1, b.piece] = e64.sum(axis=1)
        nz = x != 0
        i = index[b]
        nonzero[i] = np.count_nonzero(nz)
        zeroed[i] = np.count_nonzero(nz & (q == 0))

    run_blocks(kernel, blocks, threads)
    return _report(qt, gmax.max(axis=1), gsq.sum(axis=1), gsig.sum(axis=1), gabs.sum(axis=1),
                   int(zeroed.sum()), int(nonzero.sum()))


def _fused_sums(groups: np.ndarray, values: np.ndarray, scales: np.ndarray,
                threads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
    kernels = require_fused_kernels()
    n = scales.size
    gmax, gsq, gsig, gabs = np.empty(n, np.float32), np.empty(n), np.empty(n), np.empty(n)
    zeroed, nonzero = np.empty(n, np.int64), np.empty(n, np.int64)
    with np.errstate(over="ignore"):  # float64 beyond float32's range: reported after
        groups = groups.astype(np.float32, copy=False)
    with numba_threads(threads):
        kernels.group_errors(groups, values, scales, gmax, gsq, gsig, gabs, zeroed, nonzero)
    return gmax, gsq, gsig, gabs, int(zeroed.sum()), int(nonzero.sum())


def _report(qt: QuantizedTensor, gmax: np.ndarray, group_sq: np.ndarray, group_sig: np.ndarray,
            group_abs: np.ndarray, n_zeroed: int, n_nonzero: int) -> ErrorReport:
    # The numba kernel's running max skips NaN (NaN > m is False), so the signal sums, which
    # NaN and Inf always poison, are checked too; w*w in float64 cannot overflow for float32 w.
    if not np.isfinite(group_sig).all():
        raise ValueError("w contains NaN or Inf (or float64 values beyond float32's range); "
                         "error metrics need finite float32 weights")
    if not np.isfinite(gmax).all():
        raise ValueError("|w - dequantize(qt)| overflows float32: is qt the quantization of w?")
    gs = qt.group_size
    group_max = gmax.reshape(qt.scales.shape)
    total_sq = float(group_sq.sum())
    total_sig = float(group_sig.sum())
    with np.errstate(divide="ignore"):
        sqnr = float(10 * np.log10(total_sig / total_sq)) if total_sq > 0 else float("inf")
    return ErrorReport(
        group_max_error=group_max,
        group_mse=(group_sq / gs).reshape(qt.scales.shape),
        max_abs_error=float(group_max.max()),
        mean_abs_error=float(group_abs.sum()) / qt.size,
        mse=total_sq / qt.size,
        sqnr_db=sqnr if total_sig > 0 or total_sq > 0 else float("inf"),
        relative_frobenius_error=float(np.sqrt(total_sq / total_sig)) if total_sig > 0 else 0.0,
        zeroed_fraction=n_zeroed / n_nonzero if n_nonzero else 0.0,
        n_zeroed=n_zeroed,
        sum_sq_error=total_sq,
        sum_sq_signal=total_sig,
    )

