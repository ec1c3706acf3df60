"""The model explorer: per-tensor metrics, back-off, totals, JSON, and save/load round trips."""

import json
import math

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import gqlearn
from gqlearn.io import ModelFileError
from gqlearn.io.saved import FORMAT, FORMAT_PACKED, load_quantized
from gqlearn.models import explorer as explorer_module
from gqlearn.models.explorer import explore, fake_quantize, quantize_tensor, save_quantized

from models_helpers import make_sharded_bf16


@pytest.fixture
def arrays(rng):
    """A tiny BERT-named model: widths 48 and 96 (so 64 backs off to 16 and 32)."""
    p = "encoder.layer.0."
    return {
        "embeddings.word_embeddings.weight": rng.normal(size=(50, 48)).astype(np.float32),
        "embeddings.LayerNorm.weight": np.ones(48, np.float32),
        "embeddings.position_ids": np.arange(16, dtype=np.int64)[None],
        p + "attention.self.query.weight": rng.normal(size=(48, 48)).astype(np.float32),
        p + "attention.self.query.bias": rng.normal(size=48).astype(np.float32),
        p + "intermediate.dense.weight": rng.normal(size=(96, 48)).astype(np.float32),
        p + "output.dense.weight": (rng.normal(size=(48, 96)) * 3).astype(np.float32),
    }


def test_metrics_match_gqlearn_metrics(arrays):
    report = explore(arrays, 32, keep=True)
    for r in report.results:
        if not r.quantized:
            continue
        w = arrays[r.name]
        qt = gqlearn.quantize(w, r.group_size)
        assert np.array_equal(qt.values, report.quantized[r.name].values)
        ref = gqlearn.error_report(w, qt)
        assert r.max_abs_error == pytest.approx(ref.max_abs_error, rel=0, abs=0)
        assert r.sqnr_db == pytest.approx(ref.sqnr_db, rel=1e-9)
        assert r.zeroed_fraction == pytest.approx(ref.zeroed_fraction)
        assert r.rms_error == pytest.approx(math.sqrt(ref.mse), rel=1e-9)
        err = np.abs(qt.dequantize() - w)
        assert r.mean_abs_error == pytest.approx(float(err.mean(dtype=np.float64)), rel=1e-9)
        assert r.bytes_before == w.nbytes and r.bytes_after == qt.nbytes
        assert r.n_groups == qt.n_groups


def test_back_off_is_reported_per_tensor(arrays):
    report = explore(arrays, 64)
    q = report["encoder.layer.0.attention.self.query.weight"]
    assert (q.requested_group_size, q.group_size, q.backed_off) == (64, 16, True)
    up = report["encoder.layer.0.intermediate.dense.weight"]
    assert (up.group_size, up.backed_off) == (16, True)
    down = report["encoder.layer.0.output.dense.weight"]
    assert (down.group_size, down.backed_off) == (32, True)
    assert report.totals["n_backed_off"] == 4
    assert "backed off" in report.table() and "16*" in report.table()
    assert explore(arrays, 16).totals["n_backed_off"] == 0


def test_kept_tensors_and_reasons(arrays):
    report = explore(arrays, 16)
    kept = {r.name: r.kept_because for r in report.results if not r.quantized}
    assert kept == {"embeddings.LayerNorm.weight": "norm",
                    "embeddings.position_ids": "integer buffer",
                    "encoder.layer.0.attention.self.query.bias": "bias"}
    for r in report.results:
        if not r.quantized:
            assert r.bytes_after == r.bytes_before and r.max_abs_error is None
    only = explore(arrays, 16, roles=["mlp_up"])
    picked = [r.name for r in only.results if r.quantized]
    assert picked == ["encoder.layer.0.intermediate.dense.weight"]
    assert only["embeddings.word_embeddings.weight"].kept_because == "role not selected"
    with pytest.raises(ValueError, match="unknown roles"):
        explore(arrays, 16, roles=["attention"])


def test_totals_add_up(arrays):
    report = explore(arrays, 16)
    t = report.totals
    assert t["bytes_before"] == sum(np.asarray(a).nbytes for a in arrays.values())
    assert t["bytes_after"] == sum(r.bytes_after for r in report.results)
    assert t["parameters"] == sum(np.asarray(a).size for a in arrays.values())
    assert t["bits_per_quantized_weight"] == pytest.approx(8 + 32 / 16)
    q = [r for r in report.results if r.quantized]
    noise = sum(r.rms_error ** 2 * r.size for r in q)
    signal = sum(float(np.sum(arrays[r.name].astype(np.float64) ** 2)) for r in q)
    assert t["sqnr_db"] == pytest.approx(10 * math.log10(signal / noise), rel=1e-6)
    roles = {row["role"]: row for row in report.by_role()}
    assert roles["bias"]["quantized"] is False and roles["attn_q"]["quantized"] is True
    assert sum(row["bytes_after"] for row in roles.values()) == t["bytes_after"]


def test_smaller_groups_lower_error_more_bytes(arrays):
    r32, r16 = explore(arrays, "row"), explore(arrays, 16)
    assert r16.totals["sqnr_db"] > r32.totals["sqnr_db"]
    assert r16.totals["bytes_after"] > r32.totals["bytes_after"]
    four = explore(arrays, 16, bits=4)
    assert four.totals["sqnr_db"] < r16.totals["sqnr_db"] - 15
    assert four.totals["bits_per_quantized_weight"] == pytest.approx(4 + 2)


def test_per_tensor_and_row(arrays):
    rt = explore(arrays, "tensor", keep=True)
    r = rt["encoder.layer.0.output.dense.weight"]
    assert r.group_size == 48 * 96 and r.n_groups == 1
    assert rt.quantized[r.name].shape == (1, 48 * 96)
    assert "tensor" in rt.table()
    rr = explore(arrays, "row")
    assert rr["encoder.layer.0.output.dense.weight"].n_groups == 48


def test_json_is_strict_and_complete(arrays):
    zero = dict(arrays)
    zero["encoder.layer.0.attention.self.key.weight"] = np.zeros((4, 48), np.float32)
    report = explore(zero, 16)
    text = report.to_json()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert doc["group_size"] == 16 and doc["bits"] == 8 and doc["gqlearn"] == gqlearn.__version__
    assert len(doc["tensors"]) == len(zero)
    key = next(t for t in doc["tensors"] if t["name"].endswith("key.weight"))
    assert key["sqnr_db"] is None and key["max_abs_error"] == 0.0  # exact: inf -> null
    assert doc["totals"]["n_quantized"] == 5


def test_progress_bar_goes_to_stderr(arrays, capsys):
    explore(arrays, 16, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    explore(arrays, 16, progress=False)
    assert capsys.readouterr() == ("", "")


def test_sharded_bf16_checkpoint(tmp_path, rng):
    tensors = make_sharded_bf16(tmp_path, rng)
    report = explore(tmp_path, 64, keep=True)
    emb = report["model.embed_tokens.weight"]
    assert emb.dtype == "bfloat16" and emb.bytes_before == 32 * 64 * 2
    down = report["model.layers.0.mlp.down_proj.weight"]
    assert down.group_size == 32 and down.backed_off  # 96 is not a multiple of 64
    qt = gqlearn.quantize(tensors["model.layers.0.mlp.down_proj.weight"], 32)
    assert np.array_equal(report.quantized[down.name].values, qt.values)
    assert report.totals["n_kept"] == 5  # 4 layer norms + final norm


@pytest.mark.parametrize("group_size, bits, rounding", [
    (32, 8, "half_away"), (16, 4, "half_even"), ("tensor", 8, "half_away"), ("row", 3, "half_even"),
])
def test_save_load_bit_for_bit(tmp_path, arrays, group_size, bits, rounding):
    out = tmp_path / "sub" / "q.safetensors"
    report = explore(arrays, group_size, bits=bits, rounding=rounding, save=out, keep=True)
    model = load_quantized(out)
    assert model.metadata["format"] == (FORMAT if bits == 8 else FORMAT_PACKED)
    assert model.metadata["bits"] == str(bits) and model.metadata["rounding"] == rounding
    assert model.metadata["group_size"] == str(group_size)
    assert model.metadata["source"] == "<arrays>"
    assert set(model.names()) == set(arrays)
    for r in report.results:
        got = model.dequantize(r.name)
        if r.quantized:
            want = report.quantized[r.name].dequantize().reshape(r.shape)
            assert got.dtype == np.float32 and got.shape == r.shape
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
            qt = model.tensors[r.name]
            assert (qt.bits, qt.rounding, qt.group_size) == (bits, rounding, r.group_size)
        else:
            assert np.array_equal(got, arrays[r.name]) and got.dtype == arrays[r.name].dtype
    assert len(model.dequantized()) == len(arrays)
    assert [p.name for p in out.parent.iterdir()] == ["q.safetensors"]  # no temp files left


def test_save_bf16_source_keeps_bf16_norms(tmp_path, rng):
    make_sharded_bf16(tmp_path, rng)
    out = tmp_path / "q.safetensors"
    explore(tmp_path, 32, save=out)
    model = load_quantized(out)
    assert model.kept["model.norm.weight"].dtype == ml_dtypes.bfloat16
    assert json.loads(model.metadata["tensors"])["model.embed_tokens.weight"]["dtype"] == "bfloat16"


def test_save_is_atomic(tmp_path, arrays, monkeypatch):
    out = tmp_path / "q.safetensors"
    explore(arrays, 16, save=out)
    before = out.read_bytes()

    import gqlearn.models.explorer as explorer_module

    calls = []
    real = explorer_module.quantize_tensor

    def broken(*args, **kwargs):  # fails half-way through, after some tensors were written
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(explorer_module, "quantize_tensor", broken)
    with pytest.raises(OSError, match="disk full"):
        explore(arrays, 32, save=out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["q.safetensors"]


def test_save_needs_kept_tensors(arrays, tmp_path):
    with pytest.raises(ValueError, match="keep=True"):
        save_quantized(explore(arrays, 16), tmp_path / "x.safetensors")


def test_load_refuses_other_files(tmp_path, arrays):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": np.ones((2, 2), np.float32)}, str(plain))
    with pytest.raises(ModelFileError, match="not a gqlearn quantized model"):
        load_quantized(plain)


def test_load_detects_tampering(tmp_path, arrays):
    out = tmp_path / "q.safetensors"
    explore(arrays, 16, save=out)
    model = load_quantized(out)
    name = "encoder.layer.0.output.dense.weight"
    arrays_out = {}
    for n, qt in model.tensors.items():
        arrays_out[n + ".values"] = qt.values
        arrays_out[n + ".scales"] = qt.scales
    arrays_out.update(model.kept)
    bad = dict(arrays_out)
    bad[name + ".scales"] = -bad[name + ".scales"]
    save_file(bad, str(tmp_path / "bad.safetensors"), metadata=model.metadata)
    with pytest.raises(ModelFileError, match=f"'{name}'.*scales must be finite and positive"):
        load_quantized(tmp_path / "bad.safetensors")
    missing = dict(arrays_out)
    del missing[name + ".values"]
    save_file(missing, str(tmp_path / "missing.safetensors"), metadata=model.metadata)
    with pytest.raises(ModelFileError, match=f"'{name}'.*lacks"):
        load_quantized(tmp_path / "missing.safetensors")


def test_explore_refuses_already_quantized_file(tmp_path, arrays):
    out = tmp_path / "q.safetensors"
    explore(arrays, 16, save=out)
    with pytest.raises(ModelFileError, match="already quantized"):
        explore(out)


def test_quantize_tensor_and_fake_quantize(arrays):
    w = arrays["encoder.layer.0.output.dense.weight"]
    qt = quantize_tensor(w, 64, bits=4)
    assert qt.group_size == 32 and qt.bits == 4
    fq = fake_quantize(arrays, 32, bits=8)
    assert set(fq) == {"embeddings.word_embeddings.weight",
                       "encoder.layer.0.attention.self.query.weight",
                       "encoder.layer.0.intermediate.dense.weight",
                       "encoder.layer.0.output.dense.weight"}
    assert np.array_equal(fq["encoder.layer.0.output.dense.weight"],
                          gqlearn.quantize(w, 32).dequantize())
    only = fake_quantize(arrays, 32, roles=["mlp_down"])
    assert list(only) == ["encoder.layer.0.output.dense.weight"]


def test_errors_name_the_tensor(arrays):
    bad = dict(arrays, **{"encoder.layer.0.attention.self.key.weight":
                          np.full((4, 48), np.nan, np.float32)})
    with pytest.raises(ValueError, match="key.weight"):
        explore(bad, 16)


def test_default_model_totals(minilm_dir):
    """The real MiniLM: 384 is not a power of two, so 256 backs off to 128 on 384-wide rows."""
    r = explore(minilm_dir, 256)
    t = r.totals
    assert t["n_quantized"] == 40 and t["parameters"] == 22_713_728
    assert r["encoder.layer.0.attention.self.query.weight"].group_size == 128
    assert r["encoder.layer.0.output.dense.weight"].group_size == 256  # 1536 wide
    assert t["n_backed_off"] == 34
    assert 40 < t["sqnr_db"] < 45


def test_explorer_module_all():
    for name in explorer_module.__all__:
        assert hasattr(explorer_module, name)


@pytest.mark.parametrize("matrix_type, quantized_in_file", [("F32", False), ("Q8_0", True)])
def test_explore_gguf(tmp_path, matrix_type, quantized_in_file):
    from gqlearn.llm import Llama, LlamaConfig

    from gguf_writer import save_llama_gguf

    cfg = LlamaConfig(vocab_size=40, hidden_size=64, n_layers=2, n_heads=4, n_kv_heads=2,
                      ffn_size=96, rope_base=5000.0, rms_eps=1e-6, context_length=128)
    path = save_llama_gguf(tmp_path / "tiny.gguf", cfg, Llama.random(cfg, seed=1).weights,
                           matrix_type=matrix_type)
    report = explore(path, 32)
    assert report["blk.1.ffn_down.weight"].role == "mlp_down"
    assert report["blk.0.attn_q.weight"].quantized
    assert not report["blk.0.attn_norm.weight"].quantized
    assert bool(report.notes) == quantized_in_file
    if quantized_in_file:
        assert "stored quantized" in report.table() and "Q8_0" in report.notes[0]
        # int8 at group size 32 reproduces Q8_0 blocks exactly: no error at all
        assert report["blk.0.attn_q.weight"].max_abs_error == 0
    assert json.loads(report.to_json())["notes"] == report.notes


def _header_bytes(path):
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


@pytest.mark.parametrize("bits, group_size", [(8, 32), (4, 32), (4, "tensor"), (3, 16), (2, "row"),
                                              (6, 16)])
def test_saved_file_is_the_reported_bytes_plus_header(tmp_path, arrays, bits, group_size):
    out = tmp_path / "q.safetensors"
    report = explore(arrays, group_size, bits=bits, save=out, keep=True)
    data = out.stat().st_size - _header_bytes(out)
    assert data == sum(r.bytes_after for r in report.results)
    assert data == report.totals["bytes_after"]
    for qt in report.quantized.values():
        assert qt.values_nbytes == qt.packed.nbytes  # what the report counts is what is held
    model = load_quantized(out)
    for name, qt in report.quantized.items():
        assert np.array_equal(model.tensors[name].packed, qt.packed)


def test_4bit_file_holds_half_the_values_bytes_of_8bit(tmp_path, arrays):
    sizes = {}
    for bits in (8, 4):
        out = tmp_path / f"q{bits}.safetensors"
        report = explore(arrays, 32, bits=bits, save=out, keep=True)
        sizes[bits] = sum(qt.values_nbytes for qt in report.quantized.values())
        raw = load_quantized(out)
        n = sum(qt.size for qt in raw.tensors.values())
        assert sizes[bits] == n * bits // 8
    assert sizes[4] * 2 == sizes[8]


def test_loads_unpacked_sub8bit_file_of_format_v1(tmp_path, arrays):
    out = tmp_path / "q.safetensors"
    report = explore(arrays, 16, bits=4, save=out, keep=True)
    model = load_quantized(out)
    old = {n + ".values": qt.values for n, qt in model.tensors.items()}  # int8, one per byte
    old.update({n + ".scales": qt.scales for n, qt in model.tensors.items()})
    old.update(model.kept)
    v1 = tmp_path / "v1.safetensors"
    save_file(old, str(v1), metadata={**model.metadata, "format": FORMAT})
    back = load_quantized(v1)
    for name, qt in report.quantized.items():
        assert np.array_equal(back.tensors[name].packed, qt.packed)
        assert back.tensors[name].bits == 4


def test_load_rejects_corrupt_packed_field(tmp_path, arrays):
    out = tmp_path / "q.safetensors"
    explore(arrays, 16, bits=4, save=out)
    model = load_quantized(out)
    name = "encoder.layer.0.output.dense.weight"
    tensors = {n + ".values": qt.packed for n, qt in model.tensors.items()}
    tensors.update({n + ".scales": qt.scales for n, qt in model.tensors.items()})
    tensors.update(model.kept)
    bad = tensors[name + ".values"].copy()
    bad[0, 0] = 0  # field 0 is -8, outside the 4-bit range
    tensors[name + ".values"] = bad
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=model.metadata)
    with pytest.raises(ModelFileError, match=f"'{name}'.*outside"):
        load_quantized(tmp_path / "bad.safetensors")
    tensors[name + ".values"] = model.tensors[name].values  # unpacked bytes in a packed file
    save_file(tensors, str(tmp_path / "bad2.safetensors"), metadata=model.metadata)
    with pytest.raises(ModelFileError, match=f"'{name}'.*stored as uint8"):
        load_quantized(tmp_path / "bad2.safetensors")
