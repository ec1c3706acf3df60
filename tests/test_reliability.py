"""Regression tests for the ten defects adversarial testing found (issue 12), one per defect.

Each test failed before its fix; the fuzz suite (tests/test_fuzz_files.py) keeps the file
readers honest beyond these cases.
"""

import json
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import gqlearn
from gqlearn import _parallel
from gqlearn.__main__ import main
from gqlearn.io import ModelFileError, load_quantized, open_checkpoint
from gqlearn.io.safetensors import INDEX_NAME, read_header
from gqlearn.io.safetensors_writer import StreamingSafetensorsWriter
from gqlearn.models import explore

F32_MAX = float(np.finfo(np.float32).max)
BACKENDS = gqlearn.available_backends()


def max_scale(qmax: int) -> np.float32:
    """Independently: the largest float32 s whose float32 product qmax * s is finite."""
    s = np.float32(F32_MAX / qmax)
    with np.errstate(over="ignore"):
        while np.isinf(np.float32(qmax) * s):
            s = np.nextafter(s, np.float32(0))
    return s


def write_raw(path: Path, header_bytes: bytes, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + data)
    return path


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture
def model_file(tmp_path, rng):
    path = tmp_path / "model.safetensors"
    save_file({"model.layers.0.self_attn.q_proj.weight":
                   rng.normal(size=(8, 96)).astype(np.float32),
               "model.layers.0.mlp.up_proj.weight": rng.normal(size=(8, 96)).astype(np.float32),
               "model.layers.0.input_layernorm.weight": np.ones(96, np.float32)}, str(path))
    return path


def one_error_line(err: str, path: object) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gqlearn explore: error:") and str(path) in lines[0], err
    assert "Traceback" not in err
    return lines[0]


# 1 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bits", [8, 6, 4])
def test_float32_max_dequantizes_finite(backend, bits):
    w = np.full((3, 32), F32_MAX, np.float32)
    w[1] *= -1
    w[2, 5:] = 1.0
    qt = gqlearn.quantize(w, 32, bits=bits, backend=backend)
    w_hat = gqlearn.dequantize(qt, backend=backend)
    assert np.isfinite(w_hat).all()
    qmax = qt.qmax
    np.testing.assert_array_equal(qt.values[:, 0], [qmax, -qmax, qmax])
    np.testing.assert_array_equal(qt.scales.ravel(), [max_scale(qmax)] * 3)
    np.testing.assert_array_equal(w_hat[:, 0], np.float32(qmax) * max_scale(qmax)
                                  * np.array([1, -1, 1], np.float32))
    # the clamp costs at most a few float32 steps of 3.4e38
    assert np.abs(w_hat[:, 0].astype(np.float64)).min() > F32_MAX * (1 - 1e-6)
    report = gqlearn.error_report(w, qt, backend=backend)
    assert np.isfinite(report.max_abs_error) and report.sqnr_db > 40
    # ordinary data is untouched by the clamp (bit-exactness is in test_compat.py)
    small = np.linspace(-3, 3, 64, dtype=np.float32).reshape(2, 32)
    np.testing.assert_array_equal(gqlearn.quantize(small, 32, bits=bits, backend=backend).scales,
                                  (np.abs(small).max(axis=1) / np.float32(qmax))[:, None])
    # a hand-built tensor whose scale would overflow is refused, the largest safe one is not
    values = np.full((1, 32), qmax, np.int8)
    with pytest.raises(ValueError, match="overflows float32"):
        gqlearn.QuantizedTensor(values, np.array([[3e38]], np.float32), 32, bits)
    ok = gqlearn.QuantizedTensor(values, np.array([[max_scale(qmax)]], np.float32), 32, bits)
    assert np.isfinite(gqlearn.dequantize(ok, backend=backend)).all()


# 2 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_error_report_numba_rejects_nan(backend, bad):
    w = np.ones((4, 64), np.float32)
    qt = gqlearn.quantize(w, 32)
    w[2, 7] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        gqlearn.error_report(w, qt, backend=backend)


# 3 -------------------------------------------------------------------------------------------
@pytest.fixture
def alarm():
    """Fail (rather than hang for hours) if the block takes more than 20 s."""
    def timeout(signum, frame):
        raise TimeoutError("took more than 20 s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_divisor_search_handles_huge_dims(alarm):
    choose = gqlearn.choose_group_size
    assert choose(10**9 + 7, 10**9, "divisor") == 1            # prime: a 27 s scan before
    assert choose(2**61 - 1, 2**40, "divisor") == 1            # prime: never finished before
    assert choose(2**62, 3 * 2**40, "divisor") == 2**41
    p, q = 2**31 - 1, 2**31 - 19                               # two large prime factors
    assert choose(p * q, 2**40, "divisor") == max(p, q)
    assert choose(2**4 * 3**3 * 10**9 + 0, 10**6, "divisor") == 10**6
    with pytest.raises(ValueError, match="larger than any array axis"):
        choose(2**64 + 1, 5, "divisor")
    rnd = random.Random(12)
    for _ in range(300):  # against the definition
        dim, req = rnd.randint(1, 3000), rnd.randint(1, 4000)
        want = max(d for d in range(1, min(dim, req) + 1) if dim % d == 0)
        assert choose(dim, req, "divisor") == want, (dim, req)


# 4 -------------------------------------------------------------------------------------------
def test_deeply_nested_json_is_a_model_file_error(tmp_path, model_file):
    deep = nested(100_000)
    header = write_raw(tmp_path / "deep.safetensors", f'{{"__metadata__": {deep}}}'.encode())
    with pytest.raises(ModelFileError, match="nested too deeply") as info:
        open_checkpoint(header)
    assert info.value.file == header

    index = tmp_path / INDEX_NAME
    index.write_text(f'{{"metadata": {deep}, "weight_map": {{}}}}')
    with pytest.raises(ModelFileError, match="nested too deeply"):
        open_checkpoint(index)

    out = tmp_path / "q.safetensors"
    explore(model_file, 32, save=out)
    tensors = load_file(str(out))
    meta = read_header(out)[1]
    save_file(tensors, str(out), metadata={**meta, "tensors": deep})
    with pytest.raises(ModelFileError, match="nested too deeply"):
        load_quantized(out)


# 5 -------------------------------------------------------------------------------------------
def test_header_fields_of_wrong_type_or_size(tmp_path):
    def entry(dtype="F32", shape=(1,), offsets=(0, 4)):
        return {"w": {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}}

    def check(name, header, match, data=b"\0" * 4):
        path = write_raw(tmp_path / name, json.dumps(header).encode(), data)
        with pytest.raises(ModelFileError, match=match) as info:
            read_header(path)
        assert info.value.file == path and info.value.tensor == "w"
        return path, info.value

    check("list_dtype.safetensors", entry(dtype=["F32"]), "unknown dtype")
    check("int_dtype.safetensors", entry(dtype=7), "unknown dtype")
    _, exc = check("deep_shape.safetensors", entry(shape=[1] * 100), "100 axes, more than 32")
    assert len(str(exc)) < 400
    # 1,000,000 axes of length 1: refused as soon as the JSON is parsed, in bounded memory
    path = write_raw(tmp_path / "huge_shape.safetensors",
                     json.dumps(entry(shape=[1] * 1_000_000)).encode(), b"\0" * 4)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="1000000 axes"):
            read_header(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * path.stat().st_size


# 6 -------------------------------------------------------------------------------------------
def test_index_cannot_point_outside_its_folder(tmp_path, rng):
    model = tmp_path / "model"
    model.mkdir()
    outside = tmp_path / "outside.safetensors"
    save_file({"w": np.ones((2, 32), np.float32)}, str(outside))
    (model / "link.safetensors").symlink_to(outside)
    for shard in ["../outside.safetensors", str(outside), "link.safetensors", "/etc/passwd"]:
        (model / INDEX_NAME).write_text(json.dumps({"weight_map": {"w": shard}}))
        with pytest.raises(ModelFileError, match="outside the index's folder") as info:
            open_checkpoint(model)
        assert "header" not in str(info.value)  # /etc/passwd's bytes are never read

    # A symlinked index (the Hugging Face cache's snapshots/ -> blobs/ layout) still works.
    blobs, snap = tmp_path / "hub" / "blobs", tmp_path / "hub" / "snapshots" / "rev"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    save_file({"w": np.ones((2, 32), np.float32)}, str(blobs / "aaa"))
    (blobs / "bbb").write_text(json.dumps({"weight_map": {"w": "model.safetensors"}}))
    (snap / "model.safetensors").symlink_to(blobs / "aaa")
    (snap / INDEX_NAME).symlink_to(blobs / "bbb")
    with open_checkpoint(snap) as ckpt:
        assert ckpt["w"].shape == (2, 32)


# 7 -------------------------------------------------------------------------------------------
def test_save_os_errors_are_one_line_and_early(tmp_path, model_file, capsys, monkeypatch):
    from gqlearn.models import explorer

    def must_not_run(*args, **kwargs):
        raise AssertionError("quantized before checking the target")

    monkeypatch.setattr(explorer, "quantize_tensor", must_not_run)
    folder = tmp_path / "a_folder"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for target, cause in [(folder, "is a directory"), (a_file / "q.safetensors", "folder")]:
        assert main(["explore", str(model_file), "--save", str(target)]) == 1
        line = one_error_line(capsys.readouterr().err, target)
        assert cause in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "a_folder", "model.safetensors"]

    # Disk full (here: a file-size limit, EFBIG) in the middle of the save.
    work = tmp_path / "full"
    work.mkdir()
    model_file = work / "model.safetensors"
    save_file({"layers.0.mlp.up_proj.weight": np.ones((64, 1024), np.float32)}, str(model_file))
    target = work / "q.safetensors"
    target.write_bytes(b"old")
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from gqlearn.__main__ import main
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
        sys.exit(main(["explore", {str(model_file)!r}, "-g", "32", "--save", {str(target)!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "File too large" in one_error_line(proc.stderr, target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in work.iterdir()) == ["model.safetensors", "q.safetensors"]


# 8 -------------------------------------------------------------------------------------------
PAUSING_SAVE = """
import sys, time
from pathlib import Path
from gqlearn.__main__ import main
from gqlearn.io import safetensors_writer as w

write = w.StreamingSafetensorsWriter.write
def pausing_write(self, name, array):
    write(self, name, array)
    self._file.flush()
    Path(sys.argv[3]).write_text("ready")
    time.sleep(60)
w.StreamingSafetensorsWriter.write = pausing_write
sys.exit(main(["explore", sys.argv[1], "-g", "32", "--save", sys.argv[2]]))
"""


def _killed_save(model_file, target, ready, sig):
    proc = subprocess.Popen([sys.executable, "-c", PAUSING_SAVE, str(model_file), str(target),
                             str(ready)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    ready.unlink()
    return proc.returncode, err


def test_sigterm_cleans_up_and_sigkill_leftovers_are_removed(tmp_path, model_file):
    out = tmp_path / "out"
    out.mkdir()
    target, ready = out / "q.safetensors", tmp_path / "ready"
    target.write_bytes(b"old")

    code, err = _killed_save(model_file, target, ready, signal.SIGTERM)
    assert code == 143 and "Traceback" not in err, err
    assert sorted(p.name for p in out.iterdir()) == ["q.safetensors"]
    assert target.read_bytes() == b"old"

    code, _ = _killed_save(model_file, target, ready, signal.SIGKILL)
    assert code == -signal.SIGKILL
    leftovers = [p.name for p in out.iterdir() if p.name != "q.safetensors"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".q.safetensors.gqlearn-")
    assert leftovers[0].endswith(".tmp")
    assert target.read_bytes() == b"old"

    # Not ours to remove: another target's temp file, a look-alike, a live writer's temp file.
    (out / ".other.safetensors.gqlearn-abc.tmp").write_bytes(b"x")
    (out / ".q.safetensors.abc.tmp").write_bytes(b"x")
    live = StreamingSafetensorsWriter(target, [("a", np.float32, (2,))])
    try:
        explore(model_file, 32, save=target)
        names = sorted(p.name for p in out.iterdir())
        assert leftovers[0] not in names
        assert names == sorted([".other.safetensors.gqlearn-abc.tmp", ".q.safetensors.abc.tmp",
                                Path(live._tmp).name, "q.safetensors"])
        assert load_quantized(target).metadata["group_size"] == "32"
    finally:
        live.abort()


# 9 -------------------------------------------------------------------------------------------
def test_pool_resize_is_thread_safe(monkeypatch):
    w = np.random.default_rng(0).standard_normal((64, 1024)).astype(np.float32)
    reference = gqlearn.quantize(w, 32, backend="numpy", threads=1).values
    errors: list[str] = []

    def hammer(seed: int) -> None:
        r = random.Random(seed)
        for _ in range(30):
            try:
                qt = gqlearn.quantize(w, 32, backend="numpy", threads=r.randint(2, 16),
                                      chunk_elements=4096)
                assert np.array_equal(qt.values, reference)
            except Exception as exc:  # collected and reported below
                errors.append(repr(exc))

    for trial in range(6):
        monkeypatch.setattr(_parallel, "_pool", None)  # start from an empty pool each time
        monkeypatch.setattr(_parallel, "_pool_size", 0)
        threads = [threading.Thread(target=hammer, args=(10 * trial + i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


# 10 ------------------------------------------------------------------------------------------
def test_load_quantized_damaged_metadata(tmp_path, rng):
    arrays = {"layers.0.mlp.up_proj.weight": rng.normal(size=(4, 64)).astype(np.float32),
              "layers.0.norm.weight": np.ones(64, np.float32)}
    good = tmp_path / "good.safetensors"
    explore(arrays, 32, save=good)
    tensors, meta = load_file(str(good)), read_header(good)[1]
    entries = json.loads(meta["tensors"])
    up, norm = "layers.0.mlp.up_proj.weight", "layers.0.norm.weight"

    def variant(**changes):
        e = json.loads(json.dumps(entries))
        for key, value in changes.items():
            name, field = key.split("__")
            name = {"up": up, "norm": norm}[name]
            if value is ...:
                del e[name][field]
            else:
                e[name][field] = value
        return json.dumps(e)

    cases = {
        "a list": "[1, 2]",
        "an entry that is a number": json.dumps({up: 5}),
        "no quantized flag": variant(up__quantized=...),
        "quantized as a string": variant(up__quantized="yes"),
        "shape missing": variant(up__shape=...),
        "shape of strings": variant(up__shape=["4", "64"]),
        "shape not a list": variant(norm__shape={"a": 1}),
        "group size a string": variant(up__group_size="32"),
        "group size a list": variant(up__group_size=[32]),
        "reshaped values": variant(up__shape=[2, 128]),
        "reshaped kept tensor": variant(norm__shape=[8, 8]),
        "unknown tensor": json.dumps({**entries, "ghost": entries[up]}),
    }
    for why, text in cases.items():
        path = tmp_path / "bad.safetensors"
        save_file(tensors, str(path), metadata={**meta, "tensors": text})
        with pytest.raises(ModelFileError) as info:
            load_quantized(path)
        assert info.value.file == path, why
    with pytest.raises(ModelFileError, match=r"metadata says shape \[2, 128\]"):
        save_file(tensors, str(path), metadata={**meta, "tensors": cases["reshaped values"]})
        load_quantized(path)
    assert load_quantized(good).dequantize(up).shape == (4, 64)

    # A finite float64 weight beyond float32's range is named as an overflow, not as NaN/Inf.
    w = np.ones((2, 64))
    w[1, 3] = 1e39
    for backend in BACKENDS:
        with pytest.raises(ValueError, match=r"1e\+39 at index \(1, 3\), which overflows float32"):
            gqlearn.quantize(w, 32, backend=backend)
    w[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        gqlearn.quantize(w, 32)
