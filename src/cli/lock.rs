//! One agent per depot, per state directory and per runtime root (issue 20).
//!
//! Two agents on the same state fight: each makes again what the other just
//! destroyed, and a cleanup under a running agent leaves containers that
//! nothing controls. Two on the same runtime root see each other's
//! containers as leftovers of their own. So before it touches anything
//! else, the agent takes an exclusive `flock` on [`LOCK_FILE`] in the depot,
//! then on the one in the state directory, then in the runtime root (runc
//! and crun skip a file there, and so does rundmc's reading of it), and
//! holds them for its lifetime. The holder writes its
//! pid into each, for the error (or the log line) of the agent that finds
//! them taken.
//!
//! A `flock` belongs to the open file: the kernel drops it when the holder
//! exits, however it exits, so there is no stale lock to clean up. The file
//! is opened close-on-exec, so the supervisors and runtime calls the agent
//! starts, which may outlive it, never hold it.
//!
//! This module takes the locks and says who holds them; it touches nothing
//! else. The agent (`cli::agent`) calls [`acquire`] first of all.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

/// The lock file's name, in the depot, the state directory and the runtime
/// root. A name
/// with a leading dot is never a handle, so the depot never takes it for a
/// container.
pub const LOCK_FILE: &str = ".rundmc-agent.lock";

/// Why the agent could not take its locks.
#[derive(Debug, Error)]
pub enum LockError {
    /// The directory or its lock file could not be made or opened.
    #[error("{path}: {source}")]
    Io {
        /// The directory or the lock file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// `flock` failed for another reason than another holder.
    #[error("{path}: flock: {source}")]
    Flock {
        /// The lock file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: Errno,
    },
    /// Another agent holds the lock, and the agent was not told to wait.
    #[error(
        "{path} is held by another rundmc agent ({holder}): one agent per depot, state \
         directory and runtime root. Stop that agent first, or pass --wait-for-lock DURATION to take over when it exits"
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// Who holds it.
        holder: Holder,
    },
    /// Another agent still held the lock when `--wait-for-lock` ran out.
    #[error(
        "{path} is still held by another rundmc agent ({holder}) after waiting {waited} \
         (--wait-for-lock): stop that agent, or wait longer"
    )]
    TimedOut {
        /// The lock file.
        path: PathBuf,
        /// Who holds it.
        holder: Holder,
        /// How long the agent waited.
        waited: humantime::Duration,
    },
}

/// The pid a lock file names: its holder's, written once it took the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder(pub Option<i32>);

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "pid {pid}"),
            None => f.write_str("its pid not yet written"),
        }
    }
}

/// The locks this agent holds; dropping it releases them.
#[derive(Debug)]
pub struct AgentLock {
    held: Vec<Held>,
}

#[derive(Debug)]
struct Held {
    path: PathBuf,
    /// (device, inode) of the lock file, so that a depot that is also the
    /// state directory is locked once, not against itself.
    id: (u64, u64),
    _lock: Flock<File>,
}

impl AgentLock {
    /// The lock files held, in the order they were taken.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.held.iter().map(|h| h.path.as_path())
    }

    /// Keep the locks until the process exits: the kernel releases them
    /// then, after every thread (and a runtime call still in flight) is
    /// gone, not when the agent's main function returns.
    pub fn hold_until_exit(self) {
        std::mem::forget(self);
    }
}

/// Take the lock in each of `dirs`, in order, making the directories when
/// missing. When one is held by another agent: without `wait`, fail at once
/// naming it and its holder; with `wait`, log once who holds it and wait
/// (for all of them together) up to `wait` for it to be released.
pub async fn acquire(dirs: &[&Path], wait: Option<Duration>) -> Result<AgentLock, LockError> {
    let deadline = wait.map(|w| (tokio::time::Instant::now() + w, w));
    // Logged once: an exiting holder's second lock may outlive its first
    // by the moment the kernel takes to close its files.
    let mut announced = false;
    let mut held: Vec<Held> = Vec::new();
    for dir in dirs {
        let path = dir.join(LOCK_FILE);
        let file = open(dir, &path)?;
        let id = file_id(&file, &path)?;
        if held.iter().any(|h| h.id == id) {
            continue;
        }
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((file, Errno::EWOULDBLOCK)) => {
                wait_for(file, &path, deadline, &mut announced).await?
            }
            Err((_, source)) => return Err(LockError::Flock { path, source }),
        };
        write_holder(&lock, &path)?;
        held.push(Held {
            path,
            id,
            _lock: lock,
        });
    }
    Ok(AgentLock { held })
}

/// Make `dir` if needed and open its lock file (close-on-exec, and never
/// through a symlink).
fn open(dir: &Path, path: &Path) -> Result<File, LockError> {
    fs::create_dir_all(dir).map_err(|source| LockError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn file_id(file: &File, path: &Path) -> Result<(u64, u64), LockError> {
    let meta = file.metadata().map_err(|source| LockError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((meta.dev(), meta.ino()))
}

/// The lock another agent holds: an error at once without a deadline, else
/// a blocking `flock` on a thread of its own, given up at the deadline.
/// Whom it waits for is logged unless `announced` already.
async fn wait_for(
    file: File,
    path: &Path,
    deadline: Option<(tokio::time::Instant, Duration)>,
    announced: &mut bool,
) -> Result<Flock<File>, LockError> {
    let holder = read_holder(path);
    let path = path.to_path_buf();
    let Some((deadline, total)) = deadline else {
        return Err(LockError::Held { path, holder });
    };
    if !std::mem::replace(announced, true) {
        tracing::warn!(
            lock = %path.display(),
            %holder,
            wait = %humantime::format_duration(total),
            "another rundmc agent holds the lock: waiting for it to exit"
        );
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread, not the runtime's blocking pool: on a timeout it is left
    // blocked, and the pool would hold the runtime's shutdown until the
    // other agent exits. Should it take the lock after all, the send fails
    // and the lock is dropped with the message.
    std::thread::Builder::new()
        .name("rundmc-agent-lock".into())
        .spawn(move || {
            let _ = tx.send(lock_blocking(file));
        })
        .map_err(|source| LockError::Io {
            path: path.clone(),
            source,
        })?;
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(Ok(lock))) => {
            tracing::info!(lock = %path.display(), "took the lock: the other agent has exited");
            Ok(lock)
        }
        Ok(Ok(Err(source))) => Err(LockError::Flock { path, source }),
        Ok(Err(_)) => Err(LockError::Io {
            path,
            source: io::Error::other("the thread waiting for the lock ended"),
        }),
        Err(_) => Err(LockError::TimedOut {
            holder: read_holder(&path),
            path,
            waited: total.into(),
        }),
    }
}

/// `flock(LOCK_EX)`, until it is granted.
fn lock_blocking(mut file: File) -> Result<Flock<File>, Errno> {
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(lock) => return Ok(lock),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(e),
        }
    }
}

/// Write this process's pid into the lock file it holds. The pid goes
/// over the start of the old content before the file is cut to length, so
/// a reader never sees it empty, only the old pid or the new one.
fn write_holder(lock: &Flock<File>, path: &Path) -> Result<(), LockError> {
    let text = format!("{}\n", std::process::id());
    lock.write_all_at(text.as_bytes(), 0)
        .and_then(|()| lock.set_len(text.len() as u64))
        .map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// The pid a lock file names, if it can be read.
fn read_holder(path: &Path) -> Holder {
    Holder(
        fs::read_to_string(path)
            .ok()
            .and_then(|text| parse_pid(&text)),
    )
}

/// The pid on the first line of a lock file's content.
fn parse_pid(text: &str) -> Option<i32> {
    text.lines()
        .next()?
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rundmc-lock-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn me() -> Holder {
        Holder(Some(std::process::id() as i32))
    }

    #[test]
    fn the_first_line_of_a_lock_file_is_its_holder() {
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid("  77 \n\n456\n"), Some(77));
        assert_eq!(parse_pid(""), None);
        assert_eq!(parse_pid("0\n"), None);
        assert_eq!(parse_pid("-5\n"), None);
        assert_eq!(parse_pid("pid\n"), None);
        assert_eq!(me().to_string(), format!("pid {}", std::process::id()));
        assert_eq!(Holder(None).to_string(), "its pid not yet written");
    }

    #[tokio::test]
    async fn a_second_holder_is_refused_naming_the_file_and_the_pid() {
        let (depot, state) = (scratch("refused-depot"), scratch("refused-state"));
        let first = acquire(&[&depot, &state], None).await.unwrap();
        let paths: Vec<_> = first.paths().map(Path::to_path_buf).collect();
        assert_eq!(paths, [depot.join(LOCK_FILE), state.join(LOCK_FILE)]);
        let pid = format!("{}\n", std::process::id());
        assert_eq!(fs::read_to_string(depot.join(LOCK_FILE)).unwrap(), pid);

        let err = acquire(&[&depot, &state], None).await.unwrap_err();
        assert!(
            matches!(&err, LockError::Held { path, holder } if *path == depot.join(LOCK_FILE) && *holder == me()),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&depot.join(LOCK_FILE).display().to_string()));
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("--wait-for-lock"), "{text}");

        // The state directory alone is enough to refuse.
        let other = scratch("refused-other");
        let err = acquire(&[&other, &state], None).await.unwrap_err();
        assert!(
            matches!(&err, LockError::Held { path, .. } if *path == state.join(LOCK_FILE)),
            "{err:?}"
        );
        drop(first);
        for d in [depot, state, other] {
            let _ = fs::remove_dir_all(d);
        }
    }

    #[tokio::test]
    async fn a_released_lock_is_taken_again_and_names_its_new_holder() {
        let dir = scratch("released");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(LOCK_FILE), "4194304999\n").unwrap();
        drop(acquire(&[&dir], None).await.unwrap());
        let again = acquire(&[&dir], None).await.unwrap();
        assert_eq!(read_holder(&dir.join(LOCK_FILE)), me());
        drop(again);
        let _ = fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_depot_that_is_also_the_state_directory_is_locked_once() {
        let dir = scratch("same");
        let lock = acquire(&[&dir, &dir], None).await.unwrap();
        assert_eq!(lock.paths().count(), 1);
        drop(lock);
        let _ = fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_waiting_holder_takes_over_when_the_first_lets_go() {
        let dir = scratch("takeover");
        let first = acquire(&[&dir], None).await.unwrap();
        let waiter = {
            let dir = dir.clone();
            tokio::spawn(async move { acquire(&[&dir], Some(Duration::from_secs(60))).await })
        };
        drop(first);
        let second = waiter.await.unwrap().unwrap();
        assert_eq!(second.paths().count(), 1);
        drop(second);
        let _ = fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_wait_that_runs_out_names_the_file_the_pid_and_the_wait() {
        let dir = scratch("timeout");
        let first = acquire(&[&dir], None).await.unwrap();
        let err = acquire(&[&dir], Some(Duration::from_millis(200)))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LockError::TimedOut { path, holder, .. } if *path == dir.join(LOCK_FILE) && *holder == me()),
            "{err:?}"
        );
        assert!(err.to_string().contains("after waiting 200ms"), "{err}");
        drop(first);
        let _ = fs::remove_dir_all(dir);
    }
}
