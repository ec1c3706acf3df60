"""Independent implementations the tests compare gqlearn against.

``quantize_q80_llama2c`` is a line-by-line numpy transcription of llama2.c's
``export.py:quantize_q80`` (torch there: float32 division, ``torch.round`` = half to even, no
guard for an all-zero group).  It lives in ``bench/peers.py``, where the benchmarks time it too
(pytest puts ``bench/`` on the path: ``pythonpath`` in pyproject.toml).  ``quantize_spec`` is
the course's formula written the obvious way with float64 rounding of the float32 quotient,
sharing no code with gqlearn.
"""

import numpy as np

from peers import quantize_q80_llama2c

__all__ = ["quantize_q80_llama2c", "quantize_spec", "near_ties"]


def quantize_spec(w: np.ndarray, group_size: int, bits: int = 8, half_even: bool = False):
    """The scheme as the docs state it; returns (values int8, scales float32)."""
    qmax = 2 ** (bits - 1) - 1
    g = np.asarray(w, dtype=np.float32).reshape(-1, group_size)
    amax = np.abs(g).max(axis=1)
    scale = (amax / np.float32(qmax)).astype(np.float32)
    scale = np.where(scale == 0, np.float32(1), scale).astype(np.float32)
    y = (g / scale[:, None]).astype(np.float32).astype(np.float64)
    # half away from zero is exact in float64
    q = np.round(y) if half_even else np.sign(y) * np.floor(np.abs(y) + 0.5)
    q = np.clip(q, -qmax, qmax).astype(np.int8)
    out_shape = np.shape(w)
    return q.reshape(out_shape), scale.reshape(*out_shape[:-1], -1)


def near_ties(rng, n_groups=2000, gs=32):
    """Groups whose weights sit within a few ulps of quantization ties, where implementations
    part ways."""
    amax = rng.uniform(0.01, 10, n_groups).astype(np.float32)
    scale = amax / np.float32(127)
    k = rng.integers(-126, 126, (n_groups, gs)) + 0.5
    w = (k * scale[:, None]).astype(np.float32)
    ulps = rng.integers(-2, 3, w.shape).astype(np.int32)
    w = (w.view(np.int32) + ulps).view(np.float32)
    w[:, 0] = amax
    return w
