#!/usr/bin/env python3
"""Our hooked Llama-family model (Burn, Flex CPU backend) against Hugging
Face transformers' Qwen2ForCausalLM (PyTorch eager attention, CPU), side by
side in one invocation.

For every (shape, batch, tokens, case) the script alternates rounds: our
`bench_llama` example as a subprocess (K timed iterations after W warm-up
ones), then transformers in this process (the same K and W), and again, so
both see the same machine conditions. It prints a markdown table of medians
and ratios (ours / transformers; below 1 means we are faster), then the
hook-overhead ratio (record / bare) of each side.

Setup (this script installs nothing):

    pip install "transformers>=5" torch
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
    cargo build --release --example bench_llama
    python bench/compare_transformers.py                 # Qwen2.5-0.5B shape, ~4 min on 2 cores
    python bench/compare_transformers.py --quick         # tiny shape only, seconds
    python bench/compare_transformers.py --save bench/results/DATE-llama-threads2

Shapes (random weights, float32, the same config on both sides: the
script reads our binary's `--print-config` and builds `Qwen2Config` from
it):

  qwen2.5-0.5b  Qwen2.5-0.5B's shape: 24 layers, width 896, 14 query heads,
                2 key/value heads (head width 64), MLP 4864, vocabulary
                151936, q/k/v biases, tied embeddings, θ = 1e6
  tiny          2 layers, width 64, 4 heads, 2 key/value heads, MLP 128,
                vocabulary 512 (same family)

Cases:

  bare      forward pass returning logits for every position. Ours: `forward`
            with an empty hook tree. Theirs: `model(input_ids,
            use_cache=False)` under `torch.no_grad()`, eager attention.
  unhooked  (ours only, `--cases` to add it) `forward_unhooked`, every site
            call compiled out; compared against the same transformers
            forward as `bare`.
  record    every site recorded. Ours: a `Recorder` at every site of
            `LlamaHooks` (19 per block + 5 outside; 461 on the 24-layer
            shape). Theirs: PyTorch forward hooks (and pre-hooks) that keep a
            reference to each tensor in a dict, on every module boundary that
            is one of our sites (14 per block + 3 outside; 339):
              resid.post_emb         embed_tokens output
              resid.torso.post_ln_attn  input_layernorm output
              attn.q / attn.k / attn.v  q_proj / k_proj / v_proj outputs
                                     (before RoPE: the rotated q and k are
                                     not module outputs in transformers)
              attn.qk_probs          self_attn output[1] (eager attention
                                     returns its weights; nothing extra is
                                     computed for them)
              attn.v_out             o_proj input
              resid.torso.delta_attn self_attn output[0]
              resid.torso.post_attn  post_attention_layernorm input
              resid.torso.post_ln_mlp post_attention_layernorm output
              mlp.pre_act / mlp.up   gate_proj / up_proj outputs
              mlp.post_act           down_proj input
              resid.torso.delta_mlp  mlp output
              resid.torso.post_mlp   decoder layer output
              resid.post_ln_f        final norm output
              logits                 lm_head output
            Not recordable there without patching transformers (so ours
            records 122 tensors more): attn.qk_logits (inside
            eager_attention_forward), the RMS norms' scale and post_scale
            sites (inside Qwen2RMSNorm.forward), resid.ln_f's input being
            the last post_mlp.

Model construction is never timed; every timed iteration of ours reads a
value of the logits, and PyTorch on the CPU is synchronous.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    ours_init_ms: list[float] = field(default_factory=list)


def plan(quick: bool, scale: float, cases: list[str], rounds: int | None) -> list[Job]:
    """The cases, with iteration counts sized for ~5 minutes on 2 cores."""
    jobs: list[Job] = []

    def add(shape, batch, tokens, iters, warmup, n_rounds):
        for case in cases:
            jobs.append(
                Job(shape, batch, tokens, case, max(1, round(iters * scale)), warmup, rounds or n_rounds)
            )

    add("tiny", 1, 16, 100, 10, 3)
    if not quick:
        add("qwen2.5-0.5b", 1, 128, 4, 1, 3)
    return jobs


def threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def tokens_for(batch: int, length: int, vocab: int):
    """The token rows bench_llama.rs uses."""
    import torch

    rows = [[(b * 7919 + t * 104729) % vocab for t in range(length)] for b in range(batch)]
    return torch.tensor(rows, dtype=torch.long)


def our_config(binary: Path, shape: str) -> dict:
    out = subprocess.run([str(binary), "--shape", shape, "--print-config"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


class TheirSide:
    """One transformers Qwen2ForCausalLM per shape, timed in this process."""

    def __init__(self, cfg: dict, device: str):
        import torch
        import transformers as tf

        assert cfg["model_type"] == "qwen2", cfg["model_type"]
        config = tf.Qwen2Config(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg["num_key_value_heads"],
            max_position_embeddings=cfg["max_position_embeddings"],
            rms_norm_eps=cfg["rms_norm_eps"],
            rope_parameters={"rope_type": "default", "rope_theta": cfg["rope_theta"]},
            hidden_act=cfg["hidden_act"],
            tie_word_embeddings=cfg["tie_word_embeddings"],
            use_sliding_window=cfg.get("use_sliding_window", False),
            attention_dropout=0.0,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
            attn_implementation="eager",
        )
        self.torch = torch
        self.device = device
        start = time.perf_counter()
        self.model = tf.Qwen2ForCausalLM(config).to(device=device, dtype=torch.float32).eval()
        self.init_ms = (time.perf_counter() - start) * 1e3
        m = self.model
        assert m.config._attn_implementation == "eager"
        assert m.lm_head.weight is m.model.embed_tokens.weight  # tied
        assert m.model.layers[0].self_attn.q_proj.bias is not None
        self.vocab = cfg["vocab_size"]
        self.parameters = sum(p.numel() for p in m.parameters())
        self.cache: dict[str, object] = {}

    def _hooks(self):
        """Forward hooks keeping a reference to every site-like tensor (see
        the module docstring for the list)."""
        cache, core = self.cache, self.model.model

        def out(key, pick=None):
            def hook(_m, _inp, o):
                cache[key] = o if pick is None else o[pick]

            return hook

        def inp(key):
            def hook(_m, args):
                cache[key] = args[0]

            return hook

        handles = [core.embed_tokens.register_forward_hook(out("resid.post_emb"))]
        for i, layer in enumerate(core.layers):
            p = f"layers.{i}."
            a, m = layer.self_attn, layer.mlp
            handles += [
                layer.input_layernorm.register_forward_hook(out(p + "resid.torso.post_ln_attn")),
                a.q_proj.register_forward_hook(out(p + "attn.q")),
                a.k_proj.register_forward_hook(out(p + "attn.k")),
                a.v_proj.register_forward_hook(out(p + "attn.v")),
                a.o_proj.register_forward_pre_hook(inp(p + "attn.v_out")),
                a.register_forward_hook(out(p + "resid.torso.delta_attn", 0)),
                a.register_forward_hook(out(p + "attn.qk_probs", 1)),
                layer.post_attention_layernorm.register_forward_pre_hook(inp(p + "resid.torso.post_attn")),
                layer.post_attention_layernorm.register_forward_hook(out(p + "resid.torso.post_ln_mlp")),
                m.gate_proj.register_forward_hook(out(p + "mlp.pre_act")),
                m.up_proj.register_forward_hook(out(p + "mlp.up")),
                m.down_proj.register_forward_pre_hook(inp(p + "mlp.post_act")),
                m.register_forward_hook(out(p + "resid.torso.delta_mlp")),
                layer.register_forward_hook(out(p + "resid.torso.post_mlp")),
            ]
        handles.append(core.norm.register_forward_hook(out("resid.post_ln_f")))
        handles.append(self.model.lm_head.register_forward_hook(out("logits")))
        return handles

    def run(self, job: Job) -> tuple[list[float], int]:
        torch, model = self.torch, self.model
        toks = tokens_for(job.batch, job.tokens, self.vocab).to(self.device)
        sync = torch.cuda.synchronize if self.device == "cuda" else (lambda: None)
        handles = self._hooks() if job.case == "record" else []
        calls = 0

        def once():
            nonlocal calls
            self.cache.clear()  # untimed: frees the last recording
            sync()
            start = time.perf_counter()
            with torch.no_grad():
                logits = model(input_ids=toks, use_cache=False).logits
            sync()
            elapsed = (time.perf_counter() - start) * 1e3
            assert logits.shape == (job.batch, job.tokens, self.vocab)
            calls = len(self.cache)
            return elapsed

        try:
            for _ in range(job.warmup):
                once()
            times = [once() for _ in range(job.iters)]
        finally:
            for h in handles:
                h.remove()
            self.cache.clear()
        if job.case == "record" and calls == 0:
            raise RuntimeError("transformers' hooks recorded nothing")
        return times, calls


def run_ours(binary: Path, job: Job, n_threads: int, malloc: str, device: str) -> dict:
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
    ]  # fmt: skip
    env = dict(os.environ, RAYON_NUM_THREADS=str(n_threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


def check_same_shape(ours: dict, side: TheirSide) -> None:
    """Both models have the same weights, counting our copy of the tied
    embedding (ours keeps the unembedding as a parameter of its own)."""
    cfg = side.model.config
    mine = (ours["layers"], ours["width"], ours["heads"], ours["kv_heads"], ours["mlp"], ours["vocab"])
    hf = (
        cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
        cfg.num_key_value_heads, cfg.intermediate_size, cfg.vocab_size,
    )  # fmt: skip
    copy = cfg.vocab_size * cfg.hidden_size if cfg.tie_word_embeddings else 0
    if mine != hf or ours["parameters"] != side.parameters + copy:
        raise RuntimeError(f"shapes differ: ours {mine}, {ours['parameters']} weights; theirs {hf}, {side.parameters} (+{copy})")


def blas(torch) -> str:
    found = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    return found.group(1) if found else "?"


def fmt_ms(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> set[str]:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


class Tee(io.TextIOBase):
    """Writes to the terminal and keeps a copy for `--save`."""

    def __init__(self, out):
        self.out, self.copy = out, io.StringIO()

    def write(self, s):
        self.out.write(s)
        self.out.flush()
        return self.copy.write(s)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_bin = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release/examples/bench_llama"
    p.add_argument("--bin", type=Path, default=default_bin, help=f"bench_llama binary (default {default_bin})")
    p.add_argument("--quick", action="store_true", help="tiny shape only")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every iteration count")
    p.add_argument("--rounds", type=int, help="rounds per case (default 3)")
    p.add_argument(
        "--cases",
        default="bare,record",
        help="comma-separated cases: bare, record, unhooked (ours only; compared with their bare)",
    )
    p.add_argument(
        "--save",
        type=Path,
        metavar="PREFIX",
        help="write PREFIX.txt (this output) and PREFIX.json (every sample), "
        "e.g. bench/results/2026-12-01-llama-threads2",
    )
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
        "`default` leaves glibc alone. transformers runs with whatever MALLOC_* variables this "
        "process was started with (none by default)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu: ours on Flex, transformers on the CPU; cuda: ours on burn-cuda (a binary built "
        "with `--features cuda`), transformers on the GPU",
    )
    args = p.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in ("bare", "record", "unhooked"):
            sys.exit(f"unknown case `{c}`: bare, record or unhooked")

    if not args.bin.exists():
        sys.exit(f"{args.bin} not found: run `cargo build --release --example bench_llama` first")
    try:
        import torch
        import transformers
    except ImportError as e:
        sys.exit(f'{e}: pip install "transformers>=5" torch')
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: PyTorch sees no CUDA GPU here (no NVIDIA driver, or a CPU-only torch)")

    tee = Tee(sys.stdout)
    with redirect_stdout(tee):
        code = measure(args, cases, torch, transformers)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.save}.txt").write_text(tee.copy.getvalue())
        Path(f"{args.save}.json").write_text(json.dumps(RESULTS, indent=1))
        print(f"# wrote {args.save}.txt and {args.save}.json", file=sys.stderr)
    return code


RESULTS: dict = {}


def measure(args, cases, torch, transformers) -> int:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    n_threads = args.threads
    torch.set_num_threads(n_threads)
    torch.manual_seed(0)

    cpu = cpu_name()
    avx512 = "avx512f" in cpu_flags()
    gpu = f", GPU {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    header = (
        f"# {cpu} ({os.cpu_count()} CPUs, AVX-512 {'yes' if avx512 else 'no'}){gpu}, {n_threads} threads; "
        f"torch {torch.__version__} (BLAS {blas(torch)}), transformers {transformers.__version__}, python {platform.python_version()}; "
        f"ours --malloc {args.malloc}; MALLOC_* in the environment: "
        f"{' '.join(f'{k}={v}' for k, v in sorted(os.environ.items()) if k.startswith('MALLOC_')) or 'none'}; "
        f"load average at start {load()}"
    )
    print(header, flush=True)
    RESULTS.update(
        header=header,
        cpu=cpu,
        avx512=avx512,
        threads=n_threads,
        torch=torch.__version__,
        transformers=transformers.__version__,
        load_start=load(),
        jobs=[],
    )

    jobs = plan(args.quick, args.scale, cases, args.rounds)
    theirs: dict[str, TheirSide] = {}
    started = time.time()
    for job in jobs:
        if job.shape not in theirs:
            theirs.clear()  # one model in memory at a time
            cfg = our_config(args.bin, job.shape)
            theirs[job.shape] = TheirSide(cfg, args.device)
            print(
                f"# {job.shape}: transformers model built in {theirs[job.shape].init_ms:.0f} ms, "
                f"{theirs[job.shape].parameters} parameters (tied embedding counted once)",
                flush=True,
            )
        their_case = "bare" if job.case == "unhooked" else job.case
        for _ in range(job.rounds):
            ours = run_ours(args.bin, job, n_threads, args.malloc, args.device)
            job.ours += ours["samples_ms"]
            job.ours_calls = ours["hook_calls"]
            job.ours_init_ms.append(ours["init_ms"])
            check_same_shape(ours, theirs[job.shape])
            their_job = Job(job.shape, job.batch, job.tokens, their_case, job.iters, job.warmup, 1)
            samples, job.theirs_calls = theirs[job.shape].run(their_job)
            job.theirs += samples
        print(
            f"# {time.time() - started:6.0f}s {job.shape} {job.batch}x{job.tokens} {job.case}: "
            f"ours {statistics.median(job.ours):.3f} ms, theirs {statistics.median(job.theirs):.3f} ms "
            f"(sites recorded per pass: ours {job.ours_calls}, theirs {job.theirs_calls}; load {load()})",
            flush=True,
        )

    med = {(j.shape, j.batch, j.tokens, j.case): (statistics.median(j.ours), statistics.median(j.theirs)) for j in jobs}
    print()
    print(
        "| case | shape | batch × tokens | samples | ours median (ms) | transformers median (ms) "
        "| ours / transformers (medians) | ours / transformers (minima) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for j in jobs:
        o, t = med[(j.shape, j.batch, j.tokens, j.case)]
        theirs_label = " (their bare)" if j.case == "unhooked" else ""
        print(
            f"| {j.case} | {j.shape} | {j.batch} × {j.tokens} | {len(j.ours)} | {fmt_ms(o)} | {fmt_ms(t)}{theirs_label} "
            f"| {o / t:.3f} | {min(j.ours) / min(j.theirs):.3f} |"
        )

    print()
    print("| overhead | shape | batch × tokens | ours | transformers |")
    print("|---|---|---|---|---|")
    for shape, batch, tokens in dict.fromkeys((j.shape, j.batch, j.tokens) for j in jobs):
        a, b = med.get((shape, batch, tokens, "record")), med.get((shape, batch, tokens, "bare"))
        if a and b:
            print(f"| record / bare | {shape} | {batch} × {tokens} | {a[0] / b[0]:.3f} | {a[1] / b[1]:.3f} |")
        u = med.get((shape, batch, tokens, "unhooked"))
        if u and b:
            print(f"| bare / unhooked | {shape} | {batch} × {tokens} | {b[0] / u[0]:.3f} | — |")
    print(f"\n# total {time.time() - started:.0f}s, load average at the end {load()}")

    RESULTS["load_end"] = load()
    RESULTS["jobs"] = [
        {
            k: getattr(j, k)
            for k in (
                "shape", "batch", "tokens", "case", "iters", "warmup", "rounds",
                "ours", "theirs", "ours_calls", "theirs_calls", "ours_init_ms",
            )
        }  # fmt: skip
        for j in jobs
    ]
    return 0


if __name__ == "__main__":
    sys.exit(main())
