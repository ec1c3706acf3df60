import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gqlearn import dequantize, metrics, quantize

F32 = np.float32


def test_group_max_error_worked_example():
    w = np.array([2.0, -1.5, 0.8, -0.3, 0.01, -0.02, 0.005, -0.001], F32)
    qt = quantize(w, 4)
    deq = qt.values.astype(F32) * np.repeat(qt.scales, 4)
    expected = np.abs(deq - w).reshape(2, 4).max(axis=1)
    np.testing.assert_array_equal(metrics.error_report(w, qt).group_max_error, expected)
    # group 0's worst weight is -1.5 (error about 0.004, not the 0.007 hand-rounded scales give)
    assert np.argmax(np.abs(deq - w)[:4]) == 1


def test_zeroed_fraction_of_the_mixed_example():
    w = np.array([10.5, -8.2, 9.1, -7.8, 0.001, -0.002, 0.0015, -0.0008], F32)
    rep = metrics.error_report(w, quantize(w, 8))
    assert rep.zeroed_fraction == 0.5 and rep.n_zeroed == 4
    assert metrics.error_report(w, quantize(w, 4)).zeroed_fraction == 0.0


@given(hnp.arrays(F32, st.tuples(st.integers(1, 5), st.sampled_from([8, 24, 64])),
                  elements=st.floats(-50, 50, width=32, allow_subnormal=False)),
       st.sampled_from([2, 4, 8]))
def test_metrics_match_a_direct_computation(w, gs):
    qt = quantize(w, gs)
    rep = metrics.error_report(w, qt)
    err = dequantize(qt).astype(np.float64) - w
    assert rep.max_abs_error == pytest.approx(np.abs(err).max(), rel=1e-6, abs=0)
    assert rep.mse == pytest.approx(np.mean(err ** 2), rel=1e-6, abs=1e-300)
    np.testing.assert_allclose(rep.group_mse, (err ** 2).reshape(qt.scales.shape + (gs,)).mean(-1),
                               rtol=1e-6, atol=1e-300)
    sig = np.sum(w.astype(np.float64) ** 2)
    if sig > 0 and np.sum(err ** 2) > 0:
        assert rep.sqnr_db == pytest.approx(10 * np.log10(sig / np.sum(err ** 2)), rel=1e-6)
        assert rep.relative_frobenius_error == pytest.approx(np.sqrt(np.sum(err ** 2) / sig),
                                                             rel=1e-6)
    nz = w != 0
    assert rep.zeroed_fraction == (np.count_nonzero(nz & (qt.values == 0)) / nz.sum()
                                   if nz.any() else 0)


def test_metrics_do_not_depend_on_threads(rng):
    w = rng.standard_normal((256, 512)).astype(F32)
    qt = quantize(w, 64)
    a = metrics.error_report(w, qt, threads=1)
    b = metrics.error_report(w, qt, threads=2, chunk_elements=3000)
    np.testing.assert_array_equal(a.group_max_error, b.group_max_error)
    np.testing.assert_array_equal(a.group_mse, b.group_mse)
    assert a.summary() == b.summary()


def test_large_groups_split_in_pieces(rng):
    w = rng.standard_normal((1, 50_000)).astype(F32)
    qt = quantize(w, w.size)
    a = metrics.error_report(w, qt)
    b = metrics.error_report(w, qt, chunk_elements=777)
    assert a.max_abs_error == b.max_abs_error
    assert a.mse == pytest.approx(b.mse, rel=1e-12)


def test_exact_reconstruction_and_all_zero():
    w = np.array([127.0, -64.0, 1.0, 0.0], F32)  # scale 1: exact
    rep = metrics.error_report(w, quantize(w, 4))
    assert rep.mse == 0 and rep.sqnr_db == float("inf") and rep.relative_frobenius_error == 0
    zero = np.zeros(8, F32)
    rep = metrics.error_report(zero, quantize(zero, 4))
    assert rep.zeroed_fraction == 0 and rep.mse == 0


def test_metric_errors(rng):
    w = rng.standard_normal((4, 32)).astype(F32)
    qt = quantize(w, 8)
    with pytest.raises(ValueError, match="shape"):
        metrics.error_report(w[:2], qt)
    with pytest.raises(TypeError, match="QuantizedTensor"):
        metrics.error_report(w, w)
    bad = w.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.error_report(bad, qt)
