"""Chapter 06 support (gqlearn.lessons.decoder): baseline tables, plot, flip and scheme tables,
exercise checkers."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from gqlearn.lessons import decoder as D
from gqlearn.llm import Llama, LlamaConfig, QuantEvaluation, evaluate_quantization, load_llama

from gguf_writer import save_llama_gguf

matplotlib.use("Agg")

# widths 96 = 32 * 3 and 256 = 2^8: a request of 128 gives 32 and 128
CFG = LlamaConfig(vocab_size=64, hidden_size=96, n_layers=2, n_heads=4, n_kv_heads=2,
                  ffn_size=256)


@pytest.fixture(scope="module")
def q4_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = Llama.random(CFG, seed=2)
    return save_llama_gguf(tmp_path_factory.mktemp("q4") / "q4.gguf", CFG, model.weights,
                           matrix_type="Q4_1")


@pytest.fixture(scope="module")
def q4_model(q4_file: Path) -> Llama:
    return load_llama(q4_file)


def test_tensor_type_table(q4_file: Path) -> None:
    t = D.tensor_type_table(q4_file)
    kinds = dict(zip(t.column("ggml type"), t.column("tensors"), strict=True))
    assert kinds == {"Q4_1": 2 * 7 + 1, "F32": 2 * 2 + 1}  # the embedding is Q4_1 here too
    assert sum(t.column("share")) == pytest.approx(1.0)
    bits = dict(zip(t.column("ggml type"), t.column("bits/w"), strict=True))
    assert bits == {"Q4_1": 5.0, "F32": 32.0}


def test_ggml_bits_per_weight() -> None:
    assert D.ggml_bits_per_weight("Q4_1") == 4 + 2 * 16 / 32  # codes, float16 step and min
    assert D.ggml_bits_per_weight("Q8_0") == 8 + 16 / 32
    assert D.ggml_bits_per_weight("F16") == 16.0


def test_distinct_per_block() -> None:
    w = np.arange(64, dtype=np.float32).reshape(2, 32)
    assert D.distinct_per_block(w).tolist() == [32, 32]
    w[:, :] = 1.0
    assert D.distinct_per_block(w).tolist() == [1, 1]


def test_baseline_grid_table_on_q4_1_weights(q4_model: Llama) -> None:
    t = D.baseline_grid_table(q4_model, layer=1)
    rows = {r[0]: dict(zip(t.columns, r, strict=True)) for r in t.rows}
    assert rows["Q4_1 (the file)"]["max levels"] <= 16
    int8, int4, int3 = rows["int8"], rows["int4"], rows["int3"]
    assert int8["codes"] == 255 and int4["codes"] == 15 and int3["codes"] == 7
    # int8's grid is much finer than Q4_1's: every level survives, errors are a small fraction
    assert int8["all levels kept"] == 1.0 and int8["max err / Q4_1 step"] < 0.2
    # int4 and int3 have fewer codes than Q4_1 has levels: blocks lose levels
    assert int4["all levels kept"] < 0.5 and int3["max levels"] <= 7
    assert int8["rel. error"] < int4["rel. error"] < int3["rel. error"]
    assert "layer 1" in repr(t)
    # Q4_1's own asymmetric scheme gives the file back
    asym = rows["int4 asym"]
    assert asym["codes"] == 16 and asym["all levels kept"] == 1.0
    assert asym["max err / Q4_1 step"] == 0 and asym["rel. error"] == 0
    plain = D.baseline_grid_table(q4_model, bits=(8,), asymmetric=False)
    assert "int4 asym" not in plain.column("grid")


@pytest.fixture(scope="module")
def tiny_eval() -> QuantEvaluation:
    model = Llama.random(CFG, seed=4)
    return evaluate_quantization(model, list(range(40)), bits=(8, 4),
                                 group_sizes=(32, 128, "tensor"), baseline=("Q4_1 file", 5.0))


def test_plot_quality(tiny_eval: QuantEvaluation) -> None:
    import matplotlib.pyplot as plt

    fig = D.plot_quality(tiny_eval)
    zoom, full = fig.axes
    assert zoom.get_yscale() == "linear" and full.get_yscale() == "log"
    # the zoom panel leaves per-tensor out: its points would squash the useful range
    zoom_y = np.concatenate([line.get_ydata() for line in zoom.lines[:-1]])
    grouped = [r.perplexity for r in tiny_eval.rows[1:] if r.setting.group_size != "tensor"]
    assert sorted(zoom_y) == sorted(grouped)
    assert [t.get_text() for t in full.get_xticklabels()] == ["32", "128", "per-tensor"]
    assert zoom.get_legend_handles_labels()[1] == ["int8", "int4", "Q4_1 file (baseline)"]
    plt.close(fig)


def test_flip_table(tiny_eval: QuantEvaluation) -> None:
    t = D.flip_table(tiny_eval, ["int4 g=32", "int4 per-tensor"])
    assert t.column("setting") == ["int4 g=32", "int4 per-tensor"]
    margins = tiny_eval.float_margins
    for label, flips, below, top, near in zip(t.column("setting"), t.column("flips"),
                                              t.column("flips at gap < median"),
                                              t.column("largest gap"), t.column("near-ties"),
                                              strict=True):
        gaps = margins[list(tiny_eval.row(label).disagree_at)]
        assert flips == len(gaps) and below == (gaps < np.median(margins)).sum()
        assert top == f"{gaps.max() if gaps.size else 0.0:.2g}"
        assert near == ((margins <= gaps.max()).sum() if gaps.size else 0)
    assert t.column("KL nats") == [f"{tiny_eval.row(k).kl:.1e}"
                                   for k in ("int4 g=32", "int4 per-tensor")]
    assert "median" in t.notes[0]


def test_scheme_table(tiny_eval: QuantEvaluation) -> None:
    model = Llama.random(CFG, seed=4)
    asym = evaluate_quantization(model, list(range(40)), bits=(4,), group_sizes=(32, 64),
                                 asymmetric=True)
    t = D.scheme_table(tiny_eval, asym)
    assert t.column("setting") == ["int4 g=32"]  # no symmetric g=64 row to match
    sym, a = tiny_eval.row("int4 g=32"), asym.row("int4 asym g=32")
    assert t.column("bits/w") == [f"{sym.bits_per_weight:.3f}"]  # both store 5 bits/w
    assert t.column("perplexity asym") == [f"{a.perplexity:.3g}"]
    assert t.column("KL sym") == [f"{sym.kl:.1e}"]


def _perplexity(log_probs):
    return float(np.exp(-np.mean(log_probs)))


def test_check_perplexity() -> None:
    assert D.check_perplexity(_perplexity)
    unsolved = D.check_perplexity(lambda lp: None)
    assert not unsolved and "None" in unsolved.message
    assert "sign" in D.check_perplexity(lambda lp: math.exp(np.mean(lp))).message
    assert "exp" in D.check_perplexity(lambda lp: -np.mean(lp)).message
    assert "not the sum" in D.check_perplexity(lambda lp: math.exp(-np.sum(lp))).message
    assert "2**" in D.check_perplexity(lambda lp: 2 ** -np.mean(lp)).message
    assert "ValueError" in D.check_perplexity(lambda lp: int("x")).message
    assert not D.check_perplexity(lambda lp: 1.0)


def _kl(zp, zq):
    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    lp, lq = log_softmax(zp), log_softmax(zq)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1)))


def test_check_kl_divergence() -> None:
    assert D.check_kl_divergence(_kl)
    assert not D.check_kl_divergence(lambda p, q: None)
    assert "KL(q || p)" in D.check_kl_divergence(lambda p, q: _kl(q, p)).message
    assert "mean over positions" in D.check_kl_divergence(
        lambda p, q: _kl(p, q) * p.shape[0]).message
    assert "nats" in D.check_kl_divergence(lambda p, q: _kl(p, q) / math.log(2)).message

    def naive(p, q):  # no max subtraction: overflows on large logits
        with np.errstate(over="ignore", invalid="ignore"):
            pp = np.exp(p) / np.exp(p).sum(axis=1, keepdims=True)
            qq = np.exp(q) / np.exp(q).sum(axis=1, keepdims=True)
            return float(np.mean(np.sum(pp * (np.log(pp) - np.log(qq)), axis=1)))

    assert "max" in D.check_kl_divergence(naive).message
    assert not D.check_kl_divergence(lambda p, q: 0.5)


def test_check_scale_count() -> None:
    model = Llama.random(CFG, seed=1)  # widths 96 (128 -> 32) and 256 (keeps 128)
    n96 = sum(model.weights[k].size for k in model.linear_names() if "ffn_down" not in k)
    n256 = sum(model.weights[k].size for k in model.linear_names() if "ffn_down" in k)
    right = n96 // 32 + n256 // 128
    assert D.check_scale_count(right, model)
    assert not D.check_scale_count(None, model)
    assert "does not divide" in D.check_scale_count((n96 + n256) // 128, model).message
    assert "ffn_down" in D.check_scale_count((n96 + n256) // 32, model).message
    assert "one block" in D.check_scale_count(right // 2, model).message
    wrong = D.check_scale_count(right + 1, model)
    assert not wrong and str(right) not in wrong.message
