"""Chapter 05 support: baseline tables, back-off, plot, exercise checkers."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from gqlearn.lessons import decoder as D
from gqlearn.llm import (Llama, LlamaConfig, QuantEvaluation, Setting, evaluate_quantization,
                         load_llama)
from gqlearn.llm.evaluate import QuantRow
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


def test_backoff_table() -> None:
    t = D.backoff_table(Llama.random(CFG))
    assert t.columns == ("requested", "width 96", "width 256", "halving loop")
    rows = {r[0]: r[1:] for r in t.rows}
    assert rows[32] == (32, 32, "same")
    assert rows[128] == (32, 128, "same")
    assert any("ffn_down" in n for n in t.notes)


def test_time_forward() -> None:
    assert 0 < D.time_forward(Llama.random(CFG), [1, 2, 3], repeat=2) < 10


def _evaluation(rows: list[tuple[int | None, int | None, float, int]]) -> QuantEvaluation:
    out = [QuantRow(Setting(b, g), {}, bpw, 10.0, agree, 100, 0.0)
           for b, g, bpw, agree in rows]
    return QuantEvaluation(out, 101)


FAKE = _evaluation([(None, None, 32.0, 100), (8, 32, 9.0, 99), (8, None, 8.0, 96),
                    (4, 32, 5.0, 80), (4, None, 4.0, 2), (3, 32, 4.0, 50)])


def test_plot_quality() -> None:
    import matplotlib.pyplot as plt

    model = Llama.random(CFG, seed=4)
    ev = evaluate_quantization(model, list(range(20)), bits=(8, 4), group_sizes=(32, None))
    fig = D.plot_quality(ev)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_yscale() == "log"
    assert len(fig.axes[0].lines) == 3  # int8, int4, float baseline
    plt.close(fig)


def test_check_perplexity() -> None:
    lp = np.log(np.array([0.5, 0.25, 0.125]))
    expected = math.exp(-lp.mean())
    assert D.check_perplexity(expected, lp)
    assert "Correct" in repr(D.check_perplexity(expected, lp))
    cases = {math.exp(lp.mean()): "sign", -lp.mean(): "exponential", lp.mean(): "negate",
             math.exp(-lp.sum()): "mean over tokens", 2 ** (-lp.mean()): "natural"}
    for answer, word in cases.items():
        fb = D.check_perplexity(answer, lp)
        assert not fb and word in fb.message, (answer, fb)
    assert not D.check_perplexity(None, lp)
    assert not D.check_perplexity(1.0, lp)


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
    assert not D.check_scale_count(expected + 1, model)


def test_check_smallest_setting() -> None:
    fb = D.check_smallest_setting("int8 per-tensor", FAKE)
    assert fb and "8.000 bits" in fb.message
    fb = D.check_smallest_setting("int8 g=32", FAKE)
    assert not fb and "int8 per-tensor also reaches 95%" in fb.message
    fb = D.check_smallest_setting("int4 g=32", FAKE)
    assert not fb and "80.0%" in fb.message and "below 95%" in fb.message
    assert "setting label" in D.check_smallest_setting("int9", FAKE).message
    assert "setting label" in D.check_smallest_setting(None, FAKE).message
    assert not D.check_smallest_setting("float", FAKE)
    none_ok = _evaluation([(None, None, 32.0, 100), (4, 32, 5.0, 80)])
    assert "no setting" in D.check_smallest_setting("int4 g=32", none_ok).message


def test_rope_layout_table() -> None:
    t = D.rope_layout_table(Llama.random(CFG, seed=1), [1, 5, 9, 2, 7, 3])
    assert len(t) == 2 and t.notes == ("6 tokens",)
    assert all(math.isfinite(p) and p > 1 for p in t.column("perplexity"))
    assert "GGUF layout" in t.rows[0][0]
