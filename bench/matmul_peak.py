#!/usr/bin/env python3
"""How close our GPT-2-small forward comes to this machine's matrix-multiply
peak: the forward's products timed alone on our backend (`bench_matmul`)
beside the BLAS libraries installed here, in one invocation, then our whole
forward's rate (`bench_forward --case bare`) as a fraction of the best.

Setup (installs nothing; each library found is measured, the rest skipped):

    apt-get install libopenblas0-pthread libblis4-pthread   # Debian's BLAS builds (optional)
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
    cargo build --release --example bench_matmul --example bench_forward
    python bench/matmul_peak.py                # ~2 min on 2 cores
    python bench/matmul_peak.py --avx2         # the libraries' AVX2 kernels only

Libraries: PyTorch's `torch.matmul` (its bundled MKL/oneDNN), numpy's BLAS,
and, through ctypes, `cblas_sgemm` of Debian's OpenBLAS (`libopenblas.so.0`)
and BLIS (`libblis.so.4`). `--avx2` restricts them to their AVX2 kernels on
an AVX-512 machine (`OPENBLAS_CORETYPE=Haswell`, `ATEN_CPU_CAPABILITY=avx2`,
`MKL_ENABLE_INSTRUCTIONS=AVX2`, `ONEDNN_MAX_CPU_ISA=AVX2`; BLIS picks its
kernels by CPU and has no such switch): the peak an AVX2 CPU of the same
microarchitecture would have. Our side is the same binary either way.

The forward's floating-point work, counted as 2·M·K·N per product:
every linear layer and the unembedding (all positions), and per layer the
two attention products (2·2·B·S²·D, causal masking not skipped, as on both
sides).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
D, LAYERS, VOCAB, MLP = 768, 12, 50257, 3072
PRODUCTS = [(D, 3 * D), (D, D), (D, MLP), (MLP, D), (D, VOCAB)]
AVX2_ENV = {
    "OPENBLAS_CORETYPE": "Haswell",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}


def forward_gflop(batch: int, tokens: int) -> float:
    rows = batch * tokens
    linear = LAYERS * sum(k * n for k, n in PRODUCTS[:4]) + D * VOCAB
    attention = LAYERS * 2 * batch * tokens * tokens * D
    return 2 * (rows * linear + attention) / 1e9


def best_of(f, seconds: float) -> float:
    f()
    best, started, reps = float("inf"), time.perf_counter(), 0
    while reps < 3 or time.perf_counter() - started < seconds:
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
        reps += 1
    return best


def cblas(path: str, threads: int):
    """`cblas_sgemm` of a shared library as f(a, b, c), or None."""
    try:
        lib = ctypes.CDLL(path)
        sgemm = lib.cblas_sgemm
    except (OSError, AttributeError):
        return None
    for setter in ("openblas_set_num_threads", "bli_thread_set_num_threads"):
        if hasattr(lib, setter):
            getattr(lib, setter)(ctypes.c_int(threads) if "openblas" in setter else ctypes.c_int64(threads))
    f32p = ctypes.POINTER(ctypes.c_float)
    sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, f32p, ctypes.c_int, f32p, ctypes.c_int, ctypes.c_float, f32p, ctypes.c_int]

    def run(a, b, c):
        m, k = a.shape
        n = b.shape[1]
        ptr = lambda x: x.ctypes.data_as(f32p)  # noqa: E731
        sgemm(101, 111, 111, m, n, k, 1.0, ptr(a), k, ptr(b), n, 0.0, ptr(c), n)

    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release/examples"
    p.add_argument("--bin-dir", type=Path, default=target, help=f"where bench_matmul and bench_forward are (default {target})")
    p.add_argument("--rows", type=int, nargs="+", default=[128, 1024], help="M = batch × tokens (default 128 1024)")
    p.add_argument("--seconds", type=float, default=1.0, help="time per product and library")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--avx2", action="store_true", help="the libraries' AVX2 kernels only")
    p.add_argument("--products", help="K×N pairs instead of GPT-2 small's, e.g. Qwen2.5-0.5B's "
                   "896x896,896x128,896x4864,4864x896,896x151936 (skips the forward's rate)")
    args = p.parse_args()
    if args.avx2 and not os.environ.get("MATMUL_PEAK_CHILD"):
        # The switches are read when the libraries load: rerun with them set.
        env = dict(os.environ, MATMUL_PEAK_CHILD="1", **AVX2_ENV)
        return subprocess.call([sys.executable, *sys.argv], env=env)
    for name in ("bench_matmul", "bench_forward"):
        if not (args.bin_dir / name).exists():
            sys.exit(f"{args.bin_dir / name} not found: cargo build --release --example bench_matmul --example bench_forward")

    # numpy's OpenBLAS reads its thread count when it loads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    libs = {"torch": None, "numpy": None}
    for name, path in (("openblas (Debian)", "libopenblas.so.0"), ("blis (Debian)", "libblis.so.4")):
        run = cblas(path, args.threads)
        if run:
            libs[name] = run
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    flags = open("/proc/cpuinfo").read()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    print(
        f"# {cpu} ({isa}), {args.threads} threads; torch {torch.__version__}, numpy {np.__version__}; "
        f"{'libraries on AVX2 kernels (' + ' '.join(f'{k}={v}' for k, v in AVX2_ENV.items()) + ')' if args.avx2 else 'default kernels'}",
        flush=True,
    )
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))

    products = PRODUCTS
    if args.products:
        products = [tuple(int(v) for v in pair.replace("×", "x").split("x")) for pair in args.products.split(",")]
    listed = ",".join(f"{k}x{n}" for k, n in products)

    def ours(m: int, path: str) -> dict:
        out = subprocess.run(
            [str(args.bin_dir / "bench_matmul"), "--rows", str(m), "--seconds", str(args.seconds),
             "--products", listed, "--path", path],
            check=True, capture_output=True, text=True, env=env,
        ).stdout
        return {(r["k"], r["n"]): r["gflops"] for r in map(json.loads, out.split())}

    best_peak = 0.0
    # "ours" is what the models' linear layers run (`ops::matmul_rows`: few
    # rows split over the output columns); "Flex alone" is `Tensor::matmul`.
    print("\n| M × K × N | ours (`matmul_rows`) | Flex alone | " + " | ".join(libs) + " |")
    print("|---|---|---|" + "---|" * len(libs))
    for m in args.rows:
        model, flex = ours(m, "model"), ours(m, "flex")
        for k, n in products:
            rng = np.random.default_rng(0)
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32) * 0.05
            c = np.empty((m, n), dtype=np.float32)
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            flop = 2 * m * k * n / 1e9
            row = []
            for name, run in libs.items():
                if name == "torch":
                    secs = best_of(lambda: torch.matmul(ta, tb), args.seconds)
                elif name == "numpy":
                    secs = best_of(lambda: np.matmul(a, b, out=c), args.seconds)
                else:
                    secs = best_of(lambda: run(a, b, c), args.seconds)
                row.append(flop / secs)
            best_peak = max(best_peak, *row)
            print(f"| {m} × {k} × {n} | {model[(k, n)]:.0f} | {flex[(k, n)]:.0f} | "
                  + " | ".join(f"{g:.0f}" for g in row) + " |", flush=True)

    print(f"\n# best BLAS rate above (the peak): {best_peak:.0f} GFLOP/s")
    if args.products:
        return 0
    print("\n| our forward (bare, f32) | GFLOP | median ms | GFLOP/s | of the peak |")
    print("|---|---|---|---|---|")
    for m in args.rows:
        batch, tokens = max(1, m // 128), min(m, 128)
        out = subprocess.run(
            [str(args.bin_dir / "bench_forward"), "--shape", "small", "--batch", str(batch), "--tokens", str(tokens),
             "--case", "bare", "--iters", "5" if m <= 128 else "3", "--warmup", "1"],
            check=True, capture_output=True, text=True, env=env,
        ).stdout
        ms = json.loads(out.splitlines()[-1])["median_ms"]
        gflop = forward_gflop(batch, tokens)
        rate = gflop / (ms / 1e3)
        print(f"| {batch} × {tokens} | {gflop:.1f} | {ms:.0f} | {rate:.0f} | {rate / best_peak:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
