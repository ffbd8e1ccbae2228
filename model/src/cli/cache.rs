//! `hooks cache`: record the values (and optionally the gradients) at hook
//! sites into one safetensors file of f32 tensors.
//!
//! Keys are the [`Recorder`]'s: `layers.<i>.<site>` inside the blocks and
//! `<site>` outside; gradients are `<key>.grad`. A [`Record`] hook goes on the
//! `fwd` stage of every selected site and, with `--grad-target`, a second one
//! (on the inner backend) on its `bwd` stage.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::TensorData;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use hooks_core::{HookTree, Record, Recorder, SiteInfo};

use super::args::{BackendKind, CacheArgs};
use super::error::CliError;
use super::progress::Spinner;
use super::sites::record_keys;
use super::{OnAutodiff, OnBackend, input, on_autodiff, on_backend, print_out};
use crate::backend::Cpu;
use crate::experiments::write_safetensors_with_metadata;
use crate::{Gpt2, TokenBatch, TransformerHooks, checkpoint};

/// Everything `hooks cache` needs, checked before any weights are loaded.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Checkpoint folder.
    pub model: PathBuf,
    /// The tokens.
    pub batch: TokenBatch,
    /// The selected sites.
    pub sites: Vec<SiteInfo>,
    /// The recorder keys the forward pass should produce, in order.
    pub keys: Vec<String>,
    /// Token whose log-probability is differentiated, if any.
    pub grad_target: Option<u32>,
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

/// Runs `hooks cache`.
pub fn run(backend: BackendKind, args: &CacheArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let tree = TransformerHooks::<Cpu>::default();
    let sites = if args.sites.is_empty() {
        tree.sites()
    } else {
        let patterns: Vec<&str> = args.sites.iter().map(String::as_str).collect();
        tree.sites_matching(&patterns)?
    };
    let config =
        checkpoint::load_config(&args.model).map_err(|e| CliError::model_files(&args.model, e))?;
    let batch = input::batch(&args.input, &config)?;
    if let Some(t) = args.grad_target
        && t as usize >= config.vocab_size
    {
        return Err(CliError::Input(format!(
            "--grad-target {t} is outside the model's vocabulary (size {}); it must be below {}",
            config.vocab_size, config.vocab_size
        )));
    }
    check_out_dir(&args.out)?;
    let plan = Plan {
        model: args.model.clone(),
        keys: record_keys(&sites, config.n_layer),
        batch,
        sites,
        grad_target: args.grad_target,
    };

    let recorded = match plan.grad_target {
        None => on_backend(backend, Forward(&plan))?,
        Some(target) => on_autodiff(backend, WithGrad(&plan, target))?,
    };
    if !recorded.missing_values.is_empty() {
        eprintln!(
            "warning: {} site value(s) were never computed and are absent from the file: {}",
            recorded.missing_values.len(),
            recorded.missing_values.join(", ")
        );
    }
    if !recorded.missing_grads.is_empty() {
        eprintln!(
            "warning: no gradient reached {} site value(s) (not on a path to the loss); absent from the file: {}",
            recorded.missing_grads.len(),
            recorded.missing_grads.join(", ")
        );
    }

    let metadata = metadata(args, &plan, backend);
    let size = write(&args.out, &recorded.tensors, metadata)?;
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
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    if let (Some(loss), Some(t)) = (recorded.loss, plan.grad_target) {
        summary.push_str(&format!(
            "loss = Σ_b log_softmax(logits[b, last])[{t}] = {loss}\n"
        ));
    }
    print_out(&summary)
}

/// Fails early, before any work, when the output's folder does not exist.
fn check_out_dir(out: &Path) -> Result<(), CliError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(CliError::Other(format!(
            "cannot write {}: the folder {} does not exist",
            out.display(),
            dir.display()
        )));
    }
    if out.is_dir() {
        return Err(CliError::Other(format!(
            "cannot write {}: it is a folder",
            out.display()
        )));
    }
    Ok(())
}

/// Loads the model with a spinner; load errors are checkpoint errors.
fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
    spinner: &Spinner,
) -> Result<Gpt2<B>, CliError> {
    spinner.set_message(format!("loading {}", dir.display()));
    Gpt2::load(dir, device).map_err(|e| CliError::model_files(dir, e))
}

/// The forward pass only.
struct Forward<'p>(&'p Plan);

impl OnBackend for Forward<'_> {
    type Output = Recorded;

    fn run<B: Backend>(self, device: B::Device) -> Result<Recorded, CliError> {
        let plan = self.0;
        let spinner = Spinner::start("");
        let model = load::<B>(&plan.model, &device, &spinner)?;
        let values = Recorder::<B>::new();
        let mut hooks = TransformerHooks::<B>::default();
        for site in &plan.sites {
            hooks.append_to_path(&format!("{}.fwd", site.path), Record::into(&values))?;
        }
        spinner.set_message("running the forward pass");
        model.forward(&plan.batch, &hooks)?;
        spinner.set_message("reading the recorded values");
        let mut out = Recorded::default();
        out.missing_values = out.take(&values, &plan.keys, "");
        Ok(out)
    }
}

/// The forward pass, then the backward pass from the target's log-probability.
struct WithGrad<'p>(&'p Plan, u32);

impl OnAutodiff for WithGrad<'_> {
    type Output = Recorded;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Recorded, CliError> {
        let (plan, target) = (self.0, self.1 as usize);
        let spinner = Spinner::start("");
        let model = load::<B>(&plan.model, &device, &spinner)?;
        let values = Recorder::<B>::new();
        let grads = Recorder::<B::InnerBackend>::new();
        let mut hooks = TransformerHooks::<B>::default();
        for site in &plan.sites {
            hooks.append_to_path(&format!("{}.fwd", site.path), Record::into(&values))?;
            hooks.append_grad_to_path(&format!("{}.bwd", site.path), Record::into(&grads))?;
        }
        spinner.set_message("running the forward pass");
        let logits = model.forward(&plan.batch, &hooks)?;
        let [b, s, v] = logits.dims();
        let last = logits.slice([0..b, s - 1..s, 0..v]);
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
        out.missing_values = out.take(&values, &plan.keys, "");
        out.missing_grads = out.take(&grads, &plan.keys, ".grad");
        Ok(out)
    }
}

/// The file's `__metadata__`: how it was made.
fn metadata(args: &CacheArgs, plan: &Plan, backend: BackendKind) -> HashMap<String, String> {
    let mut m = HashMap::new();
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
    m
}

/// Writes the tensors to `out` and returns the file's size.
fn write(
    out: &Path,
    tensors: &[(String, TensorData)],
    metadata: HashMap<String, String>,
) -> Result<u64, CliError> {
    let fail = |why: String| CliError::Other(format!("cannot write {}: {why}", out.display()));
    write_safetensors_with_metadata(tensors, Some(metadata), out)
        .map_err(|e| fail(e.to_string()))?;
    std::fs::metadata(out)
        .map(|m| m.len())
        .map_err(|e| fail(e.to_string()))
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
