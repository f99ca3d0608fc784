//! [`Process`]: one supervised process, rebuilt from its directory alone.
//! Its state, its exit (awaited on the supervisor's pidfd, never polled),
//! signals through the supervisor, and its stdin.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rundmc_shim::protocol::{
    CONTROL_FIFO, Command, EXIT_JSON, ExitRecord, PID_FILE, STDIN_FIFO, ShimRecord,
};
use tokio::net::unix::pipe;

use super::files::{read_json, read_pid};
use super::shim::{open_live, read_record};
use super::{Exit, ProcState, ProcessError};

/// A process under a `rundmc-shim` supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    id: String,
    dir: PathBuf,
    pid: Option<i32>,
    shim: ShimRecord,
}

impl Process {
    /// Rebuilds a process from its directory, as a freshly started agent
    /// does: the id is the directory's name.
    pub fn attach(dir: impl Into<PathBuf>) -> Result<Process, ProcessError> {
        let dir = dir.into();
        let shim =
            read_record(&dir)?.ok_or_else(|| ProcessError::NotAProcessDir { dir: dir.clone() })?;
        let pid = read_pid(&dir.join(PID_FILE))?;
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Process { id, dir, pid, shim })
    }

    /// The process id (its directory's name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The process directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process's host pid; `None` when the runtime never started it.
    /// Only the supervisor acts on it (through a pidfd); do not signal it.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// The supervisor's pid and start time.
    pub fn supervisor(&self) -> &ShimRecord {
        &self.shim
    }

    /// The recorded exit, if the supervisor wrote one.
    pub fn exit_record(&self) -> Result<Option<ExitRecord>, ProcessError> {
        read_json(&self.dir.join(EXIT_JSON))
    }

    /// Running, exited, or lost (supervisor gone with nothing recorded).
    pub fn state(&self) -> Result<ProcState, ProcessError> {
        if let Some(rec) = self.exit_record()? {
            return Ok(ProcState::Exited(rec));
        }
        if open_live(&self.shim).is_some() {
            return Ok(ProcState::Running);
        }
        // It may have written exit.json just before it ended.
        Ok(match self.exit_record()? {
            Some(rec) => ProcState::Exited(rec),
            None => ProcState::Lost {
                reason: self.lost_reason(),
            },
        })
    }

    /// Waits until the process has ended. Event-driven: it waits for the
    /// supervisor's pidfd to become readable, then reads `exit.json`. A
    /// supervisor that died without writing it (e.g. SIGKILLed) makes the
    /// process [`Exit::Lost`] at once; this never hangs on a dead supervisor.
    pub async fn wait(&self) -> Result<Exit, ProcessError> {
        if let Some(rec) = self.exit_record()? {
            return Ok(Exit::Exited(rec));
        }
        if let Some(shim) = open_live(&self.shim) {
            shim.exited().await.map_err(ProcessError::io(&self.dir))?;
        }
        Ok(match self.exit_record()? {
            Some(rec) => Exit::Exited(rec),
            None => Exit::Lost {
                reason: self.lost_reason(),
            },
        })
    }

    fn lost_reason(&self) -> String {
        format!(
            "supervisor {} died without recording an exit status",
            self.shim.pid
        )
    }

    /// Asks the supervisor to send `signal` to the process. It signals
    /// through a pidfd, so a process that has ended (even one whose pid was
    /// reused) is never signalled; when no supervisor reads the control
    /// fifo the process has ended and this is [`ProcessError::NotRunning`]
    /// (the supervisor lets go of the fifo before it records the exit).
    pub fn signal(&self, signal: i32) -> Result<(), ProcessError> {
        let path = self.dir.join(CONTROL_FIFO);
        let mut fifo = self.open_fifo(&path)?;
        let mut line = serde_json::to_vec(&Command::Signal { signal }).map_err(|source| {
            ProcessError::BadRecord {
                path: path.clone(),
                source,
            }
        })?;
        line.push(b'\n');
        // Shorter than PIPE_BUF: written whole or not at all.
        fifo.write_all(&line).map_err(ProcessError::io(path))
    }

    fn open_fifo(&self, path: &Path) -> Result<std::fs::File, ProcessError> {
        let opened = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path);
        match opened {
            Ok(f) => Ok(f),
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::ENXIO))
                    || e.kind() == ErrorKind::NotFound =>
            {
                Err(ProcessError::NotRunning {
                    id: self.id.clone(),
                    fifo: path.to_owned(),
                })
            }
            Err(source) => Err(ProcessError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// A writer into the process's stdin (started with `stdin: true`).
    /// Closing the first writer gives the process end of file, unless it
    /// was started with `keep_stdin_open`: then writers come and go.
    pub fn stdin(&self) -> Result<pipe::Sender, ProcessError> {
        let path = self.dir.join(STDIN_FIFO);
        match pipe::OpenOptions::new().open_sender(&path) {
            Ok(s) => Ok(s),
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::ENXIO))
                    || e.kind() == ErrorKind::NotFound =>
            {
                Err(ProcessError::NotRunning {
                    id: self.id.clone(),
                    fifo: path,
                })
            }
            Err(source) => Err(ProcessError::Io { path, source }),
        }
    }
}
