//! The node proxy subresource, as the API server serves it:
//! `/api/v1/nodes/{[scheme:]name[:port]}/proxy/{path}`. The caller's bearer
//! token is authenticated as [`FakeApiServer::accept_token`] decided, and
//! the access (`nodes/proxy`, verb from the method) authorised by the rule
//! the test gave [`FakeApiServer::authorize_node_proxy`] (no rule: denied);
//! each decision's SubjectAccessReview-like spec is kept. An allowed
//! request goes to the Node's address (InternalIP, else ExternalIP, else
//! Hostname) and the port over TLS, presenting the API server's
//! kubelet-client certificate ([`FakeApiServer::proxy_to_nodes`]) and not
//! the caller's `Authorization`, as the authentication filter drops it. A
//! `101 Switching Protocols` from the node is passed back and the two
//! connections spliced, as the upgrade-aware proxy does.
//!
//! Simplified: `http:` nodes, redirects and the `nodes/proxy` websocket
//! verb mapping are not served.

use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::handlers::{Body, json_response};
use super::{FakeApiServer, Shared};

/// Decides a `nodes/proxy` access from its spec.
type Rule = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// The test's decisions, what was asked, and how to reach the nodes.
#[derive(Default)]
pub struct NodeProxy {
    rule: Option<Rule>,
    decisions: Vec<Value>,
    kubelet_client: Option<Arc<rustls::ClientConfig>>,
}

fn lock(m: &Mutex<NodeProxy>) -> std::sync::MutexGuard<'_, NodeProxy> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `(node, port, path)` of a node proxy path; `None` for any other.
pub fn parse(path: &str) -> Option<(String, Option<u16>, String)> {
    let rest = path.strip_prefix("/api/v1/nodes/")?;
    let (node, rest) = rest.split_once('/')?;
    let rest = match rest.strip_prefix("proxy") {
        Some(r) if r.is_empty() || r.starts_with('/') => r,
        _ => return None,
    };
    let parts: Vec<&str> = node.split(':').collect();
    let (name, port) = match parts.as_slice() {
        [name] => (*name, None),
        [name, port] | ["https", name, port] => (*name, port.parse().ok()),
        _ => return None,
    };
    let path = match rest.is_empty() {
        true => "/".to_string(),
        false => rest.to_string(),
    };
    Some((name.to_string(), port, path))
}

/// The answer to a node proxy request.
pub async fn serve(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    (node, port, path): (String, Option<u16>, String),
) -> Response<Body> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let Some((user, groups)) = super::reviews::user_of(&shared.reviews, &token) else {
        return status(401, "Unauthorized", "Unauthorized".into());
    };
    let verb = match *req.method() {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "proxy",
    };
    let spec = json!({"user": user, "groups": groups, "resourceAttributes": {
        "verb": verb, "group": "", "version": "v1", "resource": "nodes",
        "subresource": "proxy", "name": node}});
    let (allowed, tls) = {
        let mut p = lock(&shared.node_proxy);
        p.decisions.push(spec.clone());
        let allowed = p.rule.as_ref().is_some_and(|r| r(&spec));
        (allowed, p.kubelet_client.clone())
    };
    if !allowed {
        let m = format!(
            "nodes \"{node}\" is forbidden: User \"{user}\" cannot {verb} resource \
             \"nodes/proxy\" in API group \"\" at the cluster scope"
        );
        return status(403, "Forbidden", m);
    }
    let Some(tls) = tls else {
        return status(503, "ServiceUnavailable", "no kubelet client".into());
    };
    let Some(address) = node_address(&shared, &node) else {
        return status(
            503,
            "ServiceUnavailable",
            format!("node {node} has no address"),
        );
    };
    let port = port.unwrap_or(10250);
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut out = Request::builder()
        .method(parts.method)
        .uri(format!("{path}{query}"));
    for (name, value) in &parts.headers {
        if name != header::AUTHORIZATION && name != header::HOST {
            out = out.header(name, value);
        }
    }
    let out = out
        .header(header::HOST, format!("{address}:{port}"))
        .body(http_body_util::Full::new(body))
        .expect("a request from a valid one");
    match forward(tls, &address, port, out).await {
        Ok(resp) => answer(resp, client_upgrade),
        Err(e) => status(
            503,
            "ServiceUnavailable",
            format!("error trying to reach service: {e}"),
        ),
    }
}

/// A Status response.
fn status(code: u16, reason: &str, message: String) -> Response<Body> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}),
    )
}

/// The Node's preferred address.
fn node_address(shared: &Shared, node: &str) -> Option<String> {
    let obj = shared.peek(|s| {
        let k = s.store.kind_index("", "v1", "nodes")?;
        s.store.get(k, "", node).cloned()
    })?;
    let addresses = obj["status"]["addresses"].as_array()?.clone();
    ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|t| {
            addresses
                .iter()
                .find(|a| a["type"] == *t)
                .and_then(|a| a["address"].as_str())
                .map(String::from)
        })
}

/// `req` to `address:port` over TLS as the kubelet client.
async fn forward(
    tls: Arc<rustls::ClientConfig>,
    address: &str,
    port: u16,
    req: Request<http_body_util::Full<Bytes>>,
) -> Result<Response<Incoming>, String> {
    let tcp = tokio::net::TcpStream::connect((address, port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(address.to_string()).map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// The node's response, passed back: a 101 splices the two connections,
/// anything else streams its body.
fn answer(mut resp: Response<Incoming>, client: hyper::upgrade::OnUpgrade) -> Response<Body> {
    let mut back = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        back = back.header(name, value);
    }
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        let node = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(c), Ok(n)) = (client.await, node.await) {
                let (mut c, mut n) = (TokioIo::new(c), TokioIo::new(n));
                let _ = tokio::io::copy_bidirectional(&mut c, &mut n).await;
            }
        });
        return back
            .body(Empty::new().boxed())
            .expect("parts of a valid response");
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let mut body = resp.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data()
                && tx.send(data).is_err()
            {
                return;
            }
        }
    });
    let stream = StreamBody::new(super::watch::body_stream(rx, None));
    back.body(BodyExt::boxed(stream))
        .expect("parts of a valid response")
}

impl FakeApiServer {
    /// Proxy to nodes as the API server's kubelet client: trust `ca` for
    /// the nodes' serving certificates, present `cert` and `key` (PEM).
    pub fn proxy_to_nodes(&self, ca: &Path, cert: &Path, key: &Path) {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).expect("read the CA") {
            roots.add(c.expect("a CA certificate")).expect("add the CA");
        }
        let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
            .expect("read the kubelet client certificate")
            .map(|c| c.expect("a certificate"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).expect("the kubelet client key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("the kubelet client certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        lock(&self.shared().node_proxy).kubelet_client = Some(Arc::new(config));
    }

    /// `nodes/proxy` is allowed when `rule` says so of the access's spec
    /// (`user`, `groups`, `resourceAttributes`).
    pub fn authorize_node_proxy(&self, rule: impl Fn(&Value) -> bool + Send + Sync + 'static) {
        lock(&self.shared().node_proxy).rule = Some(Arc::new(rule));
    }

    /// Every `nodes/proxy` access decided, as SubjectAccessReview specs.
    pub fn node_proxy_reviews(&self) -> Vec<Value> {
        lock(&self.shared().node_proxy).decisions.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_paths_name_the_node_port_and_path() {
        let p = |s: &str| parse(s);
        assert_eq!(
            p("/api/v1/nodes/https:node-1:10260/proxy/v1/x/log"),
            Some(("node-1".into(), Some(10260), "/v1/x/log".into()))
        );
        assert_eq!(
            p("/api/v1/nodes/node-1/proxy"),
            Some(("node-1".into(), None, "/".into()))
        );
        assert_eq!(p("/api/v1/nodes/node-1"), None);
        assert_eq!(p("/api/v1/nodes/node-1/status"), None);
    }
}
