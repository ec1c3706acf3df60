"""Chapter 04, choosing a group size: the sweep plot and the exercise checkers.

The chapter's computations (the sweep, the knee, the back-off policies, the memory counts, the
production table) are written in the notebook, where the learner reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..group_size import choose_group_size
from ..memory import GB, LLAMA2_CONFIGS
from .display import plt
from .exercises import Feedback, call_learner, close_enough, right, wrong

__all__ = ["LABELS", "MODEL_WIDTHS", "plot_sweep", "check_pick_group_size",
           "check_scale_overhead", "EXERCISE_SCALE_GROUP"]

LABELS = {"gaussian": "Gaussian", "laplace": "Laplace", "student_t": "Student-t",
          "outliers": "Gaussian + outlier columns"}

MODEL_WIDTHS = (288, 384, 576, 768, 896, 1536, 2048, 4096, 4864, 5120, 11008, 13824, 14336,
                28672)
"""Hidden and MLP widths of real models, from small llama2.c models to LLaMA-2 70B."""


def plot_sweep(rows: Sequence[Mapping[str, Any]],
               knees: Mapping[tuple[str, int], int] | None = None) -> Any:
    """SQNR (top) and relative error (bottom, log scale) against the group size, one column
    per bit width, one curve per matrix; knees starred.

    ``rows`` are dicts with keys ``matrix``, ``bits``, ``g``, ``sqnr_db``, ``relative_error``.
    """
    from matplotlib import ticker

    bit_widths = list(dict.fromkeys(r["bits"] for r in rows))
    matrices = list(dict.fromkeys(r["matrix"] for r in rows))
    fig, axes = plt().subplots(2, len(bit_widths), figsize=(4.2 * len(bit_widths), 6.6),
                               sharex=True, squeeze=False)
    for col, bits in enumerate(bit_widths):
        top, bottom = axes[0, col], axes[1, col]
        for i, name in enumerate(matrices):
            pts = [r for r in rows if r["bits"] == bits and r["matrix"] == name]
            g = [r["g"] for r in pts]
            color = f"C{i}"
            top.semilogx(g, [r["sqnr_db"] for r in pts], "o-", ms=3, color=color, base=2,
                         label=LABELS.get(name, name))
            bottom.loglog(g, [100 * r["relative_error"] for r in pts], "o-", ms=3,
                          color=color, base=2)
            if knees and (name, bits) in knees:
                k = next(r for r in pts if r["g"] == knees[(name, bits)])
                ms = 15 - 2.5 * i  # later stars smaller, so coinciding knees stay visible
                top.plot(k["g"], k["sqnr_db"], "*", ms=ms, color=color, markeredgecolor="k")
                bottom.plot(k["g"], 100 * k["relative_error"], "*", ms=ms, color=color,
                            markeredgecolor="k")
        top.set_title(f"{bits} bits: bits/weight = {bits} + 32/g", fontsize=10)
        top.set_ylabel("SQNR (dB)")
        bottom.set_ylabel("relative error (%, log scale)")
        bottom.set_yscale("log", base=10)
        bottom.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        bottom.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        bottom.yaxis.set_minor_formatter(ticker.NullFormatter())
        bottom.set_xlabel("group size g (log scale)")
        bottom.set_xticks([4, 16, 64, 256, 1024, 4096], ["4", "16", "64", "256", "1024", "4096"])
        top.grid(alpha=0.3)
        bottom.grid(alpha=0.3, which="both")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(matrices), fontsize=9,
               title="stars: knees (this course's heuristic)", title_fontsize=9)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


# --- exercises -------------------------------------------------------------------------------

def check_pick_group_size(fn: Callable[[int, int], int]) -> Feedback:
    """Exercise 1: ``fn(width, requested)`` returns ``requested`` if it divides ``width``,
    otherwise the largest power of two that is at most ``requested`` and divides ``width``
    (``gqlearn.choose_group_size``'s ``"pow2"`` policy).  Wrong answers are named by their
    input and what is wrong, never by the expected value."""
    rng = np.random.default_rng(4)
    cases = [(d, r) for d in MODEL_WIDTHS for r in (32, 64, 128, 256, 300)]
    cases += [(6, 4), (7, 5), (96, 96), (100, 300), (1, 1), (4096, 4096), (4096, 10000)]
    cases += [(int(32 * rng.integers(1, 400)), int(rng.integers(1, 600))) for _ in range(40)]
    for d, r in cases:
        expected = choose_group_size(d, r)
        got, err = call_learner(fn, d, r)
        if err is not None:
            return wrong(f"pick_group_size({d}, {r}) raised {err}")
        if got is None:
            return wrong("your function returned None: write its body and `return` a size.")
        if isinstance(got, bool) or not isinstance(got, (int, np.integer)):
            return wrong(f"pick_group_size({d}, {r}) returned a {type(got).__name__}; "
                         f"return an int.")
        got = int(got)
        if got <= 0 or d % got:
            return wrong(f"pick_group_size({d}, {r}) returned {got}, which does not divide {d}.")
        if got > r:
            return wrong(f"pick_group_size({d}, {r}) returned {got}, more than the {r} "
                         f"requested.")
        halving = (" Halving the request (300, 150, 75, ...) leaves the powers of two; start "
                   "from the largest power of two <= the request instead."
                   if got == choose_group_size(d, r, "halve") else "")
        if got != r and got & (got - 1):
            return wrong(f"pick_group_size({d}, {r}) returned {got}, not a power of two."
                         f"{halving}")
        if got != expected and d % r == 0:
            return wrong(f"pick_group_size({d}, {r}) returned {got}, but {r} itself divides "
                         f"{d}: keep the request when it fits.")
        if got != expected:
            return wrong(f"pick_group_size({d}, {r}) returned {got}, but a larger power of two "
                         f"at most {r} also divides {d}.{halving}")
    return right(f"all {len(cases)} cases match gqlearn.choose_group_size.")


EXERCISE_SCALE_GROUP = 512
"""Group size of exercise 2, not in the chapter's memory table."""


def check_scale_overhead(answer_gb: object) -> Feedback:
    """Exercise 2: GB of float32 scales for LLaMA-2 70B's linear layers at group size 512."""
    m = LLAMA2_CONFIGS["LLaMA-2 70B"]
    n, g = m.n_linear_params, EXERCISE_SCALE_GROUP
    expected = n / g * 4 / GB
    if answer_gb is None:
        return wrong("answer is None: replace it with a number of GB.")
    try:
        value = float(answer_gb)  # type: ignore[arg-type]  # any object: float() is the check
    except (TypeError, ValueError):
        return wrong(f"expected a number of GB, got {type(answer_gb).__name__}.")
    if close_enough(value, expected, rel=1e-3):
        return right(f"{value:.4f} GB: {n:,} linear weights / {g} = {n // g:,} scales × 4 "
                     f"bytes, i.e. 32/{g} = {32 / g:g} bits per weight.")
    hints = [(n / g * 2 / GB, "that counts 2-byte (float16) scales; the exercise asks for "
              "float32."),
             (n / g * 4 / 2**30, "that is GiB (2**30 bytes); the course uses GB = 1e9 bytes."),
             (m.n_params / g * 4 / GB, "that quantizes every parameter; only the linear layers "
              "(n_linear_params) are quantized here."),
             (n / g * 32 / GB, "that is gigabits: each scale is 32 bits = 4 bytes."),
             (n / g / GB, "that counts scales, not bytes: each is 4 bytes."),
             (70e9 / g * 4 / GB, "that uses the nominal 70e9 parameters; use "
              "LLAMA2_CONFIGS['LLaMA-2 70B'].n_linear_params.")]
    hints += [(n / other * 4 / GB, f"that is the scale cost at another group size; the "
               f"exercise asks for {g}.") for other in (32, 64, 128, 256)]
    for v, msg in hints:
        if close_enough(value, v, rel=1e-3):
            return wrong(msg)
    return wrong("scales = linear weights / group size; 4 bytes per scale; GB = 1e9 bytes.")
