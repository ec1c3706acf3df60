"""Chapter 05 support (gqlearn.lessons.encoder): tables, plots, the widget and the checkers."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

import gqlearn
from gqlearn import (
    models,
    roles,
)
from gqlearn.io import open_checkpoint
from gqlearn.lessons import encoder as E


@pytest.fixture(scope="module")
def ckpt(minilm_dir):
    return open_checkpoint(minilm_dir)


@pytest.fixture(scope="module")
def rows(ckpt):
    return E.sweep_linear_layers(ckpt, group_sizes=(128, 256, "tensor"), bits=(8, 4))


def test_recurring_channels(ckpt):
    rec = E.recurring_channels(ckpt)
    assert all(n >= 4 for n in rec.column("matrices"))
    # mlp_down's columns are intermediate features, never counted as hidden dims
    assert all("mlp_down" not in cols for cols in rec.column("top-3 column of"))
    assert rec.column("matrices") == sorted(rec.column("matrices"), reverse=True)


def test_sweep_rows(rows, ckpt):
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    assert settings == ["int8 g=128", "int8 g=256*", "int8 per-tensor", "int4 g=128",
                        "int4 g=256*", "int4 per-tensor"]
    assert len(rows) == 6 * 36
    g256 = {r["label"]: r for r in rows if r["setting"] == "int8 g=256*"}
    assert g256["L0.attn_q"]["group_size"] == 128 and g256["L0.attn_q"]["backed_off"]
    assert g256["L0.mlp_down"]["group_size"] == 256 and not g256["L0.mlp_down"]["backed_off"]
    r = next(r for r in rows if r["setting"] == "int8 g=128" and r["label"] == "L2.attn_v")
    w = ckpt["encoder.layer.2.attention.self.value.weight"]
    ref = gqlearn.error_report(w, gqlearn.quantize(w, 128))
    assert r["sqnr_db"] == pytest.approx(ref.sqnr_db, rel=1e-9)
    assert r["sum_sq_signal"] / r["sum_sq_error"] == pytest.approx(10 ** (ref.sqnr_db / 10))


def test_pivots_and_memory(rows):
    pivot = E.role_pivot(rows)
    assert pivot.columns == ("setting", "attn_q", "attn_k", "attn_v", "attn_o", "mlp_up",
                             "mlp_down")
    table = {r[0]: dict(zip(pivot.columns[1:], r[1:], strict=True)) for r in pivot.rows}
    assert table["int8 per-tensor"]["mlp_down"] < 15 < table["int8 per-tensor"]["attn_q"]
    # pooled SQNR from the explorer's float64 sums, and from its per-tensor rms and SQNR
    sel = [r for r in rows if r["setting"] == "int8 g=128" and r["role"] == "attn_q"]
    noise = sum(r["rms_error"] ** 2 * np.prod(r["shape"]) for r in sel)
    signal = sum(r["rms_error"] ** 2 * np.prod(r["shape"]) * 10 ** (r["sqnr_db"] / 10)
                 for r in sel)
    assert table["int8 g=128"]["attn_q"] == pytest.approx(10 * np.log10(signal / noise))
    zeroed = E.role_pivot(rows, "zeroed_fraction")
    assert all(0 <= v <= 1 for row in zeroed.rows for v in row[1:])
    mem = {r[0]: r for r in E.memory_summary(rows).rows}
    assert mem["int8 g=128"][1] == pytest.approx(8.25)
    assert mem["int4 per-tensor"][2] == pytest.approx((10_616_832 // 2 + 36 * 4) / 1e6)
    # the SQNR of all linear layers is the explorer's total
    assert mem["int8 g=128"][5] == pytest.approx(next(
        r["totals"]["sqnr_db"] for r in rows if r["setting"] == "int8 g=128"))


def test_plots(ckpt, rows):
    import matplotlib.pyplot as plt

    for fig in (E.plot_role_histograms(ckpt, roles=("attn_q", "mlp_down")),
                E.plot_channel_ranges(ckpt, [E.OUTLIER_TENSOR]), E.plot_error_heatmap(rows)):
        assert fig.axes
        plt.close(fig)
    heat = E.plot_error_heatmap(rows)
    assert min(t.get_fontsize() for t in heat.axes[0].texts) >= 8  # readable numbers
    plt.close(heat)


def test_show_tensor_and_widget(ckpt, capsys):
    import matplotlib.pyplot as plt

    fig = E.show_tensor(ckpt, "encoder.layer.1.attention.self.query.weight", 256, 4)
    assert "L1.attn_q 384x384, int4 g=256 (group 128)" in capsys.readouterr().out
    plt.close(fig)
    fig = E.show_tensor(ckpt, E.OUTLIER_TENSOR, 128, 8)
    assert "largest group scale (x the median scale): 99 (" in capsys.readouterr().out
    plt.close(fig)
    fig = E.show_tensor(ckpt, E.OUTLIER_TENSOR, "tensor", 8)
    assert "largest group scale" not in capsys.readouterr().out  # one scale: no rows to name
    plt.close(fig)
    widget = E.tensor_explorer(ckpt)
    assert widget.children[0].value == E.OUTLIER_TENSOR
    assert "tensor explorer" in repr(widget)
    plt.close("all")


def test_reference_check(minilm_dir):
    t = E.reference_check(models.SentenceEncoder.from_pretrained(minilm_dir))
    assert all(t.column("distance < 1e-04")) and all(t.column("distance < 1e-6"))
    assert t.column("tokens")[-1] == 256


# --- exercises --------------------------------------------------------------------------------

def _count_zeroed(w, group_size, bits):
    q = gqlearn.quantize(w, group_size, bits=bits).values
    return int(np.count_nonzero((q == 0) & (w != 0)))


def test_check_count_zeroed():
    assert E.check_count_zeroed(_count_zeroed)
    unsolved = E.check_count_zeroed(lambda w, g, b: None)
    assert not unsolved and "None" in unsolved.message

    def all_zeros(w, g, b):
        return int(np.count_nonzero(gqlearn.quantize(w, g, bits=b).values == 0))

    assert "nonzero" in E.check_count_zeroed(all_zeros).message
    off = E.check_count_zeroed(lambda w, g, b: _count_zeroed(w, g, b) + 1)
    assert not off and "Hint" in off.message
    boom = E.check_count_zeroed(lambda w, g, b: 1 / 0)
    assert "ZeroDivisionError" in boom.message
    # the checker never prints the expected count
    assert str(_count_zeroed(np.ones((1, 32), np.float32), 32, 4)) not in off.message.split(":")[0]


def test_check_linear_bytes(ckpt):
    n = 10_616_832
    right = n * 6 // 8 + 4 * (n // 48)
    report = models.explore(ckpt, 48, bits=6, roles=roles.LINEAR_ROLES)
    assert right == sum(r.bytes_after for r in report.results if r.quantized)
    assert E.check_linear_bytes(right, ckpt)
    assert not E.check_linear_bytes(None, ckpt)
    assert "scales" in E.check_linear_bytes(n * 6 // 8, ckpt).message
    assert "whole bytes" in E.check_linear_bytes(n + 4 * (n // 48), ckpt).message
    assert "4 bytes each" in E.check_linear_bytes(n * 6 // 8 + 2 * (n // 48), ckpt).message
    assert not E.check_linear_bytes(12.5, ckpt)
    wrong = E.check_linear_bytes(right + 1000, ckpt)
    assert not wrong and f"{right:,}" not in wrong.message and str(right) not in wrong.message
    assert E.check_linear_bytes(n // 2 + 4 * (n // 64), ckpt, group_size=64, bits=4)
