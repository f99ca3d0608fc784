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

use http_body_util::{BodyExt, Empty};
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

/// An HTTP GET of `path`: success for a status from 200 to 399.
pub async fn http(
    target: Target,
    host: Option<&str>,
    path: &str,
    headers: &[HttpHeader],
    timeout: Duration,
) -> Result<(), String> {
    let url = format!("http://{}{path}", target.addr);
    let request = async {
        let stream = connect(target, timeout).await?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        let driver = tokio::spawn(conn);
        let request = build_request(target, host, path, headers)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        let status = response.status();
        let body = read_some(response.into_body()).await;
        driver.abort();
        match status.as_u16() {
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
