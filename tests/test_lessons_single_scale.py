"""Tests for gqlearn.lessons.single_scale (chapter 01): plots, the widget, the checkers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

import gqlearn
from gqlearn.lessons import single_scale as ss
from gqlearn.lessons.display import Table
from gqlearn.lessons.exercises import Feedback


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- the shared Table (gqlearn.lessons.display), which this chapter prints ------------------------

def test_table_prints_aligned_and_exposes_columns():
    t = Table(("a", "b"), ((1, 0.5), (22, np.float32(0.25))), notes=("note",))
    text = repr(t)
    assert text.splitlines()[0] == "note"
    assert text.splitlines()[1] == " a     b"
    assert t.column("a") == [1, 22]
    assert len(t) == 2
    assert "<table>" in t._repr_html_() and "<p>note</p>" in t._repr_html_()


def test_table_formats_lists_bools_and_zero():
    t = Table(("q", "ok", "x"), ((np.array([1, -2], np.int8), True, 0.0),), formats={"x": ".3f"})
    assert repr(t).splitlines()[-1].split() == ["[1,", "-2]", "yes", "0"]


def test_table_unknown_column_names_the_columns():
    with pytest.raises(KeyError, match="columns are"):
        Table(("a",), ((1,),)).column("b")


# --- pictures and the widget ---------------------------------------------------------------------

def test_plot_grid_adds_a_panel_when_weights_vanish_and_keeps_the_legend_off_the_data():
    fig = ss.plot_grid(ss.MIXED, title="t")
    assert len(fig.axes) == 3
    assert all(ax.get_xlabel() == "value" and ax.get_title() for ax in fig.axes)
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert len(ss.plot_grid([0.1, -0.8, 0.05, -0.02]).axes) == 2  # nothing zeroed


def test_plot_ratio_sweep_labels_its_axes():
    fig = ss.plot_ratio_sweep([1, 10, 100], [0.01, 0.05, 0.2],
                              {"a": [0.01, 0.1, 1.0], "b": [0.01, 0.01, 0.01]})
    left, right = fig.axes
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
        assert ax.get_xscale() == "log"
    assert right.get_yscale() == "log"
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["a", "b"]


@pytest.mark.parametrize("large, lost", [(10.5, 4), (0.3, 2), (0.1, 0)])
def test_show_magnitude_counts_the_lost_small_weights(capsys, large, lost):
    ss.show_magnitude(large)
    assert f"{lost} of the 4 small weights become 0" in capsys.readouterr().out


def test_magnitude_explorer_spans_five_decades_precisely():
    import ipywidgets as widgets

    w = ss.magnitude_explorer()
    slider = w.children[0]
    assert isinstance(slider, widgets.FloatLogSlider)
    assert (slider.min, slider.max) == (-3, 2) and slider.step <= 0.01
    assert slider.value == pytest.approx(0.3)
    assert slider.readout_format == ".4g" and slider.layout.width == "720px"
    assert "magnitude explorer" in repr(w)


# --- exercise 1: absmax_quantize ----------------------------------------------------------------

def _solution(w, bits=8):
    qmax = 2 ** (bits - 1) - 1
    scale = np.abs(w).max() / qmax
    return np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8), scale


def _solution_half_away(w, bits=8):
    qmax = 2 ** (bits - 1) - 1
    scale = np.abs(w).max() / qmax
    y = w / scale
    return np.clip(np.sign(y) * np.floor(np.abs(y) + 0.5), -qmax, qmax).astype(np.int8), scale


def test_check_absmax_quantize_accepts_both_rounding_rules():
    for fn in (_solution, _solution_half_away):
        fb = ss.check_absmax_quantize(fn)
        assert isinstance(fb, Feedback) and fb, fb.message


def _wrong(kind):
    def fn(w, bits=8):
        qmax = 2 ** (bits - 1) - 1
        amax = np.abs(w).max()
        scale = {"signed": w.max() / qmax, "fixed127": amax / 127, "div128": amax / (qmax + 1),
                 "inverse": qmax / amax}.get(kind, amax / qmax)
        y = w / scale
        q = np.trunc(y) if kind == "trunc" else np.round(y)
        q = np.clip(q, -qmax, qmax)
        if kind == "float":
            return q, scale
        q = q.astype(np.int8)
        if kind == "flat":
            return q.ravel(), scale
        if kind == "scales":
            return q, np.full(2, scale)
        if kind == "one":
            return q
        if kind == "off":
            return q + np.int8(1), scale
        if kind == "raise":
            raise RuntimeError("boom")
        return q, scale
    return fn


@pytest.mark.parametrize("kind, phrase", [
    ("signed", "largest magnitude"), ("fixed127", "2**(bits - 1) - 1, not 127"),
    ("div128", "divide by 2**(bits - 1) - 1"), ("inverse", "not its inverse"),
    ("trunc", "round w / scale first"), ("float", "int8"), ("flat", "w's shape"),
    ("scales", "one scale"), ("one", "two things"), ("off", "check round"),
    ("raise", "RuntimeError: boom")])
def test_check_absmax_quantize_names_the_mistake_without_the_answer(kind, phrase):
    fb = ss.check_absmax_quantize(_wrong(kind))
    assert not fb and phrase in fb.message, fb.message
    rng = np.random.default_rng(1)
    w = rng.standard_normal(12).astype(np.float32)
    scale = float(np.abs(w).max()) / 127
    assert f"{scale:.4g}" not in fb.message and f"{scale:.6f}" not in fb.message


def test_check_absmax_quantize_stub_says_not_yet():
    def stub(w, bits=8):
        ...

    fb = ss.check_absmax_quantize(stub)
    assert not fb and repr(fb).startswith("Not yet: ") and "returned None" in fb.message


# --- exercise 2: the survival threshold ---------------------------------------------------------

def test_check_survival_threshold():
    assert ss.check_survival_threshold(0.254)
    assert ss.check_survival_threshold("0.2540")
    assert ss.check_survival_threshold(2 * 127 * np.float32(0.001))
    for near_miss in (0.2545, 0.25401, 0.2541):  # 0.001 is already zeroed there
        assert "too large" in ss.check_survival_threshold(near_miss).message
    assert "can grow" in ss.check_survival_threshold(0.2539).message
    assert "exactly one step" in ss.check_survival_threshold(0.127).message
    assert "too large" in ss.check_survival_threshold(0.3).message
    assert "can grow" in ss.check_survival_threshold(0.2).message
    assert "positive" in ss.check_survival_threshold(-1).message
    assert "a number" in ss.check_survival_threshold("x").message
    assert "a number" in ss.check_survival_threshold(None).message
    for answer in (0.3, 0.2, 0.127):
        assert "0.254" not in ss.check_survival_threshold(answer).message


def test_survival_threshold_agrees_with_gqlearn():
    for m in (10.5, 5.0, 1.0, 0.3):
        t = m / 254
        q = gqlearn.quantize(np.array([[m, t * 1.001, t * 0.999]], np.float32), 3).values
        assert q[0, 1] == 1 and q[0, 2] == 0
