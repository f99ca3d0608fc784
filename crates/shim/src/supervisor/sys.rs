//! Thin wrappers over the system calls the shim makes, returning
//! `io::Result` and owned descriptors. No policy here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rundmc_shim::status::Ending;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets `O_NONBLOCK` on a descriptor.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a valid descriptor with integer arguments.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above; the flags are the descriptor's own plus O_NONBLOCK.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Makes a fifo at `path` (mode 0600), replacing nothing.
pub fn mkfifo(path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    check(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }).map(drop)
}

/// Opens `path` with `flags` (close-on-exec added).
pub fn open(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: open succeeded; the descriptor is ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `read(2)`; `Ok(0)` is end of file.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `write(2)`, once.
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

pub use rundmc_shim::pidfd::{open as pidfd_open, send_signal as pidfd_send_signal};

/// Reaps the child the pidfd refers to, blocking until it has exited.
pub fn wait_pidfd(pidfd: BorrowedFd<'_>) -> io::Result<Ending> {
    // SAFETY: siginfo_t is plain data; zeroed is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: info is a valid siginfo_t to fill.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        match check(r) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    // SAFETY: waitid filled info for an exited child.
    let status = unsafe { info.si_status() };
    Ok(match info.si_code {
        libc::CLD_EXITED => Ending::Exited(status),
        _ => Ending::Killed(status),
    })
}

/// Waits up to `timeout` for the child the pidfd refers to, and reaps it
/// if it exited; `Ok(false)` when it is still running.
pub fn reap_within(pidfd: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<bool> {
    let mut fds = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd; poll returns early on EINTR, which only
    // shortens the wait.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
    if ready <= 0 {
        return Ok(false);
    }
    wait_pidfd(pidfd).map(|_| true)
}

/// Reaps every child that has already exited; returns how many.
pub fn reap_exited_children() -> usize {
    let mut n = 0;
    // SAFETY: waitpid with a null status pointer is allowed.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {
        n += 1;
    }
    n
}

/// Waits for events on `fds`; retries on `EINTR`.
pub fn poll(fds: &mut [libc::pollfd]) -> io::Result<()> {
    loop {
        // SAFETY: fds is a valid array of pollfd of the given length.
        match check(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) }) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Forks; `Ok(true)` in the child.
pub fn fork() -> io::Result<bool> {
    // SAFETY: the shim is single-threaded when it forks.
    let pid = check(unsafe { libc::fork() })?;
    Ok(pid == 0)
}

/// Starts a new session and makes the caller a child subreaper, so that the
/// runtime's orphans (the process) are re-parented to it.
pub fn detach() -> io::Result<()> {
    // SAFETY: plain system calls with integer arguments.
    check(unsafe { libc::setsid() })?;
    // SAFETY: as above.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })?;
    Ok(())
}

/// Points `target` (e.g. fd 1) at `/dev/null`.
pub fn redirect_to_null(target: RawFd) -> io::Result<()> {
    let null = open(Path::new("/dev/null"), libc::O_RDWR)?;
    // SAFETY: both descriptors are valid; dup2 replaces target.
    check(unsafe { libc::dup2(null.as_raw_fd(), target) }).map(drop)
}

/// Ends the calling process at once, without running destructors.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is always safe to call.
    unsafe { libc::_exit(code) }
}
