//! `POST /v1/containers/{name}/exec`: run a process in a container under
//! its own supervisor, like any other (confined, reaped, recorded in its
//! process directory), and stream it over the upgraded connection: its
//! stdout and stderr records as they reach its log (stdin from the client
//! with `stdin`), or with `tty` a terminal whose master the agent holds.
//! The last frame is the exit status. See [`super::frame`] and docs/api.md.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Mutex;

use super::console::{self, ConsoleSocket};
use super::node::Node;
use super::wire::{ApiError, ErrorKind, ExecRequest, ExitStatus, STREAM_PROTOCOL};
use super::{Body, frame, full};
use crate::api::EnvVar;
use crate::containerizer::run::{RunSpec, Terminal};
use crate::process::{Exit, FollowFrom, Follower, Process, ProcessError, Stream};

/// The client's half of the connection, written by one task at a time.
type Writer = Arc<Mutex<WriteHalf<TokioIo<Upgraded>>>>;

/// Start the process, then answer 101 and stream it.
pub async fn exec(
    node: Arc<Node>,
    name: &str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let handle = node.resolve(name)?;
    check_upgrade(&req)?;
    let upgrade = hyper::upgrade::on(&mut req);
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::new(ErrorKind::BadRequest, format!("reading the request: {e}")))?
        .to_bytes();
    let exec: ExecRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorKind::BadRequest, format!("exec request: {e}")))?;
    let id = exec_id();
    let console = match exec.tty {
        true => Some(
            ConsoleSocket::bind(&node.console_dir.join(format!("{id}.sock")))
                .map_err(|e| ApiError::new(ErrorKind::Internal, format!("console socket: {e}")))?,
        ),
        false => None,
    };
    let spec = run_spec(
        &exec,
        id,
        console.as_ref().map(|_| node.console_dir.clone()),
    )?;
    let process = node
        .containerizer
        .run(&handle, &spec)
        .await
        .map_err(start_error)?;
    let master = match &console {
        Some(c) => Some(c.receive().await.map_err(|e| {
            let _ = process.signal(libc::SIGKILL);
            ApiError::new(
                ErrorKind::Internal,
                format!("{name}: the process's terminal: {e}"),
            )
        })?),
        None => None,
    };
    drop(console);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => stream(process, master, exec.stdin, io).await,
            Err(e) => tracing::warn!(%handle, error = %e, "exec: the client's upgrade failed"),
        }
        prune_execs(&node, &handle);
    });
    Ok(switching_protocols())
}

/// The `101` answer that hands the connection over to the stream protocol.
pub fn switching_protocols() -> Response<Body> {
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static(STREAM_PROTOCOL),
    );
    r
}

/// Exec'd processes whose records are kept per container, the newest.
pub const KEEP_EXECS: usize = 16;

/// Remove the records of all but the newest [`KEEP_EXECS`] finished execs
/// of `handle` (ids sort by start time), so that a container exec'd into
/// every minute does not pile up directories.
fn prune_execs(node: &Node, handle: &crate::api::Handle) {
    let Ok(list) = node.containerizer.processes(handle) else {
        return;
    };
    let ended: Vec<_> = list
        .into_iter()
        .filter(|p| {
            p.id.starts_with("exec-") && matches!(p.state, crate::process::ProcState::Exited(_))
        })
        .collect();
    for p in &ended[..ended.len().saturating_sub(KEEP_EXECS)] {
        if let Err(e) = node.containerizer.remove_process(handle, &p.id) {
            tracing::warn!(%handle, process = %p.id, error = %e, "cannot remove an old exec's record");
        }
    }
}

/// An exec must ask to upgrade to the stream protocol.
pub fn check_upgrade(req: &Request<Incoming>) -> Result<(), ApiError> {
    let asked = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok());
    match asked {
        Some(STREAM_PROTOCOL) => Ok(()),
        _ => Err(ApiError::new(
            ErrorKind::BadRequest,
            format!(
                "this endpoint streams: send Connection: Upgrade and Upgrade: {STREAM_PROTOCOL}"
            ),
        )),
    }
}

/// A fresh process id for an exec.
fn exec_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("exec-{nanos:x}")
}

/// What the containerizer runs for `exec` (pure).
fn run_spec(
    exec: &ExecRequest,
    id: String,
    console_dir: Option<PathBuf>,
) -> Result<RunSpec, ApiError> {
    if exec.args.is_empty() {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            "args: a command is needed",
        ));
    }
    let env = exec
        .env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok(EnvVar {
                name: k.to_string(),
                value: v.to_string(),
            }),
            _ => Err(ApiError::new(
                ErrorKind::BadRequest,
                format!("env: {kv:?} is not NAME=VALUE"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let terminal = console_dir.map(|dir| Terminal {
        socket: dir.join(format!("{id}.sock")),
        rows: exec.rows.max(1),
        cols: exec.cols.max(1),
    });
    Ok(RunSpec {
        id: Some(id),
        args: exec.args.clone(),
        env,
        working_dir: exec.working_dir.clone(),
        user: exec.user.clone(),
        stdin: exec.stdin && terminal.is_none(),
        terminal,
        ..RunSpec::default()
    })
}

/// A failed run: the runtime's refusal is the user's business (422), a
/// missing container 404, the rest the agent's.
fn start_error(e: crate::containerizer::ContainerizerError) -> ApiError {
    use crate::containerizer::ErrorKind as K;
    match e.kind() {
        Some(K::Process {
            source: ProcessError::StartFailed { message, .. },
        }) => ApiError::new(ErrorKind::StartFailed, message.clone()),
        _ => super::node::internal(e),
    }
}

/// Relay the process and the client until the process ends.
async fn stream(process: Process, master: Option<OwnedFd>, stdin: bool, io: Upgraded) {
    let (rd, wr) = tokio::io::split(TokioIo::new(io));
    let wr: Writer = Arc::new(Mutex::new(wr));
    let relayed = match master {
        Some(m) => relay_tty(&process, m, rd, &wr).await,
        None => relay_pipes(&process, stdin, rd, &wr).await,
    };
    let status = match relayed {
        Ok(()) => exit_status(&process).await,
        Err(e) => ExitStatus {
            exit_code: 1,
            process: process.id().to_string(),
            message: Some(format!("the stream failed: {e}")),
        },
    };
    let payload = serde_json::to_vec(&status).unwrap_or_default();
    let mut w = wr.lock().await;
    let _ = frame::write(&mut *w, frame::EXIT, &payload).await;
    let _ = w.shutdown().await;
}

/// How the process ended.
async fn exit_status(process: &Process) -> ExitStatus {
    let (exit_code, message) = match process.wait().await {
        Ok(Exit::Exited(r)) => (r.exit_code, r.start_error),
        Ok(Exit::Lost { reason }) => (1, Some(reason)),
        Err(e) => (1, Some(e.to_string())),
    };
    ExitStatus {
        exit_code,
        process: process.id().to_string(),
        message,
    }
}

/// Without a terminal: the log's records as they come, stdin from the client.
async fn relay_pipes(
    process: &Process,
    stdin: bool,
    rd: ReadHalf<TokioIo<Upgraded>>,
    wr: &Writer,
) -> std::io::Result<()> {
    let input = match stdin {
        true => Some(tokio::spawn(pump_stdin(process.stdin().ok(), rd))),
        false => None,
    };
    let mut follower =
        Follower::new(process.dir(), FollowFrom::Start).map_err(std::io::Error::other)?;
    while let Some(line) = follower.next().await {
        let line = line.map_err(std::io::Error::other)?;
        let kind = match line.stream {
            Stream::Stdout => frame::STDOUT,
            Stream::Stderr => frame::STDERR,
        };
        let mut data = line.content;
        if !line.partial {
            data.push(b'\n');
        }
        frame::write(&mut *wr.lock().await, kind, &data).await?;
    }
    if let Some(i) = input {
        i.abort();
    }
    Ok(())
}

/// Client stdin frames into the process's stdin fifo; its end closes it.
async fn pump_stdin(
    mut fifo: Option<tokio::net::unix::pipe::Sender>,
    mut rd: impl AsyncRead + Unpin,
) {
    while let Ok(Some((kind, data))) = frame::read(&mut rd).await {
        let open = match (kind, &mut fifo) {
            (frame::STDIN, Some(f)) => f.write_all(&data).await.is_ok(),
            (frame::CLOSE_STDIN, _) => false,
            _ => true,
        };
        if !open {
            fifo = None;
        }
    }
}

/// With a terminal: the master's output to the client, the client's input
/// and resizes to the master, until the process ends.
async fn relay_tty(
    process: &Process,
    master: OwnedFd,
    rd: ReadHalf<TokioIo<Upgraded>>,
    wr: &Writer,
) -> std::io::Result<()> {
    let master = Arc::new(console::async_master(master)?);
    let input = tokio::spawn(tty_input(Arc::clone(&master), rd));
    let exited = process.wait();
    tokio::pin!(exited);
    let mut buf = vec![0u8; 32 << 10];
    loop {
        tokio::select! {
            ready = master.readable() => {
                let mut guard = ready?;
                match guard.try_io(|fd| read_fd(fd.get_ref(), &mut buf)) {
                    Ok(Ok(0)) | Ok(Err(_)) => break, // EIO: every holder of the terminal closed it
                    Ok(Ok(n)) => frame::write(&mut *wr.lock().await, frame::STDOUT, &buf[..n]).await?,
                    Err(_would_block) => continue,
                }
            }
            _ = &mut exited => {
                // What it wrote before it ended is still in the master.
                while let Ok(n) = read_fd(master.get_ref(), &mut buf) {
                    if n == 0 { break; }
                    frame::write(&mut *wr.lock().await, frame::STDOUT, &buf[..n]).await?;
                }
                break;
            }
        }
    }
    input.abort();
    Ok(())
}

fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    nix::unistd::read(fd, buf).map_err(std::io::Error::from)
}

/// Client frames to the terminal: input bytes, resizes.
async fn tty_input(master: Arc<tokio::io::unix::AsyncFd<OwnedFd>>, mut rd: impl AsyncRead + Unpin) {
    while let Ok(Some((kind, data))) = frame::read(&mut rd).await {
        let written = match (kind, frame::parse_resize(&data)) {
            (frame::STDIN, _) => write_all(&master, &data).await,
            (frame::RESIZE, Some((rows, cols))) => {
                let _ = console::resize(master.get_ref(), rows, cols);
                Ok(())
            }
            _ => Ok(()),
        };
        if written.is_err() {
            return;
        }
    }
}

async fn write_all(
    master: &tokio::io::unix::AsyncFd<OwnedFd>,
    mut data: &[u8],
) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = master.writable().await?;
        match guard
            .try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from))
        {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_becomes_a_run_spec() {
        let exec = ExecRequest {
            args: vec!["sh".into()],
            tty: true,
            stdin: true,
            env: vec!["A=1=2".into()],
            rows: 24,
            cols: 80,
            ..ExecRequest::default()
        };
        let spec = run_spec(&exec, "exec-1".into(), Some("/run/c".into())).unwrap();
        assert_eq!(spec.env[0].value, "1=2");
        let t = spec.terminal.unwrap();
        assert_eq!(
            (t.socket, t.rows, t.cols),
            ("/run/c/exec-1.sock".into(), 24, 80)
        );
        assert!(!spec.stdin, "a terminal's input goes through its master");
        let bad = ExecRequest {
            env: vec!["=x".into()],
            ..exec.clone()
        };
        assert!(run_spec(&bad, "e".into(), None).is_err());
        let none = ExecRequest::default();
        assert!(run_spec(&none, "e".into(), None).is_err());
    }
}
