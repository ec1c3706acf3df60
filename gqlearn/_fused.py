"""The fused kernel: one pass per group, parallel over groups with numba's ``prange``.

It reads like the seeds' Rust loop (``(0..num_groups).into_par_iter()``), and computes exactly
what the numpy path computes, operation for operation in float32 (no fastmath, so no
reassociation or fused multiply-add), so the two backends are bit-identical.
Imported only when numba is installed (``pip install gqlearn[fast]``).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

_TINY = np.float32(np.finfo(np.float32).tiny)


@numba.njit(parallel=True, cache=True)
def quantize_groups(groups, qmax, half_even, reciprocal, values, scales):  # pragma: no cover
    """Quantize float32 ``groups`` (n_groups, group_size) into ``values`` and ``scales``.

    A group holding NaN or Inf gets scale NaN, for the caller to report.
    """
    n_groups, size = groups.shape
    q_max = np.float32(qmax)
    for g in prange(n_groups):
        row = groups[g]
        amax = np.float32(0)
        finite = True
        for i in range(size):
            a = abs(row[i])
            if not a <= np.float32(3.4028235e38):  # NaN or Inf
                finite = False
            if a > amax:
                amax = a
        if not finite:
            scales[g] = np.nan
            continue
        scale = amax / q_max
        if scale == 0:
            scale = np.float32(1)
        scales[g] = scale
        clip = scale < _TINY  # subnormal scale: the quotient can overshoot qmax
        multiply = reciprocal and not clip  # 1/scale would overflow for a subnormal scale
        inv = np.float32(1) / scale if multiply else np.float32(1)
        out = values[g]
        for i in range(size):
            y = row[i] * inv if multiply else row[i] / scale
            if half_even:
                y = np.rint(y)
            else:
                t = np.trunc(y)
                d = y - t
                y = t + np.trunc(d + d)
            if clip:
                y = min(max(y, -q_max), q_max)
            out[i] = np.int8(y)


@numba.njit(parallel=True, cache=True)
def dequantize_groups(values, scales, out):  # pragma: no cover
    n_groups, size = values.shape
    for g in prange(n_groups):
        s = scales[g]
        for i in range(size):
            out[g, i] = np.float32(values[g, i]) * s


@numba.njit(parallel=True, cache=True)
def group_errors(groups, values, scales, max_err, sq_err, sq_sig, abs_err, zeroed, nonzero):  # pragma: no cover
    """Per-group max |w - q*s| (float32), sums of squared error, signal and absolute error
    (float64), and counts of nonzero weights and of those that quantized to 0."""
    n_groups, size = groups.shape
    for g in prange(n_groups):
        s = scales[g]
        m = np.float32(0)
        e2 = 0.0
        w2 = 0.0
        e1 = 0.0
        z = 0
        nz = 0
        for i in range(size):
            w = groups[g, i]
            e = abs(np.float32(values[g, i]) * s - w)
            if e > m:
                m = e
            e2 += np.float64(e) * np.float64(e)
            e1 += np.float64(e)
            w2 += np.float64(w) * np.float64(w)
            if w != 0:
                nz += 1
                if values[g, i] == 0:
                    z += 1
        max_err[g] = m
        sq_err[g] = e2
        sq_sig[g] = w2
        abs_err[g] = e1
        zeroed[g] = z
        nonzero[g] = nz
