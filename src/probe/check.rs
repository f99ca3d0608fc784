//! Network probes, run from the agent into the container's own network
//! namespace: a short-lived thread enters the namespace of the main
//! process (`/proc/<pid>/ns/net`), connects there, and hands the socket
//! back; a socket keeps the namespace it was made in, so the rest of the
//! probe runs on the async workers. No exec, no `runc`: a TCP probe is one
//! connect, an HTTP probe one request. Containers with no routable address
//! (loopback only) are probed the same way.

use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use nix::sched::{CloneFlags, setns};

use crate::api::HttpHeader;

/// At most this much of a response body is kept for the message.
const MAX_OUTPUT: usize = 1024;

/// Where a network probe goes: the namespace of `pid`, `addr` in it.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// A process of the container.
    pub pid: i32,
    /// The address and port to reach.
    pub addr: SocketAddr,
}

/// Connect to `target` within `timeout`, in the container's namespace.
async fn connect(target: Target, timeout: Duration) -> Result<tokio::net::TcpStream, String> {
    let stream = tokio::task::spawn_blocking(move || connect_in_netns(target, timeout))
        .await
        .map_err(|e| format!("probe thread: {e}"))?
        .map_err(|e| describe(target.addr, e))?;
    stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(stream))
        .map_err(|e| describe(target.addr, e))
}

/// On a thread of its own (it changes namespace and then ends), so no
/// async worker ever leaves the agent's namespace.
fn connect_in_netns(target: Target, timeout: Duration) -> io::Result<TcpStream> {
    let ns = File::open(format!("/proc/{}/ns/net", target.pid))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            TcpStream::connect_timeout(&target.addr, timeout)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the probe thread panicked")))
    })
}

fn describe(addr: SocketAddr, e: io::Error) -> String {
    format!("dial tcp {addr}: {e}")
}

/// A TCP probe: success when the connection is accepted.
pub async fn tcp(target: Target, timeout: Duration) -> Result<(), String> {
    let connected = tokio::time::timeout(timeout, connect(target, timeout)).await;
    match connected {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("dial tcp {}: i/o timeout", target.addr)),
    }
}

/// Where and how an HTTP probe asks.
#[derive(Debug, Clone, Copy)]
pub struct HttpGet<'a> {
    /// Over TLS (`scheme: HTTPS`), the certificate not verified.
    pub tls: bool,
    /// The `Host` header's name, and TLS's server name.
    pub host: Option<&'a str>,
    /// The path asked for.
    pub path: &'a str,
    /// Extra headers.
    pub headers: &'a [HttpHeader],
}

/// An HTTP(S) GET: success for a status from 200 to 399.
pub async fn http(target: Target, get: HttpGet<'_>, timeout: Duration) -> Result<(), String> {
    let scheme = if get.tls { "https" } else { "http" };
    let url = format!("{scheme}://{}{}", target.addr, get.path);
    let request = async {
        let stream = connect(target, timeout).await?;
        let request = build_request(target, get.host, get.path, get.headers)?;
        let asked = match get.tls {
            true => {
                let tls = super::tls::connect(stream, get.host, target.addr.ip())
                    .await
                    .map_err(|e| format!("Get {url:?}: {e}"))?;
                send(tls, request).await
            }
            false => send(stream, request).await,
        };
        let (status, body) = asked.map_err(|e| format!("Get {url:?}: {e}"))?;
        match status {
            200..=399 => Ok(()),
            code => Err(format!("HTTP probe failed with statuscode: {code}{body}")),
        }
    };
    match tokio::time::timeout(timeout, request).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// One HTTP/1.1 request on `stream`: the status and the start of the body.
async fn send<S>(
    stream: S,
    request: hyper::Request<Empty<Bytes>>,
) -> Result<(u16, String), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(conn);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = read_some(response.into_body()).await;
    driver.abort();
    Ok((status, body))
}

fn build_request(
    target: Target,
    host: Option<&str>,
    path: &str,
    headers: &[HttpHeader],
) -> Result<hyper::Request<Empty<Bytes>>, String> {
    let authority = match host {
        Some(h) => format!("{h}:{}", target.addr.port()),
        None => target.addr.to_string(),
    };
    let mut builder = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "rundmc-probe")
        .header(hyper::header::ACCEPT, "*/*");
    for h in headers {
        builder = builder.header(h.name.as_str(), h.value.as_str());
    }
    builder
        .body(Empty::new())
        .map_err(|e| format!("bad request: {e}"))
}

/// The start of a body, as `: <text>`, for a failure's message.
async fn read_some(mut body: hyper::body::Incoming) -> String {
    let mut out = Vec::new();
    while out.len() < MAX_OUTPUT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    out.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    out.truncate(MAX_OUTPUT);
    let text = String::from_utf8_lossy(&out);
    match text.trim() {
        "" => String::new(),
        t => format!(": {t}"),
    }
}

/// A gRPC health check (`grpc.health.v1.Health/Check` of `service`, over
/// HTTP/2 without TLS, as the kubelet's): success when it answers SERVING.
pub async fn grpc(target: Target, service: &str, timeout: Duration) -> Result<(), String> {
    let check = async {
        let stream = connect(target, timeout).await.map_err(|e| {
            format!(
                "timeout: failed to connect service {:?} within {}s: {e}",
                target.addr.to_string(),
                timeout.as_secs()
            )
        })?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let exec = hyper_util::rt::TokioExecutor::new();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(exec, io)
            .await
            .map_err(|e| format!("rpc error: {e}"))?;
        let driver = tokio::spawn(conn);
        let request = hyper::Request::post(format!(
            "http://{}/grpc.health.v1.Health/Check",
            target.addr
        ))
        .header(hyper::header::CONTENT_TYPE, "application/grpc")
        .header(hyper::header::TE, "trailers")
        .header(hyper::header::USER_AGENT, "rundmc-probe")
        .body(Full::new(Bytes::from(health_request(service))))
        .map_err(|e| format!("bad request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("rpc error: {e}"))?;
        let status = response.status();
        let collected = response.into_body().collect().await;
        driver.abort();
        let collected = collected.map_err(|e| format!("rpc error: {e}"))?;
        let grpc_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !status.is_success() {
            return Err(format!("rpc error: HTTP status {}", status.as_u16()));
        }
        match grpc_status.as_deref() {
            Some("0") | None => {}
            Some(code) => return Err(format!("rpc error: code = {code}")),
        }
        match health_status(&collected.to_bytes()) {
            Some(1) => Ok(()),
            Some(n) => Err(format!(
                "service unhealthy (responded with {:?})",
                serving_status(n)
            )),
            None => Err("rpc error: the response is not a HealthCheckResponse".into()),
        }
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "timeout: health rpc did not complete within {}s",
            timeout.as_secs()
        )),
    }
}

/// A length-prefixed gRPC message holding `HealthCheckRequest{service}`
/// (field 1, a string; left out when empty).
fn health_request(service: &str) -> Vec<u8> {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    framed
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// `HealthCheckResponse.status` (field 1, a varint) of the first message
/// of a gRPC body; 0 (UNKNOWN) when the field is absent.
fn health_status(body: &[u8]) -> Option<u64> {
    let (&compressed, rest) = body.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let mut message = rest.get(..len)?;
    let mut status = 0;
    while let Some((&key, rest)) = message.split_first() {
        let (value, rest) = varint(rest)?;
        match key {
            0x08 => status = value,
            k if k & 7 == 0 => {}
            _ => return None, // only varint fields are expected
        }
        message = rest;
    }
    Some(status)
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// grpc.health.v1's names for a status.
fn serving_status(n: u64) -> &'static str {
    match n {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

/// The address a probe reaches when its `host` is unset: the container's
/// first address when it has one (as the kubelet uses the pod's IP),
/// otherwise its loopback.
pub fn default_host(pod_ips: &[String]) -> IpAddr {
    pod_ips
        .iter()
        .find_map(|ip| ip.parse().ok())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages_are_encoded_and_decoded_as_grpc_health_v1() {
        assert_eq!(health_request(""), [0, 0, 0, 0, 0]);
        assert_eq!(health_request("db"), [0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']);
        assert_eq!(health_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(health_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(health_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(health_status(&[1, 0, 0, 0, 0]), None, "compressed");
        assert_eq!(health_status(&[0, 0, 0]), None);
    }

    /// A grpc.health.v1 server on loopback answering `status` (the real
    /// HTTP/2 framing: hyper's server), for the probe to check.
    async fn health_server(status: u8) -> SocketAddr {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let svc = service_fn(
                    move |_req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = Full::new(Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]))
                            .with_trailers(async {
                                let mut t = hyper::HeaderMap::new();
                                t.insert(
                                    "grpc-status",
                                    hyper::header::HeaderValue::from_static("0"),
                                );
                                Some(Ok(t))
                            });
                        hyper::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(body)
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let exec = hyper_util::rt::TokioExecutor::new();
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(exec).serve_connection(io, svc),
                );
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_grpc_probe_passes_on_serving_and_names_any_other_status() {
        let pid = i32::try_from(std::process::id()).unwrap_or(1);
        let serving = Target {
            pid,
            addr: health_server(1).await,
        };
        assert_eq!(grpc(serving, "", Duration::from_secs(2)).await, Ok(()));
        let not = Target {
            pid,
            addr: health_server(2).await,
        };
        assert_eq!(
            grpc(not, "db", Duration::from_secs(2)).await,
            Err("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
    }

    #[test]
    fn the_default_host_is_the_first_address_or_loopback() {
        assert_eq!(default_host(&[]).to_string(), "127.0.0.1");
        let ips = ["10.89.0.7".to_string(), "fd00::7".to_string()];
        assert_eq!(default_host(&ips).to_string(), "10.89.0.7");
    }

    #[tokio::test]
    async fn a_closed_port_fails_with_the_address_and_an_open_one_succeeds() {
        let pid = i32::try_from(std::process::id()).unwrap_or(1);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Target { pid, addr };
        assert_eq!(tcp(open, Duration::from_secs(1)).await, Ok(()));
        drop(listener);
        let err = tcp(open, Duration::from_secs(1)).await.unwrap_err();
        assert!(err.starts_with(&format!("dial tcp {addr}: ")), "{err}");
    }
}
