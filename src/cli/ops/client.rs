//! The CLI's side of the local API: one HTTP/1.1 connection per request on
//! the unix socket, and the errors a user sees when there is no agent, no
//! permission, or no such container.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::net::UnixStream;

use crate::server::local::wire::{ApiError, ErrorKind};

/// Where the CLI looks for the agent when neither `--api-socket` nor
/// `RUNDMC_API_SOCKET` says (the agent's default with its default state dir).
pub const DEFAULT_SOCKET: &str = "/run/rundmc/rundmc.sock";

/// Exit code: the container does not exist (sysexits' EX_NOINPUT).
pub const EXIT_NOT_FOUND: i32 = 66;
/// Exit code: no agent answers on the socket (EX_UNAVAILABLE).
pub const EXIT_NOT_RUNNING: i32 = 69;
/// Exit code: the socket refuses this user (EX_NOPERM).
pub const EXIT_PERMISSION: i32 = 77;
/// Exit code: any other failure of rundmc itself.
pub const EXIT_FAILED: i32 = 1;

/// What went wrong talking to the agent.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "the rundmc agent is not running: nothing answers on {path} ({source}); \
         start it, or point --api-socket / RUNDMC_API_SOCKET at its socket"
    )]
    NotRunning {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The socket's mode refuses this user.
    #[error(
        "permission denied on {path}: only root and members of the agent's \
         --api-group may use the rundmc API"
    )]
    PermissionDenied {
        /// The socket.
        path: PathBuf,
    },
    /// The API refused the request.
    #[error("{0}")]
    Api(ApiError),
    /// The connection failed midway, or the agent answered nonsense.
    #[error("talking to the agent on {path}: {message}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What happened.
        message: String,
    },
}

impl ClientError {
    /// The exit code this error ends the command with.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::NotRunning { .. } => EXIT_NOT_RUNNING,
            ClientError::PermissionDenied { .. } => EXIT_PERMISSION,
            ClientError::Api(e) if e.kind == ErrorKind::NotFound => EXIT_NOT_FOUND,
            _ => EXIT_FAILED,
        }
    }
}

/// A client of the agent's socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client of the API on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn protocol(&self, message: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol {
            path: self.socket.clone(),
            message: message.to_string(),
        }
    }

    /// A fresh connection, its driver spawned.
    async fn connect<B>(&self) -> Result<SendRequest<B>, ClientError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| match source.kind() {
                    std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                        path: self.socket.clone(),
                    },
                    _ => ClientError::NotRunning {
                        path: self.socket.clone(),
                        source,
                    },
                })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// Send `req` on a fresh connection; an error status becomes [`ClientError::Api`].
    pub async fn send<B>(&self, req: Request<B>) -> Result<Response<Incoming>, ClientError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.protocol(e))?;
        if resp.status().is_success() || resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e))?
            .to_bytes();
        let err = serde_json::from_slice::<ApiError>(&body)
            .map_err(|_| self.protocol(format!("{status}: {}", String::from_utf8_lossy(&body))))?;
        Err(ClientError::Api(err))
    }

    /// `GET path`, streamed.
    pub async fn get(&self, path: &str) -> Result<Response<Incoming>, ClientError> {
        let req = Request::get(path)
            .header(hyper::header::HOST, "rundmc")
            .body(Full::new(Bytes::new()))
            .map_err(|e| self.protocol(e))?;
        self.send(req).await
    }

    /// `GET path`, as JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self
            .get(path)
            .await?
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| self.protocol(format!("bad answer: {e}")))
    }
}
