import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gqlearn
from gqlearn import QuantizedTensor, dequantize, quantize

from reference import near_ties, quantize_spec

F32 = np.float32


# --- common worked examples, exact integers in float32 -------------------------------------

def test_worked_example_per_tensor():
    qt = quantize(np.array([0.1, -0.8, 0.05, -0.02], F32), 4)
    assert qt.values.tolist() == [16, -127, 8, -3]
    assert qt.scales[0] == F32(0.8) / F32(127)


def test_worked_example_mixed_magnitudes_single_scale_zeroes_small_weights():
    w = np.array([10.5, -8.2, 9.1, -7.8, 0.001, -0.002, 0.0015, -0.0008], F32)
    assert quantize(w, 8).values.tolist() == [127, -99, 110, -94, 0, 0, 0, 0]


def test_worked_example_mixed_magnitudes_group_of_four():
    w = np.array([10.5, -8.2, 9.1, -7.8, 0.001, -0.002, 0.0015, -0.0008], F32)
    qt = quantize(w, 4)
    assert qt.values.tolist() == [127, -99, 110, -94, 64, -127, 95, -51]


def test_worked_example_float32_differs_from_hand_arithmetic():
    # Hand arithmetic rounds the scale to 0.0157 and gets -96 and 64; float32 gives -95 and 63:
    # -1.5 / (2/127) = -95.25, and 0.01 / (0.02/127) lands just below the 63.5 tie.
    w = np.array([2.0, -1.5, 0.8, -0.3, 0.01, -0.02, 0.005, -0.001], F32)
    qt = quantize(w, 4)
    assert qt.values.tolist() == [127, -95, 51, -19, 63, -127, 32, -6]
    assert F32(0.01) / (F32(0.02) / F32(127)) < 63.5
    assert qt.nbytes == 16 and w.nbytes == 32


def test_worked_example_two_groups():
    w = np.array([5.0, -4.2, 3.8, -3.1, 4.5, -2.9, 3.2, -4.1,
                  0.01, -0.008, 0.012, -0.015, 0.009, -0.011, 0.007, -0.013], F32)
    one = quantize(w, 16)
    assert (one.values[8:] == 0).all() and one.values[0] == 127
    two = quantize(w, 8)
    assert two.values[8] == 85  # 0.01 / (0.015/127) = 84.67
    assert (two.values[8:] != 0).all()


def test_per_tensor_is_the_same_code_path():
    w = np.random.default_rng(0).standard_normal((6, 10)).astype(F32)
    qt = quantize(w.reshape(1, -1), w.size)
    assert qt.scales.shape == (1, 1)
    assert qt.scales[0, 0] == np.abs(w).max() / F32(127)


# --- properties ------------------------------------------------------------------------------

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False, width=32).map(
    lambda x: 0.0 if abs(x) < 1e-30 else x)


@st.composite
def tensors(draw):
    group_size = draw(st.sampled_from([1, 2, 3, 4, 8, 16, 32, 64]))
    groups_per_row = draw(st.integers(1, 6))
    lead = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    shape = (*lead, group_size * groups_per_row)
    w = draw(hnp.arrays(F32, shape, elements=finite))
    bits = draw(st.integers(2, 8))
    return w, group_size, bits


@given(tensors(), st.sampled_from(["half_away", "half_even"]), st.booleans())
def test_properties(case, rounding, reciprocal):
    w, gs, bits = case
    qt = quantize(w, gs, bits=bits, rounding=rounding, reciprocal=reciprocal)
    qmax = 2 ** (bits - 1) - 1
    assert qt.values.dtype == np.int8 and qt.scales.dtype == F32
    assert qt.values.shape == w.shape
    assert qt.scales.shape == (*w.shape[:-1], w.shape[-1] // gs)
    assert np.abs(qt.values.astype(int)).max() <= qmax
    # error bounded by half a step, elementwise (float64 check of the float32 result)
    scale = np.repeat(qt.scales.astype(np.float64), gs, axis=-1)
    err = np.abs(w.astype(np.float64) - dequantize(qt).astype(np.float64))
    assert (err <= scale * (0.5 + 2.0 ** -20)).all()
    # quantizing the dequantized tensor again gives the same values
    again = quantize(dequantize(qt), gs, bits=bits, rounding=rounding, reciprocal=reciprocal)
    np.testing.assert_array_equal(again.values, qt.values)
    np.testing.assert_allclose(again.scales, qt.scales, rtol=1e-6)


@given(tensors(), st.sampled_from(["half_away", "half_even"]))
def test_matches_independent_spec(case, rounding):
    w, gs, bits = case
    qt = quantize(w, gs, bits=bits, rounding=rounding)
    values, scales = quantize_spec(w, gs, bits, half_even=rounding == "half_even")
    np.testing.assert_array_equal(qt.values, values)
    np.testing.assert_array_equal(qt.scales, scales)


@given(tensors(), st.integers(1, 4), st.integers(1, 700),
       st.sampled_from(["half_away", "half_even"]))
def test_thread_count_and_chunk_size_do_not_change_results(case, threads, chunk, rounding):
    w, gs, bits = case
    ref = quantize(w, gs, bits=bits, rounding=rounding, threads=1)
    got = quantize(w, gs, bits=bits, rounding=rounding, threads=threads, chunk_elements=chunk)
    np.testing.assert_array_equal(got.values, ref.values)
    np.testing.assert_array_equal(got.scales, ref.scales)
    np.testing.assert_array_equal(dequantize(got, threads=threads, chunk_elements=chunk),
                                  dequantize(ref, threads=1))


def test_large_tensor_threads_and_split_groups(rng):
    w = rng.standard_normal((64, 4096)).astype(F32)
    ref = quantize(w, 128, threads=1)
    for threads, chunk in [(2, 1 << 12), (3, 5000), (2, None)]:
        got = quantize(w, 128, threads=threads, chunk_elements=chunk)
        np.testing.assert_array_equal(got.values, ref.values)
    # one group longer than a chunk: cut into pieces, same answer
    whole = quantize(w.reshape(1, -1), w.size, threads=1)
    pieces = quantize(w.reshape(1, -1), w.size, threads=2, chunk_elements=1000)
    np.testing.assert_array_equal(whole.values, pieces.values)
    np.testing.assert_array_equal(whole.scales, pieces.scales)


# --- rounding at ties ------------------------------------------------------------------------

def test_rounding_modes_differ_only_at_ties():
    scale = F32(1.0) / F32(127)
    w = np.array([127, 0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, -0.49999997], F32) * scale
    w[0] = 1.0
    away = quantize(w, 8, rounding="half_away").values
    even = quantize(w, 8, rounding="half_even").values
    q = (w / (F32(1.0) / F32(127)))
    ties = np.abs(q - np.trunc(q)) == 0.5
    assert ties.sum() >= 3  # the construction really hits ties
    assert (away[~ties] == even[~ties]).all()
    assert (np.abs(away[ties]) >= np.abs(even[ties])).all() and (away[ties] != even[ties]).any()


def test_half_away_is_exact_just_below_one_half():
    # trunc(x + 0.5) would turn 0.49999997 into 1; roundf gives 0.
    w = np.array([127.0, 0.49999997, -0.49999997, 0.5], F32)
    qt = quantize(w, 4)
    assert qt.scales[0] == 1.0
    assert qt.values.tolist() == [127, 0, 0, 1]


def test_divide_and_reciprocal_can_differ(rng):
    w = near_ties(rng)
    a = quantize(w, 32).values
    b = quantize(w, 32, reciprocal=True).values
    assert (a != b).any()  # some quotients straddle a tie one way and not the other
    assert np.abs(a.astype(int) - b).max() == 1


# --- dtypes, layout, zeros -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float64, np.float32])
def test_input_dtypes_match_float32_conversion(rng, dtype):
    w = rng.standard_normal((8, 64)).astype(dtype)
    qt = quantize(w, 32)
    ref = quantize(w.astype(F32), 32)
    np.testing.assert_array_equal(qt.values, ref.values)
    np.testing.assert_array_equal(qt.scales, ref.scales)
    assert dequantize(qt).dtype == F32


def test_non_contiguous_input(rng):
    w = rng.standard_normal((64, 96)).astype(F32)
    np.testing.assert_array_equal(quantize(w.T, 32).values, quantize(w.T.copy(), 32).values)
    np.testing.assert_array_equal(quantize(w[:, ::2], 16).values,
                                  quantize(w[:, ::2].copy(), 16).values)


def test_lists_are_accepted():
    assert quantize([0.1, -0.8, 0.05, -0.02], 4).values.tolist() == [16, -127, 8, -3]


def test_all_zero_group_gets_scale_one():
    w = np.array([0, 0, 0, 0, 1, -2, 3, -4], F32)
    qt = quantize(w, 4)
    assert qt.scales.tolist() == [1.0, pytest.approx(4 / 127)]
    assert qt.values[:4].tolist() == [0, 0, 0, 0]


def test_subnormal_group_is_clipped_not_overflowed():
    w = np.array([190e-45, -1e-45, 0, 3e-45], F32)  # amax / 127 is subnormal or zero
    qt = quantize(w, 4)
    assert np.abs(qt.values.astype(int)).max() <= 127
    assert np.isfinite(qt.scales).all() and (qt.scales > 0).all()


# --- memory accounting -----------------------------------------------------------------------

@pytest.mark.parametrize("gs, scale_bytes", [(32, 512), (256, 64), (1024, 16)])
def test_memory_figures_for_4096_weights(gs, scale_bytes):
    qt = quantize(np.ones(4096, F32), gs)
    assert qt.scales_nbytes == scale_bytes
    assert qt.nbytes == 4096 + scale_bytes
    assert qt.bits_per_weight == 8 + 32 / gs


def test_compression_ratios():
    qt = quantize(np.ones((4, 128), F32), 32)
    assert qt.compression_ratio() == pytest.approx(32 / 9)
    assert qt.compression_ratio("bf16") == pytest.approx(16 / 9)
    assert qt.compression_ratio("float16") == qt.compression_ratio("bfloat16")
    with pytest.raises(ValueError, match="unknown baseline"):
        qt.compression_ratio("int4")


def test_packed_bits_accounting():
    qt = quantize(np.ones(64, F32), 32, bits=4)
    assert qt.values_nbytes == 32 and qt.nbytes == 40 and qt.bits_per_weight == 5.0
    assert qt.qmax == 7 and gqlearn.qmax_for_bits(4) == 7


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("w, exc, match", [
    (np.arange(8), TypeError, "integer dtype"),
    (np.ones(8, bool), TypeError, "boolean"),
    (np.ones(8, np.complex64), TypeError, "complex"),
    (np.float32(1.0), ValueError, "0-d"),
    (np.zeros((0, 8), F32), ValueError, "empty"),
    (np.array([1, np.nan, 0, 0], F32), ValueError, r"NaN or Inf \(first at index \(1,\)"),
    (np.array([[1, 0], [0, np.inf]], F32), ValueError, r"index \(1, 1\)"),
    (np.array(["a", "b"]), TypeError, "string"),
])
def test_bad_weights(w, exc, match):
    with pytest.raises(exc, match=match):
        quantize(w, 2 if np.ndim(w) else 1)


def test_nan_found_in_any_chunk_and_thread():
    w = np.ones((100, 64), F32)
    w[77, 5] = np.nan
    with pytest.raises(ValueError, match=r"\(77, 5\)"):
        quantize(w, 32, threads=2, chunk_elements=256)


@pytest.mark.parametrize("gs, exc, match", [
    (0, ValueError, "positive"), (-4, ValueError, "positive"), (3.0, TypeError, "integer"),
    (True, TypeError, "integer"), (5, ValueError, "choose_group_size"),
])
def test_bad_group_size(gs, exc, match):
    with pytest.raises(exc, match=match):
        quantize(np.ones(8, F32), gs)


@pytest.mark.parametrize("bits", [1, 9, 0, 8.0, "8"])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        quantize(np.ones(8, F32), 4, bits=bits)


def test_bad_rounding_and_threads():
    with pytest.raises(ValueError, match="unknown rounding 'nearest'"):
        quantize(np.ones(8, F32), 4, rounding="nearest")
    with pytest.raises(ValueError, match="threads"):
        quantize(np.ones(8, F32), 4, threads=0)
    with pytest.raises(ValueError, match="chunk_elements"):
        quantize(np.ones(8, F32), 4, chunk_elements=-1)
    with pytest.raises(TypeError, match="QuantizedTensor"):
        dequantize(np.ones(4, np.int8))


def test_quantized_tensor_validates_its_parts():
    good = quantize(np.ones((2, 8), F32), 4)
    with pytest.raises(TypeError, match="int8"):
        QuantizedTensor(good.values.astype(np.int16), good.scales, 4)
    with pytest.raises(ValueError, match="need"):
        QuantizedTensor(good.values, good.scales.reshape(-1), 4)
    with pytest.raises(ValueError, match=r"\[-7, 7\]"):
        QuantizedTensor(good.values, good.scales, 4, bits=4)
    with pytest.raises(ValueError, match="positive"):
        QuantizedTensor(good.values, np.zeros_like(good.scales), 4)
    assert "group_size=4" in repr(good)


def test_set_num_threads(monkeypatch):
    gqlearn.set_num_threads(3)
    try:
        assert gqlearn.default_threads() == 3
    finally:
        gqlearn.set_num_threads(None)
    monkeypatch.setenv("GQLEARN_NUM_THREADS", "2")
    assert gqlearn.default_threads() == 2
    monkeypatch.setenv("GQLEARN_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="GQLEARN_NUM_THREADS"):
        gqlearn.default_threads()
    with pytest.raises(ValueError):
        gqlearn.set_num_threads(0)


@pytest.mark.parametrize("reciprocal", [False, True])
def test_subnormal_scales_with_reciprocal_stay_finite(reciprocal):
    w = np.array([[1e-40, -3e-41, 0, 5e-41], [1.0, 0.5, -0.25, 0.1]], F32)
    qt = quantize(w, 4, reciprocal=reciprocal)
    # the subnormal-scale row divides, whatever the setting, as the spec does
    assert qt.values[0].tolist() == quantize_spec(w[:1], 4)[0][0].tolist()
    assert qt.values[0, 0] == 127 and qt.values[0, 2] == 0
    assert qt.values[1].tolist() == quantize(w[1:], 4, reciprocal=reciprocal).values[0].tolist()
