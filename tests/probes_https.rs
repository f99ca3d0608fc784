//! HTTPS probes through the agent and real runc, against real servers on
//! the node's loopback (the container shares the node's network): `openssl
//! s_server` with a self-signed certificate passes, as with the kubelet,
//! which does not verify it; a plain HTTP server fails the TLS handshake.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::agent::{AgentEnv, manifest};
use support::eventually;

const T: Duration = Duration::from_secs(60);

/// A server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn listening(port: u16) -> bool {
    eventually(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
}

/// `openssl s_server -www` on `port` with a fresh self-signed certificate.
fn tls_server(dir: &std::path::Path, port: u16) -> Server {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=not-the-address-probed"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let child = Command::new("openssl")
        .args(["s_server", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    assert!(listening(port), "s_server is not listening on {port}");
    server
}

/// A plain HTTP server on `port`.
fn plain_server(dir: &std::path::Path, port: u16) -> Server {
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    assert!(listening(port), "http.server is not listening on {port}");
    server
}

fn spec(port: u16) -> String {
    format!(
        "  hostNetwork: true\n  process:\n    args: [\"/bin/sh\", \"-c\", \"exec sleep 100000\"]\n    readinessProbe:\n      httpGet: {{scheme: HTTPS, path: /, port: {port}}}\n      periodSeconds: 1\n"
    )
}

#[test]
fn an_https_probe_passes_without_verifying_the_certificate_and_fails_on_plain_http() {
    let a = AgentEnv::new("probe-https");
    let _agent = a.start();
    let (tls_port, plain_port) = (free_port(), free_port());
    let _tls = tls_server(&a.env.dir, tls_port);
    let _plain = plain_server(&a.env.dir, plain_port);
    a.write("s.yaml", &manifest("secure", &spec(tls_port)));
    a.write("p.yaml", &manifest("plain", &spec(plain_port)));
    a.wait("secure ready, plain not", T, || {
        a.condition("secure", "Ready")
            .is_some_and(|(s, _, _)| s == "True")
            && a.condition("plain", "Ready").is_some_and(|(s, _, m)| {
                s == "False" && m.contains(&format!("https://127.0.0.1:{plain_port}/"))
            })
    });
}
