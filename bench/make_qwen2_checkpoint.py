"""Writes a Qwen2.5-0.5B-shaped checkpoint with random weights, as Hugging Face
`transformers` saves it: BF16, 4 shards of safetensors plus
`model.safetensors.index.json`, `config.json` (tied embeddings, q/k/v biases).
For `cargo run --release --example load_peak_rss -- DIR` (BENCHMARKS.md,
"Loading memory"). Needs torch and transformers; ~1 GB on disk.

    python bench/make_qwen2_checkpoint.py /tmp/qwen2-0.5b-bf16
"""

import sys

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def main(out: str) -> None:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
    )
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    # ~990 MB of BF16 in 4 shards of at most 300 MB.
    model.save_pretrained(out, max_shard_size="300MB", safe_serialization=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/qwen2-0.5b-bf16")
