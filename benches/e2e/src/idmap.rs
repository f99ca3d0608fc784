//! Idmapped mounts for the raw baseline of the user namespace phase, as
//! the agent makes them (the harness stays free of the rundmc library): a
//! user namespace holding `0 <host> <size>`, made by a forked child, and a
//! clone of the image's mount with its ids shifted through it.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `struct mount_attr`, MOUNT_ATTR_SIZE_VER0.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: a two-int array for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just made and are owned here only.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A user namespace mapping `0 <host_id> <size>` for uids and gids.
pub fn userns_fd(host_id: u32, size: u32) -> io::Result<OwnedFd> {
    let (ready_r, ready_w) = pipe()?;
    let (hold_r, hold_w) = pipe()?;
    let (rw, hr, hw) = (ready_w.as_raw_fd(), hold_r.as_raw_fd(), hold_w.as_raw_fd());
    // SAFETY: the child makes only async-signal-safe calls and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::close(hw);
            let ok: u8 = u8::from(libc::unshare(libc::CLONE_NEWUSER) == 0);
            libc::write(rw, (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            libc::read(hr, (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    drop((ready_w, hold_r));
    let made = (|| {
        let mut ok = [0u8];
        if File::from(ready_r).read(&mut ok)? != 1 || ok[0] != 1 {
            return Err(io::Error::other("the child could not unshare"));
        }
        let map = format!("0 {host_id} {size}\n");
        std::fs::write(format!("/proc/{pid}/uid_map"), &map)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), &map)?;
        Ok(File::open(format!("/proc/{pid}/ns/user"))?.into())
    })();
    drop(hold_w);
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    made
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Mount a clone of `source`'s mount at `target`, ids shifted through `userns`.
pub fn mount_idmapped(source: &Path, target: &Path, userns: &OwnedFd) -> io::Result<()> {
    let (src, dst, empty) = (cpath(source)?, cpath(target)?, c"");
    // SAFETY: a valid path; the result is a new fd owned here only.
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
    // SAFETY: just returned to us.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: a live mount fd, an empty path, a mount_attr of the size given.
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
    // SAFETY: a live mount fd and a valid target path.
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
