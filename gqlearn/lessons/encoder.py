"""Chapter 05 support: a real transformer encoder (all-MiniLM-L6-v2).

Only tables, plots, the tensor-explorer widget and the exercise checkers of
``05_transformer_encoder.ipynb``; the quantization itself is written in the notebook.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..core import quantize
from ..group_size import parse_group_size, resolve_group_size, setting_label
from ..io.safetensors import Checkpoint
from ..models import SentenceEncoder, cosine_similarity, explore, load_reference_embeddings
from ..roles import LINEAR_ROLES, ROLES, classify, layer_index, short_name
from .display import Table, live_widget, plain_log_labels, plt, show_figure
from .exercises import Feedback, call_learner, right, wrong

__all__ = ["recurring_channels", "plot_role_histograms",
           "plot_channel_ranges", "sweep_linear_layers", "role_pivot", "plot_error_heatmap",
           "memory_summary", "reference_check", "show_tensor", "tensor_explorer",
           "OUTLIER_TENSOR", "check_count_zeroed", "check_linear_bytes"]

READS_HIDDEN = ("attn_q", "attn_k", "attn_v", "mlp_up", "embedding")  # columns = hidden dims
WRITES_HIDDEN = ("attn_o", "mlp_down")  # rows = hidden dims
OUTLIER_TENSOR = "encoder.layer.0.output.dense.weight"


def _key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _label(name: str) -> str:
    """``L3.attn_q``; embedding tables as ``word emb``."""
    short = short_name(name)
    if short == name and classify(name) == "embedding":
        return name.removesuffix(".weight").rsplit(".", 1)[-1].removesuffix("_embeddings") + " emb"
    return short


def _linear_names(ckpt: Checkpoint) -> list[str]:
    return sorted((n for n in ckpt if classify(n) in LINEAR_ROLES), key=_key)


def _role_names(ckpt: Checkpoint, role: str) -> list[str]:
    return [n for n in ckpt if classify(n) == role and ckpt.info(n).ndim >= 2
            and ckpt.info(n).is_float]


def recurring_channels(ckpt: Checkpoint, top: int = 3, min_count: int = 4) -> Table:
    """Hidden dimensions among the ``top`` largest columns (of matrices reading the hidden
    state, embedding tables included) or rows (of ``attn_o``, ``mlp_down``) of at least
    ``min_count`` matrices, most frequent first."""
    hits: dict[int, dict[str, list[str]]] = {}
    for name in sorted(ckpt, key=_key):
        role, info = classify(name), ckpt.info(name)
        if info.ndim != 2 or not info.is_float or role not in (*READS_HIDDEN, *WRITES_HIDDEN):
            continue
        kind = "row" if role in WRITES_HIDDEN else "col"
        amax = np.abs(ckpt[name]).max(axis=1 if kind == "row" else 0)
        for c in np.argsort(-amax, kind="stable")[:top]:
            entry = hits.setdefault(int(c), {"col": [], "row": []})
            entry[kind].append(_label(name) if role == "embedding"
                               else f"{role} L{layer_index(name)}")
    rows = [(c, len(h["col"]) + len(h["row"]), ", ".join(h["col"]), ", ".join(h["row"]))
            for c, h in hits.items() if len(h["col"]) + len(h["row"]) >= min_count]
    rows.sort(key=lambda r: (-r[1], r[0]))
    return Table(("hidden dim", "matrices", f"top-{top} column of", f"top-{top} row of"),
                 tuple(rows))


def plot_role_histograms(ckpt: Checkpoint, roles: Sequence[str] = (
        "attn_q", "attn_k", "attn_v", "attn_o", "mlp_up", "mlp_down", "embedding")):
    """Histogram (log counts) of the weights of each role, all layers pooled."""
    fig, axes = plt().subplots(2, (len(roles) + 1) // 2, figsize=(13, 5.5))
    for ax, role in zip(axes.ravel(), roles, strict=False):
        names = _role_names(ckpt, role)
        w = np.concatenate([ckpt[n].ravel() for n in names])
        lim = float(np.abs(w).max())
        ax.hist(w, bins=121, range=(-lim, lim), color="C0")
        ax.set_yscale("log")
        ax.set_title(f"{role} ({len(names)} tensors)", fontsize=10)
        ax.set_xlabel("weight value", fontsize=9)
        ax.set_ylabel("count (log scale)", fontsize=9)
    for ax in axes.ravel()[len(roles):]:
        ax.axis("off")
    fig.suptitle("Weight values per role, all layers pooled: note the x ranges")
    fig.tight_layout()
    return fig


def plot_channel_ranges(ckpt: Checkpoint, names: Sequence[str]):
    """Largest |w| of every input channel (column) of a few matrices, the largest labelled."""
    fig, axes = plt().subplots(len(names), 1, figsize=(11, 2.3 * len(names)))
    for ax, name in zip(np.atleast_1d(axes), names, strict=True):
        cm = np.abs(ckpt[name]).max(axis=0)
        ax.plot(cm, lw=0.7)
        ax.axhline(np.median(cm), color="0.5", lw=0.8, ls="--")
        c = int(np.argmax(cm))
        ax.annotate(f"channel {c}", (c, cm[c]), fontsize=9, xytext=(6, -10),
                    textcoords="offset points")
        ax.set_ylabel("max |w|")
        ax.set_title(f"{_label(name)}: {cm.size} input channels (dashed: median)", fontsize=10)
    np.atleast_1d(axes)[-1].set_xlabel("input channel (column)")
    fig.tight_layout()
    return fig


def sweep_linear_layers(ckpt: Checkpoint, group_sizes: Iterable[int | str] = (
        32, 64, 128, 256, "row", "tensor"), bits: Iterable[int] = (8, 4)) -> list[dict]:
    """Every linear layer at each (bits, group size) through :func:`gqlearn.models.explore`:
    one dict per (setting, tensor) with the explorer's fields plus ``setting`` (``*``: some
    tensors backed off), ``bits``, ``requested``, ``label``, ``totals``, and the error and
    signal power sums ``sum_sq_error``, ``sum_sq_signal``."""
    rows = []
    for b in bits:
        for g in group_sizes:
            report = explore(ckpt, g, bits=b, roles=LINEAR_ROLES)
            t = report.totals
            label = setting_label(b, g) + ("*" if t["n_backed_off"] else "")
            for r in (r for r in report.results if r.quantized):
                rows.append({**r.to_dict(), "setting": label, "bits": b,
                             "requested": parse_group_size(g), "label": short_name(r.name),
                             "totals": t, "sum_sq_error": r.sum_sq_error,
                             "sum_sq_signal": r.sum_sq_signal})
    return rows


def _pooled_sqnr(sel: Sequence[Mapping[str, Any]]) -> float:
    return float(10 * np.log10(sum(r["sum_sq_signal"] for r in sel)
                               / sum(r["sum_sq_error"] for r in sel)))


def _roles(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [role for role in ROLES if any(r["role"] == role for r in rows)]


def role_pivot(rows: Sequence[Mapping[str, Any]], value: str = "sqnr_db", fmt: str = ".1f"
               ) -> Table:
    """``value`` per setting and role; SQNR pooled over the layers (total signal over total
    error power), any other value averaged."""
    out = []
    for s in dict.fromkeys(r["setting"] for r in rows):
        cells: list[Any] = [s]
        for role in _roles(rows):
            sel = [r for r in rows if r["role"] == role and r["setting"] == s]
            cells.append(_pooled_sqnr(sel) if value == "sqnr_db"
                         else float(np.mean([r[value] for r in sel])))
        out.append(tuple(cells))
    return Table(("setting", *_roles(rows)), tuple(out), formats={r: fmt for r in _roles(rows)})


def plot_error_heatmap(rows: Sequence[Mapping[str, Any]]):
    """SQNR (dB) of every linear layer (rows) at every setting (columns), numbers at 8 pt."""
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    index = {(r["label"], r["setting"]): r["sqnr_db"] for r in rows}
    m = np.array([[index[(t, s)] for s in settings] for t in labels])
    fig, ax = plt().subplots(figsize=(10, 12.5))
    im = ax.imshow(m, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(settings)), settings, rotation=40, ha="right", fontsize=9)
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    for i, j in np.ndindex(m.shape):
        ax.text(j, i, f"{m[i, j]:.0f}", ha="center", va="center", fontsize=8,
                color="white" if m[i, j] < (m.min() + m.max()) / 2 else "black")
    fig.colorbar(im, ax=ax, label="SQNR in dB (higher is better)", shrink=0.6)
    ax.set_title("SQNR of every linear layer of all-MiniLM-L6-v2 (* = 256 backed off)")
    fig.tight_layout()
    return fig


def memory_summary(rows: Sequence[Mapping[str, Any]]) -> Table:
    """Per setting: bits per linear weight, MB (10**6 bytes) of the linear layers and of the
    whole model (everything else float32), the linear layers' pooled SQNR and mlp_down's share
    of its error; the float32 sizes in a note."""
    out = []
    for s in dict.fromkeys(r["setting"] for r in rows):
        sel = [r for r in rows if r["setting"] == s]
        t, n = sel[0]["totals"], sum(int(np.prod(r["shape"])) for r in sel)
        after = sum(r["bytes_after"] for r in sel)
        share = (sum(r["sum_sq_error"] for r in sel if r["role"] == "mlp_down")
                 / sum(r["sum_sq_error"] for r in sel))
        out.append((s, 8 * after / n, after / 1e6, t["bytes_after"] / 1e6,
                    t["bytes_before"] / t["bytes_after"], _pooled_sqnr(sel), 100 * share))
    first = [r for r in rows if r["setting"] == rows[0]["setting"]]
    before = (sum(r["bytes_before"] for r in first) / 1e6, first[0]["totals"]["bytes_before"] / 1e6)
    return Table(("setting", "bits/weight", "linear MB", "whole model MB", "x smaller", "SQNR dB",
                  "% of error in mlp_down"), tuple(out),
                 notes=(f"float32: linear layers {before[0]:.2f} MB, "
                        f"whole model {before[1]:.2f} MB",),
                 formats={"bits/weight": ".3f", "linear MB": ".2f", "whole model MB": ".2f",
                          "x smaller": ".2f", "SQNR dB": ".1f", "% of error in mlp_down": ".0f"})


def reference_check(encoder: SentenceEncoder, tolerance: float = 1e-4) -> Table:
    """Cosine distance of our embeddings to sentence-transformers' own, against thresholds
    (the distances are float32 round-off, whose digits depend on the BLAS)."""
    sentences, reference, info = load_reference_embeddings()
    distance = 1 - cosine_similarity(encoder.encode(sentences), reference)
    tokens = encoder.tokenize(sentences)[2].sum(axis=1)
    rows = tuple((s if len(s) <= 44 else s[:41] + "...", int(n), bool(d < tolerance),
                  bool(d < 1e-6)) for s, n, d in zip(sentences, tokens, distance, strict=True))
    made = info["generated_with"]
    return Table(("sentence", "tokens", f"distance < {tolerance:.0e}", "distance < 1e-6"), rows,
                 notes=(f"reference: sentence-transformers {made['sentence_transformers']}, "
                        f"torch {made['torch']}, max_seq_length {made['max_seq_length']}",))


def show_tensor(ckpt: Checkpoint, name: str, group_size: int | str = 128, bits: int = 8):
    """One tensor quantized: a line of metrics, the rows with the largest group scales, the
    per-group scales (log colours) and the error histogram."""
    from matplotlib.colors import LogNorm

    w = ckpt[name]
    report = explore({name: w}, group_size, bits=bits, keep=True)
    r, qt = report[name], report.quantized[name]
    print(f"{_label(name)} {'x'.join(map(str, w.shape))}, {setting_label(bits, group_size)} "
          f"(group {r.group_size}): SQNR {r.sqnr_db:.2f} dB, max err {r.max_abs_error:.2e}, "
          f"zeroed {r.zeroed_fraction:.2%}, {r.bytes_before:,} -> {r.bytes_after:,} bytes")
    scales = qt.scales.reshape(qt.scales.shape[0], -1).astype(np.float64)
    if scales.shape[0] == w.shape[0] > 1:
        row_max, med = scales.max(axis=1), float(np.median(scales))
        print("rows with the largest group scale (x the median scale): " + ", ".join(
            f"{i} ({row_max[i] / med:.1f}x)" for i in np.argsort(-row_max, kind="stable")[:4]))
    fig, (a, b) = plt().subplots(1, 2, figsize=(12, 3.8))
    im = a.imshow(scales, aspect="auto", cmap="magma", interpolation="nearest",
                  norm=LogNorm(vmin=scales.min(), vmax=max(scales.max(), scales.min() * 1.01)))
    bar = fig.colorbar(im, ax=a, label="group scale (log)")
    a.set(xlabel="group along the row", ylabel="row",
          title="per-group scales: bright = a large weight in the group")
    b.hist((qt.dequantize().reshape(w.shape) - w).ravel(), bins=101, color="C1")
    b.set_yscale("log")
    plain_log_labels(bar.ax.yaxis, b.yaxis)  # a widget draws it: no mathtext
    b.set(xlabel="dequantized - original weight", ylabel="count (log scale)",
          title="error histogram")
    fig.tight_layout()
    return fig


def tensor_explorer(ckpt: Checkpoint):
    """Pick a linear layer, a group size and a bit width: :func:`show_tensor`, live."""
    import ipywidgets as widgets

    names = _linear_names(ckpt)

    def update(tensor: str, group_size: int | str, bits: int) -> None:
        fig = show_tensor(ckpt, tensor, group_size, bits)
        show_figure(fig)

    return live_widget(
        update, "tensor explorer",
        tensor=widgets.Dropdown(options=[(_label(n), n) for n in names], value=OUTLIER_TENSOR,
                              description="tensor"),
        group_size=widgets.ToggleButtons(options=[("32", 32), ("64", 64), ("128", 128),
                                                  ("256", 256), ("per-row", "row"),
                                                  ("per-tensor", "tensor")],
                                         value=128, description="group size"),
        bits=widgets.IntSlider(value=8, min=2, max=8, description="bits"))


# --------------------------------------------------------------------------------------------
# Exercise checkers: they run the learner's answer, name what differs, never print the answer.
# --------------------------------------------------------------------------------------------

def check_count_zeroed(fn: Any) -> Feedback:
    """Exercise 1: ``fn(w, group_size, bits)`` counts the nonzero weights that quantize to 0."""
    rng = np.random.default_rng(5)
    cases = []
    for shape, g, bits in (((4, 64), 32, 4), ((8, 128), 128, 8), ((3, 96), 32, 3),
                           ((6, 256), 64, 4)):
        w = (rng.standard_t(3, size=shape) * 0.05).astype(np.float32)
        w[rng.integers(shape[0]), rng.integers(shape[1])] = 2.0  # an outlier
        cases.append((f"a {shape[0]}x{shape[1]} matrix, group size {g}, {bits} bits", w, g, bits))
    z = np.zeros((2, 32), np.float32)
    z[0, :4] = [1.0, 0.001, -0.002, 0.5]
    cases.append(("a matrix with exact zeros and an all-zero row", z, 32, 4))
    for what, w, g, bits in cases:
        got, err = call_learner(fn, w.copy(), g, bits)
        if err is not None:
            return wrong(f"On {what} your function raised {err}")
        if got is None:
            return wrong("count_zeroed returns None: fill in its body and return a count.")
        q = quantize(w, g, bits=bits).values
        if got == np.count_nonzero((q == 0) & (w != 0)):
            continue
        if got == np.count_nonzero(q == 0):
            return wrong(f"On {what} you also counted weights that were 0 to begin with; count "
                         "only the nonzero ones.")
        return wrong(f"On {what} your count differs from gqlearn.quantize's. Hint: quantize with "
                     "gqlearn.quantize(w, group_size, bits=bits) and count (q == 0) & (w != 0).")
    return right(f"count_zeroed agrees with gqlearn.quantize on {len(cases)} test matrices.")


def check_linear_bytes(answer: Any, ckpt: Checkpoint, group_size: int = 48, bits: int = 6
                       ) -> Feedback:
    """Exercise 2: bytes of all linear layers at ``bits`` bits (packed) and ``group_size``,
    one float32 scale per group."""
    infos = [ckpt.info(n) for n in _linear_names(ckpt)]
    n = sum(i.size for i in infos)
    scales = sum(i.size // resolve_group_size(i.shape, group_size) for i in infos)
    expected = -(-n * bits // 8) + 4 * scales
    if not isinstance(answer, (int, np.integer)) or isinstance(answer, bool):
        return wrong(f"Answer with a number of bytes (an int), got {answer!r}.")
    if answer == expected:
        return right(f"{n:,} weights × {bits} bits / 8 plus {scales:,} scales × 4 bytes: "
                     f"{8 * expected / n:.3f} bits per weight.")
    for v, msg in ((n * bits // 8, "That leaves out the scales: 4 bytes per group."),
                   (n + 4 * scales, f"That stores values as whole bytes; pack them at {bits} "
                    "bits."), (n * 4, "That is the float32 size before quantization."),
                   (n * bits // 8 + 2 * scales, "The scales are float32: 4 bytes each.")):
        if answer == v:
            return wrong(msg)
    return wrong("Sum over the 36 linear layers: weights × bits / 8, plus 4 bytes per group.")
