//! Reading input files (configs, weights, indexes, tokenizers, token
//! lists): only regular files, following symbolic links. Opening a named
//! pipe blocks until something writes to it, and a device such as
//! `/dev/zero` reads without end or looks like an empty file; each is an
//! error saying what the path is instead.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use crate::files::describe;

/// Opens `path` for reading if it is a regular file (after links); the
/// error of a missing file keeps its [`io::ErrorKind::NotFound`].
pub fn open(path: &Path) -> io::Result<File> {
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {}, not a regular file", describe(&meta.file_type())),
        ));
    }
    File::open(path)
}

/// The bytes of the regular file at `path`.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The text of the regular file at `path` (an error unless UTF-8).
pub fn read_to_string(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_folders_are_refused_by_what_they_are() {
        let err = read(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            err.to_string(),
            "it is a character device, not a regular file"
        );
        let err = read_to_string(Path::new("/")).unwrap_err();
        assert_eq!(err.to_string(), "it is a folder, not a regular file");
        let missing = open(Path::new("/no/such/file")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
