//! The local API: HTTP/1.1 and JSON on a unix socket, versioned under
//! `/v1` (docs/api.md), for the `rundmc ps|get|describe|logs|exec|...`
//! verbs. Who may connect is the socket's business: mode 0660, owned by
//! root and `--api-group`. It reads through [`node::Node`] and never
//! touches runc or the depot's files directly.

use std::collections::HashMap;
use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::UnixListener;

pub mod archive;
pub mod attach;
pub mod console;
pub mod events;
pub mod exec;
pub mod frame;
pub mod logs;
pub mod node;
pub mod stats;
pub mod wire;

use node::Node;
use wire::{ApiError, ErrorKind};

/// A response body: whole, or streamed.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Why the API socket could not be set up.
#[derive(Debug, Error)]
pub enum LocalApiError {
    /// Binding, or preparing the path, failed.
    #[error("API socket {path}: {source}")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--api-group` names no group.
    #[error("--api-group {0}: no such group")]
    NoSuchGroup(String),
}

/// Where the socket goes and who may use it.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// The socket's path.
    pub path: PathBuf,
    /// The group given read and write on it besides root.
    pub group: Option<String>,
}

/// The group id `--api-group` names: a group name, or a number.
fn group_id(group: &str) -> Result<nix::unistd::Gid, LocalApiError> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(n));
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid),
        _ => Err(LocalApiError::NoSuchGroup(group.to_string())),
    }
}

/// Bind the socket now (so a bad path fails start-up), give it mode 0660
/// and its group, and serve in the background.
pub async fn serve(config: SocketConfig, node: Node) -> Result<(), LocalApiError> {
    let listener = bind(&config)?;
    let node = Arc::new(node);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let node = Arc::clone(&node);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let node = Arc::clone(&node);
                    async move { Ok::<_, Infallible>(route(node, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(())
}

fn bind(config: &SocketConfig) -> Result<UnixListener, LocalApiError> {
    let path = &config.path;
    let err = |source| LocalApiError::Socket {
        path: path.clone(),
        source,
    };
    let gid = config.group.as_deref().map(group_id).transpose()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    remove_stale(path).map_err(err)?;
    // Created under the default umask, so until the chmod below only the
    // owner (root) may write, i.e. connect.
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| err(e.into()))?;
    }
    Ok(listener)
}

/// Remove a socket a previous agent left; refuse to remove anything else.
fn remove_stale(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists and is not a socket",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The query string's parameters.
pub fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), unescape(v)),
            None => (kv.to_string(), String::new()),
        })
        .collect()
}

/// Percent-decoding of a query value or path segment (`+` is a space).
pub fn unescape(v: &str) -> String {
    let bytes = v.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let pair = bytes
            .get(i + 1)
            .copied()
            .and_then(hex)
            .zip(bytes.get(i + 2).copied().and_then(hex));
        match (bytes[i], pair) {
            (b'%', Some((hi, lo))) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encoding of a path segment (a name with `/` in it).
pub fn escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether the query has `key` set to anything but `false`/`0`.
pub fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v != "false" && v != "0")
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// A body streamed from a channel; it ends when every sender is gone.
pub fn channel_body(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok(hyper::body::Frame::data(chunk)), rx))
    });
    StreamBody::new(stream).boxed_unsync()
}

/// A JSON response.
pub fn json<T: serde::Serialize>(code: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(full(body));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// An error response.
pub fn error(e: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(code, e)
}

pub(crate) async fn route(node: Arc<Node>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix(wire::V1) else {
        return error(&ApiError::new(
            ErrorKind::NotFound,
            format!("{path}: not an API path (the API is under {})", wire::V1),
        ));
    };
    let owned: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(unescape)
        .collect();
    let parts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let result = match (req.method(), parts.as_slice()) {
        (&Method::GET, ["version"]) => Ok(json(
            StatusCode::OK,
            &serde_json::json!({"apiVersion": "v1", "version": env!("CARGO_PKG_VERSION")}),
        )),
        (&Method::POST, ["containers", name, "exec"]) => {
            let name = name.to_string();
            exec::exec(Arc::clone(&node), &name, req).await
        }
        (&Method::GET, ["containers", name, "archive"]) => {
            archive::get(Arc::clone(&node), name, &req).await
        }
        (&Method::PUT, ["containers", name, "archive"]) => {
            let name = name.to_string();
            archive::put(Arc::clone(&node), &name, req).await
        }
        (&Method::POST, ["containers", name, "attach"]) => {
            let name = name.to_string();
            attach::attach(Arc::clone(&node), &name, req).await
        }
        (&Method::GET, ["stats"]) => {
            let q = query(&req);
            let rows = stats::rows(&node, q.get("name").map(String::as_str)).await;
            rows.map(|r| json(StatusCode::OK, &r))
        }
        (&Method::GET, ["events"]) => {
            let q = query(&req);
            let since = q.get("since").cloned().filter(|s| !s.is_empty());
            let body = events::stream(node.events_path.clone(), since, flag(&q, "follow"));
            Ok(Response::new(body))
        }
        (&Method::GET, ["containers"]) => {
            let all = flag(&query(&req), "all");
            Ok(json(StatusCode::OK, &node.list(all).await))
        }
        (&Method::GET, ["containers", name]) => get(&node, name).await,
        (&Method::GET, ["containers", name, "logs"]) => container_logs(&node, name, &req),
        _ => Err(ApiError::new(
            ErrorKind::NotFound,
            format!("{} {path}: no such endpoint", req.method()),
        )),
    };
    result.unwrap_or_else(|e| error(&e))
}

async fn get(node: &Node, name: &str) -> Result<Response<Body>, ApiError> {
    let handle = node.resolve(name)?;
    Ok(json(StatusCode::OK, &node.detail(&handle).await?))
}

fn container_logs(
    node: &Node,
    name: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let handle = node.resolve(name)?;
    let q = logs::LogQuery::parse(&query(req))?;
    let dir = logs::process_dir(node, name, &handle, &q)?;
    let mut r = Response::new(logs::stream(dir, q));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_unescaped() {
        assert_eq!(unescape("a%2Fb+c"), "a/b c");
        assert_eq!(unescape("100%"), "100%");
        assert_eq!(unescape("%zz"), "%zz");
        assert_eq!(unescape(&escape("team/web é")), "team/web é");
    }
}
