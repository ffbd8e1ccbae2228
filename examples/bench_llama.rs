//! One forward-pass benchmark case of the Llama-family model, timed K times,
//! printed as one JSON line: the Rust side of `bench/compare_transformers.py`,
//! which runs it as a subprocess next to Hugging Face `transformers` (see
//! BENCHMARKS.md, "Llama family against transformers").
//!
//! ```text
//! cargo build --release --example bench_llama
//! target/release/examples/bench_llama --shape qwen2.5-0.5b|tiny --batch N --tokens S \
//!     --case bare|unhooked|record|stages --iters K --warmup W [--malloc retain|default] \
//!     [--backend flex|ndarray|cuda] [--print-config]
//! ```
//!
//! Shapes (random weights, f32, both built from `config.json` text through
//! [`LlamaConfig::from_json`]; `--print-config` prints that text and exits):
//! - `qwen2.5-0.5b`: Qwen2.5-0.5B's shape — `qwen2`, 24 layers, width 896,
//!   14 query heads and 2 key/value heads of width 64, MLP 4864, vocabulary
//!   151936, q/k/v biases, tied embeddings, RMS ε 1e-6, θ = 1e6, no sliding
//!   window;
//! - `tiny`: the same family at 2 layers, width 64, 4 heads, 2 key/value
//!   heads, MLP 128, vocabulary 512.
//!
//! Cases:
//! - `bare`: `forward` with an empty hook tree;
//! - `unhooked`: `forward_unhooked` (every site call compiled out);
//! - `record`: `forward` recording every site into a [`Recorder`]
//!   (`append_all(FwdStage::Fwd, Record::into(..))`, cleared after each
//!   iteration);
//! - `stages` (diagnosis): a hook at every site that only reads the clock.
//!   Flex computes eagerly, so the time between two consecutive site calls
//!   is the work between them; the JSON line gains `stages_ms`, for each
//!   site the mean time per pass (summed over layers) of the work since the
//!   site called before it (`start..` to the first site, `end` after the
//!   last one, reading the logits). A hook at every site computes what
//!   `record` does, less the recording.
//!
//! `--malloc retain` (the default) calls
//! [`burn_hooks::model::alloc::retain_freed_memory`] first, as the `hooks`
//! tool does; `--malloc default` leaves glibc's settings alone. Threads:
//! Flex uses rayon, so `RAYON_NUM_THREADS` sets them.
//!
//! Every iteration reads a value of the logits, so the timing covers the
//! whole computation.

use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_hooks::model::alloc;
use burn_hooks::model::backend::{Cpu, NdArray};
use burn_hooks::model::{Llama, LlamaConfig, LlamaHooks, TokenBatch};
use burn_hooks::{AnyRankHook, Ctx, FwdStage, HookTree, Record, Recorder};

/// The clock at each site call of a pass, with the site's path.
type Stamps = Arc<Mutex<Vec<(String, Instant)>>>;

/// One timed pass of `stages`: its start, the site calls, its end.
type Pass = (Instant, Vec<(String, Instant)>, Instant);

/// A hook that only reads the clock (`stages`).
struct Stamp(Stamps);

impl<B: Backend> AnyRankHook<B> for Stamp {
    fn call<const D: usize>(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        let now = Instant::now();
        let site = ctx.site().unwrap_or("?").to_string();
        self.0.lock().expect("stamps").push((site, now));
        x
    }
}

/// Mean time per pass of the work ending at each site, in the order the
/// sites are first called.
fn stages(passes: &[Pass]) -> Vec<(String, f64)> {
    let mut totals: Vec<(String, f64)> = Vec::new();
    let mut add = |name: &str, d: Duration| {
        let ms = d.as_secs_f64() * 1e3 / passes.len() as f64;
        match totals.iter_mut().find(|(n, _)| n == name) {
            Some((_, t)) => *t += ms,
            None => totals.push((name.to_string(), ms)),
        }
    };
    for (start, stamps, end) in passes {
        let mut last = *start;
        for (site, at) in stamps {
            add(site, *at - last);
            last = *at;
        }
        add("end", *end - last);
    }
    if let Some((first, _)) = passes.first().and_then(|p| p.1.first())
        && let Some(entry) = totals.iter_mut().find(|(n, _)| n == first)
    {
        entry.0 = format!("start..{first}");
    }
    totals
}

/// `config.json` of Qwen2.5-0.5B's shape (as on the hub, less the fields
/// the model does not read).
const QWEN2_5_0_5B: &str = r#"{
  "model_type": "qwen2",
  "vocab_size": 151936,
  "hidden_size": 896,
  "intermediate_size": 4864,
  "num_hidden_layers": 24,
  "num_attention_heads": 14,
  "num_key_value_heads": 2,
  "max_position_embeddings": 32768,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "hidden_act": "silu",
  "tie_word_embeddings": true,
  "use_sliding_window": false,
  "sliding_window": 32768,
  "max_window_layers": 24
}"#;

/// The same family, small enough to time in microseconds.
const TINY: &str = r#"{
  "model_type": "qwen2",
  "vocab_size": 512,
  "hidden_size": 64,
  "intermediate_size": 128,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "max_position_embeddings": 256,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "hidden_act": "silu",
  "tie_word_embeddings": true,
  "use_sliding_window": false
}"#;

struct Args {
    shape: String,
    batch: usize,
    tokens: usize,
    case: String,
    iters: usize,
    warmup: usize,
    malloc: String,
    backend: String,
    print_config: bool,
}

const USAGE: &str = "bench_llama --shape qwen2.5-0.5b|tiny --batch N --tokens S \
    --case bare|unhooked|record|stages --iters K --warmup W [--malloc retain|default] \
    [--backend flex|ndarray|cuda] [--print-config]";

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        shape: "qwen2.5-0.5b".into(),
        batch: 1,
        tokens: 128,
        case: "bare".into(),
        iters: 5,
        warmup: 1,
        malloc: "retain".into(),
        backend: "flex".into(),
        print_config: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--shape" => args.shape = value()?,
            "--batch" => args.batch = value()?.parse()?,
            "--tokens" => args.tokens = value()?.parse()?,
            "--case" => args.case = value()?,
            "--iters" => args.iters = value()?.parse()?,
            "--warmup" => args.warmup = value()?.parse()?,
            "--malloc" => args.malloc = value()?,
            "--backend" => args.backend = value()?,
            "--print-config" => args.print_config = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}").into()),
        }
    }
    if args.iters == 0 || args.batch == 0 || args.tokens == 0 {
        return Err("--iters, --batch and --tokens must be positive".into());
    }
    if args.malloc != "retain" && args.malloc != "default" {
        return Err(format!("--malloc is `retain` or `default`, not `{}`", args.malloc).into());
    }
    if !matches!(
        args.case.as_str(),
        "bare" | "unhooked" | "record" | "stages"
    ) {
        return Err(format!(
            "unknown case `{}`: bare, unhooked, record or stages",
            args.case
        )
        .into());
    }
    Ok(args)
}

/// The `config.json` text of a shape name.
fn config_text(shape: &str) -> Result<&'static str, Box<dyn Error>> {
    match shape {
        "qwen2.5-0.5b" => Ok(QWEN2_5_0_5B),
        "tiny" => Ok(TINY),
        other => Err(format!("unknown shape `{other}`: qwen2.5-0.5b or tiny").into()),
    }
}

/// Deterministic token rows spread over the vocabulary (the rows
/// `bench_forward` uses).
fn tokens(batch: usize, len: usize, vocab: usize) -> Result<TokenBatch, Box<dyn Error>> {
    let rows = (0..batch)
        .map(|b| {
            (0..len)
                .map(|t| ((b * 7919 + t * 104729) % vocab) as u32)
                .collect()
        })
        .collect();
    Ok(TokenBatch::new(rows)?)
}

/// Reading one value waits for the whole computation.
fn sync<B: Backend, const D: usize>(t: Tensor<B, D>) {
    let _ = t.flatten::<1>(0, D - 1).slice(0..1).into_scalar();
}

/// Runs `f` `warmup` times untimed, then `iters` times timed.
fn time(
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> Result<(), Box<dyn Error>>,
) -> Result<Vec<Duration>, Box<dyn Error>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
    }
    Ok(times)
}

/// The timed iterations, the recordings per pass, the time building the
/// model took and (`stages`) the time per stage.
struct Timed {
    times: Vec<Duration>,
    hook_calls: usize,
    init: Duration,
    stages: Vec<(String, f64)>,
}

/// Times `args.case` on backend `B`.
fn run<B: Backend>(
    args: &Args,
    config: &LlamaConfig,
    input: &TokenBatch,
    device: &B::Device,
) -> Result<Timed, Box<dyn Error>> {
    let start = Instant::now();
    let model = Llama::<B>::init(config, device)?;
    sync(model.embed_tokens.val());
    let init = start.elapsed();
    let recorder = Recorder::new();
    let mut hooks = LlamaHooks::<B>::default();
    let mut hook_calls = 0;
    let mut passes: Vec<Pass> = Vec::new();
    let times = match args.case.as_str() {
        "bare" => time(args.warmup, args.iters, || {
            sync(model.forward(input, &hooks)?);
            Ok(())
        })?,
        "unhooked" => time(args.warmup, args.iters, || {
            sync(model.forward_unhooked(input)?);
            Ok(())
        })?,
        "stages" => {
            let stamps = Stamps::default();
            hooks.append_all(FwdStage::Fwd, Stamp(stamps.clone()));
            let mut warm = args.warmup;
            let times = time(args.warmup, args.iters, || {
                let start = Instant::now();
                sync(model.forward(input, &hooks)?);
                let end = Instant::now();
                let pass = std::mem::take(&mut *stamps.lock().expect("stamps"));
                hook_calls = pass.len();
                if warm > 0 {
                    warm -= 1;
                } else {
                    passes.push((start, pass, end));
                }
                Ok(())
            })?;
            if hook_calls == 0 {
                return Err("no site was called".into());
            }
            times
        }
        _ => {
            hooks.append_all(FwdStage::Fwd, Record::into(&recorder));
            let times = time(args.warmup, args.iters, || {
                sync(model.forward(input, &hooks)?);
                hook_calls = recorder.len();
                recorder.clear();
                Ok(())
            })?;
            if hook_calls == 0 {
                return Err("the recorder stayed empty".into());
            }
            times
        }
    };
    Ok(Timed {
        times,
        hook_calls,
        init,
        stages: stages(&passes),
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let text = config_text(&args.shape)?;
    if args.print_config {
        println!("{text}");
        return Ok(());
    }
    if args.malloc == "retain" && !alloc::retain_freed_memory() {
        return Err("--malloc retain: this C library does not take glibc's settings".into());
    }
    let config = LlamaConfig::from_json(text)?;
    let parameters = config.parameters()?;
    let input = tokens(args.batch, args.tokens, config.vocab_size)?;

    let timed = match args.backend.as_str() {
        "flex" => run::<Cpu>(&args, &config, &input, &Default::default())?,
        "ndarray" => run::<NdArray>(&args, &config, &input, &Default::default())?,
        #[cfg(feature = "cuda")]
        "cuda" => {
            use burn_hooks::model::backend::{Cuda, cuda_device};
            let device = cuda_device()?;
            run::<Cuda>(&args, &config, &input, &device)?
        }
        #[cfg(not(feature = "cuda"))]
        "cuda" => {
            return Err(
                "--backend cuda: this binary was built without the `cuda` feature \
                        (cargo build --release --features cuda --example bench_llama)"
                    .into(),
            );
        }
        other => return Err(format!("unknown backend `{other}`: flex, ndarray or cuda").into()),
    };

    let ms: Vec<f64> = timed.times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    let mut sorted = ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_default();
    let samples = ms
        .iter()
        .map(|m| format!("{m:.4}"))
        .collect::<Vec<_>>()
        .join(",");
    let stages = timed
        .stages
        .iter()
        .map(|(site, ms)| format!("\"{site}\":{ms:.4}"))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "{{\"family\":\"{}\",\"shape\":\"{}\",\"batch\":{},\"tokens\":{},\"case\":\"{}\",\
         \"backend\":\"{}\",\"malloc\":\"{}\",\"rayon_threads\":\"{}\",\"parameters\":{},\
         \"layers\":{},\"width\":{},\"heads\":{},\"kv_heads\":{},\"mlp\":{},\"vocab\":{},\
         \"hook_calls\":{},\"init_ms\":{:.1},\"median_ms\":{:.4},\"samples_ms\":[{}],\"stages_ms\":{{{}}}}}",
        config.model_type(),
        args.shape,
        args.batch,
        args.tokens,
        args.case,
        args.backend,
        args.malloc,
        threads,
        parameters,
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.intermediate_size,
        config.vocab_size,
        timed.hook_calls,
        timed.init.as_secs_f64() * 1e3,
        median,
        samples,
        stages
    );
    Ok(())
}
