//! Recordings in and out of safetensors files (f32), the format numpy opens
//! with `safetensors.numpy.load_file`.

use std::path::Path;

use burn::tensor::TensorData;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::ModelError;

/// Writes `(key, values)` pairs as f32 tensors. Keys must be unique.
pub fn write_safetensors(
    entries: &[(String, TensorData)],
    path: impl AsRef<Path>,
) -> Result<(), ModelError> {
    write_safetensors_with_metadata(entries, None, path)
}

/// [`write_safetensors`] with string metadata in the file header.
pub fn write_safetensors_with_metadata(
    entries: &[(String, TensorData)],
    metadata: Option<std::collections::HashMap<String, String>>,
    path: impl AsRef<Path>,
) -> Result<(), ModelError> {
    let path = path.as_ref();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(entries.len());
    for (key, t) in entries {
        let values = t.clone().convert::<f32>().to_vec::<f32>().map_err(|e| {
            ModelError::BadBatch(format!("tensor `{key}` is not readable as f32: {e:?}"))
        })?;
        data.push((
            key.clone(),
            t.shape.to_vec(),
            values.into_iter().flat_map(f32::to_le_bytes).collect(),
        ));
    }
    let views = data
        .iter()
        .map(|(k, shape, bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes).expect("sizes match");
            (k.clone(), view)
        })
        .collect::<Vec<_>>();
    // Through a temporary file beside the target, so a failed write leaves
    // no partial file (and never clobbers a good one).
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let written = safetensors::serialize_to_file(views, &metadata, &tmp)
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// One tensor read back: key, shape, values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Reads every f32 tensor of a safetensors file, sorted by key.
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<Vec<NamedTensor>, ModelError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::BadSafetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (key, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(ModelError::WrongDtype {
                key,
                path: path.to_path_buf(),
                dtype: format!("{:?}", view.dtype()),
            });
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.push((key, view.shape().to_vec(), values));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
