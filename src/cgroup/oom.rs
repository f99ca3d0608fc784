//! OOM kills as events, read from the cgroup without a runtime process:
//! what `runc events` gives, for runtimes without that verb (crun). v1
//! registers an eventfd on `memory.oom_control` (the kernel also signals it
//! when the cgroup is removed); v2 watches `memory.events` with inotify.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::parse::kv_value;
use super::{Cgroup, CgroupError};

/// Watches a cgroup for OOM kills without a runtime process: v1 through an
/// eventfd registered on `memory.oom_control` (the kernel also signals it
/// when the cgroup is removed), v2 through inotify on `memory.events`.
pub enum OomWatch {
    /// v1 registration.
    V1 {
        /// Signalled on each OOM and on the cgroup's removal.
        eventfd: AsyncFd<EventFd>,
        /// Gone once the cgroup is removed.
        event_control: PathBuf,
        /// The file the eventfd is registered on, kept open with it.
        _oom_control: File,
    },
    /// v2 watch.
    V2 {
        /// IN_MODIFY on `memory.events`.
        inotify: AsyncFd<InotifyFd>,
        /// `memory.events`.
        events: PathBuf,
        /// The `oom_kill` count already reported.
        seen: u64,
    },
}

/// An inotify instance, as a raw fd for [`AsyncFd`].
pub struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
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
        match cgroup {
            Cgroup::V1(_) => Self::v1(&cgroup.oom_counter_file()?),
            Cgroup::V2(_) => Self::v2(&cgroup.oom_counter_file()?),
        }
    }

    fn v1(oom_control: &Path) -> Result<OomWatch, CgroupError> {
        let event_control = oom_control.with_file_name("cgroup.event_control");
        let file = File::open(oom_control).map_err(io_err(oom_control))?;
        let eventfd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| io_err(oom_control)(e.into()))?;
        let line = format!("{} {}", eventfd.as_raw_fd(), file.as_raw_fd());
        fs::write(&event_control, line).map_err(io_err(&event_control))?;
        let eventfd = register(eventfd).map_err(io_err(oom_control))?;
        Ok(OomWatch::V1 {
            eventfd,
            event_control,
            _oom_control: file,
        })
    }

    fn v2(events: &Path) -> Result<OomWatch, CgroupError> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| io_err(events)(e.into()))?;
        inotify
            .add_watch(events, AddWatchFlags::IN_MODIFY)
            .map_err(|e| io_err(events)(e.into()))?;
        let text = fs::read_to_string(events).map_err(io_err(events))?;
        let inotify = register(InotifyFd(inotify)).map_err(io_err(events))?;
        Ok(OomWatch::V2 {
            inotify,
            events: events.to_owned(),
            seen: oom_kills(&text),
        })
    }

    /// Wait for the next OOM kill; `None` once the cgroup is gone (or the
    /// watch fails).
    pub async fn next(&mut self) -> Option<()> {
        match self {
            OomWatch::V1 {
                eventfd,
                event_control,
                ..
            } => loop {
                let mut ready = eventfd.readable().await.ok()?;
                match ready.try_io(|fd| fd.get_ref().read().map_err(io::Error::from)) {
                    Ok(Ok(_)) if event_control.exists() => return Some(()),
                    Ok(_) => return None,
                    Err(_would_block) => continue,
                }
            },
            OomWatch::V2 {
                inotify,
                events,
                seen,
            } => loop {
                let mut ready = inotify.readable().await.ok()?;
                let read = ready.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from));
                let Ok(read) = read else { continue };
                if read
                    .ok()?
                    .iter()
                    .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                {
                    return None;
                }
                let kills = oom_kills(&fs::read_to_string(&*events).ok()?);
                if kills > *seen {
                    *seen = kills;
                    return Some(());
                }
            },
        }
    }
}
