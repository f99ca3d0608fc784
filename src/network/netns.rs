//! Pinned network namespaces, as CRI runtimes make them: a namespace is
//! created by a short-lived thread that unshares its own network namespace,
//! brings `lo` up in it and bind-mounts `/proc/self/task/<tid>/ns/net` onto a
//! file, which keeps the namespace alive after the thread is gone. The file's
//! path goes into the OCI config, so a recreated init (or a restarted main
//! process) joins the same namespace and keeps its addresses.
//!
//! The directory holding the files is made a shared mount bound on itself,
//! as `ip netns add` does for `/run/netns`: a pin then propagates to the
//! directory's peers and an unmount frees the namespace everywhere. Both
//! [`create`] and [`remove`] take an exclusive `flock` on that directory, so
//! two agents (or two threads) never stack mounts on one path and the
//! directory is bound on itself once.
//!
//! Every step is idempotent: a pinned file is left as it is, and a file a
//! crash left unpinned (between its creation and the bind mount) is pinned
//! by the next [`create`]. Imports nothing of the crate but `fsutil`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::statfs::{NSFS_MAGIC, statfs};
use thiserror::Error;

use crate::fsutil;

/// How many mounts stacked on one path [`remove`] takes off at most: one is
/// what [`create`] makes; more are somebody else's doing.
const MAX_STACKED_MOUNTS: usize = 8;

/// Why a namespace could not be created or removed.
#[derive(Debug, Error)]
pub enum NetnsError {
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// mount(2) or umount2(2) failed.
    #[error("{action} {path}: {source}")]
    Mount {
        /// What was being done, e.g. "bind-mounting the namespace on".
        action: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// unshare(CLONE_NEWNET) failed.
    #[error("creating a network namespace for {path}: {source}")]
    Unshare {
        /// The file it was for.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// `lo` could not be brought up in the new namespace.
    #[error("bringing lo up in the network namespace for {path}: {source}")]
    Loopback {
        /// The file it was for.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The thread that creates the namespace could not start or panicked.
    #[error("the thread creating the network namespace for {path}: {message}")]
    Thread {
        /// The file it was for.
        path: PathBuf,
        /// What happened to it.
        message: String,
    },
    /// The path has no parent directory to hold the file.
    #[error("{0}: a namespace file needs a parent directory")]
    NoParent(PathBuf),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> NetnsError + '_ {
    move |source| NetnsError::Io {
        path: path.into(),
        source,
    }
}

fn fs_err(e: fsutil::FsError) -> NetnsError {
    NetnsError::Io {
        path: e.path,
        source: e.source,
    }
}

/// Create a new network namespace with `lo` up, pinned at `path` (the file
/// and its parent directory are created). A namespace already pinned there
/// is kept: `Ok`, and it is not replaced. Blocks for the few milliseconds
/// the kernel takes to make a namespace; call it from a blocking task.
pub fn create(path: &Path) -> Result<(), NetnsError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| NetnsError::NoParent(path.into()))?;
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let _lock = lock_dir(dir)?;
    make_shared_mount(dir)?;
    if is_pinned(path) {
        return Ok(());
    }
    // A file without a namespace on it (a crash came between this and the
    // mount) is pinned again here, not refused.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_at(path))?;
    pin_new_namespace(path).inspect_err(|_| {
        // Best effort: a leftover file is repaired by the next create anyway.
        let _ = fsutil::remove_file_if_exists(path);
    })
}

/// Unpin the namespace at `path` and remove the file. The namespace itself
/// is freed by the kernel once no process is left in it. A missing file
/// (or directory) is success.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => return Err(NetnsError::NoParent(path.into())),
    };
    let _lock = match lock_dir(dir) {
        Err(NetnsError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(());
        }
        other => other?,
    };
    unmount_all(path)?;
    fsutil::remove_file_if_exists(path).map_err(fs_err)
}

/// Detach every mount stacked on `path`; nothing mounted is success.
fn unmount_all(path: &Path) -> Result<(), NetnsError> {
    for _ in 0..MAX_STACKED_MOUNTS {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            // EINVAL: nothing mounted there (any more).
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(source) => {
                return Err(NetnsError::Mount {
                    action: "unmounting",
                    path: path.into(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// True when a namespace is mounted at `path`: a file (not a symlink to
/// one) on nsfs, which has no directories, so a path on it is the mount
/// point itself.
pub fn is_pinned(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
        && statfs(path).is_ok_and(|st| st.filesystem_type() == NSFS_MAGIC)
}

/// Unpin every namespace file in `dir`, undo the mount [`create`] made of
/// the directory and remove it: for teardown, and for tests that make their
/// own directory. A missing directory is success.
pub fn remove_dir(dir: &Path) -> Result<(), NetnsError> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other.map_err(io_at(dir))?,
    };
    for entry in entries {
        remove(&entry.map_err(io_at(dir))?.path())?;
    }
    unmount_all(dir)?;
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(dir)(e)),
        _ => Ok(()),
    }
}

/// An exclusive `flock` on `dir`, held until dropped.
fn lock_dir(dir: &Path) -> Result<Flock<File>, NetnsError> {
    let file = File::open(dir).map_err(io_at(dir))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| NetnsError::Io {
        path: dir.into(),
        source: e.into(),
    })
}

/// Make `dir` a shared mount, binding it on itself first when it is not a
/// mount point (what `ip netns add` does for `/run/netns`).
fn make_shared_mount(dir: &Path) -> Result<(), NetnsError> {
    let mut bound = false;
    loop {
        let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
        match nix::mount::mount(None::<&str>, dir, None::<&str>, shared, None::<&str>) {
            Ok(()) => return Ok(()),
            // EINVAL: `dir` is not a mount point.
            Err(Errno::EINVAL) if !bound => {
                let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
                nix::mount::mount(Some(dir), dir, None::<&str>, bind, None::<&str>).map_err(
                    |source| NetnsError::Mount {
                        action: "binding on itself",
                        path: dir.into(),
                        source,
                    },
                )?;
                bound = true;
            }
            Err(source) => {
                return Err(NetnsError::Mount {
                    action: "making a shared mount of",
                    path: dir.into(),
                    source,
                });
            }
        }
    }
}

/// Make the namespace in a thread of its own, which ends when it is pinned:
/// the caller's thread (which tokio reuses for other tasks) never changes
/// namespace.
fn pin_new_namespace(path: &Path) -> Result<(), NetnsError> {
    let target = path.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || unshare_and_pin(&target))
        .map_err(|e| NetnsError::Thread {
            path: path.into(),
            message: format!("could not start: {e}"),
        })?;
    thread.join().map_err(|_| NetnsError::Thread {
        path: path.into(),
        message: "panicked".into(),
    })?
}

/// In the dedicated thread: a new namespace, `lo` up, then the pin, last,
/// so that a pinned namespace is always a ready one.
fn unshare_and_pin(path: &Path) -> Result<(), NetnsError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Unshare {
        path: path.into(),
        source,
    })?;
    loopback_up().map_err(|source| NetnsError::Loopback {
        path: path.into(),
        source,
    })?;
    let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
    nix::mount::mount(
        Some(own.as_str()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| NetnsError::Mount {
        action: "bind-mounting the network namespace on",
        path: path.into(),
        source,
    })
}

/// Set IFF_UP on `lo` of the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is a name and a union of plain integers and arrays, for
    // which all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name of a valid, live
    // ifreq and writes its flags field.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so the flags member is the one the
    // kernel wrote.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the name and flags of a valid, live ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_mounted_namespace_is_pinned() {
        let dir = std::env::temp_dir().join(format!("rundmc-netns-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plain");
        fs::write(&file, b"").unwrap();
        assert!(!is_pinned(&file));
        assert!(!is_pinned(&dir.join("missing")));
        let link = dir.join("link");
        std::os::unix::fs::symlink("/proc/self/ns/net", &link).unwrap();
        assert!(!is_pinned(&link), "a symlink to a namespace is no pin");
        fsutil::remove_dir_all_if_exists(&dir).unwrap();
    }

    #[test]
    fn a_path_without_a_parent_is_refused() {
        assert!(matches!(
            create(Path::new("netns")),
            Err(NetnsError::NoParent(_))
        ));
        assert!(matches!(
            remove(Path::new("/")),
            Err(NetnsError::NoParent(_))
        ));
    }
}
