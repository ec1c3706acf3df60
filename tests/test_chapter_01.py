"""Claims the prose of notebooks/01_single_scale.ipynb relies on, computed again."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

import gqlearn


def per_tensor(w, **kwargs):
    w = np.asarray(w, dtype=np.float32)
    return gqlearn.quantize(w.reshape(1, -1), group_size=w.size, **kwargs)


def numpy_absmax(w):
    """The chapter's five lines."""
    scale = np.abs(w).max() / 127
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale, q * scale


@pytest.mark.parametrize("seed", range(5))
def test_the_numpy_cell_equals_gqlearn_half_even(seed):
    w = np.random.default_rng(seed).standard_normal((7, 33)).astype(np.float32)
    q, scale, back = numpy_absmax(w)
    qt = per_tensor(w, rounding="half_even")
    np.testing.assert_array_equal(q, qt.values.reshape(w.shape))
    assert scale == qt.scales.ravel()[0] == np.float32(np.abs(w).max()) / np.float32(127)
    np.testing.assert_array_equal(back, gqlearn.dequantize(qt).reshape(w.shape))
    assert np.abs(w - back).max() <= scale / 2


def test_four_weights_error_within_half_a_step_and_the_largest_exact():
    w = np.array([0.1, -0.8, 0.05, -0.02], np.float32)
    q, scale, back = numpy_absmax(w)
    assert q.tolist() == [16, -127, 8, -3]
    assert back[1] == w[1]
    assert np.abs(w - back).max() <= scale / 2
    assert per_tensor(w).nbytes == 8 and w.nbytes == 16  # the scale costs as much as the values


def test_hand_picked_scale_gives_other_integers():
    w4 = np.array([0.123456, -0.567890, 0.234567, -0.345678], np.float32)
    q = np.round(w4 / np.float32(0.005)).astype(np.int8)
    claimed = np.array([25, -115, 47, -70])
    assert q.tolist() == [25, -114, 47, -69]
    assert np.flatnonzero(q != claimed).tolist() == [1, 3]  # "the second and fourth"
    assert np.abs(q - claimed).max() == 1  # "off by one"
    assert np.abs(q).max() < 120  # "well below 127"
    absmax = np.round(w4 / (np.abs(w4).max() / 127)).astype(np.int8)
    assert np.abs(absmax).max() == 127


def test_mixed_example_loses_its_four_small_weights():
    w = np.array([10.5, -8.2, 9.1, -7.8, 0.001, -0.002, 0.0015, -0.0008], np.float32)
    qt = per_tensor(w)
    q = qt.values.ravel()
    assert (q[4:] == 0).all() and (q[:4] != 0).all()
    assert qt.scales.ravel()[0] / 2 == pytest.approx(10.5 / 254)


def test_without_groups_two_small_weights_survive_as_plus_minus_one():
    w8 = np.array([2.0, -1.5, 0.8, -0.3, 0.01, -0.02, 0.005, -0.001], np.float32)
    qt = per_tensor(w8)
    assert qt.values.ravel()[4:].tolist() == [1, -1, 0, 0]
    back = gqlearn.dequantize(qt).ravel()
    assert back[4] == qt.scales.ravel()[0]  # 0.01 comes back as one full step
    assert abs(back[4] - w8[4]) / w8[4] > 0.5  # "far from its value"


def _layer(ratio):
    rng = np.random.default_rng(0)
    row_std = rng.permutation(np.geomspace(1, 1 / ratio, 64))
    return (rng.standard_normal((64, 256)) * row_std[:, None]).astype(np.float32)


def rel_error(w, w_back, axis=None):
    return np.sqrt(((w - w_back) ** 2).sum(axis) / (w ** 2).sum(axis))


def test_layer_one_scale_hides_a_lost_row():
    layer = _layer(1e3)
    back = gqlearn.dequantize(per_tensor(layer)).reshape(layer.shape)
    assert rel_error(layer, back) < 0.05  # "looks harmless"
    assert rel_error(layer, back, axis=1).max() == 1.0  # "destroyed"


def test_ratio_sweep():
    ratios = np.geomspace(1, 1e5, 11)
    zeroed, whole, worst, per_row = [], [], [], []
    for ratio in ratios:
        layer = _layer(ratio)
        one = gqlearn.dequantize(per_tensor(layer)).reshape(layer.shape)
        rows = gqlearn.dequantize(gqlearn.quantize(layer, 256))
        zeroed.append(np.mean((one == 0) & (layer != 0)))
        whole.append(rel_error(layer, one))
        worst.append(rel_error(layer, one, axis=1).max())
        per_row.append(rel_error(layer, rows, axis=1).max())
    assert all(a < b for a, b in pairwise(zeroed))  # "climbs with the ratio"
    assert worst[-1] == 1.0 and worst[0] < 0.02 and sum(e == 1 for e in worst) == 6
    assert max(whole) / whole[0] < 3  # "barely moves"
    # one scale per row: the worst row stays where it was at ratio 1
    assert max(per_row) - min(per_row) < 1e-6


def test_widget_default_loses_two_of_the_four_small_weights():
    w = np.array([10.5, -8.2, 9.1, -7.8], np.float64) * 0.3 / 10.5
    w = np.concatenate([w, [0.001, -0.002, 0.0015, -0.0008]]).astype(np.float32)
    assert (per_tensor(w).values.ravel()[4:] == 0).sum() == 2


def test_ties_np_round_to_even_gqlearn_away_from_zero():
    # max 127 makes the scale exactly 1: w / scale = w, ties at k + 0.5 exactly
    w = np.array([127.0, 0.5, -0.5, 1.5, -2.5, 62.5, -63.5, 126.5], np.float32)
    assert per_tensor(w).values.ravel().tolist() == [127, 1, -1, 2, -3, 63, -64, 127]
    assert per_tensor(w, rounding="half_even").values.ravel().tolist() == \
        np.round(w).astype(np.int8).tolist() == [127, 0, 0, 2, -2, 62, -64, 126]
