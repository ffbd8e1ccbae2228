//! `hooks train-sae`: train a sparse autoencoder (OpenAI's recipe,
//! [`crate::sae_training`]) on one site of a model run live through hooks,
//! or on one key of an activation store, with a progress bar, and write it
//! in the project's SAE format (atomically).

use std::cell::Cell;
use std::collections::HashMap;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use clap::{ArgGroup, Args, ValueEnum};
use indicatif::ProgressBar;

use super::args::BackendKind;
use super::error::{CliError, write_error};
use super::{OnAutodiff, clobber, memory, on_autodiff, print_out};
use crate::sae_training::{
    ActivationSource, LiveSource, PreBiasInit, SaeKind, SaeMetrics, SaeTrainConfig, SaeTrainError,
    StoreSource, TrainEvent, TrainedSae, check_site, repeated_runs, token_rows, train_sae_observed,
};
use hooks_model::backend::Cpu;
use hooks_model::files::resolve_output;
use hooks_model::{AnyConfig, FamilyJob, FromCheckpoint, LoadOptions, shown};

/// How the pre-bias starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PreBiasArg {
    /// The geometric median of a sample (OpenAI's choice).
    Median,
    /// The mean of a sample.
    Mean,
    /// Zero.
    Zero,
}

/// `hooks train-sae`.
#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("source").required(true).args(["model", "store"])),
    group(ArgGroup::new("sparsity").required(true).args(["k", "l1"]))
)]
pub struct TrainSaeArgs {
    /// Checkpoint folder: its model runs live through hooks and the values
    /// at --site (and --layer) feed the autoencoder through a shuffling
    /// buffer.
    #[arg(long, value_name = "DIR", requires = "site")]
    pub model: Option<PathBuf>,
    /// The site to train on with --model, e.g. `mlp.post_act`,
    /// `resid.torso.delta_mlp` (see `hooks sites`; one vector per position).
    #[arg(long, value_name = "SITE", requires = "model")]
    pub site: Option<String>,
    /// The layer of --site (needed for sites inside the blocks).
    #[arg(long, value_name = "L", requires = "model")]
    pub layer: Option<usize>,
    /// Token ids to run the model on: integers separated by whitespace or
    /// commas, in corpus order, packed into rows of --seq-len and read again
    /// from the start after the end. Without it: rows of random tokens, each
    /// with a random run repeated once (the bundled model's task).
    #[arg(long, value_name = "FILE", requires = "model")]
    pub tokens_file: Option<PathBuf>,
    /// Tokens per row of the live runs [default: the model's context window].
    #[arg(long, value_name = "N", requires = "model")]
    pub seq_len: Option<usize>,
    /// Rows per forward pass of the live runs.
    #[arg(long, value_name = "R", default_value_t = 32, requires = "model")]
    pub rows: usize,
    /// An activation store written by `hooks cache --dataset` (read shard by
    /// shard, from the start again after the end).
    #[arg(long, value_name = "DIR", requires = "key")]
    pub store: Option<PathBuf>,
    /// The store key to train on, e.g. `layers.0.mlp.post_act`.
    #[arg(long, value_name = "KEY", requires = "store")]
    pub key: Option<String>,
    /// Where to write the autoencoder: safetensors in the project's SAE
    /// format (`SparseAutoencoder::load`, `splice_sae`), with what it was
    /// trained on in the metadata; written to a temporary file and renamed
    /// into place.
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
    /// Number of latents.
    #[arg(long, value_name = "L")]
    pub latents: usize,
    /// A TopK autoencoder keeping K latents per token.
    #[arg(long, value_name = "K")]
    pub k: Option<usize>,
    /// A ReLU autoencoder with this L1 coefficient (loss = MSE + C · mean
    /// L1 norm of the latents).
    #[arg(long, value_name = "C")]
    pub l1: Option<f64>,
    /// Optimiser steps.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub steps: usize,
    /// Tokens per step.
    #[arg(long, value_name = "TOKENS", default_value_t = 4096)]
    pub batch: usize,
    /// Adam's learning rate.
    #[arg(long, value_name = "LR", default_value_t = 1e-3)]
    pub lr: f64,
    /// Steps of linear learning-rate warm-up.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warmup_steps: usize,
    /// Final steps over which the learning rate decays linearly to 0.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub decay_steps: usize,
    /// Seed of the initialisation, the shuffling and the random tokens.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Latents of the auxiliary loss [default: the power of two nearest
    /// half the width].
    #[arg(long, value_name = "N")]
    pub aux_k: Option<usize>,
    /// Coefficient of the auxiliary loss on dead latents; 0 turns it off.
    #[arg(long, value_name = "C", default_value_t = 1.0 / 32.0)]
    pub aux_coef: f64,
    /// A latent is dead after this many tokens without firing.
    #[arg(long, value_name = "TOKENS", default_value_t = 10_000_000)]
    pub dead_after: u64,
    /// How the pre-bias starts.
    #[arg(long, value_enum, default_value_t = PreBiasArg::Median)]
    pub pre_bias: PreBiasArg,
    /// Capacity of the shuffling buffer, in tokens [default: 16 batches].
    #[arg(long, value_name = "TOKENS")]
    pub buffer: Option<usize>,
    /// Steps per metrics report.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub metrics_every: usize,
    /// Accept model weights holding NaN or infinity.
    #[arg(long, requires = "model")]
    pub allow_non_finite: bool,
}

impl TrainSaeArgs {
    /// The training configuration the options describe.
    pub fn config(&self) -> Result<SaeTrainConfig, CliError> {
        let kind = match (self.k, self.l1) {
            (Some(k), None) => SaeKind::TopK { k },
            (None, Some(l1)) => SaeKind::Relu { l1 },
            _ => unreachable!("clap requires exactly one of --k and --l1"),
        };
        let buffer = match self.buffer {
            Some(b) => b,
            None => self.batch.saturating_mul(16),
        };
        Ok(SaeTrainConfig {
            n_latents: self.latents,
            kind,
            steps: self.steps,
            batch_size: self.batch,
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            decay_steps: self.decay_steps,
            aux_k: self.aux_k,
            aux_coef: self.aux_coef,
            dead_after_tokens: self.dead_after,
            pre_bias_init: match self.pre_bias {
                PreBiasArg::Median => PreBiasInit::GeometricMedian,
                PreBiasArg::Mean => PreBiasInit::Mean,
                PreBiasArg::Zero => PreBiasInit::Zero,
            },
            init_sample_tokens: buffer.min(16_384),
            buffer_tokens: buffer,
            metrics_every: self.metrics_every,
            seed: self.seed,
            ..SaeTrainConfig::topk(self.latents.max(1), 1)
        })
    }
}

impl From<SaeTrainError> for CliError {
    fn from(e: SaeTrainError) -> Self {
        match e {
            SaeTrainError::Config(m) => CliError::Input(m),
            SaeTrainError::Model(m) => CliError::from(m),
            SaeTrainError::Hook(h) => CliError::from(h),
            SaeTrainError::Store(s) => CliError::from(s),
            e @ SaeTrainError::TooFewTokens { .. } => CliError::Input(e.to_string()),
            e @ SaeTrainError::NonFinite { .. } => {
                CliError::Diverged(format!("{e}; nothing was written"))
            }
            e @ SaeTrainError::Source(_) => CliError::Other(e.to_string()),
        }
    }
}

/// Token ids from `path`: integers separated by whitespace or commas.
pub fn read_tokens_file(path: &Path, vocab: usize) -> Result<Vec<u32>, CliError> {
    let text = hooks_model::inputs::read_to_string(path)
        .map_err(|e| CliError::Input(format!("cannot read --tokens-file {}: {e}", shown(path))))?;
    let mut tokens = Vec::new();
    for (line, row) in text.lines().enumerate() {
        for word in row.split(|c: char| c.is_whitespace() || c == ',') {
            if word.is_empty() {
                continue;
            }
            let id: u32 = word.parse().map_err(|_| {
                CliError::Input(format!(
                    "--tokens-file {} line {}: `{word}` is not a token id (non-negative integers \
                     separated by spaces or commas)",
                    shown(path),
                    line + 1
                ))
            })?;
            if id as usize >= vocab {
                return Err(CliError::Input(format!(
                    "--tokens-file {} line {}: token {id} is outside the model's vocabulary \
                     (size {vocab})",
                    shown(path),
                    line + 1
                )));
            }
            tokens.push(id);
        }
    }
    Ok(tokens)
}

/// Everything the run needs, checked before any weight is loaded.
struct Plan {
    config: SaeTrainConfig,
    input: Input,
    load: LoadOptions,
    out: PathBuf,
}

/// What the run did, once the file is written.
struct Summary {
    steps: usize,
    tokens: u64,
    exhausted: bool,
    last: Option<SaeMetrics>,
}

enum Input {
    Live {
        dir: PathBuf,
        model: Box<AnyConfig>,
        site: String,
        layer: Option<usize>,
        tokens: Option<Vec<u32>>,
        seq_len: usize,
        rows: usize,
        seed: u64,
    },
    Store {
        dir: PathBuf,
        key: String,
    },
}

/// Runs `hooks train-sae`.
pub fn run(backend: BackendKind, args: &TrainSaeArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let config = args.config()?;
    resolve_output(&args.out).map_err(|e| write_error(&args.out, e))?;
    let input = match (&args.model, &args.store) {
        (Some(dir), None) => {
            let model = AnyConfig::load(dir).map_err(|e| CliError::model_files(dir, e))?;
            let dims = model.dims();
            let seq_len = args.seq_len.unwrap_or(dims.n_ctx);
            if seq_len == 0 || seq_len > dims.n_ctx {
                return Err(CliError::Input(format!(
                    "--seq-len {seq_len} must be between 1 and the model's context window, {}",
                    dims.n_ctx
                )));
            }
            if args.rows == 0 {
                return Err(CliError::Input("--rows must be at least 1".into()));
            }
            let tokens = match &args.tokens_file {
                Some(path) => {
                    let t = read_tokens_file(path, dims.vocab_size)?;
                    if t.len() < seq_len {
                        return Err(CliError::Input(format!(
                            "--tokens-file {} holds {} tokens, fewer than one row of --seq-len {seq_len}",
                            shown(path),
                            t.len()
                        )));
                    }
                    Some(t)
                }
                None if seq_len < 2 => {
                    return Err(CliError::Input(
                        "random rows with a repeated run need --seq-len ≥ 2 (or give --tokens-file)"
                            .into(),
                    ));
                }
                None => None,
            };
            Input::Live {
                dir: dir.clone(),
                model: Box::new(model),
                site: args
                    .site
                    .clone()
                    .expect("clap requires --site with --model"),
                layer: args.layer,
                tokens,
                seq_len,
                rows: args.rows,
                seed: args.seed,
            }
        }
        (None, Some(dir)) => Input::Store {
            dir: dir.clone(),
            key: args.key.clone().expect("clap requires --key with --store"),
        },
        _ => unreachable!("clap requires exactly one of --model and --store"),
    };
    let inputs = match &input {
        Input::Live { dir, .. } => {
            let mut files = clobber::model_inputs(dir);
            files.extend(args.tokens_file.clone());
            files
        }
        Input::Store { dir, .. } => clobber::folder_files(dir),
    };
    clobber::refuse_inputs(&args.out, &inputs)?;
    // Checked before any weight is loaded.
    let width = match &input {
        Input::Live {
            model, site, layer, ..
        } => model.run::<Cpu, _>(CheckSite {
            site,
            layer: *layer,
        })?,
        Input::Store { dir, key } => StoreSource::open(dir, key)?.width(),
    };
    config.validate(width)?;
    let host = backend != BackendKind::Cuda;
    let sizes = format!(
        "--latents {} on width {width}, --batch {} and a buffer of {} tokens",
        config.n_latents, config.batch_size, config.buffer_tokens
    );
    memory::ensure_fits(&sizes, config.memory_bytes(width), host)?;
    if let Input::Live {
        model,
        rows,
        seq_len,
        ..
    } = &input
    {
        let needed = memory::forward_bytes(&model.dims(), *rows, *seq_len);
        let sizes = format!("--rows {rows} of {seq_len} tokens");
        memory::ensure_fits(&sizes, needed, host)?;
    }
    let tokens = config.steps as u64 * config.batch_size as u64;
    if config.aux_coef > 0.0 && tokens < config.dead_after_tokens {
        eprintln!(
            "note: this run trains on {tokens} tokens, fewer than --dead-after {}: no latent can \
             count as dead, so the auxiliary loss never runs (lower --dead-after to use it)",
            config.dead_after_tokens
        );
    }
    let plan = Plan {
        config,
        input,
        load: LoadOptions::new().allow_non_finite(args.allow_non_finite),
        out: args.out.clone(),
    };
    let run = on_autodiff(backend, Job(&plan))?;
    let seconds = started.elapsed().as_secs_f64();
    let mut summary = format!(
        "wrote {} ({} latents, {}) after {} steps on {} tokens in {seconds:.1} s ({:.2} steps/s)\n",
        shown(&args.out),
        plan.config.n_latents,
        match plan.config.kind {
            SaeKind::TopK { k } => format!("TopK k = {k}"),
            SaeKind::Relu { l1 } => format!("ReLU, L1 {l1}"),
        },
        run.steps,
        run.tokens,
        run.steps as f64 / seconds.max(1e-9),
    );
    if run.exhausted {
        summary.push_str("the store ran out before the last step\n");
    }
    if let Some(m) = &run.last {
        summary.push_str(&format!("last: {m}\n"));
    }
    print_out(&summary)
}

/// Writes the autoencoder with what it was trained on in the metadata.
fn save<B: burn::tensor::backend::Backend>(
    plan: &Plan,
    run: &TrainedSae<B>,
    described: String,
) -> Result<(), CliError> {
    let mut meta = HashMap::from([
        ("producer".to_string(), "hooks train-sae".to_string()),
        ("trained_on".to_string(), described),
        ("steps".to_string(), run.steps.to_string()),
        ("tokens".to_string(), run.tokens.to_string()),
        ("batch".to_string(), plan.config.batch_size.to_string()),
        ("lr".to_string(), plan.config.lr.to_string()),
        ("seed".to_string(), plan.config.seed.to_string()),
    ]);
    match &plan.input {
        Input::Live {
            dir, site, layer, ..
        } => {
            meta.insert("model".into(), dir.display().to_string());
            meta.insert("site".into(), site.clone());
            if let Some(l) = layer {
                meta.insert("layer".into(), l.to_string());
            }
        }
        Input::Store { dir, key } => {
            meta.insert("store".into(), dir.display().to_string());
            meta.insert("key".into(), key.clone());
        }
    }
    if let SaeKind::Relu { l1 } = plan.config.kind {
        meta.insert("l1".into(), l1.to_string());
    }
    if let Some(m) = run.last() {
        meta.insert("fve".into(), format!("{:.6}", m.fve));
        meta.insert("mse".into(), format!("{:.6e}", m.mse));
        meta.insert("l0".into(), format!("{:.3}", m.l0));
        meta.insert("dead".into(), m.dead.to_string());
    }
    run.sae
        .save_with_metadata(&plan.out, meta)
        .map_err(|e| write_error(&plan.out, e))
}

/// The site's width for the folder's family, or why it cannot be used.
struct CheckSite<'a> {
    site: &'a str,
    layer: Option<usize>,
}

impl FamilyJob<Cpu> for CheckSite<'_> {
    type Output = Result<usize, CliError>;

    fn run<M: FromCheckpoint<Cpu>>(self, config: &AnyConfig) -> Self::Output {
        let hooks = M::Hooks::default();
        Ok(check_site(&hooks, self.site, self.layer, &config.dims())?.1)
    }
}

/// The run on the autodiff backend.
struct Job<'p>(&'p Plan);

impl OnAutodiff for Job<'_> {
    type Output = Summary;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Summary, CliError> {
        let plan = self.0;
        let (run, described) = match &plan.input {
            Input::Store { dir, key } => {
                let source = StoreSource::open(dir, key)?;
                train::<B, _>(plan, source, &device)?
            }
            Input::Live { model, .. } => {
                model.run::<B::InnerBackend, _>(Live::<B>(plan, device))?
            }
        };
        save(plan, &run, described)?;
        Ok(Summary {
            steps: run.steps,
            tokens: run.tokens,
            exhausted: run.source_exhausted,
            last: run.last().cloned(),
        })
    }
}

struct Live<'p, B: AutodiffBackend>(&'p Plan, B::Device);

impl<B: AutodiffBackend> FamilyJob<B::InnerBackend> for Live<'_, B> {
    type Output = Result<(TrainedSae<B::InnerBackend>, String), CliError>;

    fn run<M: FromCheckpoint<B::InnerBackend>>(self, _: &AnyConfig) -> Self::Output {
        let Live(plan, device) = self;
        let Input::Live {
            dir,
            site,
            layer,
            tokens,
            seq_len,
            rows,
            seed,
            model: config,
        } = &plan.input
        else {
            unreachable!("a live plan")
        };
        let model =
            M::load_with(dir, &device, plan.load).map_err(|e| CliError::model_files(dir, e))?;
        let vocab = config.dims().vocab_size;
        match tokens {
            Some(t) => {
                let batches = token_rows(t.clone(), *rows, *seq_len, true)?;
                train::<B, _>(
                    plan,
                    LiveSource::new(model, site, *layer, batches)?,
                    &device,
                )
            }
            None => {
                let min_period = (seq_len / 2).clamp(1, 6);
                let batches = repeated_runs(vocab, *rows, *seq_len, min_period, *seed);
                train::<B, _>(
                    plan,
                    LiveSource::new(model, site, *layer, batches)?,
                    &device,
                )
            }
        }
    }
}

/// Trains with a progress bar and the reports on stdout.
fn train<B: AutodiffBackend, S: ActivationSource>(
    plan: &Plan,
    source: S,
    device: &B::Device,
) -> Result<(TrainedSae<B::InnerBackend>, String), CliError> {
    let described = source.describe();
    let bar = Bar::new(plan.config.steps as u64, &described);
    let run = train_sae_observed::<B, S>(&plan.config, source, device, &mut |e| match e {
        TrainEvent::Step(s) => bar.step(s.step as u64 + 1),
        TrainEvent::Report(m) => bar.report(m),
    });
    bar.finish();
    Ok((run?, described))
}

/// Steps done with the last report's metrics; the reports also go to
/// stdout, one line each, with the steps per second since the previous
/// report (from the end of the first step, so loading and the first fill
/// of the buffer do not count). Hidden when stderr is not a terminal.
struct Bar {
    bar: ProgressBar,
    /// The step count and time of the previous report (or of the end of the
    /// first step).
    mark: Cell<Option<(u64, Instant)>>,
    done: Cell<u64>,
}

impl Bar {
    fn new(steps: u64, what: &str) -> Self {
        let bar = super::progress::bar(
            steps,
            "{bar:30} {pos}/{len} steps · {per_sec} · ETA {eta} · {msg}",
        );
        bar.set_message(format!("starting on {what}"));
        Bar {
            bar,
            mark: Cell::new(None),
            done: Cell::new(0),
        }
    }

    fn step(&self, done: u64) {
        self.bar.set_position(done);
        self.done.set(done);
        if self.mark.get().is_none() {
            self.mark.set(Some((done, Instant::now())));
        }
    }

    fn report(&self, m: &SaeMetrics) {
        self.bar.set_message(format!(
            "mse {:.4e} · fve {:.4} · L0 {:.1} · dead {}",
            m.mse, m.fve, m.l0, m.dead
        ));
        let now = Instant::now();
        let done = self.done.get();
        let rate = match self.mark.get() {
            Some((at, t)) if done > at => {
                format!(
                    "  ({:.2} steps/s)",
                    (done - at) as f64 / (now - t).as_secs_f64()
                )
            }
            _ => String::new(),
        };
        self.mark.set(Some((done, now)));
        let line = format!("{m}{rate}\n");
        self.bar.suspend(|| {
            let _ = print_out(&line);
        });
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_files() {
        let dir = std::env::temp_dir().join(format!("train-sae-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.txt");
        std::fs::write(&f, "1 2,3\n\n 4\t5\n").unwrap();
        assert_eq!(read_tokens_file(&f, 10).unwrap(), [1, 2, 3, 4, 5]);
        std::fs::write(&f, "1 2\n3 x\n").unwrap();
        let err = read_tokens_file(&f, 10).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("`x`"), "{err}");
        std::fs::write(&f, "1 12\n").unwrap();
        let err = read_tokens_file(&f, 10).unwrap_err().to_string();
        assert!(err.contains("token 12") && err.contains("size 10"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
