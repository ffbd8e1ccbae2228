//! Safetensors files read defensively, for every checkpoint format and
//! model family.
//!
//! [`SafetensorsHeader::read_from`] reads and checks just a file's header,
//! from anything `Read + Seek`: the 8-byte header length, the JSON header
//! and every tensor's dtype, shape and data offsets, with checked
//! arithmetic, against the file's length, before any tensor is looked at;
//! each problem is a [`ModelError::BadSafetensors`](crate::ModelError::BadSafetensors) in words ("truncated:
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

mod dtype;
mod files;
mod header;
mod write;

pub use dtype::{FLOAT_DTYPES, FLOAT_DTYPES_SHOWN, decode_f32, encode_f32, to_f32, transpose_f32};
pub use files::{INDEX_FILE, SINGLE_FILE, WeightFiles};
pub use header::{
    MAX_HEADER_SIZE, SafetensorsFile, SafetensorsHeader, TensorEntry, describe_safetensors_error,
};
pub use write::{TensorSpec, write_safetensors_to, write_safetensors_with};
