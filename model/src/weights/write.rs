//! Writing safetensors files, tensor by tensor and byte-reproducibly.

use std::collections::BTreeMap;

use hooks_core::path::escape_control;
use safetensors::tensor::Dtype;

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
