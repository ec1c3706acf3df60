import numpy as np
import pytest

from gqlearn import synthetic


@pytest.mark.parametrize("fn", [synthetic.gaussian, synthetic.laplace, synthetic.student_t])
@pytest.mark.parametrize("shape", [(1000,), (64, 512), (2, 3, 256)])
def test_dtype_shape_and_std(fn, shape):
    w = fn(shape, std=0.05, seed=1)
    assert w.dtype == np.float32 and w.shape == shape
    if w.size >= 10_000:
        assert abs(float(w.std()) - 0.05) < 0.005
        assert abs(float(w.mean())) < 0.005


@pytest.mark.parametrize("fn", [synthetic.gaussian, synthetic.laplace, synthetic.student_t])
def test_seeded(fn):
    a, b, c = fn((32, 64), seed=7), fn((32, 64), seed=7), fn((32, 64), seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_heavier_tails_than_gaussian():
    shape = (256, 4096)

    def kurtosis(w):
        x = w.astype(np.float64).ravel()
        return float(np.mean(x**4) / np.mean(x**2) ** 2)

    kg = kurtosis(synthetic.gaussian(shape))
    kl = kurtosis(synthetic.laplace(shape))
    kt = kurtosis(synthetic.student_t(shape, df=5))
    assert abs(kg - 3) < 0.1
    assert abs(kl - 6) < 0.5  # Laplace excess kurtosis is 3
    assert kt > kg + 1.5      # t(5) has kurtosis 9 in theory; sample value is noisy but large


def test_outlier_columns_where_and_how_big():
    om = synthetic.outlier_columns((128, 1024), n_columns=5, strength=30, seed=2)
    assert om.weights.dtype == np.float32 and om.columns.dtype == np.int64
    assert om.columns.size == 5 and np.all(np.diff(om.columns) > 0)
    changed = np.flatnonzero((om.weights != om.base).any(axis=0))
    np.testing.assert_array_equal(changed, om.columns)
    np.testing.assert_array_equal(om.base, synthetic.gaussian((128, 1024), seed=2))
    big = om.weights[:, om.columns].std()
    assert 25 * 0.02 < big < 35 * 0.02
    # the largest column maxima are exactly the outlier columns
    colmax = np.abs(om.weights).max(axis=0)
    np.testing.assert_array_equal(np.sort(np.argsort(colmax)[-5:]), om.columns)
    assert om.mask.sum() == 128 * 5 and om.mask[:, om.columns].all()


def test_outlier_base_independent_of_outlier_parameters():
    a = synthetic.outlier_columns((16, 256), n_columns=2, strength=10, seed=3)
    b = synthetic.outlier_columns((16, 256), n_columns=6, strength=50, seed=3)
    np.testing.assert_array_equal(a.base, b.base)


def test_zero_outlier_columns():
    om = synthetic.outlier_columns((8, 64), n_columns=0)
    assert om.columns.size == 0
    np.testing.assert_array_equal(om.weights, om.base)


@pytest.mark.parametrize("kind", synthetic.DISTRIBUTIONS)
def test_make_weights(kind):
    w = synthetic.make_weights(kind, (16, 128), seed=4)
    assert w.shape == (16, 128) and w.dtype == np.float32
    np.testing.assert_array_equal(w, synthetic.make_weights(kind, (16, 128), seed=4))


@pytest.mark.parametrize("call, match", [
    (lambda: synthetic.gaussian((0, 4)), "shape"),
    (lambda: synthetic.gaussian(()), "shape"),
    (lambda: synthetic.gaussian((4, 2.5)), "shape"),
    (lambda: synthetic.gaussian(8, std=0), "std"),
    (lambda: synthetic.laplace(8, std=float("nan")), "std"),
    (lambda: synthetic.student_t(8, df=2), "df"),
    (lambda: synthetic.outlier_columns((4, 8, 2)), "rows, cols"),
    (lambda: synthetic.outlier_columns((4, 8), n_columns=9), "n_columns"),
    (lambda: synthetic.outlier_columns((4, 8), n_columns=True), "n_columns"),
    (lambda: synthetic.outlier_columns((4, 8), strength=-1), "strength"),
    (lambda: synthetic.make_weights("uniform"), "unknown kind"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_defaults_are_the_named_constants():
    shape = (64, 256)
    np.testing.assert_array_equal(
        synthetic.student_t(shape), synthetic.student_t(shape, df=synthetic.DEFAULT_DF))
    a = synthetic.outlier_columns(shape)
    b = synthetic.outlier_columns(shape, n_columns=synthetic.DEFAULT_N_COLUMNS,
                                  strength=synthetic.DEFAULT_STRENGTH, std=synthetic.DEFAULT_STD)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.columns.size == synthetic.DEFAULT_N_COLUMNS
    ratio = a.weights[:, a.columns].std() / a.base.std()
    assert abs(ratio / synthetic.DEFAULT_STRENGTH - 1) < 0.1
