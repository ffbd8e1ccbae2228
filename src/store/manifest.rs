//! `manifest.json`: what an activation store holds and how it was made, the
//! record a restarted run resumes from and slices are merged by.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::corpus::CorpusFormat;
use hooks_model::files::write_atomic;

/// The manifest's `format` value.
pub const FORMAT: &str = "burn-hooks activation store";
/// The manifest version this code writes and reads.
pub const VERSION: u32 = 1;

/// The element type of the stored activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    /// 4 bytes, exact.
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl StoreDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StoreDtype::F32 => 4,
            StoreDtype::F16 | StoreDtype::Bf16 => 2,
        }
    }

    /// Its largest finite value.
    pub fn max_finite(self) -> f32 {
        match self {
            StoreDtype::F32 => f32::MAX,
            StoreDtype::F16 => half::f16::MAX.to_f32(),
            StoreDtype::Bf16 => half::bf16::MAX.to_f32(),
        }
    }

    /// The type to suggest when a value overflows this one: `f32 (or
    /// bf16)` for f16, whose range is far smaller; `f32` otherwise.
    pub fn wider(self) -> &'static str {
        match self {
            StoreDtype::F16 => "f32 (or bf16)",
            _ => "f32",
        }
    }

    /// The safetensors dtype.
    pub fn safetensors(self) -> safetensors::Dtype {
        match self {
            StoreDtype::F32 => safetensors::Dtype::F32,
            StoreDtype::F16 => safetensors::Dtype::F16,
            StoreDtype::Bf16 => safetensors::Dtype::BF16,
        }
    }
}

/// As `--dtype` spells it.
impl std::fmt::Display for StoreDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreDtype::F32 => "f32",
            StoreDtype::F16 => "f16",
            StoreDtype::Bf16 => "bf16",
        })
    }
}

/// One stored key: a site at a layer, and the shape of its value per token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// The `hooks cache` key: `layers.<i>.<site>` or `<site>`.
    pub key: String,
    /// The site path.
    pub site: String,
    /// The layer, for sites inside the blocks.
    pub layer: Option<usize>,
    /// The shape of one token's value (a shard holds `[N, ..shape]`).
    pub shape: Vec<usize>,
}

impl StoredKey {
    /// Elements per token.
    pub fn width(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The corpus a store was made from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusRecord {
    /// The file, as given.
    pub path: PathBuf,
    /// Its format.
    pub format: CorpusFormat,
    /// Its size in bytes.
    pub bytes: u64,
    /// The token appended after each document, if any.
    pub separator: Option<u32>,
}

/// Which of `count` slices of the corpus a run processes: the shards (blocks
/// of `rows_per_shard` rows) whose index is `index` modulo `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    /// 0-based.
    pub index: usize,
    /// How many slices.
    pub count: usize,
}

impl Slice {
    /// The whole corpus.
    pub const WHOLE: Slice = Slice { index: 0, count: 1 };

    /// Parses `i/n` (0-based `i` below `n`).
    pub fn parse(text: &str) -> Result<Slice, StoreError> {
        let bad = || {
            StoreError::Options(format!(
                "--shard {text:?}: expected i/n with 0 ≤ i < n, e.g. 0/4 for the first of four"
            ))
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Slice { index, count })
    }

    /// Whether shard `block` is this slice's.
    pub fn owns(self, block: u64) -> bool {
        block % self.count as u64 == self.index as u64
    }

    /// The manifest's file name: `manifest.json` for the whole corpus,
    /// `manifest-<i>-of-<n>.json` for a slice.
    pub fn manifest_name(self) -> String {
        if self.count == 1 {
            MANIFEST.to_string()
        } else {
            format!("manifest-{}-of-{}.json", self.index, self.count)
        }
    }
}

/// The file name of the (whole or merged) manifest.
pub const MANIFEST: &str = "manifest.json";

/// One shard file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// Its file name, in the store's folder.
    pub file: String,
    /// Its block index: it holds corpus rows `block × rows_per_shard …`.
    pub block: u64,
    /// The corpus rows it holds, `[first, end)`.
    pub rows: [u64; 2],
    /// The corpus tokens it holds, `[first, end)` (rows × seq_len).
    pub tokens: [u64; 2],
    /// Its size.
    pub bytes: u64,
    /// The SHA-256 of the file, hex.
    pub sha256: String,
}

impl ShardRecord {
    /// Checks that the shard's file in `dir` is there with its recorded
    /// size (a cheap check; [`ActivationStore::verify`](super::ActivationStore::verify)
    /// hashes it).
    pub fn check_file(&self, dir: &Path) -> Result<(), StoreError> {
        let path = dir.join(&self.file);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == self.bytes => Ok(()),
            Ok(m) => Err(StoreError::store(
                &path,
                format!(
                    "is {} bytes but its manifest records {}: the store was changed after it \
                     was written",
                    m.len(),
                    self.bytes
                ),
            )),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Tokens in the shard.
    pub fn n_tokens(&self) -> u64 {
        self.tokens[1] - self.tokens[0]
    }
}

/// The manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The checkpoint folder, as given.
    pub model: PathBuf,
    /// Its `model_type`.
    pub model_type: String,
    /// The SHA-256 of its `config.json`.
    pub config_sha256: String,
    /// The corpus.
    pub corpus: CorpusRecord,
    /// The site patterns asked for.
    pub sites: Vec<String>,
    /// The layers asked for (`None`: every layer, and the sites outside
    /// the blocks).
    pub layers: Option<Vec<usize>>,
    /// What each shard holds per token, in forward order.
    pub keys: Vec<StoredKey>,
    /// The element type of the activations.
    pub dtype: StoreDtype,
    /// Tokens per row.
    pub seq_len: usize,
    /// Rows per shard (the last may have fewer).
    pub rows_per_shard: u64,
    /// The part of the corpus this manifest covers.
    pub slice: Slice,
    /// The next block this slice would write (where a restart resumes).
    pub next_block: u64,
    /// Whether the corpus was read to its end.
    pub complete: bool,
    /// Tokens in the listed shards.
    pub tokens: u64,
    /// Rows of the whole corpus (known once complete).
    pub corpus_rows: Option<u64>,
    /// Tokens left at the end of the corpus, fewer than a row (known once
    /// complete).
    pub dropped_tokens: Option<u64>,
    /// The shards, in corpus order.
    pub shards: Vec<ShardRecord>,
}

impl Manifest {
    /// Reads and checks a manifest file.
    pub fn read(path: &Path) -> Result<Manifest, StoreError> {
        let text =
            hooks_model::inputs::read_to_string(path).map_err(|e| StoreError::io(path, e))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| StoreError::store(path, format!("not a store manifest: {e}")))?;
        if manifest.format != FORMAT || manifest.version != VERSION {
            return Err(StoreError::store(
                path,
                format!(
                    "format {:?} version {} (this build reads {FORMAT:?} version {VERSION})",
                    manifest.format, manifest.version
                ),
            ));
        }
        manifest.check(path)?;
        Ok(manifest)
    }

    /// Writes the manifest atomically (temporary file, sync, rename).
    pub fn write(&self, path: &Path) -> Result<(), StoreError> {
        let text = serde_json::to_string_pretty(self).expect("a manifest serialises");
        write_atomic(path, |w| w.write_all(format!("{text}\n").as_bytes())).map_err(|e| match e {
            hooks_model::ModelError::Io { path, source } => StoreError::io(path, source),
            other => StoreError::store(path, other.to_string()),
        })
    }

    /// Internal consistency: shards in order, token ranges matching rows,
    /// totals adding up, file names plain.
    fn check(&self, path: &Path) -> Result<(), StoreError> {
        let bad = |reason: String| Err(StoreError::store(path, reason));
        if self.seq_len == 0 || self.rows_per_shard == 0 || self.slice.count == 0 {
            return bad("seq_len, rows_per_shard and the slice count must be positive".into());
        }
        let mut tokens = 0u64;
        for (i, s) in self.shards.iter().enumerate() {
            if s.file.contains(['/', '\\']) || s.file.starts_with('.') {
                return bad(format!("shard {i} has file name `{}`", s.file));
            }
            let first = s.block * self.rows_per_shard;
            let seq = self.seq_len as u64;
            if s.rows[0] != first
                || s.rows[1] <= s.rows[0]
                || s.rows[1] - s.rows[0] > self.rows_per_shard
                || s.tokens != [s.rows[0] * seq, s.rows[1] * seq]
            {
                return bad(format!(
                    "shard {} ({}) has rows {} to {} and tokens {} to {}, which block {} of {} \
                     rows of {} tokens cannot hold",
                    i,
                    s.file,
                    s.rows[0],
                    s.rows[1],
                    s.tokens[0],
                    s.tokens[1],
                    s.block,
                    self.rows_per_shard,
                    self.seq_len
                ));
            }
            if i > 0 && s.block <= self.shards[i - 1].block {
                return bad(format!("shard {i} ({}) is out of order", s.file));
            }
            tokens += s.n_tokens();
        }
        if tokens != self.tokens {
            return bad(format!(
                "the shards hold {tokens} tokens but the manifest says {}",
                self.tokens
            ));
        }
        Ok(())
    }

    /// Total tokens of every listed shard's rows.
    pub fn rows(&self) -> u64 {
        self.shards.iter().map(|s| s.rows[1] - s.rows[0]).sum()
    }

    /// The differences from `other` that make one run's store not another's
    /// (the model, corpus, sites, layout; not the slice or progress), as
    /// (field, this, other).
    pub fn differences(&self, other: &Manifest) -> Option<(&'static str, String, String)> {
        let separator = |m: &Manifest| match m.corpus.separator {
            Some(t) => format!("token {t}"),
            None => "none".to_string(),
        };
        let layers = |m: &Manifest| match &m.layers {
            Some(l) => l.iter().map(usize::to_string).collect::<Vec<_>>().join(","),
            None => "every layer".to_string(),
        };
        let corpus = |m: &Manifest| format!("{}, {} bytes", m.corpus.format, m.corpus.bytes);
        let fields: [(&'static str, String, String); 9] = [
            ("model", self.model_type.clone(), other.model_type.clone()),
            (
                "model config.json",
                self.config_sha256.clone(),
                other.config_sha256.clone(),
            ),
            ("corpus", corpus(self), corpus(other)),
            ("separator", separator(self), separator(other)),
            ("--sites", self.sites.join(","), other.sites.join(",")),
            ("--layers", layers(self), layers(other)),
            ("--dtype", self.dtype.to_string(), other.dtype.to_string()),
            (
                "--seq-len",
                self.seq_len.to_string(),
                other.seq_len.to_string(),
            ),
            (
                "shard size (--shard-mb)",
                format!("{} rows", self.rows_per_shard),
                format!("{} rows", other.rows_per_shard),
            ),
        ];
        fields.into_iter().find(|(_, a, b)| a != b)
    }
}
