//! `GET` and `PUT /v1/containers/{name}/archive?path=P`: a path in the
//! container as a tar stream, and a tar stream unpacked at a path, through
//! the containerizer's stream out and in (`rundmc nstar` in the container's
//! mount namespace: the image needs no tar, and symlinks resolve inside the
//! container's root, never the node's).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::node::{Node, internal};
use super::wire::{ApiError, ErrorKind};
use super::{Body, channel_body, json, query};

/// The pipe between nstar and the connection.
const PIPE: usize = 256 << 10;

fn path_param(req: &Request<Incoming>) -> Result<String, ApiError> {
    match query(req).get("path") {
        Some(p) if p.starts_with('/') => Ok(p.clone()),
        _ => Err(ApiError::new(
            ErrorKind::BadRequest,
            "path: an absolute path in the container is needed",
        )),
    }
}

/// A stream error as the user's (no such path: 404) or the agent's.
fn stream_error(e: crate::containerizer::ContainerizerError) -> ApiError {
    let mut err = internal(e);
    if err.kind == ErrorKind::Internal && err.message.contains("No such file") {
        err.kind = ErrorKind::NotFound;
    }
    err
}

/// `GET`: the path as a tar stream. The first bytes are awaited before the
/// answer, so a path that is not there is a 404, not an empty archive.
pub async fn get(
    node: Arc<Node>,
    name: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let handle = node.resolve(name)?;
    let path = path_param(req)?;
    let (mut writer, mut reader) = tokio::io::duplex(PIPE);
    let n2 = Arc::clone(&node);
    let h2 = handle.clone();
    let packer = tokio::spawn(async move {
        n2.containerizer
            .stream_out(&h2, &path, None, &mut writer)
            .await
    });
    let mut first = vec![0u8; PIPE];
    let n = reader.read(&mut first).await.unwrap_or(0);
    if n == 0 {
        packer
            .await
            .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?
            .map_err(stream_error)?;
    }
    first.truncate(n);
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        if tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; PIPE];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 || tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(channel_body(rx));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-tar"),
    );
    Ok(r)
}

/// `PUT`: unpack the body (a tar stream) at the path, creating it; as root,
/// the archive's owners and modes are kept.
pub async fn put(
    node: Arc<Node>,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let handle = node.resolve(name)?;
    let path = path_param(&req)?;
    let (mut writer, reader) = tokio::io::duplex(PIPE);
    let mut body = req.into_body();
    let feeder = tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map(|f| f.into_data()) else {
                return Err("the upload broke off".to_string());
            };
            if let Ok(d) = data
                && writer.write_all(&d).await.is_err()
            {
                return Ok(()); // nstar stopped reading: its error says why
            }
        }
        Ok(())
    });
    let unpacked = node
        .containerizer
        .stream_in(&handle, &path, None, reader)
        .await;
    let fed = feeder.await.unwrap_or(Ok(()));
    unpacked.map_err(stream_error)?;
    fed.map_err(|m| ApiError::new(ErrorKind::BadRequest, m))?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "path": path })))
}
