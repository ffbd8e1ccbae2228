"""An independent check of the bundled model's induction circuit, with Hugging
Face `transformers` instead of burn-hooks (not run by CI).

    python checkpoints/induction-2l/check_induction.py [FOLDER]

Builds the rows `RepeatedBatch::random(&mut SplitMix64(99), 64, n_positions, 6,
vocab)` builds in Rust (random tokens, a random run of 6 to n_positions/2
tokens repeated once at a random place), runs the saved model on them and
prints, per head, the previous-token score (mean attention from position p to
p - 1, over every p >= 1 of every row), the induction score (mean attention
from a token in the repeat to the token after its earlier occurrence), and the
losses on the first copy and on the predictable part of the repeat, plain and
with each head ablated (its slice of the attention output before `c_proj`,
burn-hooks' `attn.v_out`, set to zero).
"""

import math
import sys
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

MASK = (1 << 64) - 1


class SplitMix64:
    """burn_hooks::model::sample::SplitMix64."""

    def __init__(self, seed):
        self.state = seed

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)


def repeated_batch(rng, rows, length, min_period, vocab):
    """burn_hooks::train::RepeatedBatch::random: (tokens, periods, starts)."""
    draw = lambda n: rng.next_u64() % n
    tokens, periods, starts = [], [], []
    for _ in range(rows):
        period = min_period + draw(length // 2 - min_period + 1)
        start = draw(length - 2 * period + 1)
        row = [draw(vocab) for _ in range(length)]
        row[start + period : start + 2 * period] = row[start : start + period]
        tokens.append(row)
        periods.append(period)
        starts.append(start)
    return torch.tensor(tokens), periods, starts


def copy_losses(logits, tokens, periods, starts):
    """RepeatedBatch::copy_losses: mean loss on the first copy and on the repeat."""
    nll = -logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    first, repeat = [], []
    for row, (period, start) in enumerate(zip(periods, starts)):
        first += nll[row, max(start - 1, 0) : start + period - 1].tolist()
        repeat += nll[row, start + period : start + 2 * period - 1].tolist()
    return sum(first) / len(first), sum(repeat) / len(repeat)


def main():
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    model = GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").eval()
    c = model.config
    tokens, periods, starts = repeated_batch(SplitMix64(99), 64, c.n_positions, 6, c.vocab_size)
    with torch.no_grad():
        out = model(tokens, output_attentions=True)
    first, repeat = copy_losses(out.logits, tokens, periods, starts)
    print(f"{c.n_layer} layers, width {c.n_embd}, {c.n_head} heads, vocabulary {c.vocab_size}, "
          f"{c.n_positions} positions; 64 rows")
    print(f"loss: first copy {first:.3f} (ln V = {math.log(c.vocab_size):.3f}), repeat {repeat:.3f}")
    d = c.n_embd // c.n_head
    s = tokens.shape[1]
    for layer, probs in enumerate(out.attentions):  # [B, H, S, K]
        prev = probs[:, :, torch.arange(1, s), torch.arange(s - 1)].mean(dim=(0, 2))
        ind = torch.stack([
            probs[row, :, q, q - period + 1]
            for row, (period, start) in enumerate(zip(periods, starts))
            for q in range(start + period, start + 2 * period)
        ]).mean(0)
        for head in range(c.n_head):
            def zero_head(_module, args, head=head):
                (x,) = args
                x = x.clone()
                x[..., head * d : (head + 1) * d] = 0
                return (x,)

            hook = model.transformer.h[layer].attn.c_proj.register_forward_pre_hook(zero_head)
            with torch.no_grad():
                ablated = copy_losses(model(tokens).logits, tokens, periods, starts)
            hook.remove()
            print(f"layer {layer} head {head}: previous-token {prev[head]:.3f}  induction "
                  f"{ind[head]:.3f}  ablated: first copy {ablated[0]:.3f}, repeat {ablated[1]:.3f}")


if __name__ == "__main__":
    main()
