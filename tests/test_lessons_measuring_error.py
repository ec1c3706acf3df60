"""Chapter 03 support: plots and the widget build; checkers accept right answers, reject wrong
ones with a hint, and never print the expected value."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

import gqlearn
from gqlearn import synthetic
from gqlearn.lessons import measuring_error as me

SMALL = (64, 1024)


def test_plots_build():
    mats = {k: synthetic.make_weights(k, SMALL) for k in synthetic.DISTRIBUTIONS}
    qt = gqlearn.quantize(mats["gaussian"], 32)
    pred = 31 / 32 * qt.scales.astype(np.float64).ravel() ** 2 / 12
    meas = gqlearn.error_report(mats["gaussian"], qt).group_mse.ravel()
    figs = [me.plot_distributions(mats), me.plot_theory(pred, meas, 32),
            me.plot_outliers(synthetic.outlier_columns(SMALL), group_size=64, bits=4),
            me.explore_static("laplace", 20, 4, 64)]
    for f in figs:
        assert f.axes
        plt.close(f)
    # the zeroed-per-group panel is on a log axis, so outlier groups do not flatten the rest
    f = me.plot_outliers(synthetic.outlier_columns(SMALL), group_size=64, bits=4)
    assert f.axes[2].get_yscale() == "log"
    plt.close(f)


def test_explore_widget_hides_outlier_control():
    pytest.importorskip("ipywidgets")
    w = me.explore()
    assert repr(w).startswith("[explore: an interactive widget")
    dist, strength = w.children[0], w.children[1]
    assert dist.value == "outliers" and not strength.disabled
    dist.value = "gaussian"
    assert strength.disabled
    dist.value = "outliers"
    assert not strength.disabled
    plt.close("all")


def _right_sqnr(w, w_hat):
    w64 = np.asarray(w, np.float64)
    return 10 * np.log10(np.sum(w64 ** 2) / np.sum((w64 - w_hat) ** 2))


def test_check_sqnr_db():
    assert me.check_sqnr_db(_right_sqnr)
    cases = [(lambda w, h: None, "returned None"),
             (lambda w, h: _right_sqnr(w, h) / 2, "half"),
             (lambda w, h: 2 * _right_sqnr(w, h), "twice"),
             (lambda w, h: -_right_sqnr(w, h), "sign"),
             (lambda w, h: 10 ** (_right_sqnr(w, h) / 10), "ratio itself"),
             (lambda w, h: 1 / 0, "raised ZeroDivisionError"),
             (lambda w, h: "x", "return one number"),
             (lambda w, h: 42.0, "Hint")]
    for fn, hint in cases:
        fb = me.check_sqnr_db(fn)
        assert not fb and hint in fb.message, (hint, fb)


def _right_mse(scales, g):
    return float(np.mean((g - 1) / g * np.asarray(scales, np.float64) ** 2 / 12))


def test_check_predicted_mse():
    assert me.check_predicted_mse(_right_mse)
    cases = [(lambda s, g: None, "returned None"),
             (lambda s, g: _right_mse(s, g) * g / (g - 1), "(g − 1)/g"),
             (lambda s, g: _right_mse(s, g) * 12, "divide by 12"),
             (lambda s, g: (g - 1) / g * float(np.mean(s.astype(np.float64))) ** 2 / 12,
              "not the square of the average"),
             (lambda s, g: 1e-3, "another value")]
    for fn, hint in cases:
        fb = me.check_predicted_mse(fn)
        assert not fb and hint in fb.message, (hint, fb)


def test_checkers_never_reveal_the_expected_value():
    rng = np.random.default_rng(3)  # the checker's first trial
    shape = (int(rng.integers(2, 9)), 32 * int(rng.integers(1, 5)))
    w = (rng.standard_normal(shape) * rng.uniform(0.01, 2)).astype(np.float32)
    expected = gqlearn.error_report(w, gqlearn.quantize(w, 32)).sqnr_db
    message = me.check_sqnr_db(lambda w, h: 0.0).message
    assert all(format(expected, f) not in message for f in (".1f", ".2f", ".3f", ".4g"))
    w = synthetic.laplace((64, 1024), seed=int(np.random.default_rng(5).integers(100)))
    expected = _right_mse(gqlearn.quantize(w, 4).scales, 4)
    message = me.check_predicted_mse(lambda s, g: 1.0).message
    assert all(format(expected, f) not in message for f in (".2e", ".3e", ".4e", ".3g"))
