//! `hooks cache`: record the values (and optionally the gradients) at hook
//! sites into one safetensors file of f32 tensors.
//!
//! Keys are the [`Recorder`]'s: `layers.<i>.<site>` inside the blocks and
//! `<site>` outside; gradients are `<key>.grad`. A [`Record`] hook goes on the
//! `fwd` stage of every selected site and, with `--grad-target`, a second one
//! (on the inner backend) on its `bwd` stage.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use hooks_core::path::{explain_unmatched, glob_matches};
use hooks_core::{HookCalls, HookError, HookNode, HookTree, Record, Recorder, SiteInfo};

use super::args::{BackendKind, CacheArgs};
use super::clobber;
use super::error::{CliError, escape_lines, write_error};
use super::progress::Spinner;
use super::sites::record_keys;
use super::{OnAutodiff, OnBackend, input, on_autodiff, on_backend, print_out};
use hooks_model::backend::Cpu;
use hooks_model::files::{resolve_output, write_atomic};
use hooks_model::finite::{first_fault, has_non_finite};
use hooks_model::shown;
use hooks_model::weights::write_safetensors_to;
use hooks_model::{
    AnyConfig, FamilyJob, FromCheckpoint, HookedModel, LoadOptions, NonFiniteSite, TokenBatch,
};

/// Everything `hooks cache` needs, checked before any weights are loaded.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Checkpoint folder.
    pub model: PathBuf,
    /// Its configuration (and so its family).
    pub config: AnyConfig,
    /// The tokens.
    pub batch: TokenBatch,
    /// The selected sites.
    pub sites: Vec<SiteInfo>,
    /// Token whose log-probability is differentiated, if any.
    pub grad_target: Option<u32>,
    /// How to load the weights.
    pub load: LoadOptions,
}

/// What a run recorded.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Activations, then gradients, on the host.
    pub tensors: Vec<(String, TensorData)>,
    /// Expected activation keys nothing was recorded for.
    pub missing_values: Vec<String>,
    /// Expected gradient keys no gradient reached.
    pub missing_grads: Vec<String>,
    /// The differentiated loss, when there was one.
    pub loss: Option<f32>,
    /// Where values first went non-finite, if they did.
    pub non_finite: Option<NonFiniteSite>,
    /// The recording hooks that never ran.
    pub never_fired: Vec<HookCalls>,
}

impl Recorded {
    /// Moves `recorder`'s tensors to the host under `keys` plus `suffix`,
    /// noting expected keys that are absent; unexpected keys come last.
    fn take<B: Backend>(
        &mut self,
        recorder: &Recorder<B>,
        keys: &[String],
        suffix: &str,
    ) -> Vec<String> {
        let mut entries: HashMap<String, _> = recorder.entries().into_iter().collect();
        let order = recorder.keys();
        recorder.clear();
        let mut missing = Vec::new();
        for key in keys {
            match entries.remove(key) {
                Some(t) => self.tensors.push((format!("{key}{suffix}"), t.to_data())),
                None => missing.push(format!("{key}{suffix}")),
            }
        }
        for key in order {
            if let Some(t) = entries.remove(&key) {
                self.tensors.push((format!("{key}{suffix}"), t.to_data()));
            }
        }
        missing
    }
}

/// Where the file goes: a path (written atomically) or standard output.
#[derive(Clone, Debug)]
enum Output {
    Stdout,
    File(PathBuf),
}

impl Output {
    /// Checks `--out` before any work: `-` must not be a terminal; a path
    /// must be a regular file (or a link to one) or a new file in an
    /// existing folder.
    fn check(out: &Path) -> Result<Self, CliError> {
        if out == Path::new("-") {
            if std::io::stdout().is_terminal() {
                return Err(CliError::Input(
                    "--out - writes binary safetensors data to standard output, which is a \
                     terminal: redirect it (`--out - > cache.safetensors`, `| python ...`) or give \
                     a file path"
                        .into(),
                ));
            }
            return Ok(Output::Stdout);
        }
        resolve_output(out).map_err(|e| write_error(out, e))?;
        Ok(Output::File(out.to_path_buf()))
    }

    /// Writes the file; returns its size.
    fn write(
        &self,
        tensors: &[(String, TensorData)],
        metadata: &BTreeMap<String, String>,
    ) -> Result<u64, CliError> {
        match self {
            Output::Stdout => {
                let failed = |e| CliError::Other(format!("cannot write to standard output: {e}"));
                let mut stdout = std::io::stdout().lock();
                let size = write_safetensors_to(&mut stdout, tensors, metadata)
                    .map_err(|e| failed(e.to_string()))?;
                stdout.flush().map_err(|e| failed(e.to_string()))?;
                Ok(size)
            }
            Output::File(path) => {
                write_atomic(path, |w| write_safetensors_to(w, tensors, metadata))
                    .map_err(|e| write_error(path, e))
            }
        }
    }

    fn name(&self) -> String {
        match self {
            Output::Stdout => "standard output".into(),
            Output::File(path) => shown(path),
        }
    }
}

/// The sites `patterns` select in `config`'s family's tree (every site
/// when there are none); a pattern that selects nothing is an error saying
/// why.
fn select_sites(config: &AnyConfig, patterns: &[String]) -> Result<Vec<SiteInfo>, CliError> {
    struct Select<'a>(&'a [String]);
    impl FamilyJob<Cpu> for Select<'_> {
        type Output = Result<Vec<SiteInfo>, CliError>;
        fn run<M: FromCheckpoint<Cpu>>(self, _: &AnyConfig) -> Self::Output {
            let tree = M::Hooks::default();
            let all = tree.sites();
            if self.0.is_empty() {
                return Ok(all);
            }
            for p in self.0 {
                if !all.iter().any(|s| glob_matches(p, &s.path)) {
                    let why = explain_unmatched(&M::Hooks::schema(), p);
                    return Err(HookError::from(why).into());
                }
            }
            let patterns: Vec<&str> = self.0.iter().map(String::as_str).collect();
            Ok(tree.sites_matching(&patterns)?)
        }
    }
    config.run::<Cpu, _>(Select(patterns))
}

/// Runs `hooks cache`.
pub fn run(backend: BackendKind, args: &CacheArgs) -> Result<(), CliError> {
    let started = Instant::now();
    super::dataset::stray_corpus_options(args)?;
    let config = AnyConfig::load(&args.model).map_err(|e| CliError::model_files(&args.model, e))?;
    let sites = select_sites(&config, &args.sites)?;
    let batch = input::batch(&args.input.rows_or_prompt(), &args.model, &config)?;
    let vocab_size = config.dims().vocab_size;
    if let Some(t) = args.grad_target
        && t as usize >= vocab_size
    {
        return Err(CliError::Input(format!(
            "--grad-target {t} is outside the model's vocabulary (size {vocab_size}); it must be \
             below {vocab_size}"
        )));
    }
    let out = Output::check(&args.out)?;
    clobber::refuse_inputs(&args.out, &clobber::model_inputs(&args.model))?;
    let plan = Plan {
        model: args.model.clone(),
        config,
        batch,
        sites,
        grad_target: args.grad_target,
        load: LoadOptions::new().allow_non_finite(args.allow_non_finite),
    };

    let recorded = match plan.grad_target {
        None => on_backend(backend, Forward(&plan))?,
        Some(target) => on_autodiff(backend, WithGrad(&plan, target))?,
    };
    if args.strict && !recorded.never_fired.is_empty() {
        return Err(HookError::NeverFired {
            hooks: recorded.never_fired,
        }
        .into());
    }
    if !recorded.missing_values.is_empty() {
        warn(&format!(
            "{} site value(s) were never computed and are absent from the file: {}",
            recorded.missing_values.len(),
            recorded.missing_values.join(", ")
        ));
    }
    if !recorded.missing_grads.is_empty() {
        warn(&format!(
            "no gradient reached {} site value(s) (not on a path to the loss); absent from the file: {}",
            recorded.missing_grads.len(),
            recorded.missing_grads.join(", ")
        ));
    }
    if let Some(site) = recorded.non_finite.clone() {
        if !args.allow_non_finite {
            return Err(CliError::NonFinite {
                site: Box::new(site),
                note: format!(
                    "nothing was written to {} (pass --allow-non-finite to write the file anyway)",
                    out.name()
                ),
            });
        }
        warn(&format!(
            "{site}; writing the file anyway (--allow-non-finite)"
        ));
    }

    let metadata = metadata(args, &plan, backend);
    let size = out.write(&recorded.tensors, &metadata)?;
    let grads = recorded
        .tensors
        .iter()
        .filter(|(key, _)| key.ends_with(".grad"))
        .count();
    let mut summary = format!(
        "wrote {} tensors ({} activations, {grads} gradients; {}) to {} in {:.1} s\n",
        recorded.tensors.len(),
        recorded.tensors.len() - grads,
        human_size(size),
        out.name(),
        started.elapsed().as_secs_f64()
    );
    if let (Some(loss), Some(t)) = (recorded.loss, plan.grad_target) {
        summary.push_str(&format!(
            "loss = Σ_b log_softmax(logits[b, last])[{t}] = {loss}\n"
        ));
    }
    match out {
        // Standard output holds the data: the summary goes to stderr.
        Output::Stdout => {
            eprint!("{summary}");
            Ok(())
        }
        Output::File(_) => print_out(&summary),
    }
}

/// The hooks of `hooks` that have not run (strict mode's list).
fn never_fired<T: HookTree>(hooks: &T) -> Vec<HookCalls> {
    match hooks.require_all_fired() {
        Err(HookError::NeverFired { hooks }) => hooks,
        _ => Vec::new(),
    }
}

/// `warning: <message>` on stderr, control characters escaped.
fn warn(message: &str) {
    eprintln!("warning: {}", escape_lines(message));
}

/// Loads the model with a spinner; load errors are checkpoint errors.
fn load<B: Backend, M: FromCheckpoint<B>>(
    plan: &Plan,
    device: &B::Device,
    spinner: &Spinner,
) -> Result<M, CliError> {
    let dir = &plan.model;
    spinner.set_message(format!("loading {}", shown(dir)));
    M::load_with(dir, device, plan.load).map_err(|e| CliError::model_files(dir, e))
}

/// `layers.3.attn.q` → (Some(3), `attn.q`); `logits` → (None, `logits`).
fn split_key(key: &str) -> (Option<usize>, &str) {
    if let Some(rest) = key.strip_prefix("layers.")
        && let Some((layer, site)) = rest.split_once('.')
        && let Ok(layer) = layer.parse()
    {
        return (Some(layer), site);
    }
    (None, key)
}

/// The first of `tensors` (in the order given) holding a non-finite value.
fn first_recorded_fault<'a>(
    tensors: impl IntoIterator<Item = &'a (String, TensorData)>,
    during: &str,
    suffix: &str,
) -> Option<NonFiniteSite> {
    tensors.into_iter().find_map(|(key, data)| {
        let key = key.strip_suffix(suffix).unwrap_or(key);
        let (layer, site) = split_key(key);
        first_fault(site, data.iter::<f32>()).map(|(index, value)| NonFiniteSite {
            during: during.to_string(),
            site: site.to_string(),
            layer,
            index,
            value,
            shape: data.shape.to_vec(),
        })
    })
}

/// Whether the forward pass went non-finite (in a recorded value or the
/// logits) and, if so, the first site that did: found by a second, checking
/// pass over every site ([`HookedModel::first_non_finite`]), run only then.
fn forward_fault<B: Backend, M: HookedModel<B>>(
    model: &M,
    batch: &TokenBatch,
    recorded: &[(String, TensorData)],
    logits: &Tensor<B, 3>,
) -> Result<Option<NonFiniteSite>, CliError> {
    let in_recorded = first_recorded_fault(recorded, "forward pass", "");
    if in_recorded.is_none() && !has_non_finite(logits) {
        return Ok(None);
    }
    let first = model.first_non_finite(batch, &M::Hooks::default())?;
    Ok(first.or(in_recorded))
}

/// The forward pass only.
struct Forward<'p>(&'p Plan);

impl OnBackend for Forward<'_> {
    type Output = Recorded;

    fn run<B: Backend>(self, device: B::Device) -> Result<Recorded, CliError> {
        self.0.config.run(OnDevice::<_, B>(self, device))
    }
}

/// A job on backend `B`'s device, run with the folder's family.
struct OnDevice<J, B: Backend>(J, B::Device);

impl<B: Backend> FamilyJob<B> for OnDevice<Forward<'_>, B> {
    type Output = Result<Recorded, CliError>;

    fn run<M: FromCheckpoint<B>>(self, _: &AnyConfig) -> Self::Output {
        let OnDevice(Forward(plan), device) = self;
        let spinner = Spinner::start("");
        let model = load::<B, M>(plan, &device, &spinner)?;
        // The layers come from the loaded model: its weights bound them.
        let keys = record_keys(
            &plan.sites,
            &M::Hooks::default().sites(),
            model.dims().n_layer,
        );
        let values = Recorder::<B>::new();
        let mut hooks = M::Hooks::default();
        for site in &plan.sites {
            hooks.append_to_path(&format!("{}.fwd", site.path), Record::into(&values))?;
        }
        spinner.set_message("running the forward pass");
        let logits = model.forward(&plan.batch, &hooks)?;
        spinner.set_message("reading the recorded values");
        let mut out = Recorded::default();
        out.missing_values = out.take(&values, &keys, "");
        out.non_finite = forward_fault(&model, &plan.batch, &out.tensors, &logits)?;
        out.never_fired = never_fired(&hooks);
        Ok(out)
    }
}

/// The forward pass, then the backward pass from the target's log-probability.
struct WithGrad<'p>(&'p Plan, u32);

impl OnAutodiff for WithGrad<'_> {
    type Output = Recorded;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Recorded, CliError> {
        self.0.config.run(OnDevice::<_, B>(self, device))
    }
}

impl<B: AutodiffBackend> FamilyJob<B> for OnDevice<WithGrad<'_>, B> {
    type Output = Result<Recorded, CliError>;

    fn run<M: FromCheckpoint<B>>(self, _: &AnyConfig) -> Self::Output {
        let OnDevice(WithGrad(plan, target), device) = self;
        let target = target as usize;
        let spinner = Spinner::start("");
        let model = load::<B, M>(plan, &device, &spinner)?;
        let keys = record_keys(
            &plan.sites,
            &M::Hooks::default().sites(),
            model.dims().n_layer,
        );
        let values = Recorder::<B>::new();
        let grads = Recorder::<B::InnerBackend>::new();
        let mut hooks = M::Hooks::default();
        for site in &plan.sites {
            hooks.append_to_path(&format!("{}.fwd", site.path), Record::into(&values))?;
            hooks.append_grad_to_path(&format!("{}.bwd", site.path), Record::into(&grads))?;
        }
        spinner.set_message("running the forward pass");
        let logits = model.forward(&plan.batch, &hooks)?;
        let [b, s, v] = logits.dims();
        let last = logits.clone().slice([0..b, s - 1..s, 0..v]);
        let loss = log_softmax(last, 2)
            .slice([0..b, 0..1, target..target + 1])
            .sum();
        let loss_value = loss
            .to_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .ok()
            .and_then(|v| v.first().copied());
        spinner.set_message("running the backward pass");
        let _gradients = loss.backward();
        spinner.set_message("reading the recorded values");
        let mut out = Recorded {
            loss: loss_value,
            ..Recorded::default()
        };
        out.missing_values = out.take(&values, &keys, "");
        let forward = out.tensors.len();
        out.missing_grads = out.take(&grads, &keys, ".grad");
        out.non_finite = match forward_fault(&model, &plan.batch, &out.tensors[..forward], &logits)?
        {
            Some(site) => Some(site),
            // Gradients flow backward: the first to go non-finite is the
            // last in forward order.
            None => first_recorded_fault(
                out.tensors[forward..].iter().rev(),
                "backward pass (gradients)",
                ".grad",
            ),
        };
        out.never_fired = never_fired(&hooks);
        Ok(out)
    }
}

/// The file's `__metadata__`: how it was made (sorted, so the same inputs
/// give the same bytes).
fn metadata(args: &CacheArgs, plan: &Plan, backend: BackendKind) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("producer".into(), "hooks cache".into());
    m.insert("model".into(), args.model.display().to_string());
    m.insert("backend".into(), format!("{backend:?}").to_lowercase());
    m.insert("tokens".into(), format!("{:?}", plan.batch.rows()));
    if let Some(prompt) = &args.input.prompt {
        m.insert("prompt".into(), prompt.clone());
    }
    if !args.sites.is_empty() {
        m.insert("sites".into(), args.sites.join(","));
    }
    if let Some(t) = plan.grad_target {
        m.insert("grad_target".into(), t.to_string());
        m.insert(
            "loss".into(),
            format!("sum_b log_softmax(logits[b, -1])[{t}]"),
        );
    }
    if args.allow_non_finite {
        m.insert("allow_non_finite".into(), "true".into());
    }
    m
}

/// `1.5 MiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut size = bytes as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(10), "10 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024), "3.0 MiB");
    }
}
