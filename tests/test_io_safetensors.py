"""Reading safetensors files and sharded checkpoints, and refusing damaged ones clearly."""

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from gqlearn.io import ModelFileError
from gqlearn.io.safetensors import Checkpoint, PickleRefusedError, open_checkpoint, read_header

from models_helpers import make_sharded_bf16


def write_raw(path, header: dict, data: bytes) -> None:
    """Write a safetensors file with an arbitrary (possibly lying) header."""
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def split(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


@pytest.fixture
def small(tmp_path, rng):
    tensors = {"a.weight": rng.normal(size=(4, 6)).astype(np.float32),
               "a.bias": rng.normal(size=6).astype(np.float16),
               "b.weight": rng.normal(size=(3, 8)).astype(ml_dtypes.bfloat16),
               "ids": np.arange(5, dtype=np.int64)}
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path), metadata={"source": "test"})
    return path, tensors


# --- reading --------------------------------------------------------------------------------

def test_single_file_dtypes_and_values(small):
    path, tensors = small
    with open_checkpoint(path) as ckpt:
        assert ckpt.keys() == list(read_header(path)[0])
        assert set(ckpt) == set(tensors) and len(ckpt) == 4
        for name, expected in tensors.items():
            got = ckpt[name]
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert np.array_equal(got.view(np.uint8), expected.view(np.uint8))
        assert ckpt.info("b.weight").dtype == "BF16" and ckpt.info("b.weight").is_float
        assert not ckpt.info("ids").is_float
        assert ckpt.metadata == {"source": "test"}
        assert ckpt.n_parameters == 24 + 6 + 24 + 5
        assert ckpt.nbytes == 96 + 12 + 48 + 40
        assert "4 tensors" in repr(ckpt)


def test_directory_and_items_one_at_a_time(small):
    path, tensors = small
    ckpt = open_checkpoint(path.parent)
    names = [name for name, _ in ckpt.items()]
    assert names == ckpt.keys()
    with pytest.raises(KeyError, match="no tensor 'nope'"):
        ckpt.info("nope")


def test_sharded_bf16_checkpoint(tmp_path, rng):
    tensors = make_sharded_bf16(tmp_path, rng)
    for target in (tmp_path, tmp_path / "model.safetensors.index.json"):
        ckpt = open_checkpoint(target)
        assert len(ckpt.files) == 2 and set(ckpt) == set(tensors)
        for name, expected in tensors.items():
            got = ckpt.get(name)
            assert got.dtype == ml_dtypes.bfloat16
            assert np.array_equal(got.view(np.uint16), expected.view(np.uint16))
        assert "total_size" in ckpt.metadata["index"]
        assert "2 shards" in repr(ckpt)


def test_several_files_without_index(tmp_path):
    save_file({"x": np.zeros((2, 2), np.float32)}, str(tmp_path / "a.safetensors"))
    save_file({"y": np.ones((2, 2), np.float32)}, str(tmp_path / "b.safetensors"))
    assert open_checkpoint(tmp_path).keys() == ["x", "y"]
    save_file({"x": np.ones((2, 2), np.float32)}, str(tmp_path / "c.safetensors"))
    with pytest.raises(ModelFileError, match="c.safetensors.*'x'.*unique"):
        open_checkpoint(tmp_path)


# --- refusing pickles -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.pth", "x.ckpt"])
def test_pickle_files_are_refused_without_reading(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x80\x04 not really a pickle")  # never opened as a pickle anyway
    with pytest.raises(PickleRefusedError, match="Convert it to safetensors") as info:
        open_checkpoint(path)
    assert info.value.file == path
    with pytest.raises(PickleRefusedError):
        open_checkpoint(tmp_path)  # a directory holding only a pickle


def test_pickle_index_is_refused(tmp_path):
    (tmp_path / "pytorch_model-00001-of-00001.bin").write_bytes(b"x")
    index = tmp_path / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "pytorch_model-00001-of-00001.bin"}}))
    with pytest.raises(PickleRefusedError, match="unpickling"):
        open_checkpoint(index)


# --- damaged files --------------------------------------------------------------------------

def test_truncated_file_names_file_and_tensor(small):
    path, _ = small
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(ModelFileError, match="truncated") as info:
        open_checkpoint(path)
    assert info.value.file == path and info.value.tensor is not None
    assert str(path) in str(info.value) and repr(info.value.tensor) in str(info.value)


def test_truncated_header(small):
    path, _ = small
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ModelFileError, match="truncated: the header"):
        read_header(path)


@pytest.mark.parametrize("content", [b"", b"abc", b"\xff" * 8 + b"{}"])
def test_not_a_safetensors_file(tmp_path, content):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not a safetensors file"):
        read_header(path)


def test_header_not_json(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 5) + b"{oops")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        read_header(path)


def test_header_lies_about_offsets(small):
    path, _ = small
    header, data = split(path)
    header["a.weight"]["data_offsets"][1] += 4  # says 100 bytes, shape says 96
    write_raw(path, header, data)
    with pytest.raises(ModelFileError, match="inconsistent.*96 bytes") as info:
        read_header(path)
    assert info.value.tensor == "a.weight"


def test_header_lies_about_shape(small):
    path, _ = small
    header, data = split(path)
    header["a.weight"]["shape"] = [5, 6]
    write_raw(path, header, data)
    with pytest.raises(ModelFileError, match="'a.weight'.*shape \\(5, 6\\)"):
        open_checkpoint(path)


def test_overlapping_offsets(tmp_path):
    header = {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    path = tmp_path / "o.safetensors"
    write_raw(path, header, bytes(12))
    with pytest.raises(ModelFileError, match="'y'.*overlap tensor 'x'"):
        read_header(path)


def test_gap_and_trailing_bytes(tmp_path):
    gap = {"x": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    path = tmp_path / "g.safetensors"
    write_raw(path, gap, bytes(12))
    with pytest.raises(ModelFileError, match="'x'.*belong to no tensor"):
        read_header(path)
    tail = {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    write_raw(path, tail, bytes(12))
    with pytest.raises(ModelFileError, match="4 bytes after the last tensor"):
        read_header(path)


def test_offsets_past_the_end(tmp_path):
    header = {"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    path = tmp_path / "p.safetensors"
    write_raw(path, header, bytes(8))
    with pytest.raises(ModelFileError, match="'x'.*truncated.*holds only 8 bytes"):
        open_checkpoint(path)


def test_unknown_dtype(small):
    path, _ = small
    header, data = split(path)
    header["a.bias"]["dtype"] = "Q4_K"
    write_raw(path, header, data)
    with pytest.raises(ModelFileError, match="'a.bias'.*unknown dtype 'Q4_K'"):
        open_checkpoint(path)


def test_known_but_unsupported_dtype_fails_on_read(tmp_path):
    header = {"x": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]},
              "y": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    path = tmp_path / "f8.safetensors"
    write_raw(path, header, bytes(8))
    ckpt = open_checkpoint(path)
    assert ckpt.get("y").tolist() == [0.0]
    with pytest.raises(ModelFileError, match="'x'.*F8_E4M3 is not supported"):
        ckpt.get("x")


@pytest.mark.parametrize("entry, match", [
    ({"dtype": "F32", "shape": [2]}, "needs dtype, shape and data_offsets"),
    ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}, "invalid shape"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, "invalid data_offsets"),
])
def test_malformed_entries(tmp_path, entry, match):
    path = tmp_path / "m.safetensors"
    write_raw(path, {"x": entry}, bytes(8))
    with pytest.raises(ModelFileError, match=match):
        read_header(path)


def test_missing_shard(tmp_path, rng):
    make_sharded_bf16(tmp_path, rng)
    shard = tmp_path / "model-00002-of-00002.safetensors"
    shard.unlink()
    with pytest.raises(ModelFileError, match="missing shard") as info:
        open_checkpoint(tmp_path)
    assert info.value.file == shard and info.value.tensor is not None


def test_index_lists_tensor_the_shard_lacks(tmp_path, rng):
    make_sharded_bf16(tmp_path, rng)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelFileError, match="'model.layers.9.mlp.up_proj.weight'.*does not"):
        open_checkpoint(tmp_path)


@pytest.mark.parametrize("text", ["not json", json.dumps({"weights": {}}),
                                  json.dumps({"weight_map": {"a": 3}})])
def test_bad_index(tmp_path, text):
    (tmp_path / "model.safetensors.index.json").write_text(text)
    with pytest.raises(ModelFileError, match="model.safetensors.index.json"):
        open_checkpoint(tmp_path)


def test_damaged_shard_is_named(tmp_path, rng):
    make_sharded_bf16(tmp_path, rng)
    shard = tmp_path / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(ModelFileError, match="model-00001-of-00002.safetensors.*truncated"):
        open_checkpoint(tmp_path)


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model"):
        open_checkpoint(tmp_path / "nope")
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(FileNotFoundError, match="holds no .safetensors"):
        open_checkpoint(tmp_path)


def test_checkpoint_is_a_checkpoint(small):
    assert isinstance(open_checkpoint(small[0]), Checkpoint)
