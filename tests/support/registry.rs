//! A real registry on loopback for tests: Debian's `docker-registry` (the
//! CNCF distribution registry) on 127.0.0.1 and a free port, its storage in
//! a temp dir, optionally with TLS from a test CA made with `openssl` and
//! optionally with htpasswd (Basic) auth; killed on drop. Images are pushed
//! with `skopeo copy`. Blobs can be corrupted in its storage, and its
//! access log says which blobs were fetched.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// Each support file that needs it includes it, so each stays usable alone.
#[allow(clippy::duplicate_mod)]
#[path = "process_dir.rs"]
mod process_dir;
use process_dir::process_dir;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// How a registry is started.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Serve HTTPS with a certificate of the test CA ([`test_ca`]).
    pub tls: bool,
    /// Require this user and password (htpasswd, bcrypt).
    pub basic_auth: Option<(String, String)>,
    /// Bearer tokens from a token server of the test's ([`TokenServer`]).
    pub token_auth: Option<TokenOptions>,
}

/// A running registry.
pub struct Registry {
    child: Child,
    /// The token server, when `token_auth` asked for one.
    pub tokens: Option<TokenServer>,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// Its directory: config, storage, log, htpasswd.
    pub dir: PathBuf,
    opts: Options,
}

/// The test CA: (directory holding `ca.crt`, server.crt, server.key).
pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    /// The CA certificate (PEM): what `--registry-ca` takes.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// A directory holding only `ca.crt`, for skopeo's `--dest-cert-dir`.
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.join("skopeo")
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA and a server certificate for 127.0.0.1 and localhost, made once
/// per test process.
pub fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = process_dir("rundmc-test-ca");
        std::fs::create_dir_all(dir.join("skopeo")).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(Command::new("openssl")
            .current_dir(&dir)
            .args(["req", "-x509"])
            .args(ec)
            .args(["-keyout", "ca.key", "-out", "ca.crt", "-days", "3"])
            .args(["-subj", "/CN=rundmc test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
        run(Command::new("openssl")
            .current_dir(&dir)
            .arg("req")
            .args(ec)
            .args([
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ]));
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .current_dir(&dir)
            .args([
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
            ])
            .args(["-CAcreateserial", "-out", "server.crt", "-days", "3"])
            .args(["-extfile", "server.ext"]));
        std::fs::copy(dir.join("ca.crt"), dir.join("skopeo/ca.crt")).unwrap();
        TestCa { dir }
    })
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Registry {
    /// Starts a registry and waits until it accepts connections.
    pub fn start(opts: Options) -> Registry {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rundmc-registry-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let tokens = opts.token_auth.clone().map(|t| TokenServer::start(&dir, t));
        std::fs::write(
            dir.join("config.yml"),
            config(&dir, &addr, &opts, tokens.as_ref()),
        )
        .unwrap();
        if let Some((user, pass)) = &opts.basic_auth {
            let line = run(Command::new("htpasswd").args(["-Bbn", user, pass]));
            std::fs::write(dir.join("htpasswd"), line).unwrap();
        }
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (make deps installs it)");
        let registry = Registry {
            child,
            tokens,
            addr,
            dir,
            opts,
        };
        registry.wait_listening();
        registry
    }

    fn wait_listening(&self) {
        let end = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&self.addr).is_err() {
            assert!(
                Instant::now() < end,
                "docker-registry did not listen on {}: {}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `docker://<addr>/<repo_tag>`.
    pub fn url(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.addr)
    }

    /// `skopeo copy <src> docker://<addr>/<repo_tag>` with this registry's
    /// TLS and credentials, and `extra` arguments.
    pub fn push_from(&self, src: &str, repo_tag: &str, extra: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet"]).args(extra);
        if self.opts.tls {
            cmd.arg("--dest-cert-dir").arg(test_ca().cert_dir());
        } else {
            cmd.arg("--dest-tls-verify=false");
        }
        if let Some((user, pass)) = &self.opts.basic_auth {
            cmd.arg(format!("--dest-creds={user}:{pass}"));
        }
        if let Some(t) = &self.opts.token_auth {
            cmd.arg(format!("--dest-creds={}:{}", t.user, t.password));
        }
        cmd.arg(src).arg(self.url(repo_tag));
        run(&mut cmd);
    }

    /// Pushes the image tagged `tag` in the OCI layout `layout` as `repo_tag`.
    pub fn push(&self, layout: &Path, tag: &str, repo_tag: &str) {
        self.push_from(&format!("oci:{}:{tag}", layout.display()), repo_tag, &[]);
    }

    /// Where the registry keeps the blob `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Flips a byte in the middle of the stored blob `digest`: the registry
    /// then serves content that does not match its digest.
    pub fn corrupt_blob(&self, digest: &str) {
        let path = self.blob_path(digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }

    /// Changes one digit of the first `"size":` in the stored manifest
    /// `digest`: still JSON, so the registry serves it, but no longer the
    /// content its digest names.
    pub fn tamper_manifest(&self, digest: &str) {
        let path = self.blob_path(digest);
        let mut text = std::fs::read_to_string(&path).unwrap();
        let at = text.find("\"size\":").unwrap() + "\"size\":".len();
        let digit = text.as_bytes()[at];
        let swapped = if digit == b'9' {
            '8'
        } else {
            char::from(digit + 1)
        };
        text.replace_range(at..at + 1, &swapped.to_string());
        std::fs::write(&path, text).unwrap();
    }

    /// The registry's log (its access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// How many `GET`s of the blob `digest` the registry answered.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let needle = "\"GET /v2/";
        let blob = format!("/blobs/{digest} ");
        self.log()
            .lines()
            .filter(|l| l.contains(needle) && l.contains(&blob))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(dir: &Path, addr: &str, opts: &Options, tokens: Option<&TokenServer>) -> String {
    let mut c = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
         delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: rundmc-test\n",
        dir.join("storage").display()
    );
    if opts.tls {
        let ca = test_ca();
        c.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            ca.dir.join("server.crt").display(),
            ca.dir.join("server.key").display()
        ));
    }
    if opts.basic_auth.is_some() {
        c.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: rundmc-test\n    path: {}\n",
            dir.join("htpasswd").display()
        ));
    }
    if let Some(t) = tokens {
        c.push_str(&format!(
            "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    \
             issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            t.addr,
            t.dir.join("token.crt").display()
        ));
    }
    c
}

/// The `service` the registry names in its challenge.
pub const TOKEN_SERVICE: &str = "rundmc-test-registry";
const TOKEN_ISSUER: &str = "rundmc-test-token-server";

/// Who the token server serves.
#[derive(Clone, Debug)]
pub struct TokenOptions {
    /// The one user with push and pull.
    pub user: String,
    /// Its password.
    pub password: String,
    /// Whether anyone may have a pull token without credentials (as Docker Hub).
    pub anonymous_pull: bool,
}

/// A Docker token server (the registry's `auth: token`) on loopback: it
/// checks Basic credentials and answers `{"token": <JWT>}`, an RS256 JWT
/// signed with `openssl dgst` by a key whose certificate the registry
/// trusts (`x5c`). Plain HTTP/1.1, one thread per connection.
pub struct TokenServer {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    dir: PathBuf,
    /// Token requests answered with a token.
    pub issued: std::sync::Arc<AtomicUsize>,
    /// Token requests refused.
    pub refused: std::sync::Arc<AtomicUsize>,
}

impl TokenServer {
    fn start(dir: &Path, opts: TokenOptions) -> TokenServer {
        let dir = dir.join("token");
        std::fs::create_dir_all(&dir).unwrap();
        run(Command::new("openssl")
            .current_dir(&dir)
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "token.key",
            ])
            .args([
                "-out",
                "token.crt",
                "-days",
                "3",
                "-subj",
                "/CN=rundmc test token signer",
            ]));
        run(Command::new("openssl").current_dir(&dir).args([
            "x509",
            "-in",
            "token.crt",
            "-outform",
            "DER",
            "-out",
            "token.der",
        ]));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let issued = std::sync::Arc::new(AtomicUsize::new(0));
        let refused = std::sync::Arc::new(AtomicUsize::new(0));
        let (d, i, r) = (dir.clone(), issued.clone(), refused.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (d, o, i, r) = (d.clone(), opts.clone(), i.clone(), r.clone());
                std::thread::spawn(move || serve_token(conn, &d, &o, &i, &r));
            }
        });
        TokenServer {
            addr,
            dir,
            issued,
            refused,
        }
    }
}

fn serve_token(
    mut conn: TcpStream,
    dir: &Path,
    opts: &TokenOptions,
    issued: &AtomicUsize,
    refused: &AtomicUsize,
) {
    use std::io::{BufRead, BufReader, Write};
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(v.trim().to_string());
        }
    }
    let target = request_line.split(' ').nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(|s| {
            s.replace("%3A", ":")
                .replace("%3a", ":")
                .replace("%2C", ",")
                .replace("%2c", ",")
                .replace("%2F", "/")
                .replace("%2f", "/")
        })
        .collect();
    let expected = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", opts.user, opts.password)
        )
    );
    let user = match authorization {
        Some(a) if a == expected => Some(opts.user.clone()),
        Some(_) => None,
        None if opts.anonymous_pull => Some(String::new()),
        None => None,
    };
    let response = match user {
        None => {
            refused.fetch_add(1, Ordering::Relaxed);
            let body = r#"{"details":"incorrect username or password"}"#;
            format!(
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        Some(user) => {
            issued.fetch_add(1, Ordering::Relaxed);
            let token = jwt(dir, &user, &scopes);
            let body =
                format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
    };
    let _ = conn.write_all(response.as_bytes());
}

/// An RS256 JWT granting `scopes` (`repository:<name>:<actions>`) to
/// `user` (empty: anonymous, pull only).
fn jwt(dir: &Path, user: &str, scopes: &[String]) -> String {
    use base64::Engine as _;
    use std::io::Write;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let der = std::fs::read(dir.join("token.der")).unwrap();
    let header = serde_json::json!({
        "typ": "JWT", "alg": "RS256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(der)],
    });
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let actions: Vec<&str> = actions
                .split(',')
                .filter(|a| !user.is_empty() || *a == "pull")
                .collect();
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": user, "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now - 10,
        "jti": format!("{now}-{}", COUNTER.fetch_add(1, Ordering::Relaxed)),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(dir.join("token.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst -sign failed");
    format!("{input}.{}", b64.encode(out.stdout))
}
