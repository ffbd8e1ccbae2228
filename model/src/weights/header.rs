//! A safetensors file's header, read and checked before any data; a small
//! file held whole in memory; safetensors crate errors in words.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use hooks_core::path::escape_control;
use safetensors::tensor::Dtype;
use serde_json::Value;

use crate::ModelError;
use crate::finite::f32_le;

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
        let mut file = crate::inputs::open(path).map_err(|e| ModelError::io(path, e))?;
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
/// caches, autoencoders; checkpoints stream through [`WeightFiles`](super::WeightFiles)).
#[derive(Debug)]
pub struct SafetensorsFile {
    header: SafetensorsHeader,
    bytes: Vec<u8>,
}

impl SafetensorsFile {
    /// Reads and checks the file at `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let bytes = crate::inputs::read(path).map_err(|e| ModelError::io(path, e))?;
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
    /// [`ModelError::WrongDtype`](crate::ModelError::WrongDtype)); `None` when there is no such key.
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
