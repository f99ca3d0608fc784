//! Atomic file writes, for the agent and the supervisor alike: write a
//! temporary file beside the target and rename it over the target, so a
//! reader sees the old file or the new one, never half of either.
//!
//! [`Durability::Durable`] also fsyncs the file and the directory, so the
//! write survives a machine crash. [`Durability::Volatile`] does not: it is
//! for files a reboot makes worthless anyway (a reboot ends every container
//! and process, and the agent then finds its runtime state gone and
//! recreates it, rewriting every bundle file), where an fsync would only add
//! milliseconds to the path from a manifest to a running process. The page
//! cache outlives any process crash, so only a machine crash can lose such a
//! write, and what it can leave is an empty file renamed into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Whether `name` is what [`temp_path`] makes of some file's name: a
/// temporary file a write in progress holds, or a killed writer left.
pub fn is_temp_name(name: &str) -> bool {
    let Some((head, tail)) = name.rsplit_once(".tmp-") else {
        return false;
    };
    let mut parts = tail.split('-');
    let numbers = parts.next().is_some_and(is_digits) && parts.next().is_some_and(is_digits);
    head.starts_with('.') && numbers && parts.next().is_none()
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a write must survive a machine crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and its directory.
    Durable,
    /// Atomic only; see the module's doc.
    Volatile,
}

/// Atomically replace `path` with `contents` (mode 0644). A temporary file
/// left by a failed write is removed.
pub fn write(path: &Path, contents: &[u8], durability: Durability) -> io::Result<()> {
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
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    match durability {
        Durability::Durable => sync_dir(path.parent().unwrap_or(Path::new("/"))),
        Durability::Volatile => Ok(()),
    }
}

/// fsync a directory so that renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("rundmc-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join("exit.json");
        write(&target, b"one", Durability::Volatile).unwrap();
        write(&target, b"two", Durability::Durable).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("exit.json")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temp() {
        let dir = std::env::temp_dir().join(format!("rundmc-atomic-fail-{}", std::process::id()));
        fs::create_dir_all(dir.join("taken")).unwrap();
        // Renaming a file over a non-empty directory fails.
        fs::write(dir.join("taken").join("x"), b"x").unwrap();
        assert!(write(&dir.join("taken"), b"new", Durability::Volatile).is_err());
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, vec![std::ffi::OsString::from("taken")]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
