"""Appendix A1 (under the hood): the exercise checker and the group-size timing plot.

Everything the appendix computes is in the notebook; this module only checks the learner's
function and draws one figure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import core
from .display import plt
from .exercises import Feedback, call_learner, right, wrong

__all__ = ["check_quantize_like_llama_cpp", "plot_group_size_timing"]

# A group where w / scale is a float32 tie (24.5) but w * (1/scale) is not: found by search
# over a seeded Gaussian 4096 x 4096 matrix, group size 32.  Ties in both directions, a
# quotient just below 0.5, and an all-zero group follow.
_EDGE_GROUPS = np.array([
    [1.9178199, 0.36997312, -0.36997312, 0.0],
    [127.0, 2.5, -2.5, 0.5],
    [127.0, 0.49999997, -0.49999997, -1.5],
    [0.0, 0.0, 0.0, 0.0],
], dtype=np.float32)


def _cases() -> list[tuple[str, np.ndarray, int]]:
    rng = np.random.default_rng(11)
    return [("a random 64 x 256 matrix, group size 32",
             rng.standard_normal((64, 256), dtype=np.float32), 32),
            ("hand-picked groups with ties and an all-zero group", _EDGE_GROUPS, 4)]


def _hint(mine: np.ndarray, w: np.ndarray, g: int) -> str:
    for rounding, reciprocal, hint in (
            ("half_away", False, "you divided by the scale; multiply by its float32 reciprocal "
                                 "1 / scale instead"),
            ("half_even", True, "np.round and np.rint round ties to even; round half away from "
                                "zero (t + trunc(2 * (y - t)) with t = trunc(y))"),
            ("half_even", False, "divide → multiply by 1 / scale, and round ties away from zero")):
        other = core.quantize(w, g, rounding=rounding, reciprocal=reciprocal)
        if np.array_equal(mine, other.values.reshape(-1, g)):
            return hint
    return "check the rounding (half away from zero, exact) and the clip to ±127"


def check_quantize_like_llama_cpp(fn: Callable[[np.ndarray, int], Any]) -> Feedback:
    """Check ``fn(w, group_size) -> (q, scales)`` against ``gqlearn.quantize(w, group_size,
    rounding="half_away", reciprocal=True)``: ``q`` int8 of shape ``(n_groups, group_size)``,
    ``scales`` float32 of shape ``(n_groups,)``.  Never shows the expected values."""
    for label, w, g in _cases():
        out, err = call_learner(fn, w.copy(), g)
        if err is not None:
            return wrong(f"your function raised {err} (on {label}).")
        if out is None:
            return wrong("your function returned None: fill in its body and return (q, scales).")
        if not isinstance(out, tuple) or len(out) != 2:
            return wrong("return a pair (q, scales).")
        q, scales = (np.asarray(x) for x in out)
        n = w.size // g
        if q.shape != (n, g) or scales.shape != (n,):
            return wrong(f"on {label}, q should have shape {(n, g)} and scales {(n,)}; "
                         f"got {q.shape} and {scales.shape}.")
        if q.dtype != np.int8 or scales.dtype != np.float32:
            return wrong(f"q should be int8 and scales float32; got {q.dtype} and {scales.dtype}.")
        ref = core.quantize(w, g, rounding="half_away", reciprocal=True)
        bad = np.flatnonzero(scales != ref.scales.reshape(-1))
        if bad.size:
            return wrong(f"on {label}, the scale of group {bad[0]} differs: scale = "
                         f"max|group| / 127 in float32, and 1.0 for an all-zero group.")
        bad = np.argwhere(q != ref.values.reshape(-1, g))
        if bad.size:
            row, col = (int(i) for i in bad[0])
            return wrong(f"on {label}, {bad.shape[0]} value(s) differ, the first in group {row} "
                         f"at position {col}: {_hint(q, w, g)}.")
    return right("bit-identical to gqlearn.quantize(w, g, rounding='half_away', "
                 "reciprocal=True), the values llama.cpp's Q8_0 stores.")


def plot_group_size_timing(rows: Sequence[tuple[str, int, float]]):  # returns a Figure
    """Nanoseconds per weight against group size, one line per backend; powers of two filled.

    ``rows`` holds ``(backend, group_size, ns_per_weight)``.
    """
    fig, ax = plt().subplots(figsize=(8, 3.8), constrained_layout=True)
    for backend in dict.fromkeys(r[0] for r in rows):
        sel = [(g, t) for b, g, t in rows if b == backend]
        gs, ts = np.array(sel).T
        line, = ax.plot(gs, ts, "-", alpha=0.5, label=f"{backend} backend")
        pow2 = np.array([int(g) & (int(g) - 1) == 0 for g in gs])
        ax.plot(gs[pow2], ts[pow2], "o", color=line.get_color())
        ax.plot(gs[~pow2], ts[~pow2], "o", mfc="white", color=line.get_color())
    ax.plot([], [], "ko", label="power of two")
    ax.plot([], [], "ko", mfc="white", label="other divisor")
    ax.set_xscale("log", base=2)
    sizes = sorted({r[1] for r in rows})
    ax.set_xticks(sizes, [str(g) for g in sizes])
    ax.minorticks_off()
    ax.set_xlabel("group size (weights, log scale)")
    ax.set_ylabel("time per weight (ns)")
    ax.set_ylim(bottom=0)
    ax.set_title("gqlearn.quantize, one thread: time per weight by group size")
    ax.legend(loc="best", fontsize=8, ncols=2)
    return fig
