"""Quantizing a checkpoint to a file streams: memory is bounded by the largest tensor."""

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from gqlearn.io import load_quantized
from gqlearn.io.safetensors_writer import StreamingSafetensorsWriter, safetensors_dtype


def test_writer_output_reads_back_with_safetensors(tmp_path, rng):
    import ml_dtypes

    arrays = {"a": rng.standard_normal((3, 5)).astype(np.float32),
              "b": np.arange(7, dtype=np.int8), "c": np.ones((2, 2), ml_dtypes.bfloat16),
              "d": np.array(True), "e": rng.standard_normal((4, 6)).T}
    path = tmp_path / "x.safetensors"
    layout = [(k, v.dtype, v.shape) for k, v in arrays.items()]
    with StreamingSafetensorsWriter(path, layout, {"who": "test"}) as out:
        for k, v in arrays.items():
            out.write(k, v)
    back = load_file(str(path))
    for k, v in arrays.items():
        assert back[k].shape == v.shape
        assert np.array_equal(back[k].reshape(-1).view(np.uint8),
                              np.ascontiguousarray(v).reshape(-1).view(np.uint8))
    with safe_open(str(path), "numpy") as f:
        assert f.metadata() == {"who": "test"}


def test_writer_refuses_out_of_order_and_incomplete(tmp_path):
    path = tmp_path / "x.safetensors"
    layout = [("a", np.float32, (2,)), ("b", np.float32, (3,))]
    with (pytest.raises(ValueError, match="expected tensor 'a'"),
          StreamingSafetensorsWriter(path, layout) as out):
        out.write("b", np.zeros(3, np.float32))
    with (pytest.raises(ValueError, match="never arrived"),
          StreamingSafetensorsWriter(path, layout) as out):
        out.write("a", np.zeros(2, np.float32))
    with (pytest.raises(ValueError, match=r"F32\[2\]"),
          StreamingSafetensorsWriter(path, layout) as out):
        out.write("a", np.zeros(2, np.float64))
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
    with pytest.raises(TypeError, match="complex"):
        safetensors_dtype(np.complex64)
    with pytest.raises(ValueError, match="unique"):
        StreamingSafetensorsWriter(path, [("a", np.int8, (1,)), ("a", np.int8, (1,))])


STREAM_SCRIPT = """
import sys, numpy as np
from gqlearn.models import explore

def rss_kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

explore(sys.argv[1], 64, save=sys.argv[3])  # warm-up: imports, JIT
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = rss_kib("VmRSS:")
explore(sys.argv[1], 64, save=sys.argv[2])
print(before, rss_kib("VmHWM:"))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_streaming_memory_is_bounded_by_the_largest_tensor(tmp_path, rng):
    n_tensors, shape = 24, (2048, 4096)  # 24 × 32 MiB = 768 MiB of float32
    src = tmp_path / "big.safetensors"
    block = rng.standard_normal(shape).astype(np.float32)
    layout = [(f"layers.{i}.mlp.up_proj.weight", np.float32, shape) for i in range(n_tensors)]
    with StreamingSafetensorsWriter(src, layout) as out:
        for i, (name, _, _) in enumerate(layout):
            out.write(name, block * (i + 1))
    del block
    out = tmp_path / "q.safetensors"
    result = subprocess.run([sys.executable, "-c", STREAM_SCRIPT, str(src), str(out),
                             str(tmp_path / "warm.safetensors")],
                            check=True, capture_output=True, text=True)
    before, peak = (int(x) * 1024 for x in result.stdout.split())
    largest = 32 * 2 ** 20
    assert peak - before < 4 * largest  # not the 768 MiB model
    model = load_quantized(out)
    assert len(model.tensors) == n_tensors
    assert json.loads(model.metadata["tensors"])["layers.3.mlp.up_proj.weight"]["group_size"] == 64
