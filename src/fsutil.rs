//! Atomic file writes shared by every room that keeps state on disk: write
//! a temporary file beside the target and rename it over the target, so a
//! reader sees the old file or the new one, never half of either.
//!
//! [`Durability::Durable`] also fsyncs the file and the directory, so the
//! write survives a machine crash. [`Durability::Volatile`] does not: it is
//! for files a reboot makes worthless anyway (a reboot ends every container,
//! and the agent then finds its runtime state gone and recreates it,
//! rewriting every bundle file), where an fsync would only add milliseconds
//! to the path from a manifest to a running process. The page cache outlives
//! any process crash, so only a machine crash can lose such a write, and
//! what it can leave, an empty file renamed into place, [`is_unwritten`]
//! recognises.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

/// A file operation that failed, with the path it failed on.
#[derive(Debug, Error)]
#[error("{path}: {source}")]
pub struct FsError {
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

impl FsError {
    /// Attach `path` to an I/O error.
    pub fn new(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self {
            path: path.into(),
            source,
        }
    }
}

/// Build a closure that attaches `path` to an I/O error, for `map_err`.
pub fn at(path: &Path) -> impl FnOnce(io::Error) -> FsError + '_ {
    move |source| FsError::new(path, source)
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Temporary names start with a dot, which no handle or manifest may.
fn temp_path(target: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Whether a write must survive a machine crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and its directory.
    Durable,
    /// Atomic only; see the module's doc.
    Volatile,
}

/// Atomically replace `path` with `contents` (mode 0644), durably.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), FsError> {
    write_atomic_with(path, contents, Durability::Durable)
}

/// Atomically replace `path` with `contents` (mode 0644).
pub fn write_atomic_with(
    path: &Path,
    contents: &[u8],
    durability: Durability,
) -> Result<(), FsError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(contents)?;
        if durability == Durability::Durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(FsError::new(path, source));
    }
    match durability {
        Durability::Durable => sync_dir(path.parent().unwrap_or(Path::new("/"))),
        Durability::Volatile => Ok(()),
    }
}

/// Atomically replace `path` with `value` as pretty JSON, durably.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), FsError> {
    write_json_with(path, value, Durability::Durable)
}

/// Atomically replace `path` with `value` as pretty JSON.
pub fn write_json_with<T: serde::Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> Result<(), FsError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| FsError::new(path, io::Error::new(io::ErrorKind::InvalidData, e)))?;
    write_atomic_with(path, &bytes, durability)
}

/// True for what a machine crash leaves of a volatile write renamed into
/// place before its data reached the disk: nothing, or only NUL bytes.
pub fn is_unwritten(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == 0)
}

/// fsync a directory so that renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

/// Remove a file; a missing file is success.
pub fn remove_file_if_exists(path: &Path) -> Result<(), FsError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(FsError::new(path, e)),
        _ => Ok(()),
    }
}

/// Remove a directory tree; a missing one is success.
pub fn remove_dir_all_if_exists(path: &Path) -> Result<(), FsError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(FsError::new(path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("rundmc-fsutil-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join("state.json");
        write_atomic(&target, b"one").unwrap();
        write_atomic(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        remove_dir_all_if_exists(&dir).unwrap();
        remove_dir_all_if_exists(&dir).unwrap();
    }
}
