//! Thin wrappers over the system calls the harness makes itself: overlay
//! mounts for the raw baseline, pidfds to await a process's exit, inotify to
//! see a file land the moment it is renamed into place, and signals.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

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

/// Mounts an overlay of `lower` with `upper` and `work` at `target`, as the
/// agent does for each container.
pub fn mount_overlay(lower: &Path, upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let (src, fstype) = (CString::new("overlay")?, CString::new("overlay")?);
    let (target, data) = (cpath(target)?, CString::new(data)?);
    // SAFETY: every pointer is a valid NUL-terminated string.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    })
    .map(drop)
}

/// `chattr +T dir`, as the agent marks its depot: each directory made in
/// `dir` is placed by ext4's Orlov allocator in a block group of its own
/// choosing. Best effort: a file system without the flag is left as it is.
pub fn spread_subdirectories(dir: &Path) {
    let mut chattr = std::process::Command::new("chattr");
    chattr
        .arg("+T")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Through the harness's reaper, which would take the exit otherwise.
    let _ = crate::reaper::status(&mut chattr);
}

/// Detaches whatever is mounted at `target`, as the agent does.
pub fn unmount(target: &Path) -> io::Result<()> {
    let c = cpath(target)?;
    // SAFETY: c is a valid NUL-terminated path.
    check(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// Sends `sig` to `pid`.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: a plain system call with integer arguments.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// A pidfd: a handle on one process that cannot be confused with a reused pid.
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd on `pid`.
    pub fn open(pid: i32) -> io::Result<PidFd> {
        // SAFETY: a plain system call with integer arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pidfd_open returned a fresh descriptor we own.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// Waits until the process has exited; false if it still runs after `timeout`.
    pub fn exited_within(&self, timeout: Duration) -> bool {
        poll_readable(self.0.as_raw_fd(), timeout).unwrap_or(false)
    }
}

/// Polls one descriptor for readability; retries on EINTR.
fn poll_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        match check(unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) }) {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// An inotify instance watching directories for files renamed or written
/// into them.
pub struct Inotify(OwnedFd);

/// One file event: the watch it came from and the file's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEvent {
    /// The watch descriptor [`Inotify::watch`] returned.
    pub watch: i32,
    /// The file's name in the watched directory.
    pub name: String,
}

impl Inotify {
    /// A fresh, non-blocking inotify instance.
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: a plain system call with integer flags.
        let fd = check(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
        // SAFETY: inotify_init1 returned a fresh descriptor we own.
        Ok(Inotify(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `dir` for files moved in or closed after writing.
    pub fn watch(&self, dir: &Path) -> io::Result<i32> {
        let c = cpath(dir)?;
        let mask = libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE;
        // SAFETY: a valid descriptor and NUL-terminated path.
        check(unsafe { libc::inotify_add_watch(self.0.as_raw_fd(), c.as_ptr(), mask) })
    }

    /// Stops watching `watch`.
    pub fn unwatch(&self, watch: i32) {
        // SAFETY: a plain system call; a stale descriptor is only an error.
        unsafe { libc::inotify_rm_watch(self.0.as_raw_fd(), watch) };
    }

    /// Every event that arrives within `timeout` (at least one, unless it
    /// passes first); an empty list when none came.
    pub fn wait(&self, timeout: Duration) -> io::Result<Vec<FileEvent>> {
        if !poll_readable(self.0.as_raw_fd(), timeout)? {
            return Ok(Vec::new());
        }
        self.drain()
    }

    /// The events already queued.
    pub fn drain(&self) -> io::Result<Vec<FileEvent>> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut events = Vec::new();
        loop {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(events),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            events.extend(parse_events(&buf[..n as usize]));
        }
    }
}

/// Splits a buffer read from inotify into events.
fn parse_events(mut buf: &[u8]) -> Vec<FileEvent> {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    let mut events = Vec::new();
    while buf.len() >= HEADER {
        let wd = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let len = u32::from_ne_bytes([buf[12], buf[13], buf[14], buf[15]]) as usize;
        let end = (HEADER + len).min(buf.len());
        let name = &buf[HEADER..end];
        let name = name.split(|b| *b == 0).next().unwrap_or_default();
        events.push(FileEvent {
            watch: wd,
            name: String::from_utf8_lossy(name).into_owned(),
        });
        buf = &buf[end..];
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_event(wd: i32, name: &str, padded: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(wd.to_ne_bytes());
        v.extend(libc::IN_MOVED_TO.to_ne_bytes());
        v.extend(0u32.to_ne_bytes());
        v.extend((padded as u32).to_ne_bytes());
        let mut n = name.as_bytes().to_vec();
        n.resize(padded, 0);
        v.extend(n);
        v
    }

    #[test]
    fn splits_inotify_records_and_strips_padding() {
        let mut buf = raw_event(3, "web.yaml", 16);
        buf.extend(raw_event(5, "exit.json", 16));
        let events = parse_events(&buf);
        assert_eq!(
            events,
            [
                FileEvent {
                    watch: 3,
                    name: "web.yaml".into()
                },
                FileEvent {
                    watch: 5,
                    name: "exit.json".into()
                }
            ]
        );
    }

    #[test]
    fn sees_a_file_renamed_into_a_watched_directory() {
        let dir = std::env::temp_dir().join(format!("rundmc-bench-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ino = Inotify::new().unwrap();
        let wd = ino.watch(&dir).unwrap();
        std::fs::write(dir.join(".tmp"), "x").unwrap();
        std::fs::rename(dir.join(".tmp"), dir.join("a.yaml")).unwrap();
        let events = ino.wait(Duration::from_secs(5)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            events.contains(&FileEvent {
                watch: wd,
                name: "a.yaml".into()
            }),
            "{events:?}"
        );
    }
}
