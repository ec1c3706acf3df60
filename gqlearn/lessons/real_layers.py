"""Chapter 04: real LLM layers (all-MiniLM-L6-v2).

Everything the notebook ``04_real_llm_layers.ipynb`` computes or draws:

* :func:`config_table`, :func:`role_inventory`, :func:`weight_stats`: what is in the model;
* :func:`column_absmax`, :func:`outlier_channels`, :func:`recurring_channels`,
  :func:`plot_role_histograms`, :func:`plot_channel_ranges`: weight distributions per role,
  per-channel ranges and outlier channels;
* :func:`sweep_linear_layers`, :func:`backoff_table`, :func:`role_pivot`, :func:`bits_gap`,
  :func:`plot_error_heatmap`, :func:`memory_summary`: every linear layer at several group
  sizes and bit widths, through :func:`gqlearn.models.explore`;
* :func:`reference_check`, :func:`compare_embeddings`, :func:`search_changes`: what
  quantization does to the sentence embeddings and to a small semantic search;
* :func:`where_the_bytes_are`: MiniLM's whole-model ratio against LLaMA-2's (whose full
  accounting is notebook 03's, :mod:`gqlearn.memory`);
* :func:`show_tensor` / :func:`tensor_explorer`: the widget and its static fallback;
* ``check_*``: the exercise checkers.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..exercises import Feedback, close_enough, right, wrong
from ..models import (LINEAR_ROLES, Checkpoint, SentenceEncoder, cosine_similarity, explore,
                      fake_quantize, load_reference_embeddings, open_checkpoint,
                      quantize_tensor)
from ..models.explorer import natural_key, parse_group_size, resolve_group_size
from ..models.roles import ROLES, classify, layer_index, short_name, should_quantize
from .display import Table

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets
    from matplotlib.figure import Figure

__all__ = ["GROUP_SIZES", "BITS", "READS_HIDDEN", "WRITES_HIDDEN", "config_table",
           "role_inventory", "weight_stats", "column_absmax", "outlier_channels",
           "recurring_channels", "plot_role_histograms", "plot_channel_ranges",
           "setting_label", "sweep_linear_layers", "backoff_table", "role_pivot", "bits_gap",
           "heatmap_data", "plot_error_heatmap", "memory_summary", "reference_check",
           "EMBEDDING_SETTINGS", "compare_embeddings", "search_changes", "where_the_bytes_are",
           "show_tensor", "tensor_explorer", "OUTLIER_TENSOR", "EXERCISE_GROUP", "EXERCISE_BITS",
           "check_zeroed_in_group", "check_mlp_down_cosine", "check_linear_bytes"]

# The settings of the layer sweep: group sizes (256 backs off on 384-wide rows), one scale per
# row and one per tensor.
GROUP_SIZES: tuple[int | str, ...] = (32, 64, 128, 256, "row", "tensor")
BITS = (8, 4)

# Matrices whose input channels (columns) are the hidden state's dimensions, and matrices whose
# output rows are: the residual stream is read by q, k, v, gate and up, written by o and down.
# (The columns of ``attn_o`` are attention-head features and those of ``mlp_down`` the MLP's
# intermediate features, so they do not count as hidden dimensions.)
READS_HIDDEN = ("attn_q", "attn_k", "attn_v", "attn_qkv", "mlp_gate", "mlp_up", "embedding",
                "lm_head")
WRITES_HIDDEN = ("attn_o", "mlp_down")


def _checkpoint(model: str | os.PathLike[str] | Checkpoint) -> Checkpoint:
    return model if isinstance(model, Checkpoint) else open_checkpoint(model)


def _label(name: str) -> str:
    """:func:`short_name`, with embedding tables shortened too.

    >>> _label("encoder.layer.3.attention.self.query.weight")
    'L3.attn_q'
    >>> _label("embeddings.position_embeddings.weight")
    'position emb'
    """
    short = short_name(name)
    if short == name and classify(name) == "embedding":
        last = name.removesuffix(".weight").rsplit(".", 1)[-1]
        return last.removesuffix("_embeddings") + " emb"
    return short


# --------------------------------------------------------------------------------------------
# What is in the model
# --------------------------------------------------------------------------------------------

CONFIG_FIELDS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "vocab_size", "max_position_embeddings", "hidden_act",
                 "layer_norm_eps")


def config_table(model_dir: str | os.PathLike[str]) -> Table:
    """The architecture fields of ``config.json``."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return Table(("field", "value"), tuple((f, config[f]) for f in CONFIG_FIELDS if f in config),
                 formats={"value": "g"})


def role_inventory(model: str | os.PathLike[str] | Checkpoint,
                   chapter_roles: Sequence[str] = LINEAR_ROLES) -> Table:
    """Tensors per role: count, shapes, parameters, share of the model, whether the explorer
    quantizes them by default (``mixed``: some yes, e.g. BERT's pooler matrix, some no, e.g.
    the integer ``position_ids``) and whether the chapter does (``chapter_roles``: the linear
    layers).  No tensor data is read, only the headers.
    """
    ckpt = _checkpoint(model)
    total = ckpt.n_parameters
    rows = []
    for role in ROLES:
        infos = [i for i in ckpt.infos() if classify(i.name) == role]
        if not infos:
            continue
        shapes = sorted({"x".join(map(str, i.shape)) for i in infos})
        params = sum(i.size for i in infos)
        q = [should_quantize(i.name, i.shape, i.is_float) for i in infos]
        rows.append((role, len(infos), ", ".join(shapes), params, 100 * params / total,
                     "quantized" if all(q) else "kept" if not any(q) else "mixed",
                     "quantized" if role in chapter_roles else "float"))
    rows.append(("total", len(ckpt), "", total, 100.0, "", ""))
    return Table(("role", "tensors", "shapes", "parameters", "% of params",
                  "explorer default", "this chapter"), tuple(rows),
                 formats={"% of params": ".2f"})


def _linear_names(ckpt: Checkpoint) -> list[str]:
    return sorted((n for n in ckpt if classify(n) in LINEAR_ROLES), key=natural_key)


def weight_stats(model: str | os.PathLike[str] | Checkpoint,
                 roles: Sequence[str] = (*LINEAR_ROLES, "embedding")) -> Table:
    """Per role (tensors pooled): standard deviation, largest magnitude, their ratio, kurtosis.

    A Gaussian has kurtosis 3 and rarely exceeds 5 standard deviations; heavy tails and
    single huge weights show up as a large ``max/std`` and kurtosis.
    """
    ckpt = _checkpoint(model)
    rows = []
    for role in roles:
        names = [n for n in ckpt if classify(n) == role and ckpt.info(n).ndim >= 2
                 and ckpt.info(n).is_float]
        if not names:
            continue
        w = np.concatenate([ckpt[n].astype(np.float64).ravel() for n in names])
        std = float(w.std())
        amax = float(np.abs(w).max())
        kurt = float(np.mean((w - w.mean()) ** 4) / std ** 4)
        worst = max(names, key=lambda n: float(np.abs(ckpt[n]).max()))
        rows.append((role, len(names), std, amax, amax / std, kurt, _label(worst)))
    return Table(("role", "tensors", "std", "max |w|", "max/std", "kurtosis", "largest in"),
                 tuple(rows), formats={"std": ".4f", "max |w|": ".3f", "max/std": ".1f",
                                       "kurtosis": ".1f"})


def column_absmax(w: np.ndarray) -> np.ndarray:
    """Largest ``|w|`` of each input channel (column) of a ``(out, in)`` weight matrix.

    >>> column_absmax(np.array([[1.0, -3.0], [-2.0, 0.5]]))
    array([2., 3.])
    """
    return np.abs(np.asarray(w, dtype=np.float64)).max(axis=0)


def outlier_channels(model: str | os.PathLike[str] | Checkpoint, top: int = 1,
                     roles: Sequence[str] = LINEAR_ROLES) -> Table:
    """For each matrix, the input channel(s) with the largest magnitude against the median.

    ``ratio`` is that channel's largest ``|w|`` over the median of all channels' largest
    ``|w|``: how much bigger the scale of a group holding it is than a typical group's.
    """
    ckpt = _checkpoint(model)
    rows = []
    for name in _linear_names(ckpt) if roles == LINEAR_ROLES else sorted(
            (n for n in ckpt if classify(n) in roles), key=natural_key):
        w = ckpt[name]
        cm = column_absmax(w)
        med = float(np.median(cm))
        for c in np.argsort(-cm, kind="stable")[:top]:
            rows.append((short_name(name), "x".join(map(str, w.shape)), int(c), float(cm[c]),
                         med, float(cm[c]) / med))
    return Table(("tensor", "shape", "channel", "max |w|", "median", "ratio"), tuple(rows),
                 formats={"max |w|": ".3f", "median": ".3f", "ratio": ".1f"})


def _layers_by_role(hits: Sequence[tuple[str, int | None]]) -> str:
    """``[("attn_k", 0), ("attn_k", 2), ("mlp_up", 1)]`` -> ``"attn_k L0,2; mlp_up L1"``."""
    by_role: dict[str, list[int]] = {}
    for role, layer in hits:
        by_role.setdefault(role, []).append(-1 if layer is None else layer)
    return "; ".join(f"{role} L" + ",".join(str(i) for i in sorted(layers))
                     for role, layers in by_role.items())


def recurring_channels(model: str | os.PathLike[str] | Checkpoint, top: int = 3,
                       min_count: int = 4) -> Table:
    """Hidden dimensions that stand out in many matrices.

    A hidden dimension is an input channel (column) of the matrices that read the hidden state
    (:data:`READS_HIDDEN`: q, k, v, up and the embedding tables, whose columns are hidden
    dimensions too) and an output row of those that write it (:data:`WRITES_HIDDEN`: o and
    down).  For each matrix, the ``top`` columns (or rows) with the largest ``|w|`` are
    counted; dimensions counted at least ``min_count`` times are listed, most frequent first.
    """
    ckpt = _checkpoint(model)
    hits: dict[int, dict[str, list]] = {}
    for name in sorted(ckpt, key=natural_key):
        info = ckpt.info(name)
        role = classify(name)
        if info.ndim != 2 or not info.is_float or role not in (*READS_HIDDEN, *WRITES_HIDDEN):
            continue
        w = np.abs(ckpt[name])
        reads = role in READS_HIDDEN
        amax = w.max(axis=0 if reads else 1)
        for c in np.argsort(-amax, kind="stable")[:top]:
            kind = ("emb" if role == "embedding" else "col") if reads else "row"
            hits.setdefault(int(c), {"emb": [], "col": [], "row": []})[kind].append(
                _label(name).removesuffix(" emb") if role == "embedding"
                else (role, layer_index(name)))
    rows = []
    for c, h in hits.items():
        n = sum(len(v) for v in h.values())
        if n >= min_count:
            rows.append((c, n, ", ".join(h["emb"]), _layers_by_role(h["col"]),
                         _layers_by_role(h["row"])))
    rows.sort(key=lambda r: (-r[1], r[0]))
    return Table(("hidden dim", "matrices", "embedding tables", f"top-{top} column of",
                  f"top-{top} row of"), tuple(rows))


# --------------------------------------------------------------------------------------------
# Sweeping every linear layer
# --------------------------------------------------------------------------------------------

def _group_label(group_size: int | str) -> str:
    g = parse_group_size(group_size)
    return "per-tensor" if g == "tensor" else "per-row" if g == "row" else f"g={g}"


def setting_label(bits: int, group_size: int | str) -> str:
    """The course's name for a setting.

    >>> setting_label(8, 128), setting_label(4, "row"), setting_label(8, "tensor")
    ('int8 g=128', 'int4 per-row', 'int8 per-tensor')
    """
    return f"int{bits} {_group_label(group_size)}"


def sweep_linear_layers(model: str | os.PathLike[str] | Checkpoint,
                        group_sizes: Iterable[int | str] = GROUP_SIZES,
                        bits: Iterable[int] = BITS) -> list[dict[str, Any]]:
    """Quantize every linear layer at each (bits, group size) with the explorer.

    Returns
    -------
    list of dict
        One row per (setting, tensor) with ``setting`` (``"int8 g=256*"``: ``*`` when some
        tensors backed off to a smaller group size), ``bits``, ``requested``, the explorer's
        fields (``name``, ``role``, ``shape``, ``group_size``, ``backed_off``,
        ``max_abs_error``, ``mean_abs_error``, ``rms_error``, ``sqnr_db``, ``zeroed_fraction``,
        ``bytes_before``, ``bytes_after``), the float64 sums ``sum_sq_error`` and
        ``sum_sq_signal`` (error and signal power times the size), ``label`` (``L3.attn_q``)
        and ``totals`` (the explorer's totals for the whole model, the same dict on each row of
        a setting).
    """
    ckpt = _checkpoint(model)
    rows = []
    for b in bits:
        for g in group_sizes:
            report = explore(ckpt, g, bits=b, roles=LINEAR_ROLES)
            totals = report.totals
            label = setting_label(b, g) + ("*" if totals["n_backed_off"] else "")
            for r in report.results:
                if not r.quantized:
                    continue
                d = r.to_dict()
                d.update(setting=label, bits=b, requested=parse_group_size(g),
                         label=short_name(r.name), totals=totals,
                         sum_sq_error=r.sum_sq_error, sum_sq_signal=r.sum_sq_signal)
                rows.append(d)
    return rows


def backoff_table(model: str | os.PathLike[str] | Checkpoint, requested: int = 256,
                  policies: Sequence[str] = ("pow2", "divisor", "halve")) -> Table:
    """The group size each kind of linear layer gets for a ``requested`` size, per policy."""
    ckpt = _checkpoint(model)
    seen: dict[tuple[str, tuple[int, ...]], None] = {}
    for name in _linear_names(ckpt):
        seen[(classify(name), ckpt.info(name).shape)] = None
    rows = []
    for role, shape in seen:
        used = [resolve_group_size(shape, requested, p) for p in policies]
        rows.append((role, "x".join(map(str, shape)), shape[-1], *used))
    return Table(("role", "shape", "row width", *(f"{p}" for p in policies)), tuple(rows),
                 notes=(f"requested group size {requested}; groups run along each row",))


def _pooled_sqnr(sel: Sequence[Mapping[str, Any]]) -> float:
    """SQNR of several tensors together: ``10 log10(sum signal power / sum error power)``."""
    return float(10 * np.log10(sum(r["sum_sq_signal"] for r in sel)
                               / sum(r["sum_sq_error"] for r in sel)))


def role_pivot(rows: Sequence[Mapping[str, Any]], value: str = "sqnr_db",
               fmt: str = ".1f") -> Table:
    """``value`` per setting (one row each) and role (one column each), layers pooled.

    For ``sqnr_db`` the role's SQNR is computed from the pooled error and signal powers
    (``10 log10(sum signal / sum error)``) rather than by averaging decibels; any other
    ``value`` is averaged over the role's tensors.
    """
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    roles = [role for role in ROLES if any(r["role"] == role for r in rows)]
    table_rows = []
    for s in settings:
        cells: list[Any] = [s]
        for role in roles:
            sel = [r for r in rows if r["role"] == role and r["setting"] == s]
            cells.append(_pooled_sqnr(sel) if value == "sqnr_db"
                         else float(np.mean([r[value] for r in sel])))
        table_rows.append(tuple(cells))
    return Table(("setting", *roles), tuple(table_rows), formats={r: fmt for r in roles})


def bits_gap(rows: Sequence[Mapping[str, Any]], high: int = 8, low: int = 4) -> Table:
    """SQNR at ``high`` bits minus SQNR at ``low`` bits, per grouping (rows) and role.

    If the error were only the rounding on a grid ``qmax_high / qmax_low`` times finer, the gap
    would be ``20 log10(qmax_high / qmax_low)`` dB everywhere (the first note line); it falls
    short where the coarse grid rounds most weights to 0 and the error stops scaling with the
    step.
    """
    q_hi, q_lo = 2 ** (high - 1) - 1, 2 ** (low - 1) - 1
    roles = [role for role in ROLES if any(r["role"] == role for r in rows)]
    groupings = list(dict.fromkeys(r["requested"] for r in rows if r["bits"] == high))
    out = []
    for g in groupings:
        cells: list[Any] = [_group_label(g)]
        for role in roles:
            sqnr = {b: _pooled_sqnr([r for r in rows if r["role"] == role and r["bits"] == b
                                     and r["requested"] == g]) for b in (high, low)}
            cells.append(sqnr[high] - sqnr[low])
        out.append(tuple(cells))
    note = (f"grid step at {low} bits / at {high} bits = {q_hi}/{q_lo} = {q_hi / q_lo:.2f}: "
            f"20 log10({q_hi}/{q_lo}) = {20 * np.log10(q_hi / q_lo):.2f} dB expected; measured "
            f"SQNR(int{high}) - SQNR(int{low}) in dB:")
    return Table(("grouping", *roles), tuple(out), notes=(note,),
                 formats={r: ".1f" for r in roles})


def heatmap_data(rows: Sequence[Mapping[str, Any]], value: str = "sqnr_db"
                 ) -> tuple[list[str], list[str], np.ndarray]:
    """``(tensor labels, setting labels, matrix)`` of ``value`` for :func:`plot_error_heatmap`."""
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    index = {(r["label"], r["setting"]): r[value] for r in rows}
    matrix = np.array([[index[(t, s)] for s in settings] for t in labels], dtype=np.float64)
    return labels, settings, matrix


def _plt():
    import matplotlib.pyplot as plt
    return plt


def plot_error_heatmap(rows: Sequence[Mapping[str, Any]], value: str = "sqnr_db") -> Figure:
    """Heat map of ``value`` (default SQNR in dB) for every linear layer and setting."""
    plt = _plt()
    labels, settings, m = heatmap_data(rows, value)
    fig, ax = plt.subplots(figsize=(9, 10))
    im = ax.imshow(m, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(settings)), settings, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if m[i, j] < np.nanmedian(m) else "black")
    fig.colorbar(im, ax=ax, label="SQNR (dB, higher is better)" if value == "sqnr_db" else value)
    ax.set_title("every linear layer of all-MiniLM-L6-v2, per setting")
    fig.tight_layout()
    return fig


def memory_summary(rows: Sequence[Mapping[str, Any]], culprit: str = "mlp_down") -> Table:
    """Per setting: bits per linear weight, bytes of the linear layers, the whole model
    (embeddings, norms and biases kept in float32) against float32, the SQNR of all linear
    layers together, and the share of their error power that comes from the ``culprit``
    role."""
    out = []
    for s in dict.fromkeys(r["setting"] for r in rows):
        sel = [r for r in rows if r["setting"] == s]
        t = sel[0]["totals"]
        lin_before = sum(r["bytes_before"] for r in sel)
        lin_after = sum(r["bytes_after"] for r in sel)
        n = sum(int(np.prod(r["shape"])) for r in sel)
        share = (sum(r["sum_sq_error"] for r in sel if r["role"] == culprit)
                 / sum(r["sum_sq_error"] for r in sel))
        out.append((s, 8 * lin_after / n, lin_before, lin_after, t["bytes_after"],
                    t["bytes_before"] / t["bytes_after"], _pooled_sqnr(sel), 100 * share))
    return Table(("setting", "bits/weight", "linear bytes", "-> quantized", "whole model",
                  "x smaller", "SQNR dB", f"% of error in {culprit}"), tuple(out),
                 formats={"bits/weight": ".3f", "x smaller": ".2f", "SQNR dB": ".2f",
                          f"% of error in {culprit}": ".1f"},
                 notes=("whole model: quantized linear layers + embeddings, norms and biases "
                        "in float32; SQNR of the linear layers together",))


# --------------------------------------------------------------------------------------------
# Distributions and channels: plots
# --------------------------------------------------------------------------------------------

def plot_role_histograms(model: str | os.PathLike[str] | Checkpoint,
                         roles: Sequence[str] = ("attn_q", "attn_k", "attn_v", "attn_o",
                                                 "mlp_up", "mlp_down", "embedding"),
                         bins: int = 121) -> Figure:
    """Histogram (log counts) of the weights of each role, all layers pooled."""
    plt = _plt()
    ckpt = _checkpoint(model)
    fig, axes = plt.subplots(2, (len(roles) + 1) // 2, figsize=(13, 5.5))
    for ax, role in zip(axes.ravel(), roles):
        names = [n for n in ckpt if classify(n) == role and ckpt.info(n).ndim >= 2
                 and ckpt.info(n).is_float]
        w = np.concatenate([ckpt[n].ravel() for n in names])
        lim = float(np.abs(w).max())
        ax.hist(w, bins=bins, range=(-lim, lim), color="C0")
        ax.set_yscale("log")
        ax.set_title(f"{role} ({len(names)} tensors)", fontsize=9)
        ax.set_xlabel("weight value", fontsize=8)
        ax.set_ylabel("count (log)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(roles):]:
        ax.axis("off")
    fig.suptitle("weight values per role (log counts): note the x ranges", fontsize=10)
    fig.tight_layout()
    return fig


def plot_channel_ranges(model: str | os.PathLike[str] | Checkpoint,
                        names: Sequence[str]) -> Figure:
    """Largest ``|w|`` of every input channel for a few matrices, outliers labelled."""
    plt = _plt()
    ckpt = _checkpoint(model)
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 2.2 * len(names)))
    for ax, name in zip(np.atleast_1d(axes), names):
        cm = column_absmax(ckpt[name])
        ax.plot(cm, lw=0.7)
        ax.axhline(np.median(cm), color="0.5", lw=0.8, ls="--")
        c = int(np.argmax(cm))
        ax.annotate(f"channel {c}", (c, cm[c]), fontsize=8, xytext=(5, -10),
                    textcoords="offset points")
        ax.set_ylabel("max |w|", fontsize=8)
        ax.set_title(f"{name} ({'x'.join(map(str, cm.shape))} channels; dashed: median)",
                     fontsize=9)
        ax.tick_params(labelsize=7)
    np.atleast_1d(axes)[-1].set_xlabel("input channel (column)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Model outputs
# --------------------------------------------------------------------------------------------

def reference_check(encoder: SentenceEncoder, tolerance: float = 1e-4) -> Table:
    """Cosine distance of our embeddings to sentence-transformers' reference ones.

    The distances themselves are float32 round-off (about 1e-7 and below), whose last digits
    depend on the machine's BLAS, so the table reports them against thresholds.
    """
    sentences, reference, info = load_reference_embeddings()
    ours = encoder.encode(sentences)
    distance = 1 - cosine_similarity(ours, reference)
    ids = encoder.tokenize(sentences)[2].sum(axis=1)
    rows = tuple((s if len(s) <= 44 else s[:41] + "...", int(n), bool(d < tolerance),
                  bool(d < 1e-6)) for s, n, d in zip(sentences, ids, distance))
    made = info["generated_with"]
    note = (f"reference: sentence-transformers {made['sentence_transformers']}, torch "
            f"{made['torch']}, max_seq_length {made['max_seq_length']}")
    return Table(("sentence", "tokens", f"distance < {tolerance:.0e}", "distance < 1e-6"), rows,
                 notes=(note,))


EMBEDDING_SETTINGS: tuple[tuple[int, int | str], ...] = (
    (8, 32), (8, 128), (8, "row"), (8, "tensor"), (4, 32), (4, 128), (4, "row"), (4, "tensor"))


def _search_ranks(queries: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    return np.argsort(-(queries @ corpus.T), axis=1, kind="stable")


def compare_embeddings(encoder: SentenceEncoder, model: str | os.PathLike[str] | Checkpoint,
                       data: Mapping[str, Any],
                       settings: Iterable[tuple[int, int | str]] = EMBEDDING_SETTINGS,
                       ) -> tuple[Table, dict[str, np.ndarray]]:
    """Embed the corpus and queries with every linear layer quantized at each setting.

    Returns
    -------
    table : Table
        Per setting: bits per linear weight, mean and minimum cosine similarity to the
        unquantized embeddings (all sentences: corpus and queries), and how many queries keep
        the same top-1 and the same top-3 results in the semantic search.  Its note counts the
        sentences.
    rankings : dict
        ``"float"`` and each setting label: the ``(n_queries, n_corpus)`` ranking.
    """
    corpus = [c["text"] for c in data["corpus"]]
    queries = [q["text"] for q in data["queries"]]
    base_c, base_q = encoder.encode(corpus), encoder.encode(queries)
    base_rank = _search_ranks(base_q, base_c)
    rankings = {"float": base_rank}
    rows = []
    for bits, g in settings:
        weights = fake_quantize(model, g, bits=bits, roles=LINEAR_ROLES)
        q_enc = encoder.with_weights(weights)
        c, q = q_enc.encode(corpus), q_enc.encode(queries)
        cos = cosine_similarity(np.vstack([base_c, base_q]), np.vstack([c, q]))
        rank = _search_ranks(q, c)
        label = setting_label(bits, g)
        rankings[label] = rank
        top1 = int((rank[:, 0] == base_rank[:, 0]).sum())
        top3 = int((rank[:, :3] == base_rank[:, :3]).all(axis=1).sum())
        n_params = sum(w.size for w in weights.values())
        n_scales = sum(w.size // resolve_group_size(w.shape, g) for w in weights.values())
        rows.append((label, bits + 32 * n_scales / n_params, float(cos.mean()),
                     float(cos.min()), f"{top1}/{len(queries)}", f"{top3}/{len(queries)}"))
    n_topics = len({c["topic"] for c in data["corpus"]})
    note = (f"{len(corpus)} corpus sentences in {n_topics} topics + {len(queries)} queries = "
            f"{len(corpus) + len(queries)} sentences; search: each query ranks the "
            f"{len(corpus)} corpus sentences")
    table = Table(("setting", "bits/weight", "mean cos", "min cos", "same top-1", "same top-3"),
                  tuple(rows), formats={"bits/weight": ".3f", "mean cos": ".6f",
                                        "min cos": ".6f"}, notes=(note,))
    return table, rankings


def search_changes(data: Mapping[str, Any], rankings: Mapping[str, np.ndarray],
                   setting: str, k: int = 3, only_changed: bool = True) -> Table:
    """Each query's top-``k`` corpus sentences, unquantized and at ``setting``.

    With ``only_changed`` (default) only the queries whose top ``k`` changed are listed; the
    note says how many kept theirs.
    """
    corpus = data["corpus"]

    def short(i: int) -> str:
        text = corpus[i]["text"]
        return f"{i:2d} " + (text if len(text) <= 34 else text[:31] + "...")

    rows = []
    n_same = 0
    for qi, query in enumerate(data["queries"]):
        base, quant = rankings["float"][qi, :k], rankings[setting][qi, :k]
        same = bool((base == quant).all())
        n_same += same
        if same and only_changed:
            continue
        for rank in range(k):
            text = query["text"] if len(query["text"]) <= 40 else query["text"][:37] + "..."
            rows.append((text if rank == 0 else "", rank + 1, short(base[rank]),
                         short(quant[rank]), "" if base[rank] == quant[rank] else "changed"))
    n = len(data["queries"])
    note = (f"{setting}: {n_same} of {n} queries keep their top {k} in order"
            + (f"; the other {n - n_same}:" if only_changed and n_same < n else ""))
    return Table(("query", "rank", "float32 weights", setting, ""), tuple(rows), notes=(note,))


# --------------------------------------------------------------------------------------------
# Scaling up: where the bytes are
# --------------------------------------------------------------------------------------------

def where_the_bytes_are(model: str | os.PathLike[str] | Checkpoint, group_size: int = 128,
                        bits: int = 8) -> Table:
    """How much of a model gets quantized, and what that does to the whole model's size.

    Rows: all-MiniLM-L6-v2 (float32) with its linear layers quantized, the same with the
    embedding tables quantized too (the explorer's default), and LLaMA-2 7B, 13B and 70B
    (bfloat16) with their linear layers quantized, counted by
    :func:`gqlearn.memory.memory_table` from the published shapes.  Everything not quantized
    stays in the checkpoint's dtype; scales are float32.  The LLaMA-2 accounting in full,
    and the check of the seeds' "70B: 280 GB -> 70 GB", are notebook 03's (section 7).
    """
    from ..memory import LLAMA2_CONFIGS, memory_table

    ckpt = _checkpoint(model)
    name = Path(ckpt.path).parent.name if Path(ckpt.path).is_file() else Path(ckpt.path).name
    rows = []
    for what, roles in (("linear layers", LINEAR_ROLES), ("linear + embeddings", None)):
        report = explore(ckpt, group_size, bits=bits, roles=roles)
        q = [r for r in report.results if r.quantized]
        t = report.totals
        rows.append((name, what, "float32", f"{t['parameters'] / 1e6:.1f} M",
                     100 * t["parameters_quantized"] / t["parameters"],
                     sum(r.bytes_before for r in q) / sum(r.bytes_after for r in q),
                     t["bytes_before"] / t["bytes_after"]))
    for shape in LLAMA2_CONFIGS.values():
        r = memory_table(shape, [group_size], bits=bits, baseline="bfloat16")[0]
        rows.append((shape.name, "linear layers", "bfloat16", f"{shape.n_params / 1e9:.2f} B",
                     100 * shape.n_linear_params / shape.n_params, 16 / r["bits_per_weight"],
                     r["ratio"]))
    return Table(("model", "quantized", "checkpoint", "parameters", "% quantized",
                  "part x smaller", "whole x smaller"), tuple(rows),
                 formats={"% quantized": ".1f", "part x smaller": ".2f",
                          "whole x smaller": ".2f"},
                 notes=(f"{setting_label(bits, group_size)} with float32 scales; the rest kept "
                        "in the checkpoint's dtype",))


# --------------------------------------------------------------------------------------------
# Widget and its static fallback
# --------------------------------------------------------------------------------------------

def show_tensor(model: str | os.PathLike[str] | Checkpoint, name: str,
                group_size: int | str = 128, bits: int = 8, rows: int | None = None,
                top: int = 4) -> Figure:
    """One tensor quantized: its metrics, the per-group scales of its rows (the first ``rows``
    if given), and the error histogram.

    Prints one line of metrics and one naming the ``top`` rows with the largest group scale
    (against the median group scale), and returns the figure.
    """
    plt = _plt()
    ckpt = _checkpoint(model)
    w = ckpt[name]
    report = explore({name: w}, group_size, bits=bits, keep=True)
    r = report[name]
    qt = report.quantized[name]
    print(f"{short_name(name)} {'x'.join(map(str, w.shape))}, {setting_label(bits, group_size)}"
          f" (group {r.group_size}{', backed off' if r.backed_off else ''}): max err "
          f"{r.max_abs_error:.2e}, mean err {r.mean_abs_error:.2e}, SQNR {r.sqnr_db:.2f} dB, "
          f"zeroed {100 * r.zeroed_fraction:.2f}%, {r.bytes_before:,} -> {r.bytes_after:,} bytes")
    scales = qt.scales.reshape(qt.scales.shape[0], -1)
    if scales.shape[0] == w.shape[0] > 1:  # not per tensor: scales row by row
        row_max = scales.max(axis=1).astype(np.float64)
        median = float(np.median(scales.astype(np.float64)))
        print("rows with the largest group scale (x the median scale): " + ", ".join(
            f"{i} ({row_max[i] / median:.1f}x)"
            for i in np.argsort(-row_max, kind="stable")[:top]))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.6))
    scales = scales[:rows]
    from matplotlib.colors import LogNorm

    im = a.imshow(scales, aspect="auto", cmap="magma", interpolation="nearest",
                  norm=LogNorm(vmin=float(scales.min()), vmax=float(scales.max())))
    fig.colorbar(im, ax=a, label="scale (log)")
    a.set_xlabel("group along the row")
    a.set_ylabel("row" if rows is None else f"row (first {scales.shape[0]})")
    a.set_title("per-group scales: bright = a large weight in the group", fontsize=9)
    err = qt.dequantize().reshape(w.shape) - np.asarray(w, np.float32)
    b.hist(err.ravel(), bins=101, color="C1")
    b.set_yscale("log")
    b.set_xlabel("dequantized - original")
    b.set_title("error histogram (log counts)", fontsize=9)
    fig.tight_layout()
    return fig


def tensor_explorer(model: str | os.PathLike[str] | Checkpoint) -> ipywidgets.Widget:
    """Pick a linear layer, a group size and a bit width; see :func:`show_tensor`.

    The widget needs a running kernel; where there is none (a stored notebook, a rendered
    page) its plain-text form says so instead of dumping the widget's structure.
    """
    import ipywidgets as widgets

    class _TensorExplorer(widgets.interactive):
        def __repr__(self) -> str:
            return "[tensor explorer: a widget, live only with a running kernel]"

    from IPython.display import display

    plt = _plt()
    ckpt = _checkpoint(model)
    names = _linear_names(ckpt)
    pick = widgets.Dropdown(options=[(short_name(n), n) for n in names], value=names[0],
                            description="tensor")
    group = widgets.Dropdown(options=[(str(g), g) for g in (32, 64, 128, 256)]
                             + [("per-row", "row"), ("per-tensor", "tensor")], value=128,
                             description="group size")
    bits = widgets.IntSlider(value=8, min=2, max=8, description="bits")

    def update(name: str, group_size: int | str, bits: int) -> None:
        fig = show_tensor(ckpt, name, group_size, bits)
        display(fig)
        plt.close(fig)

    return _TensorExplorer(update, name=pick, group_size=group, bits=bits)


# --------------------------------------------------------------------------------------------
# Exercises
# --------------------------------------------------------------------------------------------

OUTLIER_TENSOR = "encoder.layer.0.output.dense.weight"
EXERCISE_GROUP = 128  # exercise 1: group size and bits
EXERCISE_BITS = 4


def _outlier(model: str | os.PathLike[str] | Checkpoint) -> tuple[np.ndarray, int, int]:
    w = _checkpoint(model)[OUTLIER_TENSOR]
    row, col = np.unravel_index(int(np.argmax(np.abs(w))), w.shape)
    return w, int(row), int(col)


def _as_int(answer: object) -> int | None:
    if isinstance(answer, bool):
        return None
    if isinstance(answer, (int, np.integer)):
        return int(answer)
    if isinstance(answer, (float, np.floating)) and float(answer).is_integer():
        return int(answer)
    return None


def check_zeroed_in_group(answer: object, model: str | os.PathLike[str] | Checkpoint) -> Feedback:
    """Exercise 1: at 4 bits and group size 128, how many of the weights sharing a group with
    the largest weight of ``OUTLIER_TENSOR`` quantize to 0?"""
    w, row, col = _outlier(model)
    g = EXERCISE_GROUP
    start = col // g * g
    group = np.asarray(w[row, start:start + g], np.float32)
    counts = {}
    for b in (EXERCISE_BITS, 8):
        q = quantize_tensor(group[None], g, bits=b).values
        counts[b] = int(np.count_nonzero((q == 0) & (group != 0)))
    value = _as_int(answer)
    if value is None:
        return wrong(f"Answer with a count (an int), got {answer!r}.")
    if value == counts[EXERCISE_BITS]:
        scale = float(np.abs(group).max()) / (2 ** (EXERCISE_BITS - 1) - 1)
        return right(f"{value} of the {g - 1} other weights in row {row}, columns "
                     f"{start}-{start + g - 1}, become 0: the group's scale is {scale:.3f} "
                     f"(max |w| / 7) and every weight below half of it rounds to 0.")
    if value == counts[8]:
        return wrong(f"{value} is the count at 8 bits; the exercise asks for {EXERCISE_BITS} "
                     "bits (qmax = 7).")
    if value == g:
        return wrong("The largest weight itself becomes ±7, never 0: count the other "
                     f"{g - 1} weights of the group.")
    if value == g - counts[EXERCISE_BITS]:
        return wrong("That counts the weights that survive; the question asks how many "
                     "become 0.")
    return wrong(f"Take the {g} weights of row {row} starting at column {col // g * g}, quantize "
                 f"them with gqlearn.quantize(group[None], {g}, bits={EXERCISE_BITS}) and count "
                 "the zeros among the nonzero weights.")


_COS_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _texts(data: Mapping[str, Any], which: str = "all") -> tuple[str, ...]:
    """The sentences of ``data``: ``"all"`` (corpus, then queries, as
    :func:`compare_embeddings` embeds them) or ``"corpus"``."""
    items = list(data["corpus"]) + (list(data["queries"]) if which == "all" else [])
    return tuple(item["text"] for item in items)


def _sentences_cosine(encoder: SentenceEncoder, model: str | os.PathLike[str] | Checkpoint,
                      data: Mapping[str, Any], bits: int, group_size: int | str,
                      roles: Sequence[str], stat: str = "mean", which: str = "all") -> float:
    """Mean (or min) cosine similarity of the sentences' embeddings, float vs quantized
    (cached per encoder)."""
    cache = _COS_CACHE.setdefault(encoder, {})
    texts = _texts(data, which)
    source = str(model.path if isinstance(model, Checkpoint) else model)
    if texts not in cache:
        cache[texts] = encoder.encode(list(texts))
    key = (texts, source, bits, group_size, tuple(roles))
    if key not in cache:
        quant = encoder.with_weights(fake_quantize(model, group_size, bits=bits, roles=roles))
        cache[key] = cosine_similarity(cache[texts], quant.encode(list(texts)))
    cos = cache[key]
    return float(cos.mean() if stat == "mean" else cos.min())


def check_mlp_down_cosine(answer: object, encoder: SentenceEncoder,
                          model: str | os.PathLike[str] | Checkpoint,
                          data: Mapping[str, Any]) -> Feedback:
    """Exercise 2: mean cosine similarity over all the sentences (corpus and queries, as in
    :func:`compare_embeddings`) when only the six ``mlp_down`` matrices are quantized, per
    tensor, at 8 bits (all else float)."""
    n = len(_texts(data))
    try:
        value = float(answer)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return wrong(f"Answer with a number (a mean cosine similarity), got {answer!r}.")
    expected = _sentences_cosine(encoder, model, data, 8, "tensor", ["mlp_down"])
    if abs(value - expected) < 1e-5:
        everything = _sentences_cosine(encoder, model, data, 8, "tensor", LINEAR_ROLES)
        return right(f"{expected:.6f}: the six mlp_down matrices alone (a third of the linear "
                     f"weights) cost almost as much as quantizing every linear layer per "
                     f"tensor ({everything:.6f}, the int8 per-tensor row of section 4); their "
                     "outliers are the problem.")
    hints = [
        ((8, "tensor", LINEAR_ROLES, "mean", "all"), "That quantizes every linear layer; "
         "quantize only the mlp_down ones (roles=['mlp_down'])."),
        ((8, "tensor", ["mlp_down"], "mean", "corpus"), "That averages over the corpus "
         f"sentences only; include the queries: all {n} sentences, as section 4's table does."),
        ((8, 128, ["mlp_down"], "mean", "all"), "That is group size 128; the exercise asks for "
         "one scale per tensor (group_size='tensor')."),
        ((4, "tensor", ["mlp_down"], "mean", "all"), "That is 4 bits; the exercise asks for 8."),
        ((8, "tensor", ["mlp_down"], "min", "all"), "That is the minimum; the exercise asks for "
         f"the mean over the {n} sentences."),
    ]
    for (bits, g, roles, stat, which), msg in hints:
        if abs(value - _sentences_cosine(encoder, model, data, bits, g, roles, stat,
                                         which)) < 1e-5:
            return wrong(msg)
    return wrong(f"Embed the {n} sentences with the float weights and with "
                 "encoder.with_weights(models.fake_quantize(..., 'tensor', bits=8, "
                 "roles=['mlp_down'])), then average models.cosine_similarity(a, b).")


def check_linear_bytes(answer: object, model: str | os.PathLike[str] | Checkpoint,
                       group_size: int = 48, bits: int = 6) -> Feedback:
    """Exercise 3: bytes the explorer counts for all linear layers of MiniLM at ``bits`` bits
    and ``group_size`` (values packed at ``bits`` bits, one float32 scale per group)."""
    ckpt = _checkpoint(model)
    names = _linear_names(ckpt)
    n = sum(ckpt.info(x).size for x in names)
    scales = sum(ckpt.info(x).size // resolve_group_size(ckpt.info(x).shape, group_size)
                 for x in names)
    expected = -(-n * bits // 8) + 4 * scales
    value = _as_int(answer)
    if value is None:
        return wrong(f"Answer with a number of bytes (an int), got {answer!r}.")
    if value == expected:
        return right(f"{expected:,} bytes: {n:,} weights × {bits} bits / 8 = {n * bits // 8:,} "
                     f"plus {scales:,} float32 scales × 4 = {4 * scales:,}; "
                     f"{8 * expected / n:.3f} bits per weight.")
    hints = [(n * bits // 8, "That leaves out the scales: one float32 (4 bytes) per group."),
             (n + 4 * scales, "That stores the values as whole bytes (8 bits); count them "
              f"packed at {bits} bits."),
             (n * 4, "That is the float32 size before quantization."),
             (n * bits // 8 + 2 * scales, "The scales are float32 here: 4 bytes each."),
             (n * bits // 8 + scales, "Each scale takes 4 bytes, not 1.")]
    for v, msg in hints:
        if value == v:
            return wrong(msg)
    if close_enough(value, expected, rel=0.02):
        return wrong("Close but not exact: count every linear layer (q, k, v, o, up, down in "
                     "each of the 6 layers) and n_groups = weights / group size.")
    return wrong("Sum over the 36 linear layers: weights × bits / 8 for the values, plus "
                 "4 bytes per group for the scales.")
