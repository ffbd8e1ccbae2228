//! One shard in the making: the values of consecutive corpus rows, per key,
//! already in the store's element type, written as one safetensors file
//! atomically (temporary file, sync, rename) with its SHA-256.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use burn::tensor::TensorData;
use half::{bf16, f16};
use hooks_model::NonFiniteSite;
use hooks_model::files::write_atomic;
use hooks_model::weights::{TensorSpec, write_safetensors_with};
use safetensors::Dtype;
use sha2::{Digest, Sha256};

use super::StoreError;
use super::manifest::{ShardRecord, StoreDtype, StoredKey};

/// The file name of block `block`'s shard.
pub fn shard_file(block: u64) -> String {
    format!("shard-{block:05}.safetensors")
}

/// A shard being filled.
pub struct ShardBuffer {
    block: u64,
    first_row: u64,
    seq_len: usize,
    dtype: StoreDtype,
    /// Per stored key, its little-endian bytes so far.
    values: Vec<Vec<u8>>,
    tokens: Vec<u8>,
    rows: Vec<u8>,
    positions: Vec<u8>,
    n_rows: u64,
}

impl ShardBuffer {
    /// An empty shard for `block`, whose first row is `first_row`, with room
    /// reserved for `capacity_rows` rows when that much memory is free (the
    /// caller bounds it by what the corpus can fill; the buffers grow past it
    /// if needed).
    pub fn new(
        block: u64,
        first_row: u64,
        keys: &[StoredKey],
        seq_len: usize,
        dtype: StoreDtype,
        capacity_rows: u64,
    ) -> Self {
        let tokens = usize::try_from(capacity_rows)
            .unwrap_or(usize::MAX)
            .saturating_mul(seq_len);
        let room = |bytes_per_token: usize| {
            let mut v = Vec::new();
            // Failing is fine: `append` grows it as rows come.
            let _ = v.try_reserve_exact(tokens.saturating_mul(bytes_per_token));
            v
        };
        ShardBuffer {
            block,
            first_row,
            seq_len,
            dtype,
            values: keys
                .iter()
                .map(|k| room(k.width() * dtype.size()))
                .collect(),
            tokens: room(8),
            rows: room(8),
            positions: room(8),
            n_rows: 0,
        }
    }

    /// The block it is.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// Rows held so far.
    pub fn n_rows(&self) -> u64 {
        self.n_rows
    }

    /// The corpus row the next appended row must be.
    pub fn next_row(&self) -> u64 {
        self.first_row + self.n_rows
    }

    /// Appends a batch: its token rows and, per key (`keys`, in order), the
    /// recorded `[rows, seq_len, ..shape]` values. A finite value beyond a
    /// 16-bit dtype's range is an error (it would be stored as infinity)
    /// unless `allow_overflow`; the buffer is then left as it was.
    pub fn append(
        &mut self,
        rows: &[Vec<u32>],
        keys: &[StoredKey],
        values: &[TensorData],
        allow_overflow: bool,
    ) -> Result<(), StoreError> {
        let lens: Vec<usize> = self.values.iter().map(Vec::len).collect();
        let mut fault = None;
        for (k, data) in values.iter().enumerate() {
            let out = &mut self.values[k];
            reserve(out, data.num_elements() * self.dtype.size())?;
            if let Err(f) = encode(data, self.dtype, out)
                && !allow_overflow
            {
                fault = Some((k, f));
                break;
            }
        }
        if let Some((k, (index, value))) = fault {
            for (out, len) in self.values.iter_mut().zip(lens) {
                out.truncate(len);
            }
            let shape = values[k].shape.to_vec();
            let per_row: usize = shape[1..].iter().product();
            return Err(StoreError::Overflow {
                site: Box::new(NonFiniteSite {
                    during: format!("conversion to {}", self.dtype),
                    site: keys[k].site.clone(),
                    layer: keys[k].layer,
                    index,
                    value: f32::INFINITY.copysign(value),
                    shape,
                }),
                value,
                dtype: self.dtype,
                row: self.next_row() + (index / per_row.max(1)) as u64,
            });
        }
        let tokens: usize = rows.iter().map(Vec::len).sum();
        for buf in [&mut self.tokens, &mut self.rows, &mut self.positions] {
            reserve(buf, tokens * 8)?;
        }
        for (i, row) in rows.iter().enumerate() {
            let r = self.next_row() + i as u64;
            for (p, &t) in row.iter().enumerate() {
                self.tokens.extend_from_slice(&(t as i64).to_le_bytes());
                self.rows.extend_from_slice(&(r as i64).to_le_bytes());
                self.positions.extend_from_slice(&(p as i64).to_le_bytes());
            }
        }
        self.n_rows += rows.len() as u64;
        Ok(())
    }

    /// Writes the shard into `dir` and returns its record.
    pub fn write(&self, dir: &Path, keys: &[StoredKey]) -> Result<ShardRecord, StoreError> {
        let file = shard_file(self.block);
        let path = dir.join(&file);
        let n = self.n_rows as usize * self.seq_len;
        let mut specs: Vec<TensorSpec> = keys
            .iter()
            .map(|k| TensorSpec {
                name: k.key.clone(),
                dtype: self.dtype.safetensors(),
                shape: std::iter::once(n).chain(k.shape.iter().copied()).collect(),
            })
            .collect();
        for name in ["tokens", "row", "position"] {
            specs.push(TensorSpec {
                name: name.into(),
                dtype: Dtype::I64,
                shape: vec![n],
            });
        }
        let mut metadata = BTreeMap::new();
        metadata.insert("producer".to_string(), "hooks cache --dataset".to_string());
        metadata.insert("block".to_string(), self.block.to_string());
        metadata.insert("first_row".to_string(), self.first_row.to_string());
        let buffers: Vec<&[u8]> = self
            .values
            .iter()
            .map(Vec::as_slice)
            .chain([
                self.tokens.as_slice(),
                self.rows.as_slice(),
                self.positions.as_slice(),
            ])
            .collect();
        let (bytes, sha256) = write_atomic(&path, |w| {
            let mut hashing = Hashing {
                inner: w,
                hasher: Sha256::new(),
            };
            let bytes = write_safetensors_with(&mut hashing, &specs, &metadata, &mut |i, out| {
                out.write_all(buffers[i])
            })?;
            Ok((bytes, hex(&hashing.hasher.finalize())))
        })
        .map_err(|e| match e {
            hooks_model::ModelError::Io { path, source } => StoreError::io(path, source),
            other => StoreError::store(&path, other.to_string()),
        })?;
        let seq = self.seq_len as u64;
        let end = self.first_row + self.n_rows;
        Ok(ShardRecord {
            file,
            block: self.block,
            rows: [self.first_row, end],
            tokens: [self.first_row * seq, end * seq],
            bytes,
            sha256,
        })
    }
}

/// Room for `more` bytes in `buf`, or an error saying the shard does not
/// fit in memory (rather than an abort).
fn reserve(buf: &mut Vec<u8>, more: usize) -> Result<(), StoreError> {
    buf.try_reserve(more)
        .or_else(|_| buf.try_reserve_exact(more))
        .map_err(|_| {
            StoreError::Options(format!(
                "the shard being filled needs {more} more bytes, which do not fit in memory: \
                 give a smaller --shard-mb"
            ))
        })
}

/// Appends `data`'s f32 values to `out` as `dtype`, little-endian. Every
/// value is appended; the first finite one that overflows `dtype` (becomes
/// infinite) is returned as `Err((flat index, value))`.
fn encode(data: &TensorData, dtype: StoreDtype, out: &mut Vec<u8>) -> Result<(), (usize, f32)> {
    let converted;
    let values = match data.as_slice::<f32>() {
        Ok(v) => v,
        Err(_) => {
            converted = data.clone().convert::<f32>();
            converted.as_slice::<f32>().expect("converted to f32")
        }
    };
    let mut overflow = None;
    let mut note = |i: usize, v: f32, infinite: bool| {
        if infinite && v.is_finite() && overflow.is_none() {
            overflow = Some((i, v));
        }
    };
    match dtype {
        StoreDtype::F32 => {
            for v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        StoreDtype::F16 => {
            for (i, &v) in values.iter().enumerate() {
                let h = f16::from_f32(v);
                note(i, v, h.is_infinite());
                out.extend_from_slice(&h.to_le_bytes());
            }
        }
        StoreDtype::Bf16 => {
            for (i, &v) in values.iter().enumerate() {
                let h = bf16::from_f32(v);
                note(i, v, h.is_infinite());
                out.extend_from_slice(&h.to_le_bytes());
            }
        }
    }
    overflow.map_or(Ok(()), Err)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer hashing what goes through it.
struct Hashing<'a> {
    inner: &'a mut dyn Write,
    hasher: Sha256,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
