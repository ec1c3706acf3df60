"""The storage formats of gqlearn, side by side: absmax, llama.cpp's Q8_0 bytes, min/max (Q4_1).

Absmax (symmetric), the course's scheme
    :func:`gqlearn.quantize` / :func:`gqlearn.dequantize` / :class:`gqlearn.QuantizedTensor`
    (their home is :mod:`gqlearn.core`): per group of ``group_size`` weights one float32 scale
    ``max|w| / qmax`` and int8 values ``round(w / scale)`` in ``-qmax..qmax``.

llama.cpp's Q8_0 bytes (:func:`quantize_q8_0`, :func:`to_q8_0`)
    A Q8_0 block is 34 bytes: the scale ``d`` as float16, then 32 int8 values.  llama.cpp
    computes ``d = amax / 127`` and ``q = roundf(x * (1/d))``, so the matching gqlearn call is
    ``quantize(w, 32, rounding="half_away", reciprocal=True)``; only the stored scale differs
    (float16 there, float32 here), and an all-zero block stores ``d = 0`` where gqlearn keeps
    scale 1.0 (its values are 0 either way).

Min/max (asymmetric), the scheme of llama.cpp's Q4_1 (:func:`quantize_minmax`)
    Instead of codes ``-qmax..qmax`` around zero and one scale, a minimum ``m`` and a step
    ``d`` per group place ``2**bits`` levels between the group's minimum and maximum::

        d = (max - min) / (2**bits - 1)                    # the step, stored as float16
        q = min(2**bits - 1, trunc((w - min) / d + 0.5))   # codes 0 .. 2**bits - 1 (uint8)
        w' = m + d * q                                     # m, d: float16-rounded min and step

    At 4 bits that is 16 levels where the symmetric grid has 15, and they span exactly
    ``[min, max]`` instead of ``[-max|w|, max|w|]``.  With float16 ``d`` and ``m`` a group of 32
    costs ``4 + 2 * 16 / 32 = 5`` bits per weight, as much as symmetric int4 with one float32
    scale per group of 32.

    ``quantize_minmax(w, 32, bits=4)`` reproduces llama.cpp's
    ``gguf.quants.quantize(w, GGMLQuantizationType.Q4_1)`` bit for bit, including its quirks:
    codes are computed with the float32 reciprocal of the float32 step and the float32
    minimum, while the stored (and dequantized) ``d`` and ``m`` are their float16 roundings.
    (A group whose step is subnormal in float32, where the reciprocal overflows and the C code
    is undefined, divides by the step instead.)  Chapter 06 uses it to show that re-quantizing
    SmolLM2's dequantized Q4_1 weights on their own grid gives the file back.

Rounding: absmax's ``rounding="half_away"`` (and so Q8_0) uses the one exact helper
``gqlearn._rounding.round_half_away``; Q4_1's ``trunc(y + 0.5)`` is a different rule, kept
because llama.cpp uses it (see :func:`quantize_minmax`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._checks import as_weights, check_bits, check_group_size
from .core import QuantizedTensor, quantize

__all__ = ["Q8_0_BLOCK", "quantize_q8_0", "to_q8_0", "MinMaxQuantized", "quantize_minmax",
           "dequantize_minmax"]

Q8_0_BLOCK = 32


# --- llama.cpp Q8_0 bytes -----------------------------------------------------------------

def to_q8_0(qt: QuantizedTensor) -> np.ndarray:
    """Pack a group-size-32, 8-bit tensor as Q8_0 blocks.

    Returns uint8 of shape ``(*shape[:-1], n * 34 / 32)`` for a last axis of ``n``.

    Raises
    ------
    ValueError
        If ``qt`` is not 8-bit with group size 32.
    """
    if qt.group_size != Q8_0_BLOCK or qt.bits != 8:
        raise ValueError(f"Q8_0 needs 8 bits and group size 32, got {qt.bits} bits and group "
                         f"size {qt.group_size}; quantize with gqlearn.formats.quantize_q8_0")
    values = qt.values.reshape(-1, Q8_0_BLOCK)
    d = qt.scales.reshape(-1, 1).copy()
    d[~values.any(axis=1)] = 0.0  # llama.cpp stores d = 0 for an all-zero block
    blocks = np.concatenate([d.astype(np.float16).view(np.uint8), values.view(np.uint8)], axis=1)
    return blocks.reshape(*qt.shape[:-1], -1)


def quantize_q8_0(w: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Quantize ``w`` to Q8_0 bytes, identical to llama.cpp's ``quantize_row_q8_0``.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.linspace(-1, 1, 32, dtype=np.float32)
    >>> quantize_q8_0(w).shape
    (34,)
    """
    return to_q8_0(quantize(w, Q8_0_BLOCK, rounding="half_away", reciprocal=True, **kwargs))


# --- min/max (asymmetric, Q4_1-style) -----------------------------------------------------

@dataclass(frozen=True, eq=False)
class MinMaxQuantized:
    """A tensor quantized group-wise along its last axis with a minimum and a step per group.

    Attributes
    ----------
    codes : numpy.ndarray
        uint8 codes in ``0 .. 2**bits - 1``, same shape as the original tensor.
    scales, minimums : numpy.ndarray
        Step ``d`` and minimum ``m`` per group, ``(*shape[:-1], shape[-1] // group_size)``, in
        ``scale_dtype`` (float16 for Q4_1).
    group_size, bits : int

    Memory accounting: codes packed at ``bits`` bits, plus one step and one minimum per group.
    """

    codes: np.ndarray
    scales: np.ndarray
    minimums: np.ndarray
    group_size: int
    bits: int

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the original tensor."""
        return self.codes.shape

    @property
    def size(self) -> int:
        """Number of weights."""
        return self.codes.size

    @property
    def nbytes(self) -> int:
        """Packed codes plus the steps and minimums."""
        return -(-self.size * self.bits // 8) + self.scales.nbytes + self.minimums.nbytes

    @property
    def bits_per_weight(self) -> float:
        """``bits + 2 * (bits of the scale dtype) / group_size``: 5.0 for Q4_1."""
        return 8 * self.nbytes / self.size


def quantize_minmax(w: np.ndarray, group_size: int, *, bits: int = 4,
                    scale_dtype: type[np.floating] = np.float16) -> MinMaxQuantized:
    """Quantize ``w`` group-wise along its last axis with a minimum and a step per group.

    Parameters
    ----------
    w : array_like
        Finite float weights with at least one axis (computed in float32).
    group_size : int
        Must divide ``w.shape[-1]``.  For one group per tensor pass ``w.reshape(1, -1)`` and
        ``w.size``.
    bits : int, default 4
        2 to 8: ``2**bits`` levels, codes ``0 .. 2**bits - 1``.
    scale_dtype : numpy float dtype, default numpy.float16
        How the step and the minimum are stored (Q4_1: float16).

    Returns
    -------
    MinMaxQuantized

    Raises
    ------
    ValueError
        If ``w`` is not finite, ``group_size`` does not divide its last axis, ``bits`` is out
        of range, or a step or minimum overflows ``scale_dtype``.

    Examples
    --------
    >>> w = np.array([[-0.3, 0.0, 0.1, 0.9]], dtype=np.float32)
    >>> qt = quantize_minmax(w, 4, bits=2)       # levels -0.3, 0.1, 0.5, 0.9
    >>> qt.codes
    array([[0, 1, 1, 3]], dtype=uint8)
    >>> dequantize_minmax(qt).round(3)
    array([[-0.3,  0.1,  0.1,  0.9]], dtype=float32)
    """
    w = as_weights(w)
    group_size = check_group_size(group_size, w.shape[-1])
    bits = check_bits(bits)
    groups = np.ascontiguousarray(w, dtype=np.float32).reshape(-1, group_size)
    if not np.isfinite(groups).all():
        raise ValueError("w must be finite (it holds inf or nan)")
    top = np.float32(2 ** bits - 1)
    lo = groups.min(axis=1, keepdims=True)
    d = (groups.max(axis=1, keepdims=True) - lo) / top
    with np.errstate(divide="ignore", over="ignore"):
        inv = (np.float32(1) / d).astype(np.float32)
    ok = np.isfinite(inv) & (d != 0)
    y = (groups - lo) * np.where(ok, inv, np.float32(0))  # Q4_1: (x - min) * (1 / d)
    tiny = ok.ravel() != (d.ravel() != 0)  # subnormal steps, whose reciprocal overflows: divide
    if tiny.any():
        y[tiny] = (groups[tiny] - lo[tiny]) / d[tiny]
    # Q4_1 rounds with C's (int)(y + 0.5f), not the exact half-away rule of round_half_away:
    # they differ at y = 0.49999997, where y + 0.5 rounds to 1.0 in float32 (code 1 here, 0
    # there).  Kept so that the codes are llama.cpp's bit for bit (y >= 0, so trunc = floor).
    codes = np.trunc(y + np.float32(0.5)).clip(0, top).astype(np.uint8)
    with np.errstate(over="ignore"):
        d_stored, lo_stored = d.astype(scale_dtype), lo.astype(scale_dtype)
    if not (np.isfinite(d_stored).all() and np.isfinite(lo_stored).all()):
        raise ValueError(f"a group's step or minimum does not fit in {np.dtype(scale_dtype).name}")
    grid = (*w.shape[:-1], w.shape[-1] // group_size)
    return MinMaxQuantized(codes.reshape(w.shape), d_stored.reshape(grid),
                           lo_stored.reshape(grid), group_size, bits)


def dequantize_minmax(qt: MinMaxQuantized) -> np.ndarray:
    """float32 weights ``m + d * q`` (with the stored, e.g. float16, ``d`` and ``m``)."""
    d = qt.scales.astype(np.float32).reshape(-1, 1)
    m = qt.minimums.astype(np.float32).reshape(-1, 1)
    q = qt.codes.reshape(-1, qt.group_size).astype(np.float32)
    return (d * q + m).reshape(qt.shape)
