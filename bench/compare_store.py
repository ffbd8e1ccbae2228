#!/usr/bin/env python3
"""Activation store throughput: `hooks cache --dataset` against the usual
Python way, side by side in one invocation on the same CPU.

The Python way is TransformerLens's `run_with_cache` over batches, keeping
the same sites and writing them to safetensors shards of the same size
(`safetensors.torch.save_file`), under `torch.inference_mode()`. Both sides
run the same GPT-2-small-shaped model (random weights, saved by
`transformers` and loaded by both), the same token corpus (a `.npy` of ids),
the same sites (`resid.torso.post_mlp` at every layer, TransformerLens's
`blocks.<l>.hook_resid_post`), rows of 128 tokens, batch 8, f32.

Ours is timed as a whole process (start, weight loading, writing and
syncing every shard); theirs only from the first batch to the last file
written (model construction excluded): the comparison is conservative for
us. Rounds alternate ours / theirs. The first round's stores are compared
value by value, so both sides provably store the same numbers.

Then our peak RSS on the corpus and on a corpus 4x as long (the store's
memory must not grow with the corpus).

With `--saelens PYTHON` (an interpreter with SAELens installed), also
SAELens's own disk cache (`CacheActivationsRunner`, through
`bench/saelens_store.py`) against ours on one site, `blocks.5.hook_resid_post`
= `layers.5.resid.torso.post_mlp` (SAELens caches one hook per run; both
sides stop after block 5), rounds alternating; theirs timed around `run()`.

    pip install "transformer-lens<4" torch transformers safetensors numpy
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
    cargo build --release --bin hooks
    python bench/compare_store.py [--rows 64] [--rounds 2] [--work /tmp/store-bench] \
        [--saelens /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

SEQ = 128
BATCH = 8
SHARD_MB = 256


def hooks_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    path = target / "release" / "hooks"
    if not path.exists():
        sys.exit(f"{path} not found: cargo build --release --bin hooks")
    return path


def make_model(work: Path):
    """A GPT-2-small-shaped model with random weights, saved for both sides."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = work / "gpt2-small-random"
    torch.manual_seed(0)
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257)
    hf = GPT2LMHeadModel(config).eval()
    if not (folder / "model.safetensors").exists():
        hf.save_pretrained(folder, safe_serialization=True)
    return folder, hf


def transformer_lens_model(hf):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

    cfg = HookedTransformerConfig(
        n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257,
        n_ctx=1024, act_fn="gelu_new", normalization_type="LN", device="cpu",
        default_prepend_bos=False,
    )
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
        center_unembed=False, fold_value_biases=False,
    )
    return model.eval()


def make_corpus(work: Path, rows: int, name: str) -> Path:
    path = work / name
    rng = np.random.default_rng(1)
    np.save(path, rng.integers(0, 50257, size=rows * SEQ, dtype=np.uint16))
    return path


def run_ours(
    binary: Path, model: Path, corpus: Path, out: Path, layers: list[str] | None = None
) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one `hooks cache --dataset` run."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        "/usr/bin/time", "-f", "%M", str(binary), "cache", "--model", str(model),
        "--dataset", str(corpus), "--sites", "resid.torso.post_mlp", "--seq-len", str(SEQ),
        "--batch", str(BATCH), "--shard-mb", str(SHARD_MB), "--out", str(out),
    ] + (["--layers", ",".join(layers)] if layers else [])
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"hooks failed: {done.stderr}")
    rss = int(done.stderr.strip().splitlines()[-1])
    return seconds, rss


def run_theirs(model, corpus: Path, out: Path) -> float:
    """TransformerLens run_with_cache over batches, shards written as ours are."""
    from safetensors.torch import save_file

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tokens = torch.from_numpy(np.load(corpus).astype(np.int64)).reshape(-1, SEQ)
    names = [f"blocks.{l}.hook_resid_post" for l in range(12)]
    wanted = set(names)
    per_token = 12 * 768 * 4 + 24
    rows_per_shard = max(1, (SHARD_MB << 20) // (per_token * SEQ))
    start = time.perf_counter()
    pending: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    pending_tokens: list[torch.Tensor] = []
    shard = 0

    def flush():
        nonlocal shard, pending, pending_tokens
        if not pending_tokens:
            return
        t = torch.cat(pending_tokens)
        n = t.numel()
        tensors = {
            f"layers.{l}.resid.torso.post_mlp": torch.cat(pending[name]).reshape(n, -1)
            for l, name in enumerate(names)
        }
        tensors["tokens"] = t.reshape(-1)
        path = out / f"shard-{shard:05}.safetensors"
        save_file(tensors, str(path))
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        shard += 1
        pending = {n: [] for n in names}
        pending_tokens = []

    with torch.inference_mode():
        for first in range(0, tokens.shape[0], BATCH):
            batch = tokens[first:first + BATCH]
            _, cache = model.run_with_cache(batch, names_filter=lambda n: n in wanted, return_type=None)
            for name in names:
                pending[name].append(cache[name])
            pending_tokens.append(batch)
            if sum(b.shape[0] for b in pending_tokens) >= rows_per_shard:
                flush()
        flush()
    return time.perf_counter() - start


def run_saelens(python: str, model: Path, corpus: Path, out: Path, layer: int) -> float:
    """Seconds of SAELens's CacheActivationsRunner.run() on the same corpus."""
    script = Path(__file__).with_name("saelens_store.py")
    done = subprocess.run(
        [python, str(script), str(model), str(corpus), str(out), str(layer), str(BATCH), str(SEQ)],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        sys.exit(f"saelens_store.py failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"]


def same_values(ours: Path, theirs: Path) -> float:
    """Largest difference between the two stores' first shards."""
    from safetensors.numpy import load_file

    a = load_file(str(ours / "shard-00000.safetensors"))
    b = load_file(str(theirs / "shard-00000.safetensors"))
    worst = 0.0
    for key, value in b.items():
        if key == "tokens":
            assert (a[key][: value.shape[0]] == value).all(), "the two stores hold different tokens"
            continue
        n = min(a[key].shape[0], value.shape[0])
        worst = max(worst, float(np.abs(a[key][:n] - value[:n]).max()))
    return worst


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = re.search(r"Model name:\s*(.*)", out)
        flags = "AVX-512" if "avx512f" in out else "AVX2 (no AVX-512)"
        return f"{name.group(1) if name else platform.processor()}, {os.cpu_count()} CPUs, {flags}"
    except OSError:
        return platform.processor()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=64, help="rows of 128 tokens in the corpus")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/store-bench"))
    parser.add_argument("--json", type=Path, help="also write every sample here")
    parser.add_argument("--saelens", help="a Python with SAELens: also compare with its disk cache")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    binary = hooks_binary()
    folder, hf = make_model(args.work)
    tl = transformer_lens_model(hf)
    corpus = make_corpus(args.work, args.rows, "corpus.npy")
    corpus4 = make_corpus(args.work, 4 * args.rows, "corpus-4x.npy")
    tokens = args.rows * SEQ
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"corpus: {tokens} tokens ({args.rows} rows of {SEQ}), batch {BATCH}, sites: "
          f"resid.torso.post_mlp x 12 layers (f32, {12 * 768 * 4 // 1024} KiB per token)")

    ours_s, theirs_s, rss = [], [], []
    for r in range(args.rounds):
        s, peak = run_ours(binary, folder, corpus, args.work / "ours")
        ours_s.append(s)
        rss.append(peak)
        theirs_s.append(run_theirs(tl, corpus, args.work / "theirs"))
        if r == 0:
            diff = same_values(args.work / "ours", args.work / "theirs")
            print(f"same values: largest difference between the stores {diff:.2e}")
        print(f"round {r + 1}: ours {tokens / s:.0f} tokens/s ({s:.2f} s), "
              f"TransformerLens {tokens / theirs_s[-1]:.0f} tokens/s ({theirs_s[-1]:.2f} s)")
    _, peak4 = run_ours(binary, folder, corpus4, args.work / "ours-4x")
    ours_rate = tokens / statistics.median(ours_s)
    theirs_rate = tokens / statistics.median(theirs_s)
    print()
    print("| | ours (`hooks cache --dataset`) | TransformerLens `run_with_cache` + save_file | ours / theirs |")
    print("|---|---|---|---|")
    print(f"| tokens/s (median of {args.rounds}) | {ours_rate:.0f} | {theirs_rate:.0f} | "
          f"**{ours_rate / theirs_rate:.2f}** |")
    print()
    print("| our peak RSS | corpus 1x | corpus 4x | 4x / 1x |")
    print("|---|---|---|---|")
    print(f"| `hooks cache --dataset` | {min(rss) / 1024:.0f} MiB | {peak4 / 1024:.0f} MiB | "
          f"**{peak4 / min(rss):.2f}** |")
    saelens = {}
    if args.saelens:
        one_s, sl_s = [], []
        for r in range(args.rounds):
            one_s.append(run_ours(binary, folder, corpus, args.work / "ours-l5", ["5"])[0])
            sl_s.append(run_saelens(args.saelens, folder, corpus, args.work / "saelens", 5))
            print(f"one site, round {r + 1}: ours {tokens / one_s[-1]:.0f} tokens/s, "
                  f"SAELens {tokens / sl_s[-1]:.0f} tokens/s")
        one, sl = tokens / statistics.median(one_s), tokens / statistics.median(sl_s)
        print()
        print("| one site (layer 5 resid post) | ours | SAELens CacheActivationsRunner | ours / theirs |")
        print("|---|---|---|---|")
        print(f"| tokens/s (median of {args.rounds}) | {one:.0f} | {sl:.0f} | **{one / sl:.2f}** |")
        saelens = {"ours_one_site_s": one_s, "saelens_s": sl_s}
    if args.json:
        args.json.write_text(json.dumps({
            "cpu": cpu_name(), "tokens": tokens, "ours_s": ours_s, "theirs_s": theirs_s,
            "ours_rss_kib": rss, "ours_rss_4x_kib": peak4, **saelens,
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
