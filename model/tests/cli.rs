//! The `hooks` binary end to end: site listing, caching activations and
//! gradients against the Hugging Face fixtures, sampling, and the exit code
//! of every kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

use burn::tensor::backend::Backend;
use hooks_model::backend::{Cpu, NdArray};

use crate::common::{Expected, HostTensor};

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tiny");

fn hooks(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hooks"))
        .args(args)
        .output()
        .expect("the hooks binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing the output when it differs.
fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// A fresh, empty folder under the system temp dir; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hooks-cli-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A safetensors file read into memory: name → (shape, f32 values).
struct Tensors(Vec<u8>);

impl Tensors {
    fn read(path: impl AsRef<Path>) -> Self {
        Tensors(std::fs::read(path).unwrap())
    }

    fn parsed(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.0).unwrap()
    }

    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.parsed().names().into_iter().cloned().collect();
        keys.sort();
        keys
    }

    fn shape(&self, key: &str) -> Vec<usize> {
        self.parsed()
            .tensor(key)
            .unwrap_or_else(|_| panic!("no `{key}`"))
            .shape()
            .to_vec()
    }

    fn f32(&self, key: &str) -> Vec<f32> {
        let t = self
            .parsed()
            .tensor(key)
            .unwrap_or_else(|_| panic!("no `{key}`"));
        assert_eq!(t.dtype(), Dtype::F32, "{key}");
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

/// The tiny fixture's reference values, and its two token rows as `--tokens` values.
fn fixture_rows() -> (Expected, Vec<String>) {
    let expected = Expected::of("tiny");
    let (shape, ids) = expected.i64("tokens");
    let [b, s] = shape[..] else {
        panic!("tokens are [B,S]")
    };
    let rows = (0..b)
        .map(|r| {
            ids[r * s..(r + 1) * s]
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    (expected, rows)
}

fn cache_args<'a>(rows: &'a [String], out: &'a str) -> Vec<&'a str> {
    let mut args = vec!["cache", "--model", TINY, "--out", out];
    for r in rows {
        args.extend(["--tokens", r.as_str()]);
    }
    args
}

impl Tensors {
    /// A cached entry as a host tensor.
    fn host(&self, key: &str) -> HostTensor {
        HostTensor {
            shape: self.shape(key),
            data: self.f32(key),
        }
    }
}

/// Asserts a cached entry is as near the truth as the fixture's HF value
/// ([`crate::common::assert_near_truth_with`]; gradients allow the accuracy of
/// the `recip` of the backend `B` the tool ran on, as in `gradients.rs`).
fn assert_near<B: Backend>(expected: &Expected, cached: &Tensors, ours: &str, theirs: &str) {
    let approx = if ours.ends_with(".grad") {
        crate::common::recip_rel_error::<B>()
    } else {
        0.0
    };
    expected.assert_near_with(
        &format!("cli: {ours} vs HF {theirs}"),
        theirs,
        &cached.host(ours),
        approx,
    );
}

#[test]
fn sites_of_gpt2_small() {
    let o = hooks(&["sites"]);
    assert_code(&o, 0);
    let text = stdout(&o);
    let line = |site: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(site))
            .unwrap_or_else(|| panic!("no line for `{site}` in:\n{text}"))
            .to_string()
    };
    assert!(line("attn.qk_probs").contains("[B, S, K, 12]"), "{text}");
    assert!(line("attn.q").contains("[B, S, 12, 64]"), "{text}");
    assert!(line("mlp.pre_act").contains("[B, S, 3072]"), "{text}");
    assert!(line("logits").contains("[B, S, 50257]"), "{text}");
    assert!(
        line("resid.torso.ln_mlp.scale").contains("[B, S, 1]"),
        "{text}"
    );
    // Per-layer sites say which layers; outside ones do not.
    assert!(line("resid.torso.post_mlp").contains("0-11"), "{text}");
    assert!(!line("resid.post_emb").contains("0-11"), "{text}");
    // Forward order: embedding first, logits last.
    let first = text
        .lines()
        .position(|l| l.starts_with("resid.post_emb"))
        .unwrap();
    let last = text.lines().position(|l| l.starts_with("logits")).unwrap();
    assert!(first < last);
    assert!(text.contains("27 sites"), "{text}");
}

#[test]
fn sites_of_a_checkpoint() {
    let o = hooks(&["sites", "--model", TINY]);
    assert_code(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("D 32"), "{text}");
    assert!(text.contains("[B, S, 32]"), "{text}");
    assert!(text.contains("[B, S, K, 4]"), "{text}");
    assert!(text.contains("[B, S, 97]"), "{text}");
    assert!(text.contains("0-1 "), "{text}");
}

#[test]
fn cache_records_every_site_and_matches_the_reference() {
    let tmp = TempDir::new("all");
    let out = tmp.path("acts.safetensors");
    let (expected, rows) = fixture_rows();
    let o = hooks(&cache_args(&rows, &out));
    assert_code(&o, 0);
    assert!(stdout(&o).contains("48 tensors"), "{}", stdout(&o));
    assert!(stdout(&o).contains(&out), "{}", stdout(&o));

    let cached = Tensors::read(&out);
    let keys = cached.keys();
    // 21 sites per layer × 2 layers + 6 outside the blocks.
    assert_eq!(keys.len(), 48, "{keys:?}");
    assert!(keys.iter().all(|k| !k.ends_with(".grad")), "{keys:?}");
    for (key, shape) in [
        ("resid.post_emb", vec![2, 12, 32]),
        ("layers.0.attn.qk_probs", vec![2, 12, 12, 4]),
        ("layers.1.attn.qk_softmax_denominator", vec![2, 12, 1, 4]),
        ("layers.0.attn.v_out", vec![2, 12, 4, 8]),
        ("layers.1.resid.torso.ln_mlp.scale", vec![2, 12, 1]),
        ("layers.1.mlp.post_act", vec![2, 12, 128]),
        ("resid.ln_f.post_scale", vec![2, 12, 32]),
        ("logits", vec![2, 12, 97]),
    ] {
        assert_eq!(cached.shape(key), shape, "{key}");
    }
    assert_near::<Cpu>(&expected, &cached, "logits", "logits");
    for layer in 0..2 {
        assert_near::<Cpu>(
            &expected,
            &cached,
            &format!("layers.{layer}.attn.qk_probs"),
            &format!("attn_probs.{layer}"),
        );
    }
}

#[test]
fn cache_restricts_to_selected_sites() {
    let tmp = TempDir::new("attn");
    let out = tmp.path("attn.safetensors");
    let (_, rows) = fixture_rows();
    let mut args = cache_args(&rows, &out);
    args.extend(["--sites", "attn.*"]);
    let o = hooks(&args);
    assert_code(&o, 0);
    let keys = Tensors::read(&out).keys();
    assert_eq!(keys.len(), 14, "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| k.starts_with("layers.") && k.contains(".attn.")),
        "{keys:?}"
    );

    // Several patterns, comma-separated or repeated.
    let out2 = tmp.path("two.safetensors");
    let mut args = cache_args(&rows, &out2);
    args.extend(["--sites", "logits,resid.post_emb", "--sites", "mlp.pre_act"]);
    let o = hooks(&args);
    assert_code(&o, 0);
    assert_eq!(
        Tensors::read(&out2).keys(),
        [
            "layers.0.mlp.pre_act",
            "layers.1.mlp.pre_act",
            "logits",
            "resid.post_emb"
        ]
    );
}

#[test]
fn cache_records_gradients() {
    let tmp = TempDir::new("grad");
    let out = tmp.path("grads.safetensors");
    let (expected, rows) = fixture_rows();
    assert_eq!(expected.i64("grad_target").1, [5]);
    let mut args = cache_args(&rows, &out);
    args.extend(["--grad-target", "5"]);
    let o = hooks(&args);
    assert_code(&o, 0);
    assert!(
        stderr(&o).is_empty() || !stderr(&o).contains("absent"),
        "{}",
        stderr(&o)
    );

    let cached = Tensors::read(&out);
    let keys = cached.keys();
    assert_eq!(keys.len(), 96, "{keys:?}");
    // Every recorded value has its gradient, with the same key plus `.grad`.
    for key in keys.iter().filter(|k| !k.ends_with(".grad")) {
        let grad = format!("{key}.grad");
        assert_eq!(cached.shape(&grad), cached.shape(key), "{grad}");
    }
    let close = |ours: &str, theirs: &str| assert_near::<Cpu>(&expected, &cached, ours, theirs);
    close("logits.grad", "logits.grad");
    close("logits", "logits");
    close("resid.post_emb.grad", "hidden.0.grad");
    close("resid.post_ln_f.grad", "ln_f.grad");
    close("layers.1.attn.qk_probs.grad", "attn_probs.1.grad");
    close("layers.0.mlp.pre_act.grad", "pre_act.0.grad");
    close("layers.1.resid.torso.delta_mlp.grad", "delta_mlp.1.grad");
    assert!(stdout(&o).contains("loss"), "{}", stdout(&o));
    let printed: f32 = stdout(&o)
        .lines()
        .find_map(|l| {
            l.strip_prefix("loss = ")
                .and_then(|r| r.rsplit(" = ").next())
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no loss line in {}", stdout(&o)));
    // Printed in full (shortest round-trip f32), so compared like any value.
    expected.assert_near(
        "cli: printed loss",
        "loss",
        &HostTensor {
            shape: vec![1],
            data: vec![printed],
        },
    );
}

#[test]
fn ndarray_backend_gives_the_same_values() {
    let tmp = TempDir::new("ndarray");
    let out = tmp.path("nd.safetensors");
    let (expected, rows) = fixture_rows();
    let mut args = vec!["--backend", "ndarray"];
    args.extend(cache_args(&rows, &out));
    args.extend(["--sites", "logits", "--grad-target", "5"]);
    let o = hooks(&args);
    assert_code(&o, 0);
    let cached = Tensors::read(&out);
    assert_eq!(cached.keys(), ["logits", "logits.grad"]);
    assert_near::<NdArray>(&expected, &cached, "logits", "logits");
    assert_near::<NdArray>(&expected, &cached, "logits.grad", "logits.grad");
}

#[test]
fn unknown_site_suggests_the_right_one() {
    let tmp = TempDir::new("typo");
    let out = tmp.path("x.safetensors");
    let o = hooks(&[
        "cache",
        "--model",
        TINY,
        "--tokens",
        "1,2",
        "--out",
        &out,
        "--sites",
        "attn.qk_prbs",
    ]);
    assert_code(&o, 3);
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("did you mean") && err.contains("qk_probs"),
        "{err}"
    );
    assert!(!Path::new(&out).exists());
}

#[test]
fn bad_tokens_are_invalid_input() {
    let tmp = TempDir::new("tokens");
    let out = tmp.path("x.safetensors");
    let run = |extra: &[&str]| {
        let mut args = vec!["cache", "--model", TINY, "--out", &out];
        args.extend(extra);
        hooks(&args)
    };
    let o = run(&["--tokens", "1,1000,2"]);
    assert_code(&o, 3);
    assert!(stderr(&o).contains("1000"), "{}", stderr(&o));

    let o = run(&["--tokens", "1,2,3", "--tokens", "4,5"]);
    assert_code(&o, 3);
    assert!(stderr(&o).contains("equal lengths"), "{}", stderr(&o));

    let o = run(&["--tokens", "1,two"]);
    assert_code(&o, 3);
    assert!(stderr(&o).contains("`two`"), "{}", stderr(&o));

    // "hello" is GPT-2 token 31373, beyond the tiny model's 97 ids.
    let o = run(&["--prompt", "hello"]);
    assert_code(&o, 3);
    assert!(stderr(&o).contains("31373"), "{}", stderr(&o));

    let o = run(&["--tokens", "1,2", "--grad-target", "97"]);
    assert_code(&o, 3);
    assert!(stderr(&o).contains("97"), "{}", stderr(&o));

    let too_long = (0..17).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let o = run(&["--tokens", &too_long]);
    assert_code(&o, 3);
    assert!(!Path::new(&out).exists());
}

#[test]
fn bad_model_files_exit_4() {
    let tmp = TempDir::new("model");
    let out = tmp.path("x.safetensors");
    let missing = tmp.path("no-such-model");
    let o = hooks(&[
        "cache", "--model", &missing, "--tokens", "1,2", "--out", &out,
    ]);
    assert_code(&o, 4);
    assert!(stderr(&o).contains("no-such-model"), "{}", stderr(&o));
    assert_code(&hooks(&["sites", "--model", &missing]), 4);
    assert_code(
        &hooks(&["generate", "--model", &missing, "--prompt", "a"]),
        4,
    );

    // A truncated weights file.
    let broken = tmp.0.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(Path::new(TINY).join(f), broken.join(f)).unwrap();
    }
    let weights = std::fs::OpenOptions::new()
        .write(true)
        .open(broken.join("model.safetensors"))
        .unwrap();
    let len = weights.metadata().unwrap().len();
    weights.set_len(len / 2).unwrap();
    drop(weights);
    let o = hooks(&[
        "cache",
        "--model",
        broken.to_str().unwrap(),
        "--tokens",
        "1,2",
        "--out",
        &out,
    ]);
    assert_code(&o, 4);
    assert!(stderr(&o).contains("model.safetensors"), "{}", stderr(&o));

    // A malformed config.
    std::fs::write(broken.join("config.json"), "{ not json").unwrap();
    let o = hooks(&["sites", "--model", broken.to_str().unwrap()]);
    assert_code(&o, 4);
    assert!(stderr(&o).contains("config.json"), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_2() {
    assert_code(
        &hooks(&["cache", "--model", TINY, "--out", "x.safetensors"]),
        2,
    );
    assert_code(
        &hooks(&[
            "cache", "--model", TINY, "--tokens", "1", "--prompt", "a", "--out", "x",
        ]),
        2,
    );
    assert_code(&hooks(&["--backend", "tpu", "sites"]), 2);
    assert_code(&hooks(&["frobnicate"]), 2);
    assert_code(&hooks(&["--help"]), 0);
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_needs_the_feature() {
    let o = hooks(&[
        "--backend",
        "cuda",
        "generate",
        "--model",
        TINY,
        "--prompt",
        "a",
        "-n",
        "1",
    ]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("--features cuda"), "{}", stderr(&o));
}

#[test]
fn generate_is_deterministic() {
    // "a" is GPT-2 token 64, inside the tiny model's vocabulary.
    let args = [
        "generate",
        "--model",
        TINY,
        "--prompt",
        "a",
        "-n",
        "3",
        "--seed",
        "1",
        "--temperature",
        "1",
    ];
    let first = hooks(&args);
    assert_code(&first, 0);
    let text = stdout(&first);
    assert!(
        text.starts_with('a') && text.trim_end().chars().count() > 1,
        "{text:?}"
    );
    assert_eq!(stdout(&hooks(&args)), text);

    // Greedy decoding ignores the seed.
    let greedy = |seed: &str| {
        stdout(&hooks(&[
            "generate", "--model", TINY, "--prompt", "a", "-n", "3", "--seed", seed,
        ]))
    };
    assert_eq!(greedy("1"), greedy("2"));

    let o = hooks(&["generate", "--model", TINY, "--prompt", "a", "-n", "16"]);
    assert_code(&o, 3);
    assert!(stderr(&o).contains("context window"), "{}", stderr(&o));
    let o = hooks(&["generate", "--model", TINY, "--prompt", "a", "--top-p", "0"]);
    assert_code(&o, 3);
}
