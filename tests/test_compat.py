"""Bit-exact agreement with the quantizers people ship."""

import gguf
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gqlearn import QuantizedTensor, dequantize, quantize
from gqlearn.formats import Q8_0_BLOCK, quantize_q8_0, to_q8_0

from reference import near_ties, quantize_q80_llama2c

F32 = np.float32


def gguf_q8_0(w):
    return gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)


def from_q8_0(blocks: np.ndarray, shape: tuple[int, ...]) -> QuantizedTensor:
    """Read Q8_0 blocks back as a QuantizedTensor (scales widened from float16).

    Test-only: the library writes Q8_0 (gqlearn.formats.to_q8_0) and reads GGUF through gguf.
    """
    raw = np.ascontiguousarray(blocks, dtype=np.uint8).reshape(-1, 2 + Q8_0_BLOCK)
    if raw.shape[0] * Q8_0_BLOCK != int(np.prod(shape)):
        raise ValueError(f"{raw.shape[0]} Q8_0 blocks hold {raw.shape[0] * Q8_0_BLOCK} values, "
                         f"not the {int(np.prod(shape))} of shape {shape}")
    scales = raw[:, :2].copy().view(np.float16).astype(np.float32).reshape(-1)
    scales[scales == 0] = 1.0
    values = raw[:, 2:].copy().view(np.int8)
    return QuantizedTensor(values.reshape(shape), scales.reshape(*shape[:-1], -1), Q8_0_BLOCK)


def test_q8_0_bytes_equal_llama_cpp_on_near_ties(rng):
    w = near_ties(rng, n_groups=4000)
    assert np.array_equal(quantize_q8_0(w), gguf_q8_0(w))


def test_q8_0_needs_the_reciprocal_setting(rng):
    # With division instead of llama.cpp's reciprocal, some near-tie values come out different:
    # the documented setting is what makes the match.
    w = near_ties(rng, n_groups=4000)
    qt = quantize(w, 32, rounding="half_away")
    ref = gguf_q8_0(w).reshape(-1, 34)[:, 2:].view(np.int8).reshape(w.shape)
    assert (qt.values != ref).any()


@pytest.mark.parametrize("shape", [(32,), (7, 64), (3, 2, 128)])
def test_q8_0_bytes_equal_llama_cpp_on_gaussians_with_zero_blocks(rng, shape):
    w = rng.standard_normal(shape).astype(F32) * rng.uniform(1e-3, 10)
    w.reshape(-1, 32)[0] = 0  # an all-zero block: llama.cpp stores d = 0
    assert np.array_equal(quantize_q8_0(w), gguf_q8_0(w))


@given(hnp.arrays(F32, st.integers(1, 8).map(lambda n: (n, 32)),
                  elements=st.floats(-100, 100, width=32, allow_subnormal=False)))
def test_q8_0_property(w):
    # Blocks whose scale d = amax/127 is subnormal are left out: there llama.cpp computes
    # 1/d = inf and casts inf or NaN to int8, which is undefined in C (gqlearn divides instead).
    tiny = np.abs(w).max(axis=1) / F32(127) < np.finfo(F32).tiny
    w[tiny] = 0
    assert np.array_equal(quantize_q8_0(w), gguf_q8_0(w))


def test_q8_0_subnormal_scales_are_well_defined_here():
    w = np.full((1, 32), 1e-37, F32)
    w[0, 0] = -3e-37
    values = quantize_q8_0(w)[0, 2:].view(np.int8)
    assert values[0] == -127 and (values[1:] == 42).all()  # 1e-37 / (3e-37/127) = 42.3


def test_q8_0_round_trip_dequantizes_like_gguf(rng):
    w = rng.standard_normal((4, 64)).astype(F32)
    blocks = quantize_q8_0(w)
    back = from_q8_0(blocks, w.shape)
    np.testing.assert_array_equal(dequantize(back),
                                  gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q8_0))
    with pytest.raises(ValueError, match="group size 32"):
        to_q8_0(quantize(w, 64))
    with pytest.raises(ValueError, match="blocks hold"):
        from_q8_0(blocks, (4, 32))


def test_llama2c_quantize_q80_values_match_half_even(rng):
    w = np.concatenate([near_ties(rng, 3000, 64).reshape(-1),
                        rng.standard_normal(64 * 500).astype(F32)])
    ref_values, ref_scales, ref_maxerr = quantize_q80_llama2c(w, 64)
    qt = quantize(w, 64, rounding="half_even")
    np.testing.assert_array_equal(qt.values.reshape(-1, 64), ref_values)
    np.testing.assert_array_equal(qt.scales, ref_scales)
    err = np.abs(dequantize(qt).reshape(-1, 64) - w.reshape(-1, 64)).max()
    assert err == ref_maxerr
    # and the default (half away from zero, as C's roundf) does not match it at ties
    assert (quantize(w, 64).values.reshape(-1, 64) != ref_values).any()
