"""Tests for gqlearn.lessons.running_quantized (chapter 07): the roofline plot, the checkers."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from gqlearn.lessons import running_quantized as rq
from gqlearn.lessons.exercises import Feedback

POINTS = {"float32 W @ x (BLAS)": [(1, 0.5, 18.0), (8, 4.0, 19.0), (64, 32.0, 67.0)],
          "int8 g=32 qmatmul": [(1, 1.8, 4.4), (8, 14.0, 16.0), (64, 113.0, 55.0)],
          "int4 g=32 qmatmul": [(1, 3.2, 43.0), (8, 26.0, 21.0), (64, 205.0, 53.0)]}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_roofline_is_one_labelled_log_log_plot_with_every_point() -> None:
    fig = rq.plot_roofline(26.0, 71.0, POINTS)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "flop per byte" in ax.get_xlabel() and "GFLOP/s" in ax.get_ylabel() and ax.get_title()
    lines = ax.get_lines()
    roof = lines[0]
    x, y = roof.get_data()
    assert np.allclose(y, np.minimum(71.0, 26.0 * x))
    assert x.min() < 0.5 and x.max() > 205.0  # the roof spans every point
    for label, pts in POINTS.items():
        line = next(ln for ln in lines if ln.get_label() == label)
        assert list(line.get_xdata()) == [p[1] for p in pts]
    ridge = next(ln for ln in lines if ln.get_label().startswith("ridge point"))
    assert np.allclose(ridge.get_xdata(), 71.0 / 26.0)
    assert len(fig.legends) == 1  # below the axes, so it covers no point


def _qmatvec(x, values, scales, group_size):
    out, n = values.shape
    v = values.reshape(out, n // group_size, group_size)
    return ((v * x.reshape(-1, group_size)).sum(axis=2) * scales).sum(axis=1)


def _unpack_int2(packed):
    fields = (packed[..., None] >> np.array([0, 2, 4, 6], np.uint8)) & 0b11
    return fields.reshape(packed.shape[0], -1).astype(np.int8) - 2


def test_check_qmatvec_accepts_right_answers() -> None:
    assert rq.check_qmatvec(_qmatvec)
    # float64 or a dequantize-then-multiply version are right too
    assert rq.check_qmatvec(lambda x, v, s, g: x.astype(np.float64) @ (
        v.reshape(len(v), -1, g) * s[:, :, None]).reshape(v.shape).T)


@pytest.mark.parametrize("fn, words", [
    (lambda x, v, s, g: None, "returned None"),
    (lambda x, v, s, g: v @ x, "scales were left out"),
    (lambda x, v, s, g: _qmatvec(x, v, s, g)[:-1], "one number per output"),
    (lambda x, v, s, g: _qmatvec(x, v, s, g) * 1.01, "Reshape values"),
    (lambda x, v, s, g: 1 / 0, "ZeroDivisionError"),
])
def test_check_qmatvec_rejects_wrong_answers_without_the_value(fn, words) -> None:
    fb = rq.check_qmatvec(fn)
    assert isinstance(fb, Feedback) and not fb and words in fb.message
    assert "[" not in fb.message  # no array printed


def test_check_unpack_int2_accepts_right_answers() -> None:
    assert rq.check_unpack_int2(_unpack_int2)
    fb = rq.check_unpack_int2(lambda p: _unpack_int2(p).astype(np.int64))
    assert fb and "int8" in fb.message


@pytest.mark.parametrize("fn, words", [
    (lambda p: None, "returned None"),
    (lambda p: _unpack_int2(p) + 2, "offset 2"),
    (lambda p: _unpack_int2(p).reshape(len(p), -1, 4)[:, :, ::-1].reshape(len(p), -1),
     "reverse order"),
    (lambda p: _unpack_int2(p)[:, ::2], "four values"),
    (lambda p: -_unpack_int2(p), "first difference"),
    (lambda p: p.frombytes(), "AttributeError"),
])
def test_check_unpack_int2_rejects_wrong_answers_without_the_value(fn, words) -> None:
    fb = rq.check_unpack_int2(fn)
    assert isinstance(fb, Feedback) and not fb and words in fb.message
    assert "[" not in fb.message


def test_checkers_never_print_a_float() -> None:
    """A wrong answer's message names a shape or a position, never a value of the result."""
    for fb in (rq.check_qmatvec(lambda x, v, s, g: np.zeros(len(v))),
               rq.check_unpack_int2(lambda p: -_unpack_int2(p))):
        assert not fb and re.search(r"\d\.\d", fb.message) is None
