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
    assert sum(r[3] for r in inv.rows[:-1]) == ckpt.n_parameters


def test_weight_stats_and_outliers(ckpt):
    stats = {r[0]: r for r in rl.weight_stats(ckpt).rows}
    assert stats["mlp_down"][4] > 100 > stats["attn_q"][4]  # max/std
    assert stats["mlp_down"][6] == "L0.mlp_down"
    out = rl.outlier_channels(ckpt, roles=["mlp_down"])
    assert out.column("channel")[0] == 856 and len(out) == 6
    w = ckpt[rl.OUTLIER_TENSOR]
    assert out.column("max |w|")[0] == pytest.approx(float(np.abs(w).max()))
    rec = rl.recurring_channels(ckpt)
    assert all(n >= 3 for n in rec.column("matrices"))
    assert rl.column_absmax(w).shape == (1536,)


def test_sweep_rows(rows, ckpt):
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    assert settings == ["8b g128", "8b g256*", "8b tensor", "4b g128", "4b g256*", "4b tensor"]
    assert len(rows) == 6 * 36
    g256 = {r["label"]: r for r in rows if r["setting"] == "8b g256*"}
    assert g256["L0.attn_q"]["group_size"] == 128 and g256["L0.attn_q"]["backed_off"]
    assert g256["L0.mlp_down"]["group_size"] == 256 and not g256["L0.mlp_down"]["backed_off"]
    r = next(r for r in rows if r["setting"] == "8b g128" and r["label"] == "L2.attn_v")
    w = ckpt["encoder.layer.2.attention.self.value.weight"]
    ref = gqlearn.error_report(w, gqlearn.quantize(w, 128))
    assert r["sqnr_db"] == pytest.approx(ref.sqnr_db, rel=1e-9)


def test_pivots_and_memory(rows):
    pivot = rl.role_pivot(rows)
    table = {r[0]: r[1:] for r in pivot.rows}
    assert table["mlp_down"][2] < 15 < table["attn_q"][2]  # per tensor, 8 bits
    assert table["attn_q"][0] == pytest.approx(table["attn_q"][1])  # 256 backed off to 128
    # pooled SQNR equals the explorer's over the same tensors
    sel = [r for r in rows if r["setting"] == "8b g128" and r["role"] == "attn_q"]
    noise = sum(r["rms_error"] ** 2 * np.prod(r["shape"]) for r in sel)
    signal = sum(r["rms_error"] ** 2 * np.prod(r["shape"]) * 10 ** (r["sqnr_db"] / 10) for r in sel)
    assert table["attn_q"][0] == pytest.approx(10 * np.log10(signal / noise))
    zeroed = rl.role_pivot(rows, "zeroed_fraction")
    assert all(0 <= v <= 1 for row in zeroed.rows for v in row[1:])
    mem = {r[0]: r for r in rl.memory_summary(rows).rows}
    assert mem["8b g128"][1] == pytest.approx(8.25)
    assert mem["4b tensor"][3] == 10_616_832 // 2 + 36 * 4
    labels, settings, m = rl.heatmap_data(rows)
    assert m.shape == (36, 6) and labels[0] == "L0.attn_o" and settings[2] == "8b tensor"


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
    assert "L1.attn_q 384x384, 4b g256 (group 128, backed off)" in out
    plt.close(fig)
    widget = rl.tensor_explorer(ckpt)
    assert widget.children[0].value == "encoder.layer.0.attention.output.dense.weight"
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
    assert rows["8b g128"][1] == pytest.approx(8.25)
    assert rows["8b g128"][2] > 0.999 and rows["8b g128"][4:] == ("8/8", "8/8")
    assert rows["4b tensor"][2] < 0.6
    assert set(rankings) == {"float", "8b g128", "4b tensor"}
    search = rl.search_changes(data, rankings, "8b g128")
    assert len(search) == 24 and not any(search.column(""))
    changed = rl.search_changes(data, rankings, "4b tensor")
    assert "changed" in changed.column("")


def test_llama_memory():
    t = rl.llama_memory((64, 256))
    assert len(t) == 6
    seven = t.rows[0]
    assert seven[0] == "LLaMA-2 7B" and seven[2] == 8.5


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
    texts = [c["text"] for c in data["corpus"]]
    quant = encoder64.with_weights(models.fake_quantize(ckpt, "tensor", bits=8, roles=["mlp_down"]))
    answer = models.cosine_similarity(encoder64.encode(texts), quant.encode(texts)).mean()
    assert rl.check_mlp_down_cosine(answer, encoder64, ckpt, data)
    assert rl.check_mlp_down_cosine(answer + 2e-6, encoder64, ckpt, data)  # float32 round-off
    assert not rl.check_mlp_down_cosine("x", encoder64, ckpt, data)
    every = rl._corpus_cosine(encoder64, ckpt, data, 8, "tensor", models.LINEAR_ROLES)
    assert "every linear layer" in rl.check_mlp_down_cosine(every, encoder64, ckpt, data).message
    g128 = rl._corpus_cosine(encoder64, ckpt, data, 8, 128, ["mlp_down"])
    assert "group size 128" in rl.check_mlp_down_cosine(g128, encoder64, ckpt, data).message
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
