"""Chapter 07 (running quantized): the roofline plot and the exercise checkers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .. import core, packing
from .display import plt
from .exercises import Feedback, call_learner, right, wrong

__all__ = ["plot_roofline", "check_qmatvec", "check_unpack_int2"]

_MARKERS = {"float32": "o", "int8": "s", "int4": "^"}


def plot_roofline(bandwidth_gbs: float, peak_gflops: float,
                  points: Mapping[str, Sequence[tuple[int, float, float]]]) -> Any:
    """The roofline: attainable GFLOP/s against arithmetic intensity (flop per byte read).

    ``points[label]`` lists ``(batch, flop_per_byte, gflops)`` measurements; the roof is
    ``min(peak_gflops, bandwidth_gbs * intensity)``.  Log-log axes, legend below the axes.
    """
    fig, ax = plt().subplots(figsize=(8, 5.5), constrained_layout=True)
    xs = [p[1] for pts in points.values() for p in pts]
    lo, hi = min(xs) / 2, max(xs + [peak_gflops / bandwidth_gbs]) * 2
    i = np.geomspace(lo, hi, 200)
    ax.plot(i, np.minimum(peak_gflops, bandwidth_gbs * i), color="black", lw=2,
            label=f"roof: min({peak_gflops:.0f} GFLOP/s, {bandwidth_gbs:.0f} GB/s × intensity)")
    ridge = peak_gflops / bandwidth_gbs
    ax.axvline(ridge, color="gray", ls="--", lw=1, label=f"ridge point: {ridge:.1f} flop per byte")
    for label, pts in points.items():
        kind = next((k for k in _MARKERS if label.startswith(k)), "float32")
        line, = ax.plot([p[1] for p in pts], [p[2] for p in pts], marker=_MARKERS[kind],
                        ls=":", ms=8, label=label)
        for batch, x, y in pts:
            ax.annotate(f"b={batch}", (x, y), textcoords="offset points", xytext=(-6, 5),
                        ha="right", fontsize=8, color=line.get_color())
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("arithmetic intensity (flop per byte of weights read)")
    ax.set_ylabel("achieved speed (GFLOP/s)")
    ax.set_title("Roofline of y = W x, W 4096 × 4096, batch b")
    ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize=9)
    return fig


def check_qmatvec(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: ``fn(x, values, scales, group_size)`` equals ``x @ dequantize(qt).T``.

    ``values`` (out, in) int8, ``scales`` (out, in // group_size) float32, ``x`` (in,) float32;
    seeded random layers at 8 and 4 bits, group sizes 4 to 64, and a one-group layer.
    """
    rng = np.random.default_rng(7)
    cases = [(8, 16, 64, 8), (8, 64, 128, 32), (4, 48, 96, 16), (8, 5, 64, 64), (3, 1, 32, 8)]
    for bits, out, n, g in cases:
        w = (rng.standard_normal((out, n)) * rng.uniform(0.01, 3, (out, 1))).astype(np.float32)
        qt = core.quantize(w, g, bits=bits)
        x = rng.standard_normal(n).astype(np.float32)
        what = f"a {out} × {n} layer, int{bits}, group size {g}"
        y, err = call_learner(fn, x.copy(), qt.values.copy(), qt.scales.copy(), g)
        if err:
            return wrong(f"on {what} your function raised {err}.")
        if y is None:
            return wrong("qmatvec returned None: write its body and return y.")
        y = np.asarray(y)
        ref = x.astype(np.float64) @ core.dequantize(qt).astype(np.float64).T
        if y.shape != ref.shape:
            return wrong(f"on {what}: y has shape {y.shape}; it needs one number per output "
                         "row (the first axis of values).")
        bad = ~np.isclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        if bad.any():
            r = int(np.argmax(bad))
            no_scale = (qt.values[r].astype(np.float64) * x).sum()
            hint = (" It looks like the scales were left out: multiply each group's sum by its "
                    "scale." if np.isclose(y[r], no_scale, rtol=1e-4) else
                    " Reshape values to (out, in // g, g) and x to (in // g, g), sum over the "
                    "last axis, multiply by scales, then sum over groups.")
            return wrong(f"on {what}: output row {r} is wrong.{hint}")
    return right("qmatvec matches x @ dequantize(qt).T on every layer, to float32 rounding.")


def check_unpack_int2(fn: Callable[..., Any]) -> Feedback:
    """Exercise 2: ``fn(packed)`` turns uint8 bytes (rows, n/4) into 2-bit values (rows, n).

    Layout of :func:`gqlearn.packing.pack` at 2 bits: value ``4j + k`` of a row sits in bits
    ``2k, 2k+1`` of byte ``j``, stored as ``q + 2``.
    """
    rng = np.random.default_rng(11)
    cases = [rng.integers(-1, 2, (1, 8)), rng.integers(-1, 2, (3, 64)),
             np.full((2, 16), -1), np.full((1, 8), 1), np.zeros((4, 32), int)]
    for v in cases:
        v = v.astype(np.int8)
        packed = packing.pack(v, 2)
        what = f"a {v.shape[0]} × {v.shape[1]} example"
        out, err = call_learner(fn, packed.copy())
        if err:
            return wrong(f"on {what} your function raised {err}.")
        if out is None:
            return wrong("unpack_int2 returned None: write its body and return the values.")
        out = np.asarray(out)
        if out.shape != v.shape:
            return wrong(f"on {what}: got shape {out.shape}; each byte holds four values, so "
                         "the last axis grows four times.")
        if np.array_equal(out, v):
            continue
        if np.array_equal(out.astype(np.int64) - 2, v):
            return wrong(f"on {what}: subtract the offset 2 from each 2-bit field.")
        if np.array_equal(out.reshape(len(v), -1, 4)[:, :, ::-1].reshape(v.shape), v):
            return wrong(f"on {what}: the four values of each byte come out in reverse order: "
                         "the first value is in the lowest two bits (packed & 0b11).")
        i, j = (int(k) for k in np.argwhere(out != v)[0])
        return wrong(f"on {what}: first difference at row {i}, column {j}. Field k of a byte "
                     "is (packed >> (2 * k)) & 0b11, minus 2.")
    if out.dtype != np.int8:
        return right(f"values right; tip: return int8 (you return {out.dtype}) to use 1 byte each.")
    return right("unpack_int2 matches gqlearn's 2-bit layout on every example.")
