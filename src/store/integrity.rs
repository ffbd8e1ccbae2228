//! Checking shard files against their manifest records: the size alone
//! where reading them all would cost too much (resuming), the SHA-256 as
//! they are read (readers, so a damaged shard never feeds training) and in
//! a streaming pass where nothing else reads them (merging, verifying).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::StoreError;
use super::manifest::ShardRecord;
use super::shard::hex;

/// Bytes hashed per read when streaming a shard.
const CHUNK: usize = 1 << 20;

/// Reads `record`'s shard in `dir` whole, hashing it as it is read, and
/// returns its bytes once size and SHA-256 match the record.
pub fn read_shard(dir: &Path, record: &ShardRecord) -> Result<Vec<u8>, StoreError> {
    let path = dir.join(&record.file);
    let mut file = open_sized(&path, record)?;
    let len = record.bytes as usize;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len)
        .map_err(|_| StoreError::store(&path, format!("its {len} bytes do not fit in memory")))?;
    bytes.resize(len, 0);
    let mut hasher = Sha256::new();
    for chunk in bytes.chunks_mut(CHUNK) {
        file.read_exact(chunk)
            .map_err(|e| StoreError::io(&path, e))?;
        hasher.update(&*chunk);
    }
    compare(&path, record, len as u64, &hex(&hasher.finalize()))?;
    Ok(bytes)
}

/// Checks `record`'s shard in `dir` (size and SHA-256), holding one chunk
/// of it at a time.
pub fn check_shard(dir: &Path, record: &ShardRecord) -> Result<(), StoreError> {
    let path = dir.join(&record.file);
    let mut file = open_sized(&path, record)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| StoreError::io(&path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    compare(&path, record, total, &hex(&hasher.finalize()))
}

/// Opens the shard, refusing it at once if its size is not the record's.
fn open_sized(path: &Path, record: &ShardRecord) -> Result<File, StoreError> {
    let file = hooks_model::inputs::open(path).map_err(|e| StoreError::io(path, e))?;
    let len = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
    if len != record.bytes {
        return Err(size_differs(path, len, record.bytes));
    }
    Ok(file)
}

fn compare(path: &Path, record: &ShardRecord, bytes: u64, sha: &str) -> Result<(), StoreError> {
    if bytes != record.bytes {
        return Err(size_differs(path, bytes, record.bytes));
    }
    if sha != record.sha256 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            what: format!(
                "its SHA-256 is {sha} but the manifest records {}",
                record.sha256
            ),
        });
    }
    Ok(())
}

fn size_differs(path: &Path, len: u64, recorded: u64) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        what: format!("it is {len} bytes but the manifest records {recorded}"),
    }
}
