"""Tests for gqlearn.lessons.under_the_hood (appendix A1): the checker and the timing plot."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

import gqlearn
from gqlearn.lessons import under_the_hood as U
from gqlearn.lessons.exercises import Feedback

check = U.check_quantize_like_llama_cpp


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _quantizer(divide: bool = False, rounding: str = "exact", zero_scale: float = 1.0):
    """A learner's quantizer with one chosen mistake (or none)."""
    def fn(w, g):
        groups = np.asarray(w, dtype=np.float32).reshape(-1, g)
        scales = np.abs(groups).max(axis=1) / np.float32(127)
        scales[scales == 0] = zero_scale
        with np.errstate(divide="ignore", invalid="ignore"):
            y = (groups / scales[:, None] if divide
                 else groups * (np.float32(1) / scales)[:, None])
        if rounding == "exact":
            t = np.trunc(y)
            y = t + np.trunc(2 * (y - t))
        elif rounding == "numpy":
            y = np.round(y)
        elif rounding == "naive":
            y = np.trunc(y + np.copysign(np.float32(0.5), y))
        q = np.nan_to_num(np.clip(y, -127, 127))
        return q.astype(np.int8), scales.astype(np.float32)
    return fn


def test_accepts_a_right_answer() -> None:
    fb = check(_quantizer())
    assert isinstance(fb, Feedback) and fb.correct
    assert "bit-identical" in fb.message


def test_unsolved_stub_is_friendly() -> None:
    def stub(w, g):
        ...

    fb = check(stub)
    assert not fb and "returned None" in fb.message
    assert repr(fb).startswith("Not yet")


@pytest.mark.parametrize("mistake, hint", [
    (dict(divide=True), "reciprocal"),
    (dict(rounding="numpy"), "ties to even"),
    (dict(divide=True, rounding="numpy"), "ties to even"),
    (dict(rounding="naive"), "round"),
    (dict(zero_scale=0.0), "all-zero group"),
])
def test_rejects_wrong_answers_with_a_hint(mistake: dict, hint: str) -> None:
    fb = check(_quantizer(**mistake))
    assert not fb
    assert hint in fb.message


def test_never_reveals_the_expected_value() -> None:
    fn = _quantizer(divide=True)
    fb = check(fn)
    assert not fb
    # the first difference is in the hand-picked groups: find it and its expected value
    w, g = U._EDGE_GROUPS, 4
    mine, _ = fn(w, g)
    ref = gqlearn.quantize(w, g, reciprocal=True).values.reshape(-1, g)
    row, col = np.argwhere(mine != ref)[0]
    numbers = re.findall(r"-?\d+(?:\.\d+)?", fb.message)
    assert str(int(ref[row, col])) not in numbers
    assert "expected" not in fb.message.lower()


def test_edge_groups_separate_division_from_reciprocal() -> None:
    w = U._EDGE_GROUPS
    div = gqlearn.quantize(w, 4).values
    rec = gqlearn.quantize(w, 4, reciprocal=True).values
    even = gqlearn.quantize(w, 4, rounding="half_even", reciprocal=True).values
    assert not np.array_equal(div[0], rec[0])      # the found tie
    assert not np.array_equal(even[1], rec[1])     # exact ties at 2.5, -2.5, 0.5
    assert rec[2, 1] == 0                          # 0.49999997 rounds to 0
    assert gqlearn.quantize(w, 4).scales[3, 0] == 1.0


@pytest.mark.parametrize("bad, words", [
    (lambda w, g: (np.zeros(w.size, np.int8), np.ones(w.size // g, np.float32)), "shape"),
    (lambda w, g: (np.zeros((w.size // g, g)), np.ones(w.size // g, np.float32)), "int8"),
    (lambda w, g: [1, 2], "pair"),
    (lambda w, g: 1 / 0, "ZeroDivisionError"),
])
def test_rejects_malformed_answers(bad, words: str) -> None:
    fb = check(bad)
    assert not fb and words in fb.message


def test_timing_plot_builds() -> None:
    rows = [(b, g, t) for b in ("numpy", "numba") for g, t in ((32, 2.0), (48, 1.8), (64, 1.5))]
    fig = U.plot_group_size_timing(rows)
    ax = fig.axes[0]
    assert "group size" in ax.get_xlabel() and "ns" in ax.get_ylabel()
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["32", "48", "64"]
    assert ax.get_legend() is not None
