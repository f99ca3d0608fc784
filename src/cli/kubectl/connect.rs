//! Finding and reaching the agent that runs a `Container`: the resource's
//! `spec.nodeName`, that Node's address (InternalIP, else ExternalIP, else
//! Hostname) and the remote API's port; then HTTPS to it with the user's
//! bearer token, verified against the cluster's CA (or
//! `--certificate-authority`), or the same request through the API
//! server's node proxy.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as HttpBody;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Node;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use secrecy::ExposeSecret;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{Access, PluginError, split_name};
use crate::api::Container;
use crate::cli::ops::exec::{ExecArgs, RawMode, exec_request, relay, start_failure_code};
use crate::cli::ops::logs::Output;
use crate::cli::ops::watch::{AttachArgs, attach_query};
use crate::server::local::wire::STREAM_PROTOCOL;

/// How the agent is reached.
enum Route {
    /// HTTPS to the node.
    Direct {
        address: String,
        server_name: ServerName<'static>,
        tls: TlsConnector,
        token: String,
    },
    /// Through `/api/v1/nodes/https:{node}:{port}/proxy`.
    Proxy {
        client: kube::Client,
        prefix: String,
    },
}

/// The agent that runs one Container, and how to reach it.
pub struct Agent {
    route: Route,
    /// `/v1/namespaces/{ns}/containers/{name}`.
    path: String,
}

impl Agent {
    /// The agent running `name` (`NS/NAME`, or NAME in the namespace).
    pub async fn find(how: &Access, name: &str) -> Result<Agent, PluginError> {
        let config = kube_config(how).await?;
        let namespace = how
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let (ns, name) = split_name(name, &namespace)?;
        let client = kube::Client::try_from(config.clone())
            .map_err(|e| PluginError::Config(e.to_string()))?;
        let node = node_of(&client, &ns, &name).await?;
        let path = format!(
            "/v1/namespaces/{}/containers/{}",
            crate::server::local::escape(&ns),
            crate::server::local::escape(&name)
        );
        let route = match how.via_apiserver {
            true => Route::Proxy {
                client,
                prefix: format!("/api/v1/nodes/https:{node}:{}/proxy", how.port),
            },
            false => direct(how, &config, &client, &node).await?,
        };
        Ok(Agent { route, path })
    }

    fn address(&self) -> String {
        match &self.route {
            Route::Direct { address, .. } => address.clone(),
            Route::Proxy { prefix, .. } => format!("the API server's {prefix}"),
        }
    }

    /// Print the log, as `rundmc logs` does.
    pub async fn logs(&self, query: &str, timestamps: bool) -> Result<(), PluginError> {
        let uri = format!("{}/log?{query}", self.path);
        match &self.route {
            Route::Direct { .. } => {
                let resp = self.direct(Request::get(&uri).body(empty())).await?;
                print_log(resp, timestamps).await
            }
            Route::Proxy { .. } => {
                let resp = self.proxied(Request::get(&uri).body(Vec::new())).await?;
                print_log(resp, timestamps).await
            }
        }
    }

    /// Run `args`' command; its exit code.
    pub async fn exec(&self, args: &ExecArgs) -> Result<i32, PluginError> {
        let body = serde_json::to_vec(&exec_request(args)).unwrap_or_default();
        let upgraded = self
            .upgrade(format!("{}/exec", self.path), Bytes::from(body))
            .await?;
        let raw = match args.tty {
            true => Some(RawMode::enter().map_err(|e| PluginError::Protocol(e.to_string()))?),
            false => None,
        };
        let status = relay(TokioIo::new(upgraded), args.interactive, args.tty).await;
        drop(raw);
        let status = status.map_err(|e| PluginError::Protocol(e.to_string()))?;
        if let Some(m) = &status.message {
            eprintln!("kubectl-rundmc: {m}");
        }
        Ok(status.exit_code)
    }

    /// Follow (with `-i`, feed) the main process, as `rundmc attach`
    /// does; its exit code once it ends.
    pub async fn attach(&self, args: &AttachArgs) -> Result<i32, PluginError> {
        let uri = format!("{}/attach{}", self.path, attach_query(args));
        let upgraded = self.upgrade(uri, Bytes::new()).await?;
        let status = relay(TokioIo::new(upgraded), args.stdin, false)
            .await
            .map_err(|e| PluginError::Protocol(e.to_string()))?;
        if let Some(m) = &status.message {
            eprintln!("kubectl-rundmc: {m}");
        }
        Ok(status.exit_code)
    }

    /// POST `uri` asking to upgrade to the stream protocol (directly or
    /// through the node proxy); the upgraded connection.
    async fn upgrade(&self, uri: String, body: Bytes) -> Result<Upgraded, PluginError> {
        let req = Request::post(uri)
            .header(hyper::header::CONNECTION, "Upgrade")
            .header(hyper::header::UPGRADE, STREAM_PROTOCOL)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        let upgraded = match &self.route {
            Route::Direct { .. } => {
                let resp = self.direct(req.body(Full::new(body))).await;
                hyper::upgrade::on(started(resp)?).await
            }
            Route::Proxy { .. } => {
                let resp = self.proxied(req.body(body.to_vec())).await;
                hyper::upgrade::on(started(resp)?).await
            }
        };
        upgraded.map_err(|e| PluginError::Protocol(format!("upgrading the connection: {e}")))
    }

    /// `req` on a fresh TLS connection to the node.
    async fn direct(
        &self,
        req: Result<Request<Full<Bytes>>, hyper::http::Error>,
    ) -> Result<Response<hyper::body::Incoming>, PluginError> {
        let Route::Direct {
            address,
            server_name,
            tls,
            token,
        } = &self.route
        else {
            return Err(PluginError::Protocol("not a direct route".into()));
        };
        let mut req = req.map_err(|e| PluginError::Protocol(e.to_string()))?;
        let h = req.headers_mut();
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| PluginError::Setup("the bearer token is not a valid header".into()))?;
        h.insert(hyper::header::AUTHORIZATION, bearer);
        if let Ok(host) = address.parse() {
            h.insert(hyper::header::HOST, host);
        }
        let fail = |m: String| PluginError::Connect {
            address: address.clone(),
            message: m,
        };
        let tcp = TcpStream::connect(address.as_str())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let stream = tls
            .connect(server_name.clone(), tcp)
            .await
            .map_err(|e| fail(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| fail(e.to_string()))?;
        checked(resp, &self.address()).await
    }

    /// `req` through the API server's node proxy.
    async fn proxied(
        &self,
        req: Result<Request<Vec<u8>>, hyper::http::Error>,
    ) -> Result<Response<kube::client::Body>, PluginError> {
        let Route::Proxy { client, prefix } = &self.route else {
            return Err(PluginError::Protocol("not a proxied route".into()));
        };
        let mut req = req.map_err(|e| PluginError::Protocol(e.to_string()))?;
        let uri = format!("{prefix}{}", req.uri());
        *req.uri_mut() = uri
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| PluginError::Protocol(e.to_string()))?;
        let resp = client
            .send(req.map(kube::client::Body::from))
            .await
            .map_err(|source| PluginError::Kube {
                what: format!("the API server's proxy to {prefix}"),
                source,
            })?;
        checked(resp, &self.address()).await
    }
}

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

/// A response that upgraded, or why not.
fn started<B>(resp: Result<Response<B>, PluginError>) -> Result<Response<B>, PluginError> {
    match resp {
        Err(PluginError::Refused {
            status: 422,
            message,
        }) => {
            eprintln!("kubectl-rundmc: {message}");
            Err(PluginError::Refused {
                status: start_failure_code(&message) as u16,
                message: "the command could not be started".into(),
            })
        }
        other => other,
    }
}

/// The response when it succeeded or upgraded; the refusal's message else.
async fn checked<B>(resp: Response<B>, address: &str) -> Result<Response<B>, PluginError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let status = resp.status();
    if status.is_success() || status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp);
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    Err(PluginError::Refused {
        status: status.as_u16(),
        message: format!("the rundmc agent ({address}) refused: {status}: {message}"),
    })
}

/// Split a log stream's CRI records into stdout and stderr.
pub async fn print_log<B>(resp: Response<B>, timestamps: bool) -> Result<(), PluginError>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut body = resp.into_body();
    let mut out = Output::new(timestamps);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| PluginError::Protocol(e.to_string()))?;
        if let Ok(data) = frame.into_data()
            && out.push(&data).is_err()
        {
            return Ok(()); // our reader went away (`| head`)
        }
    }
    let _ = out.flush();
    Ok(())
}

/// The user's Kubernetes configuration, as kubectl reads it.
async fn kube_config(how: &Access) -> Result<kube::Config, PluginError> {
    let options = KubeConfigOptions {
        context: how.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&how.kubeconfig, &how.context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| PluginError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| PluginError::Config(e.to_string()))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| PluginError::Config(e.to_string()))?,
        (None, None) => kube::Config::infer()
            .await
            .map_err(|e| PluginError::Config(e.to_string()))?,
    };
    Ok(config)
}

/// The node whose agent runs `ns/name`: the resource's `spec.nodeName`.
async fn node_of(client: &kube::Client, ns: &str, name: &str) -> Result<String, PluginError> {
    let api: kube::Api<Container> = kube::Api::namespaced(client.clone(), ns);
    let c = api.get(name).await.map_err(|source| PluginError::Kube {
        what: format!("Container {ns}/{name}"),
        source,
    })?;
    c.spec
        .node_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| PluginError::NoNode(format!("Container {ns}/{name} has no spec.nodeName")))
}

/// The direct route: the node's address, the CA, the user's token.
async fn direct(
    how: &Access,
    config: &kube::Config,
    client: &kube::Client,
    node: &str,
) -> Result<Route, PluginError> {
    let address = match &how.address {
        Some(a) => a.clone(),
        None => node_address(client, node, how.port).await?,
    };
    let host = host_of(&address);
    let server_name = ServerName::try_from(host.to_string())
        .map_err(|e| PluginError::Setup(format!("{host:?} is not a server name: {e}")))?;
    let token = bearer_token(how, config)?;
    Ok(Route::Direct {
        server_name,
        tls: TlsConnector::from(client_tls(how, config)?),
        token,
        address,
    })
}

/// `HOST` of `HOST:PORT` (`[v6]:PORT` too) (pure).
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// `ADDRESS:PORT` of `node`: its InternalIP, else ExternalIP, else Hostname.
async fn node_address(client: &kube::Client, node: &str, port: u16) -> Result<String, PluginError> {
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    let n = api.get(node).await.map_err(|source| PluginError::Kube {
        what: format!("Node {node}"),
        source,
    })?;
    let addresses = n.status.and_then(|s| s.addresses).unwrap_or_default();
    let pick = |kind: &str| {
        addresses
            .iter()
            .find(|a| a.type_ == kind)
            .map(|a| a.address.clone())
    };
    let address = pick("InternalIP")
        .or_else(|| pick("ExternalIP"))
        .or_else(|| pick("Hostname"))
        .ok_or_else(|| {
            PluginError::NoNode(format!(
                "Node {node} has no address; pass --address or --via-apiserver"
            ))
        })?;
    Ok(match address.contains(':') {
        true => format!("[{address}]:{port}"),
        false => format!("{address}:{port}"),
    })
}

/// `--token`, else the kubeconfig user's token (or token file).
fn bearer_token(how: &Access, config: &kube::Config) -> Result<String, PluginError> {
    if let Some(t) = &how.token {
        return Ok(t.clone());
    }
    if let Some(t) = &config.auth_info.token {
        return Ok(t.expose_secret().to_string());
    }
    if let Some(f) = &config.auth_info.token_file {
        return std::fs::read_to_string(f)
            .map(|t| t.trim().to_string())
            .map_err(|e| PluginError::Setup(format!("token file {f}: {e}")));
    }
    Err(PluginError::Setup(
        "direct access needs a bearer token, and the kubeconfig user has none: \
         pass --token (e.g. from `kubectl create token`), or use --via-apiserver"
            .into(),
    ))
}

/// TLS that trusts `--certificate-authority`, else the cluster's CA.
fn client_tls(
    how: &Access,
    config: &kube::Config,
) -> Result<Arc<rustls::ClientConfig>, PluginError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = match &how.certificate_authority {
        Some(path) => CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                PluginError::Setup(format!("--certificate-authority {}: {e}", path.display()))
            })?,
        None => config
            .root_cert
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(CertificateDer::from)
            .collect(),
    };
    for c in certs {
        roots
            .add(c)
            .map_err(|e| PluginError::Setup(format!("a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(PluginError::Setup(
            "no CA to verify the agent's certificate: the kubeconfig's cluster has none; \
             pass --certificate-authority"
                .into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PluginError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_out_of_addresses() {
        assert_eq!(host_of("10.0.0.1:10260"), "10.0.0.1");
        assert_eq!(host_of("[fd00::1]:10260"), "fd00::1");
        assert_eq!(host_of("node-1.example:1"), "node-1.example");
    }
}
