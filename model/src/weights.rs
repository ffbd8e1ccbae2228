//! Safetensors files read defensively, for every checkpoint format.
//!
//! The 8-byte header length, the JSON header and every tensor's dtype, shape
//! and data offsets are checked here, with checked arithmetic, before any
//! tensor is looked at; each problem is a [`ModelError::BadSafetensors`] in
//! words ("truncated: the file has 100 bytes, the header needs 4136"), never
//! a parser's debug name. Tensor names from the file are escaped when echoed.

use std::collections::BTreeMap;
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

/// A parsed and checked safetensors file, held in memory.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    tensors: BTreeMap<String, TensorEntry>,
    metadata: BTreeMap<String, String>,
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
        let path = path.as_ref();
        let bad = |reason: String| ModelError::BadSafetensors {
            path: path.to_path_buf(),
            reason,
        };
        let len = bytes.len();
        let Some(prefix) = bytes.first_chunk::<8>() else {
            return Err(bad(format!(
                "truncated: the file has {len} bytes; a safetensors file starts with an \
                 8-byte header length"
            )));
        };
        let n = u64::from_le_bytes(*prefix);
        if n > MAX_HEADER_SIZE {
            return Err(bad(format!(
                "the header length field says {n} bytes, more than the {MAX_HEADER_SIZE} a \
                 safetensors header may take (not a safetensors file?)"
            )));
        }
        // n ≤ 100 MB: no overflow.
        let header_end = 8 + n as usize;
        if header_end > len {
            return Err(bad(format!(
                "truncated: the file has {len} bytes, the header needs {header_end}"
            )));
        }
        let text = std::str::from_utf8(&bytes[8..header_end]).map_err(|e| {
            bad(format!(
                "the header is not UTF-8 text (invalid byte at offset {})",
                8 + e.valid_up_to()
            ))
        })?;
        let header: serde_json::Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| bad(format!("the header is not a JSON object: {e}")))?;

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
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            bytes,
            data_start: header_end,
            tensors,
            metadata,
        })
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

    /// The raw bytes of `key`.
    pub fn data(&self, key: &str) -> Option<&[u8]> {
        let e = self.tensors.get(key)?;
        Some(&self.bytes[self.data_start + e.range.start..self.data_start + e.range.end])
    }

    /// The `__metadata__` strings.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The values of `key` if it is an F32 tensor (else
    /// [`ModelError::WrongDtype`]); `None` when there is no such key.
    pub fn f32_values(&self, key: &str) -> Option<Result<Vec<f32>, ModelError>> {
        let e = self.tensors.get(key)?;
        if e.dtype != Dtype::F32 {
            return Some(Err(ModelError::WrongDtype {
                key: key.to_string(),
                path: self.path.clone(),
                dtype: format!("{:?}", e.dtype),
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

/// Writes `entries` as a safetensors file of F32 tensors to `w`, and
/// returns the number of bytes written.
///
/// Byte-reproducible: the same entries and metadata give the same bytes
/// (the header lists `__metadata__` with its keys sorted, then the tensors
/// sorted by name, and the data follows in that order, as the safetensors
/// crate lays it out), and values stream from `entries` without a second
/// copy of the data. Keys must be unique.
pub fn write_safetensors_to(
    w: &mut dyn std::io::Write,
    entries: &[(String, burn::tensor::TensorData)],
    metadata: &BTreeMap<String, String>,
) -> std::io::Result<u64> {
    use std::io::{Error, ErrorKind, Write};
    let json = |s: &str| serde_json::to_string(s).expect("a string serialises");
    let mut order: Vec<&(String, burn::tensor::TensorData)> = entries.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = order.windows(2).find(|p| p[0].0 == p[1].0) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("two tensors are named `{}`", escape_control(&pair[0].0)),
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
    for (key, data) in &order {
        let shape = data.shape.to_vec();
        let bytes = shape
            .iter()
            .try_fold(4usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("tensor `{}` is too large", escape_control(key)),
                )
            })?;
        let end = offset + bytes;
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        fields.push(format!(
            "{}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            json(key),
            dims.join(",")
        ));
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
    let mut chunk = Vec::with_capacity(1 << 16);
    for (key, data) in &order {
        let n = data.num_elements();
        let mut written = 0usize;
        for v in data.iter::<f32>() {
            chunk.extend_from_slice(&v.to_le_bytes());
            written += 1;
            if chunk.len() >= 1 << 16 {
                out.write_all(&chunk)?;
                chunk.clear();
            }
        }
        if written != n {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!(
                    "tensor `{}` gave {written} values for {n} elements",
                    escape_control(key)
                ),
            ));
        }
    }
    out.write_all(&chunk)?;
    out.flush()?;
    Ok(8 + header.len() as u64 + offset as u64)
}
