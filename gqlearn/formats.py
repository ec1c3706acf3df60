"""Byte-exact export to llama.cpp's Q8_0 block format.

A Q8_0 block is 34 bytes: the scale ``d`` as float16, then 32 int8 values.  llama.cpp
computes ``d = amax / 127`` and ``q = roundf(x * (1/d))``, so the matching gqlearn call is
``quantize(w, 32, rounding="half_away", reciprocal=True)``; only the stored scale differs
(float16 there, float32 here), and an all-zero block stores ``d = 0`` where gqlearn keeps
scale 1.0 (its values are 0 either way).
"""

from __future__ import annotations

import numpy as np

from .core import QuantizedTensor, quantize

__all__ = ["Q8_0_BLOCK", "quantize_q8_0", "to_q8_0", "from_q8_0"]

Q8_0_BLOCK = 32


def to_q8_0(qt: QuantizedTensor) -> np.ndarray:
    """Pack a group-size-32, 8-bit tensor as Q8_0 blocks: uint8, shape ``(*shape[:-1], n * 34 / 32)``.

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


def from_q8_0(blocks: np.ndarray, shape: tuple[int, ...]) -> QuantizedTensor:
    """Read Q8_0 blocks back as a :class:`QuantizedTensor` (scales widened from float16)."""
    raw = np.ascontiguousarray(blocks, dtype=np.uint8).reshape(-1, 2 + Q8_0_BLOCK)
    if raw.shape[0] * Q8_0_BLOCK != int(np.prod(shape)):
        raise ValueError(f"{raw.shape[0]} Q8_0 blocks hold {raw.shape[0] * Q8_0_BLOCK} values, "
                         f"not the {int(np.prod(shape))} of shape {shape}")
    scales = raw[:, :2].copy().view(np.float16).astype(np.float32).reshape(-1)
    scales[scales == 0] = 1.0
    values = raw[:, 2:].copy().view(np.int8)
    return QuantizedTensor(values.reshape(shape), scales.reshape(*shape[:-1], -1), Q8_0_BLOCK)


def quantize_q8_0(w: np.ndarray, **kwargs: object) -> np.ndarray:
    """Quantize ``w`` to Q8_0 bytes, identical to llama.cpp's ``quantize_row_q8_0``.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.linspace(-1, 1, 32, dtype=np.float32)
    >>> quantize_q8_0(w).shape
    (34,)
    """
    qt = quantize(w, Q8_0_BLOCK, rounding="half_away", reciprocal=True, **kwargs)  # type: ignore[arg-type]
    return to_q8_0(qt)
