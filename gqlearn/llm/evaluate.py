"""What group-wise quantization does to a decoder's predictions: perplexity and agreement.

For each setting (bits, group size) every block matrix of the model (``attn_q``, ``attn_k``,
``attn_v``, ``attn_output``, ``ffn_gate``, ``ffn_up``, ``ffn_down``: 210 matrices in
SmolLM2-135M) is quantized with :func:`gqlearn.quantize` and dequantized back to float32; the
model then reads a text and we compare its next-token predictions with the float model's:

* **perplexity** ``exp(mean NLL)`` of the text's tokens (lower is better; the float model's is
  the baseline);
* **agreement**: the fraction of positions where the quantized model's most likely next token
  (top-1) is the float model's;
* **KL**: the mean Kullback-Leibler divergence from the float model's next-token distribution
  to the quantized one's, in nats per token.

What is quantized, and what is not
----------------------------------
The token embedding (which, tied, is also the output matrix) and the RMSNorm weights stay as
they are by default: the embedding is a lookup table whose rows are read one token at a time,
and schemes such as llama.cpp's keep the output/embedding matrix at higher precision than the
blocks.  In SmolLM2-135M's GGUF the embedding is already stored as Q8_0 (8-bit, group 32).
``include_embedding=True`` quantizes it too, to measure the difference.

Group sizes run along each matrix's input axis (its rows, ``in_features`` long).  A requested
group size that does not divide a matrix's width is reduced with
:func:`gqlearn.choose_group_size` (largest power of two that divides): in SmolLM2 the widths are
576 = 2^6 * 9 and 1536 = 2^9 * 3, so 128 and 256 back off to 64 on every matrix but
``ffn_down``.  :attr:`QuantEvaluation.rows` reports the group sizes actually used, and a row's
label shows them when they differ from the request (``"int8 g=128\u219264/128"``).

Asymmetric settings (``Setting(4, 32, asymmetric=True)``, label ``"int4 asym g=32"``) use
:func:`gqlearn.formats.quantize_minmax` instead: a float16 minimum and step per group,
llama.cpp's Q4_1 scheme at 4 bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Protocol

import numpy as np

from ..core import dequantize, quantize
from ..formats import dequantize_minmax, quantize_minmax
from ..group_size import GroupSize, Policy, resolve_group_size, setting_label
from .llama import Llama

__all__ = ["Setting", "FakeQuantizedWeights", "QuantRow", "QuantEvaluation",
           "fake_quantize_linear_weights", "logsumexp", "kl_divergence", "token_log_probs",
           "perplexity", "next_token_agreement", "evaluate_quantization", "load_sample_text",
           "SAMPLE_TEXT_SOURCE"]

SAMPLE_TEXT_SOURCE = ("Lewis Carroll, Alice's Adventures in Wonderland (1865), Chapter I, first "
                      "five paragraphs (Project Gutenberg eBook #11; public domain)")


def load_sample_text() -> str:
    """The course's measurement text: the opening of *Alice's Adventures in Wonderland*.

    See :data:`SAMPLE_TEXT_SOURCE`; about 300 tokens with SmolLM2's tokenizer.
    """
    return (resources.files("gqlearn") / "data" / "alice_chapter1.txt").read_text("utf-8")


@dataclass(frozen=True)
class Setting:
    """One quantization setting: ``bits`` (None for the float baseline), the requested
    ``group_size`` (an int, ``"row"``, or ``"tensor"`` for one scale per matrix; None only for
    the baseline), and whether the grid is ``asymmetric`` (a minimum and a step per group, as in
    Q4_1) instead of symmetric absmax."""

    bits: int | None = None
    group_size: GroupSize | None = None
    asymmetric: bool = False

    @property
    def label(self) -> str:
        """E.g. ``"float"``, ``"int8 g=32"``, ``"int4 per-tensor"``, ``"int4 asym g=32"``."""
        if self.bits is None:
            return "float"
        return setting_label(self.bits, self.group_size, asymmetric=self.asymmetric)


@dataclass(frozen=True)
class FakeQuantizedWeights:
    """A model's matrices quantized and dequantized back to float32 ("fake quantization").

    What :func:`fake_quantize_linear_weights` returns: the weights hold float32 copies that
    carry the rounding error, not the quantized values themselves (for those, see
    :class:`gqlearn.llm.QuantizedLlama`).

    Attributes
    ----------
    weights : dict of str to numpy.ndarray
        float32 dequantized matrices by GGUF name, for :meth:`Llama.with_weights`.
    group_sizes : dict of str to int
        The group size used for each matrix (its full size for per-tensor).
    bits_per_weight : float
        Storage of the quantized matrices: packed values plus one float32 scale per group
        (symmetric) or one float16 step and one float16 minimum per group (asymmetric).
    n_weights : int
        Number of weights quantized.
    """

    weights: dict[str, np.ndarray]
    group_sizes: dict[str, int]
    bits_per_weight: float
    n_weights: int

    def group_sizes_by_width(self) -> dict[int, int]:
        """Group size used per input width: ``{576: 64, 1536: 128}`` for a request of 128.

        For per-tensor quantization the value is a matrix's size (larger than its width).
        """
        return {self.weights[name].shape[-1]: gs for name, gs in self.group_sizes.items()}


def fake_quantize_linear_weights(model: Llama, bits: int, group_size: GroupSize, *,
                                 include_embedding: bool = False, policy: Policy = "pow2",
                                 asymmetric: bool = False) -> FakeQuantizedWeights:
    """Quantize and dequantize every block matrix of ``model`` (and optionally the embedding).

    The result is float32 ("fake quantization"): a model built from it with
    :meth:`Llama.with_weights` predicts as the quantized model does, with the float model's
    memory and speed.

    Parameters
    ----------
    model : Llama
    bits : int
        2 to 8.
    group_size : int, "row" or "tensor"
        Requested group size along each matrix's input axis; reduced per matrix where it does
        not divide the width (:func:`gqlearn.group_size.resolve_group_size`, ``policy``).
        ``"tensor"``: one scale for the whole matrix.
    include_embedding : bool, default False
        Quantize the (tied) token embedding too, with the same setting.
    policy : {"pow2", "divisor", "halve"}, default "pow2"
    asymmetric : bool, default False
        Use :func:`gqlearn.formats.quantize_minmax` (float16 minimum and step per
        group, ``2**bits`` levels) instead of :func:`gqlearn.quantize` (symmetric absmax).

    Returns
    -------
    FakeQuantizedWeights
    """
    names = model.linear_names()
    if include_embedding:
        names = ["token_embd.weight", *names]
    weights: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    total_bytes = 0
    n = 0
    for name in names:
        w = model.weights[name]
        gs = resolve_group_size(w.shape, group_size, policy)
        src = w.reshape(1, -1) if gs > w.shape[-1] else w  # per-tensor: one row
        sizes[name] = gs
        if asymmetric:
            mq = quantize_minmax(src, gs, bits=bits)
            weights[name] = dequantize_minmax(mq).reshape(w.shape)
            total_bytes += mq.nbytes
        else:
            qt = quantize(src, gs, bits=bits)
            weights[name] = dequantize(qt).reshape(w.shape)
            total_bytes += qt.nbytes
        n += w.size
    return FakeQuantizedWeights(weights, sizes, 8 * total_bytes / n, n)


def logsumexp(z: np.ndarray) -> np.ndarray:
    """Row-wise ``log(sum(exp(z)))`` of ``(T, vocab)`` logits, as float64.

    ``z - logsumexp(z)[:, None]`` is the log-softmax: each row's log-probabilities.  Each row's
    maximum is subtracted before ``exp`` so that large logits do not overflow; the sums are
    taken in float64, but ``exp`` runs in the input's dtype, so float32 logits (the model's,
    about 50,000 per position) are not copied to float64.

    >>> import numpy as np
    >>> z = np.array([[0.0, 0.0, 0.0, 0.0], [1000.0, 1000.0, 0.0, -1000.0]], dtype=np.float32)
    >>> logsumexp(z).round(6)   # log 4; 1000 + log 2 (np.exp(1000) alone overflows)
    array([   1.386294, 1000.693147])
    >>> logsumexp(z).dtype
    dtype('float64')
    """
    zmax = z.max(axis=1, keepdims=True)
    e = np.exp(z - zmax)
    return np.log(e.sum(axis=1, dtype=np.float64)) + zmax[:, 0]


def token_log_probs(logits: np.ndarray, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Log-probability the model gave each next token: ``log p(ids[j+1] | ids[:j+1])``.

    Parameters
    ----------
    logits : numpy.ndarray
        ``(T, vocab)`` logits of :meth:`Llama.forward` on ``ids``.
    ids : sequence of int
        The ``T`` token ids.

    Returns
    -------
    numpy.ndarray
        float64, ``T - 1`` log-probabilities (computed in float64).
    """
    ids = np.asarray(ids).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != ids.size or ids.size < 2:
        raise ValueError(f"need (T, vocab) logits for T >= 2 tokens; got logits "
                         f"{logits.shape} for {ids.size} tokens")
    z = logits[:-1].astype(np.float64)
    return z[np.arange(ids.size - 1), ids[1:]] - logsumexp(z)


def perplexity(logits: np.ndarray, ids: Sequence[int] | np.ndarray) -> float:
    """``exp(-mean(token_log_probs(logits, ids)))``: the text's perplexity under the model.

    >>> import numpy as np
    >>> logits = np.zeros((3, 4), dtype=np.float32)   # uniform over 4 tokens
    >>> round(perplexity(logits, [0, 1, 2]), 6)
    4.0
    """
    return float(np.exp(-token_log_probs(logits, ids).mean()))


def next_token_agreement(logits_a: np.ndarray, logits_b: np.ndarray) -> float:
    """Fraction of positions where two models' most likely next tokens are the same.

    >>> import numpy as np
    >>> a = np.array([[0.0, 1.0], [2.0, 0.0]]); b = np.array([[0.0, 3.0], [0.0, 1.0]])
    >>> next_token_agreement(a, b)
    0.5
    """
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"logits shapes differ: {logits_a.shape} vs {logits_b.shape}")
    return float(np.mean(logits_a.argmax(axis=-1) == logits_b.argmax(axis=-1)))


def kl_divergence(logits_p: np.ndarray, logits_q: np.ndarray) -> float:
    """Mean over positions of KL(p || q), in nats, where p and q are the softmax of each row.

    ``log p - log q`` is taken as ``(z_p - z_q) - (logsumexp(z_p) - logsumexp(z_q))``: the
    difference of the logits first, so two nearly equal models do not lose it to cancellation
    between large log-probabilities.  Rounding can leave a tiny negative mean; it is clipped to
    zero, as KL is never negative.

    >>> import numpy as np
    >>> z = np.array([[0.0, 0.0], [2.0, 0.0]])
    >>> kl_divergence(z, z), round(kl_divergence(z, z + [[1.0, 0.0], [0.0, 0.0]]), 6)
    (0.0, 0.060057)
    """
    if logits_p.shape != logits_q.shape or logits_p.ndim != 2:
        raise ValueError(f"need two (T, vocab) logit arrays of one shape; got {logits_p.shape} "
                         f"and {logits_q.shape}")
    lse_p, lse_q = logsumexp(logits_p), logsumexp(logits_q)
    p = np.exp(logits_p - lse_p[:, None])
    diff = np.subtract(logits_p, logits_q, dtype=np.result_type(logits_p, logits_q))
    diff *= p  # in the logits' dtype: float32 for a model's, half the memory of float64
    return max(float(np.mean(diff.sum(axis=1, dtype=np.float64) - (lse_p - lse_q))), 0.0)


@dataclass(frozen=True)
class QuantRow:
    """One row of :class:`QuantEvaluation`.

    Attributes
    ----------
    setting : Setting
    group_sizes : dict of int to int
        Group size used per matrix input width (empty for the float baseline).
    bits_per_weight : float
        Storage of the block matrices (the baseline's: 32 for float32 unless told otherwise).
    perplexity : float
        On the evaluation text.
    n_agree : int
        Positions whose top-1 next token matches the float model's.
    n_positions : int
        Positions scored (tokens - 1).
    kl : float
        Mean KL(float || quantized) of the next-token distributions, nats per token.
    sample_ids : list of int
        Greedy continuation of the prompt (empty without a prompt).
    sample : str
        ``sample_ids`` decoded (empty without a tokenizer).
    disagree_at : tuple of int
        Positions whose top-1 next token differs from the float model's.
    name : str
        Overrides the label (used for the baseline, e.g. ``"Q4_1 file"``).
    """

    setting: Setting
    group_sizes: dict[int, int]
    bits_per_weight: float
    perplexity: float
    n_agree: int
    n_positions: int
    kl: float
    sample_ids: list[int] = field(default_factory=list)
    sample: str = ""
    disagree_at: tuple[int, ...] = ()
    name: str = ""

    @property
    def label(self) -> str:
        """The setting's label, with the group sizes used where they differ from the request:
        ``"int8 g=128\u219264/128"`` when 128 backs off to 64 on some matrices."""
        if self.name:
            return self.name
        s = self.setting
        used = sorted(set(self.group_sizes.values()))
        if s.bits is None or not used or used == [s.group_size] or s.group_size == "tensor":
            return s.label
        return f"{s.label}\u2192{'/'.join(str(g) for g in used)}"

    @property
    def agreement(self) -> float:
        """``n_agree / n_positions``."""
        return self.n_agree / self.n_positions


@dataclass(frozen=True)
class QuantEvaluation:
    """The perplexity / agreement table of :func:`evaluate_quantization`.

    ``print(evaluation)`` shows it; ``rows[0]`` is the float baseline.  ``float_margins``
    holds, per position, the float model's log-probability gap between its top two next
    tokens (small gaps are where a quantized model can flip the top-1 token).
    """

    rows: list[QuantRow]
    n_tokens: int
    prompt: str = ""
    float_margins: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def baseline(self) -> QuantRow:
        return self.rows[0]

    def row(self, label: str) -> QuantRow:
        """The row whose label, or whose setting's label, is ``label`` (e.g. ``"int4 g=32"``,
        ``"int8 g=128"`` for the row labelled ``"int8 g=128\u219264/128"``)."""
        for r in self.rows:
            if label in (r.label, r.setting.label):
                return r
        raise KeyError(f"no row {label!r}; rows are {[r.label for r in self.rows]}")

    def to_records(self) -> list[dict[str, object]]:
        """One dict per row (rounded), e.g. for a pandas DataFrame."""
        return [{"setting": r.label, "bits": r.setting.bits, "group_size": r.setting.group_size,
                 "asymmetric": r.setting.asymmetric, "group_sizes_used": dict(r.group_sizes),
                 "bits_per_weight": round(r.bits_per_weight, 3),
                 "perplexity": round(r.perplexity, 3), "agreement": round(r.agreement, 4),
                 "kl": round(r.kl, 5), "sample": r.sample} for r in self.rows]

    def table(self, *, samples: bool = False) -> str:
        """A plain-text table; ``samples=True`` adds the greedy continuation per row.

        Perplexities print with 2 decimals (3 significant digits past 10,000); ``ppl ratio``
        is the perplexity over the baseline's (3 decimals, 3 significant digits past 1,000).
        """
        base = self.baseline.perplexity
        width = max(16, *(len(r.label) for r in self.rows))
        head = (f"{'setting':<{width}} {'groups used':<18} {'bits/w':>7} {'perplexity':>10} "
                f"{'ppl ratio':>9} {'KL nats':>8} {'top-1 agreement':>15}")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            used = ("-" if not r.group_sizes else ", ".join(
                f"{w}:{'all' if g >= w else g}" for w, g in sorted(r.group_sizes.items())))
            ratio = r.perplexity / base
            change = f"{ratio:.3f}" if ratio < 1e3 else f"{ratio:.3g}"
            ppl = f"{r.perplexity:.2f}" if r.perplexity < 1e4 else f"{r.perplexity:.3g}"
            line = (f"{r.label:<{width}} {used:<18} {r.bits_per_weight:>7.3f} {ppl:>10} "
                    f"{change:>9} {r.kl:>8.4f} {r.n_agree:>7}/{r.n_positions:<3} "
                    f"{r.agreement:>6.1%}")
            if samples:
                line += f"  {r.sample!r}"
            lines.append(line)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


class Decoder(Protocol):
    """What :func:`evaluate_quantization` needs of a tokenizer (``tokenizers.Tokenizer``)."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


def evaluate_quantization(model: Llama, ids: Sequence[int], *,
                          bits: Sequence[int] = (8, 4, 3),
                          group_sizes: Sequence[GroupSize] = (32, 64, "tensor"),
                          asymmetric: bool = False, baseline: tuple[str, float] = ("float", 32.0),
                          prompt_ids: Sequence[int] | None = None, max_new_tokens: int = 8,
                          stop_ids: Sequence[int] = (), tokenizer: Decoder | None = None,
                          include_embedding: bool = False,
                          progress: Callable[[str], None] | None = None) -> QuantEvaluation:
    """Perplexity, next-token agreement and KL for each (bits, group size) vs the float model.

    Parameters
    ----------
    model : Llama
        The float model; it is not modified.
    ids : sequence of int
        Token ids of the evaluation text (all scored in one forward pass per setting).
    bits : sequence of int, default (8, 4, 3)
    group_sizes : sequence of int, "row" or "tensor", default (32, 64, "tensor")
        Requested group sizes; ``"tensor"`` is one scale per matrix.  Reduced per matrix where
        they do not divide its width (see :func:`fake_quantize_linear_weights`).
    asymmetric : bool, default False
        Quantize with a minimum and a step per group (Q4_1's scheme) instead of symmetric
        absmax.
    baseline : (str, float), default ("float", 32.0)
        Label and bits per weight of the unquantized model's row, e.g. ``("Q4_1 file", 5.0)``
        when the "float" weights were dequantized from a Q4_1 checkpoint.
    prompt_ids : sequence of int, optional
        If given, each setting also decodes up to ``max_new_tokens`` greedily from it.
    max_new_tokens : int, default 8
    stop_ids : sequence of int, optional
        Token ids that end a generation.
    tokenizer : tokenizers.Tokenizer, optional
        Used to decode the samples into text.
    include_embedding : bool, default False
        Quantize the tied embedding as well.
    progress : callable, optional
        Called with each setting's label (the baseline's first) before it is evaluated.

    Returns
    -------
    QuantEvaluation
        The float baseline first, then one row per (bits, group size), bits outermost.
    """
    ids = [int(i) for i in ids]
    settings = [Setting()] + [Setting(b, g, asymmetric) for b in bits for g in group_sizes]
    targets = np.asarray(ids[1:])
    n = len(ids) - 1
    positions = np.arange(n)
    z_float = model.forward(ids)[:-1]  # (n, vocab): row j scores token j + 1
    float_top = z_float.argmax(axis=1)
    top2 = np.partition(z_float, -2, axis=1)[:, -2:]
    margins = (top2[:, 1] - top2[:, 0]).astype(np.float64)
    rows = []
    for s in settings:
        if progress is not None:
            progress(baseline[0] if s.bits is None else s.label)
        if s.bits is None:
            m, used, bpw, z = model, {}, float(baseline[1]), z_float
        else:
            qw = fake_quantize_linear_weights(model, s.bits, s.group_size,
                                              include_embedding=include_embedding,
                                              asymmetric=s.asymmetric)
            m, used, bpw = (model.with_weights(qw.weights), qw.group_sizes_by_width(),
                            qw.bits_per_weight)
            z = m.forward(ids)[:-1]
        nll = float(np.mean(logsumexp(z) - z[positions, targets]))
        kl = kl_divergence(z_float, z)
        sample_ids = (m.generate(prompt_ids, max_new_tokens, stop_ids=stop_ids)
                      if prompt_ids is not None else [])
        sample = (tokenizer.decode(sample_ids, skip_special_tokens=False)
                  if tokenizer is not None and sample_ids else "")
        agree = z.argmax(axis=1) == float_top
        rows.append(QuantRow(s, used, bpw, math.exp(nll), int(agree.sum()), n, kl,
                             sample_ids, sample, tuple(int(j) for j in np.flatnonzero(~agree)),
                             baseline[0] if s.bits is None else ""))
        del m, z
    prompt = (tokenizer.decode(list(prompt_ids), skip_special_tokens=False)
              if tokenizer is not None and prompt_ids is not None else "")
    return QuantEvaluation(rows, len(ids), prompt, margins)
