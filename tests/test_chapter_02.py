"""Claims the prose of notebooks/02_group_scales.ipynb relies on, computed again."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gqlearn

MIXED = np.array([10.5, -8.2, 9.1, -7.8, 0.001, -0.002, 0.0015, -0.0008], np.float32)
W8 = np.array([2.0, -1.5, 0.8, -0.3, 0.01, -0.02, 0.005, -0.001], np.float32)


def numpy_groups(w, g):
    """The chapter's cell."""
    groups = w.reshape(-1, g)
    scales = np.abs(groups).max(axis=1, keepdims=True) / 127
    q = np.clip(np.round(groups / scales), -127, 127).astype(np.int8)
    return q.reshape(w.shape), scales.ravel(), (q * scales).reshape(w.shape)


def quantize_loop(w, g):
    """The chapter's loop."""
    flat = w.ravel()
    values = np.empty(flat.size, dtype=np.int8)
    scales = np.empty(flat.size // g, dtype=np.float32)
    for i in range(flat.size // g):
        group = flat[i * g:(i + 1) * g]
        scales[i] = np.abs(group).max() / 127
        values[i * g:(i + 1) * g] = np.clip(np.round(group / scales[i]), -127, 127)
    return values.reshape(w.shape), scales


@pytest.mark.parametrize("g", [1, 4, 32, 256])
def test_numpy_cell_and_loop_equal_gqlearn_half_even(g):
    w = np.random.default_rng(g).standard_normal((8, 256)).astype(np.float32)
    values, scales, back = numpy_groups(w, g)
    qt = gqlearn.quantize(w, g, rounding="half_even")
    np.testing.assert_array_equal(values, qt.values)
    np.testing.assert_array_equal(scales, qt.scales.ravel())
    np.testing.assert_array_equal(back, gqlearn.dequantize(qt))
    v_loop, s_loop = quantize_loop(w, g)
    np.testing.assert_array_equal(v_loop, values)
    np.testing.assert_array_equal(s_loop, scales)


def _loop_half_away(w, g):
    """A plain loop, float32 steps, ties away from zero, scale 1 for an all-zero group."""
    values, scales = [], []
    for group in np.asarray(w, np.float32).reshape(-1, g):
        amax = np.float32(0)
        for x in group:
            amax = max(amax, abs(x))
        scale = amax / np.float32(127) if amax > 0 else np.float32(1)
        scale = scale if scale > 0 else np.float32(1)
        scales.append(scale)
        for x in group:
            y = np.float32(x / scale)
            t = np.trunc(y)
            values.append(int(min(max(t + np.trunc(2 * (y - t)), -127), 127)))
    return np.array(values, np.int8), np.array(scales, np.float32)


_BOUND = float(np.float32(1e30))
_weights = hnp.arrays(np.float32, st.integers(1, 8).map(lambda n: 8 * n),
                      elements=st.floats(-_BOUND, _BOUND, width=32, allow_subnormal=False)
                      .map(lambda x: 0.0 if abs(x) < 1e-30 else x))


@settings(max_examples=200, deadline=None)
@given(_weights, st.sampled_from([1, 2, 4, 8]))
def test_a_plain_loop_equals_gqlearn_default(w, g):
    values, scales = _loop_half_away(w, g)
    qt = gqlearn.quantize(w, g)
    np.testing.assert_array_equal(values, qt.values)
    np.testing.assert_array_equal(scales, qt.scales)


def test_all_zero_group_gets_scale_one():
    w = np.array([0, 0, 0, 0, 1, -2, 3, -4], np.float32)
    qt = gqlearn.quantize(w, 4)
    assert qt.scales[0] == 1.0 and (qt.values[:4] == 0).all()


def test_mixed_example_in_groups_of_four_keeps_every_weight():
    qt = gqlearn.quantize(MIXED, 4)
    assert qt.values.tolist() == [127, -99, 110, -94, 64, -127, 95, -51]
    assert (gqlearn.quantize(MIXED, 8).values[4:] == 0).all()
    back = gqlearn.dequantize(qt)
    assert (np.abs(MIXED - back) / np.abs(MIXED)).max() < 0.01


def test_rounded_scales_give_minus_96_and_64_float32_gives_minus_95_and_63():
    groups = W8.reshape(-1, 4)
    rounded = np.array([[0.0157], [0.000157]], np.float32)
    assert np.round(groups / rounded).astype(np.int8).ravel().tolist() == \
        [127, -96, 51, -19, 64, -127, 32, -6]
    assert gqlearn.quantize(W8, 4).values.tolist() == [127, -95, 51, -19, 63, -127, 32, -6]
    assert np.float32(-1.5) / np.float32(0.0157) < -95.5  # "lands beyond -95.5"
    exact = np.abs(groups).max(axis=1, keepdims=True) / 127
    assert (groups / exact)[0, 1] == -95.25  # "-1.5 x 127 / 2, a quarter past -95"
    assert 63 < (groups / exact)[1, 0] < 63.5  # "a hair below" the decimal tie


def test_the_tie_goes_either_way_in_float32():
    assert gqlearn.quantize(np.array([0.02, 0.01], np.float32), 2).values[1] == 63
    assert gqlearn.quantize(np.array([0.002, 0.001], np.float32), 2).values[1] == 64


def test_127_times_0_0827_is_not_10_51():
    assert round(127 * 0.0827, 2) == 10.5
    assert 127 * (np.float32(10.5) / 127) == np.float32(10.5)


@pytest.mark.parametrize("g", [1, 2, 4, 8, 32, 128, 256, 1024])
def test_bits_per_weight_is_8_plus_32_over_g(g):
    qt = gqlearn.quantize(np.ones((4, 1024), np.float32), g)
    assert qt.bits_per_weight == 8 + 32 / g


def test_group_size_4_halves_the_saving():
    qt = gqlearn.quantize(np.ones(1024, np.float32), 4)
    assert qt.scales_nbytes == qt.values_nbytes and qt.compression_ratio("float32") == 2
    assert gqlearn.quantize(np.ones(1024, np.float32), 32).bits_per_weight - 8 <= 1


def test_error_falls_with_group_size():
    rng = np.random.default_rng(0)
    row_std = rng.permutation(np.geomspace(1, 1e-3, 64))
    layer = (rng.standard_normal((64, 256)) * row_std[:, None]).astype(np.float32)

    def rel_error(w, b, axis=None):
        return np.sqrt(((w - b) ** 2).sum(axis) / (w ** 2).sum(axis))

    whole, worst = [], []
    for g in [4, 8, 16, 32, 64, 128, 256, layer.size]:
        back = gqlearn.dequantize(gqlearn.quantize(layer.reshape(-1, g), g)).reshape(layer.shape)
        whole.append(rel_error(layer, back))
        worst.append(rel_error(layer, back, axis=1).max())
    assert all(a < b for a, b in pairwise(whole))
    assert all(a < b for a, b in pairwise(worst))
    assert worst[-1] == 1.0 and worst[-2] < 0.01  # "from lost to fine"
    assert worst[-2] / worst[0] < 4  # "but slowly" below a row


def test_widget_example():
    from gqlearn.lessons.group_scales import SIXTEEN

    w = np.array(SIXTEEN, np.float32)
    assert (gqlearn.quantize(w, 8).values == 0).sum() == 0
    assert gqlearn.quantize(w, 8).values[8] == 85  # 0.01 in the group of small weights
    assert (gqlearn.quantize(w, 16).values == 0).sum() == 8


def test_exercise_bytes():
    qt = gqlearn.quantize(np.zeros((4096, 4096), np.float32), 128)
    assert qt.nbytes == 4096 * 4096 + 4 * 4096 * 4096 // 128
