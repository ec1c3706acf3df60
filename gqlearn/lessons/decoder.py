"""Chapter 05: a real decoder LLM (SmolLM2-135M) under group-wise quantization.

Everything the notebook ``05_decoder_llm.ipynb`` computes or draws beyond the library call
:func:`gqlearn.llm.evaluate_quantization`:

* :func:`tensor_type_table`: what the GGUF file stores (Q4_1 matrices, a Q8_0 embedding, F32
  norms);
* :func:`distinct_per_block`, :func:`baseline_grid_table`: the honest baseline, i.e. the "float"
  weights are dequantized Q4_1, at most 16 distinct values per block of 32, and what
  re-quantizing them on gqlearn's symmetric grids does to those levels;
* :func:`backoff_table`: which group size each matrix gets when a request does not divide
  its width (576 = 2^6 * 9);
* :func:`rope_layout_table`: the empirical check that GGUF weights need RoPE on adjacent pairs;
* :func:`time_forward`: seconds per forward pass;
* :func:`plot_quality`: perplexity and agreement against bits per weight;
* ``check_*``: the exercise checkers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import core
from ..exercises import Feedback, close_enough, right, wrong
from ..group_size import choose_group_size
from ..llm import Llama, QuantEvaluation, perplexity, tensor_infos
from ..llm.llama import unpermute_qk
from .single_scale import Table

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["rope_layout_table", "tensor_type_table", "distinct_per_block", "baseline_grid_table", "backoff_table",
           "time_forward", "plot_quality", "count_scales", "check_perplexity",
           "check_scale_count", "check_smallest_setting", "EXERCISE_REQUEST",
           "AGREEMENT_THRESHOLD"]

Q4_1_BLOCK = 32  # weights per Q4_1 block (one float16 scale and one float16 minimum)


def tensor_type_table(path: Any) -> Table:
    """How many tensors, and weights, the GGUF file stores in each ggml type."""
    counts: dict[str, list[int]] = {}
    for _, kind, shape in tensor_infos(path):
        entry = counts.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += math.prod(shape)
    total = sum(n for _, n in counts.values())
    rows = tuple((kind, n, size, size / total) for kind, (n, size) in
                 sorted(counts.items(), key=lambda kv: -kv[1][1]))
    return Table(("ggml type", "tensors", "weights", "share"), rows,
                 formats={"share": ".1%"})


def distinct_per_block(w: np.ndarray, block: int = Q4_1_BLOCK) -> np.ndarray:
    """Number of distinct values in each consecutive block of ``block`` weights (per row).

    >>> distinct_per_block(np.array([[1.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0]]), block=4)
    array([3, 1])
    """
    s = np.sort(np.asarray(w).reshape(-1, block), axis=1)
    return (np.diff(s, axis=1) != 0).sum(axis=1) + 1


def _layer_matrices(model: Llama, layer: int) -> list[np.ndarray]:
    return [model.weights[n] for n in model.linear_names() if n.startswith(f"blk.{layer}.")]


def baseline_grid_table(model: Llama, *, layer: int = 0, bits: Sequence[int] = (8, 4, 3),
                        group_size: int = Q4_1_BLOCK) -> Table:
    """What re-quantizing dequantized Q4_1 weights does, block by block, for one layer.

    For each bit width, the layer's seven matrices are quantized with ``group_size`` (32 is
    aligned with the Q4_1 blocks) and compared with the weights they came from.

    Columns: ``levels/block`` (mean distinct values per 32-block, at most 16 before),
    ``blocks intact`` (share of blocks whose distinct values all stay distinct),
    ``max err / Q4_1 step`` and ``mean err / Q4_1 step`` (the error in units of each
    block's Q4_1 step ``(max - min) / 15``), and ``rel. error`` (relative Frobenius error).
    """
    mats = _layer_matrices(model, layer)
    w = np.concatenate([m.reshape(-1, Q4_1_BLOCK) for m in mats])
    before = distinct_per_block(w)
    step = (w.max(axis=1) - w.min(axis=1)) / 15
    step[step == 0] = 1.0
    rows = [("Q4_1 (the file)", "-", float(before.mean()), int(before.max()), 1.0, 0.0, 0.0, 0.0)]
    for b in bits:
        deq = np.concatenate([core.dequantize(core.quantize(m, group_size, bits=b))
                              .reshape(-1, Q4_1_BLOCK) for m in mats])
        after = distinct_per_block(deq)
        err = np.abs(deq - w) / step[:, None]
        rel = float(np.linalg.norm(deq - w) / np.linalg.norm(w))
        rows.append((f"int{b}", 2 * core.qmax_for_bits(b) + 1, float(after.mean()),
                     int(after.max()), float((after == before).mean()), float(err.max()),
                     float(err.mean()), rel))
    return Table(("grid", "codes", "levels/block", "max levels", "blocks intact",
                  "max err / Q4_1 step", "mean err / Q4_1 step", "rel. error"),
                 tuple(rows),
                 notes=(f"layer {layer}: {w.size:,} weights in {len(w):,} blocks of "
                        f"{Q4_1_BLOCK}; re-quantized with group size {group_size}",),
                 formats={"levels/block": ".2f", "blocks intact": ".1%",
                          "max err / Q4_1 step": ".3f", "mean err / Q4_1 step": ".3f",
                          "rel. error": ".2%"})


def backoff_table(model: Llama, requests: Sequence[int] = (32, 64, 128, 256),
                  policy: str = "pow2") -> Table:
    """The group size each matrix kind gets for each requested size (``choose_group_size``).

    Also lists the seeds' halving loop (``"halve"``), which agrees here because every request
    is a power of two.
    """
    kinds = {}
    for name in model.linear_names():
        if name.startswith("blk.0."):
            kinds[name.split(".")[2]] = model.weights[name].shape[-1]
    widths = sorted(set(kinds.values()))
    rows = []
    for req in requests:
        used = [choose_group_size(w, req, policy) for w in widths]  # type: ignore[arg-type]
        halve = [choose_group_size(w, req, "halve") for w in widths]
        rows.append((req, *used, "same" if halve == used else str(halve)))
    who = {w: "+".join(k for k, v in kinds.items() if v == w) for w in widths}

    def factor(w: int) -> str:  # w = 2^k * odd
        k = (w & -w).bit_length() - 1
        return f"2^{k} * {w >> k}"

    return Table(("requested", *[f"width {w}" for w in widths], "halving loop"), tuple(rows),
                 notes=tuple(f"width {w} = {factor(w)}: {who[w]}" for w in widths))


def rope_layout_table(model: Llama, ids: Sequence[int]) -> Table:
    """Perplexity of ``ids`` with the weights as stored (RoPE on adjacent pairs, the GGUF
    layout) and with the converter's q/k permutation undone (so the same rotation pairs the
    dimensions Hugging Face's rotate-half would not): the right layout is the far likelier one.
    """
    c = model.config
    undone = {}
    for i in range(c.n_layers):
        for kind, heads in (("attn_q", c.n_heads), ("attn_k", c.n_kv_heads)):
            name = f"blk.{i}.{kind}.weight"
            undone[name] = unpermute_qk(model.weights[name], heads)
    rows = (("q/k as stored (GGUF layout)", perplexity(model.forward(ids), ids)),
            ("q/k un-permuted (Hugging Face layout)",
             perplexity(model.with_weights(undone).forward(ids), ids)))
    return Table(("weights fed to adjacent-pair RoPE", "perplexity"), rows,
                 notes=(f"{len(ids)} tokens",), formats={"perplexity": ".2f"})


def time_forward(model: Llama, ids: Sequence[int], repeat: int = 3) -> float:
    """Best of ``repeat`` wall-clock times of one full forward pass, in seconds."""
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        model.forward(ids)
        best = min(best, time.perf_counter() - t0)
    return best


def plot_quality(evaluation: QuantEvaluation) -> Figure:
    """Perplexity (log scale) and top-1 agreement against bits per weight, one line per
    bit width, group sizes annotated; the float baseline as a dashed line."""
    import matplotlib.pyplot as plt

    fig, (ax_ppl, ax_agree) = plt.subplots(1, 2, figsize=(11, 4))
    base = evaluation.baseline
    by_bits: dict[int, list[Any]] = {}
    for r in evaluation.rows[1:]:
        by_bits.setdefault(r.setting.bits, []).append(r)  # type: ignore[arg-type]
    for b, rows in by_bits.items():
        rows = sorted(rows, key=lambda r: r.bits_per_weight)
        x = [r.bits_per_weight for r in rows]
        ax_ppl.plot(x, [r.perplexity for r in rows], "o-", label=f"int{b}")
        ax_agree.plot(x, [100 * r.agreement for r in rows], "o-", label=f"int{b}")
        for r in rows:
            tag = "pt" if r.setting.group_size is None else str(r.setting.group_size)
            ax_ppl.annotate(tag, (r.bits_per_weight, r.perplexity), textcoords="offset points",
                            xytext=(4, 4), fontsize=8)
            ax_agree.annotate(tag, (r.bits_per_weight, 100 * r.agreement),
                              textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax_ppl.axhline(base.perplexity, ls="--", color="gray", label="float (dequantized Q4_1)")
    ax_agree.axhline(100, ls="--", color="gray")
    ax_ppl.set_yscale("log")
    ax_ppl.set(xlabel="bits per weight (values + float32 scales)", ylabel="perplexity (log)",
               title="Perplexity on the text")
    ax_agree.set(xlabel="bits per weight (values + float32 scales)",
                 ylabel="top-1 agreement with float (%)", title="Next-token agreement",
                 ylim=(-5, 105))
    ax_ppl.legend()
    ax_agree.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Exercises
# --------------------------------------------------------------------------------------------

EXERCISE_REQUEST = 128  # exercise 2: requested group size
AGREEMENT_THRESHOLD = 0.95  # exercise 3


def check_perplexity(answer: Any, log_probs: np.ndarray) -> Feedback:
    """Exercise 1: the perplexity from the per-token log-probabilities ``log_probs``."""
    lp = np.asarray(log_probs, dtype=np.float64)
    expected = math.exp(-lp.mean())
    if close_enough(answer, expected, rel=1e-4):
        return right(f"exp(-mean log p) = exp({-lp.mean():.4f}) = {expected:.3f}: on average "
                     f"the model was as unsure as a uniform choice among {expected:.1f} tokens.")
    hints = [(math.exp(lp.mean()), "mind the sign: perplexity is exp of the *negative* mean "
                                   "log-probability"),
             (-lp.mean(), "that is the mean negative log-likelihood (cross-entropy in nats); "
                          "perplexity is its exponential"),
             (lp.mean(), "that is the mean log-probability; negate it and take exp"),
             (math.exp(-lp.sum()) if -lp.sum() < 700 else math.inf,
              "use the mean over tokens, not the sum"),
             (2 ** (-lp.mean()), "these are natural logarithms: use exp, not 2**")]
    for value, hint in hints:
        if math.isfinite(value) and close_enough(answer, value, rel=1e-4):
            return wrong(hint + ".")
    return wrong("perplexity = exp(-mean(log_probs)).")


def count_scales(model: Llama, requested: int) -> int:
    """float32 scales stored for all block matrices with group size ``requested`` (backed off
    per matrix with :func:`gqlearn.choose_group_size`)."""
    total = 0
    for name in model.linear_names():
        w = model.weights[name]
        total += w.size // choose_group_size(w.shape[-1], requested)
    return total


def check_scale_count(answer: Any, model: Llama, requested: int = EXERCISE_REQUEST) -> Feedback:
    """Exercise 2: how many scales the block matrices need at ``requested`` group size."""
    expected = count_scales(model, requested)
    c = model.config
    n = sum(model.weights[k].size for k in model.linear_names())
    narrow, wide = c.hidden_size, c.ffn_size
    g_narrow, g_wide = choose_group_size(narrow, requested), choose_group_size(wide, requested)
    if close_enough(answer, expected, rel=0):
        return right(f"{expected:,} scales ({4 * expected / 2**20:.2f} MiB of float32): the "
                     f"{narrow}-wide matrices use group size {g_narrow}, ffn_down ({wide} wide) "
                     f"uses {g_wide}.")
    hints = [(n // requested, f"{requested} does not divide {narrow}: those matrices back off "
                              f"to {g_narrow} (gqlearn.choose_group_size)"),
             (n // g_narrow, f"ffn_down is {wide} wide and uses group size {g_wide}"),
             (4 * expected, "count scales, not bytes"),
             (expected // c.n_layers, f"that is one block; there are {c.n_layers}")]
    for value, hint in hints:
        if value != expected and close_enough(answer, value, rel=0):
            return wrong(hint + ".")
    return wrong("for each block matrix, weights / choose_group_size(width, requested); "
                 f"add them up over all {len(model.linear_names())} matrices.")


def check_smallest_setting(answer: Any, evaluation: QuantEvaluation,
                           threshold: float = AGREEMENT_THRESHOLD) -> Feedback:
    """Exercise 3: the quantized setting with the fewest bits per weight whose top-1
    agreement is at least ``threshold``; ``answer`` is its label, e.g. ``"int8 g=64"``."""
    rows = evaluation.rows[1:]
    ok = [r for r in rows if r.agreement >= threshold]
    if not ok:
        return wrong(f"no setting reaches {threshold:.0%} agreement in this table.")
    best = min(ok, key=lambda r: r.bits_per_weight)
    labels = {r.label: r for r in rows}
    if not isinstance(answer, str) or answer.strip() not in labels:
        return wrong(f"answer with a setting label from the table, e.g. {rows[0].label!r}.")
    row = labels[answer.strip()]
    if row.agreement < threshold:
        return wrong(f"{row.label} agrees on {row.agreement:.1%} of positions, below "
                     f"{threshold:.0%}.")
    if row.bits_per_weight > best.bits_per_weight + 1e-9:
        return wrong(f"{row.label} qualifies, but {best.label} also reaches {threshold:.0%} "
                     f"with fewer bits per weight ({best.bits_per_weight:.3f} vs "
                     f"{row.bits_per_weight:.3f}).")
    return right(f"{row.label}: {row.bits_per_weight:.3f} bits per weight, "
                 f"{row.agreement:.1%} agreement, perplexity {row.perplexity:.2f} "
                 f"(float {evaluation.baseline.perplexity:.2f}).")
