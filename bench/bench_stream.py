"""Whole-model streaming: quantize a generated multi-GiB bf16 checkpoint to a file and report
peak resident memory against the model's size.

    python bench/bench_stream.py              # 2.5 GB LLaMA-like bf16 checkpoint, 2 shards
    python bench/bench_stream.py --layers 8   # smaller

Writes ``bench/results/stream.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import ml_dtypes
import numpy as np

from gqlearn.io.safetensors_writer import StreamingSafetensorsWriter

HERE = Path(__file__).resolve().parent

MEASURE = """
import json, sys, time
import numpy as np
from gqlearn.models import explore

def kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

# Warm up (imports, numba compilation for float32 and bfloat16) outside the measurement.
import ml_dtypes
tiny = {"model.layers.0.mlp.up_proj.weight": np.ones((8, 256), ml_dtypes.bfloat16)}
explore(tiny, 128, save=sys.argv[2])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak to the current resident size
start = kib("VmRSS:")
t = time.perf_counter()
report = explore(sys.argv[1], 128, save=sys.argv[2], progress=True)
seconds = time.perf_counter() - t
print(json.dumps({"start_kib": start, "peak_kib": kib("VmHWM:"), "seconds": seconds,
                  "sqnr_db": report.totals["sqnr_db"]}))
"""


def make_checkpoint(folder: Path, layers: int, hidden: int, ffn: int, shards: int) -> int:
    """A LLaMA-shaped bf16 checkpoint written shard by shard; returns the largest tensor's bytes."""
    rng = np.random.default_rng(0)
    shapes = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, hidden),
              "self_attn.v_proj": (hidden, hidden), "self_attn.o_proj": (hidden, hidden),
              "mlp.gate_proj": (ffn, hidden), "mlp.up_proj": (ffn, hidden),
              "mlp.down_proj": (hidden, ffn), "input_layernorm": (hidden,)}
    base = (rng.standard_normal(max(hidden, ffn) * hidden, dtype=np.float32) * 0.02)
    weight_map = {}
    per_shard = -(-layers // shards)
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        names = [(f"model.layers.{i}.{k}.weight", shape)
                 for i in range(s * per_shard, min(layers, (s + 1) * per_shard))
                 for k, shape in shapes.items()]
        layout = [(n, ml_dtypes.bfloat16, shape) for n, shape in names]
        with StreamingSafetensorsWriter(folder / file, layout) as out:
            for j, (name, shape) in enumerate(names):
                size = int(np.prod(shape))
                out.write(name, np.roll(base[:size], j).reshape(shape).astype(ml_dtypes.bfloat16))
                weight_map[name] = file
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    return 2 * ffn * hidden


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--ffn", type=int, default=5632)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "stream.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gqlearn-stream-"))
    try:
        src = work / "model"
        src.mkdir()
        largest = make_checkpoint(src, args.layers, args.hidden, args.ffn, args.shards)
        model_bytes = sum(p.stat().st_size for p in src.glob("*.safetensors"))
        result = subprocess.run([sys.executable, "-c", MEASURE,
                                 str(src / "model.safetensors.index.json"),
                                 str(work / "q.safetensors")],
                                check=True, capture_output=True, text=True)
        m = json.loads(result.stdout)
        out_bytes = (work / "q.safetensors").stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gib = 2 ** 30
    peak_extra = (m["peak_kib"] - m["start_kib"]) * 1024
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}.",
        "",
        "| model (bf16, LLaMA-shaped) | largest tensor | output (int8 + scales) | peak RSS | "
        "peak RSS above start | time (with fsync) | throughput |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| {args.layers} layers, {args.hidden}/{args.ffn}, {args.shards} shards: "
        f"{model_bytes / gib:.2f} GiB | {largest / 2 ** 20:.0f} MiB | {out_bytes / gib:.2f} GiB | "
        f"{m['peak_kib'] / 2 ** 20:.2f} GiB | {peak_extra / 2 ** 20:.0f} MiB "
        f"({peak_extra / largest:.1f}× the largest tensor, {peak_extra / model_bytes:.1%} of the "
        f"model) | {m['seconds']:.1f} s | {model_bytes / m['seconds'] / 1e9:.2f} GB/s |",
    ]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
