//! OOM kills as events, read from the cgroup without a runtime process:
//! what `runc events` gives, for runtimes without that verb (crun). v1
//! registers an eventfd on `memory.oom_control`; v2 watches `memory.events`
//! with inotify. Either wake is only a hint: the kernel signals the v1
//! eventfd on every OOM, whether or not it kills, and when the cgroup is
//! removed. A kill is counted only when the `oom_kill` counter grows, read
//! through the file opened at registration: that descriptor belongs to the
//! cgroup the watch was made on, and fails with ENODEV once that cgroup is
//! removed, so a container made again at the same path never counts for an
//! old watch.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::parse::kv_value;
use super::{Cgroup, CgroupError};

/// After a wake with no kill counted yet, when to look again: the kernel
/// signals an OOM before it picks and kills a victim.
const RECHECKS: [Duration; 5] = [
    Duration::from_millis(1),
    Duration::from_millis(5),
    Duration::from_millis(20),
    Duration::from_millis(100),
    Duration::from_millis(400),
];

/// Watches one cgroup (the one there when the watch was made) for OOM kills.
pub struct OomWatch {
    /// What wakes it.
    wake: Wake,
    /// The cgroup's OOM counter file, opened at registration.
    counter: CounterFile,
    /// The `oom_kill` count already reported (or there at registration).
    seen: u64,
}

/// The wake-up source of a watch.
enum Wake {
    /// An eventfd registered on `memory.oom_control` (v1).
    V1(AsyncFd<EventFd>),
    /// IN_MODIFY on `memory.events` (v2).
    V2(AsyncFd<InotifyFd>),
}

/// An inotify instance, as a raw fd for [`AsyncFd`].
pub struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// The `oom_kill` count of one cgroup instance: the narrow seam between
/// the decision about a wake and the kernel.
pub trait OomCounter {
    /// The current count; an error once the cgroup is gone.
    fn read(&mut self) -> io::Result<u64>;
}

/// `memory.oom_control` (v1) or `memory.events` (v2), read through the
/// descriptor opened at registration.
struct CounterFile(File);

impl OomCounter for CounterFile {
    fn read(&mut self) -> io::Result<u64> {
        let mut buf = [0u8; 4096];
        let n = self.0.read_at(&mut buf, 0)?;
        let text = String::from_utf8_lossy(&buf[..n]);
        Ok(oom_kills(&text))
    }
}

/// What a wake meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The counter grew to this: a kill.
    Killed(u64),
    /// No kill (an OOM the kernel resolved without one, or a stray wake).
    NoKill,
    /// The cgroup the watch was made on is gone.
    Gone,
}

/// The meaning of one read of the counter, given the count already seen.
pub fn judge(seen: u64, read: io::Result<u64>) -> Verdict {
    match read {
        Ok(kills) if kills > seen => Verdict::Killed(kills),
        Ok(_) => Verdict::NoKill,
        Err(_) => Verdict::Gone,
    }
}

/// After a wake: read the counter, and again after each of `rechecks`
/// while it shows no kill yet.
pub async fn settle(counter: &mut impl OomCounter, seen: u64, rechecks: &[Duration]) -> Verdict {
    let mut verdict = judge(seen, counter.read());
    for delay in rechecks {
        if verdict != Verdict::NoKill {
            break;
        }
        tokio::time::sleep(*delay).await;
        verdict = judge(seen, counter.read());
    }
    verdict
}

/// Register an fd-owning value with the reactor, for readability only.
fn register<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: both callers pass a value that owns its descriptor (an
    // `EventFd` owns an `OwnedFd`, an `InotifyFd` its `Inotify`), which
    // stays open and returns the same raw fd until the `AsyncFd` drops it.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(io::Error::from)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

fn oom_kills(text: &str) -> u64 {
    kv_value(text, "oom_kill").unwrap_or(0)
}

impl OomWatch {
    /// Start watching. Must be called within a tokio runtime.
    pub fn new(cgroup: &Cgroup) -> Result<OomWatch, CgroupError> {
        let path = cgroup.oom_counter_file()?;
        let file = File::open(&path).map_err(io_err(&path))?;
        let wake = match cgroup {
            Cgroup::V1(_) => Self::v1(&path, &file)?,
            Cgroup::V2(_) => Self::v2(&path)?,
        };
        let mut counter = CounterFile(file);
        let seen = counter.read().map_err(io_err(&path))?;
        Ok(OomWatch {
            wake,
            counter,
            seen,
        })
    }

    fn v1(oom_control: &Path, file: &File) -> Result<Wake, CgroupError> {
        let event_control = oom_control.with_file_name("cgroup.event_control");
        let eventfd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| io_err(oom_control)(e.into()))?;
        let line = format!("{} {}", eventfd.as_raw_fd(), file.as_raw_fd());
        fs::write(&event_control, line).map_err(io_err(&event_control))?;
        Ok(Wake::V1(register(eventfd).map_err(io_err(oom_control))?))
    }

    fn v2(events: &Path) -> Result<Wake, CgroupError> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| io_err(events)(e.into()))?;
        inotify
            .add_watch(events, AddWatchFlags::IN_MODIFY)
            .map_err(|e| io_err(events)(e.into()))?;
        Ok(Wake::V2(
            register(InotifyFd(inotify)).map_err(io_err(events))?,
        ))
    }

    /// Wait for the next OOM kill; `None` once the cgroup is gone (or the
    /// watch fails).
    pub async fn next(&mut self) -> Option<()> {
        loop {
            self.wake.next().await?;
            match settle(&mut self.counter, self.seen, &RECHECKS).await {
                Verdict::Killed(kills) => {
                    self.seen = kills;
                    return Some(());
                }
                Verdict::NoKill => continue,
                Verdict::Gone => return None,
            }
        }
    }
}

impl Wake {
    /// The next wake; `None` when the source says the cgroup is gone or fails.
    async fn next(&mut self) -> Option<()> {
        match self {
            Wake::V1(eventfd) => loop {
                let mut ready = eventfd.readable().await.ok()?;
                match ready.try_io(|fd| fd.get_ref().read().map_err(io::Error::from)) {
                    Ok(Ok(_)) => return Some(()),
                    Ok(Err(_)) => return None,
                    Err(_would_block) => continue,
                }
            },
            Wake::V2(inotify) => loop {
                let mut ready = inotify.readable().await.ok()?;
                let read = ready.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from));
                let Ok(read) = read else { continue };
                let events = read.ok()?;
                if events
                    .iter()
                    .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                {
                    return None;
                }
                return Some(());
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter that gives its reads in turn (`None`: the cgroup is
    /// gone), then its last one forever.
    struct Scripted(Vec<Option<u64>>);

    impl OomCounter for Scripted {
        fn read(&mut self) -> io::Result<u64> {
            let next = match self.0.len() {
                0 | 1 => self.0.first().copied().flatten(),
                _ => self.0.remove(0),
            };
            next.ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
        }
    }

    fn gone() -> io::Result<u64> {
        Err(io::Error::from_raw_os_error(libc::ENODEV))
    }

    const NOW: [Duration; 3] = [Duration::ZERO; 3];

    #[test]
    fn only_a_grown_counter_is_a_kill() {
        assert_eq!(judge(0, Ok(1)), Verdict::Killed(1));
        assert_eq!(judge(3, Ok(3)), Verdict::NoKill);
        assert_eq!(judge(3, Ok(0)), Verdict::NoKill);
        assert_eq!(judge(3, gone()), Verdict::Gone);
    }

    #[tokio::test]
    async fn a_removed_cgroup_is_gone_not_a_kill() {
        // The wake that rmdir gives: the registered file reads ENODEV, even
        // when a new cgroup (with its own count) is at the same path.
        assert_eq!(
            settle(&mut Scripted(vec![None]), 0, &NOW).await,
            Verdict::Gone
        );
    }

    #[tokio::test]
    async fn a_kill_counted_just_after_the_wake_is_seen() {
        let mut counter = Scripted(vec![Some(2), Some(2), Some(3)]);
        assert_eq!(settle(&mut counter, 2, &NOW).await, Verdict::Killed(3));
    }

    #[tokio::test]
    async fn an_oom_without_a_kill_is_no_kill() {
        let mut counter = Scripted(vec![Some(2)]);
        assert_eq!(settle(&mut counter, 2, &NOW).await, Verdict::NoKill);
    }
}
