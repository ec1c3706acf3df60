"""Chapter 02 support: the pictures, the widget and the exercise checkers.

The chapter's computations are in the notebook ``02_group_scales.ipynb``, written out in numpy;
this module only draws and checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import core
from .display import Table, live_widget, plain_log_labels, plt, show_figure
from .exercises import Feedback, call_learner, close_enough, right, wrong

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets
    from matplotlib.figure import Figure

__all__ = ["SIXTEEN", "plot_error_vs_group_size", "plot_relative_error", "show_group_size",
           "group_size_explorer", "check_quantize_groups", "check_total_bytes"]

# Eight weights around 4 and eight around 0.01: the widget's example.
SIXTEEN = (5.0, -4.2, 3.8, -3.1, 4.5, -2.9, 3.2, -4.1,
           0.01, -0.008, 0.012, -0.015, 0.009, -0.011, 0.007, -0.013)
QMAX = 127


# --- pictures -----------------------------------------------------------------------------------

def plot_error_vs_group_size(group_sizes: Sequence[int], errors: Mapping[str, Sequence[float]],
                             bits_per_weight: Sequence[float] | None = None) -> Figure:
    """Relative errors against group size, both axes logarithmic; bits/weight under each tick."""
    fig, ax = plt().subplots(figsize=(9, 4.2), layout="constrained")
    for (label, err), style in zip(errors.items(), ("o-", "s--", "^:"), strict=False):
        ax.plot(group_sizes, err, style, label=label)
    bits_note = "" if bits_per_weight is None else "; under it, bits per weight (b/w)"
    ax.set(xscale="log", yscale="log", xlabel="group size (weights per scale)" + bits_note,
           ylabel="relative error ||w - w'|| / ||w||",
           title="Smaller groups, smaller error (log axes)")
    labels = [f"{g}" if bits_per_weight is None else f"{g}\n{b:.3g} b/w"
              for g, b in zip(group_sizes, bits_per_weight or group_sizes, strict=True)]
    ax.set_xticks(group_sizes, labels, fontsize=8)
    ax.minorticks_off()
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def _rel_per_weight(w: np.ndarray, group_size: int) -> np.ndarray:
    rec = core.dequantize(core.quantize(w, group_size))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w != 0, np.abs(w - rec) / np.abs(w), 0.0)


def plot_relative_error(w: Any, group_sizes: Sequence[int]) -> Figure:
    """Each weight's relative error ``|w - w'| / |w|`` in % on a log axis, per group size.

    A weight recovered exactly (error 0) is drawn as a hollow marker on the bottom edge.
    """
    w = np.asarray(w, dtype=np.float32).ravel()
    fig, ax = plt().subplots(figsize=(9, 3.8), layout="constrained")
    floor = 1e-3
    idx = np.arange(w.size)
    colors = ("tab:red", "tab:blue", "tab:green")
    for k, (g, color) in enumerate(zip(group_sizes, colors, strict=False)):
        x = idx + (k - (len(group_sizes) - 1) / 2) * 0.25
        rel = 100 * _rel_per_weight(w, g)
        exact = rel == 0
        ax.scatter(x[~exact], rel[~exact], color=color, label=f"group size {g}"
                   + (" (one scale)" if g == w.size else ""))
        ax.scatter(x[exact], np.full(exact.sum(), floor), facecolors="none", edgecolors=color)
    ax.set_yscale("log")
    plain_log_labels(ax.yaxis)  # the group-size explorer draws it: no mathtext
    ax.set_ylim(floor / 1.5, 300)
    ax.set_xticks(idx, [f"{x:.3g}" for x in w], rotation=45, fontsize=8)
    ax.set(xlabel="weight", ylabel="relative error |w - w'| / |w| (%)",
           title="Per weight: 100% means the weight became 0; hollow = recovered exactly")
    fig.legend(fontsize=8, loc="outside right upper")
    return fig


# --- the widget -----------------------------------------------------------------------------------

def show_group_size(w: Any, group_size: int) -> None:
    """One group size on ``w``: bytes, zeroed weights, a table per group, the error plot."""

    w = np.asarray(w, dtype=np.float32).ravel()
    qt = core.quantize(w, group_size)
    values = qt.values.reshape(-1, group_size)
    zeroed = (values == 0) & (w.reshape(-1, group_size) != 0)
    worst = float(_rel_per_weight(w, group_size).max())
    print(f"group size {group_size}: {qt.n_groups} scale(s), {qt.nbytes} bytes, "
          f"{qt.bits_per_weight:g} bits/weight; {int(zeroed.sum())} weights became 0; "
          f"worst relative error {100 * worst:.3g}%")
    rows = tuple((g, float(s), values[g], int(zeroed[g].sum()))
                 for g, s in enumerate(qt.scales))
    print(Table(("group", "scale", "q", "zeroed"), rows, formats={"scale": ".5g"}))
    sizes = [group_size] if group_size == w.size else [w.size, group_size]
    fig = plot_relative_error(w, sizes)
    show_figure(fig)


def group_size_explorer(w: Any = SIXTEEN) -> ipywidgets.Widget:
    """Buttons for every group size that divides ``w.size``: :func:`show_group_size`."""
    import ipywidgets as widgets

    w = np.asarray(w, dtype=np.float32).ravel()
    sizes = [d for d in range(1, w.size + 1) if w.size % d == 0]
    pick = widgets.ToggleButtons(options=sizes, value=sizes[-2], description="group size",
                                 style={"button_width": "56px"})
    return live_widget(lambda group_size: show_group_size(w, group_size), "group-size explorer",
                       group_size=pick)


# --- exercises ----------------------------------------------------------------------------------

def _cases() -> list[tuple[str, np.ndarray, int]]:
    rng = np.random.default_rng(2)
    rows = (rng.standard_normal((3, 64)) * np.geomspace(1, 1e-3, 3)[:, None]).astype(np.float32)
    zero = rng.standard_normal((2, 8)).astype(np.float32)
    zero[1, 4:] = 0
    return [("a 4 x 32 tensor, group size 8", rng.standard_normal((4, 32)).astype(np.float32), 8),
            ("a 3 x 64 tensor whose rows differ in magnitude, group size 16", rows, 16),
            ("16 weights in groups of 4", rng.standard_normal(16).astype(np.float32), 4),
            ("a 2 x 8 tensor with an all-zero group, group size 4", zero, 4),
            ("a 2 x 6 tensor, group size 6 (one scale per row)",
             rng.standard_normal((2, 6)).astype(np.float32), 6)]


def _scale_hint(mine: np.ndarray, ref: np.ndarray, groups: np.ndarray) -> str:
    g = int(np.flatnonzero(~np.isclose(mine, ref, rtol=1e-5, atol=0))[0])
    if not np.abs(groups[g]).max():
        return (f"group {g} is all zeros and its scale is {mine[g]}: is an all-zero group "
                "guarded? gqlearn gives it scale 1.0, so nothing divides by 0")
    for value, hint in ((np.abs(groups[g]).max() / 128, "divide by 127, not 128"),
                        (groups[g].max() / QMAX, "use the largest magnitude, np.abs(...), not "
                         "the largest signed value"),
                        (np.abs(groups).max() / QMAX, "that is the whole tensor's scale; take "
                         "the max along axis=1, one per group")):
        if close_enough(mine[g], value, rel=1e-5):
            return f"group {g}: {hint}"
    return f"group {g}'s scale is off: max |w| over the group, divided by 127"


def check_quantize_groups(fn: Callable[..., Any]) -> Feedback:
    """Exercise 1: ``fn(w, group_size)`` returns ``(values, scales)`` like :func:`gqlearn.quantize`.

    Runs on seeded random tensors and edge cases (an all-zero group, as many groups as weights
    per group, one group per row); either rounding rule is accepted.
    """
    cases = _cases()
    for what, w, gs in cases:
        out, err = call_learner(fn, w.copy(), gs)
        if err is not None:
            hint = (" Did you use keepdims=True, so that each group is divided by its own scale?"
                    if "broadcast" in err else "")
            return wrong(f"on {what} your function raised {err}.{hint}")
        if out is None:
            return wrong("quantize_groups returned None: write its body and return "
                         "(values, scales).")
        if not isinstance(out, tuple) or len(out) != 2:
            return wrong("return two things: values, scales.")
        values, scales = np.asarray(out[0]), np.asarray(out[1], dtype=np.float64).ravel()
        ref = {r: core.quantize(w, gs, rounding=r) for r in ("half_away", "half_even")}
        groups = w.reshape(-1, gs)
        if scales.size != groups.shape[0]:
            return wrong(f"on {what}: {scales.size} scales for {groups.shape[0]} groups; one "
                         "scale per row of w.reshape(-1, group_size).")
        ref_scales = ref["half_away"].scales.ravel().astype(np.float64)
        if not np.allclose(scales, ref_scales, rtol=1e-6, atol=0):
            return wrong(f"on {what}: " + _scale_hint(scales, ref_scales, groups) + ".")
        if values.shape != w.shape:
            return wrong(f"on {what}: values have shape {values.shape}; reshape them back to "
                         "w.shape.")
        if values.dtype != np.int8:
            return wrong(f"values are {values.dtype}: store them as int8 with .astype(np.int8).")
        if any(np.array_equal(values, qt.values) for qt in ref.values()):
            continue
        i = tuple(int(k) for k in np.argwhere(values != ref["half_away"].values)[0])
        scales32 = ref["half_away"].scales.reshape(-1, 1)
        if groups.shape[0] == groups.shape[1]:  # only then does a missing keepdims run at all
            alt = np.round(groups / (np.abs(groups).max(axis=1) / np.float32(QMAX)))
            fits = np.abs(alt) <= QMAX
            no_keepdims = np.array_equal(values.reshape(groups.shape)[fits], alt[fits])
        else:
            no_keepdims = False
        if no_keepdims:
            hint = "did you use keepdims? Without it each column, not each group, gets a scale"
        elif np.array_equal(values, np.trunc(groups / scales32).reshape(w.shape)):
            hint = "astype(np.int8) cuts toward zero: round first"
        else:
            hint = "check round(group / its scale), then the reshape back"
        return wrong(f"on {what}, values{list(i)} is {int(values[i])}: {hint}.")
    return right(f"your quantize_groups matches gqlearn.quantize on {len(cases)} tensors, "
                 "including an all-zero group.")


def check_total_bytes(answer: Any) -> Feedback:
    """Exercise 2: bytes of a 4096 x 4096 int8 matrix with group size 128, scales in float32."""
    qt = core.quantize(np.zeros((4096, 4096), np.float32), 128)
    if close_enough(answer, qt.nbytes, rel=0):
        return right(f"{qt.values_nbytes:,} bytes of int8 values + {qt.n_groups:,} float32 "
                     f"scales x 4 bytes = {qt.nbytes:,} bytes, {qt.bits_per_weight:g} bits "
                     "per weight.")
    f32 = "the scales are float32: 4 bytes each"
    for value, hint in ((qt.values_nbytes, "that counts the int8 values only; add the scales"),
                        (4 * qt.size, "that is the float32 size; int8 takes 1 byte per weight"),
                        (qt.values_nbytes + qt.n_groups, f32),
                        (qt.values_nbytes + 2 * qt.n_groups, f32),
                        (8 * qt.nbytes, "that is in bits; the question asks for bytes"),
                        (qt.values_nbytes + 4 * 4096, "that is one scale per row; a row of "
                         "4096 weights holds 32 groups of 128")):
        if close_enough(answer, value, rel=0):
            return wrong(hint + ".")
    return wrong("count 1 byte per weight plus 4 bytes per group of 128.")
