//! The agent's HTTP endpoint: `/metrics` (Prometheus text), `/healthz`
//! (the process serves), `/readyz` (every source has listed once). It reads
//! what other rooms expose and never touches containers. The local API on
//! a unix socket (`rundmc ps|get|logs|exec|...`) is [`local`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use thiserror::Error;
use tokio::net::TcpListener;

pub mod local;
pub mod remote;

/// Why the endpoint could not start.
#[derive(Debug, Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ServerError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Says whether the agent is ready, or why not.
pub type ReadyCheck = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the endpoint serves.
pub struct Endpoint {
    /// Metrics to encode on each scrape.
    pub registry: Registry,
    /// The readiness check.
    pub ready: ReadyCheck,
}

/// Bind `addr` now (so a bad address fails start-up) and serve in the background.
pub async fn serve(addr: SocketAddr, endpoint: Endpoint) -> Result<SocketAddr, ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServerError { addr, source })?;
    let endpoint = Arc::new(endpoint);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let endpoint = Arc::clone(&endpoint);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let endpoint = Arc::clone(&endpoint);
                    async move { Ok::<_, Infallible>(respond(&endpoint, &req)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn respond(endpoint: &Endpoint, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |code: StatusCode, body: String, kind: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(kind),
        );
        r
    };
    const PLAIN: &str = "text/plain; charset=utf-8";
    match req.uri().path() {
        "/metrics" => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, &endpoint.registry) {
                Ok(()) => text(
                    StatusCode::OK,
                    body,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot encode metrics\n".into(),
                    PLAIN,
                ),
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into(), PLAIN),
        "/readyz" => match (endpoint.ready)() {
            Ok(()) => text(StatusCode::OK, "ok\n".into(), PLAIN),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"), PLAIN),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), PLAIN),
    }
}
