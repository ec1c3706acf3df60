"""Claims the prose of notebooks/04_choosing_group_size.ipynb relies on, computed independently."""

import math
from itertools import pairwise

import ml_dtypes
import numpy as np
import pytest

import gqlearn
from gqlearn import models, roles, synthetic
from gqlearn.io import open_checkpoint

SHAPE = (512, 4096)
GROUP_SIZES = [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
DB_PER_BIT = 20 * math.log10(2)


def _knee(curve):
    for a, b in pairwise(curve):
        if (a[2] - b[2]) / (a[1] - b[1]) > DB_PER_BIT:
            return a[0]
    return curve[-1][0]


@pytest.fixture(scope="module")
def sweep():
    out = {}
    for name in synthetic.DISTRIBUTIONS:
        w = synthetic.make_weights(name, SHAPE, seed=0)
        for bits in (8, 4, 3):
            for g in GROUP_SIZES:
                rep = gqlearn.error_report(w, gqlearn.quantize(w, g, bits=bits))
                out[(name, bits, g)] = (rep.sqnr_db, rep.relative_frobenius_error)
    return out


def _curve(sweep, name, bits):
    return [(g, bits + 32 / g, sweep[(name, bits, g)][0]) for g in GROUP_SIZES]


def test_every_doubling_costs_sqnr(sweep):
    for name in synthetic.DISTRIBUTIONS:
        for bits in (8, 4, 3):
            s = [sweep[(name, bits, g)][0] for g in GROUP_SIZES]
            assert s == sorted(s, reverse=True)


def test_db_per_bit():
    assert DB_PER_BIT == pytest.approx(10 * math.log10(4)) == pytest.approx(6.0206, abs=1e-4)


def test_knees(sweep):
    k = {(n, b): _knee(_curve(sweep, n, b)) for n in synthetic.DISTRIBUTIONS for b in (8, 4, 3)}
    for b in (8, 4, 3):
        assert k[("gaussian", b)] >= k[("laplace", b)] >= k[("outliers", b)]
        assert k[("gaussian", b)] > k[("outliers", b)]
    assert all(64 <= v <= 256 for v in k.values())   # the summary's range
    for n in synthetic.DISTRIBUTIONS:                 # hardly moves with the bit width
        assert max(k[(n, b)] for b in (8, 4, 3)) <= 2 * min(k[(n, b)] for b in (8, 4, 3))
    assert k[("laplace", 4)] == 128                   # the model's knee is among these


def test_group_size_matters_more_at_few_bits(sweep):
    for n in synthetic.DISTRIBUTIONS:
        rel8 = [sweep[(n, 8, g)][1] for g in GROUP_SIZES]
        assert max(rel8) < 0.07                       # within a few percent at 8 bits
        for b in (4, 3):
            rel = [sweep[(n, b, g)][1] for g in GROUP_SIZES]
            assert max(rel) - min(rel) > 0.09         # ten percentage points or more


def test_four_bits_cost_about_25_db(sweep):
    # the uniform model: 20 log10(127/7) dB between 8 and 4 bits, for the Gaussian
    assert sweep[("gaussian", 8, 64)][0] - sweep[("gaussian", 4, 64)][0] == pytest.approx(
        20 * math.log10(127 / 7), abs=0.3)


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    ckpt = open_checkpoint(minilm_dir)
    enc = models.SentenceEncoder.from_pretrained(minilm_dir, dtype=np.float64)
    data = models.load_sentences()
    texts = [s["text"] for s in data["corpus"] + data["queries"]]
    return ckpt, enc, texts, enc.encode(texts)


def _cos(minilm, bits, g):
    ckpt, enc, texts, ref = minilm
    weights = models.fake_quantize(ckpt, g, bits=bits, roles=roles.LINEAR_ROLES)
    n_scales = sum(w.size // (w.shape[-1] if g == "row" else g) for w in weights.values())
    bpw = bits + 32 * n_scales / sum(w.size for w in weights.values())
    return bpw, float(models.cosine_similarity(ref, enc.with_weights(weights).encode(texts)).mean())


@pytest.mark.slow
def test_model_knee_at_128(minilm):
    assert len(minilm[2]) == 40
    pts = [(g, *_cos(minilm, 4, g)) for g in (32, 64, 128, "row")]
    cos = [c for _, _, c in pts]
    assert cos == sorted(cos, reverse=True)
    curve = [(g, bpw, -10 * math.log10(2 * (1 - c))) for g, bpw, c in pts]
    prices = [(a[2] - b[2]) / (a[1] - b[1]) for a, b in pairwise(curve)]
    assert prices[0] < DB_PER_BIT - 1 and prices[1] < DB_PER_BIT - 1
    assert prices[2] > DB_PER_BIT + 0.2
    assert _knee(curve) == 128
    widths = sorted({minilm[0].info(n).shape[-1] for n in minilm[0]
                     if roles.classify(n) in roles.LINEAR_ROLES})
    assert widths == [384, 1536]


def test_16_bit_scales(sweep):
    w = synthetic.gaussian(SHAPE, seed=0)
    loss = {}
    for bits, g in ((8, 32), (4, 32), (4, 128)):
        qt = gqlearn.quantize(w, g, bits=bits)
        for name, dtype in (("f16", np.float16), ("bf16", ml_dtypes.bfloat16)):
            s = qt.scales.astype(dtype).astype(np.float32)
            w_hat = (qt.values.reshape(-1, g) * s.reshape(-1, 1)).reshape(w.shape)
            e = (w - w_hat).astype(np.float64)
            sqnr = 10 * np.log10(np.sum(w.astype(np.float64) ** 2) / np.sum(e ** 2))
            loss[(name, bits, g)] = sweep[("gaussian", bits, g)][0] - sqnr
    assert all(abs(loss[("f16", b, g)]) < 0.05 for b, g in ((8, 32), (4, 32), (4, 128)))
    assert loss[("bf16", 8, 32)] > 0.1                   # visible at 8 bits
    assert abs(loss[("bf16", 4, 32)]) < 0.05 and abs(loss[("bf16", 4, 128)]) < 0.05


def test_production_bits_per_weight():
    assert 8 + 16 / 32 == 8.5 and 4 + 16 / 32 == 4.5                  # Q8_0, Q4_0
    assert 4 + (8 * (6 + 6) + 2 * 16) / 256 == 4 + (12 + 32 / 8) / 32 == 4.5   # Q4_K
    assert 4 + (16 + 4) / 128 == 4.15625                              # GPTQ / AWQ
