"""Claims the prose of notebooks/A1_under_the_hood.ipynb relies on, and its shape."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import gqlearn
from gqlearn import core

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "A1_under_the_hood.ipynb"
HEADINGS = ["Vectorized and parallel", "The fused numba kernel", "Absmax from bit patterns",
            "Rounding ties", "Float32 against hand arithmetic", "Subnormal scales",
            "Why powers of two on hardware", "The RoPE layout of q and k", "Summary", "Exercises"]


@pytest.fixture(scope="module")
def cells() -> list[dict]:
    return json.loads(NOTEBOOK.read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _markdown(cells: list[dict]) -> list[str]:
    return [_source(c) for c in cells if c["cell_type"] == "markdown"]


# --- the notebook's shape ---------------------------------------------------------------------

def test_headings_are_the_linked_anchors_in_order(cells) -> None:
    found = [line[3:] for text in _markdown(cells) for line in text.splitlines()
             if line.startswith("## ")]
    assert found == HEADINGS


def test_header(cells) -> None:
    head = _markdown(cells)[0]
    assert head.startswith("# A1 · Under the hood")
    for part in ("**Prerequisites**", "**Time**", "**You will learn**", "**You will build**"):
        assert part in head


def test_prose_limits(cells) -> None:
    words = [len(text.split()) for text in _markdown(cells)]
    assert sum(words) <= 2000
    assert max(words) <= 200


def test_no_outside_text_or_scaffolding(cells) -> None:
    prose = " ".join(_markdown(cells)).lower()
    for phrase in ("the text", "the seed", "source text", "seeds"):
        assert phrase not in prose
    for cell in cells:
        if cell["cell_type"] == "code":
            src = _source(cell)
            assert "NBVAL" not in src and not re.search(r"^\s*assert\b", src, re.M)
            assert cell["execution_count"] is not None
            tags = cell["metadata"].get("tags", [])
            if "nbval-ignore-output" in tags:
                assert "timeit" in src or "perf_counter" in src  # only timings unchecked


def test_exercise_stub_and_checker_committed_unsolved(cells) -> None:
    code = [c for c in cells if c["cell_type"] == "code"]
    assert "...  # your code here" in _source(code[-2])
    out = "".join(o.get("text", "") or "".join(o.get("data", {}).get("text/plain", ""))
                  for o in code[-1]["outputs"])
    assert "Not yet" in out


# --- Vectorized and parallel, the fused kernel ------------------------------------------------

def test_results_do_not_depend_on_threads_blocks_or_backend() -> None:
    w = np.random.default_rng(3).standard_normal((256, 1024), dtype=np.float32)
    ref = gqlearn.quantize(w, 128, threads=1, backend="numpy")
    for threads in (1, 2, 4):
        for chunk in (1000, 4096, None):
            for backend in gqlearn.available_backends():
                qt = gqlearn.quantize(w, 128, threads=threads, chunk_elements=chunk,
                                      backend=backend)
                assert np.array_equal(qt.values, ref.values)
                assert np.array_equal(qt.scales, ref.scales)


def test_numba_kernel_is_not_fastmath() -> None:
    pytest.importorskip("numba")
    from gqlearn import _fused

    assert not _fused.quantize_groups.targetoptions.get("fastmath", False)
    assert _fused.quantize_groups.targetoptions.get("parallel")


# --- Absmax from bit patterns -----------------------------------------------------------------

def test_sign_cleared_patterns_sort_like_magnitudes() -> None:
    rng = np.random.default_rng(5)
    patterns = rng.integers(0, 0x7F800000, size=100_000, dtype=np.uint32)
    x = (patterns | (rng.integers(0, 2, patterns.size, dtype=np.uint32) << np.uint32(31))
         ).view(np.float32)
    cleared = x.view(np.uint32) & np.uint32(0x7FFFFFFF)
    assert np.array_equal(np.argsort(np.abs(x), kind="stable"), np.argsort(cleared, kind="stable"))
    special = np.array([np.inf, np.nan], dtype=np.float32).view(np.uint32) & np.uint32(0x7FFFFFFF)
    assert special[0] == 0x7F800000 and special[1] > 0x7F800000


# --- Rounding ties ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gaussian() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4096, 4096), dtype=np.float32)


def test_ties_are_a_handful_and_differ_by_one_step(gaussian) -> None:
    default = gqlearn.quantize(gaussian, 32).values
    for options in (dict(reciprocal=True), dict(rounding="half_even"),
                    dict(rounding="half_even", reciprocal=True)):
        other = gqlearn.quantize(gaussian, 32, **options).values
        diff = np.abs(other.astype(int) - default)
        assert 0 < np.count_nonzero(diff) < 100
        assert diff.max() == 1


def test_half_even_changes_exactly_the_ties_with_an_even_integer_part(gaussian) -> None:
    groups = gaussian.reshape(-1, 32)
    y = groups / (np.abs(groups).max(axis=1, keepdims=True) / np.float32(127))
    ties = y[y % 1 == 0.5]
    even = np.count_nonzero(np.trunc(ties) % 2 == 0)
    changed = np.count_nonzero(gqlearn.quantize(gaussian, 32).values
                               != gqlearn.quantize(gaussian, 32, rounding="half_even").values)
    assert 0 < even == changed < ties.size


def test_the_found_tie_is_not_an_exact_tie(gaussian) -> None:
    groups = gaussian.reshape(-1, 32)
    scale = np.abs(groups).max(axis=1) / np.float32(127)
    default = gqlearn.quantize(gaussian, 32).values.ravel()
    rec = gqlearn.quantize(gaussian, 32, reciprocal=True).values.ravel()
    i = np.flatnonzero(rec != default)[0]
    x, d = gaussian.ravel()[i], scale[i // 32]
    y_div, y_rec = x / d, x * (np.float32(1) / d)
    assert y_div % 1 == 0.5                                  # a float32 tie
    exact = Fraction(float(x)) / Fraction(float(d))
    assert abs(exact) < abs(Fraction(float(y_div)))          # just below the halfway point
    assert abs(y_rec) < abs(y_div)                           # the reciprocal stays below
    assert abs(int(default[i])) == abs(int(rec[i])) + 1       # half away pushes up


def test_shipped_quantizer_table_matches_core_docstring() -> None:
    doc = core.__doc__
    assert 'reciprocal=True' in doc and "llama.cpp Q8_0" in doc
    assert 'rounding="half_even"' in doc and "llama2.c" in doc


# --- Float32 against hand arithmetic ------------------------------------------------------------

EXAMPLE = np.array([2.0, -1.5, 0.8, -0.3, 0.01, -0.02, 0.005, -0.001], dtype=np.float32)


def test_float32_gives_minus_95_and_63() -> None:
    q = gqlearn.quantize(EXAMPLE, 4).values
    assert q[1] == -95 and q[4] == 63


def test_hand_scales_give_minus_96_and_64() -> None:
    assert Fraction("-1.5") * 127 / 2 == Fraction("-95.25")
    hand = Fraction("-1.5") / Fraction("0.0157")
    assert hand < Fraction("-95.5")                       # past the halfway point, not on it
    assert Fraction("0.01") * 127 / Fraction("0.02") == Fraction("63.5")
    assert round(float(Fraction("0.01") / Fraction("0.000157"))) == 64
    scales = np.array([0.0157, 0.000157], dtype=np.float32)
    y = EXAMPLE.reshape(2, 4) / scales[:, None]
    t = np.trunc(y)
    q = (t + np.trunc(2 * (y - t))).ravel()
    assert q[1] == -96 and q[4] == 64


@pytest.mark.parametrize("x, group_max, up, q", [(0.01, 0.02, True, 63), (0.001, 0.002, False, 64)])
def test_tie_anatomy(x: float, group_max: float, up: bool, q: int) -> None:
    xf, mf = np.float32(x), np.float32(group_max)
    assert Fraction(float(xf)) * 2 == Fraction(float(mf))  # the ratio stays exactly 1/2
    scale = mf / np.float32(127)
    assert (Fraction(float(scale)) > Fraction(float(mf)) / 127) == up
    assert gqlearn.quantize(np.array([group_max, x], np.float32), 2).values[1] == q


def test_trunc_shortcuts_fail_where_the_prose_says() -> None:
    y = np.array([-95.25, -2.7, -0.5, 0.49999997, 2.5], dtype=np.float32)
    naive = np.trunc(y + np.float32(0.5))
    signed = np.trunc(y + np.copysign(np.float32(0.5), y))
    t = np.trunc(y)
    exact = t + np.trunc(2 * (y - t))
    assert exact.tolist() == [-95, -3, -1, 0, 3]
    assert (naive[:3] != exact[:3]).all()                 # wrong for negative numbers
    assert signed[3] == 1 and (signed[[0, 1, 2, 4]] == exact[[0, 1, 2, 4]]).all()


# --- Subnormal scales -------------------------------------------------------------------------

def test_subnormal_scales() -> None:
    tiny = np.finfo(np.float32).tiny
    s = np.float32(1e-37) / np.float32(127)
    assert 0 < s < tiny
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(1) / s)
    edge = np.array([[2.66e-43, -1e-43, 0, 0], [1e-45, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32)
    assert edge[0, 0] / (edge[0, 0] / np.float32(127)) > 127.5  # would overshoot
    for reciprocal in (False, True):
        qt = gqlearn.quantize(edge, 4, reciprocal=reciprocal)
        assert qt.values[0, 0] == 127
        assert qt.scales[0, 0] == np.float32(1e-45)  # one bit: the smallest subnormal
        assert qt.scales[0, 0] < tiny and qt.scales[1, 0] == 1 and qt.scales[2, 0] == 1
        assert not qt.values[1:].any()


def test_numpy_reduction_switch_is_at_64() -> None:
    assert core._TRANSPOSE_UP_TO == 64


# --- The RoPE layout of q and k -----------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2():
    from gqlearn import llm

    return llm.load_smollm2(quiet=True)


def test_rope_layout_claims(smollm2) -> None:
    from gqlearn import llm
    from gqlearn.llm.llama import permute_qk, unpermute_qk, unpermuted_qk_weights

    model, tokenizer = smollm2
    c = model.config
    wq = model.weights["blk.0.attn_q.weight"]
    hf = unpermute_qk(wq, c.n_heads)
    assert np.array_equal(hf[1], wq[2]) and np.array_equal(hf[c.head_dim // 2], wq[1])
    assert np.array_equal(permute_qk(gqlearn.quantize(hf, 64).values, c.n_heads),
                          gqlearn.quantize(wq, 64).values)
    down = permute_qk(gqlearn.quantize(hf.T, 32).values.T, c.n_heads) != \
        gqlearn.quantize(wq.T, 32).values.T
    assert down.mean() > 0.3
    assert np.linalg.norm(wq - hf) / np.linalg.norm(hf) > 1
    ids = tokenizer.encode(llm.load_sample_text()).ids[:64]
    stored = llm.perplexity(model.forward(ids), ids)
    undone = model.with_weights(unpermuted_qk_weights(model))
    unpermuted = llm.perplexity(undone.forward(ids), ids)
    assert stored == pytest.approx(40.9, rel=0.01)
    assert unpermuted > 2 * stored
