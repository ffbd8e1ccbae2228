//! A checkpoint folder's weights: one file or Hugging Face shards with
//! their index, headers checked when opened, tensors read one at a time.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use hooks_core::path::escape_control;
use serde_json::Value;

use super::dtype::{FLOAT_DTYPES, FLOAT_DTYPES_SHOWN, decode_f32};
use super::header::{MAX_HEADER_SIZE, SafetensorsHeader, TensorEntry};
use crate::ModelError;
use crate::finite::first_non_finite;

/// The single weights file of a checkpoint folder.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint folder (Hugging Face's
/// `{"metadata": {...}, "weight_map": {tensor name: shard file}}`).
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// How many elements [`WeightFiles`] reads at a time (1 MiB of f32).
const CHUNK_ELEMENTS: usize = 1 << 18;

/// One file of a checkpoint's weights, open, with its checked header.
#[derive(Debug)]
struct Shard {
    header: SafetensorsHeader,
    file: File,
}

/// The weights of a checkpoint folder, for any model family: one
/// `model.safetensors`, or Hugging Face shards listed by
/// `model.safetensors.index.json` (`model-00001-of-00004.safetensors`, …).
///
/// [`open`](Self::open) reads and checks every file's header and, for
/// shards, the index against them, reading no tensor data; a model's loader
/// then checks each key, shape and dtype it needs ([`check`](Self::check))
/// and reads tensors one at a time ([`read_f32`](Self::read_f32): a seek and
/// reads of that tensor's bytes, 2^18 elements (1 MiB as f32) at a time,
/// converted to f32), so a
/// file's bytes are never all in memory: loading peaks near one f32 copy of
/// the model.
///
/// A folder holding both `model.safetensors` and the index is refused
/// ([`ModelError::BadCheckpoint`]): which of the two is the model cannot be
/// told (a stale single file beside new shards, or the reverse), and loading
/// the wrong one silently would be worse than asking. (Hugging Face's
/// loader looks for `model.safetensors` first and would take it.)
#[derive(Debug)]
pub struct WeightFiles {
    source: PathBuf,
    sharded: bool,
    shards: Vec<Shard>,
    keys: BTreeMap<String, usize>,
}

impl WeightFiles {
    /// Opens the weights of the checkpoint folder `dir`: every header is read
    /// and checked, and for shards the index is checked against them: every
    /// shard it names must be in the folder (and, for names like
    /// `model-00002-of-00004.safetensors`, every one of the 4), every key
    /// must be in exactly the shard the index maps it to, and every tensor
    /// of a shard must be in the index. Errors name the file and key:
    /// [`ModelError::BadCheckpoint`] for the index and the folder,
    /// [`ModelError::BadSafetensors`](crate::ModelError::BadSafetensors) for a shard's header.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        match (present(&single)?, present(&index)?) {
            (true, true) => Err(ModelError::BadCheckpoint {
                path: dir.to_path_buf(),
                reason: format!(
                    "the folder holds both `{SINGLE_FILE}` and `{INDEX_FILE}` (one file and \
                     shards); which of them is the model is ambiguous, so neither is loaded: \
                     remove or rename one"
                ),
            }),
            (false, true) => Self::open_sharded(dir, index),
            (_, false) => Self::open_single(single),
        }
    }

    fn open_single(path: PathBuf) -> Result<Self, ModelError> {
        let mut file = match crate::inputs::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(ModelError::io(
                    &path,
                    std::io::Error::new(
                        ErrorKind::NotFound,
                        format!("no such file, and no `{INDEX_FILE}` (sharded weights) beside it"),
                    ),
                ));
            }
            Err(e) => return Err(ModelError::io(&path, e)),
        };
        let header = SafetensorsHeader::read_from(&path, &mut file)?;
        let keys = header.names().map(|k| (k.to_string(), 0)).collect();
        Ok(WeightFiles {
            source: path,
            sharded: false,
            shards: vec![Shard { header, file }],
            keys,
        })
    }

    fn open_sharded(dir: &Path, index: PathBuf) -> Result<Self, ModelError> {
        let bad = |reason: String| ModelError::BadCheckpoint {
            path: index.clone(),
            reason,
        };
        let weight_map = read_index(&index).map_err(&bad)?;
        // The shards, sorted by name, and the keys the index maps to each.
        let mut by_shard: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (key, shard) in &weight_map {
            by_shard
                .entry(shard.as_str())
                .or_default()
                .push(key.as_str());
        }
        check_shard_numbers(by_shard.keys().copied()).map_err(&bad)?;

        let mut shards = Vec::with_capacity(by_shard.len());
        for (name, keys) in &by_shard {
            let path = dir.join(name);
            let not_there = || {
                bad(format!(
                    "the index maps `{}`{} to `{}`, which is not in the folder",
                    escape_control(keys[0]),
                    others(keys.len() - 1),
                    escape_control(name)
                ))
            };
            let mut file = match crate::inputs::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_there()),
                // A folder, a pipe or a device: named by what it is.
                Err(e) if e.kind() == ErrorKind::InvalidInput => {
                    let kind = std::fs::metadata(&path)
                        .map_or("a special file", |m| crate::files::describe(&m.file_type()));
                    return Err(bad(format!(
                        "the index maps `{}`{} to `{}`, which is {kind}, not a regular file",
                        escape_control(keys[0]),
                        others(keys.len() - 1),
                        escape_control(name)
                    )));
                }
                Err(e) => return Err(ModelError::io(&path, e)),
            };
            let header = SafetensorsHeader::read_from(&path, &mut file)?;
            shards.push(Shard { header, file });
        }
        let names: Vec<&str> = by_shard.keys().copied().collect();

        // Which shards hold each key, by their headers.
        let mut holders: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, shard) in shards.iter().enumerate() {
            for key in shard.header.names() {
                holders.entry(key).or_default().push(i);
            }
        }
        for (key, held) in &holders {
            if held.len() > 1 {
                let mapped = match weight_map.get(*key) {
                    Some(shard) => format!("the index maps it to `{}`", escape_control(shard)),
                    None => "the index does not list it".to_string(),
                };
                return Err(bad(format!(
                    "`{}` is in two shards, `{}` and `{}` ({mapped})",
                    escape_control(key),
                    escape_control(names[held[0]]),
                    escape_control(names[held[1]])
                )));
            }
        }
        for (key, shard) in &weight_map {
            let held_by = holders.get(key.as_str()).map(|h| names[h[0]]);
            if held_by != Some(shard.as_str()) {
                let elsewhere = match held_by {
                    Some(other) => format!("`{}` does", escape_control(other)),
                    None => "no shard does".to_string(),
                };
                return Err(bad(format!(
                    "the index maps `{}` to `{}`, which does not hold it ({elsewhere})",
                    escape_control(key),
                    escape_control(shard)
                )));
            }
        }
        if let Some((key, held)) = holders.iter().find(|(k, _)| !weight_map.contains_key(**k)) {
            return Err(bad(format!(
                "`{}` holds `{}`, which the index does not list",
                escape_control(names[held[0]]),
                escape_control(key)
            )));
        }
        let keys = holders
            .into_iter()
            .map(|(k, held)| (k.to_string(), held[0]))
            .collect();
        Ok(WeightFiles {
            source: index,
            sharded: true,
            shards,
            keys,
        })
    }

    /// The file that describes the whole: `model.safetensors`, or the index
    /// of shards (named in errors about a key no file holds).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Whether the weights are shards listed by an index.
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// The safetensors files, in name order (one unless sharded).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.header.path())
    }

    /// Every tensor name of every file, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// How many tensors the files hold.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the files hold no tensor.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The header's description of `key`.
    pub fn entry(&self, key: &str) -> Option<&TensorEntry> {
        self.shard(key)?.header.entry(key)
    }

    /// The file holding `key`.
    pub fn file_of(&self, key: &str) -> Option<&Path> {
        Some(self.shard(key)?.header.path())
    }

    fn shard(&self, key: &str) -> Option<&Shard> {
        Some(&self.shards[*self.keys.get(key)?])
    }

    /// Checks, from the header alone, that `key` is there with `shape` and
    /// one of the [`FLOAT_DTYPES`]: [`ModelError::MissingKey`] (naming
    /// [`source`](Self::source)), [`ModelError::WrongShape`] or
    /// [`ModelError::WrongDtype`](crate::ModelError::WrongDtype) (naming the file holding it).
    pub fn check(&self, key: &str, shape: &[usize]) -> Result<&TensorEntry, ModelError> {
        let shard = self.shard(key).ok_or_else(|| ModelError::MissingKey {
            path: self.source.clone(),
            key: key.to_string(),
            also_tried: Vec::new(),
        })?;
        let entry = shard.header.entry(key).expect("a listed key");
        if entry.shape != shape {
            return Err(ModelError::WrongShape {
                path: shard.header.path().to_path_buf(),
                key: key.to_string(),
                expected: shape.to_vec(),
                found: entry.shape.clone(),
            });
        }
        if !FLOAT_DTYPES.contains(&entry.dtype) {
            return Err(ModelError::WrongDtype {
                key: key.to_string(),
                path: shard.header.path().to_path_buf(),
                dtype: format!("{:?}", entry.dtype),
                expected: FLOAT_DTYPES_SHOWN,
            });
        }
        Ok(entry)
    }

    /// Reads tensor `key` (one of the [`FLOAT_DTYPES`]) as f32 values in its
    /// stored row-major order; with `check_finite`, the first NaN or
    /// infinity (after conversion) is [`ModelError::NonFiniteWeight`]. Holds
    /// the result and one chunk of the file's bytes, never the whole file.
    pub fn read_f32(&self, key: &str, check_finite: bool) -> Result<Vec<f32>, ModelError> {
        let n = self.elements(key)?;
        let mut out = vec![0.0; n];
        self.stream(key, 1, check_finite, &mut |offset, values| {
            out[offset..offset + values.len()].copy_from_slice(values);
        })?;
        Ok(out)
    }

    /// Reads the 2-D tensor `key`, stored `[rows, cols]`, as the values of
    /// its transpose `[cols, rows]`, without a second copy: each chunk of
    /// whole rows goes straight to its place. Non-finite values are found
    /// and reported as by [`read_f32`](Self::read_f32), at their stored flat
    /// index.
    pub fn read_f32_transposed(
        &self,
        key: &str,
        check_finite: bool,
    ) -> Result<Vec<f32>, ModelError> {
        let n = self.elements(key)?;
        let entry = self.entry(key).expect("found above");
        let [rows, cols] = entry.shape[..] else {
            return Err(ModelError::WrongShape {
                path: self.file_of(key).expect("found above").to_path_buf(),
                key: key.to_string(),
                expected: vec![0, 0],
                found: entry.shape.clone(),
            });
        };
        let mut out = vec![0.0; n];
        self.stream(key, cols, check_finite, &mut |offset, values| {
            let r0 = offset / cols;
            let k = values.len() / cols;
            for c in 0..cols {
                let dst = &mut out[c * rows + r0..c * rows + r0 + k];
                for (r, d) in dst.iter_mut().enumerate() {
                    *d = values[r * cols + c];
                }
            }
        })?;
        Ok(out)
    }

    fn elements(&self, key: &str) -> Result<usize, ModelError> {
        let entry = self.entry(key).ok_or_else(|| ModelError::MissingKey {
            path: self.source.clone(),
            key: key.to_string(),
            also_tried: Vec::new(),
        })?;
        Ok(entry.shape.iter().product())
    }

    /// Reads `key` in chunks of whole multiples of `row` elements, decodes
    /// each to f32, checks it (with `check_finite`) and hands it to `sink`
    /// with the flat index of its first element.
    fn stream(
        &self,
        key: &str,
        row: usize,
        check_finite: bool,
        sink: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), ModelError> {
        let shard = self.shard(key).ok_or_else(|| ModelError::MissingKey {
            path: self.source.clone(),
            key: key.to_string(),
            also_tried: Vec::new(),
        })?;
        let path = shard.header.path();
        let entry = shard.header.entry(key).expect("a listed key");
        if !FLOAT_DTYPES.contains(&entry.dtype) {
            return Err(ModelError::WrongDtype {
                key: key.to_string(),
                path: path.to_path_buf(),
                dtype: format!("{:?}", entry.dtype),
                expected: FLOAT_DTYPES_SHOWN,
            });
        }
        let range = shard.header.file_range(key).expect("a listed key");
        let size = entry.dtype.size();
        let n: usize = entry.shape.iter().product();
        let per_chunk = (CHUNK_ELEMENTS / row.max(1)).max(1) * row.max(1);
        let failed = |e: std::io::Error| read_failed(path, key, &range, e);
        let mut file = &shard.file;
        file.seek(SeekFrom::Start(range.start)).map_err(failed)?;
        let mut bytes = vec![0u8; per_chunk.min(n) * size];
        let mut values = vec![0.0f32; per_chunk.min(n)];
        let mut done = 0usize;
        while done < n {
            let m = per_chunk.min(n - done);
            let raw = &mut bytes[..m * size];
            file.read_exact(raw).map_err(failed)?;
            let decoded = decode_f32(entry.dtype, raw, &mut values[..m]);
            debug_assert!(decoded, "a float dtype, whole elements");
            if check_finite && let Some((i, value)) = first_non_finite(values[..m].iter().copied())
            {
                return Err(ModelError::NonFiniteWeight {
                    path: path.to_path_buf(),
                    key: key.to_string(),
                    index: done + i,
                    value,
                });
            }
            sink(done, &values[..m]);
            done += m;
        }
        Ok(())
    }
}

/// Whether `path` exists (following links); errors other than "not found"
/// (a folder that cannot be searched) are errors.
fn present(path: &Path) -> Result<bool, ModelError> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ModelError::io(path, e)),
    }
}

/// A failed read of tensor `key`'s bytes `range` of the file at `path`.
fn read_failed(path: &Path, key: &str, range: &Range<u64>, e: std::io::Error) -> ModelError {
    if e.kind() == ErrorKind::UnexpectedEof {
        ModelError::BadSafetensors {
            path: path.to_path_buf(),
            reason: format!(
                "truncated: tensor `{}` (bytes {}..{} of the file) ends past the end of the \
                 file, which is shorter than when its header was checked",
                escape_control(key),
                range.start,
                range.end
            ),
        }
    } else {
        ModelError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                e.kind(),
                format!("reading tensor `{}`: {e}", escape_control(key)),
            ),
        }
    }
}

/// ` (and 3 other keys)`, or nothing.
fn others(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => " (and 1 other key)".to_string(),
        n => format!(" (and {n} other keys)"),
    }
}

/// The index's `weight_map`: tensor name → shard file name, each a plain
/// file name in the folder.
fn read_index(path: &Path) -> Result<BTreeMap<String, String>, String> {
    // An index lists names (well under a megabyte for the largest models):
    // a file larger than a safetensors header may be is not one.
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the index: {e}"))?
        .len();
    if len > MAX_HEADER_SIZE {
        return Err(format!(
            "the index has {len} bytes, more than the {MAX_HEADER_SIZE} an index may take"
        ));
    }
    let bytes = crate::inputs::read(path).map_err(|e| format!("cannot read the index: {e}"))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("the index is not JSON: {e}"))?;
    let Value::Object(mut top) = value else {
        return Err("the index is not a JSON object (with `metadata` and `weight_map`)".into());
    };
    if let Some(meta) = top.get("metadata")
        && !meta.is_object()
        && !meta.is_null()
    {
        return Err("the index's `metadata` is not an object".into());
    }
    let map = match top.remove("weight_map") {
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(
                "the index's `weight_map` is not an object (tensor name → shard file)".into(),
            );
        }
        None => {
            return Err(
                "the index has no `weight_map` (an object from each tensor name to its shard \
                 file)"
                    .into(),
            );
        }
    };
    if map.is_empty() {
        return Err("the index's `weight_map` is empty".into());
    }
    let mut out = BTreeMap::new();
    for (key, shard) in map {
        let Value::String(shard) = shard else {
            return Err(format!(
                "the index maps `{}` to {shard}, not to a file name",
                escape_control(&key)
            ));
        };
        let plain = !shard.is_empty()
            && shard != "."
            && shard != ".."
            && !shard.contains(['/', '\\', '\0']);
        if !plain {
            return Err(format!(
                "the index maps `{}` to `{}`, which is not the name of a file in this folder",
                escape_control(&key),
                escape_control(&shard)
            ));
        }
        out.insert(key, shard);
    }
    Ok(out)
}

/// `model-00002-of-00004.safetensors` → ("model", 2, "00004", width of "00002").
fn shard_number(name: &str) -> Option<(&str, u64, &str, usize)> {
    let rest = name.strip_suffix(".safetensors")?;
    let (head, total) = rest.rsplit_once("-of-")?;
    let (stem, number) = head.rsplit_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(number) || !digits(total) {
        return None;
    }
    Some((stem, number.parse().ok()?, total, number.len()))
}

/// For shard names counting their total (`model-00002-of-00004.safetensors`),
/// every shard from 1 to the total must be in the index: one it never maps
/// a key to is missing from it (or from its writer's output).
fn check_shard_numbers<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut groups: BTreeMap<(&str, &str, usize), Vec<u64>> = BTreeMap::new();
    for name in names {
        let Some((stem, i, total_digits, width)) = shard_number(name) else {
            continue;
        };
        // More than u64 digits: not a count a writer produced.
        let Ok(total) = total_digits.parse::<u64>() else {
            continue;
        };
        if i == 0 || i > total {
            return Err(format!(
                "the index names `{}`, shard {i} of {total}, which cannot be",
                escape_control(name)
            ));
        }
        groups
            .entry((stem, total_digits, width))
            .or_default()
            .push(i);
    }
    for ((stem, total_digits, width), mut numbers) in groups {
        let total: u64 = total_digits.parse().expect("parsed above");
        numbers.sort_unstable();
        numbers.dedup();
        let first_missing = numbers
            .iter()
            .zip(1u64..)
            .find(|(n, expected)| **n != *expected)
            .map_or(numbers.len() as u64 + 1, |(_, expected)| expected);
        if first_missing <= total {
            let missing = format!("{stem}-{first_missing:0width$}-of-{total_digits}.safetensors");
            return Err(format!(
                "the index maps no tensor to `{}`, shard {first_missing} of the {total} its \
                 shard names count (an incomplete index?)",
                escape_control(&missing)
            ));
        }
    }
    Ok(())
}
