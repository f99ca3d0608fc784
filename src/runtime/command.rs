//! The one door through which the runtime adapter starts processes: the
//! [`CommandRunner`] trait, and [`TokioRunner`], its implementation on tokio.
//! Each child runs in a process group of its own, so that a timeout or a
//! dropped call kills it together with anything it forked and left behind
//! (a hung `runc` may hold `runc init` children).

use crate::procgroup::{GroupGuard, exchange};
use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

/// What the child gets on stdin.
#[derive(Debug, Clone)]
pub enum Input {
    /// `/dev/null`.
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// This descriptor itself (a duplicate of it): a `create` passes its
    /// stdin on to the container's init, which serves requests on the
    /// listening socket given this way (see `rundmc_init`).
    Fd(Arc<OwnedFd>),
}

/// Where the child's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// Pipes, read to the end and returned.
    Pipes,
    /// `/dev/null`: for a `create`, whose container init inherits the
    /// runtime's stdio and would hold our pipes open for its whole life.
    Discard,
}

/// One run of a program to completion.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The program, then its arguments.
    pub argv: Vec<OsString>,
    /// What goes to stdin.
    pub input: Input,
    /// Where stdout and stderr go.
    pub capture: Capture,
    /// When it passes, the child's process group is killed.
    pub timeout: Duration,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The exit status.
    pub status: ExitStatus,
    /// Everything written to stdout (empty with [`Capture::Discard`]).
    pub stdout: Vec<u8>,
    /// Everything written to stderr (empty with [`Capture::Discard`]).
    pub stderr: Vec<u8>,
}

/// A running program's stdout, line by line. Dropping `lines` kills the
/// program; `exit` then reports how it ended.
#[derive(Debug)]
pub struct LineStream {
    /// Each line of stdout, without its newline.
    pub lines: mpsc::Receiver<String>,
    /// The exit status once the program is gone (`None` if it could not be
    /// waited for).
    pub exit: oneshot::Receiver<Option<ExitStatus>>,
}

/// Why a program could not be run to the end.
#[derive(Debug, Error)]
pub enum RunError {
    /// The argv was empty.
    #[error("empty command line")]
    Empty,
    /// The program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It ran past its timeout and was killed.
    #[error("{program} did not finish within {after:?}")]
    TimedOut {
        /// The program.
        program: PathBuf,
        /// The timeout.
        after: Duration,
    },
    /// Its pipes or its exit status could not be read.
    #[error("i/o with {program}: {source}")]
    Io {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Starts processes for the runtime adapter.
pub trait CommandRunner: Send + Sync + 'static {
    /// Run `invocation` to completion, or kill it when its timeout passes.
    fn run(
        &self,
        invocation: Invocation,
    ) -> impl Future<Output = Result<Finished, RunError>> + Send;

    /// Start `argv` with stdin and stderr on /dev/null and stream its stdout
    /// by line. Must be called within a tokio runtime.
    fn stream(&self, argv: Vec<OsString>) -> Result<LineStream, RunError>;
}

/// [`CommandRunner`] on `tokio::process`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioRunner;

fn program_of(argv: &[OsString]) -> Result<PathBuf, RunError> {
    argv.first().map(PathBuf::from).ok_or(RunError::Empty)
}

fn spawn(argv: &[OsString], stdin: Stdio, out: Stdio, err: Stdio) -> Result<Child, RunError> {
    let program = program_of(argv)?;
    Command::new(&program)
        .args(&argv[1..])
        .stdin(stdin)
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| RunError::Spawn { program, source })
}

async fn drive(child: &mut Child, input: &[u8]) -> io::Result<Finished> {
    let ended = exchange(child, input).await?;
    Ok(Finished {
        status: ended.status,
        stdout: ended.stdout,
        stderr: ended.stderr,
    })
}

impl CommandRunner for TokioRunner {
    async fn run(&self, invocation: Invocation) -> Result<Finished, RunError> {
        let program = program_of(&invocation.argv)?;
        let (stdin, bytes) = match invocation.input {
            Input::Null => (Stdio::null(), Vec::new()),
            Input::Bytes(bytes) => (Stdio::piped(), bytes),
            Input::Fd(fd) => {
                let fd = fd.try_clone().map_err(|source| RunError::Spawn {
                    program: program.clone(),
                    source,
                })?;
                (Stdio::from(fd), Vec::new())
            }
        };
        let (out, err) = match invocation.capture {
            Capture::Pipes => (Stdio::piped(), Stdio::piped()),
            Capture::Discard => (Stdio::null(), Stdio::null()),
        };
        let mut child = spawn(&invocation.argv, stdin, out, err)?;
        let mut guard = GroupGuard::new(&child);
        match tokio::time::timeout(invocation.timeout, drive(&mut child, &bytes)).await {
            Ok(Ok(finished)) => {
                guard.disarm();
                Ok(finished)
            }
            Ok(Err(source)) => Err(RunError::Io { program, source }),
            Err(_elapsed) => {
                guard.kill();
                // Reap it, so that no zombie is left behind either.
                let _ = child.wait().await;
                Err(RunError::TimedOut {
                    program,
                    after: invocation.timeout,
                })
            }
        }
    }

    fn stream(&self, argv: Vec<OsString>) -> Result<LineStream, RunError> {
        let mut child = spawn(&argv, Stdio::null(), Stdio::piped(), Stdio::null())?;
        let stdout = child.stdout.take();
        let (line_tx, lines) = mpsc::channel(16);
        let (exit_tx, exit) = oneshot::channel();
        tokio::spawn(async move {
            let mut guard = GroupGuard::new(&child);
            if let Some(stdout) = stdout {
                forward_lines(stdout, &line_tx).await;
            }
            // Either the program closed its stdout or nobody listens anymore;
            // in the second case it must not outlive the listener.
            let status = tokio::select! {
                status = child.wait() => status.ok(),
                () = line_tx.closed() => {
                    guard.kill();
                    child.wait().await.ok()
                }
            };
            guard.disarm();
            let _ = exit_tx.send(status);
        });
        Ok(LineStream { lines, exit })
    }
}

async fn forward_lines<R: AsyncRead + Unpin>(pipe: R, tx: &mpsc::Sender<String>) {
    let mut reader = BufReader::new(pipe).lines();
    loop {
        tokio::select! {
            () = tx.closed() => return,
            line = reader.next_line() => match line {
                Ok(Some(line)) => {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
                Ok(None) | Err(_) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rundmc-runner-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sh(script: &str, input: Input, timeout: Duration) -> Invocation {
        let argv = vec!["/bin/sh".into(), "-c".into(), script.into()];
        Invocation {
            argv,
            input,
            capture: Capture::Pipes,
            timeout,
        }
    }

    fn alive(pid: &str) -> bool {
        Path::new("/proc").join(pid).join("cmdline").exists()
            && !std::fs::read(Path::new("/proc").join(pid).join("cmdline"))
                .unwrap_or_default()
                .is_empty()
    }

    #[tokio::test]
    async fn run_feeds_stdin_and_captures_both_outputs_and_the_code() {
        let invocation = sh(
            "cat; echo oops >&2; exit 3",
            Input::Bytes(b"{\"x\":1}".to_vec()),
            Duration::from_secs(10),
        );
        let finished = TokioRunner.run(invocation).await.unwrap();
        assert_eq!(finished.status.code(), Some(3));
        assert_eq!(finished.stdout, b"{\"x\":1}");
        assert_eq!(finished.stderr, b"oops\n");
    }

    #[tokio::test]
    async fn discarded_output_is_not_waited_for() {
        // A background sleep would hold an inherited pipe open for a minute.
        let dir = scratch("discard");
        let pid_file = dir.join("sleeper");
        let script = format!("sleep 60 & echo $! > {}", pid_file.display());
        let mut invocation = sh(&script, Input::Null, Duration::from_secs(10));
        invocation.capture = Capture::Discard;
        let started = std::time::Instant::now();
        let finished = TokioRunner.run(invocation).await.unwrap();
        let sleeper: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sleeper),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(finished.status.success());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn timeout_kills_the_child_and_what_it_forked() {
        let dir = scratch("timeout");
        let pid_file = dir.join("grandchild");
        let script = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
        let err = TokioRunner
            .run(sh(&script, Input::Null, Duration::from_millis(300)))
            .await
            .unwrap_err();
        assert!(matches!(err, RunError::TimedOut { .. }), "{err}");
        let grandchild = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_owned();
        std::fs::remove_dir_all(&dir).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while alive(&grandchild) {
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild {grandchild} survived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let invocation = Invocation {
            argv: vec!["/nonexistent/runc".into()],
            input: Input::Null,
            capture: Capture::Pipes,
            timeout: Duration::from_secs(1),
        };
        let err = TokioRunner.run(invocation).await.unwrap_err();
        assert!(
            matches!(err, RunError::Spawn { ref program, .. } if program == Path::new("/nonexistent/runc"))
        );
    }

    #[tokio::test]
    async fn stream_gives_lines_and_dropping_it_kills_the_program() {
        let argv = vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo one; echo two; exec sleep 60".into(),
        ];
        let LineStream { mut lines, exit } = TokioRunner.stream(argv).unwrap();
        assert_eq!(lines.recv().await.as_deref(), Some("one"));
        assert_eq!(lines.recv().await.as_deref(), Some("two"));
        drop(lines);
        let status = tokio::time::timeout(Duration::from_secs(5), exit)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(!status.success(), "killed, not exited: {status:?}");
    }
}
