"""Chapter 03, error analysis: measure what the group size buys and what it costs.

Everything the notebook computes more than once, or that is worth a test, lives here:

* :func:`sweep` - quantize matrices at many group sizes and bit widths, one metrics row each;
  :func:`knee` / :func:`knees` - where the trade-off curve bends (defined below);
* :func:`theory_vs_measurement` - MSE predicted from the scales (``scale**2 / 12`` per group,
  times ``(g - 1) / g``) beside the measured MSE;
* :func:`single_outlier` and :func:`outlier_cost` - what one large weight, or a few outlier
  columns, cost at each group size;
* :func:`group_size_table` - the seeds' halving back-off against ``gqlearn.choose_group_size``;
* :func:`time_group_sizes` and :func:`timing_verdict` - quantize/dequantize time per group size;
* :func:`claim_280_to_70` - the seeds' "70B: 280 GB -> 70 GB", counted three ways;
* plots, the :func:`explore` widget and its static fallback :func:`explore_static`;
* the exercise checkers ``check_*``.

The knee
--------
Doubling the group size from ``g`` to ``2g`` saves ``32/g - 32/(2g) = 16/g`` bits per weight
of float32 scales and loses some SQNR.  Their ratio is the *price* of the step, in dB per bit
saved.  One more bit per quantized value halves the rounding step and buys
``20 log10(2) = 6.02`` dB, so that is what a bit of storage is worth.  The knee is the largest
group size reached while every step's price stays at or below 6.02 dB per bit: past it, the
bits saved on scales cost more SQNR than the same bits would buy if spent on the values.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from .. import synthetic
from ..core import quantize
from ..exercises import Feedback, close_enough, right, wrong
from ..group_size import choose_group_size
from ..memory import GB, LLAMA2_CONFIGS, ModelShape, memory_table
from ..metrics import error_report
from .display import Table

__all__ = ["SHAPE", "GROUP_SIZES", "DB_PER_BIT", "MODEL_WIDTHS", "REQUESTS", "make_matrices",
           "COLUMNS", "group_label", "sweep", "pivot", "table", "rate_table", "theory_across",
           "marginal_rates", "knee", "knees", "theory_vs_measurement", "group_theory",
           "single_outlier", "outlier_cost", "group_size_table", "format_group_size_table",
           "time_group_sizes", "timing_verdict", "low_bit_summary", "claim_280_to_70",
           "plot_distributions", "plot_tradeoff", "plot_theory", "plot_outliers",
           "plot_low_bits", "plot_timing", "explore", "explore_static",
           "exercise_matrix", "check_predicted_mse", "check_scale_overhead",
           "check_group_size_chooser"]

SHAPE = (512, 4096)
"""The chapter's matrices: 512 rows of a 4096-wide projection (2 Mi weights, fast to sweep)."""

GROUP_SIZES = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
"""Powers of two from 4 to a whole 4096-wide row; :func:`sweep` adds per-tensor."""

DB_PER_BIT = 20 * math.log10(2)
"""SQNR bought by one more bit per value (the rounding step halves): 6.02 dB."""

MODEL_WIDTHS = (288, 384, 576, 768, 896, 2048, 4096, 4864, 5120, 11008, 13824, 14336, 28672)
"""Hidden and MLP widths of real models, from TinyStories-size llama2.c models to LLaMA-2 70B."""

REQUESTS = (32, 64, 128, 256, 300)

LABELS = {"gaussian": "Gaussian", "laplace": "Laplace",
          "student_t": f"Student-t (df={synthetic.DEFAULT_DF:g})",
          "outliers": "Gaussian + outlier columns"}


# --------------------------------------------------------------------------------------------
# Data and tables
# --------------------------------------------------------------------------------------------

def make_matrices(shape: tuple[int, int] = SHAPE, seed: int = 0,
                  strength: float = 20.0, n_columns: int = 4) -> dict[str, np.ndarray]:
    """The chapter's four synthetic matrices, keyed by :data:`gqlearn.synthetic.DISTRIBUTIONS`.

    All have standard deviation 0.02 (the outlier matrix's base does); the outlier matrix has
    ``n_columns`` columns ``strength`` times larger.

    Examples
    --------
    >>> {k: v.shape for k, v in make_matrices((4, 64)).items()}
    {'gaussian': (4, 64), 'laplace': (4, 64), 'student_t': (4, 64), 'outliers': (4, 64)}
    """
    return {k: synthetic.make_weights(k, shape, seed=seed, strength=strength,
                                      n_columns=n_columns)
            for k in synthetic.DISTRIBUTIONS}


def group_label(group: int | str, width: int) -> str:
    """How tables name a group setting: ``"128"``, ``"4096 (per-row)"`` when one group spans
    the whole row of ``width`` weights, ``"per-tensor"`` for one scale overall.

    Examples
    --------
    >>> group_label(128, 4096), group_label(4096, 4096), group_label("tensor", 4096)
    ('128', '4096 (per-row)', 'per-tensor')
    """
    if group == "tensor":
        return "per-tensor"
    return f"{group} (per-row)" if group == width else str(group)


def _quantize_at(w: np.ndarray, g: int | str, bits: int):
    """Quantize ``w`` with group size ``g`` (an int, or "tensor" for one scale overall)."""
    if g == "tensor":
        w = w.reshape(1, -1)
        g = w.size
    return w, quantize(w, int(g), bits=bits)


def sweep(matrices: Mapping[str, np.ndarray], group_sizes: Iterable[int] = GROUP_SIZES,
          bits: int | Iterable[int] = 8, per_tensor: bool = True) -> list[dict]:
    """Quantize every matrix at every group size and bit width; one metrics row each.

    Parameters
    ----------
    matrices : mapping of name -> 2-D float32 array
    group_sizes : iterable of int
        Each must divide the matrices' last axis.
    bits : int or iterable of int
    per_tensor : bool, default True
        Also quantize each matrix with a single scale (``group = "tensor"``).

    Returns
    -------
    list of dict
        Keys ``distribution``, ``bits``, ``group`` (the group size, or ``"tensor"``),
        ``group_label`` (see :func:`group_label`), ``group_size`` (weights per scale), ``bits_per_weight`` (``bits + 32 / group_size``),
        ``max_abs_error``, ``mse``, ``sqnr_db``, ``relative_error`` (Frobenius) and
        ``zeroed_fraction``.

    Examples
    --------
    >>> rows = sweep({"g": synthetic.gaussian((8, 64))}, [4, 64], bits=8)
    >>> [(r["group_label"], r["bits_per_weight"]) for r in rows]
    [('4', 16.0), ('64 (per-row)', 8.5), ('per-tensor', 8.0625)]
    """
    bit_list = [bits] if isinstance(bits, (int, np.integer)) else list(bits)
    sizes: list[int | str] = list(group_sizes) + (["tensor"] if per_tensor else [])
    rows = []
    for b in bit_list:
        for name, w in matrices.items():
            for g in sizes:
                wg, qt = _quantize_at(w, g, int(b))
                r = error_report(wg, qt)
                rows.append({"distribution": name, "bits": int(b), "group": g,
                             "group_label": group_label(g, w.shape[-1]),
                             "group_size": qt.group_size, "bits_per_weight": qt.bits_per_weight,
                             "max_abs_error": r.max_abs_error, "mse": r.mse,
                             "sqnr_db": r.sqnr_db, "relative_error": r.relative_frobenius_error,
                             "zeroed_fraction": r.zeroed_fraction})
    return rows


def table(rows: Sequence[Mapping], columns: Sequence[tuple[str, str, str]],
          notes: Sequence[str] = ()) -> Table:
    """A :class:`~gqlearn.lessons.single_scale.Table` of ``rows``: ``columns`` are
    ``(key, header, float format)`` triples.

    Examples
    --------
    >>> table([{"g": 32, "x": 0.5}], [("g", "group", "d"), ("x", "value", ".2f")])
    group  value
    -----  -----
       32   0.50
    """
    return Table(tuple(h for _, h, _ in columns),
                 tuple(tuple(r[k] for k, _, _ in columns) for r in rows),
                 notes=tuple(notes), formats={h: f for _, h, f in columns})


def pivot(rows: Sequence[Mapping], value: str, fmt: str = ".2f", *,
          bits: int | None = None) -> Table:
    """Table of ``value`` with one line per group and one column per distribution.

    Examples
    --------
    >>> rows = sweep({"a": synthetic.gaussian((8, 64))}, [64], per_tensor=False)
    >>> pivot(rows, "bits_per_weight", ".3f")
           group  bits/weight      a
    ------------  -----------  -----
    64 (per-row)        8.500  8.500
    """
    rows = [r for r in rows if bits is None or r["bits"] == bits]
    dists = list(dict.fromkeys(r["distribution"] for r in rows))
    groups = list(dict.fromkeys(r["group"] for r in rows))
    labels = {r["group"]: r.get("group_label", str(r["group"])) for r in rows}
    lines = []
    for g in groups:
        line: dict[str, object] = {"group": labels[g]}
        for r in rows:
            if r["group"] == g:
                line["bpw"] = r["bits_per_weight"]
                line[r["distribution"]] = r[value]
        lines.append(line)
    cols = [("group", "group", "s"), ("bpw", "bits/weight", ".3f")]
    cols += [(d, d, fmt) for d in dists]
    return table(lines, cols)


COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "sweep": [("group_label", "group", "s"), ("bits_per_weight", "bits/weight", ".3f"),
              ("max_abs_error", "max |err|", ".3e"), ("mse", "MSE", ".3e"),
              ("sqnr_db", "SQNR dB", ".2f"), ("relative_error", "rel. error", ".4f"),
              ("zeroed_fraction", "zeroed", ".4f")],
    "theory": [("group_size", "group", "d"), ("measured", "measured MSE", ".4e"),
               ("naive", "scale²/12", ".4e"), ("corrected", "(g-1)/g·scale²/12", ".4e"),
               ("ratio_naive", "measured/naive", ".4f"),
               ("ratio_corrected", "measured/corrected", ".4f")],
    "single_outlier": [("group_size", "group", "d"), ("scale_ratio", "scale ×", ".2f"),
                       ("scale_sq_ratio", "scale² ×", ".1f"),
                       ("group_mse_ratio", "group MSE ×", ".1f"),
                       ("share", "share of error", ".3f"), ("row_mse_ratio", "row MSE ×", ".2f"),
                       ("zeroed_in_group", "mean # zeroed in group", ".1f")],
    "outlier_cost": [("group_size", "group", "d"), ("groups_hit", "groups hit", ".4f"),
                     ("mse_clean", "MSE without", ".3e"), ("mse_with", "MSE with", ".3e"),
                     ("cost", "cost ×", ".2f"), ("sqnr_clean_db", "SQNR without", ".2f"),
                     ("sqnr_with_db", "SQNR with", ".2f"), ("zeroed_with", "zeroed with", ".4f")],
    "timing": [("backend", "backend", "s"), ("group_size", "group", "d"), ("pow2", "power of 2", "s"),
               ("multiple_of_32", "multiple of 32", "s"),
               ("quantize_ns", "quantize ns/weight", ".3f"),
               ("quantize_spread", "spread", ".2f"),
               ("dequantize_ns", "dequantize ns/weight", ".3f"),
               ("dequantize_spread", "spread ", ".2f")],
    "memory": [("model", "model", "s"), ("group_size", "group", "d"),
               ("bits_per_weight", "bits/weight", ".4g"), ("scale_gb", "scales GB", ".3f"),
               ("quantized_gb", "total GB", ".2f"), ("baseline_gb", "bf16 GB", ".2f"),
               ("ratio", "ratio", ".3f"), ("overhead_fraction", "scales / model", ".4f")],
    "claim": [("count", "parameter count", "s"), ("parameters", "parameters", "s"),
              ("quantized", "quantized", "s"), ("baseline", "baseline", "s"),
              ("baseline_gb", "baseline GB", ".1f"), ("scale_gb", "scales GB", ".3f"),
              ("quantized_gb", "quantized GB", ".2f"), ("ratio", "ratio", ".2f")],
    "low_bits": [("distribution", "distribution", "s"), ("bits", "bits", "d"),
                 ("rel_small", "rel. error g=32", ".4f"),
                 ("rel_large", "rel. error per-row", ".4f"),
                 ("gap_points", "gap (points)", ".2f"), ("sqnr_gap_db", "SQNR gap dB", ".2f"),
                 ("zeroed_small", "zeroed g=32", ".4f"), ("zeroed_large", "zeroed per-row", ".4f")],
}
"""Column specs for :func:`table`, one per kind of row this module makes."""


# --------------------------------------------------------------------------------------------
# The knee
# --------------------------------------------------------------------------------------------

def marginal_rates(bits_per_weight: Sequence[float], sqnr_db: Sequence[float]) -> np.ndarray:
    """Price of each step along a trade-off curve: SQNR lost per bit per weight saved.

    Points must be ordered by decreasing ``bits_per_weight`` (increasing group size).

    Examples
    --------
    >>> marginal_rates([9.0, 8.5, 8.25], [45.0, 44.0, 42.0]).tolist()
    [2.0, 8.0]
    """
    b = np.asarray(bits_per_weight, dtype=np.float64)
    s = np.asarray(sqnr_db, dtype=np.float64)
    if b.shape != s.shape or b.ndim != 1 or b.size < 2:
        raise ValueError("need two 1-D sequences of equal length >= 2")
    saved = b[:-1] - b[1:]
    if (saved <= 0).any():
        raise ValueError("bits_per_weight must decrease strictly (group sizes increasing)")
    return (s[:-1] - s[1:]) / saved


def knee(group_sizes: Sequence[int], bits_per_weight: Sequence[float],
         sqnr_db: Sequence[float], db_per_bit: float = DB_PER_BIT) -> int:
    """The largest group size reached while every step costs at most ``db_per_bit`` dB per bit.

    Parameters
    ----------
    group_sizes : sequence of int, increasing
    bits_per_weight, sqnr_db : sequences of float, same length
    db_per_bit : float, default 6.02
        Exchange rate: what one bit per weight is worth in SQNR.

    Returns
    -------
    int
        ``group_sizes[k]`` where step ``k -> k+1`` is the first to cost more than
        ``db_per_bit``; the last group size if none does.

    Examples
    --------
    >>> knee([32, 64, 128], [9.0, 8.5, 8.25], [45.0, 44.0, 42.0])
    64
    """
    rates = marginal_rates(bits_per_weight, sqnr_db)
    if len(group_sizes) != rates.size + 1:
        raise ValueError("group_sizes must have one entry per point")
    over = np.flatnonzero(rates > db_per_bit)
    return int(group_sizes[over[0] if over.size else -1])


def knees(rows: Sequence[Mapping], db_per_bit: float = DB_PER_BIT) -> dict[tuple[str, int], int]:
    """:func:`knee` of each (distribution, bits) curve in :func:`sweep` rows (groups only,
    per-tensor rows are ignored)."""
    out: dict[tuple[str, int], int] = {}
    keys = dict.fromkeys((r["distribution"], r["bits"]) for r in rows)
    for d, b in keys:
        pts = sorted((r["group_size"], r["bits_per_weight"], r["sqnr_db"]) for r in rows
                     if r["distribution"] == d and r["bits"] == b and r["group"] != "tensor")
        g, bpw, s = zip(*pts)
        out[(d, b)] = knee(g, bpw, s, db_per_bit)
    return out


def rate_table(rows: Sequence[Mapping], bits: int = 8) -> Table:
    """The price of each doubling of the group size, in dB of SQNR per bit per weight saved,
    one column per distribution (per-tensor rows ignored); compare with 6.02."""
    rows = [r for r in rows if r["bits"] == bits and r["group"] != "tensor"]
    dists = list(dict.fromkeys(r["distribution"] for r in rows))
    curves = {}
    for d in dists:
        pts = sorted((r["group_size"], r["bits_per_weight"], r["sqnr_db"]) for r in rows
                     if r["distribution"] == d)
        g, bpw, sq = zip(*pts)
        curves[d] = marginal_rates(bpw, sq)
    lines = [{"step": f"{a} → {b}", "saved": bpw[i] - bpw[i + 1],
              **{d: curves[d][i] for d in dists}}
             for i, (a, b) in enumerate(zip(g[:-1], g[1:]))]
    return table(lines, [("step", "group step", "s"), ("saved", "bits saved", ".4g")]
                 + [(d, d, ".2f") for d in dists],
                 notes=(f"{bits} bits: dB of SQNR lost per bit per weight saved "
                        f"(knee: last step at or below {DB_PER_BIT:.2f})",))


# --------------------------------------------------------------------------------------------
# Theory vs measurement
# --------------------------------------------------------------------------------------------

def group_theory(w: np.ndarray, group_size: int, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per-group predicted and measured MSE.

    The prediction treats each rounding error as uniform on ``[-scale/2, scale/2]``, variance
    ``scale**2 / 12``, except that the group's largest weight maps exactly to ``±qmax`` and has
    no error: ``(g - 1) / g * scale**2 / 12``.

    Returns
    -------
    predicted, measured : numpy.ndarray
        float64, one value per group (flattened).
    """
    qt = quantize(w, group_size, bits=bits)
    s = qt.scales.astype(np.float64).ravel()
    predicted = (group_size - 1) / group_size * s * s / 12
    return predicted, error_report(w, qt).group_mse.ravel()


def theory_vs_measurement(w: np.ndarray, group_sizes: Iterable[int] = GROUP_SIZES,
                          bits: int = 8) -> list[dict]:
    """Measured MSE beside the uniform-rounding prediction from ``qt.scales``.

    Returns
    -------
    list of dict
        Keys ``group_size``, ``measured`` (MSE), ``naive`` (mean of ``scale**2 / 12``),
        ``corrected`` (``naive * (g - 1) / g``), ``ratio_naive`` and ``ratio_corrected``
        (measured / prediction) and ``zeroed_fraction``.

    Examples
    --------
    >>> rows = theory_vs_measurement(synthetic.gaussian((64, 256)), [4])
    >>> round(rows[0]["ratio_naive"], 2), round(rows[0]["ratio_corrected"], 2)
    (0.75, 1.0)
    """
    rows = []
    for g in group_sizes:
        qt = quantize(w, g, bits=bits)
        r = error_report(w, qt)
        s = qt.scales.astype(np.float64)
        naive = float(np.mean(s * s)) / 12
        corrected = naive * (g - 1) / g
        rows.append({"group_size": g, "measured": r.mse, "naive": naive,
                     "corrected": corrected, "ratio_naive": r.mse / naive,
                     "ratio_corrected": r.mse / corrected, "zeroed_fraction": r.zeroed_fraction})
    return rows


def theory_across(matrices: Mapping[str, np.ndarray], bits_list: Iterable[int] = (8, 4, 3, 2),
                  group_size: int = 128) -> Table:
    """measured / corrected prediction for every matrix and bit width, at one group size,
    with the fraction of weights zeroed (where the uniform model fails)."""
    lines = []
    for b in bits_list:
        line: dict[str, object] = {"bits": b}
        for d, w in matrices.items():
            r = theory_vs_measurement(w, [group_size], bits=b)[0]
            line[d] = r["ratio_corrected"]
            line[d + " zeroed"] = r["zeroed_fraction"]
        lines.append(line)
    cols = [("bits", "bits", "d")]
    for d in matrices:
        cols += [(d, d, ".3f"), (d + " zeroed", "zeroed", ".3f")]
    return table(lines, cols, notes=(f"measured MSE / predicted, group size {group_size}",))


# --------------------------------------------------------------------------------------------
# Outliers
# --------------------------------------------------------------------------------------------

def single_outlier(group_sizes: Iterable[int] = GROUP_SIZES, magnitude: float = 20.0,
                   n: int = 4096, position: int = 1000, bits: int = 8, n_rows: int = 256,
                   seed: int = 0) -> list[dict]:
    """What one weight ``magnitude`` standard deviations large costs its row, per group size.

    Each of ``n_rows`` Gaussian rows of ``n`` weights (std 0.02) gets one weight, at
    ``position``, set to ``magnitude * 0.02``; the rows are quantized with and without it and
    the ratios averaged over the rows (one row alone is noisy for small groups).

    Returns
    -------
    list of dict
        Keys ``group_size``; ``scale_ratio`` (mean over rows of the outlier group's scale over
        the same group's scale without the outlier); ``scale_sq_ratio`` (the outlier groups'
        summed squared scales over the same without the outlier: what the ``scale**2 / 12``
        law predicts for the next ratio); ``group_mse_ratio`` (the outlier groups'
        MSE over the same groups' MSE without it); ``share`` (fraction of the squared error
        that comes from the outlier's groups); ``row_mse_ratio`` (MSE with the outlier over
        without it); ``zeroed_in_group`` (mean number of the other weights of the outlier's
        group that became 0).

    Examples
    --------
    >>> r = single_outlier([4096], magnitude=20, n_rows=8)[0]
    >>> round(r["row_mse_ratio"], 6) == round(r["group_mse_ratio"], 6), r["share"]
    (True, 1.0)
    """
    clean = synthetic.gaussian((n_rows, n), seed=seed)
    w = clean.copy()
    w[:, position] = np.float32(magnitude * synthetic.DEFAULT_STD)
    others = np.delete(np.arange(n), position)
    rows = []
    for g in group_sizes:
        qc, qw = quantize(clean, g, bits=bits), quantize(w, g, bits=bits)
        rc, rw = error_report(clean, qc), error_report(w, qw)
        k = position // g
        in_group = others[(others // g) == k]
        rows.append({"group_size": g,
                     "scale_ratio": float(np.mean(qw.scales[:, k] / qc.scales[:, k])),
                     "scale_sq_ratio": float(np.sum(np.square(qw.scales[:, k], dtype=np.float64))
                                             / np.sum(np.square(qc.scales[:, k],
                                                                dtype=np.float64))),
                     "group_mse_ratio": float(rw.group_mse[:, k].sum() / rc.group_mse[:, k].sum()),
                     "share": float(rw.group_mse[:, k].sum() / rw.group_mse.sum()),
                     "row_mse_ratio": rw.mse / rc.mse,
                     "zeroed_in_group": float(np.count_nonzero(qw.values[:, in_group] == 0)
                                              / n_rows)})
    return rows


def outlier_cost(om: synthetic.OutlierMatrix, group_sizes: Iterable[int] = GROUP_SIZES,
                 bits: int = 8) -> list[dict]:
    """Extra error the outlier columns inflict on the *other* weights, per group size.

    Each group size quantizes both ``om.weights`` and ``om.base`` (the same matrix without the
    outliers) and compares the error on the weights outside the outlier columns.

    Returns
    -------
    list of dict
        Keys ``group_size``; ``groups_hit`` (fraction of groups containing an outlier column);
        ``mse_clean`` and ``mse_with`` (MSE of the ordinary weights without and with the
        outliers); ``cost`` (``mse_with / mse_clean``); ``sqnr_clean_db`` and ``sqnr_with_db``
        (SQNR of the ordinary weights); ``zeroed_with`` (fraction of ordinary weights that
        became 0 with the outliers present).
    """
    normal = ~om.mask
    x = om.base[normal].astype(np.float64)
    signal = float(np.sum(x * x))
    cols = om.weights.shape[1]
    rows = []
    for g in group_sizes:
        out: dict[str, float] = {"group_size": g}
        hit = np.zeros(cols // g, dtype=bool)
        hit[om.columns // g] = True
        out["groups_hit"] = float(hit.mean())
        for tag, w in (("clean", om.base), ("with", om.weights)):
            qt = quantize(w, g, bits=bits)
            err = (qt.dequantize() - w)[normal].astype(np.float64)
            sq = float(np.sum(err * err))
            out[f"mse_{tag}"] = sq / err.size
            out[f"sqnr_{tag}_db"] = 10 * math.log10(signal / sq)
            if tag == "with":
                out["zeroed_with"] = float(np.mean(qt.values[normal] == 0))
        out["cost"] = out["mse_with"] / out["mse_clean"]
        rows.append(out)
    return rows


# --------------------------------------------------------------------------------------------
# Group sizes that divide the width, and timing
# --------------------------------------------------------------------------------------------

def group_size_table(widths: Iterable[int] = MODEL_WIDTHS,
                     requests: Iterable[int] = REQUESTS) -> list[dict]:
    """For each width and request: what the halving loop, ``"pow2"`` and ``"divisor"`` give.

    Examples
    --------
    >>> group_size_table([4096], [300])
    [{'width': 4096, 'requested': 300, 'halve': 4, 'pow2': 256, 'divisor': 256}]
    """
    return [{"width": d, "requested": r,
             **{p: choose_group_size(d, r, p) for p in ("halve", "pow2", "divisor")}}
            for d in widths for r in requests]


def format_group_size_table(rows: Sequence[Mapping]) -> Table:
    """One line per width; each request's cell reads ``halve / pow2 / divisor``."""
    widths = list(dict.fromkeys(r["width"] for r in rows))
    reqs = list(dict.fromkeys(r["requested"] for r in rows))
    lines = []
    for d in widths:
        line: dict[str, object] = {"width": d}
        for r in rows:
            if r["width"] == d:
                line[r["requested"]] = f"{r['halve']} / {r['pow2']} / {r['divisor']}"
        lines.append(line)
    return table(lines, [("width", "width", "d")] + [(q, f"request {q}", "s") for q in reqs],
                 notes=("each cell: halve / pow2 / divisor",))


def time_group_sizes(w: np.ndarray, group_sizes: Iterable[int], repeats: int = 7,
                     threads: int = 1, backend: str = "numpy") -> list[dict]:
    """Wall-clock time of ``quantize`` and ``dequantize`` at each group size.

    Each size runs ``repeats`` times (after one warm-up); the best time is the estimate and
    ``spread`` = (median - best) / best gauges the noise.  One thread by default, so the other
    core's load matters less.  ``backend`` is passed to ``quantize`` and ``dequantize``:
    ``"numpy"`` (whole-array ufuncs over blocks) or ``"numba"`` (the fused kernel, whose inner
    loop runs over one group).

    Returns
    -------
    list of dict
        Keys ``group_size``, ``pow2``, ``multiple_of_32``, ``quantize_ns``,
        ``dequantize_ns`` (best time per weight, nanoseconds), ``quantize_spread``,
        ``dequantize_spread``.
    """
    rows = []
    for g in group_sizes:
        tq, td = [], []
        qt = quantize(w, g, threads=threads, backend=backend)
        qt.dequantize(threads=threads, backend=backend)
        for _ in range(repeats):
            t0 = time.perf_counter()
            qt = quantize(w, g, threads=threads, backend=backend)
            t1 = time.perf_counter()
            qt.dequantize(threads=threads, backend=backend)
            t2 = time.perf_counter()
            tq.append(t1 - t0)
            td.append(t2 - t1)
        tq_a, td_a = np.array(tq), np.array(td)
        rows.append({"backend": backend, "group_size": g, "pow2": g & (g - 1) == 0, "multiple_of_32": g % 32 == 0,
                     "quantize_ns": 1e9 * tq_a.min() / w.size,
                     "dequantize_ns": 1e9 * td_a.min() / w.size,
                     "quantize_spread": float(np.median(tq_a) / tq_a.min() - 1),
                     "dequantize_spread": float(np.median(td_a) / td_a.min() - 1)})
    return rows


def timing_verdict(rows: Sequence[Mapping], min_group: int = 32) -> str:
    """Are powers of two faster than the other group sizes (at least ``min_group``) in timing rows?

    Time per weight trends with the group size, so each other size is compared with its
    neighbours: the powers of two just below and above it, interpolated in ``log g``.  Sizes
    below ``min_group``, and sizes without a power of two on each side in ``rows``, are left
    out; the verdict names the sizes compared.  It gives the mean excess of those sizes over
    the interpolation, for quantize and dequantize, beside the median repeat-to-repeat spread,
    and whether the excess exceeds it.

    Raises
    ------
    ValueError
        If no size (>= ``min_group``) has a power of two on both sides in ``rows``.
    """
    sel = sorted((r for r in rows if r["group_size"] >= min_group), key=lambda r: r["group_size"])
    p2 = [r for r in sel if r["pow2"]]
    pairs = []
    for r in sel:
        if r["pow2"]:
            continue
        lo = [p for p in p2 if p["group_size"] < r["group_size"]]
        hi = [p for p in p2 if p["group_size"] > r["group_size"]]
        if lo and hi:
            pairs.append((r, lo[-1], hi[0]))
    if not pairs:
        raise ValueError("need other group sizes with powers of two on both sides")
    names = ", ".join(str(r["group_size"]) for r, _, _ in pairs)
    lines = [f"compared: {names} (>= {min_group}, a power of two on each side)"]
    for op in ("quantize", "dequantize"):
        key = f"{op}_ns"
        excess = []
        for r, lo, hi in pairs:
            f = (math.log(r["group_size"]) - math.log(lo["group_size"])) / (
                math.log(hi["group_size"]) - math.log(lo["group_size"]))
            excess.append(r[key] / (lo[key] + f * (hi[key] - lo[key])) - 1)
        diff = float(np.mean(excess))
        noise = float(np.median([r[f"{op}_spread"] for r in sel]))
        judged = ("within the noise: no measurable advantage" if abs(diff) <= noise else
                  "powers of two faster" if diff > 0 else "powers of two slower")
        lines.append(f"{op}: they take {100 * diff:+.1f}% against their power-of-two "
                     f"neighbours; median spread between repeats {100 * noise:.1f}%: {judged}")
    return "\n".join(lines)


def low_bit_summary(rows: Sequence[Mapping], distribution: str, small: int = 32,
                    large: int | str = 4096) -> list[dict]:
    """For each bit width, the metrics at a small and a large group size and the gap.

    Returns
    -------
    list of dict
        Keys ``distribution``, ``bits``, ``rel_small``/``rel_large`` (relative error), ``gap_points`` (the
        difference in percentage points), ``sqnr_gap_db``, ``zeroed_small``/``zeroed_large``.
    """
    out = []
    for b in dict.fromkeys(r["bits"] for r in rows):
        pick = {r["group"]: r for r in rows if r["bits"] == b and r["distribution"] == distribution}
        s, l_ = pick[small], pick[large]
        out.append({"distribution": distribution, "bits": b, "rel_small": s["relative_error"], "rel_large": l_["relative_error"],
                    "gap_points": 100 * (l_["relative_error"] - s["relative_error"]),
                    "sqnr_gap_db": s["sqnr_db"] - l_["sqnr_db"],
                    "zeroed_small": s["zeroed_fraction"], "zeroed_large": l_["zeroed_fraction"]})
    return out


# --------------------------------------------------------------------------------------------
# The seeds' "70B: 280 GB -> 70 GB"
# --------------------------------------------------------------------------------------------

def claim_280_to_70(model: ModelShape = LLAMA2_CONFIGS["LLaMA-2 70B"], group_size: int = 256,
                    nominal: float = 70e9, bits: int = 8) -> list[dict]:
    """The seeds' closing claim, "70B: 280 GB -> 70 GB", counted three ways.

    1. ``nominal`` parameters, every one quantized, against float32 (what the claim, and
       notebook 02, assume);
    2. the published shapes of ``model``, every parameter quantized, against float32;
    3. the published shapes, only the linear layers quantized and the rest kept in bfloat16,
       against the bfloat16 checkpoint people download (:func:`gqlearn.memory.memory_table`'s
       default).

    Returns
    -------
    list of dict
        Keys ``count`` ("nominal" or "published"), ``parameters`` (formatted with thousands
        separators), ``quantized`` (what is quantized), ``baseline`` (dtype), ``baseline_gb``,
        ``scale_gb``, ``quantized_gb`` and ``ratio`` (baseline / quantized).  GB = 1e9 bytes,
        float32 scales.

    Examples
    --------
    >>> [round(r["quantized_gb"], 2) for r in claim_280_to_70()]
    [71.09, 70.06, 70.57]
    """
    n = int(nominal)
    scale_gb = n // group_size * 4 / GB
    values_gb = n * bits / 8 / GB
    rows = [{"count": "nominal", "parameters": f"{n:,}", "quantized": "every parameter",
             "baseline": "float32", "baseline_gb": n * 4 / GB, "scale_gb": scale_gb,
             "quantized_gb": values_gb + scale_gb,
             "ratio": n * 4 / GB / (values_gb + scale_gb)}]
    for baseline, every, what in (("float32", True, "every parameter"),
                                  ("bfloat16", False, "linear layers, rest bfloat16")):
        m = memory_table(model, [group_size], bits, baseline, quantize_embeddings=every)[0]
        rows.append({"count": "published", "parameters": f"{model.n_params:,}",
                     "quantized": what, "baseline": baseline, "baseline_gb": m["baseline_gb"],
                     "scale_gb": m["scale_gb"], "quantized_gb": m["quantized_gb"],
                     "ratio": m["ratio"]})
    return rows


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------

def _plt():
    import matplotlib.pyplot as plt
    return plt


def plot_distributions(matrices: Mapping[str, np.ndarray], bins: int = 200):
    """Histograms (log counts) of each matrix, in units of
    :data:`gqlearn.synthetic.DEFAULT_STD`."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, w in matrices.items():
        x = w.ravel() / synthetic.DEFAULT_STD
        ax.hist(x, bins=bins, range=(-25, 25), histtype="step", label=LABELS.get(name, name))
    ax.set_yscale("log")
    ax.set_xlabel(f"weight / {synthetic.DEFAULT_STD:g} (standard deviations)")
    ax.set_ylabel("count (log)")
    ax.set_title("The four synthetic matrices: same bulk, different tails", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


_METRIC_AXES = (("sqnr_db", "SQNR (dB, higher is better)", False),
                ("mse", "MSE (log)", True),
                ("max_abs_error", "max |error| (log)", True),
                ("zeroed_fraction", "fraction of weights zeroed", False))


def plot_tradeoff(rows: Sequence[Mapping], bits: int = 8,
                  knee_points: Mapping[tuple[str, int], int] | None = None):
    """Each metric against bits per weight, one curve per distribution; knees starred.

    The SQNR panel has an inset zoomed on group sizes 32 and up, where the knees are.
    """
    plt = _plt()
    rows = [r for r in rows if r["bits"] == bits and r["group"] != "tensor"]
    dists = list(dict.fromkeys(r["distribution"] for r in rows))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    sq_ax = axes[0, 0]
    inset = sq_ax.inset_axes([0.42, 0.06, 0.55, 0.55])
    for (key, title, log), ax in zip(_METRIC_AXES, axes.ravel()):
        targets = [ax, inset] if key == "sqnr_db" else [ax]
        for d in dists:
            pts = [r for r in rows if r["distribution"] == d]
            for t in targets:
                sel = pts if t is ax else [r for r in pts if r["group_size"] >= 32]
                line, = t.plot([r["bits_per_weight"] for r in sel], [r[key] for r in sel],
                               "o-", ms=3, label=LABELS.get(d, d))
                if knee_points and (d, bits) in knee_points:
                    k = next(r for r in pts if r["group_size"] == knee_points[(d, bits)])
                    t.plot(k["bits_per_weight"], k[key], "*", ms=13, color=line.get_color(),
                           markeredgecolor="k")
        if log:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"bits per weight ({bits} + 32/g)")
    first = [r for r in rows if r["distribution"] == dists[0]]
    for r in first:
        if r["group_size"] in (4, 8, 16):
            sq_ax.annotate(f"g={r['group_size']}", (r["bits_per_weight"], r["sqnr_db"]),
                           textcoords="offset points", xytext=(-10, 6), fontsize=7)
        if 32 <= r["group_size"] <= 256:
            inset.annotate(f"{r['group_size']}", (r["bits_per_weight"], r["sqnr_db"]),
                           textcoords="offset points", xytext=(2, 4), fontsize=6)
    inset.set_title("zoom: g ≥ 32", fontsize=7)
    inset.tick_params(labelsize=6)
    axes[0, 1].legend(fontsize=7)
    fig.suptitle(f"{bits}-bit quantization: error against storage (stars: knees)")
    fig.tight_layout()
    return fig


def plot_theory(w: np.ndarray, group_size: int = 64, bits: int = 8, max_points: int = 4000):
    """Scatter of measured against predicted MSE per group, with the line y = x."""
    plt = _plt()
    pred, meas = group_theory(w, group_size, bits)
    step = max(1, pred.size // max_points)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.loglog(pred[::step], meas[::step], ".", ms=2, alpha=0.5)
    lo, hi = float(min(pred.min(), meas.min())), float(max(pred.max(), meas.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="measured = predicted")
    ax.set_xlabel("predicted group MSE, (g-1)/g · scale²/12")
    ax.set_ylabel("measured group MSE")
    ax.set_title(f"{pred.size} groups of {group_size}, {bits} bits", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_outliers(om: synthetic.OutlierMatrix, group_size: int = 128, rows: int = 64):
    """Where the outliers sit: per-column max |w|, and the scales of the first rows."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    colmax = np.abs(om.weights).max(axis=0)
    a.plot(colmax, lw=0.6)
    a.plot(om.columns, colmax[om.columns], "rv", label="outlier columns")
    a.set_xlabel("column (input channel)")
    a.set_ylabel("max |w| over rows")
    a.set_title("largest |w| of each column", fontsize=10)
    a.legend(fontsize=8)
    qt = quantize(om.weights[:rows], group_size)
    im = b.imshow(np.log10(qt.scales), aspect="auto", cmap="viridis", interpolation="nearest")
    b.set_xlabel(f"group (of {group_size} columns)")
    b.set_ylabel("row")
    b.set_title(f"log10 of each group's scale, first {rows} rows", fontsize=10)
    fig.colorbar(im, ax=b, label="log10(scale)")
    fig.tight_layout()
    return fig


def plot_low_bits(rows: Sequence[Mapping], distribution: str = "gaussian"):
    """Relative error and zeroed fraction against group size, one curve per bit width."""
    plt = _plt()
    rows = [r for r in rows if r["distribution"] == distribution and r["group"] != "tensor"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    for bits in dict.fromkeys(r["bits"] for r in rows):
        pts = [r for r in rows if r["bits"] == bits]
        g = [r["group_size"] for r in pts]
        a.semilogx(g, [100 * r["relative_error"] for r in pts], "o-", ms=3, label=f"{bits} bits",
                   base=2)
        b.semilogx(g, [r["zeroed_fraction"] for r in pts], "o-", ms=3, label=f"{bits} bits",
                   base=2)
    a.set_ylabel("relative error ‖w−w'‖/‖w‖ (%)")
    b.set_ylabel("fraction of weights zeroed")
    for ax in (a, b):
        ax.set_xlabel("group size")
        ax.legend(fontsize=8)
    fig.suptitle(LABELS.get(distribution, distribution))
    fig.tight_layout()
    return fig


def plot_timing(*timings: Sequence[Mapping]):
    """Best ns per weight against group size, for each list of :func:`time_group_sizes` rows
    (one per backend); powers of two filled, other sizes hollow."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for rows in timings:
        backend = rows[0].get("backend", "")
        for key, name, style in (("quantize_ns", "quantize", "-"),
                                 ("dequantize_ns", "dequantize", "--")):
            g = [r["group_size"] for r in rows]
            line, = ax.semilogx(g, [r[key] for r in rows], style, lw=1, base=2,
                                label=f"{backend} {name}".strip())
            for r in rows:
                ax.plot(r["group_size"], r[key], "o", ms=4, color=line.get_color(),
                        mfc=line.get_color() if r["pow2"] else "white")
    ax.set_xlabel("group size (filled: power of two)")
    ax.set_ylabel("best time per weight (ns)")
    ax.set_ylim(bottom=0)
    ax.set_title("quantize / dequantize time per weight against group size (one thread, best "
                 "run)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Widget and its static fallback
# --------------------------------------------------------------------------------------------

EXPLORE_SHAPE = (128, 4096)


@functools.lru_cache(maxsize=16)
def _explore_matrix(distribution: str, strength: float) -> np.ndarray:
    return synthetic.make_weights(distribution, EXPLORE_SHAPE, seed=0, strength=strength)


def explore_static(distribution: str = "outliers", strength: float = 20.0, bits: int = 4,
                   group_size: int = 128, show_rows: int = 128):
    """Metrics of one setting, printed, and a figure: the trade-off curve of that
    distribution at ``bits`` with the chosen group size marked, and ``show_rows`` weights of
    row 0 around its largest weight beside their dequantized values.

    Returns
    -------
    (dict, matplotlib.figure.Figure)
        The metrics row (as in :func:`sweep`) and the figure.
    """
    plt = _plt()
    w = _explore_matrix(distribution, float(strength))
    rows = sweep({distribution: w}, GROUP_SIZES, bits=bits, per_tensor=False)
    row = next(r for r in rows if r["group_size"] == group_size)
    print(table([row], [("group", "group", "d"), ("bits_per_weight", "bits/weight", ".3f"),
                               ("max_abs_error", "max |err|", ".2e"), ("mse", "MSE", ".2e"),
                               ("sqnr_db", "SQNR dB", ".2f"),
                               ("relative_error", "rel. error", ".4f"),
                               ("zeroed_fraction", "zeroed", ".4f")]))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    a.plot([r["bits_per_weight"] for r in rows], [r["sqnr_db"] for r in rows], "o-", ms=3)
    a.plot(row["bits_per_weight"], row["sqnr_db"], "r*", ms=14)
    a.set_xlabel(f"bits per weight ({bits} + 32/g)")
    a.set_ylabel("SQNR (dB)")
    a.set_title(f"{LABELS.get(distribution, distribution)}, {bits} bits", fontsize=10)
    qt = quantize(w[:1], group_size, bits=bits)
    n = min(show_rows, w.shape[1])
    start = min(int(np.argmax(np.abs(w[0]))) // n * n, w.shape[1] - n)
    x = np.arange(start, start + n)
    b.plot(x, w[0, x], ".", ms=4, label="original")
    b.step(x, qt.dequantize()[0, x], where="mid", lw=1, label="dequantized")
    for edge in range(-(-start // group_size) * group_size, start + n + 1, group_size):
        b.axvline(edge - 0.5, color="0.6", lw=0.8)
    b.set_xlabel(f"row 0, columns {start}-{start + n - 1}, around its largest weight "
                 f"(grey: group edges)")
    b.set_ylabel("weight")
    b.legend(fontsize=8)
    fig.tight_layout()
    return row, fig


def explore():
    """Interactive version of :func:`explore_static`: distribution, outlier strength, bits and
    group size, with live metrics and plots.  Needs ipywidgets and a running kernel."""
    import ipywidgets as widgets
    from IPython.display import display

    plt = _plt()
    dist = widgets.Dropdown(options=[(LABELS[k], k) for k in synthetic.DISTRIBUTIONS],
                            value="outliers", description="weights")
    strength = widgets.FloatLogSlider(value=20.0, base=10, min=0, max=2, step=0.05,
                                      description="outlier ×σ")
    bits = widgets.IntSlider(value=4, min=2, max=8, description="bits")
    group = widgets.SelectionSlider(options=list(GROUP_SIZES), value=128,
                                    description="group size")

    def update(distribution: str, strength: float, bits: int, group_size: int) -> None:
        explore_static(distribution, strength, bits, group_size)
        plt.show()

    out = widgets.interactive_output(update, {"distribution": dist, "strength": strength,
                                              "bits": bits, "group_size": group})
    ui = widgets.VBox([widgets.HBox([dist, strength]), widgets.HBox([bits, group]), out])
    display(ui)
    return None


# --------------------------------------------------------------------------------------------
# Exercises
# --------------------------------------------------------------------------------------------

EXERCISE_GROUP_SIZE = 8


def exercise_matrix() -> np.ndarray:
    """The matrix of exercise 1: Laplace weights, shape (512, 4096), seed 3."""
    return synthetic.laplace(SHAPE, seed=3)


def check_predicted_mse(answer: object) -> Feedback:
    """Exercise 1: the MSE of ``exercise_matrix()`` at 8 bits and group size 8, predicted from
    ``qt.scales`` alone with the uniform-rounding model and the ``(g - 1) / g`` correction."""
    w = exercise_matrix()
    g = EXERCISE_GROUP_SIZE
    qt = quantize(w, g)
    s = qt.scales.astype(np.float64)
    naive = float(np.mean(s * s)) / 12
    expected = naive * (g - 1) / g
    measured = error_report(w, qt).mse
    try:
        value = float(answer)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return wrong(f"Expected a number (the predicted MSE), got {answer!r}.")
    if close_enough(value, measured, rel=1e-6):
        return wrong("That is the measured MSE from error_report. Predict it from qt.scales "
                     "alone, with the uniform-rounding model.")
    if close_enough(value, expected, rel=2e-3):
        return right(f"{value:.4e}: predicted from the scales alone; the measured MSE is "
                     f"{measured:.4e} (ratio {measured / expected:.4f}).")
    if close_enough(value, naive, rel=2e-3):
        return wrong(f"Close: that is mean(scale²)/12, which assumes all {g} weights of a group "
                     f"have rounding error. The largest one maps exactly to ±127; multiply by "
                     f"({g}-1)/{g}.")
    if close_enough(value, 12 * naive, rel=2e-3) or close_enough(value, 12 * expected, rel=2e-3):
        return wrong("Off by a factor of 12: a uniform error on [-scale/2, scale/2] has "
                     "variance scale²/12.")
    if close_enough(value, float(np.mean(s)) ** 2 / 12 * (g - 1) / g, rel=2e-3):
        return wrong("Average scale² over the groups, not the square of the average scale: "
                     "the MSE is a mean of per-group variances.")
    return wrong(f"Not the prediction (it should be within a fraction of a percent of the "
                 f"measured {measured:.3e}). Use qt = gqlearn.quantize(w, {g}) and "
                 f"qt.scales.astype(np.float64).")


EXERCISE_SCALE_GROUP = 512
"""Group size of exercise 2: the largest of the seeds' "GPU-friendly" sizes, not in the
notebook's memory table."""


def check_scale_overhead(answer_gb: object) -> Feedback:
    """Exercise 2: GB of float32 scales for LLaMA-2 70B's linear layers at group size
    :data:`EXERCISE_SCALE_GROUP` (512)."""
    m = LLAMA2_CONFIGS["LLaMA-2 70B"]
    n = m.n_linear_params
    g = EXERCISE_SCALE_GROUP
    expected = n / g * 4 / GB
    try:
        value = float(answer_gb)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return wrong(f"Expected a number of GB, got {answer_gb!r}.")
    if close_enough(value, expected, rel=1e-3):
        return right(f"{value:.4f} GB: {n:,} linear weights / {g} = {n // g:,} scales × 4 "
                     f"bytes, i.e. 32/{g} = {32 / g:g} bits per weight.")
    hints = [(n / g * 2 / GB, "That counts 2-byte (float16) scales; gqlearn stores float32."),
             (n / g * 4 / 2**30, "That is GiB (2**30 bytes); the course uses GB = 1e9 bytes."),
             (m.n_params / g * 4 / GB, "That quantizes every parameter; only the linear layers "
              "(ModelShape.n_linear_params) are quantized here."),
             (n / g * 32 / GB, "That is gigabits: each scale is 32 bits = 4 bytes."),
             (n / g / GB, "That counts scales, not bytes: each is 4 bytes."),
             (70e9 / g * 4 / GB, "That uses the nominal 70e9 parameters; use "
              "LLAMA2_CONFIGS['LLaMA-2 70B'].n_linear_params.")]
    hints += [(n / other * 4 / GB, f"That is the scale cost at group size {other} (the table "
               f"in section 7); the exercise asks for {g}.") for other in (32, 64, 128, 256)]
    for v, msg in hints:
        if close_enough(value, v, rel=1e-3):
            return wrong(msg)
    return wrong("Scales = linear weights / group size; bytes = 4 per scale; GB = 1e9 bytes.")


def check_group_size_chooser(fn: Callable[[int, int], int]) -> Feedback:
    """Exercise 3: ``fn(dim, requested)`` must return ``requested`` if it divides ``dim``, and
    otherwise the largest power of two that is at most ``requested`` and divides ``dim`` (what
    ``choose_group_size(dim, requested)`` returns)."""
    cases = [(d, r) for d in MODEL_WIDTHS for r in REQUESTS]
    cases += [(6, 4), (7, 5), (96, 96), (100, 300), (1, 1), (4096, 4096), (4096, 10000)]
    for d, r in cases:
        expected = choose_group_size(d, r)
        try:
            got = fn(d, r)
        except Exception as exc:  # the learner's code: report, don't crash
            return wrong(f"fn({d}, {r}) raised {type(exc).__name__}: {exc}")
        if isinstance(got, bool) or not isinstance(got, (int, np.integer)):
            return wrong(f"fn({d}, {r}) returned {got!r}; return an int.")
        got = int(got)
        if got <= 0 or d % got:
            return wrong(f"fn({d}, {r}) returned {got}, which does not divide {d}.")
        if got > r:
            return wrong(f"fn({d}, {r}) returned {got}, more than the {r} requested.")
        halving = (" Halving the request (300, 150, 75, ...) leaves the powers of two; start "
                   "from the largest power of two <= the request instead."
                   if got == choose_group_size(d, r, "halve") else "")
        if got != r and got & (got - 1):
            return wrong(f"fn({d}, {r}) returned {got}, not a power of two.{halving}")
        if got != expected and r == expected:
            return wrong(f"fn({d}, {r}) returned {got}, but {r} itself divides {d}: keep the "
                         f"request when it fits.")
        if got != expected:
            return wrong(f"fn({d}, {r}) returned {got}, but {expected} also divides {d} and "
                         f"is larger.{halving}")
    return right(f"All {len(cases)} cases match gqlearn.choose_group_size.")
