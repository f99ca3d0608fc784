//! The agent's hold on a supervisor it did not necessarily start: its pid
//! from `shim.json`, verified against the recorded start time so a reused pid
//! is never mistaken for it, and a pidfd that becomes readable when it exits.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use rundmc_shim::procstat;
use rundmc_shim::protocol::{SHIM_JSON, ShimRecord};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::ProcessError;
use super::files::read_json;

/// Reads `dir/shim.json`; `None` when there is none.
pub(crate) fn read_record(dir: &Path) -> Result<Option<ShimRecord>, ProcessError> {
    read_json(&dir.join(SHIM_JSON))
}

/// A supervisor known to be alive when opened.
#[derive(Debug)]
pub(crate) struct LiveShim {
    pidfd: OwnedFd,
    pub(crate) pid: i32,
}

impl LiveShim {
    /// Opens the supervisor `record` names, if that very process still runs:
    /// the pidfd is taken first and the start time checked after, so the
    /// pidfd cannot refer to a process that reused the pid.
    pub(crate) fn open(record: &ShimRecord) -> Option<LiveShim> {
        let pidfd = pidfd_open(record.pid).ok()?;
        if procstat::start_time(record.pid).ok()? != record.start_time {
            return None;
        }
        let shim = LiveShim {
            pidfd,
            pid: record.pid,
        };
        (!shim.has_exited()).then_some(shim)
    }

    /// Whether it has exited (a zombie counts as exited).
    pub(crate) fn has_exited(&self) -> bool {
        let mut fds = [libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
        n > 0 && fds[0].revents != 0
    }

    /// Resolves when it exits.
    pub(crate) async fn exited(&self) -> io::Result<()> {
        let pidfd = self.pidfd.try_clone()?;
        // SAFETY: the OwnedFd is a valid open pidfd that the AsyncFd owns and
        // that nothing else closes or replaces while it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        let _guard = fd.readable().await?;
        Ok(())
    }

    /// Sends SIGKILL through the pidfd: never to a process that reused the pid.
    pub(crate) fn kill(&self) -> io::Result<()> {
        // SAFETY: a plain system call; a null siginfo is allowed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<u8>(),
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: a plain system call with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_open returned a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
