"""Tests for gqlearn.lessons.group_scales (chapter 02): plots, the widget, the checkers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from gqlearn.lessons import group_scales as gs
from gqlearn.lessons.exercises import Feedback


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- pictures and the widget ---------------------------------------------------------------------

def test_plot_error_vs_group_size_is_log_log_with_bits_under_the_ticks():
    fig = gs.plot_error_vs_group_size([4, 8, 256], {"a": [0.003, 0.004, 0.007]}, [16, 12, 8.125])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4\n16 b/w", "8\n12 b/w",
                                                            "256\n8.12 b/w"]


def test_plot_relative_error_log_axis_lost_weights_at_100_percent():
    fig = gs.plot_relative_error(gs.SIXTEEN, [16, 8])
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() and ax.get_ylabel()
    filled = [c for c in ax.collections if c.get_label() == "group size 16 (one scale)"][0]
    assert (filled.get_offsets()[:, 1] == 100).sum() == 8  # the eight small weights are lost
    assert ax.get_legend() is None and len(fig.legends) == 1  # legend outside the axes


def test_show_group_size_prints_bytes_and_zeroed(capsys):
    gs.show_group_size(gs.SIXTEEN, 8)
    out = capsys.readouterr().out
    assert "group size 8: 2 scale(s), 24 bytes, 12 bits/weight; 0 weights became 0" in out
    gs.show_group_size(gs.SIXTEEN, 16)
    assert "8 weights became 0" in capsys.readouterr().out


def test_group_size_explorer_uses_buttons_not_a_selection_slider():
    import ipywidgets as widgets

    w = gs.group_size_explorer()
    pick = w.children[0]
    assert isinstance(pick, widgets.ToggleButtons)
    assert list(pick.options) == [1, 2, 4, 8, 16] and pick.value == 8
    assert "group-size explorer" in repr(w)


# --- exercise 1: quantize_groups ----------------------------------------------------------------

def _solution(w, group_size):
    groups = w.reshape(-1, group_size)
    scales = np.abs(groups).max(axis=1, keepdims=True) / 127
    scales[scales == 0] = 1.0
    values = np.clip(np.round(groups / scales), -127, 127).astype(np.int8)
    return values.reshape(w.shape), scales.ravel()


def _solution_half_away_2d_scales(w, group_size):
    groups = w.reshape(-1, group_size)
    scales = np.abs(groups).max(axis=1, keepdims=True) / 127
    scales = np.where(scales == 0, np.float32(1), scales)
    y = (groups / scales).astype(np.float64)
    values = (np.sign(y) * np.floor(np.abs(y) + 0.5)).astype(np.int8)
    return values.reshape(w.shape), scales  # scales of shape (n_groups, 1): accepted


def test_check_quantize_groups_accepts_right_answers():
    for fn in (_solution, _solution_half_away_2d_scales):
        fb = gs.check_quantize_groups(fn)
        assert isinstance(fb, Feedback) and fb, fb.message


def _wrong(kind):
    def fn(w, group_size):
        groups = w.reshape(-1, group_size)
        amax = np.abs(groups).max(axis=1, keepdims=not kind.startswith("nokeep"))
        if kind == "signed":
            amax = groups.max(axis=1, keepdims=True)
        if kind == "tensor":
            amax = np.full((groups.shape[0], 1), np.abs(w).max())
        scales = amax / (128 if kind == "div128" else 127)
        if kind != "noguard":
            scales = np.where(scales == 0, np.float32(1), scales)
        y = groups / scales
        values = np.trunc(y) if kind == "trunc" else np.round(y)
        if kind == "float":
            return values.reshape(w.shape), scales
        values = values.astype(np.int8)
        if kind == "noreshape":
            return values, scales
        if kind == "perrow":
            return values.reshape(w.shape), scales.reshape(w.shape[0], -1)[:, 0]
        if kind == "none":
            return None
        if kind == "list":
            return [values, scales]
        if kind == "off":
            values = values.copy()
            values.flat[3] += 1
        return values.reshape(w.shape), scales
    return fn


@pytest.mark.parametrize("kind, phrase", [
    ("nokeep", "keepdims"), ("noguard", "all-zero group"), ("div128", "not 128"),
    ("signed", "largest magnitude"), ("tensor", "whole tensor's scale"),
    ("trunc", "round first"), ("float", "int8"), ("noreshape", "reshape them back"),
    ("perrow", "scales for"), ("none", "returned None"), ("list", "two things"),
    ("off", "check round")])
def test_check_quantize_groups_names_the_first_mistake(kind, phrase):
    fb = gs.check_quantize_groups(_wrong(kind))
    assert not fb and phrase in fb.message, fb.message
    assert repr(fb).startswith("Not yet: ")


def test_check_quantize_groups_spots_a_silent_missing_keepdims():
    # As many groups as weights per group: broadcasting runs, with the wrong scales.
    def fn(w, group_size):
        if w.size != group_size ** 2:
            return _solution(w, group_size)
        groups = w.reshape(-1, group_size)
        scales = np.abs(groups).max(axis=1) / 127
        return np.round(groups / scales).astype(np.int8).reshape(w.shape), scales

    fb = gs.check_quantize_groups(fn)
    assert not fb and "did you use keepdims?" in fb.message


def test_check_quantize_groups_never_prints_expected_values():
    for _, w, g in gs._cases():
        expected = np.abs(w.reshape(-1, g)).max(axis=1) / 127
        for kind in ("div128", "signed", "tensor", "off", "trunc"):
            msg = gs.check_quantize_groups(_wrong(kind)).message
            assert not any(f"{s:.4g}" in msg for s in expected if s)


# --- exercise 2: bytes ---------------------------------------------------------------------------

def test_check_total_bytes():
    fb = gs.check_total_bytes(17_301_504)
    assert fb and "131,072 float32 scales" in fb.message


@pytest.mark.parametrize("answer, phrase", [
    (16_777_216, "values only"), (67_108_864, "float32 size"), (17_039_360, "4 bytes each"),
    (16_777_216 + 131_072, "4 bytes each"), (8 * 17_301_504, "in bits"),
    (16_777_216 + 4 * 4096, "one scale per row"), (1, "1 byte per weight"),
    ("many", "1 byte per weight"), (None, "1 byte per weight")])
def test_check_total_bytes_wrong_answers(answer, phrase):
    fb = gs.check_total_bytes(answer)
    assert not fb and phrase in fb.message and "17,301,504" not in fb.message
