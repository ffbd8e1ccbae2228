//! One forward-pass benchmark case, timed K times, printed as one JSON line:
//! the Rust side of `bench/compare_pytorch.py`, which runs it as a
//! subprocess next to TransformerLens (see BENCHMARKS.md).
//!
//! ```text
//! cargo build --release --example bench_forward
//! target/release/examples/bench_forward --shape small|tiny --batch N --tokens S \
//!     --case bare|unhooked|record|record_no_denominator|record_no_norm|grad|grad_nohooks \
//!     --iters K --warmup W [--malloc retain|default] [--backend flex|ndarray|cuda]
//! ```
//!
//! `--backend` picks Burn's backend: `flex` (the default, the CPU backend
//! the comparison with TransformerLens uses), `ndarray`, or `cuda` in a build
//! with the `cuda` feature (`cargo build --release --features cuda --example
//! bench_forward`; without an NVIDIA driver it says so and exits).
//!
//! `--malloc retain` (the default) calls
//! [`burn_hooks::model::alloc::retain_freed_memory`] first, as the `hooks`
//! tool does; `--malloc default` leaves glibc's settings alone.
//!
//! Shapes: `small` is GPT-2 small (12 layers, width 768, 12 heads, 1024
//! positions, vocabulary 50257), `tiny` is 2 layers, width 64, 4 heads, 64
//! positions, vocabulary 512; random weights, f32.
//!
//! Cases:
//! - `bare`: `forward` with an empty hook tree;
//! - `unhooked`: `forward_unhooked` (every site call compiled out);
//! - `record`: `forward` recording every site into a [`Recorder`] (cleared
//!   after each iteration);
//! - `record_no_denominator`: `record` without the
//!   `attn.qk_softmax_denominator` site (a hook there makes the model write
//!   the softmax out instead of calling the fused one; TransformerLens has
//!   no such site);
//! - `record_no_norm`: `record` without the three layer-norm sites of each
//!   norm (with them empty the model calls the backend's fused layer norm);
//! - `grad`: forward and backward of `logits.sum()` (on `Autodiff<backend>`), with a
//!   pass-through gradient hook at every site;
//! - `grad_nohooks`: the same with an empty hook tree.
//!
//! Every iteration reads a value of its result (logits, or a weight's
//! gradient), so the timing covers the whole computation.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn_hooks::model::alloc;
use burn_hooks::model::backend::{Cpu, NdArray};
use burn_hooks::model::{Gpt2, Gpt2Config, TokenBatch, TransformerHooks};
use burn_hooks::{AnyRankHook, Ctx, FwdStage, HookTree, Record, Recorder};

/// A gradient hook that counts its calls and passes the gradient on unchanged.
struct CountGrad(Arc<AtomicUsize>);

impl<B: Backend> AnyRankHook<B> for CountGrad {
    fn call<const D: usize>(&self, g: Tensor<B, D>, _: &Ctx<'_>) -> Tensor<B, D> {
        self.0.fetch_add(1, Ordering::Relaxed);
        g
    }
}

struct Args {
    shape: String,
    batch: usize,
    tokens: usize,
    case: String,
    iters: usize,
    warmup: usize,
    malloc: String,
    backend: String,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        shape: "small".into(),
        batch: 1,
        tokens: 128,
        case: "bare".into(),
        iters: 5,
        warmup: 1,
        malloc: "retain".into(),
        backend: "flex".into(),
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
            "-h" | "--help" => {
                println!(
                    "bench_forward --shape small|tiny --batch N --tokens S \
                     --case bare|unhooked|record|record_no_denominator|record_no_norm|grad|grad_nohooks --iters K --warmup W [--malloc retain|default] [--backend flex|ndarray|cuda]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if args.iters == 0 || args.batch == 0 || args.tokens == 0 {
        return Err("--iters, --batch and --tokens must be positive".into());
    }
    if args.malloc != "retain" && args.malloc != "default" {
        return Err(format!("--malloc is `retain` or `default`, not `{}`", args.malloc).into());
    }
    Ok(args)
}

/// The config of a shape name.
fn config(shape: &str) -> Result<Gpt2Config, Box<dyn Error>> {
    match shape {
        "small" => Ok(Gpt2Config::gpt2_small()),
        "tiny" => Ok(Gpt2Config::new(2, 64, 4, 64, 512)),
        other => Err(format!("unknown shape `{other}`: small or tiny").into()),
    }
}

/// Deterministic token rows spread over the vocabulary.
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

/// What one invocation measures: the case, the model's shape and the tokens.
struct Case {
    args: Args,
    config: Gpt2Config,
    input: TokenBatch,
}

/// The times of the timed iterations and the hook calls per pass.
type Timed = (Vec<Duration>, usize);

impl Case {
    /// Times a forward case (`bare`, `unhooked`, `record*`) on backend `B`;
    /// returns the times and the recordings per pass.
    fn forward<B: Backend>(&self, device: &B::Device) -> Result<Timed, Box<dyn Error>> {
        let Case {
            args,
            config,
            input,
        } = self;
        let model = Gpt2::<B>::init(config, device)?;
        let recorder = Recorder::new();
        let mut hooks = TransformerHooks::<B>::default();
        let mut hook_calls = 0;
        let times = match args.case.as_str() {
            "bare" => time(args.warmup, args.iters, || {
                sync(model.forward(input, &hooks)?);
                Ok(())
            })?,
            "unhooked" => time(args.warmup, args.iters, || {
                sync(model.forward_unhooked(input)?);
                Ok(())
            })?,
            _ => {
                hooks.append_all(FwdStage::Fwd, Record::into(&recorder));
                if args.case == "record_no_denominator" {
                    hooks.attn.qk_softmax_denominator = Default::default();
                }
                if args.case == "record_no_norm" {
                    hooks.resid.torso.ln_attn = Default::default();
                    hooks.resid.torso.ln_mlp = Default::default();
                    hooks.resid.ln_f = Default::default();
                }
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
        Ok((times, hook_calls))
    }

    /// Times a forward + backward case (`grad`, `grad_nohooks`) on backend `B`;
    /// returns the times and the gradient hook calls per pass.
    fn grad<B: AutodiffBackend>(&self, device: &B::Device) -> Result<Timed, Box<dyn Error>> {
        let Case {
            args,
            config,
            input,
        } = self;
        let model = Gpt2::<B>::init(config, device)?;
        let calls = Arc::new(AtomicUsize::new(0));
        let mut hooks = TransformerHooks::<B>::default();
        if args.case == "grad" {
            hooks.append_all_grad(CountGrad(calls.clone()));
        }
        let times = time(args.warmup, args.iters, || {
            let logits = model.forward(input, &hooks)?;
            let grads = logits.sum().backward();
            let g = model.wte.val().grad(&grads).ok_or("no gradient for wte")?;
            sync(g);
            Ok(())
        })?;
        let hook_calls = calls.load(Ordering::Relaxed) / (args.warmup + args.iters);
        if args.case == "grad" && hook_calls == 0 {
            return Err("the gradient hooks were never called".into());
        }
        Ok((times, hook_calls))
    }

    /// The case on the backend `--backend` names (`B`, or its autodiff
    /// wrapper for the gradient cases).
    fn run<B: Backend>(&self, device: &B::Device) -> Result<Timed, Box<dyn Error>> {
        let args = &self.args;
        match args.case.as_str() {
            "bare" | "unhooked" | "record" | "record_no_denominator" | "record_no_norm" => {
                self.forward::<B>(device)
            }
            "grad" | "grad_nohooks" => self.grad::<Autodiff<B>>(device),
            other => Err(format!(
                "unknown case `{other}`: bare, unhooked, record, record_no_denominator, \
                 record_no_norm, grad or grad_nohooks"
            )
            .into()),
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    if args.malloc == "retain" && !alloc::retain_freed_memory() {
        return Err("--malloc retain: this C library does not take glibc's settings".into());
    }
    let config = config(&args.shape)?;
    let input = tokens(args.batch, args.tokens, config.vocab_size)?;
    let case = Case {
        args,
        config,
        input,
    };
    let args = &case.args;

    let (times, hook_calls) = match args.backend.as_str() {
        "flex" => case.run::<Cpu>(&Default::default())?,
        "ndarray" => case.run::<NdArray>(&Default::default())?,
        #[cfg(feature = "cuda")]
        "cuda" => {
            let device = burn_hooks::model::backend::cuda_device()?;
            case.run::<burn_hooks::model::backend::Cuda>(&device)?
        }
        #[cfg(not(feature = "cuda"))]
        "cuda" => {
            return Err("this build has no CUDA backend: build with \
                        `cargo build --release --features cuda --example bench_forward` \
                        (with CUDARC_CUDA_VERSION=13000, say, where no CUDA toolkit is installed)"
                .into());
        }
        other => return Err(format!("unknown backend `{other}`: flex, ndarray or cuda").into()),
    };

    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let median = if ms.len() % 2 == 1 {
        ms[ms.len() / 2]
    } else {
        (ms[ms.len() / 2 - 1] + ms[ms.len() / 2]) / 2.0
    };
    let samples = ms
        .iter()
        .map(|m| format!("{m:.3}"))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "{{\"impl\":\"burn-hooks\",\"shape\":\"{}\",\"batch\":{},\"tokens\":{},\"case\":\"{}\",\"backend\":\"{}\",\"malloc\":\"{}\",\
         \"median_ms\":{median:.3},\"min_ms\":{:.3},\"iters\":{},\"hook_calls\":{hook_calls},\"samples_ms\":[{samples}]}}",
        args.shape,
        args.batch,
        args.tokens,
        args.case,
        args.backend,
        args.malloc,
        ms[0],
        args.iters
    );
    Ok(())
}
