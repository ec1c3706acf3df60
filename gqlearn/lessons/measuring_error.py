"""Chapter 03, measuring the error: plots, the explore widget and the exercise checkers.

The chapter's computations (the metrics, the ``scale**2 / 12`` model, the zero-point
quantizer) are written in the notebook, where the learner reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import synthetic
from ..core import quantize
from ..metrics import error_report
from .display import live_widget, plt, show_figure
from .exercises import Feedback, call_learner, right, wrong

__all__ = ["LABELS", "GROUP_SIZES", "plot_distributions", "plot_theory", "plot_outliers",
           "explore_static", "explore", "check_sqnr_db", "check_predicted_mse"]

LABELS = {"gaussian": "Gaussian", "laplace": "Laplace",
          "student_t": f"Student-t (df={synthetic.DEFAULT_DF:g})",
          "outliers": "Gaussian + outlier columns"}
GROUP_SIZES = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def plot_distributions(matrices: Mapping[str, np.ndarray], bins: int = 200) -> Any:
    """Histograms (log counts) of each matrix, in units of the standard deviation 0.02."""
    fig, ax = plt().subplots(figsize=(8, 3.5))
    for name, w in matrices.items():
        ax.hist(w.ravel() / synthetic.DEFAULT_STD, bins=bins, range=(-25, 25),
                histtype="step", label=LABELS.get(name, name))
    ax.set_yscale("log")
    ax.set_xlabel(f"weight / {synthetic.DEFAULT_STD:g} (standard deviations)")
    ax.set_ylabel("count (log scale)")
    ax.set_title("Four synthetic matrices: same bulk, different tails", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def plot_theory(predicted: np.ndarray, measured: np.ndarray, group_size: int) -> Any:
    """Measured against predicted MSE per group (linear axes in units of 1e-8: the range is
    less than a decade, where log-axis labels collide)."""
    fig, ax = plt().subplots(figsize=(4.8, 4.5))
    ax.plot(predicted * 1e8, measured * 1e8, ".", ms=2, alpha=0.4)
    hi = float(max(predicted.max(), measured.max())) * 1e8
    ax.plot([0, hi], [0, hi], "k--", lw=1, label="measured = predicted")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("predicted group MSE, (g−1)/g · scale²/12  (×10⁻⁸)")
    ax.set_ylabel("measured group MSE  (×10⁻⁸)")
    ax.set_title(f"{predicted.size:,} groups of {group_size}, 8 bits", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def plot_outliers(om: synthetic.OutlierMatrix, group_size: int = 128, bits: int = 4) -> Any:
    """Three views of the outlier matrix: largest |w| per column, the scale of each group
    (log colour), and the fraction of each group's weights rounded to zero (log axis, so
    the outlier groups do not flatten the others)."""
    fig, (a, b, c) = plt().subplots(1, 3, figsize=(13, 3.6))
    colmax = np.abs(om.weights).max(axis=0)
    a.semilogy(colmax, lw=0.5)
    a.semilogy(om.columns, colmax[om.columns], "rv", label="outlier columns")
    a.set_xlabel("column (input channel)")
    a.set_ylabel("largest |w| in the column (log)")
    a.set_title("Outlier columns", fontsize=10)
    a.legend(fontsize=8, loc="center left")  # the empty band, left of the spikes
    qt = quantize(om.weights, group_size, bits=bits)
    im = b.imshow(np.log10(qt.scales[:64]), aspect="auto", cmap="viridis",
                  interpolation="nearest")
    b.set_xlabel(f"group (of {group_size} columns)")
    b.set_ylabel("row")
    b.set_title("log10(scale) of each group, first 64 rows", fontsize=10)
    fig.colorbar(im, ax=b)
    groups = om.weights.reshape(om.weights.shape[0], -1, group_size)
    zeroed = ((qt.values.reshape(groups.shape) == 0) & (groups != 0)).mean(axis=(0, 2))
    hit = np.zeros(zeroed.size, bool)
    hit[om.columns // group_size] = True
    c.bar(np.flatnonzero(~hit), zeroed[~hit], color="tab:blue", label="ordinary groups")
    c.bar(np.flatnonzero(hit), zeroed[hit], color="tab:red", label="groups with an outlier")
    from matplotlib import ticker

    c.set_yscale("log")
    c.set_ylim(zeroed.min() / 2, 1.0)
    c.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    c.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
    c.yaxis.set_minor_formatter(ticker.NullFormatter())
    c.set_xlabel(f"group (of {group_size} columns)")
    c.set_ylabel("weights rounded to 0 (log scale)")
    c.set_title(f"Weights lost to zero, {bits} bits", fontsize=10)
    c.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


EXPLORE_SHAPE = (128, 4096)


def explore_static(distribution: str = "outliers", strength: float = 20.0, bits: int = 4,
                   group_size: int = 128) -> Any:
    """SQNR of every group size for one matrix (the chosen one starred), and 128 weights
    of row 0 around its largest weight beside their dequantized values."""
    w = synthetic.make_weights(distribution, EXPLORE_SHAPE, seed=0, strength=strength)
    sqnr = [error_report(w, quantize(w, g, bits=bits)).sqnr_db for g in GROUP_SIZES]
    fig, (a, b) = plt().subplots(1, 2, figsize=(12, 3.6))
    a.semilogx(GROUP_SIZES, sqnr, "o-", ms=3, base=2)
    a.plot(group_size, sqnr[GROUP_SIZES.index(group_size)], "r*", ms=14,
           label=f"g={group_size}: {sqnr[GROUP_SIZES.index(group_size)]:.1f} dB")
    a.set_xticks([4, 16, 64, 256, 1024, 4096], ["4", "16", "64", "256", "1024", "4096"])
    a.set_xlabel("group size g (log scale)")
    a.set_ylabel("SQNR (dB)")
    a.set_title(f"{LABELS[distribution]}, {bits} bits", fontsize=10)
    a.legend(fontsize=8, loc="upper right")
    row = w[:1]
    deq = quantize(row, group_size, bits=bits).dequantize()[0]
    start = min(int(np.argmax(np.abs(row[0]))) // 128 * 128, row.shape[1] - 128)
    x = np.arange(start, start + 128)
    b.plot(x, row[0, x], ".", ms=4, label="original")
    b.step(x, deq[x], where="mid", lw=1, label="dequantized")
    for edge in range(-(-start // group_size) * group_size, start + 129, group_size):
        b.axvline(edge - 0.5, color="0.6", lw=0.8)
    b.set_xlabel(f"row 0, columns {start}–{start + 127} (grey lines: group edges)")
    b.set_ylabel("weight")
    b.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def explore() -> Any:
    """Live version of :func:`explore_static`; the outlier slider is enabled only for the
    outlier matrix."""
    import ipywidgets as widgets

    dist = widgets.Dropdown(options=[(LABELS[k], k) for k in synthetic.DISTRIBUTIONS],
                            value="outliers", description="weights")
    strength = widgets.FloatLogSlider(value=20.0, base=10, min=0, max=2, step=0.01,
                                      readout_format=".1f", description="outlier ×σ")

    def toggle(change: Mapping[str, Any]) -> None:
        strength.disabled = change["new"] != "outliers"

    dist.observe(toggle, names="value")
    bits = widgets.IntSlider(value=4, min=2, max=8, description="bits")
    group = widgets.Dropdown(options=list(GROUP_SIZES), value=128, description="group size")

    def update(distribution: str, strength: float, bits: int, group_size: int) -> None:
        show_figure(explore_static(distribution, strength, bits, group_size))

    return live_widget(update, "explore", distribution=dist, strength=strength, bits=bits,
                       group_size=group)


# --- exercises -------------------------------------------------------------------------------

def _number(fn: Callable[..., Any], what: str, *args: Any) -> tuple[float, Feedback | None]:
    """The learner's ``fn(*args)`` as one float, or the feedback that says why it is not."""
    got, err = call_learner(fn, *args)
    if err is not None:
        return 0.0, wrong(f"your function raised {err}")
    if got is None:
        return 0.0, wrong(f"your function returned None: write its body and `return` {what}.")
    try:
        return float(got), None
    except (TypeError, ValueError):
        return 0.0, wrong(f"return one number (a float), got {type(got).__name__}.")


def check_sqnr_db(fn: Callable[[np.ndarray, np.ndarray], float]) -> Feedback:
    """Exercise 1: ``fn(w, w_hat)`` = ``10 log10(sum w² / sum (w − w_hat)²)`` in dB."""
    rng = np.random.default_rng(3)
    for trial, bits in enumerate((8, 4, 3, 8)):
        shape = (int(rng.integers(2, 9)), 32 * int(rng.integers(1, 5)))
        w = (rng.standard_normal(shape) * rng.uniform(0.01, 2)).astype(np.float32)
        qt = quantize(w, 32, bits=bits)
        expected = error_report(w, qt).sqnr_db
        value, err = _number(fn, "the SQNR", w, qt.dequantize())
        if err is not None:
            return err
        if np.isclose(value, expected, rtol=1e-6, atol=0):
            continue
        if np.isclose(value, expected / 2, rtol=1e-6, atol=0):
            return wrong(f"trial {trial + 1} ({bits} bits): half the SQNR. A ratio of powers "
                         f"(squares) takes 10·log10, not 20·log10... or you took a square root.")
        if np.isclose(value, 2 * expected, rtol=1e-6, atol=0):
            return wrong(f"trial {trial + 1} ({bits} bits): twice the SQNR. Use 10·log10 of a "
                         f"ratio of sums of squares (20·log10 is for amplitudes).")
        if np.isclose(value, -expected, rtol=1e-6, atol=0):
            return wrong(f"trial {trial + 1}: wrong sign: signal power on top, error below.")
        if np.isclose(value, 10 ** (expected / 10), rtol=1e-6, atol=0):
            return wrong(f"trial {trial + 1}: that is the ratio itself; express it in dB.")
        return wrong(f"trial {trial + 1} ({bits} bits, shape {shape}) gives another value. "
                     f"Hint: SQNR = 10·log10(Σ w² / Σ (w − w_hat)²), summed over all weights "
                     f"(compute in float64).")
    return right("your SQNR matches gqlearn.error_report on 4 random matrices.")


def check_predicted_mse(fn: Callable[[np.ndarray, int], float]) -> Feedback:
    """Exercise 2: ``fn(scales, group_size)`` predicts the MSE from the scales alone:
    the mean over groups of ``(g − 1)/g · scale² / 12``."""
    rng = np.random.default_rng(5)
    for g in (4, 32, 256):
        w = synthetic.laplace((64, 1024), seed=int(rng.integers(100)))
        s = quantize(w, g).scales
        s64 = s.astype(np.float64)
        expected = float(np.mean((g - 1) / g * s64 ** 2 / 12))
        value, err = _number(fn, "the MSE", s, g)
        if err is not None:
            return err
        if np.isclose(value, expected, rtol=1e-6, atol=0):
            continue
        hints = [(expected * g / (g - 1), "you left out the (g − 1)/g factor: the group's "
                  "largest weight lands exactly on the grid and has no error."),
                 (expected * 12, "a uniform error on [−s/2, s/2] has variance s²/12: divide "
                  "by 12."),
                 ((g - 1) / g * float(np.mean(s64)) ** 2 / 12, "average the squared scales, "
                  "not the square of the average scale."),
                 ((g - 1) / g * float(np.mean(s64)) / 12, "square the scales.")]
        for v, msg in hints:
            if np.isclose(value, v, rtol=1e-6, atol=0):
                return wrong(f"group size {g}: {msg}")
        return wrong(f"group size {g}: another value. Hint: for each group, (g − 1)/g · "
                     f"scale²/12; then the mean over the groups.")
    return right("your prediction matches the model at group sizes 4, 32 and 256.")

