"""SmolLM2-135M decoding on quantized weights: resident memory and greedy tokens/s.

    python bench/bench_decode.py              # float32, int8 g=32, int8 g=128, int4 g=32
    python bench/bench_decode.py --tokens 16  # quicker

Each setting runs in a fresh process: it loads the float model, quantizes every block matrix
and the tied embedding/output matrix (:class:`gqlearn.llm.QuantizedLlama`), drops the float
model, then measures the weight arrays' bytes (the sum of their ``nbytes``), the process's
resident memory (RSS), greedy decoding speed (best of 3 runs of ``--tokens`` tokens after a
short prompt) and the perplexity of the course's sample text, which must equal the
fake-quantized model's (:func:`gqlearn.llm.fake_quantize_linear_weights`, the decoder chapter).
Writes ``bench/results/decode.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SETTINGS = [("float32", None, None), ("int8 g=32", 8, 32), ("int8 g=128", 8, 128),
            ("int4 g=32", 4, 32)]
PROMPT = "The capital of France is"


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_one(bits: int | None, group_size: int | None, tokens: int, fake: bool) -> dict:
    import numpy as np

    import gqlearn
    from gqlearn.io import fetch_model, open_gguf
    from gqlearn.llm import (
        QuantizedLlama,
        fake_quantize_linear_weights,
        load_llama,
        load_sample_text,
        perplexity,
        tokenizer_from_gguf,
    )

    for b in (8, 4):  # load the compiled kernels before the baseline, for every setting alike
        gqlearn.qmatmul(np.ones(64, np.float32), gqlearn.quantize(np.ones((8, 64), np.float32),
                                                                  32, bits=b))
    gc.collect()
    base_rss = rss_mib()
    reader = open_gguf(str(fetch_model("smollm2", quiet=True)))
    model, tok = load_llama(reader), tokenizer_from_gguf(reader)
    del reader
    text_ids = tok.encode(load_sample_text()).ids[:128]
    fake_ppl = None
    if bits is not None and fake:
        qw = fake_quantize_linear_weights(model, bits, group_size, include_embedding=True)
        fake_ppl = perplexity(model.with_weights(qw.weights).forward(text_ids), text_ids)
        del qw
    if bits is not None:
        model = QuantizedLlama.from_model(model, bits, group_size, include_embedding=True)
        weight_bytes = model.weight_nbytes
    else:
        weight_bytes = sum(w.nbytes for w in model.weights.values())
    gc.collect()
    rss = rss_mib()
    prompt = tok.encode(PROMPT).ids
    model.generate(prompt, 2)  # warm up (compile)
    best = best_cpu = float("inf")
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        out = model.generate(prompt, tokens)
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    ppl = perplexity(model.forward(text_ids), text_ids)
    return {"weight_mib": weight_bytes / 2**20, "rss_mib": rss, "base_rss_mib": base_rss,
            "tokens_s": tokens / best,
            "ms_token": 1e3 * best / tokens, "cpu_ms_token": 1e3 * best_cpu / tokens,
            "load": os.getloadavg()[0], "ppl": ppl, "fake_ppl": fake_ppl,
            "text": tok.decode(out), "peak_rss_mib": _peak_mib()}


def _peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--out", default=str(HERE / "results" / "decode.md"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--no-fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        bits, g = json.loads(args.one)
        print(json.dumps(run_one(bits, g, args.tokens, not args.no_fake)))
        return
    results = []
    one = {**os.environ, **{v: "1" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                              "GQLEARN_NUM_THREADS", "NUMBA_NUM_THREADS")}}
    for env, threads in ((None, "all"), (one, "1")):
        for label, bits, g in SETTINGS:
            proc = subprocess.run([sys.executable, __file__, "--one", json.dumps([bits, g]),
                                   "--tokens", str(args.tokens)]
                                  + (["--no-fake"] if threads == "1" else []), capture_output=True,
                                  text=True, check=True, env=env)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["threads"] = threads
            results.append((label, r))
            print(label, threads, r, flush=True)
    import numba
    import numpy as np

    import gqlearn
    base = {r["threads"]: r for label, r in results if label == "float32"}
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, "
             f"numba {numba.__version__}, Python {platform.python_version()}, "
             f"threads {gqlearn.default_threads()}. SmolLM2-135M-Instruct, every block matrix "
             f"and the tied embedding/output matrix quantized (211 matrices, 134.5 M weights); "
             f"greedy decoding of {args.tokens} tokens after {PROMPT!r} (best of 3, KV cache); "
             f"perplexity of the first 128 tokens of the sample text. Each setting in a fresh "
             f"process; RSS after the float model is dropped, and above the RSS before loading "
             f"(interpreter, numpy, numba and the compiled kernels).", "",
             "| weights | threads | weight arrays (MiB) | RSS above start (MiB) "
             "| process RSS (MiB) "
             "| tokens/s | ms/token | CPU ms/token | × float32 | perplexity "
             "| fake-quantized perplexity | load average |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in results:
        fake = "—" if r["fake_ppl"] is None else f"{r['fake_ppl']:.6f}"
        lines.append(f"| {label} | {r['threads']} | {r['weight_mib']:.1f} | "
                     f"{r['rss_mib'] - r['base_rss_mib']:.0f} | {r['rss_mib']:.0f} | "
                     f"{r['tokens_s']:.2f} | {r['ms_token']:.1f} | {r['cpu_ms_token']:.1f} | "
                     f"{r['tokens_s'] / base[r['threads']]['tokens_s']:.2f} | "
                     f"{r['ppl']:.6f} | {fake} | "
                     f"{r['load']:.1f} |")
    lines += ["", "Generated text:", ""]
    lines += [f"- {label}: {r['text']!r}" for label, r in results if r["threads"] == "all"]
    lines += ["", "Reading the table: the machine (2 cores) was shared with other jobs (load "
              "average in the last column). With all threads, numpy's multi-threaded BLAS "
              "suffers most: its threads wait for each other on a busy machine (float32: 900 "
              "ms/token with 2 threads, 80 ms with one), so the one-thread rows are the fair "
              "comparison. RSS above start includes about 200 MiB besides the weights "
              "(allocator pages kept after the float model and the quantization temporaries "
              "were freed, the KV cache, the tokenizer)."]
    lines += ["", "int8 g=128: SmolLM2's width 576 is not a multiple of 128, so those matrices "
              "use g=64 (as in the decoder chapter); ffn_down (width 1536) uses 128."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
