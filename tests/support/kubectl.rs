//! The kubectl path's fixtures (issue 18): a self-signed serving
//! certificate for the agent's remote API on 127.0.0.1, a free loopback
//! port, the real binary installed as `kubectl-rundmc`, a user's
//! kubeconfig, and running the plugin as kubectl would.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::binary;

/// A test CA, and a serving certificate it signed for 127.0.0.1 with its
/// key (openssl): `(ca, cert, key)`.
pub fn serving_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let f = |n: &str| dir.join(n);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &["-days", "2", "-subj", "/CN=rundmc-test-ca"],
        ],
        &[("-keyout", f("ca.key")), ("-out", f("ca.crt"))],
    );
    openssl(
        &[&["req", "-new"], &ec[..], &["-subj", "/CN=node-1"]],
        &[("-keyout", f("remote.key")), ("-out", f("remote.csr"))],
    );
    let ext =
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
    std::fs::write(f("remote.ext"), ext).expect("write the extensions");
    openssl(
        &[&["x509", "-req", "-days", "2", "-CAcreateserial"]],
        &[
            ("-in", f("remote.csr")),
            ("-CA", f("ca.crt")),
            ("-CAkey", f("ca.key")),
            ("-extfile", f("remote.ext")),
            ("-out", f("remote.crt")),
        ],
    );
    (f("ca.crt"), f("remote.crt"), f("remote.key"))
}

/// A client certificate for `subject` (`/O=ops/CN=bob`) signed by the test
/// CA of [`serving_certificate`] in `dir`: `(cert, key)`.
pub fn client_certificate(dir: &Path, subject: &str) -> (PathBuf, PathBuf) {
    let f = |n: &str| dir.join(n);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[&["req", "-new"], &ec[..], &["-subj", subject]],
        &[("-keyout", f("client.key")), ("-out", f("client.csr"))],
    );
    let ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";
    std::fs::write(f("client.ext"), ext).expect("write the extensions");
    openssl(
        &[&["x509", "-req", "-days", "2", "-CAcreateserial"]],
        &[
            ("-in", f("client.csr")),
            ("-CA", f("ca.crt")),
            ("-CAkey", f("ca.key")),
            ("-extfile", f("client.ext")),
            ("-out", f("client.crt")),
        ],
    );
    (f("client.crt"), f("client.key"))
}

/// `GET path` on `127.0.0.1:port` over TLS trusting `ca`, presenting the
/// client certificate `client` and no token: (status, body).
pub async fn get_with_certificate(
    port: u16,
    ca: &Path,
    client: (&Path, &Path),
    path: &str,
) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(client.0)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(client.1).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn openssl(args: &[&[&str]], files: &[(&str, PathBuf)]) {
    let mut c = Command::new("openssl");
    c.args(args.concat());
    for (flag, path) in files {
        c.arg(flag).arg(path);
    }
    let out = c.output().expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// The rundmc binary as `dir/kubectl-rundmc` (a symlink, as installed).
pub fn plugin(dir: &Path) -> PathBuf {
    let path = dir.join("kubectl-rundmc");
    let _ = std::fs::remove_file(&path);
    std::os::unix::fs::symlink(binary("rundmc"), &path).expect("symlink kubectl-rundmc");
    path
}

/// `kubeconfig` with its user's token replaced by `token` (a user's own).
pub fn user_kubeconfig(kubeconfig: &Path, token: &str, out: &Path) {
    let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig");
    let mine = text.replace("token: fake-token", &format!("token: {token}"));
    assert_ne!(text, mine, "the kubeconfig has no token to replace");
    std::fs::write(out, mine).expect("write kubeconfig");
}

/// Run the plugin with `args`: (exit code, stdout, stderr).
pub fn run(plugin: &Path, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(plugin)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBECTL_RUNDMC_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl-rundmc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The user's token, and who the fake's TokenReview says it is.
pub const TOKEN: &str = "alice-token";
pub const USER: &str = "alice";

/// A cluster whose agent serves the remote API on loopback (the test CA
/// signed its certificate), running Container `web` on the node, with
/// the plugin installed and the user's kubeconfig.
pub struct Remote {
    /// First, so it is dropped first: an agent still running while the
    /// cluster's environment deletes its containers would make them again.
    _agent: crate::support::agent::Agent,
    pub cluster: crate::cluster::Cluster,
    pub plugin: PathBuf,
    pub kubeconfig: PathBuf,
    pub ca: PathBuf,
}

impl Remote {
    /// With `client_ca`, the test CA also signs client certificates the
    /// agent accepts (`--remote-api-client-ca`).
    pub async fn start(name: &str, process: rundmc::api::ProcessSpec, client_ca: bool) -> Remote {
        use crate::cluster::{Cluster, NODE};
        use kube::api::{Api, Patch, PatchParams};
        use rundmc::api::{Container, ContainerSpec, Phase};
        let server = crate::apiserver::FakeApiServer::start().await;
        let mut cluster = Cluster::new(name, server).await;
        let dir = cluster.env.env.dir.clone();
        let (ca, cert, key) = serving_certificate(&dir);
        let mut flags = vec![
            ("--remote-api-listen", format!("127.0.0.1:{}", free_port())),
            ("--remote-api-tls-cert", cert.display().to_string()),
            ("--remote-api-tls-key", key.display().to_string()),
        ];
        if client_ca {
            flags.push(("--remote-api-client-ca", ca.display().to_string()));
        }
        for (flag, value) in flags {
            cluster.env.extra.extend([flag.to_string(), value]);
        }
        // The node's address, as the kubelet reports it.
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cluster.client.clone());
        let status = serde_json::json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}});
        nodes
            .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("patch the node's addresses");
        let spec = ContainerSpec {
            node_name: Some(NODE.into()),
            rootfs: crate::support::image().display().to_string(),
            process: Some(process),
            ..Default::default()
        };
        cluster.apply(&Container::new("web", spec)).await;
        let agent = cluster.start();
        cluster
            .wait("web running", "web", |c| {
                c.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
            })
            .await;
        let kubeconfig = dir.join("alice.kubeconfig");
        user_kubeconfig(&dir.join("kubeconfig"), TOKEN, &kubeconfig);
        Remote {
            plugin: plugin(&dir),
            ca,
            kubeconfig,
            _agent: agent,
            cluster,
        }
    }

    /// The remote API's port.
    pub fn port(&self) -> String {
        let extra = &self.cluster.env.extra;
        let i = extra
            .iter()
            .position(|a| a == "--remote-api-listen")
            .expect("the agent has --remote-api-listen");
        let addr = &extra[i + 1];
        addr.rsplit_once(':')
            .map(|(_, p)| p.to_string())
            .unwrap_or_default()
    }

    /// `--port P --certificate-authority CA ARGS...`.
    pub fn args(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec![
            "--port".to_string(),
            self.port(),
            "--certificate-authority".into(),
        ];
        all.push(self.ca.display().to_string());
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    /// `kubectl rundmc ARGS...` to its end, off the runtime.
    pub async fn plugin(&self, args: &[&str]) -> (i32, String, String) {
        let all = self.args(args);
        let (plugin, kubeconfig) = (self.plugin.clone(), self.kubeconfig.clone());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            run(&plugin, &kubeconfig, &args)
        })
        .await
        .expect("the plugin's task")
    }

    pub fn server(&self) -> &crate::apiserver::FakeApiServer {
        &self.cluster.server
    }

    /// (user, resourceAttributes) of each access review the agent sent.
    pub fn asked(&self) -> Vec<(String, serde_json::Value)> {
        self.server()
            .access_reviews()
            .into_iter()
            .map(|r| {
                let user = r["spec"]["user"].as_str().unwrap_or_default().to_string();
                (user, r["spec"]["resourceAttributes"].clone())
            })
            .collect()
    }
}
