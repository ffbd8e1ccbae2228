//! The float element types checkpoint weights may be stored in, and their
//! exact conversion to and from f32.

use safetensors::tensor::Dtype;

/// The element types checkpoint weights may be stored in; [`WeightFiles`](super::WeightFiles)
/// converts each to f32 as it reads it (exactly: every BF16 and F16 value,
/// subnormals, infinities and NaN included, is an f32 value).
pub const FLOAT_DTYPES: [Dtype; 3] = [Dtype::F32, Dtype::BF16, Dtype::F16];

/// [`FLOAT_DTYPES`] in words, for [`ModelError::WrongDtype`](crate::ModelError::WrongDtype).
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
