//! The remote API (issue 18, "From kubectl"): HTTPS on `--remote-api-listen`,
//! for `kubectl rundmc logs|exec|attach` on `Container` resources. It
//! follows the kubelet's model: a caller is authenticated by its bearer
//! token (a TokenReview) or by a client certificate verified against
//! `--remote-api-client-ca`, and authorised by a SubjectAccessReview on
//! `containers/{log,exec,attach}` in the resource's namespace. An allowed
//! request is handed, rewritten, to the local API's own handlers
//! ([`crate::server::local`]): only resources the API server declared are
//! reachable this way, never a file-declared container. docs/security.md
//! has the trust model.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub mod review;
pub mod target;
pub mod tls;

use super::local::node::Node;
use super::local::wire::ApiError;
use super::local::{Body, json};
use crate::api::Origin;
use review::{Identity, Reviews};
use target::Target;

/// Why the remote API could not start.
#[derive(Debug, Error)]
pub enum RemoteApiError {
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The address could not be bound.
    #[error("--remote-api-listen {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where and how the remote API serves.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The serving certificate (PEM, chain first to last).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA whose client certificates authenticate their holders (PEM).
    pub client_ca: Option<PathBuf>,
}

/// The body of every refusal: as the local API's errors, with the kinds
/// `Unauthorized` (401) and `Forbidden` (403) besides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// `Unauthorized`, `Forbidden`, or a local API error kind.
    pub kind: String,
    /// What was refused and why.
    pub message: String,
}

/// How long a client may take over its TLS handshake before it is dropped
/// (a connection that never speaks must not hold a task for ever).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

struct Remote {
    node: Arc<Node>,
    reviews: Arc<dyn Reviews>,
}

/// Bind now (so a bad address or certificate fails start-up) and serve in
/// the background; the address bound.
pub async fn serve(
    config: &RemoteConfig,
    node: Node,
    reviews: Arc<dyn Reviews>,
) -> Result<SocketAddr, RemoteApiError> {
    let tls = tls::server_config(&config.cert, &config.key, config.client_ca.as_deref())?;
    let addr = config.listen;
    let err = |source| RemoteApiError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    let acceptor = TlsAcceptor::from(tls);
    let remote = Arc::new(Remote {
        node: Arc::new(node),
        reviews,
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let (acceptor, remote) = (acceptor.clone(), Arc::clone(&remote));
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                let stream = match handshake.await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "remote API: TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "remote API: TLS handshake timed out");
                        return;
                    }
                };
                let certified = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| tls::certificate_identity(c));
                let service = service_fn(move |req| {
                    let (remote, certified) = (Arc::clone(&remote), certified.clone());
                    async move { Ok::<_, Infallible>(handle(remote, certified, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(bound)
}

fn refuse(code: StatusCode, kind: &str, message: impl Into<String>) -> Response<Body> {
    json(
        code,
        &Refusal {
            kind: kind.to_string(),
            message: message.into(),
        },
    )
}

/// Authenticate, authorise, then serve through the local API's handlers.
async fn handle(
    remote: Arc<Remote>,
    certified: Option<Identity>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let target = match Target::parse(req.method(), req.uri().path()) {
        Ok(t) => t,
        Err(e) => return super::local::error(&e),
    };
    let who = match authenticate(&*remote.reviews, certified, &req).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if let Err(r) = authorize(&*remote.reviews, &who, &target).await {
        return r;
    }
    if !declared_by_api(&remote.node, &target) {
        let what = format!("{}/{}", target.namespace, target.name);
        return super::local::error(&ApiError::new(
            super::local::wire::ErrorKind::NotFound,
            format!("no Container {what} runs on this node"),
        ));
    }
    tracing::info!(user = %who.user, namespace = %target.namespace, name = %target.name,
        subresource = target.subresource.as_str(), "remote API: allowed");
    let uri = target.local_uri(req.uri().query());
    match uri.parse() {
        Ok(u) => *req.uri_mut() = u,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
    }
    req.headers_mut().remove(hyper::header::AUTHORIZATION);
    super::local::route(Arc::clone(&remote.node), req).await
}

/// The caller: its bearer token's user, else its verified certificate's.
async fn authenticate(
    reviews: &dyn Reviews,
    certified: Option<Identity>,
    req: &Request<Incoming>,
) -> Result<Identity, Response<Body>> {
    let unauthorized = |m: String| refuse(StatusCode::UNAUTHORIZED, "Unauthorized", m);
    let Some(token) = bearer(req) else {
        return certified.ok_or_else(|| {
            unauthorized(
                "Unauthorized: send a bearer token (Authorization: Bearer ...) \
                 or a client certificate the agent's client CA signed"
                    .into(),
            )
        });
    };
    match reviews.token(token).await {
        Ok(Some(who)) => Ok(who),
        Ok(None) => Err(unauthorized(
            "Unauthorized: the API server's TokenReview did not authenticate the token".into(),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "remote API: cannot review a token");
            Err(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal",
                format!("cannot authenticate: {e}"),
            ))
        }
    }
}

/// The request's bearer token, if it has one.
fn bearer(req: &Request<Incoming>) -> Option<&str> {
    let value = req
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether `who` may do `target`, as the API server's authoriser says.
async fn authorize(
    reviews: &dyn Reviews,
    who: &Identity,
    target: &Target,
) -> Result<(), Response<Body>> {
    match reviews.access(who, target).await {
        Ok(d) if d.allowed => Ok(()),
        Ok(d) => {
            let reason = match d.reason.is_empty() {
                true => String::new(),
                false => format!(": {}", d.reason),
            };
            Err(refuse(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "Forbidden: user {:?} cannot {} resource \"{}\" in API group \"{}\" \
                     in the namespace {:?}{reason}",
                    who.user,
                    target.subresource.verb(),
                    target.resource(),
                    target::GROUP,
                    target.namespace,
                ),
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "remote API: cannot review access");
            Err(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal",
                format!("cannot authorize: {e}"),
            ))
        }
    }
}

/// Whether the API server declares `target`'s resource to this agent.
fn declared_by_api(node: &Node, target: &Target) -> bool {
    let Ok(handle) = crate::api::Handle::for_resource(&target.namespace, &target.name) else {
        return false;
    };
    node.store.get(&handle).is_some_and(|d| {
        matches!(&d.origin, Origin::Kube { namespace, name, .. }
            if *namespace == target.namespace && *name == target.name)
    })
}
