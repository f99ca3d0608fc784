//! `rundmc exec`: run a command in a container through the agent and wire
//! it to this terminal. Without `-t` stdout and stderr stay apart and stdin
//! is passed with `-i`; with `-t` the agent holds a real terminal, this one
//! goes raw for the duration, and window changes (SIGWINCH) resize it.
//! The command's exit code is this one's.

use std::io::{IsTerminal, Write};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_util::rt::TokioIo;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::sync::mpsc;

use super::client::{Client, ClientError};
use super::container_path;
use crate::server::local::console;
use crate::server::local::frame;
use crate::server::local::wire::{ExecRequest, ExitStatus, STREAM_PROTOCOL};

/// `rundmc exec [-i] [-t] [-u USER] [-w DIR] [-e K=V] NAME -- CMD...`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Pass stdin to the command.
    #[arg(long, short)]
    pub interactive: bool,
    /// A terminal: raw mode here, a pty in the container (stdout and stderr merge).
    #[arg(long, short)]
    pub tty: bool,
    /// Run as `uid`, `uid:gid` or a user of the image's /etc/passwd.
    #[arg(long, short)]
    pub user: Option<String>,
    /// Working directory in the container.
    #[arg(long, short)]
    pub workdir: Option<String>,
    /// `NAME=VALUE` to set. Repeatable.
    #[arg(long, short)]
    pub env: Vec<String>,
    /// The container: a file-sourced container's name, or `namespace/name`.
    pub name: String,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

/// Exit code: the command could not be run (as Docker and podman).
pub const EXIT_CANNOT_RUN: i32 = 126;
/// Exit code: the command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// The API's request for `args`, sized to this terminal with `-t`.
pub(crate) fn exec_request(args: &ExecArgs) -> ExecRequest {
    let (rows, cols) = match args.tty {
        true => console::size(&std::io::stdin()).unwrap_or((24, 80)),
        false => (0, 0),
    };
    ExecRequest {
        args: args.command.clone(),
        tty: args.tty,
        stdin: args.interactive,
        user: args.user.clone(),
        working_dir: args.workdir.clone(),
        env: args.env.clone(),
        rows,
        cols,
    }
}

/// `rundmc exec`: the command's exit code.
pub async fn exec(client: &Client, args: &ExecArgs) -> Result<i32, ClientError> {
    if args.tty && !std::io::stdin().is_terminal() {
        return Err(protocol(client, "-t needs a terminal on stdin"));
    }
    let body = exec_request(args);
    let req = Request::post(format!("{}/exec", container_path(&args.name)))
        .header(hyper::header::HOST, "rundmc")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, STREAM_PROTOCOL)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&body).unwrap_or_default(),
        )))
        .map_err(|e| protocol(client, e))?;
    let resp = match client.send(req).await {
        Err(ClientError::Api(e))
            if e.kind == crate::server::local::wire::ErrorKind::StartFailed =>
        {
            eprintln!("rundmc: {e}");
            return Ok(start_failure_code(&e.message));
        }
        other => other?,
    };
    let io = hyper::upgrade::on(resp)
        .await
        .map_err(|e| protocol(client, e))?;
    let raw = match args.tty {
        true => Some(RawMode::enter().map_err(|e| protocol(client, e))?),
        false => None,
    };
    let status = relay(TokioIo::new(io), args.interactive, args.tty).await;
    drop(raw);
    let status = status.map_err(|e| protocol(client, e))?;
    if let Some(m) = &status.message {
        eprintln!("rundmc: {m}");
    }
    Ok(status.exit_code)
}

/// 127 when the runtime could not find the command, else 126.
pub fn start_failure_code(message: &str) -> i32 {
    let m = message.to_lowercase();
    match m.contains("not found") || m.contains("no such file") {
        true => EXIT_NOT_FOUND,
        false => EXIT_CANNOT_RUN,
    }
}

fn protocol(client: &Client, e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol {
        path: client.socket().to_owned(),
        message: e.to_string(),
    }
}

/// The stream until the exit frame: output to stdout and stderr, stdin and
/// window changes to the agent.
pub(crate) async fn relay(
    io: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    interactive: bool,
    tty: bool,
) -> std::io::Result<ExitStatus> {
    let (mut rd, mut wr) = tokio::io::split(io);
    let (tx, mut frames) = mpsc::channel::<(u8, Vec<u8>)>(16);
    if interactive {
        let tx = tx.clone();
        std::thread::spawn(move || pump_stdin(tx));
    }
    if tty {
        tokio::spawn(watch_resizes(tx.clone()));
    }
    drop(tx);
    tokio::spawn(async move {
        while let Some((kind, data)) = frames.recv().await {
            if frame::write(&mut wr, kind, &data).await.is_err() {
                return;
            }
        }
    });
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        let Some((kind, data)) = frame::read(&mut rd).await? else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the agent closed the stream before the command's exit",
            ));
        };
        match kind {
            frame::STDOUT => {
                stdout.write_all(&data)?;
                stdout.flush()?;
            }
            frame::STDERR => {
                stderr.write_all(&data)?;
                stderr.flush()?;
            }
            frame::EXIT => return serde_json::from_slice(&data).map_err(std::io::Error::other),
            _ => {}
        }
    }
}

/// This stdin to the agent, then its end: on a thread of its own, since a
/// read of a terminal cannot be cancelled (the process exits past it).
fn pump_stdin(tx: mpsc::Sender<(u8, Vec<u8>)>) {
    use std::io::Read;
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 32 << 10];
    while let Ok(n) = stdin.read(&mut buf) {
        if n == 0 || tx.blocking_send((frame::STDIN, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    let _ = tx.blocking_send((frame::CLOSE_STDIN, Vec::new()));
}

/// Each SIGWINCH: the terminal's new size to the agent.
async fn watch_resizes(tx: mpsc::Sender<(u8, Vec<u8>)>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    while winch.recv().await.is_some() {
        if let Some((rows, cols)) = console::size(&std::io::stdin())
            && tx
                .send((frame::RESIZE, frame::resize(rows, cols)))
                .await
                .is_err()
        {
            return;
        }
    }
}

/// This terminal in raw mode until dropped.
pub(crate) struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode on stdin's terminal.
    pub(crate) fn enter() -> nix::Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_not_found_is_127() {
        let m = "exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH";
        assert_eq!(start_failure_code(m), 127);
        assert_eq!(start_failure_code("permission denied"), 126);
    }
}
