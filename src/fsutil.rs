//! File operations shared by every room that keeps state on disk, with the
//! path they failed on: atomic writes (the one implementation is
//! [`rundmc_shim::atomic`], shared with the supervisor; its doc says when a
//! write is [`Durability::Durable`] and when [`Durability::Volatile`]), and
//! removals where a missing file is success. What a machine crash can leave
//! of a volatile write, an empty file renamed into place, [`is_unwritten`]
//! recognises. Small files are read with [`read_small`], which skips what
//! `fs::read` spends on a size hint. [`spread_subdirectories`] is the one
//! placement hint given to a file system.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rundmc_shim::atomic;
use thiserror::Error;

pub use rundmc_shim::atomic::Durability;

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
    atomic::write(path, contents, durability).map_err(at(path))
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

/// What [`read_small`] reads at a time: a `/proc/<pid>/stat` line, a
/// cgroup file or a depot record in one read.
const SMALL_READ: usize = 4096;

/// ext4's `FS_TOPDIR_FL` (`chattr +T`), from `linux/fs.h`.
const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;

/// Marks `dir` the top of directory hierarchies for ext4's Orlov
/// allocator (`chattr +T`): each directory made in it is placed in a block
/// group of its own choosing, as a directory in `/` is, instead of in
/// `dir`'s group beside all its siblings. The depot's per-container
/// directories then spread out, and so does their churn: without a journal
/// ext4 skips every inode of a group deleted in the last minute when it
/// allocates one there, and a burst's creates and deletes in one group
/// made every new inode dearer (issue 19). A file system without the flag
/// refuses it; nothing else changes.
pub fn spread_subdirectories(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(dir)?;
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer, which is
    // valid for the call; the descriptor is open for its duration.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & FS_TOPDIR_FL != 0 {
        return Ok(());
    }
    flags |= FS_TOPDIR_FL;
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, valid for
    // the call; the descriptor is open for its duration.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Read the whole of a small file: `open`, `read` until end of file,
/// `close`. `fs::read` first asks `statx` for the size, which procfs and
/// cgroupfs report as 0, and then grows its buffer from 32 bytes (six reads
/// for one `/proc/<pid>/stat`); the agent reads such files on every
/// observation of every container (issue 19).
pub fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = fs::File::open(path)?;
    let mut chunk = [0u8; SMALL_READ];
    let mut bytes = Vec::new();
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return Ok(bytes),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// [`read_small`], as UTF-8 text.
pub fn read_small_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read_small(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What identifies one version of a file without reading it: device,
/// inode, size and modification time. A file every writer replaces by
/// rename (a new inode), as runc's `state.json` and the depot's records,
/// is unchanged while its version is; caches of parsed files key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileVersion {
    /// The version `meta` describes.
    pub fn of(meta: &fs::Metadata) -> FileVersion {
        use std::os::unix::fs::MetadataExt;
        FileVersion {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Remove the temporary files of atomic writes that a killed writer left
/// in `dir` (`.<name>.tmp-<pid>-<n>`). Only for a directory no other
/// process writes at the time (the agent's, under its lock, at start).
/// Returns how many went; what cannot be listed or removed is left.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(atomic::is_temp_name))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
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

    /// The flags of `dir`, or why they cannot be read.
    fn flags_of(dir: &Path) -> io::Result<libc::c_int> {
        use std::os::fd::AsRawFd;
        let f = fs::File::open(dir)?;
        let mut flags: libc::c_int = 0;
        // SAFETY: FS_IOC_GETFLAGS writes one int through a valid pointer.
        match unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } {
            0 => Ok(flags),
            _ => Err(io::Error::last_os_error()),
        }
    }

    #[test]
    fn spreading_sets_topdir_where_the_file_system_has_flags_and_says_so_where_not() {
        let dir = std::env::temp_dir().join(format!("rundmc-topdir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        let result = spread_subdirectories(&dir);
        match flags_of(&dir) {
            Ok(flags) if result.is_ok() => {
                assert_ne!(flags & FS_TOPDIR_FL, 0, "{flags:#x}");
                // Again: already set, still fine.
                spread_subdirectories(&dir).unwrap();
            }
            Ok(flags) => assert_eq!(flags & FS_TOPDIR_FL, 0, "{result:?}"),
            Err(_) => assert!(result.is_err(), "no flags here, yet it said it set one"),
        }
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn stale_temps_go_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("rundmc-temps-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for name in [
            ".web.yaml.tmp-4242-7",
            "web.yaml",
            ".web.yaml",
            "a.tmp-1-2",
            ".x.tmp-1",
        ] {
            fs::write(dir.join(name), b"x").unwrap();
        }
        assert_eq!(remove_stale_temps(&dir), 1);
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".web.yaml", ".x.tmp-1", "a.tmp-1-2", "web.yaml"]);
        fs::remove_dir_all(&dir).unwrap();
    }

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

    #[test]
    fn read_small_reads_proc_files_and_files_larger_than_one_read() {
        let stat = read_small_string(Path::new("/proc/self/stat")).unwrap();
        assert!(
            stat.starts_with(&format!("{} (", std::process::id())),
            "{stat}"
        );
        assert!(stat.ends_with('\n'), "the whole line: {stat}");
        let dir = std::env::temp_dir().join(format!("rundmc-fsutil-small-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let big: Vec<u8> = (0..3 * SMALL_READ + 7).map(|i| (i % 251) as u8).collect();
        fs::write(dir.join("big"), &big).unwrap();
        assert_eq!(read_small(&dir.join("big")).unwrap(), big);
        let missing = read_small(&dir.join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        remove_dir_all_if_exists(&dir).unwrap();
    }
}
