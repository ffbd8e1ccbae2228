"""Trains the model bundled in this folder (Hugging Face GPT2LMHeadModel, one
thread): the recipe of examples/train_induction.rs, the same two-phase data
and schedule with numpy's RNG in place of SplitMix64; not run by CI.

    python checkpoints/induction-2l/train_induction_torch.py --heads 2 --prune 1:1 \
        --seed 2 --steps 13000 --out checkpoints/induction-2l

Saves DIR in Hugging Face's layout and scores it with check_induction.py.
`--prune 1:1` switches off layer 1's head 1 (its output-projection rows zero
and frozen), which gives layer 0 two heads and layer 1 one. The command above
(the defaults) made the bundled checkpoint (11.5 min): repeat 0.206, previous-token head
0.712, induction head 0.883, ablated repeat 5.23. Other seeds, step counts and
the Rust runs are in the README's "Reproducing the bundled model"."""
import argparse, math, subprocess, sys, time
from pathlib import Path
import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

p = argparse.ArgumentParser()
p.add_argument("--vocab", type=int, default=128)
p.add_argument("--heads", type=int, default=2)
p.add_argument("--width", type=int, default=64)
p.add_argument("--steps", type=int, default=13000)
p.add_argument("--fill", type=int, default=4)
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--minlr", type=float, default=0.1, help="final lr as a fraction of the peak")
p.add_argument("--phase1", type=float, default=0.2, help="phase 1's share of the steps, at least")
p.add_argument("--formed", type=float, default=2.0, help="phase 1 goes on (up to --phase1-max) until the running loss is below this")
p.add_argument("--phase1-max", type=float, default=0.5)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--seed", type=int, default=2)
p.add_argument("--warmup", type=int, default=200)
p.add_argument("--minfill", type=int, default=4)
p.add_argument("--prune", type=str, default="1:1", help="layer:head,... heads switched off (output-projection rows zero and frozen)")
p.add_argument("--out", required=True)
a = p.parse_args()
torch.set_num_threads(1)
torch.manual_seed(a.seed)
rng = np.random.default_rng(a.seed)
L = 64
cfg = GPT2Config(n_layer=2, n_embd=a.width, n_head=a.heads, n_positions=L, vocab_size=a.vocab,
                 activation_function="gelu_new", resid_pdrop=0, embd_pdrop=0, attn_pdrop=0,
                 tie_word_embeddings=False, bos_token_id=None, eos_token_id=None)
model = GPT2LMHeadModel(cfg)
if a.prune:
    pr = {}
    for lh in a.prune.split(","):
        l, h = map(int, lh.split(":")); pr.setdefault(l, []).append(h)
    d = a.width // a.heads
    for l, hs in pr.items():
        w = model.transformer.h[l].attn.c_proj.weight  # Conv1D [in, out]
        mask = torch.ones_like(w)
        for h in hs:
            mask[h * d:(h + 1) * d] = 0
        with torch.no_grad():
            w.mul_(mask)
        w.register_hook(lambda g, mask=mask: g * mask)
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0, eps=1e-5)

def filled(n):
    out = np.empty((n, L), dtype=np.int64)
    for r in range(n):
        per = rng.integers(a.minfill, L // 2 + 1)
        run = rng.integers(0, a.vocab, per)
        out[r] = run[np.arange(L) % per]
    return out

def repeated(n, minp=6):
    out = rng.integers(0, a.vocab, (n, L))
    for r in range(n):
        per = rng.integers(minp, L // 2 + 1)
        st = rng.integers(0, L - 2 * per + 1)
        out[r, st + per: st + 2 * per] = out[r, st: st + per]
    return out

def lr_at(step):
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    t = (step - a.warmup) / max(a.steps - a.warmup, 1)
    return a.lr * (a.minlr + (1 - a.minlr) * 0.5 * (1 + math.cos(math.pi * t)))

phase1 = int(a.steps * a.phase1)
phase1_max = int(a.steps * a.phase1_max)
t0 = time.time()
run = 0.0
in_phase1 = True
for step in range(a.steps):
    if in_phase1 and step >= phase1 and (run < a.formed or step >= phase1_max or not a.formed):
        in_phase1 = False
        print(f"phase 2 from step {step} (running loss {run:.3f})", flush=True)
    if in_phase1:
        x = filled(a.batch)
    else:
        nf = a.batch // a.fill if a.fill else 0
        x = np.concatenate([filled(nf), repeated(a.batch - nf)]) if nf else repeated(a.batch)
    x = torch.from_numpy(x)
    for g in opt.param_groups:
        g["lr"] = lr_at(step)
    logits = model(x).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, a.vocab), x[:, 1:].reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    run = loss.item() if step == 0 else 0.98 * run + 0.02 * loss.item()
    if (step + 1) % 500 == 0:
        print(f"step {step+1} loss {run:.3f} ({time.time()-t0:.0f} s)", flush=True)
model.save_pretrained(a.out)
subprocess.run([sys.executable, str(Path(__file__).with_name("check_induction.py")), a.out])
