//! Safetensors files read back in tests through the safetensors crate (not
//! the code under test): the one place that decodes their little-endian
//! values.

use std::collections::HashMap;
use std::path::Path;

use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

/// Little-endian f32 values.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Little-endian f64 values.
pub fn f64s(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Little-endian i64 values.
pub fn i64s(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// A safetensors file read into memory. Every accessor panics with the key
/// (and the file's path where known) when it is missing or of another dtype.
pub struct Tensors {
    bytes: Vec<u8>,
    name: String,
}

impl Tensors {
    /// The file at `path`.
    pub fn read(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = Tensors {
            bytes,
            name: path.display().to_string(),
        };
        file.parsed();
        file
    }

    /// The parsed file (the crate's view, borrowing the bytes).
    pub fn parsed(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", self.name))
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.parsed().names().into_iter().cloned().collect();
        keys.sort();
        keys
    }

    fn view<T>(&self, key: &str, f: impl FnOnce(safetensors::tensor::TensorView<'_>) -> T) -> T {
        let parsed = self.parsed();
        let view = parsed
            .tensor(key)
            .unwrap_or_else(|_| panic!("no `{key}` in {}", self.name));
        f(view)
    }

    /// The shape of `key`.
    pub fn shape(&self, key: &str) -> Vec<usize> {
        self.view(key, |t| t.shape().to_vec())
    }

    /// The dtype of `key`.
    pub fn dtype(&self, key: &str) -> Dtype {
        self.view(key, |t| t.dtype())
    }

    fn decoded<T>(&self, key: &str, dtype: Dtype, decode: fn(&[u8]) -> Vec<T>) -> Vec<T> {
        self.view(key, |t| {
            assert_eq!(t.dtype(), dtype, "`{key}` in {}", self.name);
            decode(t.data())
        })
    }

    /// The values of an F32 key.
    pub fn f32(&self, key: &str) -> Vec<f32> {
        self.decoded(key, Dtype::F32, f32s)
    }

    /// The values of an F64 key.
    pub fn f64(&self, key: &str) -> Vec<f64> {
        self.decoded(key, Dtype::F64, f64s)
    }

    /// The values of an I64 key.
    pub fn i64(&self, key: &str) -> Vec<i64> {
        self.decoded(key, Dtype::I64, i64s)
    }

    /// The values of an F32, F64 or I64 key, as f64.
    pub fn numbers(&self, key: &str) -> Vec<f64> {
        match self.dtype(key) {
            Dtype::F32 => self.f32(key).into_iter().map(f64::from).collect(),
            Dtype::F64 => self.f64(key),
            Dtype::I64 => self.i64(key).into_iter().map(|v| v as f64).collect(),
            other => panic!("`{key}` in {}: unexpected dtype {other:?}", self.name),
        }
    }

    /// The header's `__metadata__` (empty when it has none).
    pub fn metadata(&self) -> HashMap<String, String> {
        let (_, meta) = SafeTensors::read_metadata(&self.bytes)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", self.name));
        meta.metadata().clone().unwrap_or_default()
    }
}
