//! The far side of stream in/out: runs in a short-lived `rundmc nstar`
//! process (never in the multi-threaded agent), joins the container's mount
//! namespace, drops to the requested user, and unpacks a tar stream from
//! stdin into a path, or packs a path as a tar stream to stdout. The image
//! needs no `tar` of its own. This is the seed's nstar, in-process.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
use thiserror::Error;

/// nstar failures; the agent shows them with the container's handle.
#[derive(Debug, Error)]
pub enum NstarError {
    /// The container's mount namespace could not be joined.
    #[error("entering the mount namespace of pid {pid}: {source}")]
    Setns {
        /// Init's host pid.
        pid: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Switching to the user failed.
    #[error("switching to {uid}:{gid}: {source}")]
    User {
        /// User id.
        uid: u32,
        /// Group id.
        gid: u32,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// Reading, writing or (un)packing failed.
    #[error("{path}: {source}")]
    Io {
        /// The path in the container.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Which way the stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// tar on stdin, unpacked into the path.
    In,
    /// the path packed as tar on stdout.
    Out,
}

/// Join `pid`'s mount namespace and become `user` (uid, gid), then stream.
pub fn run(
    direction: Direction,
    pid: i32,
    path: &Path,
    user: Option<(u32, u32)>,
) -> Result<(), NstarError> {
    enter(pid)?;
    if let Some((uid, gid)) = user {
        become_user(uid, gid)?;
    }
    let io_err = |source| NstarError::Io {
        path: path.into(),
        source,
    };
    match direction {
        Direction::In => unpack(io::stdin().lock(), path, user.is_none()).map_err(io_err),
        Direction::Out => pack(io::stdout().lock(), path).map_err(io_err),
    }
}

/// setns(CLONE_NEWNS) puts root and cwd at the namespace's root: the
/// container's rootfs, since runc pivots into it. A container with a user
/// namespace of its own (`hostUsers: false`) is joined there first, as its
/// root, so that what is streamed in belongs to its ids, not the node's.
/// The mount namespace is opened before that, as the node's root: once in
/// the container's user namespace, opening /proc/<pid>/ns of an init that
/// is not dumpable (runc's init is not until it execs, which may be just
/// after `start` returned) is refused with EACCES, as seen once in a test.
fn enter(pid: i32) -> Result<(), NstarError> {
    let ns = format!("/proc/{pid}/ns/mnt");
    let fd = File::open(&ns).map_err(|source| NstarError::Setns { pid, source })?;
    join_user_namespace(pid)?;
    setns(fd, CloneFlags::CLONE_NEWNS).map_err(|e| NstarError::Setns {
        pid,
        source: e.into(),
    })
}

/// Join `pid`'s user namespace, when it is not ours, and become its root.
fn join_user_namespace(pid: i32) -> Result<(), NstarError> {
    use std::os::unix::fs::MetadataExt;
    let err = |source| NstarError::Setns { pid, source };
    let theirs = format!("/proc/{pid}/ns/user");
    let (a, b) = (
        std::fs::metadata(&theirs).map_err(err)?,
        std::fs::metadata("/proc/self/ns/user").map_err(err)?,
    );
    if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
        return Ok(());
    }
    let fd = File::open(&theirs).map_err(err)?;
    setns(fd, CloneFlags::CLONE_NEWUSER).map_err(|e| err(e.into()))?;
    become_user(0, 0)
}

fn become_user(uid: u32, gid: u32) -> Result<(), NstarError> {
    let err = |source| NstarError::User { uid, gid, source };
    setgroups(&[]).map_err(err)?;
    setgid(Gid::from_raw(gid)).map_err(err)?;
    setuid(Uid::from_raw(uid)).map_err(err)
}

/// Unpack into `dest`, creating it. As root, ownership is taken from the
/// archive; as a user, files belong to that user.
pub fn unpack(input: impl Read, dest: &Path, keep_owners: bool) -> io::Result<()> {
    std::fs::create_dir_all(dest)?;
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(keep_owners);
    archive.set_overwrite(true);
    archive.unpack(dest)
}

/// Pack `src` as `tar -C dirname(src) basename(src)` would; a path ending in
/// `/` packs its contents instead.
pub fn pack(output: impl Write, src: &Path) -> io::Result<()> {
    // Before the builder, whose drop writes an empty archive's end: a path
    // that is not there writes nothing at all.
    let is_dir = std::fs::symlink_metadata(src)?.is_dir();
    let mut builder = tar::Builder::new(output);
    builder.follow_symlinks(false);
    let contents_only = src.as_os_str().to_string_lossy().ends_with('/');
    let name = match (contents_only, src.file_name()) {
        (true, _) | (false, None) => PathBuf::from("."),
        (false, Some(n)) => PathBuf::from(n),
    };
    if is_dir {
        builder.append_dir_all(&name, src)?;
    } else {
        builder.append_path_with_name(src, &name)?;
    }
    builder.into_inner()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_then_unpack_round_trips() {
        let base = std::env::temp_dir().join(format!("rundmc-nstar-{}", std::process::id()));
        let src = base.join("src/data");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.txt"), b"alpha").unwrap();
        std::fs::write(src.join("sub/b.bin"), [0u8, 1, 2, 255]).unwrap();
        let mut tar = Vec::new();
        pack(&mut tar, &src).unwrap();
        unpack(&tar[..], &base.join("dst"), true).unwrap();
        assert_eq!(
            std::fs::read(base.join("dst/data/a.txt")).unwrap(),
            b"alpha"
        );
        assert_eq!(
            std::fs::read(base.join("dst/data/sub/b.bin")).unwrap(),
            [0u8, 1, 2, 255]
        );

        let mut contents = Vec::new();
        pack(&mut contents, Path::new(&format!("{}/", src.display()))).unwrap();
        unpack(&contents[..], &base.join("flat"), true).unwrap();
        assert!(base.join("flat/a.txt").is_file());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
