"""gqlearn.formats: the min/max (Q4_1-style) format against llama.cpp's Q4_1 (gguf.quants),
the shared rounding helper.  Q8_0 bytes are tested in test_compat.py."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gqlearn._rounding import round_half_away
from gqlearn.formats import MinMaxQuantized, dequantize_minmax, quantize_minmax
from gqlearn.llm import load_smollm2

Q4_1 = GGMLQuantizationType.Q4_1


def q4_1_fields(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step, minimum (float16) and codes of gguf's Q4_1 bytes, unpacked independently."""
    with np.errstate(all="ignore"):  # subnormal steps: 1/d overflows (undefined in C)
        raw = quants.quantize(x, Q4_1).reshape(-1, 20)  # per block: d, m (2 bytes each), codes
    d = raw[:, 0:2].copy().view(np.float16).ravel()
    m = raw[:, 2:4].copy().view(np.float16).ravel()
    codes = np.concatenate([raw[:, 4:] & 15, raw[:, 4:] >> 4], axis=1)  # low nibbles first
    return d, m, codes


def blocks_like_weights(seed: int, rows: int = 24, cols: int = 128) -> np.ndarray:
    """Rows of very different scales, lopsided blocks, a constant and an all-zero block."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)) * rng.uniform(1e-3, 3.0, (rows, 1))
    x[1] += 5.0                # a row of positive values only
    x[2, :32] = -0.25          # a constant block (step 0)
    x[3, 32:64] = 0.0          # an all-zero block
    return x.astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_gguf_q4_1_bit_for_bit(seed: int) -> None:
    x = blocks_like_weights(seed)
    qt = quantize_minmax(x, 32, bits=4)
    d, m, codes = q4_1_fields(x)
    np.testing.assert_array_equal(qt.scales.ravel(), d)
    np.testing.assert_array_equal(qt.minimums.ravel(), m)
    np.testing.assert_array_equal(qt.codes.reshape(-1, 32), codes)
    np.testing.assert_array_equal(dequantize_minmax(qt),
                                  quants.dequantize(quants.quantize(x, Q4_1), Q4_1))


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.sampled_from([32, 64, 96])),
                  elements=st.floats(-1e3, 1e3, width=32)))
def test_matches_gguf_q4_1_on_any_values(x: np.ndarray) -> None:
    d, m, codes = q4_1_fields(x)
    qt = quantize_minmax(x, 32)
    blocks = x.reshape(-1, 32)
    step = (blocks.max(axis=1) - blocks.min(axis=1)) / np.float32(15)
    defined = (step == 0) | (step >= np.finfo(np.float32).tiny)  # C divides by 0 otherwise
    np.testing.assert_array_equal(qt.codes.reshape(-1, 32)[defined], codes[defined])
    np.testing.assert_array_equal(qt.scales.ravel(), d)
    np.testing.assert_array_equal(qt.minimums.ravel(), m)


@pytest.mark.parametrize("seed", [0, 3])
def test_requantizing_q4_1_weights_gives_them_back(seed: int) -> None:
    # what chapter 05 relies on: dequantized Q4_1 weights sit on their own grid exactly
    x = quants.dequantize(quants.quantize(blocks_like_weights(seed), Q4_1), Q4_1)
    np.testing.assert_array_equal(dequantize_minmax(quantize_minmax(x, 32)), x)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_levels_and_error_bound(bits: int) -> None:
    x = blocks_like_weights(7)
    qt = quantize_minmax(x, 64, bits=bits, scale_dtype=np.float32)
    assert qt.codes.dtype == np.uint8 and qt.codes.max() <= 2 ** bits - 1
    groups = x.reshape(-1, 64)
    step = (groups.max(axis=1) - groups.min(axis=1)) / (2 ** bits - 1)
    err = np.abs(dequantize_minmax(qt) - x).reshape(-1, 64)
    assert (err <= step[:, None] / 2 * (1 + 1e-4) + 1e-6).all()
    # each group's minimum and maximum are levels: stored exactly up to float32 rounding
    deq = dequantize_minmax(qt).reshape(-1, 64)
    np.testing.assert_allclose(deq.min(axis=1), groups.min(axis=1), atol=1e-5)
    np.testing.assert_allclose(deq.max(axis=1), groups.max(axis=1), rtol=1e-5, atol=1e-5)


def test_storage_and_shapes() -> None:
    x = blocks_like_weights(0)
    qt = quantize_minmax(x, 32)
    assert isinstance(qt, MinMaxQuantized)
    assert qt.shape == x.shape and qt.size == x.size
    assert qt.scales.shape == qt.minimums.shape == (24, 4) and qt.scales.dtype == np.float16
    assert qt.bits_per_weight == 5.0           # Q4_1: 4 + 2 * 16 / 32
    assert quantize_minmax(x, 32, scale_dtype=np.float32).bits_per_weight == 6.0
    assert quantize_minmax(x, 128, bits=8).bits_per_weight == 8.25
    one = quantize_minmax(x.reshape(1, -1), x.size)   # one group for the whole tensor
    assert one.scales.shape == (1, 1) and dequantize_minmax(one).shape == (1, x.size)
    assert quantize_minmax(x[0], 32).scales.shape == (4,)   # 1-D input


def test_constant_group_is_exact() -> None:
    x = np.full((2, 32), 0.75, np.float32)
    qt = quantize_minmax(x, 32)
    assert (qt.codes == 0).all() and (qt.scales == 0).all()
    np.testing.assert_array_equal(dequantize_minmax(qt), x)


def test_subnormal_step_divides() -> None:
    x = np.linspace(0, 15 * 2e-40, 32, dtype=np.float32)[None, :]   # step 2e-40: subnormal
    qt = quantize_minmax(x, 32, scale_dtype=np.float32)
    assert qt.codes.min() == 0 and qt.codes.max() == 15
    assert np.abs(dequantize_minmax(qt) - x).max() <= 1.01e-40


def test_errors() -> None:
    x = blocks_like_weights(0)
    with pytest.raises(ValueError, match="does not divide"):
        quantize_minmax(x, 48)
    with pytest.raises(ValueError, match="bits"):
        quantize_minmax(x, 32, bits=1)
    with pytest.raises(ValueError, match="bits"):
        quantize_minmax(x, 32, bits=True)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        quantize_minmax(bad, 32)
    with pytest.raises(ValueError, match="float16"):
        quantize_minmax(np.array([[-1e6, 1e6]], np.float32), 2)
    with pytest.raises(TypeError, match="floating-point"):
        quantize_minmax(np.arange(32), 32)


def test_smollm2_block_matrices_are_their_own_q4_1_grid() -> None:
    model, _ = load_smollm2(quiet=True)
    for name in model.linear_names()[:7]:
        w = model.weights[name]
        np.testing.assert_array_equal(dequantize_minmax(quantize_minmax(w, 32)), w)


def test_q4_1_keeps_llama_cpp_rounding_not_the_exact_half_away() -> None:
    # Step 1 and minimum 0, so the code of x is round(x): at 0.49999997 llama.cpp's
    # (int)(x + 0.5f) gives 1 (x + 0.5 rounds to 1.0 in float32) where exact half-away gives 0.
    x = np.zeros((1, 32), np.float32)
    x[0, 1], x[0, 2], x[0, 3] = 15, np.float32(0.49999997), 2.5
    _, _, codes = q4_1_fields(x)
    assert codes[0, 2] == 1 and codes[0, 3] == 3
    np.testing.assert_array_equal(quantize_minmax(x, 32).codes.reshape(-1, 32), codes)
    assert round_half_away(x[0, 2:4].copy()).tolist() == [0.0, 3.0]


def test_round_half_away_is_exact_where_adding_half_is_not() -> None:
    below_half = np.nextafter(np.float32(0.5), np.float32(0))
    big = np.float32(1e30)  # already an integer: unchanged
    y = np.array([below_half, -below_half, 0.5, -0.5, 1.5, 2.5, -2.5, 8388607.5, big], np.float32)
    expected = [0.0, 0.0, 1.0, -1.0, 2.0, 3.0, -3.0, 8388608.0, float(big)]
    out = round_half_away(y.copy())
    assert out.dtype == np.float32 and out.tolist() == expected
    naive = np.trunc(y + np.copysign(np.float32(0.5), y))
    assert naive[0] == 1.0  # what the one helper exists to avoid

