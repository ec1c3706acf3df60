"""Synthetic, LLM-like weight matrices for experiments: seeded, float32, fast to make.

Trained transformer weights are roughly zero-mean with a standard deviation of a few hundredths,
their distribution has heavier tails than a Gaussian, and a few *channels* (input features, so
columns of a ``(out_features, in_features)`` matrix) carry values tens of times larger than the
rest (Dettmers et al., "LLM.int8()", 2022).  The generators here give each of those traits on
its own, so a chapter can show what each one does to group-wise quantization:

* :func:`gaussian` - the benign case;
* :func:`laplace` and :func:`student_t` - heavy tails, scaled to the same standard deviation;
* :func:`outlier_columns` - a Gaussian matrix with a few large columns, returned with where
  they are;
* :func:`make_weights` - any of them by name.

Every generator takes a ``seed`` and uses ``np.random.default_rng(seed)``, so the same call
gives the same matrix.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

__all__ = ["DEFAULT_STD", "DEFAULT_DF", "DEFAULT_N_COLUMNS", "DEFAULT_STRENGTH", "DISTRIBUTIONS",
           "OutlierMatrix", "gaussian", "laplace", "student_t", "outlier_columns", "make_weights"]

DEFAULT_STD = 0.02
"""Weight standard deviation: LLaMA's ``initializer_range`` (its ``config.json``), and the order of
magnitude of trained projection weights (a few hundredths)."""

DEFAULT_DF = 4.0
"""Degrees of freedom of :func:`student_t`: the variance is finite, the fourth moment (kurtosis)
is not, so the tails are heavy."""

DEFAULT_N_COLUMNS = 4
"""Outlier columns in :func:`outlier_columns`: a handful, as LLM.int8() observed."""

DEFAULT_STRENGTH = 20.0
"""Ratio of an outlier column's standard deviation to the others' in :func:`outlier_columns`."""

DISTRIBUTIONS = ("gaussian", "laplace", "student_t", "outliers")


class OutlierMatrix(NamedTuple):
    """A weight matrix with outlier columns, and where they are.

    Attributes
    ----------
    weights : numpy.ndarray
        float32, shape ``(rows, cols)``.
    columns : numpy.ndarray
        Sorted int64 indices of the outlier columns.
    base : numpy.ndarray
        The same matrix before the outlier columns were written: ``weights`` and ``base`` differ
        only in ``columns``.
    """

    weights: np.ndarray
    columns: np.ndarray
    base: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """Boolean array, ``True`` at every weight in an outlier column."""
        m = np.zeros(self.weights.shape, dtype=bool)
        m[:, self.columns] = True
        return m


def _shape(shape: int | tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral):
        shape = (int(shape),)
    shape = tuple(shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0
                        for s in shape):
        raise ValueError(f"shape must be positive integers, got {shape!r}")
    return tuple(int(s) for s in shape)


def _std(std: float) -> float:
    if not np.isfinite(std) or std <= 0:
        raise ValueError(f"std must be positive and finite, got {std!r}")
    return float(std)


def gaussian(shape: int | tuple[int, ...], std: float = DEFAULT_STD,
             seed: int = 0) -> np.ndarray:
    """Normal weights with mean 0 and standard deviation ``std``, float32.

    Examples
    --------
    >>> w = gaussian((256, 1024), seed=0)
    >>> w.dtype, w.shape, round(float(w.std()), 3)
    (dtype('float32'), (256, 1024), 0.02)
    """
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(_shape(shape), dtype=np.float32)
    w *= np.float32(_std(std))
    return w


def laplace(shape: int | tuple[int, ...], std: float = DEFAULT_STD,
            seed: int = 0) -> np.ndarray:
    """Laplace (double-exponential) weights scaled to standard deviation ``std``, float32.

    A Laplace with scale ``b`` has variance ``2 b**2``, so ``b = std / sqrt(2)``.  Its tails
    fall like ``exp(-|x|/b)``: the largest of ``g`` samples grows like ``log g``, faster than
    a Gaussian's ``sqrt(log g)``.

    Examples
    --------
    >>> w = laplace(100_000, seed=1)
    >>> round(float(w.std()), 3)
    0.02
    """
    rng = np.random.default_rng(seed)
    return rng.laplace(0.0, _std(std) / np.sqrt(2.0), _shape(shape)).astype(np.float32)


def student_t(shape: int | tuple[int, ...], df: float = DEFAULT_DF, std: float = DEFAULT_STD,
              seed: int = 0) -> np.ndarray:
    """Student-t weights with ``df`` degrees of freedom scaled to standard deviation ``std``.

    The variance of a standard t is ``df / (df - 2)``, so ``df`` must exceed 2.  Its tails
    are power laws: the largest of ``g`` samples grows like ``g**(1/df)``.

    Examples
    --------
    >>> w = student_t((512, 512), df=4, seed=2)
    >>> w.dtype, bool(abs(w.std() - 0.02) < 0.002)
    (dtype('float32'), True)
    """
    if not df > 2:
        raise ValueError(f"df must be greater than 2 for a finite variance, got {df!r}")
    rng = np.random.default_rng(seed)
    t = rng.standard_t(df, _shape(shape))
    return (t * (_std(std) / np.sqrt(df / (df - 2.0)))).astype(np.float32)


def outlier_columns(shape: tuple[int, int], n_columns: int = DEFAULT_N_COLUMNS,
                    strength: float = DEFAULT_STRENGTH,
                    std: float = DEFAULT_STD, seed: int = 0) -> OutlierMatrix:
    """A Gaussian matrix in which ``n_columns`` input channels are ``strength`` times larger.

    The base matrix is exactly ``gaussian(shape, std, seed)``.  The outlier columns are
    chosen at random (seeded) and their weights replaced by Gaussian values of standard
    deviation ``strength * std``, so every row has ``n_columns`` large weights at the same
    positions, as the outlier features of trained LLMs do.

    Parameters
    ----------
    shape : (rows, cols)
    n_columns : int, default 4
        Number of outlier columns, ``0 <= n_columns <= cols``.
    strength : float, default 20.0
        Ratio of the outlier columns' standard deviation to the others'.
    std : float, default 0.02
    seed : int, default 0

    Returns
    -------
    OutlierMatrix
        ``weights``, the sorted ``columns``, and the ``base`` matrix without outliers.

    Examples
    --------
    >>> om = outlier_columns((64, 4096), n_columns=3, strength=20, seed=0)
    >>> om.columns.tolist(), om.weights.dtype
    ([2137, 3643, 4067], dtype('float32'))
    >>> np.flatnonzero((om.weights != om.base).any(axis=0)).tolist()
    [2137, 3643, 4067]
    """
    shape = _shape(shape)
    if len(shape) != 2:
        raise ValueError(f"shape must be (rows, cols), got {shape!r}")
    rows, cols = shape
    if isinstance(n_columns, bool) or not isinstance(n_columns, numbers.Integral) \
            or not 0 <= n_columns <= cols:
        raise ValueError(f"n_columns must be an integer in [0, {cols}], got {n_columns!r}")
    if not np.isfinite(strength) or strength <= 0:
        raise ValueError(f"strength must be positive and finite, got {strength!r}")
    base = gaussian(shape, std, seed)
    # A second stream, so the base matrix does not depend on the outlier parameters.
    rng = np.random.default_rng([seed, 1])
    columns = np.sort(rng.choice(cols, size=int(n_columns), replace=False)).astype(np.int64)
    weights = base.copy()
    big = rng.standard_normal((rows, columns.size), dtype=np.float32)
    weights[:, columns] = big * np.float32(strength * std)
    return OutlierMatrix(weights, columns, base)


def make_weights(kind: str, shape: tuple[int, int] = (512, 4096), *, seed: int = 0,
                 std: float = DEFAULT_STD, df: float = DEFAULT_DF,
                 n_columns: int = DEFAULT_N_COLUMNS,
                 strength: float = DEFAULT_STRENGTH) -> np.ndarray:
    """A synthetic matrix by name: one of :data:`DISTRIBUTIONS`.

    ``"outliers"`` returns only the weights of :func:`outlier_columns`; call that function
    to know where the outliers are.

    Examples
    --------
    >>> [make_weights(k, (8, 64)).shape for k in DISTRIBUTIONS]
    [(8, 64), (8, 64), (8, 64), (8, 64)]
    """
    if kind == "gaussian":
        return gaussian(shape, std, seed)
    if kind == "laplace":
        return laplace(shape, std, seed)
    if kind == "student_t":
        return student_t(shape, df, std, seed)
    if kind == "outliers":
        return outlier_columns(shape, n_columns, strength, std, seed).weights
    raise ValueError(f"unknown kind {kind!r}; use one of {DISTRIBUTIONS}")
