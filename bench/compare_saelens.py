#!/usr/bin/env python3
"""Our SAE training (`hooks train-sae`, Burn, Flex CPU backend) against
SAELens's (`TopKTrainingSAE` + `SAETrainer`, PyTorch, CPU), side by side in
one invocation, training the same TopK autoencoder on the same activations.

1. The activations: a corpus of rows of the bundled model's task (random
   tokens with a random run repeated once), stored with
   `hooks cache --dataset` (layer 0's `mlp.post_act`, width 256) in
   `--work` (reused when it is already there).
2. Rounds, alternating so both sides see the same machine conditions:
   ours — `hooks train-sae --store … --key layers.0.mlp.post_act` as a
   subprocess (release build), reading the store shard by shard through its
   shuffling buffer; SAELens — in this process, the store's shards loaded
   into one tensor and batches drawn from it at random by the data
   provider `SAETrainer.fit()` pulls from.
3. Steps per second in the steady state, each side timed the same way:
   from the end of the first window of steps (loading, the first fill of
   the buffer and the first steps excluded) to the last step. Ours from the
   `(x steps/s)` of each report line `hooks train-sae` prints (every
   `--every` steps); SAELens's from the times the trainer pulls its batches
   (one pull per step). Both sides also report the fraction of variance
   explained on the last shard's tokens, computed here in PyTorch from the
   saved weights (ours read back from the safetensors file), so the two runs
   are seen to train the same thing.

The same on both sides: width 256, `--latents` latents, TopK `--k`, batches
of `--batch` tokens, `--steps` Adam steps at `--lr` (constant), float32, 2
threads (`torch.set_num_threads`; our Flex backend uses the cores it has),
AuxK coefficient 1/32. SAELens's own defaults otherwise (its TopK rescales
pre-activations by the decoder norms and initialises the decoder at norm
0.1; ours keeps unit-norm decoder rows as OpenAI does): the algorithmic
work per step is the same, an encoder and a decoder product each way.

Setup (this script installs nothing):

    python -m venv --system-site-packages .venv-saelens
    .venv-saelens/bin/pip install sae-lens
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
    cargo build --release --bin hooks
    .venv-saelens/bin/python bench/compare_saelens.py              # ~10 min on 2 cores
    .venv-saelens/bin/python bench/compare_saelens.py --quick      # a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "layers.0.mlp.post_act"


def hooks_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    exe = target / "release" / "hooks"
    if not exe.exists():
        sys.exit(f"{exe} is missing: run `cargo build --release --bin hooks` first")
    return exe


def make_store(exe: Path, work: Path, rows: int, seed: int) -> Path:
    """A store of the bundled model's layer-0 mlp.post_act over `rows` rows
    of 64 tokens of its task."""
    store = work / f"store-{rows}-{seed}"
    if (store / "manifest.json").exists():
        return store
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    corpus = work / f"corpus-{rows}-{seed}.jsonl"
    with corpus.open("w") as f:
        for _ in range(rows):
            period = rng.randint(6, 32)
            start = rng.randint(0, 64 - 2 * period)
            row = [rng.randrange(128) for _ in range(64)]
            row[start + period : start + 2 * period] = row[start : start + period]
            f.write(json.dumps({"tokens": row}) + "\n")
    cmd = [
        str(exe), "cache", "--model", str(ROOT / "checkpoints/induction-2l"),
        "--dataset", str(corpus), "--sites", "mlp.post_act", "--layers", "0",
        "--seq-len", "64", "--batch", "32", "--shard-mb", "16", "--out", str(store),
    ]
    print("building the store:", " ".join(cmd[1:]), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return store


def load_store(store: Path):
    import torch
    from safetensors.torch import load_file

    manifest = json.loads((store / "manifest.json").read_text())
    shards = [load_file(str(store / s["file"]))[KEY] for s in manifest["shards"]]
    return torch.cat(shards[:-1]), shards[-1]


def fve(x, recon) -> float:
    err = ((x - recon) ** 2).sum()
    dev = ((x - x.mean(0)) ** 2).sum()
    return float(1 - err / dev)


def ours_fve(path: Path, x, k: int) -> float:
    import torch
    from safetensors.torch import load_file

    w = load_file(str(path))
    pre = (x - w["pre_bias"]) @ w["encoder.weight"].T + w["latent_bias"]
    pre = torch.relu(pre)
    kth = pre.topk(k, dim=-1).values[:, -1:]
    z = pre * (pre >= kth)
    return fve(x, z @ w["decoder.weight"].T + w["pre_bias"])


def steady_rate(lines: list[str]) -> tuple[float, list[float]]:
    """Steps per second after the first window, from the report lines."""
    windows = []  # (steps, rate)
    prev = 0
    for line in lines:
        m = re.match(r"step (\d+)/\d+ .*\((\d+(?:\.\d+)?) steps/s\)", line)
        if m:
            step, rate = int(m.group(1)), float(m.group(2))
            windows.append((step - prev, rate))
            prev = step
    later = windows[1:] or windows
    steps = sum(s for s, _ in later)
    seconds = sum(s / r for s, r in later)
    return steps / seconds, [r for _, r in windows]


def run_ours(exe, store, args, out: Path) -> dict:
    cmd = [
        str(exe), "train-sae", "--store", str(store), "--key", KEY,
        "--latents", str(args.latents), "--k", str(args.k), "--steps", str(args.steps),
        "--batch", str(args.batch), "--lr", str(args.lr), "--metrics-every", str(args.every),
        "--dead-after", str(args.dead_after), "--seed", "0", "--out", str(out),
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = done.stdout.splitlines()
    rate, windows = steady_rate(lines)
    return {"steps_per_s": rate, "windows": windows, "wall_s": wall, "last": lines[-1]}


def run_saelens(train, args) -> tuple[dict, object]:
    import torch
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(0)
    cfg = TopKTrainingSAEConfig(
        d_in=train.shape[1], d_sae=args.latents, k=args.k, dtype="float32", device="cpu",
        aux_loss_coefficient=1 / 32,
    )
    sae = TopKTrainingSAE(cfg)
    pulls: list[float] = []

    def provider():
        g = torch.Generator().manual_seed(0)
        while True:
            idx = torch.randint(0, train.shape[0], (args.batch,), generator=g)
            pulls.append(time.perf_counter())
            yield train[idx]

    tcfg = SAETrainerConfig(
        total_training_samples=args.steps * args.batch, train_batch_size_samples=args.batch,
        lr=args.lr, lr_end=args.lr, device="cpu",
        dead_feature_window=max(1, args.dead_after // args.batch),
    )
    trainer = SAETrainer(tcfg, sae, provider())
    t0 = time.perf_counter()
    trainer.fit()
    done = time.perf_counter()
    wall = done - t0
    # Pull i starts step i; step i's end is pull i+1 (or the end of fit()).
    ends = pulls[1:] + [done]
    first = args.every - 1  # the end of the first window, as for ours
    steps = len(ends) - 1 - first
    rate = steps / (ends[-1] - ends[first])
    return {"steps_per_s": rate, "wall_s": wall}, sae


def saelens_fve(sae, x) -> float:
    import torch

    with torch.no_grad():
        return fve(x, sae.decode(sae.encode(x)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latents", type=int, default=2048)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--every", type=int, default=25, help="steps per report window")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dead-after", type=int, default=400_000)
    p.add_argument("--rows", type=int, default=4096, help="corpus rows of 64 tokens")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "burn-hooks-sae-bench")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--quick", action="store_true", help="a small run to check the set-up")
    args = p.parse_args()
    if args.quick:
        args.latents, args.k, args.batch, args.steps, args.every = 512, 16, 1024, 40, 10
        args.rows, args.rounds = 512, 1

    import torch
    import sae_lens

    torch.set_num_threads(args.threads)
    exe = hooks_binary()
    store = make_store(exe, args.work, args.rows, seed=1)
    train, held_out = load_store(store)
    print(
        f"{train.shape[0] + held_out.shape[0]} tokens of width {train.shape[1]} "
        f"({held_out.shape[0]} held out); {args.latents} latents, k = {args.k}, batches of "
        f"{args.batch}, {args.steps} steps; torch {torch.__version__}, "
        f"sae-lens {sae_lens.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}",
        file=sys.stderr,
    )
    results = []
    for r in range(args.rounds):
        out = args.work / f"ours-{r}.safetensors"
        ours = run_ours(exe, store, args, out)
        ours["fve_held_out"] = ours_fve(out, held_out, args.k)
        theirs, sae = run_saelens(train, args)
        theirs["fve_held_out"] = saelens_fve(sae, held_out)
        ratio = ours["steps_per_s"] / theirs["steps_per_s"]
        results.append({"round": r, "ours": ours, "saelens": theirs, "ratio": ratio})
        print(
            f"round {r}: ours {ours['steps_per_s']:.2f} steps/s (FVE {ours['fve_held_out']:.4f}, "
            f"{ours['wall_s']:.0f} s in all), SAELens {theirs['steps_per_s']:.2f} steps/s "
            f"(FVE {theirs['fve_held_out']:.4f}, {theirs['wall_s']:.0f} s); "
            f"ours / SAELens {ratio:.2f}",
            flush=True,
        )
    print("\n| round | ours steps/s | SAELens steps/s | ours / SAELens | FVE ours | FVE SAELens |")
    print("|---|---|---|---|---|---|")
    for x in results:
        print(
            f"| {x['round']} | {x['ours']['steps_per_s']:.2f} | {x['saelens']['steps_per_s']:.2f} | "
            f"{x['ratio']:.2f} | {x['ours']['fve_held_out']:.4f} | {x['saelens']['fve_held_out']:.4f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
