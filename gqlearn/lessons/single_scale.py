"""Chapter 01 support: the pictures, the widget and the exercise checkers.

The chapter's computations are in the notebook ``01_single_scale.ipynb``, written out in numpy;
this module only draws and checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import core
from .display import Table, live_widget, plt, show_figure
from .exercises import Feedback, call_learner, close_enough, right, wrong

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets
    from matplotlib.figure import Figure

__all__ = ["MIXED", "plot_grid", "plot_ratio_sweep", "show_magnitude", "magnitude_explorer",
           "check_absmax_quantize", "check_survival_threshold"]

# Four large weights and four tiny ones: the chapter's mixed example (the widget rescales the
# large ones).
MIXED = (10.5, -8.2, 9.1, -7.8, 0.001, -0.002, 0.0015, -0.0008)
QMAX = 127


def _per_tensor(w: Any, bits: int = 8, rounding: str = "half_away") -> tuple[np.ndarray, float]:
    w = np.asarray(w, dtype=np.float32)
    qt = core.quantize(w.reshape(1, -1), w.size, bits=bits,
                       rounding=rounding)  # type: ignore[arg-type]  # a str: quantize checks it
    return qt.values.reshape(w.shape), float(qt.scales.ravel()[0])


# --- pictures -----------------------------------------------------------------------------------

def _draw_grid(ax: Any, w: np.ndarray, q: np.ndarray, scale: float, lo: float, hi: float,
               title: str) -> None:
    k0, k1 = max(-QMAX, int(np.floor(lo / scale))), min(QMAX, int(np.ceil(hi / scale)))
    levels = np.arange(k0, k1 + 1) * scale
    if len(levels) <= 40:  # few levels in view: full-height lines
        ax.vlines(levels, -0.4, 1.4, color="0.8", lw=0.8, zorder=0, label="levels k·scale")
    else:  # the whole grid: a ruler along the bottom
        ax.vlines(levels, -0.4, -0.22, color="0.45", lw=0.5, zorder=0, label="levels k·scale")
    ax.axvspan(-scale / 2, scale / 2, color="tab:red", alpha=0.15, lw=0,
               label="zero cell |w| < scale/2")
    rec = q.astype(np.float32) * np.float32(scale)
    zero = (q == 0) & (w != 0)
    for x, r, z in zip(w, rec, zero, strict=True):
        ax.plot([x, r], [1, 0], color="tab:red" if z else "tab:blue", lw=1, alpha=0.7)
    ax.scatter(w[~zero], np.ones((~zero).sum()), color="tab:blue", zorder=3, label="kept")
    ax.scatter(w[zero], np.ones(zero.sum()), color="tab:red", marker="s", zorder=3,
               label="becomes 0")
    ax.scatter(rec, np.zeros_like(rec), color="black", marker="|", s=200, zorder=3,
               label="recovered q·scale")
    ax.set(xlim=(lo, hi), ylim=(-0.4, 1.4), xlabel="value", title=title)
    ax.set_yticks([0, 1], ["recovered", "weight"])


def plot_grid(w: Any, title: str = "") -> Figure:
    """The per-tensor grid (levels ``k * scale``) over the weights, each joined to ``q * scale``.

    Panels: the whole range; ``±3`` steps around 0; and, if weights became 0, a zoom on them.
    The legend sits outside the axes, to the right.
    """
    w = np.asarray(w, dtype=np.float32).ravel()
    q, s = _per_tensor(w)
    zeroed = (q == 0) & (w != 0)
    n = 3 if zeroed.any() else 2
    fig, axes = plt().subplots(n, 1, figsize=(9, 2.1 * n), layout="constrained")
    edge = 1.05 * QMAX * s
    _draw_grid(axes[0], w, q, s, -edge, edge, f"whole range: 255 levels, step = scale = {s:.4g}")
    _draw_grid(axes[1], w, q, s, -3 * s, 3 * s,
               f"±3 steps around 0: {int(zeroed.sum())} of {w.size} weights in the zero cell")
    if zeroed.any():
        span = 1.7 * float(np.abs(w[zeroed]).max())
        _draw_grid(axes[2], w, q, s, -span, span, "closer still: the weights that became 0")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_ratio_sweep(ratios: Sequence[float], zeroed: Sequence[float],
                     errors: Mapping[str, Sequence[float]]) -> Figure:
    """Left: % of weights that became 0 against the row ratio; right: ``errors`` (log-log)."""
    fig, (left, right_) = plt().subplots(1, 2, figsize=(11, 4), layout="constrained")
    left.plot(ratios, 100 * np.asarray(zeroed), "o-")
    left.set(xscale="log", xlabel="ratio of largest to smallest row std",
             ylabel="weights that became 0 (%)", title="One scale: small weights vanish")
    for (label, err), style in zip(errors.items(), ("o-", "o:", "s--", "s-."), strict=False):
        right_.plot(ratios, err, style, label=label)
    right_.set(xscale="log", yscale="log", xlabel="ratio of largest to smallest row std",
               ylabel="relative error ||w - w'|| / ||w||",
               title="The whole-tensor error hides the lost rows")
    right_.legend(fontsize=8, loc="center right")
    return fig


# --- the widget -----------------------------------------------------------------------------------

def show_magnitude(large: float = 0.3) -> None:
    """The mixed example with its largest weight set to ``large``: the small weights' fate."""

    w = np.array(MIXED, dtype=np.float64)
    w[:4] *= float(large) / 10.5
    w = w.astype(np.float32)
    q, s = _per_tensor(w)
    rows = tuple((float(x), float(x) / s, int(k)) for x, k in zip(w[4:], q[4:], strict=True))
    notes = (f"largest weight {float(np.abs(w).max()):.4g} -> scale {s:.4g}; "
             f"zero cell: |w| < scale/2 = {s / 2:.4g}",
             f"{int((q[4:] == 0).sum())} of the 4 small weights become 0")
    print(Table(("small weight", "weight / scale", "q"), rows, notes, {"weight / scale": ".4g"}))
    fig = plot_grid(w, title=f"Large weights up to {float(large):.4g}")
    show_figure(fig)


def magnitude_explorer() -> ipywidgets.Widget:
    """A slider over five decades (0.001 to 100) for the largest weight: :func:`show_magnitude`."""
    import ipywidgets as widgets

    slider = widgets.FloatLogSlider(value=0.3, base=10, min=-3, max=2, step=0.01,
                                    readout_format=".4g", description="largest |w|",
                                    continuous_update=False,
                                    layout=widgets.Layout(width="720px"))
    return live_widget(show_magnitude, "magnitude explorer", large=slider)


# --- exercises ----------------------------------------------------------------------------------

def _scale_hint(scale: float, w: np.ndarray, qmax: int) -> str:
    amax = float(np.abs(w).max())
    for value, hint in ((float(w.max()) / qmax, "use the largest magnitude, np.abs(w).max(), "
                        "not the largest signed value"),
                        (amax / QMAX, "at this bit width the largest level is "
                         "2**(bits - 1) - 1, not 127"),
                        (amax / (qmax + 1), "divide by 2**(bits - 1) - 1 (127 at 8 bits)"),
                        (qmax / amax, "the scale is max|w| / qmax, not its inverse")):
        if close_enough(scale, value, rel=1e-5):
            return hint
    return "the scale is the largest magnitude divided by the largest level"


def check_absmax_quantize(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: ``fn(w, bits)`` returns ``(q, scale)`` as per-tensor absmax quantization.

    Compared with :func:`gqlearn.quantize` (either rounding rule) on seeded random tensors, one
    whose largest magnitude is negative, and one at 4 bits.
    """
    rng = np.random.default_rng(1)
    cases = [(rng.standard_normal(12), 8), (0.01 * rng.standard_normal((3, 5)), 8),
             (np.array([0.5, -2.0, 1.0, 0.01]), 8), (rng.standard_normal((4, 4)), 4)]
    for w, bits in cases:
        w = w.astype(np.float32)
        what = f"a tensor of shape {w.shape} at {bits} bits"
        out, err = call_learner(fn, w.copy(), bits)
        if err is not None:
            return wrong(f"on {what} your function raised {err}")
        if out is None:
            return wrong("absmax_quantize returned None: write its body and return (q, scale).")
        if not isinstance(out, tuple) or len(out) != 2:
            return wrong("return two things: q, scale.")
        q, scale = np.asarray(out[0]), out[1]
        qmax = 2 ** (bits - 1) - 1
        _, ref_scale = _per_tensor(w, bits)
        if np.size(scale) != 1 or not close_enough(np.ravel(scale)[0], ref_scale, rel=1e-5):
            if np.size(scale) != 1:
                return wrong(f"on {what}: return one scale for the whole tensor.")
            return wrong(f"on {what} the scale is off: {_scale_hint(np.ravel(scale)[0], w, qmax)}.")
        if q.shape != w.shape:
            return wrong(f"on {what}: q has shape {q.shape}; it should have w's shape.")
        if q.dtype != np.int8:
            return wrong(f"q is {q.dtype}: store it as int8 with .astype(np.int8).")
        refs = [_per_tensor(w, bits, r)[0] for r in ("half_away", "half_even")]
        if any(np.array_equal(q, r) for r in refs):
            continue
        i = tuple(int(k) for k in np.argwhere(q != refs[0])[0])
        if np.abs(q).max() > qmax:
            hint = f"clip to ±{qmax} (2**(bits - 1) - 1)"
        elif np.array_equal(q, np.trunc(w / np.float32(ref_scale))):
            hint = "astype(np.int8) cuts toward zero: round w / scale first"
        else:
            hint = "check round(w / scale)"
        return wrong(f"on {what}, q{list(i)} is {int(q[i])}: {hint}.")
    return right(f"your absmax_quantize matches gqlearn.quantize on {len(cases)} tensors, "
                 "including one whose largest magnitude is negative and one at 4 bits.")


def check_survival_threshold(answer: Any) -> Feedback:
    """Exercise 2: the largest ``L`` for which 0.001 in ``[L, -L, 0.001]`` is not rounded to 0."""
    small, expected = 0.001, 2 * QMAX * 0.001
    if close_enough(answer, expected, rel=1e-6):
        return right(f"0.001 survives while 0.001 / (L / {QMAX}) >= 1/2, i.e. "
                     f"L <= {2 * QMAX} x 0.001 = {expected:g}.")
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return wrong("answer with a number.")
    if not value > 0:
        return wrong("L is a magnitude: answer with a positive number.")
    if close_enough(value, QMAX * small, rel=0.01):
        return wrong(f"at L = {value:g}, 0.001 is exactly one step; rounding keeps it until it "
                     "is half a step.")
    q = _per_tensor([value, -value, small])[0][2]
    if q == 0:
        return wrong(f"with L = {value:g}, 0.001 / (L / {QMAX}) = {small * QMAX / value:.3g} "
                     "rounds to 0: L is too large.")
    return wrong(f"with L = {value:g}, 0.001 is still kept (q = {int(q)}): L can grow further.")
