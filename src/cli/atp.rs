//! `hooks atp`: attribution patching from the command line, on any model
//! family. Runs [`attribution_patching`] on the autodiff version of the
//! backend with a metric read at the last position (averaged over rows)
//! and writes one estimate per site, layer, head and position as CSV, or
//! one tensor per site and layer as safetensors.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use hooks_core::path::{explain_unmatched, glob_matches};
use hooks_core::{HookNode, HookTree};

use super::args::{AtpArgs, BackendKind, InputArgs};
use super::error::CliError;
use super::progress::Spinner;
use super::{OnAutodiff, clobber, input, on_autodiff, print_out};
use crate::experiments::{AtpOptions, AtpTable, attribution_patching};
use hooks_model::backend::Cpu;
use hooks_model::files::{resolve_output, write_atomic};
use hooks_model::weights::write_safetensors_to;
use hooks_model::{
    AnyConfig, FamilyJob, FromCheckpoint, LoadOptions, ModelError, TokenBatch, shown,
};

/// The metric, read at the last position and averaged over rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// `logits[A] − logits[B]`.
    LogitDiff(u32, u32),
    /// `log_softmax(logits)[T]`.
    LogProb(u32),
}

impl Metric {
    /// Parses `logit-diff:A,B` or `logprob:T`.
    pub fn parse(text: &str) -> Result<Self, CliError> {
        let usage = || {
            CliError::Input(format!(
                "--metric `{text}` is not `logit-diff:A,B` or `logprob:T` (A, B, T token ids)"
            ))
        };
        let id = |s: &str| s.trim().parse::<u32>().map_err(|_| usage());
        match text.split_once(':') {
            Some(("logit-diff", ids)) => {
                let (a, b) = ids.split_once(',').ok_or_else(usage)?;
                Ok(Metric::LogitDiff(id(a)?, id(b)?))
            }
            Some(("logprob", t)) => Ok(Metric::LogProb(id(t)?)),
            _ => Err(usage()),
        }
    }

    fn tokens(&self) -> Vec<u32> {
        match *self {
            Metric::LogitDiff(a, b) => vec![a, b],
            Metric::LogProb(t) => vec![t],
        }
    }

    /// The metric of logits `[B,S,V]`, as a `[1]` tensor.
    fn eval<B: burn::tensor::backend::Backend>(&self, logits: Tensor<B, 3>) -> Tensor<B, 1> {
        let [b, s, v] = logits.dims();
        let last = logits.slice([0..b, s - 1..s, 0..v]);
        let pick = |t: Tensor<B, 3>, id: u32| {
            let id = id as usize;
            t.slice([0..b, 0..1, id..id + 1])
        };
        let per_row = match *self {
            Metric::LogitDiff(a, c) => pick(last.clone(), a) - pick(last, c),
            Metric::LogProb(t) => pick(log_softmax(last, 2), t),
        };
        per_row.mean().reshape([1])
    }

    fn describe(&self) -> String {
        match *self {
            Metric::LogitDiff(a, b) => {
                format!("mean_b logits[b, last, {a}] - logits[b, last, {b}]")
            }
            Metric::LogProb(t) => format!("mean_b log_softmax(logits[b, last])[{t}]"),
        }
    }
}

/// The output format, from `--out`'s extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Csv,
    Safetensors,
}

fn format_of(out: &Path) -> Result<Format, CliError> {
    match out.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => Ok(Format::Csv),
        Some(e) if e.eq_ignore_ascii_case("safetensors") => Ok(Format::Safetensors),
        _ => Err(CliError::Input(format!(
            "--out `{}` must end in .csv or .safetensors (the format is read from the extension)",
            shown(out)
        ))),
    }
}

/// An output path error, in words.
fn out_error(out: &Path, e: ModelError) -> CliError {
    match e {
        ModelError::Io { source, .. } => {
            CliError::Other(format!("cannot write `{}`: {source}", shown(out)))
        }
        e @ ModelError::NotAFile { .. } => {
            CliError::Other(format!("{e}; give the path of a regular file"))
        }
        other => CliError::Other(format!("cannot write `{}`: {other}", shown(out))),
    }
}

/// Checks every site pattern against the family's tree (before loading).
fn check_sites(config: &AnyConfig, patterns: &[String]) -> Result<(), CliError> {
    struct Check<'a>(&'a [String]);
    impl FamilyJob<Cpu> for Check<'_> {
        type Output = Result<(), CliError>;
        fn run<M: FromCheckpoint<Cpu>>(self, _: &AnyConfig) -> Self::Output {
            let all = M::Hooks::default().sites();
            for p in self.0 {
                if !all.iter().any(|s| glob_matches(p, &s.path)) {
                    let why = explain_unmatched(&M::Hooks::schema(), p);
                    return Err(hooks_core::HookError::from(why).into());
                }
            }
            Ok(())
        }
    }
    config.run::<Cpu, _>(Check(patterns))
}

/// Everything the run needs, checked before the weights are loaded.
struct Plan {
    model: PathBuf,
    config: AnyConfig,
    clean: TokenBatch,
    corrupted: TokenBatch,
    metric: Metric,
    sites: Vec<String>,
    options: AtpOptions,
    load: LoadOptions,
    out: PathBuf,
}

/// Runs `hooks atp`.
pub fn run(backend: BackendKind, args: &AtpArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let metric = Metric::parse(&args.metric)?;
    let format = format_of(&args.out)?;
    let config = AnyConfig::load(&args.model).map_err(|e| CliError::model_files(&args.model, e))?;
    check_sites(&config, &args.sites)?;
    let vocab = config.dims().vocab_size;
    if let Some(t) = metric.tokens().into_iter().find(|&t| t as usize >= vocab) {
        return Err(CliError::Input(format!(
            "--metric token {t} is outside the model's vocabulary (size {vocab})"
        )));
    }
    let clean = input::batch(
        &InputArgs {
            tokens: args.clean_tokens.clone(),
            prompt: args.clean_prompt.clone(),
        },
        &args.model,
        &config,
    )?;
    let corrupted = input::batch(
        &InputArgs {
            tokens: args.corrupt_tokens.clone(),
            prompt: args.corrupt_prompt.clone(),
        },
        &args.model,
        &config,
    )?;
    if clean.batch_size() != corrupted.batch_size() || clean.len() != corrupted.len() {
        return Err(CliError::Input(format!(
            "the clean input is {} row(s) of {} tokens and the corrupted one {} row(s) of {}: \
             they must have the same shape",
            clean.batch_size(),
            clean.len(),
            corrupted.batch_size(),
            corrupted.len()
        )));
    }
    resolve_output(&args.out).map_err(|e| out_error(&args.out, e))?;
    clobber::refuse_inputs(&args.out, &clobber::model_inputs(&args.model))?;
    let plan = Plan {
        model: args.model.clone(),
        config,
        clean,
        corrupted,
        metric,
        sites: args.sites.clone(),
        options: AtpOptions {
            qk_fix: !args.no_qk_fix,
            ig_steps: args.ig_steps as usize,
        },
        load: LoadOptions::new().allow_non_finite(args.allow_non_finite),
        out: args.out.clone(),
    };
    let table = on_autodiff(backend, Job(&plan))?;
    if let Some(what) = non_finite(&table) {
        eprintln!("warning: {what}; written as they are (--allow-non-finite)");
    }

    match format {
        Format::Csv => write_atomic(&args.out, |w| w.write_all(csv(&table).as_bytes()))
            .map_err(|e| out_error(&args.out, e))?,
        Format::Safetensors => {
            let meta = metadata(args, &plan, &table, backend);
            write_atomic(&args.out, |w| {
                write_safetensors_to(w, &table.tensors(), &meta).map(|_| ())
            })
            .map_err(|e| out_error(&args.out, e))?
        }
    }
    let mut summary = format!(
        "wrote {} estimates ({} site × layer) to {} in {:.1} s\n",
        table.rows.len(),
        table.by_site_layer().len(),
        shown(&args.out),
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        summary,
        "metric {}: clean {}, corrupted {}",
        plan.metric.describe(),
        table.clean_metric,
        table.corrupted_metric
    );
    let mut heads = table.by_head();
    heads.sort_by(|a, b| b.estimate.abs().total_cmp(&a.estimate.abs()));
    summary.push_str("largest estimates (site, layer, head; positions summed):\n");
    for r in heads.iter().take(5) {
        let _ = writeln!(
            summary,
            "  {:<32} {:>5} {:>4} {:>10.4}",
            r.site,
            r.layer.map_or("-".into(), |l| l.to_string()),
            r.head.map_or("-".into(), |h| h.to_string()),
            r.estimate
        );
    }
    print_out(&summary)
}

/// The table as CSV: `site,layer,head,position,estimate`, empty cells for
/// no layer / no head.
pub fn csv(table: &AtpTable) -> String {
    let mut out = String::from("site,layer,head,position,estimate\n");
    let opt = |x: Option<usize>| x.map_or(String::new(), |x| x.to_string());
    for r in &table.rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{}",
            r.site,
            opt(r.layer),
            opt(r.head),
            opt(r.position),
            r.estimate
        );
    }
    out
}

fn metadata(
    args: &AtpArgs,
    plan: &Plan,
    table: &AtpTable,
    backend: BackendKind,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("producer".into(), "hooks atp".into());
    m.insert("model".into(), args.model.display().to_string());
    m.insert("backend".into(), format!("{backend:?}").to_lowercase());
    m.insert("clean_tokens".into(), format!("{:?}", plan.clean.rows()));
    m.insert(
        "corrupt_tokens".into(),
        format!("{:?}", plan.corrupted.rows()),
    );
    m.insert("metric".into(), plan.metric.describe());
    m.insert("clean_metric".into(), table.clean_metric.to_string());
    m.insert(
        "corrupted_metric".into(),
        table.corrupted_metric.to_string(),
    );
    m.insert("qk_fix".into(), plan.options.qk_fix.to_string());
    m.insert("layout".into(), "[positions, heads] or [positions]".into());
    if !args.sites.is_empty() {
        m.insert("sites".into(), args.sites.join(","));
    }
    m
}

/// The run on the autodiff backend, with the folder's family.
struct Job<'p>(&'p Plan);

impl OnAutodiff for Job<'_> {
    type Output = AtpTable;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<AtpTable, CliError> {
        self.0.config.run(OnDevice::<B>(self.0, device))
    }
}

struct OnDevice<'p, B: AutodiffBackend>(&'p Plan, B::Device);

impl<B: AutodiffBackend> FamilyJob<B> for OnDevice<'_, B> {
    type Output = Result<AtpTable, CliError>;

    fn run<M: FromCheckpoint<B>>(self, _: &AnyConfig) -> Self::Output {
        let OnDevice(plan, device) = self;
        let spinner = Spinner::start("");
        spinner.set_message(format!("loading {}", shown(&plan.model)));
        let model = M::load_with(&plan.model, &device, plan.load)
            .map_err(|e| CliError::model_files(&plan.model, e))?;
        spinner.set_message("two forward passes and one backward pass");
        let sites: Vec<&str> = plan.sites.iter().map(String::as_str).collect();
        let metric = plan.metric;
        let table = attribution_patching(
            &model,
            &plan.clean,
            &plan.corrupted,
            &sites,
            |l| metric.eval(l),
            plan.options,
        )?;
        match non_finite(&table) {
            Some(what) if !plan.load.allow_non_finite => {
                let note = format!(
                    "nothing was written to `{}` (pass --allow-non-finite to write the file anyway)",
                    shown(&plan.out)
                );
                // Name the first site that went non-finite, where a forward
                // pass has one (the gradients alone may have).
                let hooks = M::Hooks::default();
                for batch in [&plan.clean, &plan.corrupted] {
                    if let Some(site) = model.first_non_finite(batch, &hooks)? {
                        let site = Box::new(site);
                        return Err(CliError::NonFinite { site, note });
                    }
                }
                Err(CliError::Diverged(format!("{what}; {note}")))
            }
            _ => Ok(table),
        }
    }
}

/// What went non-finite in `table`, in words: a metric or the first
/// estimate that did.
fn non_finite(table: &AtpTable) -> Option<String> {
    for (run, value) in [
        ("clean", table.clean_metric),
        ("corrupted", table.corrupted_metric),
    ] {
        if !value.is_finite() {
            return Some(format!("the metric is {value} on the {run} run"));
        }
    }
    let row = table.rows.iter().find(|r| !r.estimate.is_finite())?;
    let mut cell = format!("`{}`", row.site);
    for (name, index) in [
        ("layer", row.layer),
        ("head", row.head),
        ("position", row.position),
    ] {
        if let Some(i) = index {
            let _ = write!(cell, " {name} {i}");
        }
    }
    Some(format!(
        "the estimates went non-finite (first: {cell}, {})",
        row.estimate
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics() {
        assert_eq!(
            Metric::parse("logit-diff:5, 7").unwrap(),
            Metric::LogitDiff(5, 7)
        );
        assert_eq!(Metric::parse("logprob:9").unwrap(), Metric::LogProb(9));
        for bad in ["logit-diff:5", "logprob:x", "loss:3", "logprob"] {
            let err = Metric::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("logit-diff:A,B"), "{err}");
        }
    }
}
