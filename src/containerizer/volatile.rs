//! Bundle files that need not survive a machine crash, written atomically
//! (temp file, rename) but never fsynced.
//!
//! A reboot ends every container, and the agent then finds each one's
//! runtime state gone and recreates it from scratch, rewriting every bundle
//! file. So `config.json` and `process.json`, read by the runtime right
//! after they are written, and `container.json`, are worth nothing after a
//! crash, while an fsync costs milliseconds on the path from a manifest to a
//! running process (each one up to ~9 ms on the benchmark machine's disk;
//! see BENCHMARKS.md). The rename still means no reader ever sees half a
//! file, and a process crash (the agent's or the runtime's) loses nothing:
//! the page cache outlives processes. What a machine crash can leave is an
//! empty file renamed into place, which [`is_unwritten`] recognises.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fsutil::FsError;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary name beside `target`, starting with a dot (which no handle,
/// process id or manifest may).
fn temp_path(target: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Atomically replace `path` with `value` as pretty JSON (mode 0644),
/// without fsync.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), FsError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| {
        FsError::new(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    let tmp = temp_path(path);
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&bytes))
        .and_then(|()| fs::rename(&tmp, path));
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        FsError::new(path, source)
    })
}

/// True for what a machine crash leaves of a file renamed into place before
/// its data reached the disk: nothing, or only NUL bytes.
pub fn is_unwritten(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_atomically_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("rundmc-volatile-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join("config.json");
        write_json(&target, &serde_json::json!({"a": 1})).unwrap();
        write_json(&target, &serde_json::json!({"a": 2})).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&fs::read(&target).unwrap()).unwrap();
        assert_eq!(back["a"], 2);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);
        let missing = write_json(&dir.join("nope/config.json"), &1).unwrap_err();
        assert!(missing.path.ends_with("nope/config.json"), "{missing}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_or_zeroed_files_are_unwritten() {
        assert!(is_unwritten(b""));
        assert!(is_unwritten(&[0, 0, 0]));
        assert!(!is_unwritten(b"{}"));
        assert!(!is_unwritten(&[0, b'{']));
    }
}
