//! Writing output files without losing data.
//!
//! [`write_atomic`] writes to a temporary file beside the destination and
//! renames it into place, so a failed write (a full disk, a file-size
//! limit, a bad tensor) leaves the old file as it was and no temporary
//! file behind. A symbolic link is followed: its target is replaced and the
//! link kept. A path that exists and is not a regular file (a folder, a
//! device such as `/dev/full`, a named pipe, a socket) is refused with
//! [`ModelError::NotAFile`], never replaced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::ModelError;
use crate::error::shown;

/// How many symbolic links are followed before giving up (Linux's limit).
const MAX_LINKS: usize = 40;

/// The file a write to `path` replaces or creates: `path` itself, or where
/// its symbolic links lead. Errors when that exists and is not a regular
/// file, when its folder does not exist, or when the links loop.
pub fn resolve_output(path: &Path) -> Result<PathBuf, ModelError> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        let meta = match fs::symlink_metadata(&current) {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => return new_file(path, current),
            Err(e) => return Err(ModelError::io(path, e)),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            let link = fs::read_link(&current).map_err(|e| ModelError::io(path, e))?;
            current = if link.is_absolute() {
                link
            } else {
                parent_dir(&current).join(link)
            };
            continue;
        }
        if kind.is_file() {
            return Ok(current);
        }
        return Err(ModelError::NotAFile {
            path: path.to_path_buf(),
            resolved: current,
            kind: describe(&kind),
        });
    }
    Err(ModelError::io(
        path,
        io::Error::other(format!(
            "more than {MAX_LINKS} levels of symbolic links (a loop?)"
        )),
    ))
}

/// A file that does not exist yet: its folder must.
fn new_file(path: &Path, target: PathBuf) -> Result<PathBuf, ModelError> {
    if target.file_name().is_none() {
        return Err(ModelError::io(
            path,
            io::Error::new(ErrorKind::InvalidInput, "the path names no file"),
        ));
    }
    let dir = parent_dir(&target);
    match fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => Ok(target),
        Ok(_) => Err(ModelError::io(
            path,
            io::Error::new(
                ErrorKind::NotADirectory,
                format!("`{}` is not a folder", shown(&dir)),
            ),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(ModelError::io(
            path,
            io::Error::new(
                ErrorKind::NotFound,
                format!("the folder `{}` does not exist", shown(&dir)),
            ),
        )),
        Err(e) => Err(ModelError::io(path, e)),
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `a folder`, `a character device`, ...: what a non-regular file is.
pub(crate) fn describe(kind: &fs::FileType) -> &'static str {
    if kind.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}

/// Removes the temporary file unless the write went through.
struct Temp(Option<PathBuf>);

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// A new, empty temporary file in `dir`, named after `name`; never one that
/// already exists (`create_new`, so no link planted there is followed).
fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    // Keep the temporary name within the file system's limit.
    let mut short = name;
    while short.len() > 128 {
        let mut cut = short.len() - 1;
        while !short.is_char_boundary(cut) {
            cut -= 1;
        }
        short = &short[..cut];
    }
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{short}.partial-{}-{n}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        ErrorKind::AlreadyExists,
        "could not create a temporary file beside it",
    ))
}

/// Writes a file through `write`, atomically: into a temporary file beside
/// the destination ([`resolve_output`]: a symbolic link's target), synced,
/// then renamed over it, keeping an existing file's permissions. When
/// anything fails the destination is as it was and the temporary file is
/// removed; errors are [`ModelError::Io`] naming `path`.
pub fn write_atomic<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<T>,
) -> Result<T, ModelError> {
    let target = resolve_output(path)?;
    let fail = |e: io::Error| ModelError::io(path, e);
    let dir = parent_dir(&target);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let permissions = fs::metadata(&target)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.permissions());
    let (tmp, mut file) = create_temp(&dir, &name).map_err(fail)?;
    let mut guard = Temp(Some(tmp.clone()));
    let value = write(&mut file).map_err(fail)?;
    file.flush().map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    if let Some(permissions) = permissions {
        fs::set_permissions(&tmp, permissions).map_err(fail)?;
    }
    fs::rename(&tmp, &target).map_err(fail)?;
    guard.0 = None;
    // Make the rename itself durable (best effort: not every file system
    // lets a folder be synced).
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(value)
}
