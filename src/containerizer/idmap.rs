//! The kernel calls behind idmapped mounts (Linux 5.12+, overlayfs over
//! idmapped layers 5.19+): a user namespace holding a container's id
//! mapping, made by a short-lived child, and a clone of a directory's mount
//! whose ids are shifted through it (open_tree, mount_setattr, move_mount),
//! which neither nix nor libc's safe API wrap.
//!
//! A file owned by uid 0 on disk shows as the range's first host id through
//! the clone, so an overlay over cloned image layers shows the container's
//! root its files as its own, while the layers on disk, shared with every
//! other container, keep their owners.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::userns::IdRange;

/// `OPEN_TREE_CLONE` from linux/mount.h: a detached copy of the mount.
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `MOVE_MOUNT_F_EMPTY_PATH`: the source is the fd itself.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
/// `MOUNT_ATTR_IDMAP`: shift ids through `userns_fd`.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` (linux/mount.h, MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A user namespace whose uid and gid maps are `0 <host_id> <size>`: what
/// an idmapped mount for a container of `range` needs. Made by a child that
/// unshares one and waits while this process writes its maps and opens it;
/// the namespace lives on in the returned fd.
pub fn userns_fd(range: IdRange) -> io::Result<OwnedFd> {
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (hold_r, hold_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (ready_w_raw, hold_r_raw, hold_w_raw) =
        (ready_w.as_raw_fd(), hold_r.as_raw_fd(), hold_w.as_raw_fd());
    // SAFETY: the child makes only async-signal-safe system calls (unshare,
    // write, read, _exit) on fds opened before the fork, touches no memory
    // another thread may hold locked, and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; `_exit` skips every destructor.
        unsafe {
            // Our copy of the write end would keep the read below from
            // ever seeing the parent close its own.
            libc::close(hold_w_raw);
            let ok: u8 = u8::from(libc::unshare(libc::CLONE_NEWUSER) == 0);
            libc::write(ready_w_raw, (&ok as *const u8).cast(), 1);
            let mut byte = 0u8;
            libc::read(hold_r_raw, (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    drop((ready_w, hold_r));
    let made = map_child(pid, ready_r, range);
    // The child reads EOF and exits.
    drop(hold_w);
    // SAFETY: waiting for our own child, with no status wanted.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    made
}

/// Once child `pid` says it has unshared, write its maps and open its namespace.
fn map_child(pid: libc::pid_t, ready: OwnedFd, range: IdRange) -> io::Result<OwnedFd> {
    let mut ok = [0u8];
    let n = File::from(ready).read(&mut ok)?;
    if n != 1 || ok[0] != 1 {
        return Err(io::Error::other(
            "the child could not unshare a user namespace",
        ));
    }
    let map = format!("0 {} {}\n", range.host_id, range.size);
    std::fs::write(format!("/proc/{pid}/uid_map"), &map)?;
    std::fs::write(format!("/proc/{pid}/gid_map"), &map)?;
    Ok(File::open(format!("/proc/{pid}/ns/user"))?.into())
}

/// Mount a clone of `source`'s mount, its ids shifted through `userns`, at
/// `target` (an existing directory). Only `source`'s own mount is cloned,
/// as an overlay layer sees only its own.
pub fn mount_idmapped(source: &Path, target: &Path, userns: BorrowedFd<'_>) -> io::Result<()> {
    let src = cpath(source)?;
    let dst = cpath(target)?;
    let empty = c"";
    // SAFETY: a valid NUL-terminated path; on success the result is a new
    // fd that nothing else owns.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned to us and is owned here only.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: a live mount fd, an empty path with AT_EMPTY_PATH, and a
    // mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a live mount fd as source (empty path, F_EMPTY_PATH) and a
    // valid NUL-terminated target path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_clone_shows_root_files_as_the_ranges_first_id() {
        let base = std::env::temp_dir().join(format!("rundmc-idmap-{}", std::process::id()));
        let (src, dst) = (base.join("src"), base.join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
        let range = IdRange {
            host_id: 3 * 65_536,
            size: 65_536,
        };
        let ns = userns_fd(range).unwrap();
        mount_idmapped(&src, &dst, ns.as_fd()).unwrap();
        let seen = std::fs::metadata(dst.join("f")).map(|m| (m.uid(), m.gid()));
        let on_disk = std::fs::metadata(src.join("f")).map(|m| m.uid());
        nix::mount::umount2(&dst, nix::mount::MntFlags::MNT_DETACH).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(seen.unwrap(), (range.host_id, range.host_id));
        assert_eq!(on_disk.unwrap(), 0, "the source keeps its owner");
    }
}
