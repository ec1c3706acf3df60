"""Claims the prose of notebooks/03_measuring_error.ipynb relies on, computed independently."""

import numpy as np
import pytest

import gqlearn
from gqlearn import formats, synthetic

SHAPE = (512, 4096)
STD = synthetic.DEFAULT_STD


@pytest.fixture(scope="module")
def mats():
    return {k: synthetic.make_weights(k, SHAPE, seed=0) for k in synthetic.DISTRIBUTIONS}


def _mse_ratio(w, g, bits):
    qt = gqlearn.quantize(w, g, bits=bits)
    predicted = np.mean((g - 1) / g * qt.scales.astype(np.float64) ** 2 / 12)
    return gqlearn.error_report(w, qt).mse / predicted


def _sqnr(v, v_hat):
    v, err = v.astype(np.float64), (v - v_hat).astype(np.float64)
    return 10 * np.log10(np.sum(v ** 2) / np.sum(err ** 2))


def _zero_point(v, g, bits):
    groups = v.reshape(-1, g)
    lo = groups.min(axis=1, keepdims=True)
    scale = (groups.max(axis=1, keepdims=True) - lo) / (2 ** bits - 1)
    q = np.clip(np.floor((groups - lo) * (1 / scale) + 0.5), 0, 2 ** bits - 1)
    return q.astype(np.uint8).reshape(v.shape), (q * scale + lo).reshape(v.shape)


def test_same_std_and_heavier_tails(mats):
    for k in ("gaussian", "laplace", "student_t"):
        assert mats[k].std() == pytest.approx(STD, rel=0.01)
    peak = {k: np.abs(w).max() for k, w in mats.items()}
    assert peak["gaussian"] < peak["laplace"] < peak["student_t"]


def test_metrics_match_error_report_and_sqnr_is_relative_error_in_db(mats):
    w = mats["gaussian"]
    qt = gqlearn.quantize(w, 64)
    rep = gqlearn.error_report(w, qt)
    e = (w - qt.dequantize()).astype(np.float64)
    assert np.abs(e).max() == rep.max_abs_error
    assert np.mean(e ** 2) == pytest.approx(rep.mse, rel=1e-12)
    assert rep.sqnr_db == pytest.approx(-20 * np.log10(rep.relative_frobenius_error), rel=1e-9)
    assert rep.max_abs_error <= qt.scales.max() / 2 * (1 + 1e-6)  # at most half a step


def test_scale_sq_over_12_at_8_bits(mats):
    w = mats["gaussian"]
    for g in (4, 16, 64, 256, 4096):
        assert _mse_ratio(w, g, 8) == pytest.approx(1.0, abs=0.002)  # a fraction of a percent
    # without the (g - 1)/g factor, groups of 4 would be predicted a third too high
    qt = gqlearn.quantize(w, 4)
    naive = np.mean(qt.scales.astype(np.float64) ** 2 / 12)
    assert naive / gqlearn.error_report(w, qt).mse == pytest.approx(4 / 3, rel=0.01)


def test_model_breaks_at_few_bits_heavy_tails_first(mats):
    r = {(k, b): _mse_ratio(w, 128, b) for k, w in mats.items() for b in (8, 4, 3, 2)}
    assert all(abs(r[(k, 8)] - 1) < 0.01 for k in mats)
    for b in (4, 3, 2):
        assert min(r[(k, b)] for k in mats) == r[("outliers", b)]
        assert all(r[(k, b)] < r[("gaussian", b)] + 1e-3 for k in mats)
        assert all(r[(k, b)] < 1 for k in ("laplace", "student_t", "outliers"))


def test_tails_cost_with_large_groups(mats):
    for b in (8, 4):
        s32 = [gqlearn.error_report(w, gqlearn.quantize(w, 32, bits=b)).sqnr_db
               for w in mats.values()]
        row = [gqlearn.error_report(w, gqlearn.quantize(w, 4096, bits=b)).sqnr_db
               for w in mats.values()]
        assert row == sorted(row, reverse=True)  # gaussian > laplace > student_t > outliers
        assert np.ptp(s32) < np.ptp(row) / 3     # close with groups of 32


def test_single_outlier():
    rows = synthetic.gaussian((256, 4096), seed=1)
    spiked = rows.copy()
    spiked[:, 1000] = 20 * STD
    ratios, group_factor, own_max = {}, {}, {}
    for g in (32, 4096):
        clean, spike = (gqlearn.error_report(x, gqlearn.quantize(x, g)) for x in (rows, spiked))
        ratios[g] = spike.mse / clean.mse
        group_factor[g] = (spike.group_mse[:, 1000 // g].mean()
                           / clean.group_mse[:, 1000 // g].mean())
        assert group_factor[g] > 10
        k = 1000 // g
        own_max[g] = np.abs(rows[:, k * g:(k + 1) * g]).max(axis=1).mean()
    assert ratios[32] < 2 and ratios[4096] > 10
    # "the spike multiplies the scale more for a group of 32, whose own largest weight is smaller"
    assert group_factor[32] > group_factor[4096] and own_max[32] < own_max[4096]


def test_histogram_clips_the_longest_tails():
    mats = {k: synthetic.make_weights(k, SHAPE, seed=0) for k in synthetic.DISTRIBUTIONS}
    assert any(np.abs(w).max() > 25 * STD for w in mats.values())  # "beyond ±25 are off the chart"


def test_outlier_groups_lose_most_weights_to_zero():
    om = synthetic.outlier_columns(SHAPE, seed=0)
    qt = gqlearn.quantize(om.weights, 128, bits=4)
    groups = om.weights.reshape(SHAPE[0], -1, 128)
    zeroed = ((qt.values.reshape(groups.shape) == 0) & (groups != 0)).mean(axis=(0, 2))
    hit = np.zeros(zeroed.size, bool)
    hit[om.columns // 128] = True
    assert zeroed[hit].min() > 0.5 > 2 * zeroed[~hit].max()


def test_outlier_cost_to_ordinary_weights_grows_with_group_size():
    om = synthetic.outlier_columns(SHAPE, seed=0)
    ordinary = np.ones(SHAPE[1], bool)
    ordinary[om.columns] = False
    cost = []
    for g in (32, 128, 4096):
        mse = [np.mean((x - gqlearn.quantize(x, g).dequantize())[:, ordinary]
                       .astype(np.float64) ** 2) for x in (om.weights, om.base)]
        cost.append(mse[0] / mse[1])
    assert cost == sorted(cost) and cost[0] > 1 and cost[-1] > 10 * cost[0]


def test_zero_point_matches_library_and_when_it_helps(mats):
    w = mats["gaussian"]
    for bits in (8, 4, 3):
        q, w_hat = _zero_point(w, 64, bits)
        ref = formats.quantize_minmax(w, 64, bits=bits, scale_dtype=np.float32)
        assert np.array_equal(q, ref.codes)
        assert np.array_equal(w_hat, formats.dequantize_minmax(ref))
    x = synthetic.gaussian(SHAPE, std=1.0, seed=2)
    gelu = (0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))).astype(
        np.float32)
    cases = {"gaussian": w, "shifted": w + STD, "relu": np.maximum(x, 0), "gelu": gelu}
    gain = {}
    for name, v in cases.items():
        for bits in (8, 4, 3):
            absmax = _sqnr(v, gqlearn.quantize(v, 64, bits=bits).dequantize())
            zp64, zp128 = (_sqnr(v, _zero_point(v, g, bits)[1]) for g in (64, 128))
            assert zp64 > zp128
            gain[(name, bits)] = zp128 - absmax  # at equal storage
    for name in ("shifted", "relu", "gelu"):
        assert all(gain[(name, b)] > 2 for b in (8, 4, 3))  # wins clearly, even at equal storage
    assert abs(gain[("gaussian", 8)]) < 0.3                   # next to nothing
    assert gain[("gaussian", 8)] < gain[("gaussian", 4)] < gain[("gaussian", 3)]
    assert 16 == 2 ** 4 and 2 * gqlearn.qmax_for_bits(4) + 1 == 15  # 16 levels instead of 15
