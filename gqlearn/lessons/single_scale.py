"""Chapter 01: one scale for the whole tensor, and how it fails.

Everything the notebook ``01_single_scale.ipynb`` computes or draws, so that the notebook stays
short and the numbers it shows are tested here:

* :class:`Table`, a small printable table (also used by chapter 02);
* :func:`per_tensor` and :func:`quantize_with_scales`: absmax per-tensor quantization through
  :func:`gqlearn.quantize`, and quantization with a hand-picked scale (as the seed texts do);
* :func:`walkthrough` and :func:`compare_scales`: the seed's step-by-step tables, computed;
* :func:`scale_interval`: which scales reproduce a given list of integers;
* :func:`plot_grid`: the quantization grid over a tensor's values;
* :func:`synthetic_layer`, :func:`ratio_sweep`, :func:`per_row_check`, :func:`plot_ratio_sweep`:
  a layer whose rows differ in magnitude, and what one scale (or one per row) does to it;
* :func:`show_magnitude` / :func:`magnitude_explorer`: the widget and its static fallback;
* ``check_*``: the exercise checkers.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import core
from ..exercises import Feedback, close_enough, right, wrong
from ..metrics import error_report
from .display import Table, _fmt  # noqa: F401  (Table is re-exported)

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets
    from matplotlib.figure import Figure

__all__ = ["Table", "OPENING", "OPENING_INTS", "OPENING_SCALE", "FOUR", "MIXED", "SIXTEEN",
           "per_tensor", "round_half_away", "quantize_with_scales", "walkthrough",
           "compare_scales", "scale_interval", "survival_threshold", "plot_grid",
           "synthetic_layer", "row_relative_error", "ratio_sweep", "per_row_check",
           "plot_ratio_sweep",
           "mixed_with_large", "magnitude_table", "show_magnitude", "magnitude_explorer",
           "EXERCISE_SCALE_WEIGHTS", "EXERCISE_ZEROED_WEIGHTS", "EXERCISE_SMALL_WEIGHT",
           "check_scale", "check_zeroed", "check_survival_threshold"]

# The seed texts' examples (inputs only: every output is computed).
OPENING = (0.123456, -0.567890, 0.234567, -0.345678)
OPENING_INTS = (25, -115, 47, -70)  # the integers the text shows
OPENING_SCALE = 0.005  # the scale the text picks by hand
FOUR = (0.1, -0.8, 0.05, -0.02)
MIXED = (10.5, -8.2, 9.1, -7.8, 0.001, -0.002, 0.0015, -0.0008)
SIXTEEN = (5.0, -4.2, 3.8, -3.1, 4.5, -2.9, 3.2, -4.1,
           0.01, -0.008, 0.012, -0.015, 0.009, -0.011, 0.007, -0.013)

QMAX = core.qmax_for_bits(8)


# --------------------------------------------------------------------------------------------
# Quantizing with one scale
# --------------------------------------------------------------------------------------------

def _as_f32(w: Any) -> np.ndarray:
    return np.asarray(w, dtype=np.float32)


def per_tensor(w: Any) -> core.QuantizedTensor:
    """Quantize ``w`` with one absmax scale for the whole tensor.

    This is the same code path as group-wise quantization, with one group holding everything:
    ``gqlearn.quantize(w.reshape(1, -1), group_size=w.size)``.  The result has shape
    ``(1, w.size)`` and a single scale.

    Examples
    --------
    >>> per_tensor([0.1, -0.8, 0.05, -0.02]).values
    array([[  16, -127,    8,   -3]], dtype=int8)
    """
    w = _as_f32(w)
    return core.quantize(w.reshape(1, -1), group_size=w.size)


def round_half_away(y: np.ndarray) -> np.ndarray:
    """Round float32 ``y`` to the nearest integer, ties away from zero (Rust's ``f32::round``).

    Exact for every float32: ``y - trunc(y)`` is exact, so no ``0.49999997 + 0.5 == 1`` trap.

    Examples
    --------
    >>> round_half_away(np.array([0.5, 1.5, -2.5, 0.49999997], np.float32))
    array([ 1.,  2., -3.,  0.], dtype=float32)
    """
    y = np.asarray(y, dtype=np.float32)
    t = np.trunc(y)
    return t + np.trunc(2 * (y - t))


def quantize_with_scales(w: Any, scales: Any, group_size: int | None = None
                         ) -> core.QuantizedTensor:
    """Quantize with given scales instead of absmax ones: ``clip(round(w / scale), -127, 127)``.

    This is what the seed texts do by hand when they write a rounded scale (0.0063 for
    0.8 / 127) and divide by it.  Rounding is half away from zero, as in :func:`gqlearn.quantize`.

    Parameters
    ----------
    w : array_like
        Weights, 1-D (or anything: it is flattened).
    scales : float or array_like
        One scale per group, in group order; must be positive.
    group_size : int, optional
        Weights per group; default: the whole tensor is one group.

    Returns
    -------
    QuantizedTensor
        Shape ``(w.size,)``, so that :func:`gqlearn.dequantize` and
        :func:`gqlearn.metrics.error_report` work on it as on any quantized tensor.

    Examples
    --------
    >>> quantize_with_scales([0.1, -0.8, 0.05, -0.02], 0.0063).values
    array([  16, -127,    8,   -3], dtype=int8)
    """
    w = _as_f32(w).ravel()
    group_size = w.size if group_size is None else int(group_size)
    if group_size <= 0 or w.size % group_size:
        raise ValueError(f"group_size {group_size} does not divide the {w.size} weights")
    s = _as_f32(scales).ravel()
    if s.size != w.size // group_size:
        raise ValueError(f"{w.size // group_size} groups need {w.size // group_size} scales, "
                         f"got {s.size}")
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError("scales must be finite and positive")
    y = w.reshape(-1, group_size) / s[:, None]
    q = np.clip(round_half_away(y), -QMAX, QMAX).astype(np.int8)
    return core.QuantizedTensor(q.ravel(), s, group_size)


def _quotients(w: np.ndarray, qt: core.QuantizedTensor) -> np.ndarray:
    """``w / scale`` in float32, as the quantizer computes it before rounding."""
    return (w.reshape(-1, qt.group_size) / qt.scales.reshape(-1, 1)).ravel()


def walkthrough(w: Any, scale: float | None = None) -> Table:
    """The seed's per-tensor walk-through, every number computed.

    Step 1 finds ``max |w|``; step 2 the scale ``max / 127`` (or uses the hand-picked ``scale``);
    step 3 divides and rounds; step 4 multiplies back and measures the error.

    Parameters
    ----------
    w : array_like
        The weights (flattened).
    scale : float, optional
        A hand-picked scale (e.g. the seed's rounded 0.0063).  Default: absmax, through
        :func:`gqlearn.quantize`.

    Returns
    -------
    Table
        Columns ``weight``, ``weight / scale``, ``q``, ``recovered``, ``error``.

    Examples
    --------
    >>> walkthrough([0.1, -0.8]).column("q")
    [16, -127]
    """
    w = _as_f32(w).ravel()
    max_abs = float(np.abs(w).max())
    if scale is None:
        qt = per_tensor(w)
        how = f"Step 2  scale = max |w| / {QMAX} = {float(qt.scales[0, 0]):.8g}  (float32)"
    else:
        qt = quantize_with_scales(w, scale)
        how = f"Step 2  scale = {float(qt.scales[0]):.8g}  (given)"
    q = qt.values.ravel()
    rec = core.dequantize(qt).ravel()
    err = np.abs(w - rec)
    quot = _quotients(w, qt)
    rows = tuple((float(a), float(b), int(c), float(d), float(e))
                 for a, b, c, d, e in zip(w, quot, q, rec, err))
    notes = (f"Step 1  max |w| = {max_abs:.6g}", how,
             "Step 3  q = round(weight / scale);  Step 4  recovered = q * scale")
    return Table(("weight", "weight / scale", "q", "recovered", "error"), rows, notes,
                 {"weight / scale": ".8g", "error": ".4g"})


def compare_scales(w: Any, scales: Mapping[str, float | None]) -> Table:
    """Quantize ``w`` with several single scales and compare what comes out.

    Parameters
    ----------
    w : array_like
    scales : mapping of label to scale
        ``None`` means absmax (:func:`per_tensor`).

    Returns
    -------
    Table
        Columns ``scale`` (the label), ``value``, ``q``, ``largest |w|/scale``, ``clipped``
        (weights whose quotient exceeds 127.5, so clipping changed them), ``max error``,
        ``largest |q|`` (out of 127: how much of the integer range the scale uses).
    """
    w = _as_f32(w).ravel()
    rows = []
    for label, s in scales.items():
        qt = per_tensor(w) if s is None else quantize_with_scales(w, s)
        quot = np.abs(_quotients(w, qt))
        rep = error_report(w.reshape(qt.shape), qt)
        rows.append((label, float(qt.scales.ravel()[0]), qt.values.ravel(), float(quot.max()),
                     int((quot > QMAX + 0.5).sum()), rep.max_abs_error,
                     int(np.abs(qt.values).max())))
    return Table(("scale", "value", "q", "largest |w|/scale", "clipped", "max error",
                  "largest |q|"), tuple(rows))


def scale_interval(w: Any, q: Sequence[int]) -> tuple[float, float]:
    """The range of scales ``s`` for which ``round(w / s)`` gives the integers ``q``.

    Each weight with ``q != 0`` confines ``s`` to ``[w / (q + 1/2), w / (q - 1/2)]`` (for
    ``q > 0``; mirrored for ``q < 0``); the answer is the intersection, computed exactly with
    fractions of the decimal inputs.  Ties at the ends are counted as inside.

    Returns
    -------
    (low, high) : tuple of float
        ``low > high`` means no single scale gives these integers.

    Examples
    --------
    >>> lo, hi = scale_interval([0.1, -0.8], [16, -127])
    >>> round(lo, 7), round(hi, 7)
    (0.0062745, 0.0063241)
    """
    w = [Fraction(str(x)) for x in np.asarray(w, dtype=np.float64).ravel()]
    q = [int(v) for v in q]
    if len(w) != len(q):
        raise ValueError(f"{len(w)} weights but {len(q)} integers")
    low, high = Fraction(0), None
    for x, k in zip(w, q):
        if k == 0:
            continue
        if (x > 0) != (k > 0):
            return (1.0, 0.0)
        x, k = abs(x), abs(k)
        low = max(low, x / (k + Fraction(1, 2)))
        bound = x / (k - Fraction(1, 2))
        high = bound if high is None else min(high, bound)
    return (float(low), float(high) if high is not None else float("inf"))


def survival_threshold(max_abs: float) -> float:
    """Smallest magnitude that does not round to 0 under a scale of ``max_abs / 127``.

    A weight survives when ``|w| / scale >= 1/2``, i.e. ``|w| >= max_abs / 254``.
    """
    return float(max_abs) / (2 * QMAX)


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------

def _draw_grid(ax: Any, w: np.ndarray, q: np.ndarray, scale: float, lo: float, hi: float,
               title: str) -> None:
    k0 = max(-QMAX, int(np.floor(lo / scale)))
    k1 = min(QMAX, int(np.ceil(hi / scale)))
    levels = np.arange(k0, k1 + 1) * scale
    if len(levels) <= 40:  # few levels in view: full-height grid lines
        ax.vlines(levels, -0.4, 1.4, color="0.8", lw=0.8, zorder=0)
    else:  # the whole grid: a ruler along the bottom, one tick per level
        ax.vlines(levels, -0.4, -0.22, color="0.45", lw=0.5, zorder=0)
    ax.axvspan(-scale / 2, scale / 2, color="tab:red", alpha=0.15, lw=0,
               label="rounds to 0 (|w| < scale/2)")
    rec = q.astype(np.float32) * np.float32(scale)
    zero = (q == 0) & (w != 0)
    for x, r, z in zip(w, rec, zero):
        ax.plot([x, r], [1, 0], color="tab:red" if z else "tab:blue", lw=1, alpha=0.7)
    ax.scatter(w[~zero], np.ones((~zero).sum()), color="tab:blue", zorder=3, label="kept")
    ax.scatter(w[zero], np.ones(zero.sum()), color="tab:red", marker="s", zorder=3,
               label="becomes 0")
    ax.scatter(rec, np.zeros_like(rec), color="black", marker="|", s=200, zorder=3)
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.4, 1.4)
    ax.set_yticks([0, 1], ["recovered\nq·scale", "weight"])
    ax.set_xlabel("value")
    ax.set_title(title)


def plot_grid(w: Any, scale: float | None = None, *, zoom_steps: float = 3.0,
              title: str = "") -> Figure:
    """Draw the quantization grid (the 255 values ``k * scale``) over the weights.

    Panels, top to bottom: the whole range; a zoom of ``±zoom_steps`` grid steps around 0,
    with the cell that rounds to 0 shaded; and, if some weights became 0, a zoom on those
    weights alone.  Each weight is joined to its recovered value ``q * scale``.

    Parameters
    ----------
    w : array_like
    scale : float, optional
        Default: absmax through :func:`per_tensor`.
    zoom_steps : float
        Half-width of the second panel in grid steps.
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    w = _as_f32(w).ravel()
    qt = per_tensor(w) if scale is None else quantize_with_scales(w, scale)
    s = float(qt.scales.ravel()[0])
    q = qt.values.ravel()
    zeroed = (q == 0) & (w != 0)
    n_panels = 3 if zeroed.any() else 2
    fig, axes = plt.subplots(n_panels, 1, figsize=(8, 2.2 * n_panels), layout="constrained")
    edge = QMAX * s * 1.05
    _draw_grid(axes[0], w, q, s, -edge, edge,
               f"whole range: the {2 * QMAX + 1} levels k·scale, step (scale) = {s:.4g}")
    _draw_grid(axes[1], w, q, s, -zoom_steps * s, zoom_steps * s,
               f"zoom on ±{zoom_steps:g} steps around 0: {int(zeroed.sum())} of {w.size} "
               "weights land in the zero cell")
    axes[1].legend(loc="upper right", fontsize=8)
    if zeroed.any():
        span = 1.5 * float(np.abs(w[zeroed]).max())
        _draw_grid(axes[2], w, q, s, -span, span,
                   f"closer still: the {int(zeroed.sum())} zeroed weights; the nearest nonzero "
                   f"levels are ±{s:.4g}")
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------
# Beyond the toy: a layer whose rows differ in magnitude
# --------------------------------------------------------------------------------------------

def synthetic_layer(rows: int = 64, cols: int = 256, ratio: float = 100.0,
                    seed: int = 0) -> np.ndarray:
    """A float32 weight matrix whose row magnitudes span a factor ``ratio``.

    Row ``i`` is Gaussian with standard deviation from ``np.geomspace(1, 1/ratio, rows)`` (in
    shuffled order): some rows are ``ratio`` times smaller than others, as happens between
    channels of real layers.

    Examples
    --------
    >>> w = synthetic_layer(4, 8, ratio=100.0, seed=0)
    >>> w.shape, w.dtype
    ((4, 8), dtype('float32'))
    """
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be positive, got {rows} and {cols}")
    if not ratio >= 1:
        raise ValueError(f"ratio must be at least 1, got {ratio}")
    rng = np.random.default_rng(seed)
    std = rng.permutation(np.geomspace(1.0, 1.0 / ratio, rows))
    return (rng.standard_normal((rows, cols)) * std[:, None]).astype(np.float32)


def row_relative_error(w: np.ndarray, qt: core.QuantizedTensor) -> np.ndarray:
    """``||w_r - w'_r|| / ||w_r||`` for each row ``r`` of a 2-D ``w`` (1.0: the row is lost)."""
    w = _as_f32(w)
    rec = core.dequantize(qt).reshape(w.shape)
    return np.linalg.norm(w - rec, axis=1) / np.linalg.norm(w, axis=1)


_SWEEP_COLUMNS = ("zeroed (per-tensor)", "rel. error (per-tensor)",
                  "smallest row error (per-tensor)", "zeroed (per-row)", "rel. error (per-row)",
                  "smallest row error (per-row)")


def ratio_sweep(ratios: Iterable[float], rows: int = 64, cols: int = 256,
                seed: int = 0) -> Table:
    """Per-tensor (and, for contrast, per-row) quantization of :func:`synthetic_layer` s.

    Returns
    -------
    Table
        One row per ratio: ``zeroed`` (fraction of weights that became 0),
        ``rel. error`` (``||w - w'|| / ||w||`` over the whole tensor), ``smallest row error``
        (the relative error of the row with the smallest norm ``||w_r||``), each for int8
        per-tensor (one scale) and int8 per-row (``group_size=cols``).
    """
    out = []
    for ratio in ratios:
        w = synthetic_layer(rows, cols, ratio, seed)
        small = int(np.argmin(np.linalg.norm(w, axis=1)))
        cells: list[Any] = [float(ratio)]
        for qt in (per_tensor(w), core.quantize(w, group_size=cols)):
            rep = error_report(w.reshape(qt.shape), qt)
            cells += [rep.zeroed_fraction, rep.relative_frobenius_error,
                      float(row_relative_error(w, qt)[small])]
        out.append(tuple(cells))
    return Table(("ratio", *_SWEEP_COLUMNS), tuple(out),
                 formats={"ratio": ".6g", **{c: ".4g" for c in _SWEEP_COLUMNS}})


def per_row_check(ratios: Iterable[float], rows: int = 64, cols: int = 256,
                  seed: int = 0) -> Table:
    """What int8 per-row quantization does to each row of :func:`synthetic_layer` s.

    :func:`synthetic_layer` draws the same Gaussian numbers for every ``ratio`` and only
    multiplies row ``r`` by its standard deviation; with one scale per row, the row's scale
    follows that factor, so the integers, and every row's relative error, should not change.

    Returns
    -------
    Table
        One row per ratio: ``smallest row`` (index of the row with the smallest norm, the row
        :func:`ratio_sweep` reports), ``best row error``, ``median row error`` and
        ``worst row error`` (relative errors of the rows, :func:`row_relative_error`), and
        ``same q as ratio <first>`` (whether the int8 values equal those at the first ratio).

    Examples
    --------
    >>> per_row_check([1, 1000], rows=8, cols=64).column("same q as ratio 1")
    [True, True]
    """
    ratios = [float(r) for r in ratios]
    if not ratios:
        raise ValueError("give at least one ratio")
    out = []
    first = None
    for ratio in ratios:
        w = synthetic_layer(rows, cols, ratio, seed)
        qt = core.quantize(w, group_size=cols)
        err = row_relative_error(w, qt)
        first = qt.values if first is None else first
        out.append((ratio, int(np.argmin(np.linalg.norm(w, axis=1))), float(err.min()),
                    float(np.median(err)), float(err.max()),
                    bool(np.array_equal(qt.values, first))))
    cols_ = ("ratio", "smallest row", "best row error", "median row error", "worst row error",
             f"same q as ratio {ratios[0]:g}")
    return Table(cols_, tuple(out), formats={"ratio": ".6g", "best row error": ".4g",
                                             "median row error": ".4g",
                                             "worst row error": ".4g"})


def plot_ratio_sweep(table: Table) -> Figure:
    """Plot a :func:`ratio_sweep` table: zeroed fraction and relative errors against ratio."""
    import matplotlib.pyplot as plt

    ratio = table.column("ratio")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    left.plot(ratio, 100 * np.array(table.column("zeroed (per-tensor)")), "o-",
              label="int8 per-tensor")
    left.plot(ratio, 100 * np.array(table.column("zeroed (per-row)")), "s--",
              label="int8 per-row")
    left.set_xscale("log")
    left.set_xlabel("ratio between largest and smallest row magnitude")
    left.set_ylabel("weights that became 0 (%)")
    left.set_title("Small weights vanish as the ratio grows")
    left.legend()
    right.plot(ratio, table.column("smallest row error (per-tensor)"), "o-",
               label="smallest row, int8 per-tensor")
    right.plot(ratio, table.column("rel. error (per-tensor)"), "o:",
               label="whole tensor, int8 per-tensor")
    right.plot(ratio, table.column("smallest row error (per-row)"), "s--",
               label="smallest row, int8 per-row")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("ratio between largest and smallest row magnitude")
    right.set_ylabel("relative error ||w - w'|| / ||w||")
    right.set_title("The whole-tensor error hides the lost rows")
    right.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------
# Widget: move the large weights, watch the small ones vanish
# --------------------------------------------------------------------------------------------

def mixed_with_large(large: float) -> np.ndarray:
    """The seed's mixed example with the large weights rescaled so the largest is ``large``.

    ``mixed_with_large(10.5)`` is the seed's tensor; the four small weights never change.
    """
    w = np.array(MIXED, dtype=np.float64)
    w[:4] *= float(large) / 10.5
    return w.astype(np.float32)


def magnitude_table(large: float) -> Table:
    """What happens to the small weights of :func:`mixed_with_large` ``(large)``."""
    w = mixed_with_large(large)
    qt = per_tensor(w)
    s = float(qt.scales[0, 0])
    q = qt.values.ravel()
    rec = core.dequantize(qt).ravel()
    rows = tuple((float(x), float(x) / s, int(k), float(r))
                 for x, k, r in zip(w[4:], q[4:], rec[4:]))
    lost = int((q[4:] == 0).sum())
    notes = (f"largest weight {float(np.abs(w).max()):.4g} -> scale {s:.4g}; "
             f"a weight survives only if |w| >= scale/2 = {s / 2:.4g}",
             f"{lost} of the 4 small weights become 0")
    return Table(("small weight", "weight / scale", "q", "recovered"), rows, notes,
                 {"weight / scale": ".4g"})


def show_magnitude(large: float = 10.5) -> None:
    """Print :func:`magnitude_table` and draw :func:`plot_grid` for ``large`` (the widget view)."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    print(magnitude_table(large))
    fig = plot_grid(mixed_with_large(large), title=f"Large weights up to {large:.4g}")
    display(fig)
    plt.close(fig)


def magnitude_explorer() -> ipywidgets.Widget:
    """A slider for the large weights' magnitude, showing :func:`show_magnitude`."""
    import ipywidgets as widgets

    slider = widgets.FloatLogSlider(value=10.5, base=10, min=-3, max=2, step=0.05,
                                    description="largest |w|", continuous_update=False)
    return widgets.interactive(show_magnitude, large=slider)


# --------------------------------------------------------------------------------------------
# Exercises
# --------------------------------------------------------------------------------------------

EXERCISE_SCALE_WEIGHTS = (0.3, -1.2, 0.6, 0.05)
EXERCISE_ZEROED_WEIGHTS = (4.0, -0.01, 0.02, -3.0, 0.015, -0.016, 0.5, 0.0157)
EXERCISE_SMALL_WEIGHT = 0.001


def check_scale(answer: Any) -> Feedback:
    """Exercise 1: the absmax scale of ``EXERCISE_SCALE_WEIGHTS`` for one scale per tensor."""
    w = np.array(EXERCISE_SCALE_WEIGHTS, np.float32)
    expected = float(per_tensor(w).scales[0, 0])
    m = float(np.abs(w).max())
    if close_enough(answer, expected, rel=1e-3):
        return right(f"scale = max |w| / {QMAX} = {m:g} / {QMAX} = {expected:.6g}.")
    hints = [(m / 128, f"that is max/128; symmetric int8 here uses ±{QMAX}, so divide by {QMAX}"),
             (QMAX / m, "that is 127 / max; the scale is the step between levels, max / 127"),
             (2 * m / 255, "that is an asymmetric 255-level step; here 0 is exact and the "
                           f"levels run from -{QMAX} to {QMAX}"),
             (float(w.max()) / QMAX, f"use the largest magnitude, |{-m:g}| = {m:g}, not the "
                                      "largest signed value")]
    for value, hint in hints:
        if close_enough(answer, value, rel=1e-3):
            return wrong(hint + ".")
    return wrong(f"find the largest |w| first, then divide it by {QMAX}.")


def check_zeroed(answer: Any) -> Feedback:
    """Exercise 2: the indices of ``EXERCISE_ZEROED_WEIGHTS`` that quantize to 0 (per tensor)."""
    w = np.array(EXERCISE_ZEROED_WEIGHTS, np.float32)
    qt = per_tensor(w)
    s = float(qt.scales[0, 0])
    expected = {int(i) for i in np.flatnonzero(qt.values.ravel() == 0)}
    try:
        given = {int(i) for i in answer}
    except (TypeError, ValueError):
        return wrong("answer with a list of indices, e.g. [0, 3].")
    if given == expected:
        return right(f"scale = {s:.5g}, so every |w| below scale/2 = {s / 2:.5g} rounds to 0: "
                     f"indices {sorted(expected)}.")
    out = []
    for i in sorted(given - expected):
        if not 0 <= i < w.size:
            return wrong(f"index {i} is out of range: there are {w.size} weights (0 to "
                         f"{w.size - 1}).")
        out.append(f"w[{i}] = {float(w[i]):g} gives {float(w[i]) / s:.4g} steps, which rounds "
                   f"to {int(qt.values.ravel()[i])}")
    for i in sorted(expected - given):
        out.append(f"w[{i}] = {float(w[i]):g} gives only {float(w[i]) / s:.4g} steps, which "
                   "rounds to 0")
    return wrong(f"the scale is {s:.5g}; " + "; ".join(out) + ".")


def check_survival_threshold(answer: Any) -> Feedback:
    """Exercise 3: the largest magnitude ``L`` of ``[L, -L, 0.001]`` at which 0.001 survives."""
    small = EXERCISE_SMALL_WEIGHT
    expected = 2 * QMAX * small
    if close_enough(answer, expected, rel=1e-6):
        return right(f"0.001 survives while 0.001 / (L/{QMAX}) >= 1/2, i.e. L <= "
                     f"{2 * QMAX} x 0.001 = {expected:g}.")
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return wrong("answer with a number.")
    if not value > 0:
        return wrong("L is a magnitude: answer with a positive number.")
    if close_enough(value, QMAX * small, rel=0.01):
        return wrong(f"at L = {value:g}, 0.001 is exactly one step; rounding keeps it until it "
                     "is half a step.")
    q = per_tensor(np.array([value, -value, small], np.float32)).values.ravel()[2]
    if q == 0:
        return wrong(f"with L = {value:g}, 0.001 / (L/{QMAX}) = {small * QMAX / value:.3g} "
                     "rounds to 0: L is too large.")
    return wrong(f"with L = {value:g}, 0.001 is still kept (q = {int(q)}): L can grow further.")
