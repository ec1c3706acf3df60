"""Chapter 04 support: tables, sweeps, plots, embedding comparisons and exercise checkers."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gqlearn  # noqa: E402
from gqlearn import models  # noqa: E402
from gqlearn.lessons import real_layers as rl  # noqa: E402
from models_helpers import minilm_dir  # noqa: E402,F401 (fixture)


@pytest.fixture(scope="module")
def ckpt(minilm_dir):  # noqa: F811
    return models.open_checkpoint(minilm_dir)


@pytest.fixture(scope="module")
def rows(ckpt):
    return rl.sweep_linear_layers(ckpt, group_sizes=(128, 256, "tensor"), bits=(8, 4))


@pytest.fixture(scope="module")
def encoder64(minilm_dir):  # noqa: F811
    return models.SentenceEncoder.from_pretrained(minilm_dir, dtype=np.float64)


@pytest.fixture(scope="module")
def data():
    return models.load_sentences()


def test_inventory_and_config(ckpt, minilm_dir):  # noqa: F811
    config = rl.config_table(minilm_dir)
    assert dict(config.rows)["hidden_size"] == 384
    inv = rl.role_inventory(ckpt)
    by_role = {r[0]: r for r in inv.rows}
    assert by_role["total"][3] == 22_713_728
    assert by_role["mlp_down"][1:4] == (6, "384x1536", 6 * 384 * 1536)
    assert by_role["norm"][5] == "kept" and by_role["other"][5] == "mixed"
    assert by_role["embedding"][5:] == ("quantized", "float")
    assert by_role["mlp_up"][6] == "quantized"
    assert sum(r[3] for r in inv.rows[:-1]) == ckpt.n_parameters


def test_weight_stats_and_outliers(ckpt):
    stats = {r[0]: r for r in rl.weight_stats(ckpt).rows}
    assert stats["mlp_down"][4] > 100 > stats["attn_q"][4]  # max/std
    assert stats["mlp_down"][6] == "L0.mlp_down"
    assert stats["embedding"][6] == "position emb"
    out = rl.outlier_channels(ckpt, roles=["mlp_down"])
    assert out.column("channel")[0] == 856 and len(out) == 6
    w = ckpt[rl.OUTLIER_TENSOR]
    assert out.column("max |w|")[0] == pytest.approx(float(np.abs(w).max()))
    rec = rl.recurring_channels(ckpt)
    assert all(n >= 4 for n in rec.column("matrices"))
    by_dim = {r[0]: r for r in rec.rows}
    # dim 99 is an outlier of the embeddings, of matrices reading the hidden state and of the
    # output rows of layer 0's mlp_down, whose largest weight sits in row 99
    assert "word" in by_dim[99][2] and "mlp_down L0" in by_dim[99][4]
    assert np.unravel_index(np.abs(w).argmax(), w.shape)[0] == 99
    # mlp_down's columns are intermediate features, never counted as hidden dims
    assert all("mlp_down" not in r[3] for r in rec.rows)
    assert rl._layers_by_role([("attn_k", 2), ("attn_k", 0), ("mlp_up", 1)]) == \
        "attn_k L0,2; mlp_up L1"
    assert rl.column_absmax(w).shape == (1536,)


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


def test_setting_label():
    assert rl.setting_label(8, 32) == "int8 g=32"
    assert rl.setting_label(4, "row") == "int4 per-row"
    assert rl.setting_label(8, "per-tensor") == "int8 per-tensor"


def test_pivots_and_memory(rows):
    pivot = rl.role_pivot(rows)
    assert pivot.columns[0] == "setting" and "mlp_down" in pivot.columns
    table = {r[0]: dict(zip(pivot.columns[1:], r[1:])) for r in pivot.rows}
    assert table["int8 per-tensor"]["mlp_down"] < 15 < table["int8 per-tensor"]["attn_q"]
    assert table["int8 g=128"]["attn_q"] == pytest.approx(table["int8 g=256*"]["attn_q"])
    # pooled SQNR from the explorer's float64 sums, and from its per-tensor rms and SQNR
    sel = [r for r in rows if r["setting"] == "int8 g=128" and r["role"] == "attn_q"]
    noise = sum(r["rms_error"] ** 2 * np.prod(r["shape"]) for r in sel)
    signal = sum(r["rms_error"] ** 2 * np.prod(r["shape"]) * 10 ** (r["sqnr_db"] / 10) for r in sel)
    assert table["int8 g=128"]["attn_q"] == pytest.approx(10 * np.log10(signal / noise))
    zeroed = rl.role_pivot(rows, "zeroed_fraction")
    assert all(0 <= v <= 1 for row in zeroed.rows for v in row[1:])
    mem = {r[0]: r for r in rl.memory_summary(rows).rows}
    assert mem["int8 g=128"][1] == pytest.approx(8.25)
    assert mem["int4 per-tensor"][3] == 10_616_832 // 2 + 36 * 4
    # the SQNR of all linear layers is the explorer's total; per tensor mlp_down dominates it
    assert mem["int8 g=128"][6] == pytest.approx(next(
        r["totals"]["sqnr_db"] for r in rows if r["setting"] == "int8 g=128"))
    assert mem["int8 per-tensor"][7] > 90 > 50 > mem["int8 g=128"][7]
    labels, settings, m = rl.heatmap_data(rows)
    assert m.shape == (36, 6) and labels[0] == "L0.attn_o" and settings[2] == "int8 per-tensor"


def test_bits_gap(rows):
    gap = rl.bits_gap(rows)
    assert "20 log10(127/7) = 25.17 dB" in gap.notes[0]
    by = {r[0]: dict(zip(gap.columns[1:], r[1:])) for r in gap.rows}
    assert list(by) == ["g=128", "g=256", "per-tensor"]
    expected = 20 * np.log10(127 / 7)
    assert by["g=128"]["attn_q"] == pytest.approx(expected, abs=0.1)
    # where int4 rounds nearly all of a matrix to 0, the gap collapses
    assert by["per-tensor"]["mlp_down"] < expected / 2


def test_backoff_table(ckpt):
    t = rl.backoff_table(ckpt, 256)
    rows = {r[0]: r for r in t.rows}
    assert rows["attn_q"][3:] == (128, 192, 128)
    assert rows["mlp_down"][3:] == (256, 256, 256)


def test_plots(ckpt, rows):
    import matplotlib.pyplot as plt

    for fig in (rl.plot_role_histograms(ckpt, roles=("attn_q", "mlp_down")),
                rl.plot_channel_ranges(ckpt, [rl.OUTLIER_TENSOR]),
                rl.plot_error_heatmap(rows)):
        assert fig.axes
        plt.close(fig)


def test_show_tensor_and_widget(ckpt, capsys):
    import matplotlib.pyplot as plt

    fig = rl.show_tensor(ckpt, "encoder.layer.1.attention.self.query.weight", 256, 4)
    out = capsys.readouterr().out
    assert "L1.attn_q 384x384, int4 g=256 (group 128, backed off)" in out
    plt.close(fig)
    fig = rl.show_tensor(ckpt, rl.OUTLIER_TENSOR, 128, 8)
    out = capsys.readouterr().out
    # the rows holding layer 0 mlp_down's outliers: the recurring hidden dims
    assert "largest group scale (x the median scale): 99 (" in out
    plt.close(fig)
    fig = rl.show_tensor(ckpt, rl.OUTLIER_TENSOR, "tensor", 8)
    assert "largest group scale" not in capsys.readouterr().out  # one scale: no rows to name
    plt.close(fig)
    widget = rl.tensor_explorer(ckpt)
    assert widget.children[0].value == "encoder.layer.0.attention.output.dense.weight"
    assert "running kernel" in widget._repr_mimebundle_()["text/plain"]
    plt.close("all")


def test_reference_check(minilm_dir):  # noqa: F811
    enc = models.SentenceEncoder.from_pretrained(minilm_dir)
    t = rl.reference_check(enc)
    assert all(t.column("distance < 1e-04")) and all(t.column("distance < 1e-6"))
    assert t.column("tokens")[-1] == 256


def test_compare_embeddings_and_search(encoder64, ckpt, data):
    table, rankings = rl.compare_embeddings(encoder64, ckpt, data,
                                            settings=[(8, 128), (4, "tensor")])
    rows = {r[0]: r for r in table.rows}
    assert rows["int8 g=128"][1] == pytest.approx(8.25)
    assert rows["int8 g=128"][2] > 0.999 and rows["int8 g=128"][4:] == ("8/8", "8/8")
    assert rows["int4 per-tensor"][2] < 0.6
    assert "32 corpus sentences in 8 topics + 8 queries = 40 sentences" in table.notes[0]
    assert set(rankings) == {"float", "int8 g=128", "int4 per-tensor"}
    search = rl.search_changes(data, rankings, "int8 g=128", only_changed=False)
    assert len(search) == 24 and not any(search.column(""))
    assert len(rl.search_changes(data, rankings, "int8 g=128")) == 0
    assert "8 of 8 queries keep their top 3" in search.notes[0]
    changed = rl.search_changes(data, rankings, "int4 per-tensor")
    assert "changed" in changed.column("")
    n_same = int(changed.notes[0].split(": ")[1].split(" of ")[0])
    assert len(changed) == 3 * (8 - n_same)


def test_where_the_bytes_are(ckpt):
    t = rl.where_the_bytes_are(ckpt)
    assert [r[0] for r in t.rows][2:] == ["LLaMA-2 7B", "LLaMA-2 13B", "LLaMA-2 70B"]
    linear, everything = t.rows[0], t.rows[1]
    assert linear[4] == pytest.approx(100 * 10_616_832 / 22_713_728)
    assert linear[5] == pytest.approx(32 / 8.25) and everything[4] > 99
    report = models.explore(ckpt, 128, roles=models.LINEAR_ROLES)
    assert linear[6] == pytest.approx(report.totals["compression_ratio"])
    assert everything[6] > 2 * linear[6]  # half of MiniLM is its embedding table
    seventy = t.rows[-1]
    assert seventy[5] == pytest.approx(16 / 8.25) and seventy[6] == pytest.approx(1.926, abs=1e-3)


# --- exercises --------------------------------------------------------------------------------

def test_check_zeroed_in_group(ckpt):
    assert rl.check_zeroed_in_group(127, ckpt)
    assert not rl.check_zeroed_in_group(None, ckpt)
    eight = rl.check_zeroed_in_group(107, ckpt)
    assert not eight and "8 bits" in eight.message
    assert "never 0" in rl.check_zeroed_in_group(128, ckpt).message
    assert "survive" in rl.check_zeroed_in_group(1, ckpt).message
    assert not rl.check_zeroed_in_group(5, ckpt)


def test_check_mlp_down_cosine(encoder64, ckpt, data):
    texts = [s["text"] for s in data["corpus"] + data["queries"]]
    quant = encoder64.with_weights(models.fake_quantize(ckpt, "tensor", bits=8, roles=["mlp_down"]))
    answer = models.cosine_similarity(encoder64.encode(texts), quant.encode(texts)).mean()
    ok = rl.check_mlp_down_cosine(answer, encoder64, ckpt, data)
    assert ok
    assert rl.check_mlp_down_cosine(answer + 2e-6, encoder64, ckpt, data)  # float32 round-off
    assert not rl.check_mlp_down_cosine("x", encoder64, ckpt, data)
    # the comparison it prints is the int8 per-tensor row of compare_embeddings
    table, _ = rl.compare_embeddings(encoder64, ckpt, data, settings=[(8, "tensor")])
    assert f"({table.rows[0][2]:.6f}, the int8 per-tensor row" in ok.message
    every = rl._sentences_cosine(encoder64, ckpt, data, 8, "tensor", models.LINEAR_ROLES)
    assert "every linear layer" in rl.check_mlp_down_cosine(every, encoder64, ckpt, data).message
    corpus_only = rl._sentences_cosine(encoder64, ckpt, data, 8, "tensor", ["mlp_down"],
                                       which="corpus")
    assert "queries" in rl.check_mlp_down_cosine(corpus_only, encoder64, ckpt, data).message
    g128 = rl._sentences_cosine(encoder64, ckpt, data, 8, 128, ["mlp_down"])
    assert "group size 128" in rl.check_mlp_down_cosine(g128, encoder64, ckpt, data).message
    low = rl._sentences_cosine(encoder64, ckpt, data, 8, "tensor", ["mlp_down"], stat="min")
    assert "minimum" in rl.check_mlp_down_cosine(low, encoder64, ckpt, data).message
    assert not rl.check_mlp_down_cosine(0.5, encoder64, ckpt, data)


def test_check_linear_bytes(ckpt):
    n = 10_616_832
    right = n * 6 // 8 + 4 * (n // 48)
    report = models.explore(ckpt, 48, bits=6, roles=models.LINEAR_ROLES)
    assert right == sum(r.bytes_after for r in report.results if r.quantized)
    assert rl.check_linear_bytes(right, ckpt)
    assert "scales" in rl.check_linear_bytes(n * 6 // 8, ckpt).message
    assert "packed" in rl.check_linear_bytes(n + 4 * (n // 48), ckpt).message
    assert "4 bytes each" in rl.check_linear_bytes(n * 6 // 8 + 2 * (n // 48), ckpt).message
    assert not rl.check_linear_bytes(12.5, ckpt)
    assert not rl.check_linear_bytes(right + 1000, ckpt)
    assert rl.check_linear_bytes(n // 2 + 4 * (n // 64), ckpt, group_size=64, bits=4)
