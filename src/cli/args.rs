//! The command line, declared with clap's derive.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// Hook sites of GPT-2 and the Llama family (Llama, Qwen2, Mistral): list
/// them, record activations and gradients, attribute, train SAEs, sample.
#[derive(Debug, Parser)]
#[command(
    name = "hooks",
    version,
    about = "Hook sites of GPT-2 and the Llama family (Llama, Qwen2, Mistral): list them, record activations and gradients, attribute, train sparse autoencoders, sample text",
    after_help = "Exit codes: 0 success, 1 other failure (e.g. the output cannot be written), \
                  2 usage, 3 invalid input (site pattern, tokens, grad target, context window), \
                  4 bad model files (including weights holding NaN or infinity, unless \
                  --allow-non-finite), 5 values went non-finite while running (the message \
                  names the first layer and site that did, or the training step; nothing is \
                  written)."
)]
pub struct Cli {
    /// Backend that runs the model: flex (CPU), ndarray (CPU) or cuda
    /// (NVIDIA GPU; needs a build with `--features cuda`).
    #[arg(long, global = true, value_enum, default_value_t = BackendKind::Flex, hide_possible_values = true)]
    pub backend: BackendKind,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The tensor backends the command can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Burn's Flex CPU backend (the default).
    Flex,
    /// Burn's NdArray CPU backend.
    Ndarray,
    /// NVIDIA GPUs through burn-cuda (only in builds with the `cuda` feature).
    Cuda,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every hook site with its shape, in forward order.
    Sites(SitesArgs),
    /// Run a forward pass (and optionally a backward pass) and record the
    /// values at hook sites into one safetensors file; with `--dataset`,
    /// stream a whole corpus into an activation store (a folder of shards).
    Cache(CacheArgs),
    /// Sample a continuation of a prompt.
    Generate(GenerateArgs),
    /// Join the manifests of `hooks cache --dataset … --shard i/n` slices
    /// into the store's `manifest.json`.
    MergeManifests(MergeArgs),
    /// Attribution patching: estimate, for every site, layer, head and
    /// position, how much patching the corrupted run with the clean run's
    /// value would change a metric (two forward passes, one backward pass).
    Atp(AtpArgs),
    /// Train a sparse autoencoder (TopK or ReLU + L1, OpenAI's recipe) on one
    /// site of a model run live through hooks, or on one key of an
    /// activation store, and write it in the project's SAE format.
    TrainSae(super::train_sae::TrainSaeArgs),
}

/// `hooks sites`.
#[derive(Debug, Args)]
pub struct SitesArgs {
    /// Checkpoint folder whose `config.json` fills in the shapes [default: GPT-2 small's config].
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
}

/// The input of `hooks cache`: token rows or a prompt.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct InputArgs {
    /// One row of comma-separated token ids, e.g. `464,3290,318`; repeat for a
    /// batch (rows must have equal lengths).
    #[arg(long, value_name = "IDS")]
    pub tokens: Vec<String>,
    /// Text, tokenized with the folder's tokenizer (its `tokenizer.json`, or
    /// GPT-2's bundled BPE for a GPT-2 folder without one; one row).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
}

/// The input of `hooks cache`: token rows, a prompt, or a whole corpus.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct CacheInputArgs {
    /// One row of comma-separated token ids, e.g. `464,3290,318`; repeat for a
    /// batch (rows must have equal lengths).
    #[arg(long, value_name = "IDS")]
    pub tokens: Vec<String>,
    /// Text, tokenized with the folder's tokenizer (one row).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// A corpus to stream into an activation store (`--out` is then a
    /// folder): `.txt` (one document per line) or `.jsonl` with a `"text"`
    /// field, tokenized with the folder's tokenizer; `.jsonl` with
    /// `"tokens"` arrays; `.npy` of integer ids; any other name is flat
    /// little-endian ids (`--token-dtype`).
    #[arg(long, value_name = "FILE")]
    pub dataset: Option<PathBuf>,
}

impl CacheInputArgs {
    /// The token rows or prompt, as the other commands take them.
    pub fn rows_or_prompt(&self) -> InputArgs {
        InputArgs {
            tokens: self.tokens.clone(),
            prompt: self.prompt.clone(),
        }
    }
}

/// `hooks cache --dataset`: how the corpus is packed and stored (an error
/// without `--dataset`).
#[derive(Debug, Args, Default)]
pub struct DatasetArgs {
    /// Tokens per row: documents are concatenated and cut into rows of this
    /// length (the tokens left at the end are dropped) [default: 64, or the
    /// model's context window if smaller].
    #[arg(long, value_name = "N")]
    pub seq_len: Option<usize>,
    /// Rows per forward pass [default: 8].
    #[arg(long, value_name = "B")]
    pub batch: Option<usize>,
    /// About how many MiB each shard file holds [default: 256].
    #[arg(long, value_name = "M")]
    pub shard_mb: Option<u64>,
    /// Element type of the stored activations [default: f32].
    #[arg(long, value_enum)]
    pub dtype: Option<StoreDtypeArg>,
    /// Only these layers (comma-separated; sites outside the blocks are then not stored).
    #[arg(long, value_name = "L", value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// Process only slice i of n (0-based), e.g. `--shard 2/8` on the third
    /// of eight machines; join the slices with `hooks merge-manifests`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// A token id appended after each document.
    #[arg(long, value_name = "ID")]
    pub separator: Option<u32>,
    /// Width of the ids in a flat binary corpus [default: u16].
    #[arg(long, value_enum)]
    pub token_dtype: Option<TokenDtypeArg>,
}

/// `--dtype` of an activation store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreDtypeArg {
    /// 32-bit floats.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

/// `--token-dtype` of a flat binary corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TokenDtypeArg {
    /// Little-endian u16 (nanoGPT's `.bin`).
    U16,
    /// Little-endian u32.
    U32,
}

/// `hooks merge-manifests`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The store folder holding every slice's `manifest-<i>-of-<n>.json`
    /// and shards; `manifest.json` is written there.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `hooks cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Checkpoint folder (`config.json` + `model.safetensors`, Hugging Face layout).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// What to run the model on.
    #[command(flatten)]
    pub input: CacheInputArgs,
    /// With `--dataset`: the store's folder (created if missing; a rerun of
    /// the same command resumes it). Otherwise: the safetensors file to write (f32 tensors), or `-` for standard
    /// output (not a terminal; the summary then goes to stderr). The file is
    /// written to a temporary file beside it and renamed into place, so a
    /// failed run leaves an existing file as it was and no partial file; a
    /// symbolic link is followed and its target replaced; a path that exists
    /// and is not a regular file (a folder, a device, a named pipe) is
    /// refused. The same inputs give the same bytes.
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
    /// Site paths or globs to record, e.g. `attn.*`, `resid.**`, `logits`
    /// (see `hooks sites`); repeat or separate with commas [default: every site].
    #[arg(long, value_name = "GLOB", num_args = 1.., value_delimiter = ',')]
    pub sites: Vec<String>,
    /// Also record, at each selected site, the gradient of
    /// Σ_b log_softmax(logits[b, last position])[ID], keyed `<key>.grad`
    /// (runs on the autodiff version of the backend).
    #[arg(long, value_name = "ID", conflicts_with = "dataset")]
    pub grad_target: Option<u32>,
    /// Accept weights holding NaN or infinity, and write the file even when
    /// recorded values go non-finite (with a warning on stderr naming the
    /// first layer and site that did). Without it such weights are refused
    /// (exit 4), and a run whose values go non-finite writes nothing and
    /// exits 5, naming the first layer and site that went non-finite (`-inf`
    /// in `attn.qk_logits` is the causal mask and does not count).
    #[arg(long)]
    pub allow_non_finite: bool,
    /// Fail (exit 3, nothing written) if any recording hook never ran: a
    /// selected site the forward pass did not compute or, with
    /// `--grad-target`, one no gradient reached. Without it those keys are
    /// left out of the file with a warning.
    #[arg(long)]
    pub strict: bool,
    /// Corpus options (with `--dataset`).
    #[command(flatten)]
    pub corpus: DatasetArgs,
}

/// `hooks generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Checkpoint folder (`config.json` + `model.safetensors`, Hugging Face layout).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// What to continue: `--prompt TEXT` or one `--tokens` row (for models
    /// whose vocabulary is not GPT-2's).
    #[command(flatten)]
    pub input: InputArgs,
    /// How many tokens to add.
    #[arg(
        short = 'n',
        long = "max-new-tokens",
        value_name = "N",
        default_value_t = 20
    )]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 always picks the most likely token.
    #[arg(long, value_name = "T", default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling: sample among the most likely tokens whose probabilities add up to P.
    #[arg(long, value_name = "P", default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Accept weights holding NaN or infinity. Logits that go non-finite
    /// still stop the generation (exit 5), naming the first layer and site
    /// that went non-finite: sampling from them would print plausible tokens.
    #[arg(long)]
    pub allow_non_finite: bool,
}

/// `hooks atp`.
#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("clean").required(true).args(["clean_tokens", "clean_prompt"])),
    group(ArgGroup::new("corrupt").required(true).args(["corrupt_tokens", "corrupt_prompt"]))
)]
pub struct AtpArgs {
    /// Checkpoint folder (`config.json` + weights, Hugging Face layout).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// One clean row of comma-separated token ids; repeat for a batch.
    #[arg(long, value_name = "IDS")]
    pub clean_tokens: Vec<String>,
    /// The clean text, tokenized with the folder's tokenizer (one row).
    #[arg(long, value_name = "TEXT")]
    pub clean_prompt: Option<String>,
    /// One corrupted row; as many rows as the clean batch, of the same length.
    #[arg(long, value_name = "IDS")]
    pub corrupt_tokens: Vec<String>,
    /// The corrupted text; it must tokenize to as many tokens as the clean one.
    #[arg(long, value_name = "TEXT")]
    pub corrupt_prompt: Option<String>,
    /// What to measure at the last position, averaged over rows:
    /// `logit-diff:A,B` (logit of token A minus logit of token B) or
    /// `logprob:T` (log-probability of token T).
    #[arg(long, value_name = "METRIC")]
    pub metric: String,
    /// Site paths or globs to estimate, e.g. `attn.*`, `resid.**` (see
    /// `hooks sites`); repeat or separate with commas [default: every site].
    #[arg(long, value_name = "GLOB", num_args = 1.., value_delimiter = ',')]
    pub sites: Vec<String>,
    /// Where to write the estimates: `FILE.csv` (columns site, layer, head,
    /// position, estimate; one row per site, layer, head and position) or
    /// `FILE.safetensors` (one f32 tensor per site and layer, keyed
    /// `layers.<i>.<site>` or `<site>`, `[positions, heads]` or
    /// `[positions]`). Written atomically.
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
    /// Plain AtP for `attn.q`, `attn.k` and `attn.qk_logits` too: without
    /// it their effect on the attention probabilities is computed exactly
    /// (AtP*'s QK fix).
    #[arg(long)]
    pub no_qk_fix: bool,
    /// Average the gradient over N points of the path from the corrupted
    /// to the clean embedding (integrated gradients; 1: plain AtP, two
    /// forward passes and one backward pass; N: N + 1 forwards, N backwards).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub ig_steps: u32,
    /// Accept weights holding NaN or infinity.
    #[arg(long)]
    pub allow_non_finite: bool,
}
