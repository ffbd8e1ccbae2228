#!/usr/bin/env python3
"""Our hooked GPT-2 (Burn, Flex CPU backend) against a PyTorch peer, side by
side in one invocation: TransformerLens's HookedTransformer (`--peer tl`,
the default) or the reference model, OpenAI transformer-debugger's
`Transformer` with its hook tree (`--peer reference`; PyTorch eager, CPU).

For every (shape, batch, tokens, case) the script alternates rounds: our
`bench_forward` example as a subprocess (K timed iterations after W warm-up
ones), then TransformerLens in this process (the same K and W), and again,
so both see the same machine conditions. It prints a markdown table of
medians and ratios (ours / theirs; below 1 means we are faster), then the
hook-overhead ratios of each implementation.

Setup (this script installs nothing):

    pip install "transformer-lens<4" torch
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
    cargo build --release --example bench_forward
    python bench/compare_pytorch.py            # full run, ~3–5 min on 2 cores
    python bench/compare_pytorch.py --quick    # tiny shape only, seconds

Against the reference model (its source is not vendored here; clone it):

    git clone https://github.com/openai/transformer-debugger /tmp/transformer-debugger
    pip install tiktoken aiohttp           # what its transformer.py imports
    python bench/compare_pytorch.py --peer reference --reference-repo /tmp/transformer-debugger

The reference sizes its vocabulary from a tiktoken encoding (downloaded on
first use); the script hands it the shape's vocabulary size instead, so
nothing is downloaded and the tiny shape keeps 512 tokens. Its hooks are the
seed's: `record` appends one recording function to the `fwd` stage of every
site, `grad` one pass-through function to every `bwd` stage.

On a machine with an NVIDIA GPU, both sides on the GPU:

    CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda --example bench_forward
    python bench/compare_pytorch.py --device cuda

Our side asks glibc to keep freed memory (`--malloc retain`, as the `hooks`
tool does); to give PyTorch the same settings, start the script with them:

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=17179869184 \
        MALLOC_TOP_PAD_=67108864 MALLOC_ARENA_MAX=1 python bench/compare_pytorch.py

Cases (the same on both sides):
  bare          forward, no hooks, no autograd graph (`torch.no_grad()`; ours
                on the plain `Cpu` backend with an empty hook tree)
  record        forward recording every hook site (`run_with_cache` under
                `torch.no_grad()`; ours a `Recorder` at every site)
  grad_nohooks  forward + backward of `logits.sum()`, no hooks (ours on
                `CpuAutodiff`; theirs with parameter gradients, zeroed with
                `set_to_none` outside the timed region)
  grad          the same with a pass-through gradient hook at every site
                (`add_hook(..., dir="bwd")` on every hook point that the
                default config calls; ours `append_all_grad`)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Hook points the default HookedTransformerConfig never calls; TransformerLens
# refuses hooks on some of them, so the "every site" filter leaves them out.
TL_OPTIONAL_HOOKS = (
    "attn.hook_result",
    "hook_q_input",
    "hook_k_input",
    "hook_v_input",
    "hook_mlp_in",
    "hook_attn_in",
)

SHAPES = {
    # name: (n_layers, d_model, n_heads, n_ctx, d_vocab), as in bench_forward.rs
    "small": (12, 768, 12, 1024, 50257),
    "tiny": (2, 64, 4, 64, 512),
}


@dataclass
class Job:
    shape: str
    batch: int
    tokens: int
    case: str
    iters: int
    warmup: int
    rounds: int
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    ours_calls: int = 0
    theirs_calls: int = 0


def plan(quick: bool, scale: float) -> list[Job]:
    """The cases, with iteration counts sized for ~10 minutes on 2 cores."""
    jobs: list[Job] = []

    def add(shape, batch, tokens, cases, iters, warmup, rounds):
        for case in cases:
            jobs.append(Job(shape, batch, tokens, case, max(1, round(iters * scale)), warmup, rounds))

    fwd, grad = ("bare", "record"), ("grad_nohooks", "grad")
    add("tiny", 1, 16, fwd, 100, 10, 3)
    add("tiny", 1, 16, grad, 50, 5, 3)
    if not quick:
        add("small", 1, 128, fwd, 5, 1, 2)
        add("small", 1, 128, grad, 3, 1, 2)
        add("small", 8, 128, fwd, 2, 1, 2)
        add("small", 8, 128, grad, 2, 1, 1)
    return jobs


def threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def tokens_for(batch: int, length: int, vocab: int):
    """The token rows bench_forward.rs uses."""
    import torch

    rows = [[(b * 7919 + t * 104729) % vocab for t in range(length)] for b in range(batch)]
    return torch.tensor(rows, dtype=torch.long)


def timed_ms(model, step, sync, before=lambda: None) -> float:
    """`step` timed in ms, after an untimed `zero_grad` (frees the last
    gradients) and `before()`; `sync` waits for a GPU's queued kernels."""
    model.zero_grad(set_to_none=True)
    before()
    sync()
    start = time.perf_counter()
    step()
    sync()
    return (time.perf_counter() - start) * 1e3


class TheirSide:
    """One TransformerLens model per shape, timed in this process."""

    def __init__(self, shape: str, device: str):
        import torch
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        n_layers, d_model, n_heads, n_ctx, d_vocab = SHAPES[shape]
        cfg = HookedTransformerConfig(
            n_layers=n_layers,
            d_model=d_model,
            n_heads=n_heads,
            d_head=d_model // n_heads,
            d_mlp=4 * d_model,
            d_vocab=d_vocab,
            n_ctx=n_ctx,
            act_fn="gelu_new",
            normalization_type="LN",
            device=device,
            dtype=torch.float32,
            seed=0,
        )
        self.torch = torch
        self.device = device
        self.model = HookedTransformer(cfg)
        self.model.eval()
        self.vocab = d_vocab
        self.calls = 0

    def _count(self, grad, hook):
        self.calls += 1
        return None  # the gradient passes on unchanged

    def run(self, job: Job) -> tuple[list[float], int]:
        torch, model = self.torch, self.model
        toks = tokens_for(job.batch, job.tokens, self.vocab).to(self.device)
        # On a GPU, wait for the queued kernels before reading the clock.
        sync = torch.cuda.synchronize if self.device == "cuda" else (lambda: None)
        model.reset_hooks()
        self.calls = 0
        if job.case == "bare":

            def step():
                with torch.no_grad():
                    model(toks)

        elif job.case == "record":

            def step():
                with torch.no_grad():
                    _, cache = model.run_with_cache(toks)
                    self.calls = len(cache)
                    del cache

        elif job.case in ("grad", "grad_nohooks"):
            if job.case == "grad":
                model.add_hook(lambda name: not name.endswith(TL_OPTIONAL_HOOKS), self._count, dir="bwd")

            def step():
                model(toks).sum().backward()
                assert model.embed.W_E.grad is not None

        else:
            raise ValueError(job.case)

        def once():
            return timed_ms(model, step, sync)

        for _ in range(job.warmup):
            once()
        self.calls = 0 if job.case == "grad" else self.calls
        times = [once() for _ in range(job.iters)]
        calls = self.calls // job.iters if job.case == "grad" else self.calls
        model.reset_hooks()
        model.zero_grad(set_to_none=True)
        return times, calls


class ReferenceSide:
    """The reference model (transformer-debugger's `Transformer`) per shape,
    timed in this process with the same cases as `TheirSide`."""

    def __init__(self, shape: str, device: str, repo: Path):
        import types

        import torch

        sys.path.insert(0, str(repo))
        import tiktoken

        n_layers, d_model, n_heads, n_ctx, d_vocab = SHAPES[shape]
        real_encoding = tiktoken.get_encoding
        # The model reads only `n_vocab` from its encoding.
        tiktoken.get_encoding = lambda name: types.SimpleNamespace(n_vocab=d_vocab)
        try:
            from neuron_explainer.models import hooks as ref_hooks
            from neuron_explainer.models.transformer import Transformer, TransformerConfig

            cfg = TransformerConfig(ctx_window=n_ctx, d_model=d_model, n_layers=n_layers, n_heads=n_heads)
            self.model = Transformer(cfg, device=device, dtype=torch.float32)
        finally:
            tiktoken.get_encoding = real_encoding
        self.model.eval()
        self.hooks = ref_hooks
        self.torch = torch
        self.device = device
        self.vocab = d_vocab

    def _every_site(self, attach) -> "object":
        """A fresh hook tree with `attach(site)` called on every site."""
        tree = self.hooks.TransformerHooks()

        def walk(node):
            if isinstance(node, self.hooks.FwdBwdHooks):
                attach(node)
            else:
                for child in node.all_hooks.values():
                    walk(child)

        walk(tree)
        return tree

    def run(self, job: Job) -> tuple[list[float], int]:
        torch, model = self.torch, self.model
        toks = tokens_for(job.batch, job.tokens, self.vocab).to(self.device)
        sync = torch.cuda.synchronize if self.device == "cuda" else (lambda: None)
        seen: list = []

        # Plain functions (not bound methods): the model deep-copies its hook
        # tree once per layer, and a deep copy of a method copies its object.
        def record(x, *args, **kwargs):
            seen.append(x)
            return x

        def count(grad, *args, **kwargs):
            seen.append(None)
            return grad

        if job.case in ("bare", "grad_nohooks"):
            hooks = self.hooks.TransformerHooks()
        elif job.case == "record":
            hooks = self._every_site(lambda site: site.append_fwd(record))
        elif job.case == "grad":
            hooks = self._every_site(lambda site: site.append_bwd(count))
        else:
            raise ValueError(job.case)
        grad = job.case.startswith("grad")

        def step():
            if grad:
                logits, _ = model(toks, hooks=hooks)
                logits.sum().backward()
                assert model.tok_embed.weight.grad is not None
            else:
                with torch.no_grad():
                    model(toks, hooks=hooks)

        def once():
            return timed_ms(model, step, sync, before=seen.clear)

        for _ in range(job.warmup):
            once()
        times, calls = [], 0
        for _ in range(job.iters):
            times.append(once())
            calls = len(seen)
        model.zero_grad(set_to_none=True)
        return times, calls


def run_ours(binary: Path, job: Job, n_threads: int, malloc: str, device: str) -> tuple[list[float], int]:
    cmd = [
        str(binary),
        "--malloc", malloc,
        "--backend", "cuda" if device == "cuda" else "flex",
        "--shape", job.shape,
        "--batch", str(job.batch),
        "--tokens", str(job.tokens),
        "--case", job.case,
        "--iters", str(job.iters),
        "--warmup", str(job.warmup),
    ]
    env = dict(os.environ, RAYON_NUM_THREADS=str(n_threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    result = json.loads(line)
    return result["samples_ms"], result["hook_calls"]


def fmt_ms(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_bin = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release/examples/bench_forward"
    p.add_argument("--bin", type=Path, default=default_bin, help=f"bench_forward binary (default {default_bin})")
    p.add_argument("--quick", action="store_true", help="tiny shape only")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every iteration count")
    p.add_argument("--json", type=Path, help="also write raw samples here")
    p.add_argument(
        "--threads",
        type=int,
        default=threads(),
        help="threads for both sides: torch.set_num_threads and RAYON_NUM_THREADS (default: the cores this process may use)",
    )
    p.add_argument(
        "--malloc",
        choices=("retain", "default"),
        default="retain",
        help="our side's glibc settings: `retain` keeps freed memory (what the `hooks` tool does), "
        "`default` leaves glibc alone. TransformerLens runs with whatever MALLOC_* variables this "
        "process was started with (none by default)",
    )
    p.add_argument(
        "--peer",
        choices=("tl", "reference"),
        default="tl",
        help="what we compare against: TransformerLens (`tl`) or the reference model "
        "(`reference`, transformer-debugger's Transformer; needs --reference-repo)",
    )
    p.add_argument(
        "--reference-repo",
        type=Path,
        default=os.environ.get("TRANSFORMER_DEBUGGER"),
        help="a clone of github.com/openai/transformer-debugger (default $TRANSFORMER_DEBUGGER)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu: ours on Flex, TransformerLens on the CPU; cuda: ours on burn-cuda (the binary "
        "must be built with `--features cuda`), TransformerLens on the GPU",
    )
    args = p.parse_args()

    if not args.bin.exists():
        sys.exit(f"{args.bin} not found: run `cargo build --release --example bench_forward` first")
    try:
        import torch

        if args.peer == "tl":
            import transformer_lens  # noqa: F401
    except ImportError as e:
        sys.exit(f"{e}: pip install \"transformer-lens<4\" torch")
    if args.peer == "reference":
        repo = args.reference_repo
        if repo is None or not (repo / "neuron_explainer/models/transformer.py").exists():
            sys.exit(
                "--peer reference needs --reference-repo DIR, a clone of "
                "https://github.com/openai/transformer-debugger (DIR/neuron_explainer/models/transformer.py)"
            )
        try:
            import tiktoken  # noqa: F401
        except ImportError as e:
            sys.exit(f"{e}: pip install tiktoken aiohttp (the reference model imports them)")
    peer_name = "TransformerLens" if args.peer == "tl" else "reference"
    peer_short = "TL" if args.peer == "tl" else "ref"

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: PyTorch sees no CUDA GPU here (no NVIDIA driver, or a CPU-only torch)")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    n_threads = args.threads
    torch.set_num_threads(n_threads)
    torch.manual_seed(0)
    import importlib.metadata as md

    cpu = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
        platform.processor(),
    ) if Path("/proc/cpuinfo").exists() else platform.processor()
    gpu = f", GPU {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    print(
        f"# {cpu}{gpu}, {n_threads} threads; torch {torch.__version__}, "
        f"peer {peer_name}"
        f"{' ' + md.version('transformer-lens') if args.peer == 'tl' else ' at ' + str(args.reference_repo)}, python {platform.python_version()}; "
        f"ours --malloc {args.malloc}; MALLOC_* in the environment: "
        f"{' '.join(f'{k}={v}' for k, v in sorted(os.environ.items()) if k.startswith('MALLOC_')) or 'none'}",
        flush=True,
    )

    jobs = plan(args.quick, args.scale)
    theirs: dict[str, TheirSide] = {}
    started = time.time()
    for job in jobs:
        if job.shape not in theirs:
            theirs.clear()  # one model in memory at a time
            theirs[job.shape] = (
                TheirSide(job.shape, args.device)
                if args.peer == "tl"
                else ReferenceSide(job.shape, args.device, args.reference_repo)
            )
        for _ in range(job.rounds):
            samples, job.ours_calls = run_ours(args.bin, job, n_threads, args.malloc, args.device)
            job.ours += samples
            samples, job.theirs_calls = theirs[job.shape].run(job)
            job.theirs += samples
        print(
            f"# {time.time() - started:6.0f}s {job.shape} {job.batch}x{job.tokens} {job.case}: "
            f"ours {statistics.median(job.ours):.3f} ms, theirs {statistics.median(job.theirs):.3f} ms "
            f"(sites: ours {job.ours_calls}, theirs {job.theirs_calls})",
            flush=True,
        )

    med = {(j.shape, j.batch, j.tokens, j.case): (statistics.median(j.ours), statistics.median(j.theirs)) for j in jobs}
    print()
    print(
        f"| case | shape | batch × tokens | samples | ours median (ms) | {peer_short} median (ms) "
        f"| ours / {peer_short} (medians) | ours / {peer_short} (minima) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for j in jobs:
        o, t = med[(j.shape, j.batch, j.tokens, j.case)]
        print(
            f"| {j.case} | {j.shape} | {j.batch} × {j.tokens} | {len(j.ours)} | {fmt_ms(o)} | {fmt_ms(t)} "
            f"| {o / t:.3f} | {min(j.ours) / min(j.theirs):.3f} |"
        )

    print()
    print(f"| overhead | shape | batch × tokens | ours | {peer_name} |")
    print("|---|---|---|---|---|")
    for shape, batch, tokens in dict.fromkeys((j.shape, j.batch, j.tokens) for j in jobs):
        for label, num, den in (("record / bare", "record", "bare"), ("grad / grad_nohooks", "grad", "grad_nohooks")):
            a, b = med.get((shape, batch, tokens, num)), med.get((shape, batch, tokens, den))
            if a and b:
                print(f"| {label} | {shape} | {batch} × {tokens} | {a[0] / b[0]:.3f} | {a[1] / b[1]:.3f} |")
    print(f"\n# total {time.time() - started:.0f}s")

    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {k: getattr(j, k) for k in ("shape", "batch", "tokens", "case", "iters", "warmup", "rounds", "ours", "theirs")}
                    for j in jobs
                ],
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
