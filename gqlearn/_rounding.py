"""Round half away from zero, exact for every float32: the one copy of the rule.

C's ``roundf`` (llama.cpp's Q8_0) rounds ties away from zero; numpy's ``rint`` rounds them to
even.  The textbook ``trunc(y + copysign(0.5, y))`` is wrong for the float32 just below 0.5:
``0.49999997 + 0.5`` rounds to 1.0 in float32, so it returns 1.  Splitting off the integer part
first keeps every step exact::

    t = trunc(y)                # integer part, exact
    y = t + trunc(2 * (y - t))  # y - t is exact (|y - t| < 1), doubling is exact

This lives in its own private module because both :mod:`gqlearn.core` (absmax quantization)
and :mod:`gqlearn.formats` (which builds on core) use it.  The numba kernel in ``_fused`` has
the same three operations on scalars, which numba compiles; it cannot call a numpy ``out=``
helper.
"""

from __future__ import annotations

import numpy as np

from ._parallel import scratch

__all__ = ["round_half_away"]


def round_half_away(y: np.ndarray) -> np.ndarray:
    """Round float32 ``y`` in place to the nearest integer, ties away from zero; return ``y``.

    Examples
    --------
    >>> y = np.array([0.5, 1.5, 2.5, -2.5, 0.49999997, -0.49999997], dtype=np.float32)
    >>> round_half_away(y)
    array([ 1.,  2.,  3., -3.,  0., -0.], dtype=float32)
    """
    t = scratch("round", y.size).reshape(y.shape)  # reused buffer: no allocation per call
    np.trunc(y, out=t)
    np.subtract(y, t, out=y)
    np.add(y, y, out=y)
    np.trunc(y, out=y)
    np.add(y, t, out=y)
    return y
