"""numba kernels for packed storage and ``qmatmul``: decode one row at a time.

Each output row is computed by one thread from start to end (parallel over rows with
``prange``), so results do not depend on the thread count.  The float32 weight matrix never
exists: the integer values are read from their packed bytes and multiplied by ``x`` directly
(8 and 4 bits), or decoded one row at a time into a small thread-local buffer (other widths).
The sums use ``fastmath`` reassociation so that they vectorize; the result is a float32 sum in
a different order than BLAS's, equal to it up to float32 rounding.
Imported only when numba is installed (``pip install gqlearn[fast]``).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

# Reassociation and contraction only: no assumptions about NaN, Inf or signed zeros.
_FAST = {"reassoc", "contract", "nsz"}


@numba.njit(inline="always")
def _decode_row(row, scales, bits, group_size, n, buf):  # pragma: no cover
    """Write ``q * scale`` of one stored row into ``buf[:n]`` (values packed as in
    :mod:`gqlearn.packing`, or int8 at 8 bits)."""
    n_groups = n // group_size
    if bits == 8:
        for g in range(n_groups):
            s = scales[g]
            base = g * group_size
            for i in range(group_size):
                buf[base + i] = np.float32(row[base + i]) * s
        return
    if bits == 4:
        for j in range(row.shape[0]):
            b = np.int32(row[j])
            buf[2 * j] = np.float32((b & 15) - 8)
            buf[2 * j + 1] = np.float32((b >> 4) - 8)
    elif bits == 2:
        for j in range(row.shape[0]):
            b = np.int32(row[j])
            buf[4 * j] = np.float32((b & 3) - 2)
            buf[4 * j + 1] = np.float32(((b >> 2) & 3) - 2)
            buf[4 * j + 2] = np.float32(((b >> 4) & 3) - 2)
            buf[4 * j + 3] = np.float32((b >> 6) - 2)
    else:
        mask = np.uint64((1 << bits) - 1)
        off = np.int64(1 << (bits - 1))
        for c in range(row.shape[0] // bits):
            word = np.uint64(0)
            for k in range(bits):
                word |= np.uint64(row[c * bits + k]) << np.uint64(8 * k)
            for i in range(8):
                buf[8 * c + i] = np.float32(np.int64((word >> np.uint64(i * bits)) & mask) - off)
    for g in range(n_groups):
        s = scales[g]
        base = g * group_size
        for i in range(group_size):
            buf[base + i] = buf[base + i] * s


@numba.njit(parallel=True, fastmath=_FAST, cache=True)
def qmatmul_rows(packed, scales, x, bits, group_size, n, rows_per_task, out):  # pragma: no cover
    """``out[b, r] = sum_i x[b, i] * q[r, i] * scale[r, i // group_size]``.

    8 bits, and 4 bits with an even group size, are fused: per group, the integer values
    times ``x`` are summed, then multiplied by the group's scale (for 4 bits a row's low and
    high nibbles are first split into two small int8 arrays, and ``x`` into its even and odd
    elements once per call, so every loop reads contiguous arrays and vectorizes).  Other widths decode a row into a float32 buffer of
    ``q * scale`` first, then take its dot product with each row of ``x``.
    """
    rows = packed.shape[0]
    batch = x.shape[0]
    n_groups = n // group_size
    width = max(n, packed.shape[1] * 8 // bits)  # room for a padded row
    n_tasks = (rows + rows_per_task - 1) // rows_per_task
    nibbles = bits == 4 and group_size % 2 == 0
    half = n // 2 if nibbles else 0
    xe = np.empty((batch, half), dtype=np.float32)
    xo = np.empty((batch, half), dtype=np.float32)
    if nibbles:
        for b in range(batch):
            for j in range(half):
                xe[b, j] = x[b, 2 * j]
                xo[b, j] = x[b, 2 * j + 1]
    for t in prange(n_tasks):
        buf = np.empty(0 if bits == 8 or nibbles else width, dtype=np.float32)
        lo = np.empty(half, dtype=np.int8)
        hi = np.empty(half, dtype=np.int8)
        for r in range(t * rows_per_task, min(rows, (t + 1) * rows_per_task)):
            row = packed[r]
            srow = scales[r]
            if bits == 8:
                for b in range(batch):
                    xb = x[b]
                    total = np.float32(0)
                    for g in range(n_groups):
                        base = g * group_size
                        acc = np.float32(0)
                        for i in range(group_size):  # range(base, ...) does not vectorize
                            acc += np.float32(row[base + i]) * xb[base + i]
                        total += acc * srow[g]
                    out[b, r] = total
            elif nibbles:
                gb = group_size // 2  # bytes per group
                # Unpack the row's nibbles with byte operations first (they vectorize 32 or
                # 64 at a time; measured 1.5x faster than converting inside the dot product).
                for j in range(half):
                    v = row[j]
                    lo[j] = np.int8(v & np.uint8(15)) - np.int8(8)
                    hi[j] = np.int8(v >> np.uint8(4)) - np.int8(8)
                for b in range(batch):
                    xeb = xe[b]
                    xob = xo[b]
                    total = np.float32(0)
                    for g in range(n_groups):
                        base = g * gb
                        acc = np.float32(0)
                        for k in range(gb):
                            acc += (np.float32(lo[base + k]) * xeb[base + k]
                                    + np.float32(hi[base + k]) * xob[base + k])
                        total += acc * srow[g]
                    out[b, r] = total
            else:
                _decode_row(row, srow, bits, group_size, n, buf)
                for b in range(batch):
                    xb = x[b]
                    acc = np.float32(0)
                    for i in range(n):
                        acc += buf[i] * xb[i]
                    out[b, r] = acc


def _dequantize_rows(packed, scales, bits, group_size, n, out):  # pragma: no cover
    """``out[r] = q[r] * scale`` for every stored row (bit-identical to the numpy path)."""
    rows = packed.shape[0]
    width = max(n, packed.shape[1] * 8 // bits)
    n_tasks = (rows + 63) // 64
    for t in prange(n_tasks):
        buf = np.empty(width, dtype=np.float32)
        for r in range(t * 64, min(rows, (t + 1) * 64)):
            _decode_row(packed[r], scales[r], bits, group_size, n, buf)
            for i in range(n):
                out[r, i] = buf[i]


dequantize_rows = numba.njit(parallel=True, cache=True)(_dequantize_rows)
# One thread, for decoding blocks between BLAS calls: a parallel region there would leave its
# idle workers spinning while BLAS's own threads want the cores.
dequantize_rows_serial = numba.njit(cache=True)(_dequantize_rows)
