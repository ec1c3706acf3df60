"""Packed storage for sub-8-bit quantized values: ``pack`` / ``unpack``.

A ``bits``-bit value needs ``bits`` bits, not a whole int8 byte.  We pack along the last axis,
eight values into ``bits`` bytes (8 × bits bits), for every width from 2 to 7 bits:

* each value ``q`` in ``[-qmax, qmax]`` is stored as the unsigned field
  ``u = q + 2**(bits - 1)`` (offset binary, like llama.cpp's Q4_0), so ``u`` is never 0;
* value ``i`` of a chunk of eight occupies bits ``[i*bits, (i+1)*bits)`` of the chunk read as a
  little-endian integer.  At 4 bits this is the familiar nibble layout (byte ``j`` holds value
  ``2j`` in its low nibble and ``2j+1`` in its high nibble); at 2 bits, four values per byte,
  the first in the lowest two bits;
* each row (one index of the leading axes) is padded to a multiple of 8 values, so a row starts
  on a byte boundary: a row of ``n`` values takes ``ceil(n / 8) * bits`` bytes.

8-bit values are not packed: they stay int8 (two's complement), one per byte.

Both functions work on bounded blocks of rows, so their temporaries stay small whatever the
tensor's size.

Examples
--------
>>> import numpy as np
>>> v = np.array([[-7, 7, 0, 1, -1, 3, -3, 2]], dtype=np.int8)
>>> p = pack(v, 4)
>>> p, p.dtype
(array([[241, 152, 183, 165]], dtype=uint8), dtype('uint8'))
>>> np.array_equal(unpack(p, 4, 8), v)
True
"""

from __future__ import annotations

import numpy as np

from ._checks import check_bits

__all__ = ["packed_row_bytes", "packed_shape", "pack", "unpack", "check_packed"]

# Values per block of rows handled at once (bounds the temporaries: uint64 at 8 bytes each for
# the widths that are not a divisor of 8).
_BLOCK_VALUES = 1 << 18


def packed_row_bytes(n: int, bits: int) -> int:
    """Bytes one row of ``n`` values takes: ``n`` at 8 bits, else ``ceil(n / 8) * bits``.

    >>> packed_row_bytes(4096, 4), packed_row_bytes(4096, 3), packed_row_bytes(10, 2)
    (2048, 1536, 4)
    """
    bits = check_bits(bits)
    return int(n) if bits == 8 else -(-int(n) // 8) * bits


def packed_shape(shape: tuple[int, ...], bits: int) -> tuple[int, ...]:
    """Shape of the stored array for values of ``shape``: the last axis becomes its bytes."""
    return (*shape[:-1], packed_row_bytes(shape[-1], bits))


def _rows_per_block(row_values: int) -> int:
    return max(1, _BLOCK_VALUES // max(1, row_values))


def pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack int8 ``values`` in ``[-qmax, qmax]`` at ``bits`` bits along the last axis.

    Parameters
    ----------
    values : numpy.ndarray
        int8, at least one axis.  Not range-checked here (:class:`gqlearn.QuantizedTensor` does).
    bits : int
        2 to 8; at 8 bits the values are returned unchanged (int8).

    Returns
    -------
    numpy.ndarray
        uint8 of shape :func:`packed_shape` (int8 ``values`` itself at 8 bits).
    """
    bits = check_bits(bits)
    values = np.asarray(values)
    if values.dtype != np.int8:
        raise TypeError(f"values must be int8, got {values.dtype}")
    if bits == 8:
        return values
    n = values.shape[-1]
    rows = values.reshape(-1, n)
    nb = packed_row_bytes(n, bits)
    out = np.empty((rows.shape[0], nb), dtype=np.uint8)
    n8 = nb // bits * 8
    off = 1 << (bits - 1)
    step = _rows_per_block(n8)
    for r0 in range(0, rows.shape[0], step):
        block = rows[r0:r0 + step]
        u = np.full((block.shape[0], n8), off, dtype=np.uint8)  # padding: the field of 0
        np.add(block, off, out=u[:, :n], casting="unsafe")
        dst = out[r0:r0 + step]
        if bits in (2, 4):
            per = 8 // bits
            np.copyto(dst, u[:, 0::per])
            for i in range(1, per):
                dst |= u[:, i::per] << np.uint8(i * bits)
        else:
            u3 = u.reshape(block.shape[0], -1, 8).astype(np.uint64)
            word = u3[..., 0].copy()
            for i in range(1, 8):
                word |= u3[..., i] << np.uint64(i * bits)
            chunk = word.astype("<u8").view(np.uint8).reshape(block.shape[0], -1, 8)
            dst[:] = chunk[..., :bits].reshape(block.shape[0], nb)
    return out.reshape(packed_shape(values.shape, bits))


def unpack(packed: np.ndarray, bits: int, n: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`pack`: int8 values, the last axis ``n`` long.

    Parameters
    ----------
    packed : numpy.ndarray
        uint8 from :func:`pack` (int8 at 8 bits, returned as is unless ``out`` is given).
    bits : int
        The width it was packed at.
    n : int
        Length of the original last axis.
    out : numpy.ndarray, optional
        int8 destination of shape ``(*packed.shape[:-1], n)``, C-contiguous.

    Returns
    -------
    numpy.ndarray
        int8, shape ``(*packed.shape[:-1], n)``.
    """
    bits = check_bits(bits)
    packed = np.asarray(packed)
    shape = (*packed.shape[:-1], int(n))
    if out is None:
        out = np.empty(shape, dtype=np.int8)
    elif out.shape != shape or out.dtype != np.int8:
        raise ValueError(f"out must be int8 of shape {shape}, got {out.dtype} {out.shape}")
    if bits == 8:
        np.copyto(out, packed.view(np.int8))
        return out
    if packed.dtype != np.uint8:
        raise TypeError(f"packed values must be uint8, got {packed.dtype}")
    nb = packed_row_bytes(n, bits)
    if packed.shape[-1] != nb:
        raise ValueError(f"{n} values at {bits} bits take {nb} bytes per row, "
                         f"got {packed.shape[-1]}")
    rows = packed.reshape(-1, nb)
    dst_rows = out.reshape(-1, n)
    n8 = nb // bits * 8
    off = 1 << (bits - 1)
    mask = (1 << bits) - 1
    step = _rows_per_block(n8)
    for r0 in range(0, rows.shape[0], step):
        block = rows[r0:r0 + step]
        k = block.shape[0]
        if bits in (2, 4):
            per = 8 // bits
            u = np.empty((k, n8), dtype=np.uint8)
            for i in range(per):
                np.bitwise_and(block >> np.uint8(i * bits), np.uint8(mask), out=u[:, i::per])
        else:
            chunk = np.zeros((k, nb // bits, 8), dtype=np.uint8)
            chunk[..., :bits] = block.reshape(k, -1, bits)
            word = chunk.view("<u8")[..., 0]
            u = np.empty((k, nb // bits, 8), dtype=np.uint8)
            for i in range(8):
                u[..., i] = (word >> np.uint64(i * bits)) & np.uint64(mask)
            u = u.reshape(k, n8)
        np.subtract(u[:, :n], np.uint8(off), out=dst_rows[r0:r0 + step].view(np.uint8))
    return out


def check_packed(packed: np.ndarray, bits: int, n: int) -> None:
    """Raise ``ValueError`` unless every field of ``packed`` holds a value in ``±qmax`` and the
    padding fields hold 0 (checked block by block, without unpacking the whole array)."""
    bits = check_bits(bits)
    qmax = (1 << (bits - 1)) - 1
    packed = np.asarray(packed)
    if bits == 8:
        if packed.dtype != np.int8:
            raise TypeError(f"8-bit values must be int8, got {packed.dtype}")
        if packed.size and packed.min() < -qmax:
            raise ValueError(f"values must lie in [-{qmax}, {qmax}] for 8 bits")
        return
    nb = packed_row_bytes(n, bits)
    rows = np.asarray(packed).reshape(-1, nb)
    step = _rows_per_block(nb // bits * 8)
    for r0 in range(0, rows.shape[0], step):
        block = rows[r0:r0 + step]
        full = unpack(block, bits, nb // bits * 8)
        if full.min() < -qmax:
            raise ValueError(f"packed values hold a field outside [-{qmax}, {qmax}] for "
                             f"{bits} bits (a corrupt or foreign file?)")
        if (full[:, n:] != 0).any():
            raise ValueError("packed values have nonzero padding after the last value of a row")
