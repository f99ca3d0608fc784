//! Process file descriptors: a handle on one process that a reused pid can
//! never redirect. Signal through it, and await its exit without polling.
//! The system calls themselves are [`rundmc_shim::pidfd`]'s, shared with
//! the supervisor.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use rundmc_shim::procstat;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A pidfd on one process.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    /// Open a pidfd on `pid`. Only safe against pid reuse when the caller
    /// knows `pid` is still the process it means (e.g. it is frozen, or is
    /// the caller's unreaped child); see [`PidFd::open_verified`] otherwise.
    pub fn open(pid: i32) -> io::Result<Self> {
        let fd = rundmc_shim::pidfd::open(pid)?;
        Ok(Self { fd, pid })
    }

    /// Open a pidfd on `pid` only if that process started at `start_time`
    /// (field 22 of /proc/<pid>/stat). Checked after opening, so the fd is
    /// known to refer to the right process.
    pub fn open_verified(pid: i32, start_time: u64) -> io::Result<Self> {
        let fd = Self::open(pid)?;
        let stat =
            crate::fsutil::read_small_string(std::path::Path::new(&format!("/proc/{pid}/stat")));
        match stat.as_deref().map(procstat::parse_start_time) {
            Ok(Some(t)) if t == start_time => Ok(fd),
            _ => Err(io::Error::from_raw_os_error(libc::ESRCH)),
        }
    }

    /// The pid it was opened on.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Send `signal`. ESRCH once the process has exited and been reaped.
    pub fn send_signal(&self, signal: i32) -> io::Result<()> {
        rundmc_shim::pidfd::send_signal(self.fd.as_fd(), signal)
    }

    /// Whether the process has exited, without waiting (a zombie counts).
    pub fn has_exited(&self) -> bool {
        let mut fds = [libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
        n > 0 && fds[0].revents != 0
    }

    /// Wait until the process has exited (a pidfd polls readable then).
    /// Waits on a duplicate, so it can be awaited more than once.
    pub async fn exited(&self) -> io::Result<()> {
        let dup = self.fd.try_clone()?;
        // SAFETY: `dup` is an owned, open pidfd that the AsyncFd owns from
        // here on and that nothing else closes or replaces.
        let fd = unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE)? };
        let _guard = fd.readable().await?;
        Ok(())
    }

    /// Wait at most `timeout`; true when the process exited.
    pub async fn exited_within(&self, timeout: Duration) -> io::Result<bool> {
        match tokio::time::timeout(timeout, self.exited()).await {
            Ok(r) => r.map(|()| true),
            Err(_) => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_exit_and_refuses_strangers() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start = procstat::start_time(pid).unwrap();
        assert!(
            PidFd::open_verified(pid, start + 1).is_err(),
            "wrong start time is refused"
        );
        let fd = PidFd::open_verified(pid, start).unwrap();
        assert!(!fd.has_exited(), "sleep is still running");
        assert!(fd.exited_within(Duration::from_secs(5)).await.unwrap());
        assert!(
            fd.has_exited(),
            "an exited, unreaped child counts as exited"
        );
        assert!(fd.exited_within(Duration::from_millis(1)).await.unwrap());
        child.wait().unwrap();
    }
}
