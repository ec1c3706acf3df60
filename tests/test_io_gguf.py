"""Reading GGUF files: round trips through small files we write, errors, and SmolLM2's file."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from gqlearn.io import fetch_model
from gqlearn.io.gguf import GGUFError, iter_gguf_tensors, open_gguf, read_metadata, tensor_infos
from gqlearn.llm import Llama, LlamaConfig, load_gguf, load_llama, read_llama_config

from gguf_writer import save_llama_gguf

CFG = LlamaConfig(vocab_size=40, hidden_size=64, n_layers=2, n_heads=4, n_kv_heads=2,
                  ffn_size=96, rope_base=5000.0, rms_eps=1e-6, context_length=128)


@pytest.fixture(scope="module")
def model() -> Llama:
    return Llama.random(CFG, seed=3)


@pytest.fixture(scope="module")
def f32_file(tmp_path_factory: pytest.TempPathFactory, model: Llama) -> Path:
    return save_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", CFG, model.weights)


def test_f32_round_trip_is_exact(f32_file: Path, model: Llama) -> None:
    config, weights = load_gguf(f32_file)
    assert config == CFG
    assert set(weights) == set(model.weights)
    for name, w in weights.items():
        assert w.dtype == np.float32 and w.flags.c_contiguous
        np.testing.assert_array_equal(w, model.weights[name])


@pytest.mark.parametrize("qtype, tol", [("F16", 1e-3), ("Q8_0", 1e-2), ("Q4_1", 0.12)])
def test_quantized_matrices_dequantize_close(tmp_path: Path, model: Llama, qtype: str,
                                             tol: float) -> None:
    path = save_llama_gguf(tmp_path / f"{qtype}.gguf", CFG, model.weights, matrix_type=qtype)
    infos = {name: (kind, shape) for name, kind, shape in tensor_infos(path)}
    assert infos["blk.0.ffn_down.weight"] == (qtype, (64, 96))
    assert infos["blk.0.attn_norm.weight"] == ("F32", (64,))
    loaded = load_llama(path)
    for name, w in model.weights.items():
        got = loaded.weights[name]
        assert got.shape == w.shape
        scale = np.abs(w).max()
        assert np.abs(got - w).max() <= tol * scale, name
    if qtype == "Q4_1":  # at most 16 distinct values in each block of 32
        blocks = loaded.weights["blk.0.ffn_up.weight"].reshape(-1, 32)
        distinct = [len(np.unique(b)) for b in blocks]
        assert max(distinct) <= 16


def test_iter_yields_one_tensor_at_a_time(f32_file: Path) -> None:
    it = iter_gguf_tensors(f32_file)
    assert isinstance(it, types.GeneratorType)
    name, first = next(it)
    assert isinstance(name, str) and first.dtype == np.float32
    assert len(list(it)) == len(CFG.weight_shapes()) - 1


def test_reader_can_be_shared(f32_file: Path) -> None:
    reader = open_gguf(f32_file)
    assert read_llama_config(reader) == CFG
    assert dict(iter_gguf_tensors(reader)).keys() == CFG.weight_shapes().keys()
    meta = read_metadata(reader)
    assert meta["general.architecture"] == "llama"
    assert meta["llama.attention.head_count_kv"] == 2


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        open_gguf("/nonexistent/model.gguf")


def test_not_a_gguf_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 this is a zip, not a gguf file")
    with pytest.raises(GGUFError, match=r"bad\.gguf.*magic"):
        open_gguf(bad)


@pytest.mark.parametrize("keep", [2, 30, 300])
def test_truncated_header_names_the_file(tmp_path: Path, f32_file: Path, keep: int) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(f32_file.read_bytes()[:keep])
    with pytest.raises(GGUFError, match=r"cut\.gguf"):
        load_gguf(cut)


def test_truncated_data_names_the_tensor(tmp_path: Path, f32_file: Path) -> None:
    data = f32_file.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:len(data) - 1000])
    names = [name for name, _, _ in tensor_infos(f32_file)]
    with pytest.raises(GGUFError,
                       match=r"cut\.gguf: tensor '(.*?)' .*past the end.*truncated") as err:
        open_gguf(cut)
    assert err.value.args[0].split("'")[1] in names


def test_non_finite_values_name_the_tensor(tmp_path: Path, model: Llama) -> None:
    weights = dict(model.weights)
    bad = weights["blk.1.attn_v.weight"].copy()
    bad[0, 0] = np.nan
    weights["blk.1.attn_v.weight"] = bad
    path = save_llama_gguf(tmp_path / "nan.gguf", CFG, weights)
    with pytest.raises(GGUFError, match=r"nan\.gguf.*'blk\.1\.attn_v\.weight'.*non-finite"):
        load_gguf(path)


def test_missing_tensor_and_wrong_shape(tmp_path: Path, model: Llama) -> None:
    weights = dict(model.weights)
    del weights["blk.1.ffn_gate.weight"]
    path = save_llama_gguf(tmp_path / "missing.gguf", CFG, weights)
    with pytest.raises(GGUFError, match=r"missing\.gguf.*blk\.1\.ffn_gate"):
        load_llama(path)


def test_wrong_architecture_and_missing_key(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(path, "gpt2")
    w.add_block_count(1)
    w.add_tensor("x", np.zeros(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFError, match="architecture is 'gpt2'"):
        read_llama_config(path)

    path = tmp_path / "nokey.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_vocab_size(10)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFError, match=r"nokey\.gguf.*'llama\.embedding_length' is missing"):
        read_llama_config(path)


def test_smollm2_file() -> None:
    path = fetch_model("smollm2", quiet=True)
    infos = tensor_infos(path)
    kinds: dict[str, int] = {}
    for _, kind, _ in infos:
        kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    assert dict((n, s) for n, _, s in infos)["blk.0.ffn_down.weight"] == (576, 1536)
    meta = read_metadata(path)
    assert meta["tokenizer.ggml.tokens"] == "<array of 49152>"
    assert meta["general.license"] == "apache-2.0"
