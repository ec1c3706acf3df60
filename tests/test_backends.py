"""The fused numba kernel and the numpy path give bit-identical results."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gqlearn
from gqlearn import dequantize, metrics, quantize

from reference import near_ties

pytest.importorskip("numba")

F32 = np.float32


@st.composite
def cases(draw):
    gs = draw(st.sampled_from([1, 2, 3, 4, 8, 32, 64, 96]))
    rows = draw(st.integers(1, 40))
    per_row = draw(st.integers(1, 4))
    w = draw(hnp.arrays(F32, (rows, gs * per_row),
                        elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=True)))
    return w, gs, draw(st.integers(2, 8)), draw(st.sampled_from(["half_away", "half_even"])), \
        draw(st.booleans())


@given(cases(), st.integers(1, 3))
def test_backends_bit_identical(case, threads):
    w, gs, bits, rounding, reciprocal = case
    kw = dict(bits=bits, rounding=rounding, reciprocal=reciprocal, threads=threads)
    a = quantize(w, gs, backend="numpy", **kw)
    b = quantize(w, gs, backend="numba", **kw)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.scales, b.scales)
    np.testing.assert_array_equal(dequantize(a, backend="numpy"), dequantize(b, backend="numba"))
    ra = metrics.error_report(w, a)
    rb = metrics.error_report(w, b, backend="numba")
    np.testing.assert_array_equal(ra.group_max_error, rb.group_max_error)
    assert ra.n_zeroed == rb.n_zeroed
    np.testing.assert_allclose(ra.group_mse, rb.group_mse, rtol=1e-12, atol=0)


@pytest.mark.parametrize("rounding", ["half_away", "half_even"])
@pytest.mark.parametrize("reciprocal", [False, True])
def test_backends_agree_at_ties(rng, rounding, reciprocal):
    w = near_ties(rng, 3000)
    kw = dict(rounding=rounding, reciprocal=reciprocal)
    np.testing.assert_array_equal(quantize(w, 32, backend="numpy", **kw).values,
                                  quantize(w, 32, backend="numba", **kw).values)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float64])
def test_numba_other_dtypes(rng, dtype):
    w = rng.standard_normal((300, 64)).astype(dtype)
    a = quantize(w, 32, backend="numpy")
    b = quantize(w, 32, backend="numba", chunk_elements=1000)
    np.testing.assert_array_equal(a.values, b.values)


def test_numba_reports_nan(rng):
    w = rng.standard_normal((50, 64)).astype(F32)
    w[31, 7] = np.inf
    with pytest.raises(ValueError, match=r"\(31, 7\)"):
        quantize(w, 32, backend="numba")


def test_backend_selection():
    assert gqlearn.available_backends() == ["numpy", "numba"]
    with pytest.raises(ValueError, match="unknown backend"):
        quantize(np.ones(8, F32), 4, backend="cuda")
    with pytest.raises(ValueError, match="unknown backend"):
        metrics.error_report(np.ones(8, F32), quantize(np.ones(8, F32), 4), backend="cuda")
