//! `hooks cache --dataset`: stream a corpus through the model into an
//! activation store ([`crate::store`]), with a progress bar; and
//! `hooks merge-manifests`.

use std::time::Instant;

use burn::tensor::backend::Backend;
use indicatif::ProgressBar;

use super::args::{BackendKind, CacheArgs, MergeArgs, StoreDtypeArg, TokenDtypeArg};
use super::error::CliError;
use super::{OnBackend, input, on_backend, print_out};
use crate::store::{
    Corpus, Manifest, ModelRecord, Outcome, Progress, Slice, StoreDtype, StoreError, StoreOptions,
    TokenWidth, build_store, merge_manifests,
};
use hooks_model::tokenizer::Tokenizer;
use hooks_model::{AnyConfig, FamilyJob, FromCheckpoint, LoadOptions, shown};

/// The corpus options given without `--dataset` (an input error: they
/// would be ignored).
pub fn stray_corpus_options(args: &CacheArgs) -> Result<(), CliError> {
    let c = &args.corpus;
    let given: Vec<&str> = [
        ("--seq-len", c.seq_len.is_some()),
        ("--batch", c.batch.is_some()),
        ("--shard-mb", c.shard_mb.is_some()),
        ("--dtype", c.dtype.is_some()),
        ("--layers", c.layers.is_some()),
        ("--shard", c.shard.is_some()),
        ("--separator", c.separator.is_some()),
        ("--token-dtype", c.token_dtype.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if given.is_empty() {
        return Ok(());
    }
    Err(CliError::Input(format!(
        "{} appl{} only to a corpus (--dataset FILE)",
        given.join(", "),
        if given.len() == 1 { "ies" } else { "y" }
    )))
}

/// Runs `hooks cache --dataset FILE`.
pub fn run(backend: BackendKind, args: &CacheArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let file = args.input.dataset.as_ref().expect("--dataset was given");
    let config = AnyConfig::load(&args.model).map_err(|e| CliError::model_files(&args.model, e))?;
    let dims = config.dims();
    let width = match args.corpus.token_dtype {
        None | Some(TokenDtypeArg::U16) => TokenWidth::U16,
        Some(TokenDtypeArg::U32) => TokenWidth::U32,
    };
    if args.out == std::path::Path::new("-") {
        return Err(CliError::Input(
            "--out - means standard output, which cannot hold an activation store: with \
             --dataset, --out is the store's folder (created if missing)"
                .into(),
        ));
    }
    let corpus = Corpus::open(file, width)?;
    let tokenizer = if corpus.format().needs_tokenizer() {
        Some(input::tokenizer(&args.model, &config)?)
    } else {
        None
    };
    let options = StoreOptions {
        sites: args.sites.clone(),
        layers: args.corpus.layers.clone(),
        seq_len: args.corpus.seq_len.unwrap_or(dims.n_ctx.min(64)),
        batch: args.corpus.batch.unwrap_or(8),
        shard_bytes: shard_bytes(args.corpus.shard_mb)?,
        dtype: match args.corpus.dtype {
            None | Some(StoreDtypeArg::F32) => StoreDtype::F32,
            Some(StoreDtypeArg::F16) => StoreDtype::F16,
            Some(StoreDtypeArg::Bf16) => StoreDtype::Bf16,
        },
        separator: args.corpus.separator,
        slice: match &args.corpus.shard {
            Some(text) => Slice::parse(text)?,
            None => Slice::WHOLE,
        },
        allow_non_finite: args.allow_non_finite,
    };
    let record = ModelRecord::of(&args.model, config.model_type())?;
    let job = Job {
        config: &config,
        corpus: &corpus,
        tokenizer: tokenizer.as_ref(),
        record: &record,
        options: &options,
        args,
    };
    let outcome = on_backend(backend, job)?;
    let summary = match outcome {
        Outcome::AlreadyComplete(m) => format!(
            "{} already holds this store, complete ({} tokens in {} shards): nothing to do\n",
            shown(&args.out),
            m.tokens,
            m.shards.len()
        ),
        Outcome::Built {
            manifest,
            new_tokens,
            resumed,
        } => {
            let seconds = started.elapsed().as_secs_f64();
            format!(
                "{}stored {} tokens ({} keys, {} shards, {}) in {} in {seconds:.1} s ({:.0} \
                 tokens/s){}\n",
                if resumed { "resumed; " } else { "" },
                manifest.tokens,
                manifest.keys.len(),
                manifest.shards.len(),
                human_bytes(manifest.shards.iter().map(|s| s.bytes).sum()),
                shown(&args.out),
                new_tokens as f64 / seconds.max(1e-9),
                dropped_note(&manifest),
            )
        }
    };
    print_out(&summary)
}

/// `--shard-mb` in bytes: at least 1 MiB (0 would mean a shard per row),
/// and a size that 64 bits can count.
fn shard_bytes(shard_mb: Option<u64>) -> Result<u64, CliError> {
    let mb = shard_mb.unwrap_or(256);
    if mb == 0 {
        return Err(CliError::Input(
            "--shard-mb 0: a shard must be at least 1 MiB".into(),
        ));
    }
    mb.checked_mul(1 << 20).ok_or_else(|| {
        CliError::Input(format!(
            "--shard-mb {mb} is too large: {mb} MiB overflow 64 bits"
        ))
    })
}

fn dropped_note(m: &Manifest) -> String {
    match m.dropped_tokens {
        Some(n) if n > 0 => format!(
            "; the last {n} corpus tokens, fewer than a row of {}, were left out",
            m.seq_len
        ),
        _ => String::new(),
    }
}

/// The build, on the backend and family of the folder.
struct Job<'a> {
    config: &'a AnyConfig,
    corpus: &'a Corpus,
    tokenizer: Option<&'a Tokenizer>,
    record: &'a ModelRecord,
    options: &'a StoreOptions,
    args: &'a CacheArgs,
}

impl OnBackend for Job<'_> {
    type Output = Outcome;

    fn run<B: Backend>(self, device: B::Device) -> Result<Outcome, CliError> {
        self.config.run(OnDevice::<B>(self, device))
    }
}

struct OnDevice<'a, B: Backend>(Job<'a>, B::Device);

impl<B: Backend> FamilyJob<B> for OnDevice<'_, B> {
    type Output = Result<Outcome, CliError>;

    fn run<M: FromCheckpoint<B>>(self, _: &AnyConfig) -> Self::Output {
        let OnDevice(job, device) = self;
        let dir = &job.args.model;
        let load = LoadOptions::new().allow_non_finite(job.args.allow_non_finite);
        let model = M::load_with(dir, &device, load).map_err(|e| CliError::model_files(dir, e))?;
        let bar = Bar::new(job.corpus.bytes());
        let outcome = build_store(
            &model,
            job.corpus,
            job.tokenizer,
            job.record,
            job.options,
            &job.args.out,
            &mut |p| bar.update(p),
        );
        bar.finish();
        Ok(outcome?)
    }
}

/// The progress bar: corpus bytes read (so the ETA covers the whole file),
/// with tokens stored and tokens/s; hidden when stderr is not a terminal.
struct Bar {
    bar: ProgressBar,
    first_new: std::cell::Cell<Option<(Instant, u64)>>,
}

impl Bar {
    fn new(bytes: u64) -> Self {
        let bar = super::progress::bar(
            bytes,
            "{bar:30} {percent:>3}% of the corpus · {msg} · {elapsed} elapsed, ETA {eta}",
        );
        Bar {
            bar,
            first_new: std::cell::Cell::new(None),
        }
    }

    fn update(&self, p: &Progress) {
        self.bar.set_position(p.bytes_read);
        if self.first_new.get().is_none() && p.new_tokens > 0 {
            self.first_new.set(Some((Instant::now(), p.new_tokens)));
        }
        let rate = self.first_new.get().map_or(0.0, |(t, n)| {
            let dt = t.elapsed().as_secs_f64();
            if dt > 0.0 {
                (p.new_tokens - n) as f64 / dt
            } else {
                0.0
            }
        });
        self.bar.set_message(format!(
            "{} tokens stored in {} shards · {rate:.0} tokens/s",
            p.tokens, p.shards
        ));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `1.5 MiB`.
fn human_bytes(bytes: u64) -> String {
    let mut size = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if size < 1024.0 {
            return format!("{size:.1} {unit}");
        }
        size /= 1024.0;
    }
    format!("{size:.1} TiB")
}

/// Runs `hooks merge-manifests DIR`.
pub fn merge(args: &MergeArgs) -> Result<(), CliError> {
    let m = merge_manifests(&args.dir)?;
    print_out(&format!(
        "merged {} slices: {} tokens in {} shards; wrote {}\n",
        crate::store::slice_manifests(&args.dir).map_or(0, |v| v.len()),
        m.tokens,
        m.shards.len(),
        shown(&args.dir.join(crate::store::MANIFEST))
    ))
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Model(m) => CliError::from(*m),
            StoreError::Hook(h) => CliError::from(*h),
            StoreError::NonFinite { site, row } => CliError::NonFinite {
                site,
                note: format!(
                    "in corpus row {row}; the shards written so far are kept (pass \
                     --allow-non-finite to store such values)"
                ),
            },
            StoreError::Overflow {
                site,
                value,
                dtype,
                row,
            } => CliError::NonFinite {
                site,
                note: format!(
                    "in corpus row {row}, {value} overflowed {dtype} (largest finite value {}): \
                     store with --dtype {}, or pass --allow-non-finite to store such values as \
                     infinity; the shards written so far are kept",
                    dtype.max_finite(),
                    dtype.wider()
                ),
            },
            StoreError::Options(_) | StoreError::Corpus { .. } | StoreError::UnknownKey { .. } => {
                CliError::Input(e.to_string())
            }
            StoreError::Mismatch { .. }
            | StoreError::SliceMismatch { .. }
            | StoreError::CorpusChanged { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Store { .. }
            | StoreError::Io { .. } => CliError::Other(e.to_string()),
        }
    }
}
