//! `hooks generate`: sample a continuation with [`sample::generate`] and an
//! empty hook tree, and print the prompt followed by it. Logits that go
//! non-finite stop it (exit 5), naming the first layer and site that did.

use burn::tensor::backend::Backend;

use super::args::{BackendKind, GenerateArgs};
use super::error::CliError;
use super::progress::Spinner;
use super::{OnBackend, input, on_backend, print_out};
use hooks_model::sample::{self, SampleConfig};
use hooks_model::shown;
use hooks_model::{AnyConfig, FamilyJob, FromCheckpoint, LoadOptions, ModelError};

/// Runs `hooks generate`.
pub fn run(backend: BackendKind, args: &GenerateArgs) -> Result<(), CliError> {
    let config = AnyConfig::load(&args.model).map_err(|e| CliError::model_files(&args.model, e))?;
    let batch = input::batch(&args.input, &args.model, &config)?;
    let n_ctx = config.dims().n_ctx;
    if batch.batch_size() != 1 {
        return Err(CliError::Input(format!(
            "generate continues one sequence; got {} --tokens rows",
            batch.batch_size()
        )));
    }
    let prompt = batch.rows()[0].clone();
    let sampling = SampleConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
    };
    check_sampling(&sampling)?;
    // Checked: `-n 18446744073709551615` must not overflow.
    if prompt
        .len()
        .checked_add(sampling.max_new_tokens)
        .is_none_or(|total| total > n_ctx)
    {
        return Err(CliError::Input(format!(
            "a prompt of {} token(s) + {} new token(s) exceeds the context window of {} positions",
            prompt.len(),
            sampling.max_new_tokens,
            n_ctx
        )));
    }
    let new = on_backend(
        backend,
        Generate {
            args,
            config: &config,
            prompt: &prompt,
            sampling: &sampling,
        },
    )?;
    match &args.input.prompt {
        Some(text) => {
            let tokenizer = input::tokenizer(&args.model, &config)?;
            print_out(&format!("{text}{}\n", tokenizer.decode_lossy(&new)))
        }
        None => print_out(&format!(
            "{}\n",
            prompt
                .iter()
                .chain(&new)
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )),
    }
}

/// The checks `sample::generate` makes, done before the weights load.
fn check_sampling(s: &SampleConfig) -> Result<(), CliError> {
    if !(s.temperature >= 0.0 && s.temperature.is_finite()) {
        return Err(CliError::Input(format!(
            "--temperature must be a finite number ≥ 0, not {}",
            s.temperature
        )));
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(CliError::Input(format!(
            "--top-p must be in (0, 1], not {}",
            s.top_p
        )));
    }
    Ok(())
}

struct Generate<'a> {
    args: &'a GenerateArgs,
    config: &'a AnyConfig,
    prompt: &'a [u32],
    sampling: &'a SampleConfig,
}

impl OnBackend for Generate<'_> {
    type Output = Vec<u32>;

    fn run<B: Backend>(self, device: B::Device) -> Result<Vec<u32>, CliError> {
        self.config.run(GenerateOn::<B>(self, device))
    }
}

/// [`Generate`] on backend `B`'s device, with the folder's family.
struct GenerateOn<'a, B: Backend>(Generate<'a>, B::Device);

impl<B: Backend> FamilyJob<B> for GenerateOn<'_, B> {
    type Output = Result<Vec<u32>, CliError>;

    fn run<M: FromCheckpoint<B>>(self, _: &AnyConfig) -> Self::Output {
        let GenerateOn(job, device) = self;
        let dir = &job.args.model;
        let spinner = Spinner::start(format!("loading {}", shown(dir)));
        let options = LoadOptions::new().allow_non_finite(job.args.allow_non_finite);
        let model =
            M::load_with(dir, &device, options).map_err(|e| CliError::model_files(dir, e))?;
        spinner.set_message(format!("generating {} tokens", job.sampling.max_new_tokens));
        match sample::generate(&model, job.prompt, job.sampling, &M::Hooks::default()) {
            Ok(tokens) => Ok(tokens),
            Err(ModelError::NonFinite(site)) => Err(CliError::NonFinite {
                site,
                note: "no tokens were sampled from non-finite logits".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }
}
