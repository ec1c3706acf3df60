"""Tests for gqlearn.lessons.single_scale (chapter 01)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gqlearn  # noqa: E402
from gqlearn.exercises import Feedback  # noqa: E402
from gqlearn.lessons import single_scale as ss  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- Table ------------------------------------------------------------------------------------

def test_table_prints_aligned_and_exposes_columns():
    t = ss.Table(("a", "b"), ((1, 0.5), (22, np.float32(0.25))), notes=("note",))
    text = repr(t)
    assert text.splitlines()[0] == "note"
    assert text.splitlines()[1] == " a     b"
    assert t.column("a") == [1, 22]
    assert len(t) == 2
    assert "<table>" in t._repr_html_() and "<p>note</p>" in t._repr_html_()


def test_table_formats_lists_bools_and_zero():
    t = ss.Table(("q", "ok", "x"), ((np.array([1, -2], np.int8), True, 0.0),),
                 formats={"x": ".3f"})
    assert repr(t).splitlines()[-1].split() == ["[1,", "-2]", "yes", "0"]


def test_table_unknown_column_names_the_columns():
    with pytest.raises(KeyError, match="columns are"):
        ss.Table(("a",), ((1,),)).column("b")


# --- quantizing with one scale -------------------------------------------------------------------

def test_per_tensor_is_one_group_of_the_whole_tensor():
    w = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    qt = ss.per_tensor(w)
    ref = gqlearn.quantize(w.reshape(1, -1), group_size=w.size)
    assert qt.n_groups == 1 and qt.shape == (1, 24)
    np.testing.assert_array_equal(qt.values, ref.values)
    assert qt.scales[0, 0] == np.float32(np.abs(w).max()) / np.float32(127)


def _round_half_away_reference(y: float) -> float:
    with localcontext() as ctx:
        ctx.prec = 80
        return float(Decimal(y).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@pytest.mark.parametrize("y", [0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, -0.49999997, 63.499996,
                               63.500004, 126.5, 8388607.5, 1e30, 0.0])
def test_round_half_away_matches_decimal(y):
    got = ss.round_half_away(np.array([y], np.float32))[0]
    assert got == _round_half_away_reference(float(np.float32(y)))


def test_round_half_away_random():
    y = (np.random.default_rng(1).standard_normal(10_000) * 200).astype(np.float32)
    y[::7] = np.trunc(y[::7]) + np.float32(0.5)
    expected = [_round_half_away_reference(float(v)) for v in y]
    np.testing.assert_array_equal(ss.round_half_away(y), expected)


@pytest.mark.parametrize("group_size", [1, 4, 16, 64])
def test_quantize_with_absmax_scales_equals_gqlearn(group_size):
    w = np.random.default_rng(group_size).standard_normal(64).astype(np.float32)
    ref = gqlearn.quantize(w, group_size)
    qt = ss.quantize_with_scales(w, ref.scales, group_size)
    np.testing.assert_array_equal(qt.values, ref.values)
    np.testing.assert_array_equal(qt.scales, ref.scales)


def test_quantize_with_scales_clips_to_127():
    qt = ss.quantize_with_scales([1.0, -1.0, 0.5], 0.001)
    assert qt.values.tolist() == [127, -127, 127]


@pytest.mark.parametrize("scales, group_size, match", [
    (0.1, 3, "does not divide"),
    ([0.1, 0.2, 0.3], 2, "need 2 scales"),
    ([0.1, 0.0], 2, "positive"),
    ([0.1, np.inf], 2, "finite"),
])
def test_quantize_with_scales_rejects_bad_input(scales, group_size, match):
    with pytest.raises(ValueError, match=match):
        ss.quantize_with_scales([1.0, 2.0, 3.0, 4.0], scales, group_size)


# --- the seed's worked examples ----------------------------------------------------------------

def test_walkthrough_of_the_four_weights():
    t = ss.walkthrough(ss.FOUR)
    w = np.array(ss.FOUR, np.float32)
    qt = gqlearn.quantize(w, 4)
    assert t.column("q") == [16, -127, 8, -3]  # the seed's integers
    np.testing.assert_array_equal(np.float32(t.column("recovered")), gqlearn.dequantize(qt))
    # exact scale: 0.1 / (0.8 / 127) is 127 / 8 = 15.875, not the seed's 15.87
    assert t.column("weight / scale")[0] == 15.875
    assert "0.0062992126" in t.notes[1]
    assert max(t.column("error")) == pytest.approx(0.0011024, rel=1e-4)


def test_walkthrough_with_the_seed_rounded_scale():
    t = ss.walkthrough(ss.FOUR, scale=0.0063)
    assert t.column("q") == [16, -127, 8, -3]
    assert t.column("weight / scale")[0] == pytest.approx(15.873, abs=1e-3)
    assert t.column("recovered")[1] == pytest.approx(-0.8001, abs=1e-6)
    assert "(given)" in t.notes[1]


def test_opening_example_with_the_texts_scale_gives_other_integers():
    t = ss.compare_scales(ss.OPENING, {"text": ss.OPENING_SCALE, "absmax": None})
    text_row, absmax_row = t.rows
    assert text_row[2].tolist() == [25, -114, 47, -69]  # the text says [25, -115, 47, -70]
    assert text_row[4] == 0  # nothing clipped: the largest quotient is 113.6
    assert text_row[3] == pytest.approx(113.578, abs=1e-3)
    assert absmax_row[2].tolist() == [28, -127, 52, -77]
    assert t.column("largest |q|") == [114, 127]


def test_scale_interval_of_the_texts_integers_excludes_its_scale():
    lo, hi = ss.scale_interval(ss.OPENING, ss.OPENING_INTS)
    assert lo < hi < ss.OPENING_SCALE
    qt = ss.quantize_with_scales(ss.OPENING, (lo + hi) / 2)
    assert qt.values.tolist() == list(ss.OPENING_INTS)


def test_scale_interval_edge_cases():
    assert ss.scale_interval([1.0, 2.0], [1, -1]) == (1.0, 0.0)  # signs disagree: empty
    assert ss.scale_interval([1.0], [0]) == (0.0, float("inf"))
    with pytest.raises(ValueError, match="2 weights but 1"):
        ss.scale_interval([1.0, 2.0], [1])


@pytest.mark.parametrize("m", [10.5, 5.0, 1.0, 0.3])
def test_survival_threshold_agrees_with_gqlearn(m):
    t = ss.survival_threshold(m)
    above, below = t * 1.001, t * 0.999
    q = ss.per_tensor([m, above, below]).values.ravel()
    assert q[1] == 1 and q[2] == 0


def test_mixed_examples_lose_their_small_weights():
    for w, n_small in ((ss.MIXED, 4), (ss.SIXTEEN, 8)):
        q = np.array(ss.walkthrough(w).column("q"))
        assert (q[-n_small:] == 0).all() and (q[:-n_small] != 0).all()


# --- the synthetic layer --------------------------------------------------------------------------

def test_synthetic_layer_is_deterministic_and_spans_the_ratio():
    a = ss.synthetic_layer(64, 512, ratio=1000.0, seed=3)
    b = ss.synthetic_layer(64, 512, ratio=1000.0, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (64, 512)
    std = a.std(axis=1)
    assert 500 < std.max() / std.min() < 2000


@pytest.mark.parametrize("kwargs", [dict(rows=0), dict(cols=0), dict(ratio=0.5)])
def test_synthetic_layer_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ss.synthetic_layer(**kwargs)


def test_row_relative_error_is_one_for_a_lost_row():
    w = np.array([[1.0, -1.0], [1e-4, -1e-4]], np.float32)
    err = ss.row_relative_error(w, ss.per_tensor(w))
    assert err[0] == 0 and err[1] == 1


def test_ratio_sweep_shows_the_damage_growing():
    t = ss.ratio_sweep([1, 10, 100, 1000, 10000], rows=16, cols=128)
    zeroed = t.column("zeroed (per-tensor)")
    assert all(a < b for a, b in zip(zeroed, zeroed[1:]))
    assert t.column("smallest row error (per-tensor)")[-1] == 1.0
    assert len(set(t.column("zeroed (per-row)"))) == 1  # per-row scales ignore the ratio
    assert max(t.column("smallest row error (per-row)")) < 0.02


def test_per_row_check_rows_keep_their_integers_and_errors():
    ratios = [1, 10, 1000, 1e5]
    t = ss.per_row_check(ratios, rows=16, cols=128, seed=3)
    assert t.column("ratio") == ratios
    assert t.column("same q as ratio 1") == [True] * 4
    for name in ("best row error", "median row error", "worst row error"):
        assert max(t.column(name)) - min(t.column(name)) < 1e-6
    # the smallest row is the one ratio_sweep reports: same relative error
    sweep = ss.ratio_sweep(ratios, rows=16, cols=128, seed=3)
    w = ss.synthetic_layer(16, 128, 1e5, seed=3)
    err = ss.row_relative_error(w, gqlearn.quantize(w, 128))
    assert sweep.column("smallest row error (per-row)")[-1] == pytest.approx(
        float(err[t.column("smallest row")[-1]]))
    with pytest.raises(ValueError, match="at least one"):
        ss.per_row_check([])


# --- pictures and the widget ---------------------------------------------------------------------

def test_plot_grid_adds_a_panel_when_weights_vanish():
    assert len(ss.plot_grid(ss.MIXED, title="t").axes) == 3
    fig = ss.plot_grid(ss.FOUR)
    assert len(fig.axes) == 2
    assert all(ax.get_xlabel() == "value" and ax.get_title() for ax in fig.axes)


def test_plot_ratio_sweep_labels_its_axes():
    fig = ss.plot_ratio_sweep(ss.ratio_sweep([1, 100], rows=8, cols=64))
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def test_mixed_with_large_keeps_the_small_weights():
    np.testing.assert_array_equal(ss.mixed_with_large(10.5), np.float32(ss.MIXED))
    w = ss.mixed_with_large(1.0)
    assert np.abs(w).max() == np.float32(1.0)
    np.testing.assert_array_equal(w[4:], np.float32(ss.MIXED[4:]))


@pytest.mark.parametrize("large, lost", [(10.5, 4), (0.3, 2), (0.1, 0)])
def test_magnitude_table_counts_the_lost_small_weights(large, lost):
    t = ss.magnitude_table(large)
    assert t.column("q").count(0) == lost
    assert f"{lost} of the 4 small weights" in t.notes[1]


def test_show_magnitude_and_widget(capsys):
    ss.show_magnitude(0.3)
    assert "2 of the 4 small weights become 0" in capsys.readouterr().out
    w = ss.magnitude_explorer()
    assert w.children[0].value == pytest.approx(10.5)


# --- exercises ---------------------------------------------------------------------------------

def test_check_scale():
    right = ss.check_scale(1.2 / 127)
    assert isinstance(right, Feedback) and right
    assert "0.00944882" in right.message


@pytest.mark.parametrize("answer, phrase", [
    (1.2 / 128, "divide by 127"), (127 / 1.2, "127 / max"), (2.4 / 255, "255-level"),
    (0.6 / 127, "largest magnitude"), (0.5, "largest |w|"), ("abc", "largest |w|")])
def test_check_scale_wrong_answers(answer, phrase):
    fb = ss.check_scale(answer)
    assert not fb and phrase in fb.message


def test_check_zeroed():
    assert ss.check_zeroed([1, 4, 7])
    assert ss.check_zeroed((7, 1, 4))
    missing = ss.check_zeroed([1, 4])
    assert not missing and "w[7] = 0.0157" in missing.message and "rounds to 0" in missing.message
    extra = ss.check_zeroed([1, 4, 5, 7])
    assert not extra and "w[5] = -0.016" in extra.message and "rounds to -1" in extra.message
    assert "out of range" in ss.check_zeroed([1, 4, 7, 9]).message
    assert "list of indices" in ss.check_zeroed(3).message


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
