"""Throughput of gqlearn.quantize against peers and a memory-bandwidth reference, in one run.

    python bench/bench_quantize.py            # 256 MiB fp32 tensor, group sizes 32..256
    python bench/bench_quantize.py --mib 64   # quicker

Peers: llama.cpp's Q8_0 in numpy (the ``gguf`` package), llama2.c's ``export.py:quantize_q80``
(torch if installed, else its numpy transcription in bench/peers.py), and the obvious
numpy one-liner.  The bandwidth reference is one pass that reads the fp32 input and writes an
int8 array (``np.copyto``, split over the cores), i.e. the floor for any quantizer.
Prints GB/s of fp32 input and ratios; writes ``bench/results/quantize.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

import gqlearn

from peers import quantize_q80_llama2c

HERE = Path(__file__).resolve().parent


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _cast_pass():
    """One parallel pass reading float32 and writing int8: numba when installed (a compiled
    loop, as fast as memory allows), else numpy's copyto split over threads (slower: numpy's
    float-to-int8 cast is not vectorized, so the reference is then optimistic for us)."""
    try:
        import numba
    except ImportError:
        numba = None
    if numba is not None:
        @numba.njit(parallel=True)
        def cast(x, out):
            for i in numba.prange(x.size):
                out[i] = np.int8(x[i])  # inputs are small normals: in range

        return "numba cast loop", lambda x, out, threads: cast(x, out)

    def copy(x, out, threads):
        step = 1 << 20
        spans = [(i, min(i + step, x.size)) for i in range(0, x.size, step)]

        def part(k: int) -> None:
            for i, j in spans[k::threads]:
                np.copyto(out[i:j], x[i:j], casting="unsafe")

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(part, range(threads)))

    return "numpy copyto", copy


def bandwidth_reference(w: np.ndarray, threads: int, fresh: bool) -> tuple[str, float]:
    """Seconds for one pass reading ``w`` (fp32) and writing an int8 array, on all cores.

    ``fresh=True`` writes a newly allocated array each time, as a quantizer must (the kernel
    maps its pages on first touch); ``fresh=False`` reuses an array already in memory.
    """
    name, cast = _cast_pass()
    x = w.reshape(-1)
    warm = np.zeros(x.size, np.int8)
    cast(x[:1024], warm[:1024], threads)  # compile

    def run() -> None:
        cast(x, np.empty(x.size, np.int8) if fresh else warm, threads)

    return name, best_of(run, 5)


def peers(gs: int) -> dict:
    """The quantizers people ship, as fast as they run here."""
    found = {}
    try:
        import gguf

        if gs == 32:  # Q8_0 blocks are 32 weights
            found["llama.cpp Q8_0 (gguf numpy)"] = lambda w: gguf.quants.quantize(
                w, gguf.GGMLQuantizationType.Q8_0)
    except ImportError:
        pass
    try:
        import torch

        def q80_torch(w):  # llama2.c export.py:quantize_q80, minus its error report
            t = torch.from_numpy(w).reshape(-1, gs)
            wmax = torch.abs(t).max(dim=1).values
            scale = wmax / 127.0
            return torch.round(t / scale[:, None]).to(torch.int8), scale

        found["llama2.c quantize_q80 (torch)"] = q80_torch
    except ImportError:
        found["llama2.c quantize_q80 (numpy transcription)"] = lambda w: quantize_q80_llama2c(w, gs)
    return found


def naive(w: np.ndarray, gs: int):
    """What one writes first in numpy; shown for scale, not counted as a peer."""
    g = w.reshape(-1, gs)
    s = np.abs(g).max(axis=1, keepdims=True) / 127
    return np.round(g / s).astype(np.int8), s


def peak_rss_gib(mib: int) -> tuple[float, float]:
    """Resident memory before quantizing a ``mib`` MiB fp32 tensor in a fresh process (input in
    memory), and the peak while quantizing it (Linux: the peak is reset with clear_refs)."""
    code = f"""
import numpy as np, gqlearn
w = np.empty(({mib} << 18) // 4096 * 4096, np.float32).reshape(-1, 4096)
rng = np.random.default_rng(0)
for i in range(0, w.shape[0], 1024):
    w[i:i + 1024] = rng.standard_normal((min(1024, w.shape[0] - i), 4096), dtype=np.float32)
gqlearn.quantize(w[:64], 128)  # load and compile outside the measurement

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS:")
qt = gqlearn.quantize(w, 128)
print(before, status("VmHWM:"))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    before, peak = (int(x) / 2 ** 20 for x in out.stdout.split())  # KiB -> GiB
    return before, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="tensor size in MiB of fp32")
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-rss", action="store_true", help="skip the 1 GiB peak-memory run")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "quantize.md")
    args = parser.parse_args()

    threads = gqlearn.default_threads()
    n = args.mib << 18
    w = np.random.default_rng(0).standard_normal(n, dtype=np.float32).reshape(-1, 4096)
    gb = w.nbytes / 1e9
    ref_name, t_fresh = bandwidth_reference(w, threads, fresh=True)
    _, t_warm = bandwidth_reference(w, threads, fresh=False)
    ref, warm = gb / t_fresh, gb / t_warm
    print(f"{platform.machine()}, {threads} threads, {args.mib} MiB fp32 input; bandwidth "
          f"reference ({ref_name}) {ref:.2f} GB/s into a fresh int8 array ({warm:.2f} into a "
          f"warm one)")

    rows = []
    for gs in args.group_sizes:
        ours = {}
        for backend in gqlearn.available_backends():
            gqlearn.quantize(w[:64], gs, backend=backend)  # warm-up (and JIT)
            # partial binds gs and backend now, not when the call runs
            ours[backend] = gb / best_of(partial(gqlearn.quantize, w, gs, backend=backend),
                                         args.repeats)
        peer_speed = {name: gb / best_of(partial(fn, w), args.repeats)
                      for name, fn in peers(gs).items()}
        fastest = max(peer_speed.values())
        naive_speed = gb / best_of(partial(naive, w, gs), args.repeats)
        for name, speed in [*((f"gqlearn ({b})", s) for b, s in ours.items()),
                            *peer_speed.items(), ("naive numpy (not a peer)", naive_speed)]:
            rows.append((gs, name, speed, speed / fastest, speed / ref))
        print(f"group size {gs}:")
        for r in rows:
            if r[0] == gs:
                print(f"  {r[1]:44s} {r[2]:6.2f} GB/s  {r[3]:5.2f}x fastest peer  "
                      f"{100 * r[4]:5.1f}% of bandwidth")

    rss = None
    if not args.no_rss:
        rss = peak_rss_gib(1024)
        print(f"1 GiB tensor: resident {rss[0]:.2f} GiB before quantizing, peak {rss[1]:.2f} GiB "
              f"while quantizing (the output itself is 0.25 GiB of int8 + 8 MiB of scales)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores, {threads} threads, "
             f"numpy {np.__version__}, Python {platform.python_version()}. "
             f"Input: {args.mib} MiB fp32, best of {args.repeats} runs. Bandwidth reference "
             f"(one pass reading fp32 and writing a fresh int8 array, {ref_name}): {ref:.2f} GB/s "
             f"({warm:.2f} into an array already in memory).", "",
             "| group size | implementation | GB/s of fp32 input | × fastest peer "
             "| % of bandwidth |",
             "|---:|---|---:|---:|---:|"]
    lines += [f"| {gs} | {name} | {s:.2f} | {x:.2f} | {100 * b:.0f}% |"
              for gs, name, s, x, b in rows]
    if rss:
        lines += ["", f"Peak resident memory quantizing a 1 GiB fp32 tensor (group size 128): "
                      f"{rss[1]:.2f} GiB, from {rss[0]:.2f} GiB before (the input and the "
                      f"interpreter); the output is 0.26 GiB."]
    with tempfile.NamedTemporaryFile("w", dir=args.out.parent, delete=False,
                                     suffix=".tmp") as tmp:
        tmp.write("\n".join(lines) + "\n")
    os.replace(tmp.name, args.out)
    print(f"wrote {args.out}")
    with contextlib.suppress(ImportError):  # no matplotlib: the table is enough
        plot(rows, ref, args.out.with_suffix(".png"))


def plot(rows, ref: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = list(dict.fromkeys(r[1] for r in rows))
    sizes = sorted({r[0] for r in rows})
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [sizes.index(r[0]) + i * width for r in rows if r[1] == name]
        ax.bar(xs, [r[2] for r in rows if r[1] == name], width, label=name)
    ax.axhline(ref, color="k", ls="--", label="bandwidth reference")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sizes))], [str(s) for s in sizes])
    ax.set_xlabel("group size")
    ax.set_ylabel("GB/s of fp32 input")
    ax.set_title("Quantization throughput (higher is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
