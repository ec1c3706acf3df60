"""Chapter 06 support: a real decoder LLM (SmolLM2-135M).

Only tables, the quality plot and the exercise checkers of ``06_decoder_llm.ipynb``; the
measurements are :func:`gqlearn.llm.evaluate_quantization` and code in the notebook.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import core
from ..formats import dequantize_minmax, quantize_minmax
from ..group_size import choose_group_size
from ..io.gguf import tensor_infos
from ..llm import Llama, QuantEvaluation, kl_divergence
from .display import Table, plt
from .exercises import Feedback, call_learner, close_enough, right, wrong

__all__ = ["ggml_bits_per_weight", "tensor_type_table", "distinct_per_block",
           "baseline_grid_table", "plot_quality", "flip_table", "scheme_table",
           "check_perplexity", "check_kl_divergence", "check_scale_count"]

Q4_1_BLOCK = 32  # weights per Q4_1 block (one float16 step and one float16 minimum)


def ggml_bits_per_weight(kind: str) -> float:
    """Storage of a ggml type in bits per weight, from ``gguf.GGML_QUANT_SIZES``.

    >>> ggml_bits_per_weight("Q4_1"), ggml_bits_per_weight("Q8_0"), ggml_bits_per_weight("F32")
    (5.0, 8.5, 32.0)
    """
    import gguf

    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]]
    return 8 * nbytes / block


def tensor_type_table(path: Any) -> Table:
    """Tensors and weights the GGUF file stores in each ggml type, with its bits per weight."""
    counts: dict[str, list[int]] = {}
    for _, kind, shape in tensor_infos(path):
        entry = counts.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += math.prod(shape)
    total = sum(n for _, n in counts.values())
    rows = tuple((kind, n, size, size / total, ggml_bits_per_weight(kind)) for kind, (n, size)
                 in sorted(counts.items(), key=lambda kv: -kv[1][1]))
    return Table(("ggml type", "tensors", "weights", "share", "bits/w"), rows,
                 formats={"share": ".1%", "bits/w": ".2f"})


def distinct_per_block(w: np.ndarray, block: int = Q4_1_BLOCK) -> np.ndarray:
    """Number of distinct values in each consecutive block of ``block`` weights.

    >>> distinct_per_block(np.array([[1.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0]]), block=4)
    array([3, 1])
    """
    s = np.sort(np.asarray(w).reshape(-1, block), axis=1)
    return (np.diff(s, axis=1) != 0).sum(axis=1) + 1


def baseline_grid_table(model: Llama, *, layer: int = 0, bits: Sequence[int] = (8, 4, 3),
                        group_size: int = Q4_1_BLOCK, asymmetric: bool = True) -> Table:
    """Re-quantize one layer's seven (dequantized Q4_1) matrices and compare block by block.

    Columns: mean and max distinct values per 32-block, share of blocks whose values all stay
    distinct, max and mean error in units of each block's Q4_1 step ``(max - min) / 15``, and
    the relative Frobenius error.  ``asymmetric`` adds Q4_1's own scheme as a last row.
    """
    mats = [model.weights[n] for n in model.linear_names() if n.startswith(f"blk.{layer}.")]
    w = np.concatenate([m.reshape(-1, Q4_1_BLOCK) for m in mats])
    before = distinct_per_block(w)
    step = (w.max(axis=1) - w.min(axis=1)) / 15
    step[step == 0] = 1.0
    rows = [("Q4_1 (the file)", "-", float(before.mean()), int(before.max()), 1.0, 0.0, 0.0, 0.0)]
    grids: list[tuple[str, int, Any]] = [
        (f"int{b}", 2 * core.qmax_for_bits(b) + 1,
         lambda m, b=b: core.dequantize(core.quantize(m, group_size, bits=b))) for b in bits]
    if asymmetric:
        grids.append(("int4 asym", 16,
                      lambda m: dequantize_minmax(quantize_minmax(m, group_size, bits=4))))
    for label, codes, roundtrip in grids:
        deq = np.concatenate([roundtrip(m).reshape(-1, Q4_1_BLOCK) for m in mats])
        after = distinct_per_block(deq)
        err = np.abs(deq - w) / step[:, None]
        rows.append((label, codes, float(after.mean()), int(after.max()),
                     float((after == before).mean()), float(err.max()), float(err.mean()),
                     float(np.linalg.norm(deq - w) / np.linalg.norm(w))))
    return Table(("grid", "codes", "levels/block", "max levels", "all levels kept",
                  "max err / Q4_1 step", "mean err / Q4_1 step", "rel. error"), tuple(rows),
                 notes=(f"layer {layer}: {w.size:,} weights in {len(w):,} blocks of "
                        f"{Q4_1_BLOCK}; re-quantized with group size {group_size}",),
                 formats={"levels/block": ".2f", "all levels kept": ".1%",
                          "max err / Q4_1 step": ".3f", "mean err / Q4_1 step": ".3f",
                          "rel. error": ".2%"})


def plot_quality(evaluation: QuantEvaluation, zoom_bits: Sequence[int] = (8, 4)):
    """Perplexity against the requested group size, one line per bit width.

    Left: the grouped ``zoom_bits`` settings on a linear axis, where the differences that
    matter are visible; right: every setting on a log axis, per-tensor included.
    """
    fig, (zoom, full) = plt().subplots(1, 2, figsize=(12, 4.4))
    base = evaluation.baseline.perplexity
    by_bits: dict[int, dict[Any, float]] = {}
    for r in evaluation.rows[1:]:
        by_bits.setdefault(r.setting.bits, {})[r.setting.group_size] = r.perplexity
    for i, (b, points) in enumerate(sorted(by_bits.items(), reverse=True)):
        grouped = sorted(g for g in points if g != "tensor")
        xs = list(range(len(grouped)))
        if b in zoom_bits:
            zoom.plot(xs, [points[g] for g in grouped], "o-", color=f"C{i}", label=f"int{b}")
        keys = grouped + (["tensor"] if "tensor" in points else [])
        full.plot(range(len(keys)), [points[g] for g in keys], "o-", color=f"C{i}",
                  label=f"int{b}")
    for ax in (zoom, full):
        ax.axhline(base, ls="--", color="gray", lw=1, label=f"{evaluation.baseline.label} "
                   "(baseline)")
        ax.set_xlabel("requested group size")
        ax.legend(loc="upper left", fontsize=9)
    names = [str(g) for g in grouped]
    zoom.set_xticks(range(len(names)), names)
    zoom.set(ylabel="perplexity (lower is better)",
             title=f"Grouped {' and '.join(f'int{b}' for b in zoom_bits)} (linear axis)")
    full.set_xticks(range(len(names) + 1), names + ["per-tensor"])
    full.set_yscale("log")
    full.set(ylabel="perplexity (log scale)", title="Every setting (log axis)")
    fig.tight_layout()
    return fig


def flip_table(evaluation: QuantEvaluation, labels: Sequence[str]) -> Table:
    """Where settings flip the baseline's top-1 token: KL, flips, how many lie below the
    baseline's median top-2 gap, the largest gap at a flip, and the near-ties (positions with
    a gap no larger than that)."""
    margins = evaluation.float_margins
    median = float(np.median(margins))
    rows = []
    for label in labels:
        r = evaluation.row(label)
        gaps = margins[list(r.disagree_at)]
        top = float(gaps.max()) if gaps.size else 0.0
        rows.append((r.label, f"{r.kl:.1e}", len(gaps), int((gaps < median).sum()),
                     f"{top:.2g}", int((margins <= top).sum()) if gaps.size else 0))
    return Table(("setting", "KL nats", "flips", "flips at gap < median", "largest gap",
                  "near-ties"), tuple(rows),
                 notes=(f"baseline top-2 gap: median {median:.2g} nats over {margins.size} "
                        "positions",))


def scheme_table(symmetric: QuantEvaluation, asymmetric: QuantEvaluation) -> Table:
    """Symmetric absmax against min + step (Q4_1's scheme) at the same bits and requested group
    size: bits per weight, perplexity (3 significant digits) and KL (2, as 1.2e-03)."""
    sym = {(r.setting.bits, r.setting.group_size): r for r in symmetric.rows[1:]}
    rows = []
    for a in asymmetric.rows[1:]:
        s = sym.get((a.setting.bits, a.setting.group_size))
        if s is None:
            continue
        rows.append((s.label, f"{s.bits_per_weight:.3f}", f"{s.perplexity:.3g}",
                     f"{a.perplexity:.3g}", f"{s.kl:.1e}", f"{a.kl:.1e}"))
    return Table(("setting", "bits/w", "perplexity sym", "perplexity asym", "KL sym",
                  "KL asym"), tuple(rows))


# --------------------------------------------------------------------------------------------
# Exercise checkers: they run the learner's function, name what differs, never the answer.
# --------------------------------------------------------------------------------------------

def _run(fn: Any, what: str, *args: Any) -> tuple[float | None, Feedback | None]:
    got, err = call_learner(fn, *args)
    if err is not None:
        return None, wrong(f"On {what} your function raised {err}")
    if got is None:
        return None, wrong("your function returns None: fill in its body and return a number.")
    try:
        return float(got), None
    except (TypeError, ValueError):
        return None, wrong(f"On {what} your function returned {type(got).__name__}, not a number.")


def check_perplexity(fn: Any) -> Feedback:
    """Exercise 1: ``fn(log_probs)`` is the perplexity of natural-log probabilities."""
    rng = np.random.default_rng(6)
    cases = [(f"{n} random log-probabilities", -rng.exponential(3.0, n)) for n in (5, 64, 385)]
    cases.append(("log-probabilities all log(1/4) (a uniform guess among 4 tokens)",
                  np.full(10, -math.log(4))))
    for what, lp in cases:
        got, fail = _run(fn, what, lp.copy())
        if fail is not None:
            return fail
        expected = math.exp(-lp.mean())
        if close_enough(got, expected, rel=1e-9):
            continue
        hints = [(math.exp(lp.mean()), "mind the sign: exp of the *negative* mean"),
                 (-lp.mean(), "that is the mean negative log-likelihood; take its exp"),
                 (math.exp(min(-lp.sum(), 700.0)), "use the mean over tokens, not the sum"),
                 (2 ** (-lp.mean()), "these are natural logarithms: use exp, not 2**")]
        for value, hint in hints:
            if close_enough(got, value, rel=1e-9):
                return wrong(f"On {what}: {hint}.")
        return wrong(f"On {what} your value differs; perplexity = exp(-mean(log_probs)).")
    return right(f"your perplexity matches exp(-mean log p) on {len(cases)} cases, including "
                 "a uniform guess among 4 tokens (perplexity 4).")


def check_kl_divergence(fn: Any) -> Feedback:
    """Exercise 2: ``fn(logits_p, logits_q)`` is the mean over positions of KL(p || q)."""
    rng = np.random.default_rng(7)
    z = rng.normal(0, 3, (6, 50))
    cases = [("two random (6, 50) logit arrays", z, z + rng.normal(0, 1, z.shape)),
             ("identical logits", z, z.copy()),
             ("logits that differ by a constant per row (the same distributions)",
              z, z + rng.normal(0, 5, (6, 1))),
             ("large logits (around 1000)", z + 1000, z + 1000 + rng.normal(0, 1, z.shape))]
    for what, zp, zq in cases:
        got, fail = _run(fn, what, zp.copy(), zq.copy())
        if fail is not None:
            return fail
        expected = kl_divergence(zp, zq)
        if close_enough(got, expected, rel=1e-6, abs_=1e-9):
            continue
        if not math.isfinite(got):
            return wrong(f"On {what} you got {got}: subtract each row's max before exp.")
        hints = [(kl_divergence(zq, zp), "that is KL(q || p): weight by the baseline's p"),
                 (expected * zp.shape[0], "take the mean over positions, not the sum"),
                 (expected / math.log(2), "use natural logarithms (nats), not log2")]
        for value, hint in hints:
            if close_enough(got, value, rel=1e-6):
                return wrong(f"On {what}: {hint}.")
        return wrong(f"On {what} your value differs. Turn each row of logits into "
                     "log-probabilities (log-softmax), then average sum(p * (log p - log q)).")
    return right(f"your KL matches on {len(cases)} cases, including shifted and large logits.")


def check_scale_count(answer: Any, model: Llama, requested: int = 128) -> Feedback:
    """Exercise 3: how many float32 scales the block matrices need at ``requested``."""
    if not isinstance(answer, (int, np.integer)) or isinstance(answer, bool):
        return wrong(f"set answer to a whole number of scales, got {answer!r}.")
    sizes = {n: choose_group_size(model.weights[n].shape[-1], requested)
             for n in model.linear_names()}
    expected = sum(model.weights[n].size // g for n, g in sizes.items())
    n = sum(model.weights[k].size for k in model.linear_names())
    narrow = model.config.hidden_size
    if answer == expected:
        return right(f"{expected:,} scales: the {narrow}-wide matrices use group size "
                     f"{choose_group_size(narrow, requested)}, ffn_down uses "
                     f"{choose_group_size(model.config.ffn_size, requested)}.")
    for value, hint in ((n // requested, f"{requested} does not divide {narrow}: those matrices "
                         "back off (gqlearn.choose_group_size)"),
                        (n // choose_group_size(narrow, requested),
                         f"ffn_down is {model.config.ffn_size} wide: its group size differs"),
                        (expected // model.config.n_layers, "that is one block; count all")):
        if answer == value:
            return wrong(hint + ".")
    return wrong("one scale per group: count the groups of every block matrix, with the group "
                 "size each matrix actually gets.")
