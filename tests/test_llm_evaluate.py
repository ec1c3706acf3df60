"""Perplexity, agreement and the quantization table."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gqlearn
from gqlearn.llm import (
    Llama,
    LlamaConfig,
    QuantEvaluation,
    Setting,
    evaluate_quantization,
    fake_quantize_linear_weights,
    load_sample_text,
    load_smollm2,
    next_token_agreement,
    perplexity,
    token_log_probs,
)

# widths 48 = 16 * 3 and 96 = 32 * 3: a request of 32 backs off to 16 on the 48-wide matrices
CFG = LlamaConfig(vocab_size=60, hidden_size=48, n_layers=2, n_heads=4, n_kv_heads=2,
                  ffn_size=96)


@pytest.fixture(scope="module")
def tiny() -> Llama:
    return Llama.random(CFG, seed=5)


def test_token_log_probs_and_perplexity() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 10)).astype(np.float32)
    ids = [1, 4, 2, 9, 0, 3]
    lp = token_log_probs(logits, ids)
    z = logits.astype(np.float64)
    expected = [z[j, ids[j + 1]] - np.log(np.exp(z[j]).sum()) for j in range(5)]
    np.testing.assert_allclose(lp, expected, rtol=1e-12)
    assert perplexity(logits, ids) == pytest.approx(math.exp(-np.mean(expected)))
    with pytest.raises(ValueError, match="T >= 2"):
        token_log_probs(logits, ids[:5])
    # huge logits do not overflow
    huge = np.array([[1e4, 0.0], [0.0, 1e4], [0.0, 0.0]], np.float32)
    assert perplexity(huge, [0, 0, 1]) == pytest.approx(1.0)


def test_next_token_agreement() -> None:
    a = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    assert next_token_agreement(a, a) == 1.0
    assert next_token_agreement(a, a[::-1]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        next_token_agreement(a, a[:2])


def test_setting_labels() -> None:
    assert Setting().label == "float"
    assert Setting(8, 32).label == "int8 g=32"
    assert Setting(3, "tensor").label == "int3 per-tensor"
    assert Setting(4, 32, asymmetric=True).label == "int4 asym g=32"


def test_row_label_shows_backed_off_group_sizes(tiny: Llama) -> None:
    ids = list(range(12))
    ev = evaluate_quantization(tiny, ids, bits=(8,), group_sizes=(32, 64, "tensor"),
                               baseline=("Q4_1 file", 5.0))
    assert [r.label for r in ev.rows] == ["Q4_1 file", "int8 g=32\u219216/32",
                                          "int8 g=64\u219216/32", "int8 per-tensor"]
    assert ev.row("int8 g=32") is ev.row("int8 g=32\u219216/32") is ev.rows[1]
    assert ev.baseline.bits_per_weight == 5.0 and ev.baseline.setting == Setting()
    assert ev.table().splitlines()[2].startswith("Q4_1 file")


def test_asymmetric_weights_use_minmax(tiny: Llama) -> None:
    from gqlearn.formats import dequantize_minmax, quantize_minmax

    qw = fake_quantize_linear_weights(tiny, 4, 32, asymmetric=True)
    w = tiny.weights["blk.0.ffn_down.weight"]
    np.testing.assert_array_equal(qw.weights["blk.0.ffn_down.weight"],
                                  dequantize_minmax(quantize_minmax(w, 32)))
    n = sum(tiny.weights[k].size for k in tiny.linear_names())
    down = sum(tiny.weights[k].size for k in tiny.linear_names() if "ffn_down" in k)
    # float16 minimum and step per group: 32 bits per group
    assert qw.bits_per_weight == pytest.approx(4 + 32 * ((n - down) / 16 + down / 32) / n)
    pt = fake_quantize_linear_weights(tiny, 4, "tensor", asymmetric=True)
    assert pt.group_sizes["blk.0.attn_q.weight"] == tiny.weights["blk.0.attn_q.weight"].size
    ev = evaluate_quantization(tiny, list(range(20)), bits=(4,), group_sizes=(32,),
                               asymmetric=True)
    assert [r.label for r in ev.rows] == ["float", "int4 asym g=32\u219216/32"]
    assert ev.rows[1].bits_per_weight == pytest.approx(qw.bits_per_weight)


@pytest.mark.parametrize("bits", [8, 4, 3])
def test_fake_quantize_linear_weights_back_off_and_cost(tiny: Llama, bits: int) -> None:
    qw = fake_quantize_linear_weights(tiny, bits, 32)
    assert set(qw.weights) == set(tiny.linear_names())
    assert qw.group_sizes["blk.0.attn_q.weight"] == 16     # 48 = 16 * 3
    assert qw.group_sizes["blk.0.ffn_down.weight"] == 32   # 96 = 32 * 3
    assert qw.group_sizes_by_width() == {48: 16, 96: 32}
    # the same numbers as quantizing each matrix by hand
    w = tiny.weights["blk.1.ffn_up.weight"]
    by_hand = gqlearn.dequantize(gqlearn.quantize(w, gqlearn.choose_group_size(48, 32), bits=bits))
    np.testing.assert_array_equal(qw.weights["blk.1.ffn_up.weight"], by_hand)
    # bits per weight: values plus one float32 scale per group, over all matrices
    n = sum(tiny.weights[k].size for k in tiny.linear_names())
    down = sum(tiny.weights[k].size for k in tiny.linear_names() if "ffn_down" in k)
    expected = bits + 32 * ((n - down) / 16 + down / 32) / n
    assert qw.n_weights == n
    assert qw.bits_per_weight == pytest.approx(expected)


def test_per_tensor_and_embedding(tiny: Llama) -> None:
    qw = fake_quantize_linear_weights(tiny, 8, "tensor")
    w = tiny.weights["blk.0.ffn_gate.weight"]
    assert qw.group_sizes["blk.0.ffn_gate.weight"] == w.size
    scale = np.abs(w).max() / 127
    assert np.abs(qw.weights["blk.0.ffn_gate.weight"] - w).max() <= scale / 2 * (1 + 1e-5)
    assert "token_embd.weight" not in qw.weights
    qe = fake_quantize_linear_weights(tiny, 4, 16, include_embedding=True)
    assert qe.group_sizes["token_embd.weight"] == 16


def test_evaluate_on_a_tiny_model(tiny: Llama) -> None:
    ids = list(np.random.default_rng(1).integers(0, CFG.vocab_size, 40))
    seen = []
    ev = evaluate_quantization(tiny, ids, bits=(8, 2), group_sizes=(32, "tensor"),
                               prompt_ids=[1, 2, 3], max_new_tokens=4, progress=seen.append)
    assert isinstance(ev, QuantEvaluation)
    assert seen == ["float", "int8 g=32", "int8 per-tensor", "int2 g=32", "int2 per-tensor"]
    assert [r.setting.label for r in ev.rows] == seen
    base = ev.baseline
    assert base.perplexity == pytest.approx(perplexity(tiny.forward(ids), ids), rel=1e-6)
    assert (base.n_agree, base.n_positions, base.kl, base.bits_per_weight) == (39, 39, 0.0, 32.0)
    assert base.sample_ids == tiny.generate([1, 2, 3], 4)
    int8 = ev.row("int8 g=32")
    assert int8.group_sizes == {48: 16, 96: 32}
    assert int8.agreement >= 0.9 and int8.kl < 0.01
    assert abs(int8.perplexity / base.perplexity - 1) < 0.02
    # KL against a direct float64 computation
    zf = tiny.forward(ids)[:-1].astype(np.float64)
    zq = tiny.with_weights(fake_quantize_linear_weights(tiny, 2, 32).weights).forward(ids)[:-1]
    zq = zq.astype(np.float64)
    lf = zf - np.log(np.exp(zf).sum(axis=1, keepdims=True))
    lq = zq - np.log(np.exp(zq).sum(axis=1, keepdims=True))
    kl = np.mean(np.sum(np.exp(lf) * (lf - lq), axis=1))
    assert ev.row("int2 g=32").kl == pytest.approx(kl, rel=1e-4)
    assert ev.row("int2 g=32").perplexity == pytest.approx(np.exp(-np.mean(
        lq[np.arange(39), ids[1:]])), rel=1e-5)
    worst = ev.row("int2 per-tensor")
    assert worst.kl > int8.kl and worst.bits_per_weight < int8.bits_per_weight
    for r in ev.rows:
        assert r.kl >= 0 and 0 <= r.n_agree <= r.n_positions and len(r.sample_ids) == 4
        assert len(r.disagree_at) == r.n_positions - r.n_agree
    assert base.disagree_at == ()
    assert ev.float_margins.shape == (39,) and (ev.float_margins >= 0).all()
    lp = np.log(np.sort(np.exp(tiny.forward(ids)[:-1].astype(np.float64)), axis=1))
    np.testing.assert_allclose(ev.float_margins, lp[:, -1] - lp[:, -2], atol=1e-9)
    with pytest.raises(KeyError, match="no row 'int5"):
        ev.row("int5 g=32")
    text = ev.table()
    assert text.splitlines()[0].split() == ["setting", "groups", "used", "bits/w", "perplexity",
                                            "ppl", "ratio", "KL", "nats", "top-1", "agreement"]
    ratio = ev.row("int8 g=32").perplexity / base.perplexity
    assert f"{ratio:.3f}" in text.splitlines()[3] and "%" not in text.splitlines()[3][:60]
    assert "48:16, 96:32" in text and "48:all, 96:all" in text and "39/39" in text
    assert str(ev) == text
    rec = ev.to_records()
    assert rec[1]["setting"] == "int8 g=32\u219216/32" and rec[1]["group_size"] == 32
    assert rec[1]["group_sizes_used"] == {48: 16, 96: 32} and rec[1]["asymmetric"] is False


def test_smollm2_int8_keeps_predictions() -> None:
    model, tok = load_smollm2(quiet=True)
    ids = tok.encode(load_sample_text()).ids[:64]
    prompt = tok.encode("The capital of France is").ids
    ev = evaluate_quantization(model, ids, bits=(8,), group_sizes=(32,), prompt_ids=prompt,
                               max_new_tokens=1, tokenizer=tok)
    base, int8 = ev.rows
    assert base.sample == int8.sample == " Paris"
    assert ev.prompt == "The capital of France is"
    assert abs(int8.perplexity / base.perplexity - 1) < 0.02
    assert int8.agreement >= 0.9
    assert int8.group_sizes == {576: 32, 1536: 32}
    assert int8.bits_per_weight == pytest.approx(9.0)
