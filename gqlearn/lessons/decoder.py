"""Chapter 05: a real decoder LLM (SmolLM2-135M) under group-wise quantization.

Everything the notebook ``05_decoder_llm.ipynb`` computes or draws beyond the library call
:func:`gqlearn.llm.evaluate_quantization`:

* :func:`tensor_type_table`, :func:`ggml_bits_per_weight`: what the GGUF file stores (Q4_1
  matrices, a Q8_0 embedding, F32 norms) and what each type costs per weight;
* :func:`distinct_per_block`, :func:`baseline_grid_table`: the honest baseline, i.e. the "float"
  weights are dequantized Q4_1, at most 16 distinct values per block of 32, and what
  re-quantizing them on gqlearn's symmetric grids (or on Q4_1's own asymmetric one) does to
  those levels;
* :func:`backoff_table`: which group size each matrix gets when a request does not divide
  its width (576 = 2^6 * 9);
* :func:`rope_layout_table`: the empirical check that GGUF weights need RoPE on adjacent pairs;
* :func:`context_table`: why the first tokens of a text have a higher perplexity;
* :func:`time_forward`, :func:`peak_memory_gb`: seconds per forward pass, peak memory;
* :func:`plot_quality`: perplexity and agreement against bits per weight;
* :func:`flip_table`: where the top-1 token flips, and how noisy the agreement counts are;
* :func:`scheme_table`: symmetric int4 against Q4_1's asymmetric scheme at equal storage;
* ``check_*``: the exercise checkers.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import core
from ..exercises import Feedback, close_enough, right, wrong
from ..group_size import choose_group_size
from ..llm import Llama, QuantEvaluation, perplexity, tensor_infos, token_log_probs
from ..llm.asymmetric import dequantize_minmax, quantize_minmax
from ..llm.evaluate import QuantRow
from ..llm.llama import unpermuted_qk_weights
from .display import Table

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["rope_layout_table", "tensor_type_table", "ggml_bits_per_weight",
           "distinct_per_block", "baseline_grid_table", "backoff_table", "context_table",
           "time_forward", "peak_memory_gb", "plot_quality", "flip_table", "scheme_table", "count_scales", "model_megabytes",
           "check_perplexity", "check_scale_count", "check_model_megabytes",
           "EXERCISE_REQUEST"]

Q4_1_BLOCK = 32  # weights per Q4_1 block (one float16 scale and one float16 minimum)


def ggml_bits_per_weight(kind: str) -> float:
    """Storage of a ggml type in bits per weight, from ``gguf.GGML_QUANT_SIZES``.

    >>> ggml_bits_per_weight("Q4_1"), ggml_bits_per_weight("Q8_0"), ggml_bits_per_weight("F32")
    (5.0, 8.5, 32.0)
    """
    import gguf

    block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]]
    return 8 * nbytes / block


def tensor_type_table(path: Any) -> Table:
    """How many tensors, and weights, the GGUF file stores in each ggml type, and the bits per
    weight of each type (Q4_1: 32 4-bit codes, a float16 step and a float16 minimum per 32)."""
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
    """Number of distinct values in each consecutive block of ``block`` weights (per row).

    >>> distinct_per_block(np.array([[1.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0]]), block=4)
    array([3, 1])
    """
    s = np.sort(np.asarray(w).reshape(-1, block), axis=1)
    return (np.diff(s, axis=1) != 0).sum(axis=1) + 1


def _layer_matrices(model: Llama, layer: int) -> list[np.ndarray]:
    return [model.weights[n] for n in model.linear_names() if n.startswith(f"blk.{layer}.")]


def baseline_grid_table(model: Llama, *, layer: int = 0, bits: Sequence[int] = (8, 4, 3),
                        group_size: int = Q4_1_BLOCK, asymmetric: bool = True) -> Table:
    """What re-quantizing dequantized Q4_1 weights does, block by block, for one layer.

    For each bit width, the layer's seven matrices are quantized with ``group_size`` (32 is
    aligned with the Q4_1 blocks) and compared with the weights they came from.  With
    ``asymmetric`` a last row re-quantizes with Q4_1's own scheme
    (:func:`gqlearn.llm.asymmetric.quantize_minmax`, 4 bits, float16 minimum and step).

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
        rel = float(np.linalg.norm(deq - w) / np.linalg.norm(w))
        rows.append((label, codes, float(after.mean()), int(after.max()),
                     float((after == before).mean()), float(err.max()), float(err.mean()), rel))
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
    undone = unpermuted_qk_weights(model)
    rows = (("q/k as stored (GGUF layout)", perplexity(model.forward(ids), ids)),
            ("q/k un-permuted (Hugging Face layout)",
             perplexity(model.with_weights(undone).forward(ids), ids)))
    return Table(("weights fed to adjacent-pair RoPE", "perplexity"), rows,
                 notes=(f"{len(ids)} tokens",), formats={"perplexity": ".2f"})


def context_table(model: Llama, ids: Sequence[int], *, first: int = 64,
                  window: tuple[int, int] = (200, 264)) -> Table:
    """Perplexity of the whole text, of its first ``first`` tokens, and of the tokens
    ``ids[a:b]`` (``window``) scored in place (after ``a`` tokens of context) and alone.

    One forward pass over the whole text gives every prediction in context (the model is
    causal, so the first ``first`` tokens score the same alone or in the full pass); a second
    pass over the window alone shows the same tokens without the text before them.
    """
    a, b = window
    if not 0 < a < b <= len(ids) or first > len(ids):
        raise ValueError(f"need 0 < a < b <= {len(ids)} and first <= {len(ids)}; got window "
                         f"{window}, first {first}")
    lp = token_log_probs(model.forward(ids), ids)

    def ppl(x: np.ndarray) -> float:
        return float(np.exp(-x.mean()))

    rows = (("whole text", len(ids), ppl(lp)),
            (f"first {first} tokens", first, ppl(lp[:first - 1])),
            (f"tokens {a}-{b - 1}, after {a} tokens of text", b - a, ppl(lp[a:b - 1])),
            (f"tokens {a}-{b - 1}, alone", b - a,
             perplexity(model.forward(ids[a:b]), ids[a:b])))
    return Table(("tokens scored", "tokens", "perplexity"), rows,
                 formats={"perplexity": ".2f"})


def peak_memory_gb() -> float:
    """Peak resident memory of this process so far, in GB (10^9 bytes); nan where the
    ``resource`` module is missing (Windows)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return math.nan
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9  # bytes / KiB


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
    bit width, points labelled with the requested group size (``*``: backed off on some
    matrices); the baseline as a star at its own bits per weight and a dashed line."""
    import matplotlib.pyplot as plt

    fig, (ax_ppl, ax_agree) = plt.subplots(1, 2, figsize=(11, 4.2))
    base = evaluation.baseline
    by_bits: dict[int, list[Any]] = {}
    for r in evaluation.rows[1:]:
        by_bits.setdefault(r.setting.bits, []).append(r)  # type: ignore[arg-type]
    backed_off = False
    for b, rows in by_bits.items():
        rows = sorted(rows, key=lambda r: r.bits_per_weight)
        x = [r.bits_per_weight for r in rows]
        ax_ppl.plot(x, [r.perplexity for r in rows], "o-", label=f"int{b}")
        ax_agree.plot(x, [100 * r.agreement for r in rows], "o-", label=f"int{b}")
        for k, r in enumerate(rows):  # neighbours alternate above / below their point
            if r.setting.group_size is None:  # the leftmost point: label to its left
                tag, off, ha = "per-tensor", (-5, 5), "right"
            else:
                tag = str(r.setting.group_size) + ("*" if r.label != r.setting.label else "")
                backed_off |= tag.endswith("*")
                off, ha = ((4, 5) if k % 2 == 0 else (4, -12)), "left"
            for ax, y in ((ax_ppl, r.perplexity), (ax_agree, 100 * r.agreement)):
                ax.annotate(tag, (r.bits_per_weight, y), textcoords="offset points",
                            xytext=off, fontsize=8, ha=ha)
    for ax, y in ((ax_ppl, base.perplexity), (ax_agree, 100.0)):
        ax.axhline(y, ls="--", color="gray", lw=0.8)
        ax.plot([base.bits_per_weight], [y], "*", color="black", ms=11,
                label=f"{base.label} (baseline)")
        xs = [r.bits_per_weight for r in evaluation.rows[1:]]
        ax.set_xlim(min(xs) - 0.8, max(xs) + 0.5)
        ax.set_xlabel("bits per weight of the block matrices")
        ax.legend(loc="best", fontsize=8)
    ax_ppl.set_yscale("log")
    ax_ppl.set(ylabel="perplexity (log scale)", title="Perplexity on the text")
    ax_agree.set(ylabel="top-1 agreement with the baseline (%)",
                 title="Next-token agreement", ylim=(-5, 108))
    note = "points: requested group size"
    if backed_off:
        note += ";  *: backed off to a smaller group size on some matrices"
    fig.text(0.5, 0.01, note, ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def flip_table(evaluation: QuantEvaluation, labels: Sequence[str]) -> Table:
    """Where the settings ``labels`` flip the baseline's top-1 token.

    Columns: KL (nats per token), positions flipped, how many of those lie where the
    baseline's gap between its top two log-probabilities is below its median gap, the largest
    gap at a flip, and the near-ties: positions whose gap is at most that largest gap.  Which
    of the near-ties flip is close to luck, so counts of a few flips are noise.
    """
    margins = evaluation.float_margins
    median = float(np.median(margins))
    rows = []
    for label in labels:
        r = evaluation.row(label)
        gaps = margins[list(r.disagree_at)]
        top = float(gaps.max()) if gaps.size else 0.0
        rows.append((r.label, r.kl, f"{len(gaps)}/{r.n_positions}",
                     f"{int((gaps < median).sum())}/{len(gaps)}", top,
                     int((margins <= top).sum()) if gaps.size else 0))
    return Table(("setting", "KL nats", "flips", "flips at gap < median", "largest gap",
                  "near-ties"), tuple(rows),
                 notes=(f"baseline top-2 gap: median {median:.3f} nats over {margins.size} "
                        f"positions; near-ties: positions with a gap <= the largest gap",),
                 formats={"KL nats": ".5f", "largest gap": ".3f"})


def scheme_table(symmetric: QuantEvaluation, asymmetric: QuantEvaluation, bits: int = 4) -> Table:
    """Symmetric absmax against asymmetric min + scale rows, matched by bits and requested
    group size: bits per weight, perplexity ratio to the baseline, KL and agreement."""
    sym = {(r.setting.bits, r.setting.group_size): r for r in symmetric.rows[1:]}
    rows = []
    for a in asymmetric.rows[1:]:
        s = sym.get((a.setting.bits, a.setting.group_size))
        if a.setting.bits != bits or s is None:
            continue
        cost = (f"{s.bits_per_weight:.3f}" if abs(s.bits_per_weight - a.bits_per_weight) < 1e-9
                else f"{s.bits_per_weight:.3f} / {a.bits_per_weight:.3f}")
        rows.append((s.label, cost, s.perplexity / symmetric.baseline.perplexity,
                     a.perplexity / asymmetric.baseline.perplexity, s.kl, a.kl,
                     f"{s.agreement:.1%}", f"{a.agreement:.1%}"))
    return Table(("setting", "bits/w", "ppl ratio sym", "ppl ratio asym", "KL sym", "KL asym",
                  "agree sym", "agree asym"), tuple(rows),
                 formats={"ppl ratio sym": ".3f", "ppl ratio asym": ".3f", "KL sym": ".4f",
                          "KL asym": ".4f"})


# --------------------------------------------------------------------------------------------
# Exercises
# --------------------------------------------------------------------------------------------

EXERCISE_REQUEST = 128  # exercise 2: requested group size


def check_perplexity(answer: Any, log_probs: np.ndarray) -> Feedback:
    """Exercise 1: the perplexity from the per-token log-probabilities ``log_probs``."""
    if answer is None:
        return wrong("set answer to a number: the perplexity of these tokens.")
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
    return wrong("perplexity is a number >= 1 built from the *mean* log-probability; see the "
                 "definition in section 6.")


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
    if answer is None:
        return wrong("set answer to a whole number: how many float32 scales.")
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
    return wrong("one scale per group: count the groups of every block matrix, with the group "
                 "size each matrix actually gets.")


def _norm_names(model: Llama) -> list[str]:
    return [k for k, w in model.weights.items() if w.ndim == 1]


def model_megabytes(model: Llama, block_bits: float, embedding_bits: float,
                    norm_bits: float = 32.0) -> float:
    """Size in MB (10^6 bytes) of ``model`` with its block matrices at ``block_bits``, the
    embedding at ``embedding_bits`` and the 1-D norm weights at ``norm_bits`` per weight."""
    blocks = sum(model.weights[k].size for k in model.linear_names())
    embedding = model.weights["token_embd.weight"].size
    norms = sum(model.weights[k].size for k in _norm_names(model))
    return (blocks * block_bits + embedding * embedding_bits + norms * norm_bits) / 8e6


def check_model_megabytes(answer: Any, model: Llama, row: QuantRow,
                          embedding_bits: float) -> Feedback:
    """Exercise 3: the whole model's size in MB with the block matrices stored as in ``row``,
    the embedding at ``embedding_bits`` per weight and the norms in float32."""
    if answer is None:
        return wrong("set answer to a number of megabytes (10^6 bytes).")
    expected = model_megabytes(model, row.bits_per_weight, embedding_bits)
    share = model.weights["token_embd.weight"].size / model.n_parameters
    if close_enough(answer, expected, rel=5e-4):
        f32 = model_megabytes(model, 32, 32)
        return right(f"{expected:.2f} MB: blocks at {row.bits_per_weight:.4f} bits/w, the "
                     f"embedding at {embedding_bits:g} and the norms at 32; float32 would take "
                     f"{f32:.1f} MB ({f32 / expected:.2f}x more).")
    hints = [(model_megabytes(model, row.bits_per_weight, row.bits_per_weight,
                              row.bits_per_weight),
              f"only the block matrices are at {row.bits_per_weight:.4f} bits/w; the embedding "
              f"stays at {embedding_bits:g} and the norms at 32"),
             (model_megabytes(model, row.bits_per_weight, 32),
              f"the embedding stays as stored in the file, at {embedding_bits:g} bits/w"),
             (model_megabytes(model, row.bits_per_weight, embedding_bits, 0),
              "add the norm weights (float32, the 1-D tensors)"),
             (model_megabytes(model, row.bits_per_weight, 0),
              f"add the token embedding ({share:.0%} of the weights)"),
             (8 * expected, "that is in megabits: divide by 8 for bytes"),
             (expected * 1e6 / 2**20, "that is in MiB (2^20 bytes); the question asks for MB "
                                      "(10^6 bytes)")]
    if row.setting.group_size is not None:
        nominal = row.setting.bits + 32 / row.setting.group_size  # type: ignore[operator]
        hints.append((model_megabytes(model, nominal, embedding_bits),
                       f"{nominal:g} bits/w assumes group size {row.setting.group_size} on "
                       f"every matrix; use the row's bits_per_weight (group sizes actually used)"))
    for value, hint in hints:
        if not close_enough(value, expected, rel=5e-4) and close_enough(answer, value, rel=5e-4):
            return wrong(hint + ".")
    return wrong("add up bits over the three kinds of tensors (block matrices, embedding, "
                 "norms), each at its own bits per weight, then convert to bytes.")
