"""numba kernels for packed storage and ``qmatmul``: decode one row at a time.

Each output row is computed by one thread from start to end (parallel over rows with
``prange``), so results do not depend on the thread count.  The float32 weight matrix never
exists: the integer values are read from their packed bytes and multiplied by ``x`` directly
(8 and 4 bits), or decoded one row at a time into a small thread-local buffer (other widths).
The sums use ``fastmath`` reassociation so that they vectorize; the result is a float32 sum in
a different order than BLAS's, equal to it up to float32 rounding.
4 bits with groups of 32, 64, 128 or 256 (and 8 bits with groups of 16 to 128) take a faster
path (:func:`_nibble_groups`): a few lines of explicit LLVM vector code that read 16 stored
bytes (32 or 16 weights) at a time, split the nibbles, convert and multiply-add them in
registers, and keep 16 running sums per row; LLVM's own vectorizer does not find this shape
(a group's 16 or 32 bytes are too short for its loops), and it made 4-bit g=32 2.3x faster.
Imported only when numba is installed (``pip install gqlearn[fast]``).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

# Reassociation and contraction only: no assumptions about NaN, Inf or signed zeros.
_FAST = {"reassoc", "contract", "nsz"}


def _nibble_groups(chunks: int, groups: int, int8: bool = False):  # a numba intrinsic
    """An intrinsic ``f(acc, row, xe, xo, s)`` (addresses) for ``groups`` 4-bit groups of
    ``chunks`` x 16 packed bytes each (group size ``32 * chunks``):

    for each group ``g``: ``t = sum over its chunks c of lo*xe + hi*xo`` (16 lanes, the
    chunk's bytes ``lo``/``hi`` nibbles minus 8, ``xe``/``xo`` the even/odd elements of ``x``),
    then ``acc += t * s[g]``.  ``acc`` holds 16 float32 lanes, loaded at the start and stored at
    the end; even and odd groups use two accumulators (added at the end) so that consecutive
    groups do not wait for each other.  The order of every operation is fixed by this code, so
    the result does not depend on threads, alignment or the compiler's vectorizer.

    ``int8=True``: the same for int8 values, 16 per chunk (group size ``16 * chunks``):
    ``t = sum over chunks of q * x`` with ``xe`` the address of ``x`` (``xo`` unused).
    """
    @intrinsic
    def nibble_groups(typingctx, acc, row, xe, xo, s):  # pragma: no cover - compiled
        sig = types.void(types.uintp, types.uintp, types.uintp, types.uintp, types.uintp)

        def codegen(context, builder, signature, args):
            acc_a, row_a, xe_a, xo_a, s_a = args
            i8, i32, f32 = ir.IntType(8), ir.IntType(32), ir.FloatType()
            v16i8, v16f = ir.VectorType(i8, 16), ir.VectorType(f32, 16)
            c15, c4, c8 = (ir.Constant(v16i8, [c] * 16) for c in (15, 4, 8))
            undef = ir.Constant(v16f, ir.Undefined)
            splat = ir.Constant(ir.VectorType(i32, 16), [0] * 16)
            fma = builder.module.globals.get("llvm.fma.v16f32") or ir.Function(
                builder.module, ir.FunctionType(v16f, [v16f, v16f, v16f]), "llvm.fma.v16f32")
            accp = builder.inttoptr(acc_a, v16f.as_pointer())
            rowp = builder.inttoptr(row_a, v16i8.as_pointer())
            xep = builder.inttoptr(xe_a, v16f.as_pointer())
            xop = builder.inttoptr(xo_a, v16f.as_pointer())
            sp = builder.inttoptr(s_a, f32.as_pointer())
            accs = [builder.load(accp, align=4), ir.Constant(v16f, [0.0] * 16)]
            for g in range(groups):
                t = None
                for c in range(chunks):
                    idx = ir.Constant(i32, g * chunks + c)
                    v = builder.load(builder.gep(rowp, [idx]), align=1)
                    e = builder.load(builder.gep(xep, [idx]), align=4)
                    if int8:
                        q = builder.sitofp(v, v16f)
                        t = builder.fmul(q, e) if t is None else builder.call(fma, [q, e, t])
                        continue
                    lo = builder.sitofp(builder.sub(builder.and_(v, c15), c8), v16f)
                    hi = builder.sitofp(builder.sub(builder.lshr(v, c4), c8), v16f)
                    o = builder.load(builder.gep(xop, [idx]), align=4)
                    t = builder.fmul(lo, e) if t is None else builder.call(fma, [lo, e, t])
                    t = builder.call(fma, [hi, o, t])
                sg = builder.load(builder.gep(sp, [ir.Constant(i32, g)]), align=4)
                sv = builder.shuffle_vector(
                    builder.insert_element(undef, sg, ir.Constant(i32, 0)), undef, splat)
                accs[g % 2] = builder.call(fma, [t, sv, accs[g % 2]])
            builder.store(builder.fadd(accs[0], accs[1]), accp, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return nibble_groups


# Chunks of 16 bytes per group (group size / 32) -> (8 / chunks groups per call, one group).
_NIB1, _NIB1_1 = _nibble_groups(1, 8), _nibble_groups(1, 1)
_NIB2, _NIB2_1 = _nibble_groups(2, 4), _nibble_groups(2, 1)
_NIB4, _NIB4_1 = _nibble_groups(4, 2), _nibble_groups(4, 1)
_NIB8 = _nibble_groups(8, 1)
_I81, _I81_1 = _nibble_groups(1, 8, True), _nibble_groups(1, 1, True)
_I82, _I82_1 = _nibble_groups(2, 4, True), _nibble_groups(2, 1, True)
_I84, _I84_1 = _nibble_groups(4, 2, True), _nibble_groups(4, 1, True)
_I88 = _nibble_groups(8, 1, True)


@numba.njit(inline="always")
def _nibble_row(row_a, s_a, xe_a, xo_a, ng, chunks, int8, acc):  # pragma: no cover
    """``sum_g s[g] * (q_g . x_g)`` of one row through the :func:`_nibble_groups` intrinsics,
    in 16 lanes added at the end: 4 bits (group size ``32 * chunks``) or, with ``int8``,
    8 bits (group size ``16 * chunks``); chunks 1, 2, 4 or 8."""
    for k in range(16):
        acc[k] = 0
    acc_a = acc.ctypes.data
    per = 8 // chunks  # groups per call
    full = ng - ng % per
    for g in range(0, full, per):
        b = 16 * chunks * g
        if int8:
            if chunks == 1:
                _I81(acc_a, row_a + b, xe_a + 4 * b, xo_a, s_a + 4 * g)
            elif chunks == 2:
                _I82(acc_a, row_a + b, xe_a + 4 * b, xo_a, s_a + 4 * g)
            elif chunks == 4:
                _I84(acc_a, row_a + b, xe_a + 4 * b, xo_a, s_a + 4 * g)
            else:
                _I88(acc_a, row_a + b, xe_a + 4 * b, xo_a, s_a + 4 * g)
        elif chunks == 1:
            _NIB1(acc_a, row_a + b, xe_a + 4 * b, xo_a + 4 * b, s_a + 4 * g)
        elif chunks == 2:
            _NIB2(acc_a, row_a + b, xe_a + 4 * b, xo_a + 4 * b, s_a + 4 * g)
        elif chunks == 4:
            _NIB4(acc_a, row_a + b, xe_a + 4 * b, xo_a + 4 * b, s_a + 4 * g)
        else:
            _NIB8(acc_a, row_a + b, xe_a + 4 * b, xo_a + 4 * b, s_a + 4 * g)
    for g in range(full, ng):
        b = 16 * chunks * g
        if int8:
            if chunks == 1:
                _I81_1(acc_a, row_a + b, xe_a + 4 * b, xo_a, s_a + 4 * g)
            elif chunks == 2:
                _I82_1(acc_a, row_a + b, xe_a + 4 * b, xo_a, s_a + 4 * g)
            else:
                _I84_1(acc_a, row_a + b, xe_a + 4 * b, xo_a, s_a + 4 * g)
        elif chunks == 1:
            _NIB1_1(acc_a, row_a + b, xe_a + 4 * b, xo_a + 4 * b, s_a + 4 * g)
        elif chunks == 2:
            _NIB2_1(acc_a, row_a + b, xe_a + 4 * b, xo_a + 4 * b, s_a + 4 * g)
        else:
            _NIB4_1(acc_a, row_a + b, xe_a + 4 * b, xo_a + 4 * b, s_a + 4 * g)
    total = np.float32(0)
    for k in range(16):
        total += acc[k]
    return total


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
    elements once per call, so every loop reads contiguous arrays and vectorizes; with groups
    of 32, 64, 128 or 256 the :func:`_nibble_row` vector code does this in registers instead).
    Other widths decode a row into a float32 buffer of ``q * scale`` first, then take its dot
    product with each row of ``x``.
    """
    rows = packed.shape[0]
    batch = x.shape[0]
    n_groups = n // group_size
    width = max(n, packed.shape[1] * 8 // bits)  # room for a padded row
    n_tasks = (rows + rows_per_task - 1) // rows_per_task
    nibbles = bits == 4 and group_size % 2 == 0
    half = n // 2 if nibbles else 0
    int8 = bits == 8
    chunks = 0
    if nibbles and group_size % 32 == 0:
        chunks = group_size // 32
    elif int8 and group_size % 16 == 0:
        chunks = group_size // 16
    # The vector path reads whole rows of packed bytes, x and scales through their addresses.
    vector = (chunks in (1, 2, 4, 8) and packed.shape[1] == (n if int8 else half)
              and packed.strides[1] == 1 and scales.strides[1] == 4
              and x.strides[1] == 4 and x.strides[0] == 4 * n)
    xe = np.empty((batch, half), dtype=np.float32)
    xo = np.empty((batch, half), dtype=np.float32)
    if nibbles:
        for b in range(batch):
            for j in range(half):
                xe[b, j] = x[b, 2 * j]
                xo[b, j] = x[b, 2 * j + 1]
    for t in prange(n_tasks):
        buf = np.empty(0 if bits == 8 or nibbles else width, dtype=np.float32)
        lo = np.empty(0 if vector else half, dtype=np.int8)
        hi = np.empty(0 if vector else half, dtype=np.int8)
        acc16 = np.empty(16, dtype=np.float32)
        for r in range(t * rows_per_task, min(rows, (t + 1) * rows_per_task)):
            row = packed[r]
            srow = scales[r]
            if vector:
                row_a = row.ctypes.data
                s_a = srow.ctypes.data
                for b in range(batch):
                    if int8:
                        out[b, r] = _nibble_row(row_a, s_a, x[b].ctypes.data, 0, n_groups,
                                                chunks, True, acc16)
                    else:
                        out[b, r] = _nibble_row(row_a, s_a, xe[b].ctypes.data,
                                                xo[b].ctypes.data, n_groups, chunks, False,
                                                acc16)
            elif bits == 8:
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
