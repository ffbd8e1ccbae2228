//! An output never replaces one of the command's own inputs: `--out`
//! pointing (directly or through a link) at the model's weights, its
//! config or tokenizer, an activation store's files or a token list is
//! refused before anything runs, instead of leaving the inputs destroyed
//! after a successful-looking run.

use std::path::{Path, PathBuf};

use hooks_model::checkpoint::{CONFIG_FILE, INDEX_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use hooks_model::shown;
use hooks_model::weights::WeightFiles;

use super::error::CliError;

/// The files loading the checkpoint in `dir` reads that exist: its config,
/// tokenizer and weights (every shard of an index, and the index).
pub fn model_inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, INDEX_FILE]
        .iter()
        .map(|name| dir.join(name))
        .collect();
    // A folder whose weights cannot be opened fails when it loads; the
    // files named above are still guarded.
    if let Ok(weights) = WeightFiles::open(dir) {
        files.extend(weights.files().map(Path::to_path_buf));
    }
    files
}

/// Every regular file directly inside `dir` (an activation store: its
/// manifest, shards and slice manifests).
pub fn folder_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect()
}

/// Whether `a` and `b` are the same existing file (after links, hard links
/// included).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// An error if writing `out` would replace one of `inputs` (`-`, standard
/// output, never does).
pub fn refuse_inputs(out: &Path, inputs: &[PathBuf]) -> Result<(), CliError> {
    if out == Path::new("-") {
        return Ok(());
    }
    match inputs.iter().find(|input| same_file(out, input)) {
        Some(input) if out == input.as_path() => Err(CliError::Other(format!(
            "refusing to write `{}`: it is an input of this command; give another --out",
            shown(out)
        ))),
        Some(input) => Err(CliError::Other(format!(
            "refusing to write `{}`: it is `{}`, an input of this command; give another --out",
            shown(out),
            shown(input)
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_that_are_inputs_are_refused_through_links_too() {
        let dir = std::env::temp_dir().join(format!("hooks-clobber-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("model.safetensors");
        std::fs::write(&input, b"weights").unwrap();
        let link = dir.join("link.safetensors");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let inputs = [input.clone()];
        let err = refuse_inputs(&input, &inputs).unwrap_err().to_string();
        assert!(err.contains("it is an input of this command"), "{err}");
        let err = refuse_inputs(&link, &inputs).unwrap_err().to_string();
        assert!(err.contains("model.safetensors`, an input"), "{err}");
        refuse_inputs(&dir.join("new.safetensors"), &inputs).unwrap();
        refuse_inputs(Path::new("-"), &inputs).unwrap();
        assert_eq!(folder_files(&dir).len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
