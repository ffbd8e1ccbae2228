#!/usr/bin/env python3
"""SAELens's own activation cache (`CacheActivationsRunner`) on a local model
and corpus, for `compare_store.py --saelens PYTHON` (SAELens often lives in
an environment of its own, so this runs in that interpreter).

    python saelens_store.py MODEL_DIR CORPUS.npy OUT_DIR LAYER BATCH SEQ

MODEL_DIR is a `transformers` GPT-2 folder; it is converted to a
TransformerLens `HookedTransformer` without folding or centring (the values
our model computes), and handed to the runner in place of its hub download.
The corpus is a flat `.npy` of ids, cut into rows of SEQ. The runner's
buffer is sized to the corpus (it would otherwise cycle the corpus until
its buffer is full). Prints one JSON line: seconds (the runner's `run()`
only) and tokens cached.
"""

import json
import shutil
import sys
import time

import numpy as np
from datasets import Dataset
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
from transformers import GPT2LMHeadModel

import sae_lens.cache_activations_runner as runner_module
from sae_lens.config import CacheActivationsRunnerConfig


def main() -> int:
    model_dir, corpus, out, layer, batch, seq = sys.argv[1:7]
    layer, batch, seq = int(layer), int(batch), int(seq)
    hf = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
        d_mlp=4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions, act_fn="gelu_new",
        normalization_type="LN", device="cpu", default_prepend_bos=False,
    )
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
        center_unembed=False, fold_value_biases=False,
    )
    runner_module.load_model = lambda **_: model
    rows = np.load(corpus).astype(np.int64).reshape(-1, seq)
    tokens = rows.size
    run_cfg = CacheActivationsRunnerConfig(
        dataset_path="local", model_name="local", model_batch_size=batch,
        hook_name=f"blocks.{layer}.hook_resid_post", d_in=c.n_embd, training_tokens=tokens,
        context_size=seq, new_cached_activations_path=out, shuffle=False, prepend_bos=False,
        device="cpu", buffer_size_gb=(tokens * c.n_embd * 4 + 1) / 1e9,
    )
    shutil.rmtree(out, ignore_errors=True)
    runner = runner_module.CacheActivationsRunner(
        run_cfg, override_dataset=Dataset.from_dict({"input_ids": rows.tolist()})
    )
    start = time.perf_counter()
    cached = runner.run()
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "tokens": len(cached) * seq}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
