"""The fused kernel: one pass per group, parallel over groups with numba's ``prange``.

It reads like the reference Rust loop (``(0..num_groups).into_par_iter()``), and computes exactly
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
def quantize_groups(groups, groups_bits, qmax, half_even, reciprocal, values, scales,
                    scales_bits):  # pragma: no cover
    """Quantize float32 ``groups`` (n_groups, group_size) into ``values`` and ``scales``.

    ``groups_bits`` and ``scales_bits`` are uint32 views of the same memory: the max of
    ``|w|`` is taken on the bit patterns with the sign cleared, an integer max that is exact,
    vectorizes (a float max with NaN semantics does not), and flags NaN and Inf at once (their
    patterns are the largest).  A group holding NaN or Inf gets scale NaN, for the caller.
    """
    n_groups, size = groups.shape
    q_max = np.float32(qmax)
    for g in prange(n_groups):
        row = groups[g]
        row_bits = groups_bits[g]
        amax_bits = np.uint32(0)
        for i in range(size):
            amax_bits = max(amax_bits, row_bits[i] & np.uint32(0x7FFFFFFF))
        if amax_bits >= np.uint32(0x7F800000):  # Inf or NaN
            scales[g] = np.nan
            continue
        scales_bits[g] = amax_bits  # read back as the float32 max |w|
        scale = scales[g] / q_max
        if scale == 0:
            scale = np.float32(1)
        scales[g] = scale
        clip = scale < _TINY  # subnormal scale: the quotient can overshoot qmax
        multiply = reciprocal and not clip  # 1/scale would overflow for a subnormal scale
        out = values[g]
        if multiply:
            inv = np.float32(1) / scale
            for i in range(size):
                out[i] = np.int8(_round(row[i] * inv, half_even, clip, q_max))
        else:
            for i in range(size):
                out[i] = np.int8(_round(row[i] / scale, half_even, clip, q_max))


@numba.njit(inline="always")
def _round(y, half_even, clip, q_max):  # pragma: no cover
    if half_even:
        y = np.rint(y)
    else:  # half away from zero, exact for every float32
        t = np.trunc(y)
        d = y - t
        y = t + np.trunc(d + d)
    if clip:
        y = min(max(y, -q_max), q_max)
    return y


@numba.njit(parallel=True, cache=True)
def dequantize_groups(values, scales, out):  # pragma: no cover
    n_groups, size = values.shape
    for g in prange(n_groups):
        s = scales[g]
        for i in range(size):
            out[g, i] = np.float32(values[g, i]) * s


@numba.njit(parallel=True, cache=True)
def group_errors(groups, values, scales, max_err, sq_err, sq_sig, abs_err, zeroed,
                 nonzero):  # pragma: no cover
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
