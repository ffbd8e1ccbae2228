//! The `hooks` command line tool.
//!
//! ```text
//! hooks sites    [--model DIR]
//! hooks cache    --model DIR (--tokens IDS [--tokens IDS …] | --prompt TEXT) --out FILE|-
//!                [--sites GLOB …] [--grad-target ID] [--allow-non-finite]
//! hooks cache    --model DIR --dataset FILE --sites GLOB … --out DIR [--seq-len N] [--batch B]
//!                [--shard-mb M] [--dtype f32|f16|bf16] [--layers L,…] [--shard I/N]
//! hooks merge-manifests DIR
//! hooks generate --model DIR --prompt TEXT [-n N] [--temperature T] [--top-p P] [--seed S]
//!                [--allow-non-finite]
//! hooks atp      --model DIR (--clean-tokens IDS … | --clean-prompt TEXT)
//!                (--corrupt-tokens IDS … | --corrupt-prompt TEXT)
//!                --metric logit-diff:A,B|logprob:T [--sites GLOB …] [--no-qk-fix]
//!                --out FILE.csv|FILE.safetensors
//! hooks train-sae (--model DIR --site SITE [--layer L] [--tokens-file FILE] | --store DIR --key KEY)
//!                --latents L (--k K | --l1 C) --out FILE [--steps N] [--batch T] [--lr LR] [--seed S]
//! global:        --backend flex|ndarray|cuda
//! ```
//!
//! Every command's work is generic over the backend (`B: Backend`, and
//! `B: AutodiffBackend` for gradients); [`OnBackend`] and [`OnAutodiff`]
//! pick the concrete one from `--backend`. Errors print as `error: <message>`
//! and exit with the codes of [`exit`].

mod args;
mod atp;
mod cache;
mod clobber;
mod dataset;
mod error;
mod generate;
mod input;
mod memory;
mod progress;
mod sites;
mod train_sae;

use std::io::Write;
use std::process::ExitCode;

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Parser;

pub use args::{
    AtpArgs, BackendKind, CacheArgs, CacheInputArgs, Cli, Command, DatasetArgs, GenerateArgs,
    InputArgs, MergeArgs, SitesArgs,
};
use error::escape_lines;
pub use error::{CliError, exit};
pub use sites::{Dim, SiteSpec, record_keys, site_specs};

use hooks_model::backend::{Cpu, NdArray};

/// Parses the process arguments, runs the command, prints any error as
/// `error: <message>` on stderr and returns the exit code.
///
/// Every message that may echo user input (paths, site patterns, token
/// values, clap's usage errors) has its control characters escaped.
pub fn main() -> ExitCode {
    ignore_file_size_signal();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if e.use_stderr() {
                // Plain text, escaped: clap echoes the offending argument.
                eprint!("{}", escape_lines(&e.render().to_string()));
            } else {
                // --help, --version.
                let _ = e.print();
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(exit::USAGE));
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", escape_lines(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

/// A write past the file-size limit (`ulimit -f`) then fails with an error
/// the tool reports (and cleans up after) instead of killing it with
/// SIGXFSZ, which would leave a partial temporary file behind.
fn ignore_file_size_signal() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: setting a signal's disposition to SIG_IGN at start-up, before
    // any other thread exists, has no memory-safety conditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Runs a parsed command line.
pub fn run(cli: &Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Sites(args) => sites::run(args),
        Command::Cache(args) if args.input.dataset.is_some() => dataset::run(cli.backend, args),
        Command::Cache(args) => cache::run(cli.backend, args),
        Command::MergeManifests(args) => dataset::merge(args),
        Command::Generate(args) => generate::run(cli.backend, args),
        Command::Atp(args) => atp::run(cli.backend, args),
        Command::TrainSae(args) => train_sae::run(cli.backend, args),
    }
}

/// Work that runs on any backend.
pub trait OnBackend {
    /// What the work returns.
    type Output;
    /// Runs on backend `B`'s `device`.
    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output, CliError>;
}

/// Work that needs gradients.
pub trait OnAutodiff {
    /// What the work returns.
    type Output;
    /// Runs on autodiff backend `B`'s `device`.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output, CliError>;
}

/// Runs `job` on the backend `kind` names.
pub fn on_backend<J: OnBackend>(kind: BackendKind, job: J) -> Result<J::Output, CliError> {
    match kind {
        BackendKind::Flex => job.run::<Cpu>(Default::default()),
        BackendKind::Ndarray => job.run::<NdArray>(Default::default()),
        BackendKind::Cuda => cuda::on_backend(job),
    }
}

/// Runs `job` on the autodiff version of the backend `kind` names.
pub fn on_autodiff<J: OnAutodiff>(kind: BackendKind, job: J) -> Result<J::Output, CliError> {
    match kind {
        BackendKind::Flex => job.run::<Autodiff<Cpu>>(Default::default()),
        BackendKind::Ndarray => job.run::<Autodiff<NdArray>>(Default::default()),
        BackendKind::Cuda => cuda::on_autodiff(job),
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use burn::backend::Autodiff;

    use super::{CliError, OnAutodiff, OnBackend};
    use hooks_model::backend::{Cuda, CudaDevice, cuda_device};

    fn device() -> Result<CudaDevice, CliError> {
        Ok(cuda_device()?)
    }

    pub fn on_backend<J: OnBackend>(job: J) -> Result<J::Output, CliError> {
        job.run::<Cuda>(device()?)
    }

    pub fn on_autodiff<J: OnAutodiff>(job: J) -> Result<J::Output, CliError> {
        job.run::<Autodiff<Cuda>>(device()?)
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::{CliError, OnAutodiff, OnBackend};

    fn not_built() -> CliError {
        CliError::Other(
            "this `hooks` was built without CUDA support; rebuild it with `--features cuda` \
             (e.g. `cargo build --release --bin hooks --features cuda`)"
                .into(),
        )
    }

    pub fn on_backend<J: OnBackend>(_: J) -> Result<J::Output, CliError> {
        Err(not_built())
    }

    pub fn on_autodiff<J: OnAutodiff>(_: J) -> Result<J::Output, CliError> {
        Err(not_built())
    }
}

/// Writes `text` to stdout; a closed pipe (`hooks sites | head`) is not an error.
fn print_out(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Other(format!("cannot write to stdout: {e}"))),
    }
}
