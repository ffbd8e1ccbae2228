//! Helpers shared by the model's integration tests: fixture paths, reading
//! `expected.safetensors`, tensors to host vectors, comparisons, recording
//! closures and temporary checkpoint folders.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use hooks_core::{AnyRankHook, Ctx, Site};
use hooks_model::{Gpt2, TokenBatch};
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

/// Runs each generic test `fn name<B: Backend>()` on Flex and on NdArray.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn flex() {
                super::$name::<hooks_model::backend::Cpu>();
            }
            #[test]
            fn ndarray() {
                super::$name::<hooks_model::backend::NdArray>();
            }
        }
    )*};
}

/// Runs each generic test `fn name<B: AutodiffBackend>()` on
/// `Autodiff<NdArray>` and `Autodiff<Flex>`.
#[macro_export]
macro_rules! on_both_autodiff_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn ndarray() {
                super::$name::<burn::backend::Autodiff<hooks_model::backend::NdArray>>();
            }
            #[test]
            fn flex() {
                super::$name::<hooks_model::backend::CpuAutodiff>();
            }
        }
    )*};
}

/// `tests/fixtures/<name>` at the workspace root.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// Loads a fixture checkpoint on `B`'s default device.
pub fn load<B: Backend>(name: &str) -> Gpt2<B> {
    Gpt2::<B>::load(fixture(name), &Default::default())
        .unwrap_or_else(|e| panic!("loading fixture `{name}`: {e}"))
}

/// The values of a tensor of any rank, as f32 on the host.
pub fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 values")
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// A host tensor: shape and row-major values.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn of<B: Backend, const D: usize>(t: Tensor<B, D>) -> Self {
        let shape = t.dims().to_vec();
        HostTensor {
            shape,
            data: host(t),
        }
    }

    pub fn at(&self, idx: &[usize]) -> f32 {
        assert_eq!(idx.len(), self.shape.len(), "index rank");
        let s = strides(&self.shape);
        let mut off = 0;
        for (i, (&x, &n)) in idx.iter().zip(&self.shape).enumerate() {
            assert!(x < n, "index {idx:?} out of shape {:?}", self.shape);
            off += x * s[i];
        }
        self.data[off]
    }
}

/// Asserts `|a - b| <= atol + rtol * max|b|` elementwise, naming the first
/// offending index; non-finite values must match exactly.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], atol: f32, rtol: f32) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let scale = expected
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f32, |m, x| m.max(x.abs()));
    let tol = atol + rtol * scale;
    let mut worst = (0.0f32, 0usize);
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        if !e.is_finite() || !a.is_finite() {
            assert!(
                a == e,
                "{what}: at flat index {i}, got {a} but expected {e}"
            );
            continue;
        }
        let d = (a - e).abs();
        if d > worst.0 {
            worst = (d, i);
        }
    }
    assert!(
        worst.0 <= tol,
        "{what}: max |diff| {} at flat index {} (got {}, expected {}) exceeds {tol} (max|ref| {scale})",
        worst.0,
        worst.1,
        actual[worst.1],
        expected[worst.1]
    );
}

/// The largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Records every call of a site: the layer in the context and the value.
pub type Calls<B, const D: usize> = Arc<Mutex<Vec<(Option<usize>, Tensor<B, D>)>>>;

/// Appends a forward hook to `site` that records `(ctx.layer(), value)`.
pub fn record<B: Backend, const D: usize>(site: &mut Site<B, D>) -> Calls<B, D> {
    let calls: Calls<B, D> = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    site.fwd.append(move |x: Tensor<B, D>, ctx: &Ctx<'_>| {
        c.lock().unwrap().push((ctx.layer(), x.clone()));
        x
    });
    calls
}

/// Site paths and layers, in call order.
pub type SiteLayers = Vec<(String, Option<usize>)>;

/// A rank-generic hook recording the site path and layer of every call
/// (for `append_all` / `append_all_grad`, which name the site in the context).
#[derive(Clone, Default)]
pub struct CallLog(pub Arc<Mutex<SiteLayers>>);

impl CallLog {
    /// The calls so far.
    pub fn calls(&self) -> SiteLayers {
        self.0.lock().unwrap().clone()
    }
}

impl<B: Backend> AnyRankHook<B> for CallLog {
    fn call<const D: usize>(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        let site = ctx.site().expect("append_all names the site").to_string();
        self.0.lock().unwrap().push((site, ctx.layer()));
        x
    }
}

/// The recorded value at `layer` (the only call there), as a host tensor.
pub fn at_layer<B: Backend, const D: usize>(
    calls: &Calls<B, D>,
    layer: Option<usize>,
) -> HostTensor {
    HostTensor::of(tensor_at(calls, layer))
}

/// The recorded value at `layer` (the only call there).
pub fn tensor_at<B: Backend, const D: usize>(
    calls: &Calls<B, D>,
    layer: Option<usize>,
) -> Tensor<B, D> {
    let calls = calls.lock().unwrap();
    let found: Vec<_> = calls.iter().filter(|(l, _)| *l == layer).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one call at layer {layer:?}, got {}",
        found.len()
    );
    found[0].1.clone()
}

/// The `expected.safetensors` of a fixture.
pub struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    pub fn of(fixture_name: &str) -> Self {
        let path = fixture(fixture_name).join("expected.safetensors");
        Expected {
            bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("expected.safetensors parses")
    }

    /// An F32 entry.
    pub fn f32(&self, key: &str) -> HostTensor {
        let st = self.view();
        let t = st.tensor(key).unwrap_or_else(|_| panic!("no key {key}"));
        assert_eq!(t.dtype(), Dtype::F32, "{key}");
        HostTensor {
            shape: t.shape().to_vec(),
            data: t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        }
    }

    /// An I64 entry, with its shape.
    pub fn i64(&self, key: &str) -> (Vec<usize>, Vec<i64>) {
        let st = self.view();
        let t = st.tensor(key).unwrap_or_else(|_| panic!("no key {key}"));
        assert_eq!(t.dtype(), Dtype::I64, "{key}");
        (
            t.shape().to_vec(),
            t.data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        )
    }

    /// The `tokens` entry as a batch.
    pub fn tokens(&self) -> TokenBatch {
        let (shape, ids) = self.i64("tokens");
        let rows = ids
            .chunks(shape[1])
            .map(|r| r.iter().map(|&t| t as u32).collect())
            .collect();
        TokenBatch::new(rows).expect("fixture tokens make a batch")
    }
}

/// A fresh, empty folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "hooks-model-test-{}-{tag}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// A temp copy of a fixture's `config.json` and `model.safetensors`.
    pub fn copy_of(fixture_name: &str) -> Self {
        let dir = TempDir::new(fixture_name);
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(fixture(fixture_name).join(f), dir.0.join(f)).expect("copy fixture");
        }
        dir
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
