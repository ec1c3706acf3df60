"""Tests for gqlearn.lessons.group_scales (chapter 02)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import gqlearn  # noqa: E402
from gqlearn.exercises import Feedback  # noqa: E402
from gqlearn.lessons import group_scales as gs  # noqa: E402
from gqlearn.lessons.single_scale import MIXED, SIXTEEN  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_divisors():
    assert gs.divisors(1) == [1]
    assert gs.divisors(12) == [1, 2, 3, 4, 6, 12]
    with pytest.raises(ValueError):
        gs.divisors(0)


# --- the walk-through ---------------------------------------------------------------------------

def test_split_groups():
    t = gs.split_groups(gs.EXPLORER, 4)
    assert t.column("indices") == ["0-3", "4-7"]
    assert t.column("weights")[1] == pytest.approx([0.01, -0.02, 0.005, -0.001])
    with pytest.raises(ValueError, match="does not divide"):
        gs.split_groups(gs.EXPLORER, 3)


def test_group_summary_matches_gqlearn():
    w = np.array(gs.EXPLORER, np.float32)
    t = gs.group_summary(w, 4)
    qt = gqlearn.quantize(w, 4)
    rep = gqlearn.error_report(w, qt)
    assert t.column("scale") == qt.scales.tolist()
    assert t.column("max error") == rep.group_max_error.tolist()
    assert [q.tolist() for q in t.column("q")] == [[127, -95, 51, -19], [63, -127, 32, -6]]
    assert t.column("zeroed") == [0, 0]


def test_group_summary_mixed_example_keeps_the_small_weights():
    t = gs.group_summary(MIXED, 4)
    assert [q.tolist() for q in t.column("q")] == [[127, -99, 110, -94], [64, -127, 95, -51]]
    assert gs.group_summary(MIXED, 8).column("zeroed") == [4]
    assert gs.group_summary(SIXTEEN, 8).column("q")[1][0] == 85  # the other text's 0.01 -> 85


def test_group_steps_columns_are_consistent():
    t = gs.group_steps(gs.EXPLORER, 4)
    assert t.column("group") == [0] * 4 + [1] * 4
    for s, y, q, r, e, x in zip(t.column("scale"), t.column("weight / scale"), t.column("q"),
                                t.column("recovered"), t.column("error"), t.column("weight")):
        assert r == pytest.approx(q * s, rel=1e-6)
        assert e == pytest.approx(abs(x - r), abs=1e-9)
        assert abs(y - q) <= 0.5


def test_seed_scales_and_the_seed_integers():
    s = gs.seed_scales(gs.EXPLORER, 4)
    assert s.tolist() == pytest.approx([0.0157, 0.000157])
    t = gs.group_steps(gs.EXPLORER, 4, scales=s)
    assert t.column("q") == [127, -96, 51, -19, 64, -127, 32, -6]  # the seed's step 6
    assert max(gs.group_summary(gs.EXPLORER, 4, s).column("max error")) == pytest.approx(
        0.0072, abs=1e-6)


def test_hand_vs_float32_marks_the_differences():
    t = gs.hand_vs_float32(gs.EXPLORER, 4)
    assert [i for i, same in enumerate(t.column("same")) if not same] == [1, 4]
    t = gs.hand_vs_float32(MIXED, 4)
    assert [i for i, same in enumerate(t.column("same")) if not same] == [6]


@pytest.mark.parametrize("x, m, direction, q32, q64", [(0.01, 0.02, "up", 63, 64),
                                                      (0.001, 0.002, "down", 64, 64)])
def test_tie_anatomy(x, m, direction, q32, q64):
    t = dict(gs.tie_anatomy(x, m).rows)
    assert t["x * 127 / max with the decimal inputs"] == "63.5"
    assert t["float32 rounding of the scale went"] == direction
    assert t["float32 scale - exact scale"][0] == ("+" if direction == "up" else "-")
    assert t["q in float32 (gqlearn)"] == str(q32)
    assert t["q in float64"] == str(q64)
    w = np.array([m, x], np.float32)
    assert gqlearn.quantize(w, 2).values[1] == q32


# --- memory ---------------------------------------------------------------------------------------

def test_memory_table_reproduces_the_seed_byte_counts():
    assert gs.memory_table(8, [4]).rows[0][2:5] == (8, 8, 16)
    t = gs.memory_table(4096, [32, 256, 1024])
    assert t.column("groups (scales)") == [128, 16, 4]
    assert t.column("scales bytes") == [512, 64, 16]
    big = gs.memory_table((4096, 4096), [256])
    assert big.column("groups (scales)") == [65536]


@pytest.mark.parametrize("g", [1, 2, 4, 8, 32, 128, 1024])
def test_bits_per_weight_is_8_plus_32_over_g(g):
    assert gs.memory_table(1024, [g]).column("bits/weight") == [8 + 32 / g]


def test_memory_table_matches_a_real_quantized_tensor():
    w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    qt = gqlearn.quantize(w, 16)
    row = gs.memory_table(w.shape, [16]).rows[0]
    assert row[1:5] == (qt.n_groups, qt.values_nbytes, qt.scales_nbytes, qt.nbytes)


def test_memory_table_compression_column():
    t = gs.memory_table(8, [1, 8])
    assert t.column("compression (float32/int8)") == [32 / 40, 32 / 12]


def test_hand_products_flags_the_slip():
    t = gs.hand_products([("127", "0.0827", "10.51"), ("-99", "0.0827", "-8.19"),
                          ("127", "0.0157", "1.994"), ("-96", "0.0157", "-1.507"),
                          ("64", "0.0000157", "0.001")])
    assert t.column("q × scale") == ["10.5029", "-8.1873", "1.9939", "-1.5072", "0.0010048"]
    assert t.column("agrees") == [False, True, True, True, True]


def test_model_gigabytes():
    f32, q = gs.model_gigabytes(70e9, 256)
    assert f32 == 280.0 and q == pytest.approx(70 * (8 + 32 / 256) / 8)


# --- the slow reference against gqlearn -----------------------------------------------------------

@pytest.mark.parametrize("group_size", [1, 2, 8, 32, 256])
def test_seed_loop_equals_gqlearn(group_size):
    w = np.random.default_rng(group_size).standard_normal((4, 256)).astype(np.float32)
    w[0, :group_size] = 0.0  # an all-zero group: scale 1, values 0
    ref = gs.seed_loop_quantize(w, group_size)
    qt = gqlearn.quantize(w, group_size)
    np.testing.assert_array_equal(ref.values, qt.values.ravel())
    np.testing.assert_array_equal(ref.scales, qt.scales.ravel())
    np.testing.assert_array_equal(ref.group_errors,
                                  gqlearn.error_report(w, qt).group_max_error.ravel())


def test_seed_loop_on_exact_ties_rounds_half_away():
    # max 127 makes the scale exactly 1: w / scale = w, ties at k + 0.5 exactly
    w = np.array([127.0, 0.5, -0.5, 1.5, -2.5, 62.5, -63.5, 126.5], np.float32)
    ref = gs.seed_loop_quantize(w, 8)
    assert ref.values.tolist() == [127, 1, -1, 2, -3, 63, -64, 127]
    np.testing.assert_array_equal(ref.values, gqlearn.quantize(w, 8).values)


_BOUND = float(np.float32(1e30))
_weights = hnp.arrays(np.float32, st.integers(1, 8).map(lambda n: 8 * n),
                      elements=st.floats(-_BOUND, _BOUND, width=32, allow_subnormal=False)
                      .map(lambda x: 0.0 if abs(x) < 1e-30 else x))


@settings(max_examples=200, deadline=None)
@given(_weights, st.sampled_from([1, 2, 4, 8]))
def test_seed_loop_equals_gqlearn_property(w, group_size):
    ref = gs.seed_loop_quantize(w, group_size)
    qt = gqlearn.quantize(w, group_size)
    np.testing.assert_array_equal(ref.values, qt.values)
    np.testing.assert_array_equal(ref.scales, qt.scales)


def test_seed_loop_rejects_a_group_size_that_does_not_divide():
    with pytest.raises(ValueError, match="does not divide"):
        gs.seed_loop_quantize(np.ones(10, np.float32), 4)


def test_time_quantizers_reports_both_tensors():
    t = gs.time_quantizers((2, 16), (4, 64), group_size=16)
    assert t.column("weights") == [32, 256]
    assert "(estimated)" in t.column("Python loop (s)")[1]


# --- pictures and the widget ---------------------------------------------------------------------

def test_plot_group_grids_one_panel_per_group():
    fig = gs.plot_group_grids(MIXED, 4)
    assert len(fig.axes) == 2
    assert all(ax.get_xlabel() and ax.get_title() for ax in fig.axes)
    with pytest.raises(ValueError, match="at most 4"):
        gs.plot_group_grids(SIXTEEN, 2)


def test_plot_relative_error():
    fig = gs.plot_relative_error(MIXED, [8, 4])
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    heights = [p.get_height() for p in ax.patches]
    assert heights[4:8] == [100.0] * 4  # one scale: the four small weights are lost
    assert max(heights[8:]) < 1.0  # group size 4: every weight within 1%


def test_show_group_size_and_widget(capsys):
    gs.show_group_size(SIXTEEN, 8)
    out = capsys.readouterr().out
    assert "int8 g=8: 2 scales, 24 bytes, 12 bits/weight; 0 weights became 0" in out
    assert "worst relative error 0.497%" in out
    gs.show_group_size(SIXTEEN, 16)
    out = capsys.readouterr().out
    assert "8 weights became 0" in out and "worst relative error 100%" in out
    w = gs.group_size_explorer(SIXTEEN)
    assert list(w.children[0].options) == [1, 2, 4, 8, 16]


# --- exercises -----------------------------------------------------------------------------------

def test_check_group_scales():
    fb = gs.check_group_scales([0.9 / 127, 0.004 / 127])
    assert isinstance(fb, Feedback) and fb
    assert gs.check_group_scales(np.array([0.0070866, 3.1496e-05]))


@pytest.mark.parametrize("answer, phrase", [
    ([0.004 / 127, 0.9 / 127], "wrong order"),
    ([0.9 / 127], "whole tensor"),
    ([0.1, 0.2, 0.3], "2 scales"),
    ([0.9 / 128, 0.004 / 127], "not 128"),
    ([0.9 / 127, 0.9 / 127], "whole tensor's scale"),
    ([0.9 / 127, 0.002 / 127], "largest magnitude"),
    ([0.9 / 127, 0.5], "group 1 is off"),
    ("abc", "list of two numbers"),
])
def test_check_group_scales_wrong_answers(answer, phrase):
    fb = gs.check_group_scales(answer)
    assert not fb and phrase in fb.message


def test_check_total_bytes():
    fb = gs.check_total_bytes(17_301_504)
    assert fb and "131,072 float32 scales" in fb.message


@pytest.mark.parametrize("answer, phrase", [
    (16_777_216, "values only"), (67_108_864, "float32 size"), (17_039_360, "4 bytes each"),
    (8 * 17_301_504, "in bits"), (16_777_216 + 4 * 4096, "one scale per row"),
    (1, "1 byte per weight"), ("many", "1 byte per weight")])
def test_check_total_bytes_wrong_answers(answer, phrase):
    fb = gs.check_total_bytes(answer)
    assert not fb and phrase in fb.message


def test_check_lossless_group_size():
    fb = gs.check_lossless_group_size(4)
    assert fb and "group size 8 would zero" in fb.message


@pytest.mark.parametrize("answer, phrase", [
    (8, "become 0"), (16, "become 0"), (2, "a larger one"), (3, "does not divide"),
    (4.5, "whole number"), ("x", "an integer")])
def test_check_lossless_group_size_wrong_answers(answer, phrase):
    fb = gs.check_lossless_group_size(answer)
    assert not fb and phrase in fb.message


def _run_excerpt(groups: np.ndarray, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Execute fused_kernel_excerpt() as plain Python (numba.njit -> identity, prange -> range)."""
    import inspect
    import types

    fake_numba = types.SimpleNamespace(njit=lambda *a, **k: (lambda f: f))
    ns = {"np": np, "numba": fake_numba, "prange": range}
    exec(gs.fused_kernel_excerpt(), ns)  # noqa: S102 - our own library's source
    values = np.zeros(groups.shape, np.int8)
    scales = np.zeros(groups.shape[0], np.float32)
    available = {"groups": groups, "groups_bits": groups.view(np.uint32), "qmax": qmax,
                 "values": values, "scales": scales, "scales_bits": scales.view(np.uint32)}
    params = list(inspect.signature(ns["quantize_groups"]).parameters)
    missing = [p for p in params if p not in available]
    assert not missing, f"the kernel has new parameters {missing}: update this test"
    ns["quantize_groups"](*(available[p] for p in params))
    return values, scales


@pytest.mark.parametrize("group_size", [1, 4, 32])
def test_fused_kernel_excerpt_computes_what_gqlearn_computes(group_size):
    rng = np.random.default_rng(group_size)
    w = (rng.standard_normal((6, 64)) * np.geomspace(1e-3, 10, 6)[:, None]).astype(np.float32)
    w[0, :group_size] = 0.0  # an all-zero group
    w[1, :group_size] = 0.5 * w[1, 0] / w[1, 0]  # ties at the half
    groups = np.ascontiguousarray(w.reshape(-1, group_size))
    values, scales = _run_excerpt(groups)
    qt = gqlearn.quantize(w, group_size, backend="numpy")
    np.testing.assert_array_equal(values, qt.values.reshape(groups.shape))
    np.testing.assert_array_equal(scales, qt.scales.ravel())


def test_fused_kernel_excerpt_is_the_default_path_only():
    src = gs.fused_kernel_excerpt()
    header, code = src.split("\n", 1)
    assert header.startswith("# gqlearn._fused.quantize_groups with half_even=False")
    assert "for g in prange(n_groups):" in code
    for gone in ("half_even", "reciprocal", "clip", "_TINY", "pragma", "rint", '"""', "#"):
        assert gone not in code
    assert "np.uint32(0x7FFFFFFF)" in code  # masks in hex


def test_specialize_folds_branches_and_drops_unused_parameters():
    import ast

    src = """
def k(x, fast, out):
    flag = fast and not x
    if fast:
        y = 1
    else:
        y = h(x, False, 3)
    z = 2 if flag else 4
    out[0] = y + z

def h(v, mode, n):
    if mode:
        return v * n
    return v
"""
    funcs = {f.name: f for f in ast.parse(src).body}
    gs._Specialize({"fast": False}).visit(funcs["k"])
    gs._drop_dead_assignments(funcs["k"])
    gs._specialize_helper(funcs["k"], funcs["h"])
    assert ast.unparse(funcs["k"]) == (
        "def k(x, out):\n    y = h(x)\n    z = 4\n    out[0] = y + z")
    assert ast.unparse(funcs["h"]) == "def h(v):\n    return v"


def test_fused_kernel_source_is_the_prange_loop():
    src = gs.fused_kernel_source()
    assert src.startswith("@numba.njit(parallel=True")
    assert "for g in prange(n_groups):" in src and '"""' not in src


def test_time_quantizers_has_a_column_per_backend():
    table = gs.time_quantizers(small_shape=(4, 64), big_shape=(8, 64), group_size=32)
    text = str(table)
    for backend in gqlearn.available_backends():
        assert f"{backend} (s)" in text
    assert "speed-up (fastest)" in table.columns and "int8 g=32" in table.notes[0]
