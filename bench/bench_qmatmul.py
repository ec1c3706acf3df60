"""Speed of gqlearn.qmatmul against numpy's float32 BLAS, and against memory bandwidth.

    python bench/bench_qmatmul.py             # 16 different 4096 x 4096 weights, batch 1/8/64
    python bench/bench_qmatmul.py --weights 4 # quicker

Decoding a token multiplies each weight matrix by one vector: every weight is read once and
used for one multiply-add, so the time is the bytes read divided by the memory bandwidth.
We cycle through 16 different weights (1 GiB of float32), so none stays in the caches, and time
``W @ x`` (float32, BLAS) against ``qmatmul(x, qt)`` for int8 and packed int4 weights.
The bandwidth reference is a compiled parallel loop that only reads an array of the same total
size (the floor for any matvec).

Two runs: all cores (wall-clock time), and one thread for everything (BLAS and numba, in a
child process), timed by the process's CPU time as well, which a busy shared machine disturbs
much less than wall-clock time.  Writes ``bench/results/qmatmul.md``.
"""

from __future__ import annotations

import os
import sys

if "--single-thread" in sys.argv:  # before numpy loads BLAS
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "GQLEARN_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # gqlearn from this checkout

import gqlearn

HERE = Path(__file__).resolve().parent

CONFIGS = [("float32 W @ x (numpy BLAS)", None, None), ("qmatmul int8 g=32", 8, 32),
           ("qmatmul int4 g=32 (packed)", 4, 32), ("qmatmul int4 g=128 (packed)", 4, 128)]


def read_bandwidth(nbytes: int) -> float:
    """GB/s of a parallel loop summing int32 words of an ``nbytes`` array (read only)."""
    import numba

    @numba.njit(parallel=True, fastmath=True)
    def total(a):
        s = 0
        for i in numba.prange(a.size):
            s += a[i]
        return s

    a = np.ones(nbytes // 4, dtype=np.int32)
    total(a[:1024])
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        total(a)
        best = min(best, time.perf_counter() - t)
    return nbytes / best / 1e9


def _blas_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``qmatmul``'s float32 counterpart: BLAS sgemv (one vector) or sgemm (a batch)."""
    return w @ x.T


def sweep(fn, items, x, repeats: int) -> tuple[float, float]:
    """Best over ``repeats`` of the mean wall-clock and CPU seconds per weight over one pass
    through ``items``."""
    fn(x, items[0])  # warm up (compile)
    wall = cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        for item in items:
            fn(x, item)
        wall = min(wall, (time.perf_counter() - t) / len(items))
        cpu = min(cpu, (time.process_time() - c) / len(items))
    return wall, cpu


def measure(args: argparse.Namespace) -> dict:
    n = args.size
    rng = np.random.default_rng(0)
    floats = [(rng.standard_normal((n, n), dtype=np.float32) * 0.02) for _ in range(args.weights)]
    stored = {label: [gqlearn.quantize(w, g, bits=bits) for w in floats]
              for label, bits, g in CONFIGS[1:]}
    load = os.getloadavg()[0]
    bw = read_bandwidth(sum(w.nbytes for w in floats))
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        x = rng.standard_normal((batch, n), dtype=np.float32)
        if batch == 1:
            x = x[0]
        for label, bits, _ in CONFIGS:
            if bits is None:
                items, nbytes = floats, floats[0].nbytes
                fn = _blas_matmul
            else:
                items, nbytes = stored[label], stored[label][0].nbytes
                fn = gqlearn.qmatmul
            wall, cpu = sweep(fn, items, x, args.repeats)
            rows.append({"batch": batch, "label": label, "nbytes": nbytes, "wall": wall,
                         "cpu": cpu})
            print(f"batch {batch:>3} {label:<30} {wall*1e3:8.2f} ms  cpu {cpu*1e3:8.2f} ms",
                  file=sys.stderr, flush=True)
    return {"bandwidth": bw, "rows": rows, "threads": gqlearn.default_threads(),
            "load_before": load, "load_after": os.getloadavg()[0]}


def table(result: dict, cpu: bool) -> list[str]:
    bw = result["bandwidth"]
    head = "| batch | implementation | MiB read per weight | ms per weight | GB/s read "
    head += "| % of bandwidth | × BLAS float32 |"
    if cpu:
        head += " CPU ms per weight | × BLAS (CPU time) |"
    lines = [head, "|---:|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if cpu else "")]
    base = {}
    for r in result["rows"]:
        if r["label"].startswith("float32"):
            base[r["batch"]] = r
        b = base[r["batch"]]
        gbs = r["nbytes"] / r["wall"] / 1e9
        line = (f"| {r['batch']} | {r['label']} | {r['nbytes'] / 2**20:.2f} | "
                f"{r['wall'] * 1e3:.2f} | {gbs:.2f} | {100 * gbs / bw:.0f}% | "
                f"{b['wall'] / r['wall']:.2f} |")
        if cpu:
            line += f" {r['cpu'] * 1e3:.2f} | {b['cpu'] / r['cpu']:.2f} |"
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=int, default=16)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--out", default=str(HERE / "results" / "qmatmul.md"))
    parser.add_argument("--notes", help="a text file appended to the results (analysis)")
    parser.add_argument("--one-thread-only", action="store_true",
                        help="skip the all-threads run (meaningless when other jobs load the "
                             "cores: its threads then wait for each other)")
    parser.add_argument("--single-thread", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single_thread:
        print(json.dumps(measure(args)))
        return
    child = [sys.executable, __file__, "--single-thread", "--weights", str(args.weights),
             "--size", str(args.size), "--repeats", str(args.repeats), "--batches", args.batches]
    print("one thread:", file=sys.stderr)
    single = json.loads(subprocess.run(child, check=True, capture_output=True,
                                       text=True).stdout.strip().splitlines()[-1])
    multi = None
    if not args.one_thread_only:
        print("all threads:", file=sys.stderr)
        multi = measure(args)

    import numba
    n = args.size
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, "
             f"numba {numba.__version__}, Python {platform.python_version()}. "
             f"{args.weights} different {n} x {n} weights cycled (so none stays in cache), best "
             f"of {args.repeats} sweeps (after a warm-up call). Bytes read include the scales. "
             f"Read-bandwidth reference (a compiled loop summing "
             f"{args.weights * n * n * 4 / 2**30:.2f} GiB): "
             + (f"**{multi['bandwidth']:.2f} GB/s** on {multi['threads']} threads, "
                if multi else "") + f"{single['bandwidth']:.2f} GB/s on one.", ""]
    if multi:
        lines += [f"All {multi['threads']} threads (BLAS and qmatmul), wall-clock time; load "
                  f"average {multi['load_before']:.1f} before, {multi['load_after']:.1f} after:",
                  ""]
        lines += table(multi, cpu=False)
        lines += [""]
    lines += [f"One thread (BLAS and qmatmul), wall-clock and CPU time; load average "
              f"{single['load_before']:.1f} before, {single['load_after']:.1f} after:", ""]
    lines += table(single, cpu=True)
    if args.notes:
        lines += ["", Path(args.notes).read_text().strip()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("wrote", args.out, file=sys.stderr)


if __name__ == "__main__":
    main()
