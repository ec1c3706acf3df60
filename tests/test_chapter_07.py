"""Claims the prose of notebooks/07_running_quantized.ipynb relies on, computed again."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gqlearn
from gqlearn import llm


def w8a16_cell(qt: gqlearn.QuantizedTensor, x: np.ndarray) -> np.ndarray:
    """The chapter's section-2 cell."""
    out, _ = qt.shape
    v = qt.values.reshape(out, -1, qt.group_size)
    group_sums = (v * x.reshape(-1, qt.group_size)).sum(axis=2)
    return (group_sums * qt.scales).sum(axis=1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bits", [8, 4])
def test_w8a16_cell_is_allclose_to_fake_quantization_with_room(seed, bits) -> None:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((256, 512), dtype=np.float32)
    x = rng.standard_normal(512, dtype=np.float32)
    qt = gqlearn.quantize(w, 32, bits=bits)
    y_fake = x @ gqlearn.dequantize(qt).T
    for y in (w8a16_cell(qt, x), gqlearn.qmatmul(x, qt)):
        assert y.dtype == np.float32 and y.shape == (256,)
        assert np.allclose(y, y_fake, rtol=1e-5, atol=1e-4)
        # the tolerance holds with a wide margin: differences are a few float32 roundings
        assert np.abs(y - y_fake).max() < 1e-5 * max(1.0, np.abs(y_fake).max())
        assert not np.array_equal(y, x @ w.T)  # it is the quantized product, not the float one


def test_section1_sizes_of_a_4096_layer() -> None:
    w = np.ones((4096, 4096), np.float32)
    q8, q4 = gqlearn.quantize(w, 32), gqlearn.quantize(w, 32, bits=4)
    assert (w.nbytes, q8.nbytes, q4.nbytes) == (64 * 2**20, 18 * 2**20, 10 * 2**20)
    assert 8 * q8.nbytes / w.size == 9.0 and 8 * q4.nbytes / w.size == 5.0
    assert q4.values_nbytes * 2 == q4.values.nbytes == q8.values_nbytes


@pytest.mark.parametrize("seed", range(5))
def test_packing_cells_match_the_library(seed) -> None:
    rng = np.random.default_rng(seed)
    small = gqlearn.quantize(rng.standard_normal((2, 8), dtype=np.float32), 8, bits=4)
    v = small.values
    u = (v + 8).astype(np.uint8)
    packed = u[:, 0::2] | (u[:, 1::2] << 4)
    assert packed.dtype == np.uint8 and np.array_equal(packed, small.packed)
    low = (packed & 0x0F).astype(np.int8) - 8
    high = (packed >> 4).astype(np.int8) - 8
    assert np.array_equal(np.stack([low, high], axis=-1).reshape(v.shape), v)


def test_roofline_intensities() -> None:
    """Section 4: 2 flop per weight; float32 0.5 flop/byte; fewer bytes, higher intensity."""
    n = 4096 * 4096
    w = np.ones((4096, 4096), np.float32)
    w32, w8, w4 = w.nbytes, gqlearn.quantize(w, 32).nbytes, gqlearn.quantize(w, 32, bits=4).nbytes
    assert 2 * n / w32 == 0.5
    assert 2 * n / w32 < 2 * n / w8 < 2 * n / w4


@pytest.fixture(scope="module")
def decoder():
    model, tok = llm.load_smollm2(quiet=True)
    ids = tok.encode(llm.load_sample_text()).ids[:32]
    rows = {}
    for bits, g in [(8, 32), (4, 32)]:
        q = llm.QuantizedLlama.from_model(model, bits, g, include_embedding=True)
        fake = llm.fake_quantize_linear_weights(model, bits, g, include_embedding=True)
        rows[(bits, g)] = (q.weight_nbytes,
                           llm.perplexity(q.forward(ids), ids),
                           llm.perplexity(model.with_weights(fake.weights).forward(ids), ids))
    float_bytes = sum(w.nbytes for w in model.weights.values())
    return float_bytes, llm.perplexity(model.forward(ids), ids), rows


def _stable_at_one_decimal(p: float) -> bool:
    """Printed with .1f, p stays the same under a relative change of 1e-4 (threads, BLAS)."""
    return round(p * (1 - 1e-4), 1) == round(p, 1) == round(p * (1 + 1e-4), 1)


def test_decoder_perplexity_equals_fake_quantized_and_prints_stably(decoder) -> None:
    float_bytes, float_ppl, rows = decoder
    assert _stable_at_one_decimal(float_ppl)
    for _, ppl, fake_ppl in rows.values():
        assert math.isclose(ppl, fake_ppl, rel_tol=1e-5)
        assert _stable_at_one_decimal(ppl) and _stable_at_one_decimal(fake_ppl)
        assert round(ppl, 1) == round(fake_ppl, 1)


def test_decoder_memory_and_int4_claims(decoder) -> None:
    float_bytes, float_ppl, rows = decoder
    mib = {k: v[0] / 2**20 for k, v in rows.items()}
    # memory falls as section 1 predicted: about 9/32 (int8 g=32) and 5/32 (int4 g=32)
    assert mib[(8, 32)] == pytest.approx(float_bytes / 2**20 * 9 / 32, rel=0.02)
    assert mib[(4, 32)] == pytest.approx(float_bytes / 2**20 * 5 / 32, rel=0.02)
    # int4 g=32's perplexity is much higher than int8's
    assert rows[(4, 32)][1] > 1.3 * rows[(8, 32)][1]
