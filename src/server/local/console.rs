//! The pty master of an exec with a terminal: runc sends it over the
//! console socket (`--console-socket`) as SCM_RIGHTS; the agent keeps it
//! for as long as the client's stream lasts, and resizes it on request.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::UnixListener;

/// How long runc has to send the master once the process runs.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listening console socket; removed when dropped.
pub struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Listen at `path` (in a directory only root may enter).
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let _ = std::fs::remove_file(path);
        Ok(Self {
            path: path.to_owned(),
            listener: UnixListener::bind(path)?,
        })
    }

    /// The master the runtime sent (it has, by the time its exec returned).
    pub async fn receive(&self) -> std::io::Result<OwnedFd> {
        let accepted = tokio::time::timeout(RECEIVE_TIMEOUT, self.listener.accept()).await;
        let (stream, _) = accepted.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "the runtime sent no terminal")
        })??;
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(RECEIVE_TIMEOUT))?;
        tokio::task::spawn_blocking(move || receive_fd(stream.as_raw_fd()))
            .await
            .map_err(std::io::Error::other)?
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One fd passed as SCM_RIGHTS on `sock`.
fn receive_fd(sock: RawFd) -> std::io::Result<OwnedFd> {
    let mut data = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // Room for one fd's control message, aligned as cmsghdr wants.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at iov, data and control, which outlive the call
    // and whose lengths are those given.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR reads within msg_control.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: cmsg is null or points at a header within control.
    let header = unsafe { cmsg.as_ref() };
    match header {
        Some(h) if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS => {
            // SAFETY: an SCM_RIGHTS message's data holds at least one fd.
            let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>()) };
            // SAFETY: the kernel gave us this fd; nothing else owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the runtime's console message carried no terminal",
        )),
    }
}

/// The master, non-blocking, for the runtime's reactor.
pub fn async_master(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(&fd, FcntlArg::F_SETFL(flags)).map_err(std::io::Error::from)?;
    // SAFETY: `fd` is an owned, valid descriptor that the AsyncFd owns
    // from here on; nothing else closes or replaces it.
    unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::other)
}

/// Give the terminal `rows` × `cols` (its foreground group gets SIGWINCH).
pub fn resize(fd: &impl AsRawFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid.
    match unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The size of the terminal on `fd`: (rows, columns).
pub fn size(fd: &impl AsRawFd) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0).then_some((size.ws_row, size.ws_col))
}
