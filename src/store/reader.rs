//! Reading a store back: its manifest, and each key's values shard by shard
//! as f32 (so a consumer such as SAE training holds one shard at a time).

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::StoreError;
use super::integrity::{check_shard, read_shard};
use super::manifest::{MANIFEST, Manifest, StoredKey};
use hooks_model::weights::{describe_safetensors_error, to_f32};

/// An activation store on disk (a folder with `manifest.json`).
#[derive(Clone, Debug)]
pub struct ActivationStore {
    dir: PathBuf,
    manifest: Manifest,
}

/// One shard's values of one key: `values` holds `tokens × width` floats.
pub type KeyChunk = (Vec<f32>, usize);

impl ActivationStore {
    /// Opens the store in `dir`. A folder holding only slices' manifests
    /// (`--shard i/n` runs) must be merged first.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(MANIFEST);
        if !path.exists() {
            let slices = super::merge::slice_manifests(dir).unwrap_or_default();
            let reason = if slices.is_empty() {
                "has no manifest.json: not an activation store".to_string()
            } else {
                format!(
                    "holds {} slice manifest(s) but no manifest.json: join them with `hooks \
                     merge-manifests {}`",
                    slices.len(),
                    dir.display()
                )
            };
            return Err(StoreError::store(dir, reason));
        }
        Ok(ActivationStore {
            dir: dir.to_path_buf(),
            manifest: Manifest::read(&path)?,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Tokens stored.
    pub fn tokens(&self) -> u64 {
        self.manifest.tokens
    }

    /// The stored keys.
    pub fn keys(&self) -> &[StoredKey] {
        &self.manifest.keys
    }

    /// The stored key `key`, or an error listing the ones there are.
    pub fn key(&self, key: &str) -> Result<&StoredKey, StoreError> {
        self.manifest
            .keys
            .iter()
            .find(|k| k.key == key)
            .ok_or_else(|| StoreError::UnknownKey {
                key: key.to_string(),
                available: self.manifest.keys.iter().map(|k| k.key.clone()).collect(),
            })
    }

    /// Elements per token of `key`.
    pub fn width(&self, key: &str) -> Result<usize, StoreError> {
        Ok(self.key(key)?.width())
    }

    /// The file of shard `i`.
    pub fn shard_path(&self, i: usize) -> PathBuf {
        self.dir.join(&self.manifest.shards[i].file)
    }

    /// `key`'s values shard by shard, in corpus order, as f32; an unknown
    /// key is one error item, and the iteration stops after any error.
    pub fn key_chunks(&self, key: &str) -> impl Iterator<Item = Result<KeyChunk, StoreError>> + '_ {
        let (known, unknown) = match self.key(key) {
            Ok(k) => (Some(k.clone()), None),
            Err(e) => (None, Some(e)),
        };
        let shards = if known.is_some() {
            self.manifest.shards.len()
        } else {
            0
        };
        let mut failed = false;
        unknown
            .map(Err)
            .into_iter()
            .chain((0..shards).map_while(move |i| {
                let key = known.as_ref()?;
                if failed {
                    return None;
                }
                let chunk = self.read_key(i, key);
                failed = chunk.is_err();
                Some(chunk)
            }))
    }

    /// Shard `i`'s values of `key` as f32, checked against the manifest:
    /// the file's SHA-256 (hashed as it is read, so damaged values never
    /// reach a consumer), then the key's shape and type.
    pub fn read_key(&self, i: usize, key: &StoredKey) -> Result<KeyChunk, StoreError> {
        let path = self.shard_path(i);
        let bytes = read_shard(&self.dir, &self.manifest.shards[i])?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| StoreError::store(&path, describe_safetensors_error(&e)))?;
        let view = st
            .tensor(&key.key)
            .map_err(|_| StoreError::store(&path, format!("has no tensor `{}`", key.key)))?;
        let n = self.manifest.shards[i].n_tokens() as usize;
        let expected: Vec<usize> = std::iter::once(n)
            .chain(key.shape.iter().copied())
            .collect();
        if view.shape() != expected.as_slice() || view.dtype() != self.manifest.dtype.safetensors()
        {
            return Err(StoreError::store(
                &path,
                format!(
                    "`{}` is {} of shape {:?}; the manifest says {} of shape {:?}",
                    key.key,
                    dtype_name(view.dtype()),
                    view.shape(),
                    self.manifest.dtype,
                    expected
                ),
            ));
        }
        let values = to_f32(view.dtype(), view.data())
            .ok_or_else(|| StoreError::store(&path, format!("`{}` is unreadable", key.key)))?;
        Ok((values, n))
    }

    /// Checks every shard's size and SHA-256 against the manifest.
    pub fn verify(&self) -> Result<(), StoreError> {
        for shard in &self.manifest.shards {
            check_shard(&self.dir, shard)?;
        }
        Ok(())
    }
}

/// A safetensors element type as NumPy and `--dtype` spell it (`f32`,
/// `bf16`, `i64`).
fn dtype_name(dtype: Dtype) -> String {
    format!("{dtype:?}").to_ascii_lowercase()
}
