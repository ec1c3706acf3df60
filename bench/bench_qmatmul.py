"""Speed of gqlearn.qmatmul against numpy's float32 BLAS, and against memory bandwidth.

    python bench/bench_qmatmul.py             # 16 different 4096 x 4096 weights, batch 1/8/64
    python bench/bench_qmatmul.py --weights 4 # quicker

Decoding a token multiplies each weight matrix by one vector: every weight is read once and
used for one multiply-add, so the time is the bytes read divided by the memory bandwidth.
We cycle through 16 different weights (1 GiB of float32), so none stays in the caches, and time
``W @ x`` (float32, BLAS) against ``qmatmul(x, qt)`` for int8 and packed int4 weights.
The bandwidth reference is a compiled parallel loop that only reads an array of the same total
size (the floor for any matvec).  Writes ``bench/results/qmatmul.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import gqlearn  # noqa: E402


def read_bandwidth(nbytes: int, threads: int) -> float:
    """GB/s of a parallel loop summing int32 words of a fresh ``nbytes`` array (read only)."""
    import numba

    @numba.njit(parallel=True, fastmath=True)
    def total(a):
        s = 0
        for i in numba.prange(a.size):
            s += a[i]
        return s

    a = np.ones(nbytes // 4, dtype=np.int32)
    total(a[:1024])
    best = min(_time(lambda: total(a)) for _ in range(5))
    return nbytes / best / 1e9


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sweep(fn, items, x, repeats: int) -> float:
    """Best over ``repeats`` of the mean seconds per weight over one pass through ``items``."""
    fn(x, items[0])  # warm up (compile)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for item in items:
            fn(x, item)
        best = min(best, (time.perf_counter() - t) / len(items))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=int, default=16)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--out", default=str(HERE / "results" / "qmatmul.md"))
    args = parser.parse_args()
    threads = gqlearn.default_threads()
    n = args.size
    rng = np.random.default_rng(0)
    print(f"making {args.weights} weights of {n} x {n} ...", flush=True)
    floats = [(rng.standard_normal((n, n), dtype=np.float32) * 0.02) for _ in range(args.weights)]
    configs = [("float32 W @ x (numpy BLAS)", None, None)]
    configs += [("qmatmul int8 g=32", 8, 32), ("qmatmul int4 g=32 (packed)", 4, 32),
                ("qmatmul int4 g=128 (packed)", 4, 128)]
    stored = {}
    for label, bits, g in configs[1:]:
        stored[label] = [gqlearn.quantize(w, g, bits=bits) for w in floats]
    bw = read_bandwidth(sum(w.nbytes for w in floats), threads)
    print(f"read bandwidth: {bw:.2f} GB/s", flush=True)

    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        x = rng.standard_normal((batch, n), dtype=np.float32)
        if batch == 1:
            x = x[0]
        base = None
        for label, bits, g in configs:
            if bits is None:
                items, nbytes = floats, floats[0].nbytes
                fn = lambda x, w: w @ x.T  # noqa: E731 - BLAS sgemv / sgemm
            else:
                items = stored[label]
                nbytes = items[0].nbytes
                fn = gqlearn.qmatmul
            sec = sweep(fn, items, x, args.repeats)
            base = base or sec
            gbs = nbytes / sec / 1e9
            rows.append((batch, label, nbytes / 2**20, sec * 1e3, gbs, 100 * gbs / bw, base / sec))
            print(f"batch {batch:>3} {label:<30} {sec*1e3:8.2f} ms  {gbs:6.2f} GB/s  "
                  f"{base/sec:5.2f}x", flush=True)
    # numpy backend at batch 64, for the record of where the "auto" switch lies
    extra = []
    for batch in (8, 64):
        x = rng.standard_normal((batch, n), dtype=np.float32)
        for backend in ("numba", "numpy"):
            label = "qmatmul int8 g=32"
            sec = sweep(lambda x, q: gqlearn.qmatmul(x, q, backend=backend), stored[label], x,
                        args.repeats)
            extra.append((batch, f"{label}, backend={backend}", sec * 1e3))
            print(f"batch {batch:>3} {label} backend={backend}: {sec*1e3:.2f} ms", flush=True)

    import numba
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, "
             f"numba {numba.__version__}, Python {platform.python_version()}, threads {threads}. "
             f"{args.weights} different {n} x {n} weights cycled (so none stays in cache), "
             f"best of {args.repeats} sweeps. Read-bandwidth reference (a compiled parallel "
             f"loop summing {sum(w.nbytes for w in floats) / 2**30:.2f} GiB): "
             f"**{bw:.2f} GB/s**.", "",
             "| batch | implementation | bytes read per weight (MiB) | ms per weight | GB/s read "
             "| % of bandwidth | × BLAS float32 |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for batch, label, mib, ms, gbs, pct, ratio in rows:
        lines.append(f"| {batch} | {label} | {mib:.2f} | {ms:.2f} | {gbs:.2f} | {pct:.0f}% | "
                     f"{ratio:.2f} |")
    lines += ["", "Backends of `qmatmul` (int8 g=32), ms per weight:", "",
              "| batch | backend | ms per weight |", "|---:|---|---:|"]
    for batch, label, ms in extra:
        lines.append(f"| {batch} | {label.split('backend=')[1]} | {ms:.2f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
