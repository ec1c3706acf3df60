"""Chapter 04 support: the sweep plot builds; checkers accept right answers, reject wrong ones
with a hint, and never print the expected value.  Also the library facts the old chapter's
helpers were tested on (group sizes, memory)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

import gqlearn
from gqlearn import synthetic
from gqlearn.lessons import choosing_group_size as cg
from gqlearn.memory import GB, LLAMA2_CONFIGS


def test_plot_sweep_builds_with_knees():
    rows = []
    for name in ("gaussian", "outliers"):
        w = synthetic.make_weights(name, (32, 1024))
        for bits in (8, 4):
            for g in (16, 64, 256, 1024):
                rep = gqlearn.error_report(w, gqlearn.quantize(w, g, bits=bits))
                rows.append({"matrix": name, "bits": bits, "g": g, "sqnr_db": rep.sqnr_db,
                             "relative_error": rep.relative_frobenius_error})
    fig = cg.plot_sweep(rows, {("gaussian", 8): 64, ("outliers", 4): 16})
    assert len(fig.axes) == 4
    assert fig.axes[2].get_yscale() == "log" and fig.axes[0].get_xscale() == "log"
    assert [t.get_text() for t in fig.axes[2].get_xticklabels()][:2] == ["4", "16"]
    plt.close(fig)


def _pow2(d, r):
    if d % r == 0:
        return r
    g = 1 << (min(r, d).bit_length() - 1)
    while d % g:
        g //= 2
    return g


def test_check_pick_group_size():
    assert cg.check_pick_group_size(_pow2)
    assert cg.check_pick_group_size(gqlearn.choose_group_size)

    def halving(d, r):
        while d % r:
            r //= 2
        return r

    fb = cg.check_pick_group_size(halving)
    assert not fb and "Halving" in fb.message
    assert "returned None" in cg.check_pick_group_size(lambda d, r: None).message
    assert "does not divide" in cg.check_pick_group_size(lambda d, r: r).message
    assert "not a power of two" in cg.check_pick_group_size(
        lambda d, r: gqlearn.choose_group_size(d, r, "divisor")).message
    assert "more than" in cg.check_pick_group_size(lambda d, r: d).message
    assert "return an int" in cg.check_pick_group_size(lambda d, r: 32.0).message
    assert "raised ZeroDivisionError" in cg.check_pick_group_size(lambda d, r: 1 // 0).message
    assert "keep the request" in cg.check_pick_group_size(lambda d, r: 1).message

    def too_small(d, r):  # the request when it fits, else 32 or less
        return r if d % r == 0 else gqlearn.choose_group_size(d, min(r, 32))

    fb = cg.check_pick_group_size(too_small)
    assert "a larger power of two" in fb.message
    # never the expected value: the message names the input and the wrong answer only
    d, r = next((d, r) for d in cg.MODEL_WIDTHS for r in (32, 64, 128, 256, 300)
                if too_small(d, r) != _pow2(d, r))
    assert f"({d}, {r}) returned {too_small(d, r)}," in fb.message
    assert str(_pow2(d, r)) not in fb.message.replace(str(r), "").replace(str(d), "")


def test_check_scale_overhead():
    m = LLAMA2_CONFIGS["LLaMA-2 70B"]
    n, g = m.n_linear_params, cg.EXERCISE_SCALE_GROUP
    assert g == 512 and all(i % g == 0 for _, (_, i), _ in m.linear_shapes())
    assert cg.check_scale_overhead(n / g * 4 / 1e9)
    assert cg.check_scale_overhead(round(n / g * 4 / 1e9, 4))
    expected = f"{n / g * 4 / GB:.4f}"
    for value, hint in [(n / g * 2 / GB, "float16"), (n / g * 4 / 2**30, "GiB"),
                        (m.n_params / g * 4 / GB, "linear"), (n / g * 32 / GB, "gigabits"),
                        (n / g / GB, "4 bytes"), (70e9 / g * 4 / GB, "nominal"),
                        (n / 128 * 4 / GB, "another group size"), (3.0, "scales ="),
                        (None, "is None"), ("x", "expected a number")]:
        fb = cg.check_scale_overhead(value)
        assert not fb and hint in fb.message, (value, fb)
        assert expected not in fb.message


# --- library facts (kept from the old chapter's tests) ------------------------------------------

def test_halving_trap_and_pow2_policy():
    assert gqlearn.halving_sequence(4096, 300) == [300, 150, 75, 37, 18, 9, 4]
    assert [gqlearn.halving_sequence(4096, r)[-1] for r in (100, 300, 500)] == [1, 4, 1]
    assert gqlearn.choose_group_size(4096, 300) == gqlearn.choose_group_size(
        4096, 300, "divisor") == 256
    for d in cg.MODEL_WIDTHS:
        for r in (32, 64, 128, 256, 300):
            picks = {p: gqlearn.choose_group_size(d, r, p) for p in ("halve", "pow2", "divisor")}
            assert all(d % v == 0 for v in picks.values())
            assert picks["pow2"] >= 32 and picks["divisor"] >= picks["pow2"]
            if r & (r - 1) == 0:
                assert picks["halve"] == picks["pow2"]  # harmless for powers of two


def test_memory_claim_280_to_70():
    m = LLAMA2_CONFIGS["LLaMA-2 70B"]
    assert pytest.approx(280.0) == 70e9 * 4 / GB
    int8 = m.n_linear_params * (8 + 32 / 256) / 8 + (m.n_params - m.n_linear_params) * 2
    assert 3.8 < m.n_params * 4 / int8 < 4 and 1.9 < m.n_params * 2 / int8 < 2
    from gqlearn.memory import memory_table

    row = memory_table(m, [256], bits=8, baseline="bfloat16")[0]
    assert row["quantized_gb"] == pytest.approx(int8 / GB)
    assert row["scale_gb"] == pytest.approx(m.n_linear_params / 256 * 4 / GB)


def test_scale_share_is_the_same_for_every_model_size():
    from gqlearn.memory import memory_table

    for g in (32, 64, 128, 256):
        shares = [r["scale_gb"] / (r["values_gb"] + r["scale_gb"]) for m in
                  LLAMA2_CONFIGS.values() for r in memory_table(m, [g], bits=8)]
        assert shares == pytest.approx([(32 / g) / (8 + 32 / g)] * 3)
