//! What hooks cost the forward pass, measured side by side in one run:
//! the same model and tokens, forward with every site call compiled out,
//! with an empty hook tree, and recording every site.
//!
//! ```text
//! cargo run --release --example hook_overhead -- [small|tiny] [BATCH] [TOKENS] [ROUNDS] [--default-malloc]
//! ```
//! Defaults: GPT-2 small's shape (12 layers, width 768, 12 heads, vocabulary
//! 50257, random weights, f32, Flex CPU backend), batch 1 × 128 tokens, 10
//! rounds. Each round runs the variants back to back in a rotating order;
//! the table gives the median time of each and its ratio to the compiled-out
//! forward. Like the `hooks` tool, it first asks glibc to keep freed memory
//! for reuse ([`burn_hooks::model::alloc::retain_freed_memory`]);
//! `--default-malloc` leaves glibc's settings alone.

use std::error::Error;
use std::time::{Duration, Instant};

use burn_hooks::model::alloc;
use burn_hooks::model::backend::Cpu;
use burn_hooks::model::{Gpt2, Gpt2Config, TokenBatch, TransformerHooks};
use burn_hooks::{FwdStage, HookTree, Record, Recorder};

fn main() -> Result<(), Box<dyn Error>> {
    let default_malloc = std::env::args().any(|a| a == "--default-malloc");
    if !default_malloc {
        alloc::retain_freed_memory();
    }
    let mut args = std::env::args().skip(1).filter(|a| a != "--default-malloc");
    let shape = args.next().unwrap_or_else(|| "small".into());
    let batch: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let tokens: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(128);
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let config = match shape.as_str() {
        "small" => Gpt2Config::gpt2_small(),
        "tiny" => Gpt2Config::new(2, 64, 4, 64, 512),
        other => return Err(format!("unknown shape `{other}`: small or tiny").into()),
    };
    let device = Default::default();
    let model = Gpt2::<Cpu>::init(&config, &device)?;
    let rows = (0..batch)
        .map(|b| {
            (0..tokens)
                .map(|t| ((b * 7919 + t * 104729) % config.vocab_size) as u32)
                .collect()
        })
        .collect();
    let input = TokenBatch::new(rows)?;

    let empty = TransformerHooks::<Cpu>::default();
    let recorder = Recorder::new();
    let mut recording = TransformerHooks::<Cpu>::default();
    recording.append_all(FwdStage::Fwd, Record::into(&recorder));

    type Variant<'a> = (&'a str, Box<dyn Fn() -> Result<(), Box<dyn Error>> + 'a>);
    let sync = |logits: burn::tensor::Tensor<Cpu, 3>| {
        // Reading one value waits for the whole computation.
        let _ = logits.slice([0..1, 0..1, 0..1]).into_scalar();
    };
    let variants: Vec<Variant> = vec![
        (
            "hook calls compiled out",
            Box::new(|| {
                sync(model.forward_unhooked(&input)?);
                Ok(())
            }),
        ),
        (
            "empty hook tree",
            Box::new(|| {
                sync(model.forward(&input, &empty)?);
                Ok(())
            }),
        ),
        (
            "recording every site",
            Box::new(|| {
                sync(model.forward(&input, &recording)?);
                recorder.clear();
                Ok(())
            }),
        ),
    ];
    for (_, run) in &variants {
        run()?; // warm-up
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for i in 0..variants.len() {
            let v = (i + round) % variants.len();
            let start = Instant::now();
            (variants[v].1)()?;
            times[v].push(start.elapsed());
        }
    }
    let median = |t: &mut Vec<Duration>| {
        t.sort();
        t[t.len() / 2]
    };
    let medians: Vec<Duration> = times.iter_mut().map(median).collect();
    println!(
        "{shape} ({} layers, width {}), batch {batch} × {tokens} tokens, {rounds} rounds, Flex CPU, {} malloc settings",
        config.n_layer,
        config.n_embd,
        if default_malloc {
            "default"
        } else {
            "retaining"
        }
    );
    println!("| variant | median | ratio to compiled out |");
    println!("|---|---|---|");
    for ((name, _), m) in variants.iter().zip(&medians) {
        println!(
            "| {name} | {:.3} ms | {:.3} |",
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() / medians[0].as_secs_f64()
        );
    }
    Ok(())
}
