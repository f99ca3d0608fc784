//! `POST /v1/containers/{name}/attach` (upgrade): the main process's output
//! from now on, framed as an exec's, until it ends; the last frame is its
//! exit status. A restart ends the attachment (attach again for the next run).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::node::Node;
use super::wire::{ApiError, ErrorKind, ExitStatus, STREAM_PROTOCOL};
use super::{Body, frame, full};
use crate::process::{Exit, FollowFrom, Follower, Process, Stream};

/// Answer 101 and stream the main process's output.
pub async fn attach(
    node: Arc<Node>,
    name: &str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let handle = node.resolve(name)?;
    super::exec::check_upgrade(&req)?;
    let id = node
        .main_run(&handle, false)
        .ok_or_else(|| ApiError::new(ErrorKind::Conflict, format!("{name} has no main process")))?;
    let process = Process::attach(node.containerizer.process_dir(&handle, &id))
        .map_err(|e| ApiError::new(ErrorKind::Conflict, format!("{name}: {e}")))?;
    let follower = Follower::new(process.dir(), FollowFrom::End)
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("{name}: {e}")))?;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(io) = upgrade.await {
            relay(process, follower, TokioIo::new(io)).await;
        }
    });
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
    Ok(r)
}

async fn relay(
    process: Process,
    mut follower: Follower,
    mut io: TokioIo<hyper::upgrade::Upgraded>,
) {
    while let Some(Ok(line)) = follower.next().await {
        let kind = match line.stream {
            Stream::Stdout => frame::STDOUT,
            Stream::Stderr => frame::STDERR,
        };
        let mut data = line.content;
        if !line.partial {
            data.push(b'\n');
        }
        if frame::write(&mut io, kind, &data).await.is_err() {
            return;
        }
    }
    let (exit_code, message) = match process.wait().await {
        Ok(Exit::Exited(r)) => (r.exit_code, None),
        Ok(Exit::Lost { reason }) => (1, Some(reason)),
        Err(e) => (1, Some(e.to_string())),
    };
    let status = ExitStatus {
        exit_code,
        process: process.id().to_string(),
        message,
    };
    let _ = frame::write(
        &mut io,
        frame::EXIT,
        &serde_json::to_vec(&status).unwrap_or_default(),
    )
    .await;
    let _ = io.shutdown().await;
}
