"""Fuzzing the model-file readers: hostile files load correctly or fail with ModelFileError.

Valid safetensors files, sharded indexes, GGUF files and gqlearn's saved quantized files are
mutated at random (truncation, byte flips, 32/64-bit counts overwritten with extreme values,
header and metadata JSON edits: wrong types, huge or negative numbers, escaping shard names,
deep nesting), and read back.  Every outcome must be a correct load (each tensor of the
dtype and shape its header declares) or :class:`gqlearn.io.ModelFileError`; never another
exception, and never a peak allocation (tracemalloc) beyond a small multiple of the file's
size.  The command line's contract is checked over a corpus of bad files: exit status 1, one
line on stderr naming the file, no traceback.

Example counts are fixed per test (``FUZZ_EXAMPLES``) so that the suite runs in well under a
minute on the 2-core CI machine, whatever hypothesis profile is loaded.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from gqlearn.io import ModelFileError, load_quantized, open_checkpoint
from gqlearn.io.gguf import iter_gguf_tensors, open_gguf, read_metadata, tensor_infos
from gqlearn.io.safetensors import INDEX_NAME
from gqlearn.llm import Llama, LlamaConfig, read_llama_config
from gqlearn.models import explore

from gguf_writer import save_llama_gguf

# Examples per fuzz test (7 tests): the hypothesis profile's count (conftest.py: 150 under CI,
# 60 otherwise), capped at 150 so that the file runs in about 30 s on the 2-core CI machine;
# GQLEARN_FUZZ_EXAMPLES overrides it for a longer hunt.
FUZZ_EXAMPLES = int(os.environ.get("GQLEARN_FUZZ_EXAMPLES",
                                   min(settings.default.max_examples, 150)))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Peak allocation allowed for reading a file.  Parsed JSON costs Python objects, up to ~25 bytes
# per byte of header for a small file (a list of ints: an 8-byte pointer per 2-byte "1,"),
# tending to ~5 for megabyte headers (test_reliability.py); tensors add a few copies of their
# bytes (read, then dequantized to float32); the constant covers the reader's fixed objects
# and what a code path allocates once on first use (seen up to 0.5 MB).  Measured worst cases:
# 360 KB for a 13.7 KB safetensors file, 486 KB for a 15.7 KB saved model, 82 KB for an
# 8.6 KB GGUF file.  A reader that trusted a length field (a 2**63-byte header, 2**40 tensors,
# a 4 GiB string) would blow through it by orders of magnitude.
MEMORY_FACTOR = 32
MEMORY_CONSTANT = 1 << 20


# --- valid files ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("valid")
    rng = np.random.default_rng(7)
    out: dict[str, Path] = {}

    out["safetensors"] = d / "model.safetensors"
    save_file({"model.layers.0.mlp.up_proj.weight": rng.normal(size=(4, 32)).astype(np.float32),
               "model.layers.0.input_layernorm.weight": np.ones(16, np.float16),
               "model.embed_tokens.weight": rng.normal(size=(2, 16)).astype(ml_dtypes.bfloat16),
               "position_ids": np.arange(3, dtype=np.int64)},
              str(out["safetensors"]), metadata={"format": "pt"})

    sharded = d / "sharded"
    sharded.mkdir()
    weight_map = {}
    for s in range(2):
        shard = f"model-{s + 1:05d}-of-00002.safetensors"
        tensors = {f"model.layers.{s}.self_attn.q_proj.weight":
                   rng.normal(size=(2, 32)).astype(np.float32),
                   f"model.layers.{s}.input_layernorm.weight": np.ones(32, np.float32)}
        save_file(tensors, str(sharded / shard))
        weight_map.update(dict.fromkeys(tensors, shard))
    (sharded / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": 768},
                                                  "weight_map": weight_map}))
    out["index"] = sharded / INDEX_NAME

    cfg = LlamaConfig(vocab_size=8, hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=1,
                      ffn_size=32, context_length=16)
    tokens = [chr(ord("a") + i) for i in range(8)]
    out["gguf"] = save_llama_gguf(d / "tiny.gguf", cfg, Llama.random(cfg, seed=1).weights,
                                  matrix_type="Q8_0",
                                  tokenizer={"tokens": tokens, "merges": ["a b", "c d"]})

    out["quantized"] = d / "q.safetensors"
    explore({"layers.0.mlp.up_proj.weight": rng.normal(size=(4, 64)).astype(np.float32),
             "layers.0.mlp.down_proj.weight": rng.normal(size=(2, 96)).astype(np.float16),
             "layers.0.norm.weight": np.ones(64, np.float32)}, 32, save=out["quantized"])
    return out


# --- loaders: read everything, check what was read ------------------------------------------
def load_safetensors(path: Path) -> None:
    with open_checkpoint(path) as ckpt:
        for name in ckpt:
            info = ckpt.info(name)
            if info.dtype not in ("F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8",
                                  "BOOL"):
                continue  # a known dtype numpy cannot hold: get() refuses it, tested elsewhere
            array = ckpt.get(name)
            assert array.shape == info.shape and array.nbytes == info.nbytes


def load_gguf(path: Path) -> None:
    reader = open_gguf(path)
    read_metadata(reader)
    infos = tensor_infos(reader)
    for (name, array), (info_name, _, shape) in zip(iter_gguf_tensors(reader), infos, strict=True):
        assert name == info_name and array.shape == shape and array.dtype == np.float32
        assert np.isfinite(array).all()
    read_llama_config(reader)


def load_saved(path: Path) -> None:
    model = load_quantized(path)
    for name in model.names():
        w = model.dequantize(name)
        assert w.shape == model.shapes[name]
        if name in model.tensors:
            assert w.dtype == np.float32 and np.isfinite(w).all()


def check(loader, path: Path, fuzzing: bool = True) -> None:
    """``loader(path)`` loads correctly or raises ModelFileError, within the memory bound."""
    size = path.stat().st_size if path.is_file() else sum(
        p.stat().st_size for p in path.parent.iterdir())
    tracemalloc.start()
    try:
        loader(path)
        if fuzzing:
            event("loaded")
    except ModelFileError as exc:
        if not fuzzing:
            raise
        event(f"refused: {type(exc).__name__}")
        assert str(path.parent) in str(exc)  # names the file (or the index's shard)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= MEMORY_FACTOR * size + MEMORY_CONSTANT, (peak, size)


def test_valid_files_load(files):
    for loader, kind in [(load_safetensors, "safetensors"), (load_safetensors, "index"),
                         (load_gguf, "gguf"), (load_saved, "quantized")]:
        loader(files[kind])  # warms caches too, so that peaks measure the reading only
        check(loader, files[kind], fuzzing=False)


# --- mutations ------------------------------------------------------------------------------
EXTREME_INTS = [0, 1, 7, 8, 255, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**62,
                2**63 - 1, 2**63, 2**64 - 1]


@st.composite
def byte_mutations(draw, blob: bytes) -> bytes:
    """Truncation, byte flips, an extreme 32/64-bit integer, or a slice cut out/inserted."""
    n = len(blob)
    kind = draw(st.sampled_from(["truncate", "flip", "int", "cut", "insert"]))
    if kind == "truncate":
        return blob[:draw(st.integers(0, n - 1))]
    out = bytearray(blob)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, n - 1))] ^= draw(st.integers(1, 255))
    elif kind == "int":
        width = draw(st.sampled_from([4, 8]))
        value = draw(st.sampled_from(EXTREME_INTS)) % (1 << 8 * width)
        at = draw(st.integers(0, n - width))
        out[at:at + width] = value.to_bytes(width, "little")
    elif kind == "cut":
        a = draw(st.integers(0, n - 1))
        del out[a:a + draw(st.integers(1, 64))]
    else:
        a = draw(st.integers(0, n))
        out[a:a] = draw(st.binary(min_size=1, max_size=64))
    return bytes(out)


def deep(depth: int, kind: str) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


json_values = st.recursive(
    st.none() | st.booleans() | st.sampled_from(EXTREME_INTS) | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["F32", "BF16", "I8", "F8_E4M3", "../outside.safetensors", "/etc/passwd",
                       "model-00002-of-00002.safetensors", "gqlearn.quantized/1", "8", "32",
                       "half_even", "true", "[2, 128]", "{}"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8)
# Nesting well past Python's recursion limit (1000), and lists long enough to cost memory.
json_hostile = (st.builds(deep, st.integers(900, 5000), st.sampled_from(["list", "dict"]))
                | st.builds(lambda n: [1] * n, st.integers(33, 20_000)))


def _paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            paths += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            paths += _paths(v, prefix + (i,))
    return paths


@st.composite
def json_edits(draw, doc: object) -> object:
    """Replace, delete or add one value anywhere in a JSON document."""
    doc = json.loads(json.dumps(doc))
    path = draw(st.sampled_from(_paths(doc)))
    value = draw(json_values | json_hostile)
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    op = draw(st.sampled_from(["replace", "delete", "add"]))
    if op == "delete":
        del parent[path[-1]]
    elif op == "add" and isinstance(parent, dict):
        parent[draw(st.text(max_size=8))] = value
    else:
        parent[path[-1]] = value
    return doc


def split_header(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def join_header(header: object, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def _dumps(doc: object) -> bytes:
    try:
        return json.dumps(doc).encode()
    except RecursionError:  # a dict nested deeper than json.dumps goes: write it by hand
        return b'{"a": ' * 5000 + b"1" + b"}" * 5000


def header_edit(draw, blob: bytes, inner: str | None = None) -> bytes:
    """A JSON edit of a safetensors header, or of one of its metadata strings (``inner``)."""
    header, data = split_header(blob)
    if inner and draw(st.booleans()):
        meta = header["__metadata__"]
        key = draw(st.sampled_from(sorted(meta)))
        edited = draw(json_edits(json.loads(meta[key]))) if key == inner else draw(json_values)
        meta[key] = _dumps(edited).decode() if key == inner else json.dumps(edited)
        return join_header(header, data)
    edited = draw(json_edits(header))
    text = _dumps(edited)
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


# --- the fuzz tests -------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_fuzz_safetensors_bytes(files, data):
    blob = files["safetensors"].read_bytes()
    path = files["safetensors"].with_name("mutated.safetensors")
    path.write_bytes(data.draw(byte_mutations(blob)))
    check(load_safetensors, path)


@FUZZ
@given(data=st.data())
def test_fuzz_safetensors_header(files, data):
    blob = files["safetensors"].read_bytes()
    path = files["safetensors"].with_name("edited.safetensors")
    path.write_bytes(header_edit(data.draw, blob))
    check(load_safetensors, path)


@FUZZ
@given(data=st.data())
def test_fuzz_index(files, data):
    index = files["index"]
    original = index.read_text()
    shard = index.with_name("model-00001-of-00002.safetensors")
    shard_blob = shard.read_bytes()
    try:
        target = data.draw(st.sampled_from(["index json", "index bytes", "shard"]))
        if target == "index json":
            index.write_bytes(_dumps(data.draw(json_edits(json.loads(original)))))
        elif target == "index bytes":
            index.write_bytes(data.draw(byte_mutations(original.encode())))
        else:
            shard.write_bytes(data.draw(byte_mutations(shard_blob)))
        check(load_safetensors, index)
    finally:
        index.write_text(original)
        shard.write_bytes(shard_blob)


@FUZZ
@given(data=st.data())
def test_fuzz_gguf_bytes(files, data):
    blob = files["gguf"].read_bytes()
    path = files["gguf"].with_name("mutated.gguf")
    path.write_bytes(data.draw(byte_mutations(blob)))
    check(load_gguf, path)


@FUZZ
@given(data=st.data())
def test_fuzz_gguf_counts(files, data):
    """The GGUF header's counts and each length field it parses, set to extreme values."""
    blob = files["gguf"].read_bytes()
    reader = open_gguf(files["gguf"])
    # offsets of the 8-byte counts/lengths gguf parsed: n_tensors, n_kv, string lengths, ...
    offsets = [8, 16] + [int(f.offset) for f in reader.fields.values()]
    at = data.draw(st.sampled_from(offsets))
    value = data.draw(st.sampled_from(EXTREME_INTS))
    out = bytearray(blob)
    out[at:at + 8] = value.to_bytes(8, "little")
    path = files["gguf"].with_name("counts.gguf")
    path.write_bytes(bytes(out))
    check(load_gguf, path)


@FUZZ
@given(data=st.data())
def test_fuzz_quantized_bytes(files, data):
    blob = files["quantized"].read_bytes()
    path = files["quantized"].with_name("mutated-q.safetensors")
    path.write_bytes(data.draw(byte_mutations(blob)))
    check(load_saved, path)


@FUZZ
@given(data=st.data())
def test_fuzz_quantized_metadata(files, data):
    blob = files["quantized"].read_bytes()
    path = files["quantized"].with_name("edited-q.safetensors")
    path.write_bytes(header_edit(data.draw, blob, inner="tensors"))
    check(load_saved, path)


# --- the command line's contract over a corpus of bad files ---------------------------------
def bad_corpus(files: dict[str, Path], d: Path) -> list[Path]:
    """Hand-picked bad files, then seeded random mutations of each kind of valid file."""
    st_blob = files["safetensors"].read_bytes()
    header, data = split_header(st_blob)
    first = next(k for k in header if k != "__metadata__")
    corpus: dict[str, bytes] = {
        "empty.safetensors": b"",
        "short.safetensors": b"\x01\x02",
        "truncated.safetensors": st_blob[:len(st_blob) // 2],
        "huge_length.safetensors": struct.pack("<Q", 2**63) + st_blob[8:],
        "not_json.safetensors": struct.pack("<Q", 4) + b"{{{{",
        "deep.safetensors": struct.pack("<Q", 100_000) + b"[" * 50_000 + b"]" * 50_000,
        "list_dtype.safetensors": join_header({**header, first: {**header[first],
                                                                 "dtype": ["F32"]}}, data),
        "many_axes.safetensors": join_header({**header, first: {**header[first],
                                                                "shape": [1] * 100}}, data),
        "newline\nname.safetensors": join_header({**header, "a\nb": header[first]}, data),
        "random.gguf": bytes(range(256)) * 4,
        "truncated.gguf": files["gguf"].read_bytes()[:300],
        "pytorch_model.bin": b"\x80\x02}q\x00.",
        "q-as-model.safetensors": files["quantized"].read_bytes(),
    }
    paths = []
    for name, blob in corpus.items():
        (d / name).write_bytes(blob)
        paths.append(d / name)
    escape = d / "escape"
    escape.mkdir()
    (escape / INDEX_NAME).write_text(json.dumps({"weight_map": {"w": "/etc/passwd"}}))
    nested = d / "nested"
    nested.mkdir()
    (nested / INDEX_NAME).write_text('{"weight_map": ' + "[" * 10_000 + "]" * 10_000 + "}")
    paths += [escape / INDEX_NAME, nested / INDEX_NAME, d / "no_such_file.safetensors"]

    rng = np.random.default_rng(2024)
    for kind, suffix in [("safetensors", ".safetensors"), ("gguf", ".gguf"),
                         ("quantized", ".safetensors")]:
        blob = files[kind].read_bytes()
        for i in range(6):
            out = bytearray(blob)
            if i % 2:
                out = out[:int(rng.integers(0, len(blob)))]
            else:
                for at in rng.integers(0, len(blob), 4):
                    out[at] ^= int(rng.integers(1, 256))
            path = d / f"random-{kind}-{i}{suffix}"
            path.write_bytes(bytes(out))
            paths.append(path)
    return paths


CLI_DRIVER = """
import io, json, sys, traceback, warnings
from gqlearn.__main__ import main
warnings.simplefilter("always")  # every warning would be an extra stderr line
results = []
for path in json.loads(sys.argv[1]):
    err = io.StringIO()
    sys.stderr = err
    try:
        code = main(["explore", path, "--no-progress", "-g", "32"])
    except BaseException:
        code = "uncaught"
        traceback.print_exc(file=err)
    finally:
        sys.stderr = sys.__stderr__
    results.append([path, code, err.getvalue()])
with open(sys.argv[2], "w") as f:
    json.dump(results, f)
"""


def test_cli_contract_over_bad_files(files, tmp_path):
    corpus = bad_corpus(files, tmp_path)
    report = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-c", CLI_DRIVER, json.dumps([str(p) for p in corpus]),
                           str(report)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(report.read_text())
    assert len(results) == len(corpus)
    failed = 0
    for path, code, err in results:
        if code == 0:  # a random mutation can leave a file valid (a flipped weight)
            assert "random-" in path, path
            continue
        failed += 1
        lines = err.splitlines()
        assert code == 1 and len(lines) == 1, (path, code, err)
        assert lines[0].startswith("gqlearn explore: error: "), (path, err)
        assert " ".join(path.split("\n")) in lines[0] or Path(path).name in lines[0], (path, err)
        assert "Traceback" not in err
    assert failed >= len(corpus) - 6

