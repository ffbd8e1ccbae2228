//! Peak memory while loading a checkpoint, next to the size of the f32 model.
//!
//! ```text
//! cargo run --release --example load_peak_rss                       # GPT-2 small, BF16, 4 shards
//! cargo run --release --example load_peak_rss -- --dtype f32 --shards 1
//! cargo run --release --example load_peak_rss -- DIR [--retain]     # any checkpoint folder, any family
//! ```
//!
//! Without a folder it writes a GPT-2-small-shaped checkpoint (12 layers,
//! width 768, vocabulary 50257, 1024 positions; random weights, seeded; the
//! unembedding tied to `wte`, as in OpenAI's GPT-2) in the given dtype and
//! number of shards (Hugging Face's layout and index) to a temporary
//! folder, tensor by tensor, then loads it twice, each time in a fresh
//! process (this program run on the folder), so the writing does not count:
//! with glibc's default allocator settings, and after
//! [`burn_hooks::model::alloc::retain_freed_memory`] (`--retain`), as the
//! `hooks` tool does. Each load reports the peak resident set size (`VmHWM`
//! of `/proc/self/status`, Linux), the one before loading, and the f32
//! model's size (its parameters × 4 bytes: `wte`, `wpe`, the blocks, `ln_f`
//! and the unembedding, which the model keeps as a parameter of its own).

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn::module::Module;
use burn_hooks::model::backend::Cpu;
use burn_hooks::model::checkpoint::{CONFIG_FILE, INDEX_FILE, expected_weights};
use burn_hooks::model::weights::{self, TensorSpec};
use burn_hooks::model::{AnyConfig, Gpt2, Gpt2Config, Llama, alloc};
use safetensors::tensor::Dtype;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (mut dir, mut retain, mut dtype, mut shards) = (None, false, Dtype::BF16, 4usize);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--retain" => retain = true,
            "--dtype" => {
                dtype = match args.next().as_deref() {
                    Some("f32") => Dtype::F32,
                    Some("bf16") => Dtype::BF16,
                    Some("f16") => Dtype::F16,
                    other => return Err(format!("--dtype f32|bf16|f16, not {other:?}").into()),
                }
            }
            "--shards" => shards = args.next().ok_or("--shards N")?.parse()?,
            _ if !arg.starts_with("--") && dir.is_none() => dir = Some(PathBuf::from(arg)),
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    match dir {
        Some(dir) => measure(&dir, retain),
        None => {
            let dir = std::env::temp_dir().join(format!("load-peak-rss-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let result = write_and_measure(&dir, dtype, shards.max(1));
            std::fs::remove_dir_all(&dir)?;
            result
        }
    }
}

fn write_and_measure(dir: &Path, dtype: Dtype, shards: usize) -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let bytes = write_checkpoint(dir, &Gpt2Config::gpt2_small(), dtype, shards)?;
    println!(
        "wrote GPT-2 small, {dtype:?}, {shards} shard(s), {:.1} MB, to {} in {:.1} s",
        bytes as f64 / 1e6,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe()?;
    for retain in [false, true] {
        let mut cmd = Command::new(&exe);
        cmd.arg(dir);
        if retain {
            cmd.arg("--retain");
        }
        let status = cmd.status()?;
        if !status.success() {
            return Err(format!("the measuring run failed: {status}").into());
        }
    }
    Ok(())
}

/// Loads `dir` on Flex and prints the peak RSS against the f32 model size.
fn measure(dir: &Path, retain: bool) -> Result<(), Box<dyn Error>> {
    if retain && !alloc::retain_freed_memory() {
        println!("(retain_freed_memory: not glibc, nothing changed)");
    }
    let before = status_kb("VmHWM").ok_or("no VmHWM in /proc/self/status (not Linux?)")?;
    let started = Instant::now();
    // Any family: the folder's `model_type` says which.
    let params = match AnyConfig::load(dir)? {
        AnyConfig::Gpt2(_) => Gpt2::<Cpu>::load(dir, &Default::default())?.num_params(),
        AnyConfig::Llama(_) => Llama::<Cpu>::load(dir, &Default::default())?.num_params(),
    };
    let secs = started.elapsed().as_secs_f64();
    let peak = status_kb("VmHWM").ok_or("no VmHWM")?;
    let rss = status_kb("VmRSS").ok_or("no VmRSS")?;
    let f32_bytes = params as f64 * 4.0;
    let mb = |kb: u64| kb as f64 * 1024.0 / 1e6;
    println!(
        "load ({}): {:.2} s; f32 model {:.1} MB ({:.1} M parameters); peak RSS {:.1} MB = {:.2} × \
         the f32 model ({:.1} MB before loading; {:.2} × counting only the growth); RSS after \
         loading {:.1} MB",
        if retain {
            "retain_freed_memory"
        } else {
            "default malloc"
        },
        secs,
        f32_bytes / 1e6,
        params as f64 / 1e6,
        mb(peak),
        mb(peak) * 1e6 / f32_bytes,
        mb(before),
        mb(peak - before) * 1e6 / f32_bytes,
        mb(rss)
    );
    Ok(())
}

/// A `kB` field of `/proc/self/status`.
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A seeded generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Normal(mean, std), by Box–Muller.
    fn normal(&mut self, mean: f64, std: f64) -> f32 {
        let (a, b) = (self.uniform().max(1e-300), self.uniform());
        (mean + std * (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
    }
}

/// Writes `config.json` and the weights of a GPT-2 with `config` in
/// `dtype` as `shards` files (one `model.safetensors` when 1), tensor by
/// tensor in chunks; returns the bytes of weights written.
fn write_checkpoint(
    dir: &Path,
    config: &Gpt2Config,
    dtype: Dtype,
    shards: usize,
) -> Result<u64, Box<dyn Error>> {
    std::fs::write(dir.join(CONFIG_FILE), config.to_json())?;
    let mut tensors: Vec<TensorSpec> = expected_weights(config)
        .into_iter()
        .map(|(name, shape)| TensorSpec { name, dtype, shape })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    // Split in name order into `shards` runs of about equal bytes.
    let size = |t: &TensorSpec| t.shape.iter().product::<usize>() * dtype.size();
    let total: usize = tensors.iter().map(size).sum();
    let mut runs: Vec<Vec<TensorSpec>> = vec![Vec::new()];
    let mut filled = 0;
    for t in tensors {
        let run_bytes: usize = runs.last().unwrap().iter().map(size).sum();
        if run_bytes > 0 && filled >= total * runs.len() / shards && runs.len() < shards {
            runs.push(Vec::new());
        }
        filled += size(&t);
        runs.last_mut().unwrap().push(t);
    }
    let n = runs.len();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    // The index, by hand (names are plain ASCII): `"key": "file"` entries.
    let mut weight_map: Vec<String> = Vec::new();
    let mut written = 0;
    for (i, run) in runs.iter().enumerate() {
        let file = if shards == 1 {
            weights::SINGLE_FILE.to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", i + 1)
        };
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(&file))?);
        written += weights::write_safetensors_with(
            &mut out,
            run,
            &Default::default(),
            &mut |j: usize, w: &mut dyn Write| {
                let t = &run[j];
                let (mean, std) = if t.name.ends_with(".bias") {
                    (0.0, 0.01)
                } else if t.shape.len() == 1 {
                    (1.0, 0.05) // norm weights
                } else {
                    (0.0, 0.02)
                };
                let mut left: usize = t.shape.iter().product();
                let mut values = Vec::with_capacity(1 << 16);
                let mut bytes = Vec::with_capacity(4 << 16);
                while left > 0 {
                    let m = left.min(1 << 16);
                    values.clear();
                    values.extend((0..m).map(|_| rng.normal(mean, std)));
                    bytes.clear();
                    weights::encode_f32(dtype, &values, &mut bytes);
                    w.write_all(&bytes)?;
                    left -= m;
                }
                Ok(())
            },
        )?;
        out.flush()?;
        for t in run {
            weight_map.push(format!("    \"{}\": \"{file}\"", t.name));
        }
    }
    if shards > 1 {
        let index = format!(
            "{{\n  \"metadata\": {{\"total_size\": {total}}},\n  \"weight_map\": {{\n{}\n  }}\n}}\n",
            weight_map.join(",\n")
        );
        std::fs::write(dir.join(INDEX_FILE), index)?;
    }
    Ok(written)
}
