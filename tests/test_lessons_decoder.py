"""Chapter 05 support: baseline tables, back-off, plot, exercise checkers."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from gqlearn.lessons import decoder as D
from gqlearn.llm import (Llama, LlamaConfig, QuantEvaluation, evaluate_quantization, load_llama,
                         perplexity, token_log_probs)
from gqlearn.llm.gguf_io import save_llama_gguf

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
    kinds = dict(zip(t.column("ggml type"), t.column("tensors")))
    assert kinds == {"Q4_1": 2 * 7 + 1, "F32": 2 * 2 + 1}  # the embedding is Q4_1 here too
    assert sum(t.column("share")) == pytest.approx(1.0)
    assert dict(zip(t.column("ggml type"), t.column("bits/w"))) == {"Q4_1": 5.0, "F32": 32.0}


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
    rows = {r[0]: dict(zip(t.columns, r)) for r in t.rows}
    assert rows["Q4_1 (the file)"]["max levels"] <= 16
    int8, int4, int3 = rows["int8"], rows["int4"], rows["int3"]
    assert int8["codes"] == 255 and int4["codes"] == 15 and int3["codes"] == 7
    # int8's grid is much finer than Q4_1's: every level survives, errors are a small fraction
    assert int8["blocks intact"] == 1.0 and int8["max err / Q4_1 step"] < 0.2
    # int4 and int3 have fewer codes than Q4_1 has levels: blocks lose levels
    assert int4["blocks intact"] < 0.5 and int3["max levels"] <= 7
    assert int8["rel. error"] < int4["rel. error"] < int3["rel. error"]
    assert "layer 1" in repr(t)
    # Q4_1's own asymmetric scheme gives the file back
    asym = rows["int4 asym"]
    assert asym["codes"] == 16 and asym["blocks intact"] == 1.0
    assert asym["max err / Q4_1 step"] == 0 and asym["rel. error"] == 0
    plain = D.baseline_grid_table(q4_model, bits=(8,), asymmetric=False)
    assert "int4 asym" not in plain.column("grid")


def test_backoff_table() -> None:
    t = D.backoff_table(Llama.random(CFG))
    assert t.columns == ("requested", "width 96", "width 256", "halving loop")
    rows = {r[0]: r[1:] for r in t.rows}
    assert rows[32] == (32, 32, "same")
    assert rows[128] == (32, 128, "same")
    assert any("ffn_down" in n for n in t.notes)


def test_context_table() -> None:
    model = Llama.random(CFG, seed=3)
    ids = list(np.random.default_rng(0).integers(0, CFG.vocab_size, 30))
    t = D.context_table(model, ids, first=10, window=(12, 22))
    ppl = dict(zip(t.column("tokens scored"), t.column("perplexity")))
    assert ppl["whole text"] == pytest.approx(perplexity(model.forward(ids), ids), rel=1e-6)
    # causal: the first tokens score the same alone as in the whole text
    assert ppl["first 10 tokens"] == pytest.approx(perplexity(model.forward(ids[:10]), ids[:10]),
                                                   rel=1e-5)
    assert ppl["tokens 12-21, alone"] == pytest.approx(
        perplexity(model.forward(ids[12:22]), ids[12:22]), rel=1e-6)
    lp = token_log_probs(model.forward(ids), ids)
    assert ppl["tokens 12-21, after 12 tokens of text"] == pytest.approx(
        math.exp(-lp[12:21].mean()), rel=1e-6)
    assert t.column("tokens") == [30, 10, 10, 10]
    with pytest.raises(ValueError, match="window"):
        D.context_table(model, ids, window=(20, 40))


def test_peak_memory_gb() -> None:
    before = D.peak_memory_gb()
    assert 0.001 < before < 1000
    block = np.ones(50_000_000 // 8)  # 50 MB touched
    assert D.peak_memory_gb() >= before
    del block


def test_time_forward() -> None:
    assert 0 < D.time_forward(Llama.random(CFG), [1, 2, 3], repeat=2) < 10


@pytest.fixture(scope="module")
def tiny_eval() -> QuantEvaluation:
    model = Llama.random(CFG, seed=4)
    return evaluate_quantization(model, list(range(40)), bits=(8, 4), group_sizes=(32, 128, None),
                                 baseline=("Q4_1 file", 5.0))


def test_plot_quality(tiny_eval: QuantEvaluation) -> None:
    import matplotlib.pyplot as plt

    fig = D.plot_quality(tiny_eval)
    ax_ppl, ax_agree = fig.axes
    assert ax_ppl.get_yscale() == "log"
    assert len(ax_ppl.lines) == 4  # int8, int4, the baseline's dashed line and star
    assert ax_ppl.get_legend_handles_labels()[1] == ["int8", "int4", "Q4_1 file (baseline)"]
    tags = {t.get_text() for t in ax_ppl.texts}
    assert {"32", "128*", "per-tensor"} <= tags  # 128 backs off to 32 on the 96-wide matrices
    assert any("backed off" in t.get_text() for t in fig.texts)
    plt.close(fig)


def test_flip_table(tiny_eval: QuantEvaluation) -> None:
    t = D.flip_table(tiny_eval, ["int4 g=32", "int4 per-tensor"])
    assert t.column("setting") == ["int4 g=32", "int4 per-tensor"]
    margins = tiny_eval.float_margins
    for label, flips, below, top, near in zip(t.column("setting"), t.column("flips"),
                                              t.column("flips at gap < median"),
                                              t.column("largest gap"), t.column("near-ties")):
        r = tiny_eval.row(label)
        gaps = margins[list(r.disagree_at)]
        assert flips == f"{len(gaps)}/39"
        assert below == f"{(gaps < np.median(margins)).sum()}/{len(gaps)}"
        assert top == (gaps.max() if gaps.size else 0.0)
        assert near == ((margins <= top).sum() if gaps.size else 0)
    assert t.column("KL nats") == [tiny_eval.row(k).kl for k in ("int4 g=32", "int4 per-tensor")]
    assert "median" in t.notes[0]


def test_scheme_table(tiny_eval: QuantEvaluation) -> None:
    model = Llama.random(CFG, seed=4)
    asym = evaluate_quantization(model, list(range(40)), bits=(4,), group_sizes=(32, 64),
                                 asymmetric=True)
    t = D.scheme_table(tiny_eval, asym)
    assert t.column("setting") == ["int4 g=32"]  # no symmetric g=64 row to match
    sym, a = tiny_eval.row("int4 g=32"), asym.row("int4 asym g=32")
    assert t.column("bits/w") == [f"{sym.bits_per_weight:.3f}"]  # both store 5 bits/w
    assert t.column("ppl ratio asym") == [a.perplexity / asym.baseline.perplexity]
    assert t.column("KL sym") == [sym.kl] and t.column("agree asym") == [f"{a.agreement:.1%}"]


def test_check_perplexity() -> None:
    lp = np.log(np.array([0.5, 0.25, 0.125]))
    expected = math.exp(-lp.mean())
    assert D.check_perplexity(expected, lp)
    assert "Correct" in repr(D.check_perplexity(expected, lp))
    empty = D.check_perplexity(None, lp).message  # says what is expected, not how
    assert "a number" in empty and "exp" not in empty and "mean" not in empty
    cases = {math.exp(lp.mean()): "sign", -lp.mean(): "exponential", lp.mean(): "negate",
             math.exp(-lp.sum()): "mean over tokens", 2 ** (-lp.mean()): "natural"}
    for answer, word in cases.items():
        fb = D.check_perplexity(answer, lp)
        assert not fb and word in fb.message, (answer, fb)
    assert not D.check_perplexity(None, lp)
    assert "section 6" in D.check_perplexity(1.0, lp).message


def test_check_scale_count() -> None:
    model = Llama.random(CFG)
    expected = D.count_scales(model, 128)
    per_layer = (96 * 96 * 2 + 2 * 48 * 96 + 2 * 256 * 96) // 32 + 96 * 256 // 128
    assert expected == 2 * per_layer
    fb = D.check_scale_count(expected, model)
    assert fb and "group size 32" in fb.message and "uses 128" in fb.message
    n = sum(model.weights[k].size for k in model.linear_names())
    assert "does not divide 96" in D.check_scale_count(n // 128, model).message
    assert "ffn_down" in D.check_scale_count(n // 32, model).message
    assert "not bytes" in D.check_scale_count(4 * expected, model).message
    assert "one block" in D.check_scale_count(expected // 2, model).message
    assert not D.check_scale_count("many", model)
    assert "actually gets" in D.check_scale_count(expected + 1, model).message
    empty = D.check_scale_count(None, model).message
    assert "whole number" in empty and "choose_group_size" not in empty


def test_model_megabytes() -> None:
    model = Llama.random(CFG)
    blocks = sum(model.weights[k].size for k in model.linear_names())
    norms = 2 * 2 * 96 + 96
    assert blocks + 64 * 96 + norms == model.n_parameters
    assert D.model_megabytes(model, 32, 32) == pytest.approx(4 * model.n_parameters / 1e6)
    assert D.model_megabytes(model, 8.25, 8.5) == pytest.approx(
        (blocks * 8.25 + 64 * 96 * 8.5 + norms * 32) / 8e6)


def test_check_model_megabytes(tiny_eval: QuantEvaluation) -> None:
    model = Llama.random(CFG, seed=4)
    row = tiny_eval.row("int8 g=128")  # backs off to 32 on the 96-wide matrices
    assert row.bits_per_weight > 8.25
    expected = D.model_megabytes(model, row.bits_per_weight, 8.5)
    fb = D.check_model_megabytes(expected, model, row, 8.5)
    assert fb and "float32 would take" in fb.message
    assert D.check_model_megabytes(round(expected, 3), model, row, 8.5)
    cases = {D.model_megabytes(model, row.bits_per_weight, row.bits_per_weight,
                               row.bits_per_weight): "only the block matrices",
             D.model_megabytes(model, row.bits_per_weight, 32): "as stored in the file",
             D.model_megabytes(model, row.bits_per_weight, 8.5, 0): "norm weights",
             D.model_megabytes(model, row.bits_per_weight, 0): "token embedding",
             8 * expected: "megabits", expected * 1e6 / 2**20: "MiB",
             D.model_megabytes(model, 8.25, 8.5): "group sizes actually used"}
    for answer, words in cases.items():
        fb = D.check_model_megabytes(answer, model, row, 8.5)
        assert not fb and words in fb.message, (answer, fb)
    assert "three kinds" in D.check_model_megabytes(1.0, model, row, 8.5).message
    empty = D.check_model_megabytes(None, model, row, 8.5).message
    assert "megabytes" in empty and "bits" not in empty


def test_rope_layout_table() -> None:
    t = D.rope_layout_table(Llama.random(CFG, seed=1), [1, 5, 9, 2, 7, 3])
    assert len(t) == 2 and t.notes == ("6 tokens",)
    assert all(math.isfinite(p) and p > 1 for p in t.column("perplexity"))
    assert "GGUF layout" in t.rows[0][0]
