import importlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gqlearn
from gqlearn import dequantize, qmatmul, quantize

EPS = float(np.finfo(np.float32).eps)
BACKENDS = gqlearn.available_backends()


def _check(y, x, qt):
    """|y - x @ W'.T| within the float32 error bound of a sum: (g + n/g + 4) eps sum|x||W'|,
    with W' = dequantize(qt) and the reference in float64."""
    w = dequantize(qt).astype(np.float64)
    x64 = np.atleast_2d(x).astype(np.float64)
    ref = x64 @ w.T
    mag = np.abs(x64) @ np.abs(w).T
    n, g = qt.shape[1], qt.group_size
    tol = (g + n // g + 4) * EPS * mag + 1e-30
    assert y.dtype == np.float32
    got = np.atleast_2d(y)
    assert got.shape == ref.shape
    assert (np.abs(got - ref) <= tol).all(), float(np.max(np.abs(got - ref) - tol))


@st.composite
def problems(draw):
    out = draw(st.integers(1, 40))
    g = draw(st.sampled_from([1, 2, 3, 5, 8, 16, 32]))
    n = g * draw(st.integers(1, 8))
    bits = draw(st.integers(2, 8))
    batch = draw(st.sampled_from([None, 1, 2, 3, 7, 20]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((out, n)) * rng.uniform(0.01, 10)).astype(np.float32)
    x = rng.standard_normal((n,) if batch is None else (batch, n)).astype(np.float32)
    return quantize(w, g, bits=bits), x


@given(problems(), st.sampled_from(["auto", *BACKENDS]), st.integers(1, 3))
def test_qmatmul_agrees_with_dequantized_matmul(problem, backend, threads):
    qt, x = problem
    y = qmatmul(x, qt, backend=backend, threads=threads)
    assert y.shape == (x @ dequantize(qt).T).shape
    _check(y, x, qt)


@given(problems())
def test_qmatmul_identical_for_any_thread_count_and_chunk(problem):
    qt, x = problem
    for backend in ["auto", *BACKENDS]:
        first = qmatmul(x, qt, backend=backend, threads=1, chunk_elements=7)
        for threads in (2, 3):
            # numba: rows are independent, so neither threads nor blocking matter; numpy:
            # BLAS's summation order may depend on the block's shape, so same blocks only.
            chunk = 64 if backend == "numba" else 7
            if backend == "auto" and x.ndim == 2 and x.shape[0] > 8:  # blocks decoded by
                assert np.array_equal(first, qmatmul(x, qt, backend="numpy", threads=threads,
                                                     chunk_elements=7))  # numba or numpy
            assert np.array_equal(qmatmul(x, qt, backend=backend, threads=threads,
                                          chunk_elements=chunk), first)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_qmatmul_exact_on_integers(backend, bits):
    # Values and x small integers, scales powers of two: every product and sum is exact.
    rng = np.random.default_rng(bits)
    q = rng.integers(-(2 ** (bits - 1) - 1), 2 ** (bits - 1), size=(9, 48)).astype(np.int8)
    scales = (2.0 ** rng.integers(-3, 3, size=(9, 3))).astype(np.float32)
    qt = gqlearn.QuantizedTensor(q, scales, 16, bits=bits)
    x = rng.integers(-4, 5, size=(5, 48)).astype(np.float32)
    expected = x.astype(np.float64) @ (q.reshape(9, 3, 16) * scales[:, :, None]).reshape(9, 48).T
    assert np.array_equal(qmatmul(x, qt, backend=backend), expected.astype(np.float32))
    assert np.array_equal(qmatmul(x[0], qt, backend=backend), expected[0].astype(np.float32))


def test_auto_backend_picks_numba_for_small_batches_and_blas_blocks_for_large(monkeypatch):
    module = importlib.import_module("gqlearn.qmatmul")  # the name is also the function's
    if "numba" not in BACKENDS:
        pytest.skip("needs numba")
    picked = []
    real = module._pick
    monkeypatch.setattr(module, "_pick", lambda b, n: picked.append(real(b, n)) or picked[-1])
    qt = quantize(np.ones((4, 8), np.float32), 4, bits=4)
    qmatmul(np.ones((8, 8), np.float32), qt)
    qmatmul(np.ones((9, 8), np.float32), qt)
    assert picked == ["numba", "numpy"]


def test_qmatmul_large_row_count_against_blas():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((300, 256)).astype(np.float32)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    for bits in (4, 8):
        qt = quantize(w, 32, bits=bits)
        for backend in BACKENDS:
            _check(qmatmul(x, qt, backend=backend), x, qt)


def test_qmatmul_accepts_float16_and_float64_x():
    qt = quantize(np.eye(8, dtype=np.float32), 8)
    for dtype in (np.float16, np.float64):
        y = qmatmul(np.arange(8, dtype=dtype), qt)
        assert y.dtype == np.float32 and y.tolist() == list(range(8))


def test_qmatmul_errors():
    qt = quantize(np.ones((4, 8), np.float32), 4)
    with pytest.raises(ValueError, match=r"needs \(8,\) or \(batch, 8\)"):
        qmatmul(np.ones(7, np.float32), qt)
    with pytest.raises(ValueError, match="needs"):
        qmatmul(np.ones((2, 2, 8), np.float32), qt)
    with pytest.raises(TypeError, match="floating point"):
        qmatmul(np.ones(8, np.int32), qt)
    with pytest.raises(TypeError, match="QuantizedTensor"):
        qmatmul(np.ones(8, np.float32), np.ones((4, 8), np.float32))
    with pytest.raises(ValueError, match="2-D weight"):
        qmatmul(np.ones(8, np.float32), quantize(np.ones((2, 4, 8), np.float32), 4))
    with pytest.raises(ValueError, match="unknown backend"):
        qmatmul(np.ones(8, np.float32), qt, backend="cuda")


def test_qmatmul_empty_batch():
    qt = quantize(np.ones((4, 8), np.float32), 4, bits=4)
    assert qmatmul(np.ones((0, 8), np.float32), qt).shape == (0, 4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size,n_groups", [(16, 3), (32, 1), (32, 7), (32, 8), (32, 19),
                                                 (64, 3), (64, 9), (96, 3), (128, 3),
                                                 (256, 2), (512, 2)])
def test_qmatmul_exact_on_integers_for_each_group_size(backend, bits, group_size, n_groups):
    # The explicit vector code takes 4 bits with groups of 32/64/128/256 and 8 bits with
    # groups of 16/32/64/128 (calls of 8/4/2/1 groups, then single-group tails); the other
    # sizes the loops.  Every value -qmax..qmax occurs (as many as fit); small integer x and
    # power-of-two scales make every product and sum exact.
    rng = np.random.default_rng(group_size * 100 + n_groups + bits)
    n, qmax = group_size * n_groups, 2 ** (bits - 1) - 1
    q = rng.integers(-qmax, qmax + 1, size=(5, n)).astype(np.int8)
    every = np.arange(-qmax, qmax + 1)[:q.size]
    q.reshape(-1)[:every.size] = every
    scales = (2.0 ** rng.integers(-3, 3, size=(5, n_groups))).astype(np.float32)
    qt = gqlearn.QuantizedTensor(q, scales, group_size, bits=bits)
    x = rng.integers(-4, 5, size=(3, n)).astype(np.float32)
    w = (q.reshape(5, n_groups, group_size) * scales[:, :, None]).reshape(5, n)
    expected = (x.astype(np.float64) @ w.T).astype(np.float32)
    assert np.array_equal(qmatmul(x, qt, backend=backend), expected)
    assert np.array_equal(qmatmul(x[1], qt, backend=backend), expected[1])


@given(st.integers(1, 12), st.sampled_from([16, 32, 64, 128, 256]), st.integers(1, 20),
       st.integers(1, 8), st.sampled_from([4, 8]), st.integers(0, 2**32 - 1))
def test_qmatmul_vector_path_agrees_and_rows_are_independent(out, g, n_groups, batch, bits,
                                                             seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((out, g * n_groups)) * rng.uniform(0.01, 10)).astype(np.float32)
    x = rng.standard_normal((batch, g * n_groups)).astype(np.float32)
    qt = quantize(w, g, bits=bits)
    for backend in BACKENDS:
        y = qmatmul(x, qt, backend=backend)
        _check(y, x, qt)
    if "numba" in BACKENDS:
        y = qmatmul(x, qt, backend="numba", threads=1)
        assert np.array_equal(qmatmul(x, qt, backend="numba", threads=3), y)
        # Each (row of x, row of w) pair is computed the same way whatever else is in the call.
        assert np.array_equal(qmatmul(x[-1], qt, backend="numba"), y[-1])
        part = gqlearn.QuantizedTensor(qt.values[-1:], qt.scales[-1:], g, bits=bits)
        assert np.array_equal(qmatmul(x, part, backend="numba")[:, 0], y[:, -1])
