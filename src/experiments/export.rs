//! Recordings in and out of safetensors files (f32), the format numpy opens
//! with `safetensors.numpy.load_file`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::TensorData;
use safetensors::tensor::Dtype;

use hooks_model::ModelError;
use hooks_model::files::write_atomic;
use hooks_model::finite::f32_le;
use hooks_model::weights::{SafetensorsFile, write_safetensors_to};

/// Writes `(key, values)` pairs as f32 tensors. Keys must be unique.
pub fn write_safetensors(
    entries: &[(String, TensorData)],
    path: impl AsRef<Path>,
) -> Result<(), ModelError> {
    write_safetensors_with_metadata(entries, None, path)
}

/// [`write_safetensors`] with string metadata in the file header.
///
/// The file is byte-reproducible (metadata keys and tensors sorted by name,
/// whatever the map's order) and written atomically
/// ([`hooks_model::files::write_atomic`]): through a temporary file beside the
/// target, so a failed write leaves no partial file and never clobbers a
/// good one; a symbolic link's target is replaced; a path that is not a
/// regular file is refused.
pub fn write_safetensors_with_metadata(
    entries: &[(String, TensorData)],
    metadata: Option<HashMap<String, String>>,
    path: impl AsRef<Path>,
) -> Result<(), ModelError> {
    let metadata: BTreeMap<String, String> = metadata.unwrap_or_default().into_iter().collect();
    write_atomic(path.as_ref(), |w| {
        write_safetensors_to(w, entries, &metadata)
    })
    .map(|_| ())
}

/// One tensor read back: key, shape, values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Reads every f32 tensor of a safetensors file, sorted by key.
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<Vec<NamedTensor>, ModelError> {
    let file = SafetensorsFile::read(path.as_ref())?;
    let mut out = Vec::with_capacity(file.len());
    for key in file.names() {
        let entry = file.entry(key).expect("a listed name");
        if entry.dtype != Dtype::F32 {
            return Err(ModelError::WrongDtype {
                key: key.to_string(),
                path: file.path().to_path_buf(),
                dtype: format!("{:?}", entry.dtype),
                expected: "F32",
            });
        }
        let data = file.data(key).expect("a listed name");
        out.push((key.to_string(), entry.shape.clone(), f32_le(data).collect()));
    }
    Ok(out)
}
