//! Safetensors files read defensively, for every checkpoint format and
//! model family.
//!
//! [`SafetensorsHeader::read_from`] reads and checks just a file's header,
//! from anything `Read + Seek`: the 8-byte header length, the JSON header
//! and every tensor's dtype, shape and data offsets, with checked
//! arithmetic, against the file's length, before any tensor is looked at;
//! each problem is a [`ModelError::BadSafetensors`] in words ("truncated:
//! the file has 100 bytes, the header needs 4136"), never a parser's debug
//! name. Tensor names from the file are escaped when echoed.
//! [`SafetensorsFile`] is a whole (small) file held in memory.
//!
//! [`WeightFiles`] is a checkpoint folder's weights: one `model.safetensors`
//! or Hugging Face shards (`model-00001-of-00004.safetensors`, … listed by
//! `model.safetensors.index.json`), every header and the index checked when
//! it opens, then read tensor by tensor (a seek and chunked reads of that
//! tensor's bytes) and converted from F32, BF16 or F16 to f32
//! ([`FLOAT_DTYPES`]), so a file's bytes are never all in memory. A model's
//! loader ([`crate::checkpoint`] for GPT-2) checks the names and shapes it
//! needs against it, then builds its tensors from it.
//!
//! [`write_safetensors_with`] writes any dtypes, tensor by tensor;
//! [`write_safetensors_to`] writes f32 tensors from Burn.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Cursor, ErrorKind, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use hooks_core::path::escape_control;
use safetensors::tensor::Dtype;
use serde_json::Value;

use crate::ModelError;
use crate::finite::{f32_le, first_non_finite};

/// The largest header safetensors accepts (100 MB).
pub const MAX_HEADER_SIZE: u64 = 100_000_000;

/// One tensor as the header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// Element type.
    pub dtype: Dtype,
    /// Shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Byte range inside the data section.
    pub range: std::ops::Range<usize>,
}

/// A safetensors file's header, read and checked: every tensor's dtype,
/// shape and byte range, checked against the file's length, without
/// reading any tensor's data.
#[derive(Clone, Debug)]
pub struct SafetensorsHeader {
    path: PathBuf,
    data_start: u64,
    tensors: BTreeMap<String, TensorEntry>,
    metadata: BTreeMap<String, String>,
}

impl SafetensorsHeader {
    /// Reads and checks the header of `reader`, the file at `path` (named
    /// in errors): its 8-byte length, the JSON, each tensor's entry, and
    /// that the tensors' data covers the rest of the file exactly (so a
    /// truncated file fails here, before any data is read). Reads only the
    /// header's bytes; the reader's position afterwards is unspecified.
    pub fn read_from<R: Read + Seek + ?Sized>(
        path: impl AsRef<Path>,
        reader: &mut R,
    ) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let io = |e: std::io::Error| ModelError::io(path, e);
        let bad = |reason: String| ModelError::BadSafetensors {
            path: path.to_path_buf(),
            reason,
        };
        let len = reader.seek(SeekFrom::End(0)).map_err(io)?;
        reader.seek(SeekFrom::Start(0)).map_err(io)?;
        if len < 8 {
            return Err(bad(format!(
                "truncated: the file has {len} bytes; a safetensors file starts with an \
                 8-byte header length"
            )));
        }
        let mut prefix = [0u8; 8];
        reader.read_exact(&mut prefix).map_err(io)?;
        let n = u64::from_le_bytes(prefix);
        if n > MAX_HEADER_SIZE {
            return Err(bad(format!(
                "the header length field says {n} bytes, more than the {MAX_HEADER_SIZE} a \
                 safetensors header may take (not a safetensors file?)"
            )));
        }
        // n ≤ 100 MB: no overflow, and the buffer below is no larger than the file.
        let header_end = 8 + n;
        if header_end > len {
            return Err(bad(format!(
                "truncated: the file has {len} bytes, the header needs {header_end}"
            )));
        }
        let mut raw = vec![0u8; n as usize];
        reader.read_exact(&mut raw).map_err(io)?;
        let text = std::str::from_utf8(&raw).map_err(|e| {
            bad(format!(
                "the header is not UTF-8 text (invalid byte at offset {})",
                8 + e.valid_up_to()
            ))
        })?;
        let header: serde_json::Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| bad(format!("the header is not a JSON object: {e}")))?;
        drop(raw);

        let mut metadata = BTreeMap::new();
        let mut tensors = BTreeMap::new();
        for (key, value) in header {
            if key == "__metadata__" {
                metadata = parse_metadata(value).map_err(&bad)?;
                continue;
            }
            let entry = parse_entry(&key, value).map_err(&bad)?;
            tensors.insert(key, entry);
        }

        // The data section must be covered exactly, without holes or overlaps.
        let mut by_offset: Vec<(&String, &TensorEntry)> = tensors.iter().collect();
        by_offset.sort_by_key(|(_, e)| (e.range.start, e.range.end));
        let mut end = 0usize;
        let mut last: Option<&String> = None;
        for (key, e) in &by_offset {
            if e.range.start > end {
                return Err(bad(format!(
                    "no tensor covers bytes {end}..{} of the data section ({}); the header is \
                     inconsistent",
                    e.range.start,
                    after(last)
                )));
            }
            if e.range.start < end {
                return Err(bad(format!(
                    "tensor `{}` (data_offsets [{}, {}]) overlaps the data of `{}`",
                    escape_control(key),
                    e.range.start,
                    e.range.end,
                    last.map_or_else(String::new, |k| escape_control(k).into_owned())
                )));
            }
            end = e.range.end;
            last = Some(key);
        }
        let data_len = len - header_end;
        let end = end as u64;
        if end > data_len {
            let needed = header_end.saturating_add(end);
            return Err(bad(format!(
                "truncated: the file has {len} bytes, the header needs {needed}"
            )));
        }
        if end < data_len {
            return Err(bad(format!(
                "{} bytes after the last tensor's data: the header accounts for {} of the \
                 file's {len} bytes",
                data_len - end,
                header_end + end
            )));
        }
        Ok(SafetensorsHeader {
            path: path.to_path_buf(),
            data_start: header_end,
            tensors,
            metadata,
        })
    }

    /// Opens the file at `path` and reads its header ([`read_from`](Self::read_from)).
    pub fn open(path: impl AsRef<Path>) -> Result<(Self, File), ModelError> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        let header = Self::read_from(path, &mut file)?;
        Ok((header, file))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// How many tensors the file holds.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The header's description of `key`.
    pub fn entry(&self, key: &str) -> Option<&TensorEntry> {
        self.tensors.get(key)
    }

    /// The `__metadata__` strings.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Where the data section starts in the file (8 + the header's length).
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// The bytes of `key` in the file (not in the data section).
    pub fn file_range(&self, key: &str) -> Option<Range<u64>> {
        let e = self.tensors.get(key)?;
        Some(self.data_start + e.range.start as u64..self.data_start + e.range.end as u64)
    }
}

/// A parsed and checked safetensors file, held in memory (for small files:
/// caches, autoencoders; checkpoints stream through [`WeightFiles`]).
#[derive(Debug)]
pub struct SafetensorsFile {
    header: SafetensorsHeader,
    bytes: Vec<u8>,
}

impl SafetensorsFile {
    /// Reads and checks the file at `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::parse(path, bytes)
    }

    /// Checks `bytes`, the contents of the file at `path` (named in errors).
    pub fn parse(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Self, ModelError> {
        let header = SafetensorsHeader::read_from(path, &mut Cursor::new(bytes.as_slice()))?;
        Ok(SafetensorsFile { header, bytes })
    }

    /// The checked header.
    pub fn header(&self) -> &SafetensorsHeader {
        &self.header
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.header.path()
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.header.names()
    }

    /// How many tensors the file holds.
    pub fn len(&self) -> usize {
        self.header.len()
    }

    /// Whether the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.header.is_empty()
    }

    /// The header's description of `key`.
    pub fn entry(&self, key: &str) -> Option<&TensorEntry> {
        self.header.entry(key)
    }

    /// The raw bytes of `key`.
    pub fn data(&self, key: &str) -> Option<&[u8]> {
        // The header was checked against these bytes: the range is inside.
        let r = self.header.file_range(key)?;
        Some(&self.bytes[r.start as usize..r.end as usize])
    }

    /// The `__metadata__` strings.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        self.header.metadata()
    }

    /// The values of `key` if it is an F32 tensor (else
    /// [`ModelError::WrongDtype`]); `None` when there is no such key.
    pub fn f32_values(&self, key: &str) -> Option<Result<Vec<f32>, ModelError>> {
        let e = self.header.entry(key)?;
        if e.dtype != Dtype::F32 {
            return Some(Err(ModelError::WrongDtype {
                key: key.to_string(),
                path: self.path().to_path_buf(),
                dtype: format!("{:?}", e.dtype),
                expected: "F32",
            }));
        }
        let data = self.data(key)?;
        Some(Ok(f32_le(data).collect()))
    }
}

/// The element types checkpoint weights may be stored in; [`WeightFiles`]
/// converts each to f32 as it reads it (exactly: every BF16 and F16 value,
/// subnormals, infinities and NaN included, is an f32 value).
pub const FLOAT_DTYPES: [Dtype; 3] = [Dtype::F32, Dtype::BF16, Dtype::F16];

/// [`FLOAT_DTYPES`] in words, for [`ModelError::WrongDtype`].
pub const FLOAT_DTYPES_SHOWN: &str = "F32, BF16 or F16";

/// Decodes `bytes`, little-endian elements of `dtype`, into `out` as f32
/// (exactly). Returns `false`, leaving `out` as it was, when `dtype` is not
/// one of [`FLOAT_DTYPES`] or `bytes` does not hold `out.len()` elements.
pub fn decode_f32(dtype: Dtype, bytes: &[u8], out: &mut [f32]) -> bool {
    if !FLOAT_DTYPES.contains(&dtype) || Some(bytes.len()) != out.len().checked_mul(dtype.size()) {
        return false;
    }
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        _ => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
    }
    true
}

/// Appends `values` to `out` as little-endian elements of `dtype`, one of
/// [`FLOAT_DTYPES`] (BF16 and F16 rounded to nearest, ties to even, as
/// PyTorch's casts do); returns `false`, appending nothing, for other dtypes.
pub fn encode_f32(dtype: Dtype, values: &[f32], out: &mut Vec<u8>) -> bool {
    match dtype {
        Dtype::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Dtype::BF16 => values
            .iter()
            .for_each(|&v| out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes())),
        Dtype::F16 => values
            .iter()
            .for_each(|&v| out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes())),
        _ => return false,
    }
    true
}

/// The f32 values of `bytes`, a tensor stored as `dtype` ([`decode_f32`]);
/// `None` for other dtypes or a length that is not a whole number of elements.
pub fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let size = dtype.size();
    if size == 0 || !bytes.len().is_multiple_of(size) {
        return None;
    }
    let mut out = vec![0.0; bytes.len() / size];
    decode_f32(dtype, bytes, &mut out).then_some(out)
}

/// The values of a row-major `[rows, cols]` matrix, transposed to `[cols, rows]`.
pub fn transpose_f32(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(
        Some(values.len()),
        rows.checked_mul(cols),
        "values of a [{rows}, {cols}] matrix"
    );
    const BLOCK: usize = 64;
    let mut out = vec![0.0; values.len()];
    for r0 in (0..rows).step_by(BLOCK) {
        for c0 in (0..cols).step_by(BLOCK) {
            for r in r0..(r0 + BLOCK).min(rows) {
                for c in c0..(c0 + BLOCK).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}

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
    /// [`ModelError::BadSafetensors`] for a shard's header.
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
        let mut file = match File::open(&path) {
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
            let mut file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_there()),
                Err(e) => return Err(ModelError::io(&path, e)),
            };
            let meta = file.metadata().map_err(|e| ModelError::io(&path, e))?;
            if !meta.is_file() {
                return Err(bad(format!(
                    "the index maps `{}`{} to `{}`, which is not a regular file",
                    escape_control(keys[0]),
                    others(keys.len() - 1),
                    escape_control(name)
                )));
            }
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
    /// [`ModelError::WrongDtype`] (naming the file holding it).
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
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the index: {e}"))?;
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

fn after(last: Option<&String>) -> String {
    match last {
        Some(k) => format!("after `{}`", escape_control(k)),
        None => "at its start".to_string(),
    }
}

fn parse_metadata(value: Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(map) = value else {
        return Err("`__metadata__` is not an object of strings".into());
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            _ => Err(format!(
                "`__metadata__` entry `{}` is not a string",
                escape_control(&k)
            )),
        })
        .collect()
}

fn parse_entry(key: &str, value: Value) -> Result<TensorEntry, String> {
    let name = escape_control(key);
    let Value::Object(map) = value else {
        return Err(format!(
            "the header's entry `{name}` is not a tensor description \
             (an object with dtype, shape and data_offsets)"
        ));
    };
    let dtype = match map.get("dtype") {
        Some(Value::String(s)) => serde_json::from_value::<Dtype>(Value::String(s.clone()))
            .map_err(|_| {
                format!(
                    "tensor `{name}` has an unknown dtype `{}`",
                    escape_control(s)
                )
            })?,
        Some(_) => return Err(format!("tensor `{name}`: dtype is not a string")),
        None => return Err(format!("tensor `{name}` has no dtype")),
    };
    let shape = match map.get("shape") {
        Some(Value::Array(dims)) => dims
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                format!("tensor `{name}`: shape must be a list of non-negative integers")
            })?,
        Some(_) => return Err(format!("tensor `{name}`: shape is not a list")),
        None => return Err(format!("tensor `{name}` has no shape")),
    };
    let offsets = match map.get("data_offsets") {
        Some(Value::Array(o)) if o.len() == 2 => o
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>(),
        Some(_) => None,
        None => return Err(format!("tensor `{name}` has no data_offsets")),
    };
    let Some([start, end]) = offsets.as_deref().map(|o| [o[0], o[1]]) else {
        return Err(format!(
            "tensor `{name}`: data_offsets must be two non-negative integers [start, end]"
        ));
    };
    if end < start {
        return Err(format!(
            "tensor `{name}` has data_offsets [{start}, {end}], which end before they start"
        ));
    }
    let bytes = shape
        .iter()
        .try_fold(dtype.size(), |n, &d| n.checked_mul(d))
        .ok_or_else(|| {
            format!(
                "tensor `{name}`: shape {shape:?} of {dtype:?} has more bytes than fit in memory"
            )
        })?;
    if end - start != bytes {
        return Err(format!(
            "tensor `{name}`: shape {shape:?} of {dtype:?} needs {bytes} bytes, but its \
             data_offsets [{start}, {end}] span {}",
            end - start
        ));
    }
    Ok(TensorEntry {
        dtype,
        shape,
        range: start..end,
    })
}

/// A [`safetensors`] crate error in words (its own `Display` prints the
/// variant's debug name, e.g. `MetadataIncompleteBuffer`).
pub fn describe_safetensors_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::InvalidHeader => "the header is not UTF-8 text".into(),
        E::InvalidHeaderStart => "the header does not start with `{`".into(),
        E::InvalidHeaderDeserialization => "the header is not valid JSON".into(),
        E::HeaderTooLarge => format!("the header is larger than {MAX_HEADER_SIZE} bytes"),
        E::HeaderTooSmall => "truncated: the file is shorter than the 8-byte header length".into(),
        E::InvalidHeaderLength => "truncated: the file is shorter than its header says".into(),
        E::TensorNotFound(name) => format!("no tensor `{}`", escape_control(name)),
        E::TensorInvalidInfo => {
            "a tensor's data_offsets do not span its shape times its dtype's size".into()
        }
        E::InvalidOffset(name) => format!(
            "tensor `{}` has data_offsets that do not follow the previous tensor's",
            escape_control(name)
        ),
        E::IoError(e) => e.to_string(),
        E::JsonError(e) => format!("JSON error: {e}"),
        E::InvalidTensorView(dtype, shape, len) => {
            format!("{len} bytes do not make a {dtype:?} tensor of shape {shape:?}")
        }
        E::MetadataIncompleteBuffer => {
            "the data section's length differs from what the header describes (truncated, or \
             trailing bytes)"
                .into()
        }
        E::ValidationOverflow => "a tensor's shape times its dtype's size overflows".into(),
    }
}

/// One tensor of a file written by [`write_safetensors_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Its name.
    pub name: String,
    /// Its element type.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// Writes a safetensors file of `tensors` (any dtypes) to `w` and returns
/// the number of bytes written; `data(i, out)` writes the little-endian
/// bytes of `tensors[i]` (exactly its shape times its dtype's size: more or
/// fewer is an error), called once per tensor in name order, so tensors can
/// be produced one at a time.
///
/// Byte-reproducible: the same tensors, metadata and data give the same
/// bytes (the header lists `__metadata__` with its keys sorted, then the
/// tensors sorted by name, and the data follows in that order, as the
/// safetensors crate lays it out). Names must be unique.
pub fn write_safetensors_with(
    w: &mut dyn std::io::Write,
    tensors: &[TensorSpec],
    metadata: &BTreeMap<String, String>,
    data: &mut dyn FnMut(usize, &mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    use std::io::{Error, ErrorKind, Write};
    let json = |s: &str| serde_json::to_string(s).expect("a string serialises");
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| tensors[a].name.cmp(&tensors[b].name));
    if let Some(pair) = order
        .windows(2)
        .find(|p| tensors[p[0]].name == tensors[p[1]].name)
    {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "two tensors are named `{}`",
                escape_control(&tensors[pair[0]].name)
            ),
        ));
    }
    let mut header = String::from("{");
    let mut fields = Vec::new();
    if !metadata.is_empty() {
        let items: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", json(k), json(v)))
            .collect();
        fields.push(format!("\"__metadata__\":{{{}}}", items.join(",")));
    }
    let mut offset = 0usize;
    let mut sizes = vec![0usize; tensors.len()];
    for &i in &order {
        let t = &tensors[i];
        let too_large = || {
            Error::new(
                ErrorKind::InvalidInput,
                format!("tensor `{}` is too large", escape_control(&t.name)),
            )
        };
        let bytes = t
            .shape
            .iter()
            .try_fold(t.dtype.size(), |n, &d| n.checked_mul(d))
            .ok_or_else(too_large)?;
        let end = offset.checked_add(bytes).ok_or_else(too_large)?;
        let dims: Vec<String> = t.shape.iter().map(usize::to_string).collect();
        let dtype = serde_json::to_string(&t.dtype).expect("a dtype serialises");
        fields.push(format!(
            "{}:{{\"dtype\":{dtype},\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            json(&t.name),
            dims.join(",")
        ));
        sizes[i] = bytes;
        offset = end;
    }
    header.push_str(&fields.join(","));
    header.push('}');
    // Pad the header with spaces to a multiple of 8 bytes, as safetensors does.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = std::io::BufWriter::new(w);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    for &i in &order {
        let mut counted = Counted {
            inner: &mut out,
            written: 0,
        };
        data(i, &mut counted)?;
        if counted.written != sizes[i] as u64 {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!(
                    "tensor `{}` gave {} bytes for its {}",
                    escape_control(&tensors[i].name),
                    counted.written,
                    sizes[i]
                ),
            ));
        }
    }
    out.flush()?;
    Ok(8 + header.len() as u64 + offset as u64)
}

/// A writer counting the bytes that go through it.
struct Counted<'a> {
    inner: &'a mut dyn std::io::Write,
    written: u64,
}

impl std::io::Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `entries` as a safetensors file of F32 tensors to `w`, and
/// returns the number of bytes written ([`write_safetensors_with`]'s layout,
/// byte-reproducible); values stream from `entries` without a second copy
/// of the data. Keys must be unique.
pub fn write_safetensors_to(
    w: &mut dyn std::io::Write,
    entries: &[(String, burn::tensor::TensorData)],
    metadata: &BTreeMap<String, String>,
) -> std::io::Result<u64> {
    use std::io::{Error, ErrorKind, Write};
    let specs: Vec<TensorSpec> = entries
        .iter()
        .map(|(name, data)| TensorSpec {
            name: name.clone(),
            dtype: Dtype::F32,
            shape: data.shape.to_vec(),
        })
        .collect();
    let mut chunk = Vec::with_capacity(1 << 16);
    write_safetensors_with(w, &specs, metadata, &mut |i: usize, out: &mut dyn Write| {
        let (key, data) = &entries[i];
        let n = data.num_elements();
        let mut written = 0usize;
        chunk.clear();
        for v in data.iter::<f32>() {
            chunk.extend_from_slice(&v.to_le_bytes());
            written += 1;
            if chunk.len() >= 1 << 16 {
                out.write_all(&chunk)?;
                chunk.clear();
            }
        }
        out.write_all(&chunk)?;
        chunk.clear();
        if written != n {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!(
                    "tensor `{}` gave {written} values for {n} elements",
                    escape_control(key)
                ),
            ));
        }
        Ok(())
    })
}
