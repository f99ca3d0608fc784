//! `POST /v1/containers/{name}/attach[?stdin=true]` (upgrade): the main
//! process's output from now on, framed as an exec's, until it ends; the
//! last frame is its exit status. A restart ends the attachment (attach
//! again for the next run).
//!
//! With `stdin=true` the client's stdin frames go to the process's stdin,
//! which its spec must keep open (`stdin: true`): the supervisor holds the
//! `stdin` fifo of its process directory, so any agent, a restarted one
//! too, can write to it. Detaching (a close-stdin frame, or the client
//! going away) ends only this session's writer: the process runs on, and
//! reads end of file only when its spec says `stdinOnce`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::node::Node;
use super::wire::{ApiError, ErrorKind, ExitStatus};
use super::{Body, flag, frame, query};
use crate::process::{Exit, FollowFrom, Follower, Process, ProcessError, Stream};
use rundmc_shim::protocol::STDIN_FIFO;

/// Answer 101 and stream the main process's output (and the client's
/// stdin to it, when asked).
pub async fn attach(
    node: Arc<Node>,
    name: &str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let handle = node.resolve(name)?;
    super::exec::check_upgrade(&req)?;
    let with_stdin = flag(&query(&req), "stdin");
    let id = node
        .main_run(&handle, false)
        .ok_or_else(|| ApiError::new(ErrorKind::Conflict, format!("{name} has no main process")))?;
    let process = Process::attach(node.containerizer.process_dir(&handle, &id))
        .map_err(|e| ApiError::new(ErrorKind::Conflict, format!("{name}: {e}")))?;
    let stdin = match with_stdin {
        true => Some(open_stdin(&process, name)?),
        false => None,
    };
    let follower = Follower::new(process.dir(), FollowFrom::End)
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("{name}: {e}")))?;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(io) = upgrade.await {
            relay(process, follower, stdin, TokioIo::new(io)).await;
        }
    });
    Ok(super::exec::switching_protocols())
}

/// A writer into the main process's stdin, or why there is none: a
/// process started without `stdin: true` has no fifo (its stdin is
/// `/dev/null`); one whose supervisor no longer holds the fifo has had
/// its stdin closed (`stdinOnce`, or the process closed it) or has ended.
fn open_stdin(process: &Process, name: &str) -> Result<pipe::Sender, ApiError> {
    let conflict = |m: String| ApiError::new(ErrorKind::Conflict, m);
    if std::fs::symlink_metadata(process.dir().join(STDIN_FIFO)).is_err() {
        return Err(conflict(format!(
            "{name}: its main process has no stdin to attach to (it reads /dev/null): \
             set spec.process.stdin: true to attach with -i"
        )));
    }
    process.stdin().map_err(|e| match e {
        ProcessError::NotRunning { .. } => conflict(format!(
            "{name}: the stdin of its main process ({}) is closed: spec.process.stdinOnce \
             closes it when the first attach detaches, until the next run (or the process \
             closed it, or ended)",
            process.id()
        )),
        e => ApiError::new(ErrorKind::Internal, format!("{name}: {e}")),
    })
}

/// Output to the client until the process ends (then its exit status) or
/// the client goes away; the client's stdin to the process meanwhile.
async fn relay(
    process: Process,
    mut follower: Follower,
    stdin: Option<pipe::Sender>,
    io: TokioIo<Upgraded>,
) {
    let (rd, mut wr) = tokio::io::split(io);
    let detached = async {
        match stdin {
            Some(fifo) => pump_stdin(fifo, rd).await,
            // Nothing to read: the client's going away shows on a write.
            None => std::future::pending().await,
        }
    };
    tokio::pin!(detached);
    loop {
        let line = tokio::select! {
            line = follower.next() => line,
            () = &mut detached => return,
        };
        let Some(Ok(line)) = line else { break };
        let kind = match line.stream {
            Stream::Stdout => frame::STDOUT,
            Stream::Stderr => frame::STDERR,
        };
        let mut data = line.content;
        if !line.partial {
            data.push(b'\n');
        }
        if frame::write(&mut wr, kind, &data).await.is_err() {
            return;
        }
    }
    let status = exit_status(&process).await;
    let _ = frame::write(
        &mut wr,
        frame::EXIT,
        &serde_json::to_vec(&status).unwrap_or_default(),
    )
    .await;
    let _ = wr.shutdown().await;
}

/// How the process ended.
async fn exit_status(process: &Process) -> ExitStatus {
    let (exit_code, message) = match process.wait().await {
        Ok(Exit::Exited(r)) => (r.exit_code, None),
        Ok(Exit::Lost { reason }) => (1, Some(reason)),
        Err(e) => (1, Some(e.to_string())),
    };
    ExitStatus {
        exit_code,
        process: process.id().to_string(),
        message,
    }
}

/// The client's stdin frames into the fifo. A close-stdin frame, or a
/// write the fifo refuses (the process closed its stdin), drops this
/// session's writer; returns when the client's stream ends (it detached).
async fn pump_stdin(fifo: pipe::Sender, mut rd: impl AsyncRead + Unpin) {
    let mut fifo = Some(fifo);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames in, bytes out; the writer is dropped at close-stdin, not at
    /// the end of the stream.
    #[tokio::test]
    async fn stdin_frames_reach_the_fifo_until_close_stdin() {
        let path = std::env::temp_dir().join(format!("rundmc-attach-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut rx = pipe::OpenOptions::new().open_receiver(&path).unwrap();
        let tx = pipe::OpenOptions::new().open_sender(&path).unwrap();
        let mut frames = frame::encode(frame::STDIN, b"one\n");
        frames.extend(frame::encode(frame::CLOSE_STDIN, b""));
        frames.extend(frame::encode(frame::STDIN, b"dropped\n"));
        pump_stdin(tx, &frames[..]).await;
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut rx, &mut got)
            .await
            .unwrap();
        assert_eq!(got, b"one\n");
        let _ = std::fs::remove_file(&path);
    }
}
