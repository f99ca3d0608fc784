//! Registry credentials as the kubelet finds and matches them: Docker
//! `config.json` files (the node's, in the kubelet's lookup order) and
//! `kubernetes.io/dockerconfigjson` Secrets (a resource's
//! `imagePullSecrets`). A [`Keyring`] answers "which credentials may pull
//! `registry/repository`", most specific first; the puller tries each.
//!
//! Matching is the kubelet's (`pkg/credentialprovider`): a key may carry a
//! scheme and a path (`https://reg.io/v1/team`); its host parts match the
//! image's host parts one for one with shell globs (`*.example.com`), its
//! port exactly, its path as a prefix of the repository; the Docker Hub
//! keys (`index.docker.io/v1/`, `https://index.docker.io/v1/`,
//! `docker.io`) serve `docker.io` images. Credential helpers, `credsStore`
//! and identity tokens are not supported: they are skipped with a debug log.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};
use thiserror::Error;
use tracing::debug;

/// The kubelet's default root, where it looks first for `config.json`.
pub const KUBELET_ROOT: &str = "/var/lib/kubelet";
/// The host the kubelet files Docker Hub's credentials under.
const DOCKER_HUB_HOST: &str = "index.docker.io";

/// A user name and password for one registry, and where they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name.
    pub username: String,
    /// The password (or token used as one).
    pub password: String,
    /// The file or Secret and its key, for messages (`/root/.docker/config.json: auths."reg.io"`).
    pub source: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// Why credentials could not be read; each names the file or Secret and the field.
#[derive(Error, Debug)]
pub enum CredentialsError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not JSON, or not the shape of a Docker config.
    #[error("{source_name}: line {line}: {message}")]
    Json {
        /// The file or Secret.
        source_name: String,
        /// The line (1-based; 0 when unknown).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A field of an entry is wrong.
    #[error("{source_name}: {field}: {message}")]
    Field {
        /// The file or Secret.
        source_name: String,
        /// The field's path, `auths."reg.io".auth`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// One key of a config and its credential.
#[derive(Clone, Debug)]
struct Entry {
    /// The kubelet's normalised key: `host[:port][/path]`.
    key: String,
    credential: Credential,
}

/// Credentials by registry key, matched as the kubelet matches them.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    entries: Vec<Entry>,
}

impl Keyring {
    /// A keyring with nothing in it (anonymous pulls only).
    pub fn empty() -> Keyring {
        Keyring::default()
    }

    /// A Docker `config.json` (`{"auths": {...}}`), read from `source`.
    pub fn from_config_json(bytes: &[u8], source: &Path) -> Result<Keyring, CredentialsError> {
        parse_config(bytes, &source.display().to_string(), Shape::ConfigJson)
    }

    /// A legacy `.dockercfg` file (the `auths` map alone), read from `source`.
    pub fn from_dockercfg(bytes: &[u8], source: &Path) -> Result<Keyring, CredentialsError> {
        parse_config(bytes, &source.display().to_string(), Shape::Dockercfg)
    }

    /// The `.dockerconfigjson` data of a `kubernetes.io/dockerconfigjson`
    /// Secret; `source` names it (`namespace/name`).
    pub fn from_dockerconfigjson(bytes: &[u8], source: &str) -> Result<Keyring, CredentialsError> {
        parse_config(
            bytes,
            &format!("Secret {source}: .dockerconfigjson"),
            Shape::ConfigJson,
        )
    }

    /// Reads `path`: a `.dockercfg` when it is named so, else a `config.json`.
    pub fn from_file(path: &Path) -> Result<Keyring, CredentialsError> {
        let bytes = std::fs::read(path).map_err(|source| CredentialsError::Read {
            path: path.to_owned(),
            source,
        })?;
        if path.file_name().is_some_and(|n| n == ".dockercfg") {
            Keyring::from_dockercfg(&bytes, path)
        } else {
            Keyring::from_config_json(&bytes, path)
        }
    }

    /// The node's credentials, found as the kubelet finds them: the first
    /// `config.json` of the kubelet's root, the current directory,
    /// `$HOME/.docker` and `/.docker`; failing all, the first `.dockercfg`
    /// of the kubelet's root, the current directory, `$HOME` and `/`. None
    /// found is an empty keyring; one found but malformed is an error
    /// naming it (the kubelet would skip it silently).
    pub fn node_default() -> Result<Keyring, CredentialsError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let cwd = std::env::current_dir().ok();
        for path in node_search_paths(home.as_deref(), cwd.as_deref()) {
            if path.is_file() {
                debug!(path = %path.display(), "node registry credentials");
                return Keyring::from_file(&path);
            }
        }
        Ok(Keyring::empty())
    }

    /// This keyring followed by `other` (tried after it).
    pub fn merged(mut self, other: &Keyring) -> Keyring {
        self.entries.extend(other.entries.iter().cloned());
        self
    }

    /// Whether it holds no credential.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every credential that may pull `registry/repository`, most specific
    /// key first (the kubelet's reverse-sorted index); Docker Hub's keys
    /// serve `docker.io` when no other key matched.
    pub fn lookup(&self, registry: &str, repository: &str) -> Vec<Credential> {
        let image = format!("{registry}/{repository}");
        let mut keys: Vec<&str> = self.entries.iter().map(|e| e.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.reverse();
        let mut out: Vec<Credential> = keys
            .iter()
            .filter(|k| key_matches(k, &image))
            .flat_map(|k| self.with_key(k))
            .collect();
        if out.is_empty() && is_docker_hub(registry) {
            out = self.with_key(DOCKER_HUB_HOST).collect();
        }
        out
    }

    fn with_key<'a>(&'a self, key: &'a str) -> impl Iterator<Item = Credential> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.key == key)
            .map(|e| e.credential.clone())
    }
}

/// Where the kubelet looks for node credentials, in order.
pub fn node_search_paths(home: Option<&Path>, cwd: Option<&Path>) -> Vec<PathBuf> {
    let root = Path::new("/");
    let kubelet = Path::new(KUBELET_ROOT);
    let mut json_dirs: Vec<PathBuf> = vec![kubelet.to_owned()];
    let mut cfg_dirs: Vec<PathBuf> = vec![kubelet.to_owned()];
    if let Some(cwd) = cwd {
        json_dirs.push(cwd.to_owned());
        cfg_dirs.push(cwd.to_owned());
    }
    if let Some(home) = home {
        json_dirs.push(home.join(".docker"));
        cfg_dirs.push(home.to_owned());
    }
    json_dirs.push(root.join(".docker"));
    cfg_dirs.push(root.to_owned());
    let json = json_dirs.into_iter().map(|d| d.join("config.json"));
    let cfg = cfg_dirs.into_iter().map(|d| d.join(".dockercfg"));
    json.chain(cfg).collect()
}

#[derive(Clone, Copy)]
enum Shape {
    /// `{"auths": {...}, ...}`
    ConfigJson,
    /// `{...}`: the auths map itself.
    Dockercfg,
}

fn parse_config(bytes: &[u8], source: &str, shape: Shape) -> Result<Keyring, CredentialsError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| CredentialsError::Json {
        source_name: source.to_string(),
        line: e.line(),
        message: e.to_string(),
    })?;
    let field_err = |field: &str, message: &str| CredentialsError::Field {
        source_name: source.to_string(),
        field: field.to_string(),
        message: message.to_string(),
    };
    let top = value
        .as_object()
        .ok_or_else(|| field_err("(top level)", "not a JSON object"))?;
    let (auths, prefix) = match shape {
        Shape::Dockercfg => (top, ""),
        Shape::ConfigJson => {
            for ignored in ["credHelpers", "credsStore"] {
                if top.contains_key(ignored) {
                    debug!(
                        source,
                        field = ignored,
                        "credential helpers are not supported; skipped"
                    );
                }
            }
            match top.get("auths") {
                None => return Ok(Keyring::empty()),
                Some(Value::Object(map)) => (map, "auths."),
                Some(_) => return Err(field_err("auths", "not a JSON object")),
            }
        }
    };
    let mut entries = Vec::new();
    for (key, entry) in auths {
        let field = format!("{prefix}{key:?}");
        if let Some(e) = parse_entry(key, entry, source, &field)? {
            entries.push(e);
        }
    }
    Ok(Keyring { entries })
}

fn parse_entry(
    key: &str,
    entry: &Value,
    source: &str,
    field: &str,
) -> Result<Option<Entry>, CredentialsError> {
    let err = |sub: &str, message: String| CredentialsError::Field {
        source_name: source.to_string(),
        field: if sub.is_empty() {
            field.to_string()
        } else {
            format!("{field}.{sub}")
        },
        message,
    };
    let obj = entry
        .as_object()
        .ok_or_else(|| err("", "not a JSON object".into()))?;
    let text = |name: &str| -> Result<String, CredentialsError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(err(name, "not a string".into())),
        }
    };
    let (mut username, mut password) = (text("username")?, text("password")?);
    let auth = text("auth")?;
    if !auth.is_empty() {
        (username, password) = decode_auth(&auth).map_err(|m| err("auth", m))?;
    }
    if username.is_empty() && password.is_empty() {
        if has_token(obj) {
            debug!(
                source,
                field, "identity tokens are not supported; entry skipped"
            );
        }
        return Ok(None);
    }
    let normalised = normalise_key(key)
        .ok_or_else(|| err("", format!("{key:?} is not a registry host or URL")))?;
    Ok(Some(Entry {
        key: normalised,
        credential: Credential {
            username,
            password,
            source: format!("{source}: {field}"),
        },
    }))
}

fn has_token(obj: &Map<String, Value>) -> bool {
    ["identitytoken", "registrytoken"].iter().any(|k| {
        obj.get(*k)
            .is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty()))
    })
}

/// `auth`: base64 of `user:password`.
fn decode_auth(auth: &str) -> Result<(String, String), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "decodes to non-UTF-8 bytes".to_string())?;
    let (user, pass) = text
        .split_once(':')
        .ok_or_else(|| "does not decode to \"user:password\"".to_string())?;
    Ok((user.to_string(), pass.to_string()))
}

/// The kubelet's key: the scheme dropped, a leading `/v1/` or `/v2/` of the
/// path dropped, `host[:port][/path]`.
fn normalise_key(key: &str) -> Option<String> {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    let path = if path.starts_with("/v1/") || path.starts_with("/v2/") {
        &path[3..]
    } else {
        path
    };
    let path = path.trim_end_matches('/');
    Some(if path.is_empty() {
        host.to_string()
    } else {
        format!("{host}{path}")
    })
}

fn is_docker_hub(registry: &str) -> bool {
    registry == "docker.io" || registry == DOCKER_HUB_HOST
}

/// The kubelet's `URLsMatchStr`: same port, as many host parts, each a
/// glob match, and the key's path a prefix of the image's.
fn key_matches(key: &str, image: &str) -> bool {
    let (key_host, key_path) = split_host_path(key);
    let (image_host, image_path) = split_host_path(image);
    let (key_host, key_port) = split_port(key_host);
    let (image_host, image_port) = split_port(image_host);
    let key_parts: Vec<&str> = key_host.split('.').collect();
    let image_parts: Vec<&str> = image_host.split('.').collect();
    key_port == image_port
        && key_parts.len() == image_parts.len()
        && image_path.starts_with(key_path)
        && key_parts
            .iter()
            .zip(&image_parts)
            .all(|(k, i)| glob_match(k.as_bytes(), i.as_bytes()))
}

fn split_host_path(s: &str) -> (&str, &str) {
    match s.find('/') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

fn split_port(host: &str) -> (&str, &str) {
    match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
        _ => (host, ""),
    }
}

/// Shell glob of one host part: `*` (any run), `?` (one character),
/// everything else literally, case-insensitively as hosts are.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.split_first(), text.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            glob_match(rest, text) || (!text.is_empty() && glob_match(pattern, &text[1..]))
        }
        (Some((b'?', rest)), Some((_, trest))) => glob_match(rest, trest),
        (Some((p, rest)), Some((t, trest))) => p.eq_ignore_ascii_case(t) && glob_match(rest, trest),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn users(k: &Keyring, registry: &str, repo: &str) -> Vec<String> {
        k.lookup(registry, repo)
            .into_iter()
            .map(|c| c.username)
            .collect()
    }

    #[test]
    fn reads_auth_and_username_password() {
        let json = format!(
            r#"{{"auths": {{
                "reg.io": {{"auth": "{}"}},
                "other.io": {{"username": "u2", "password": "p:2"}},
                "tok.io": {{"identitytoken": "xyz"}}
            }}, "credHelpers": {{"gcr.io": "gcloud"}}}}"#,
            b64("u1:p:1")
        );
        let k = Keyring::from_config_json(json.as_bytes(), Path::new("/c.json")).unwrap();
        let c = &k.lookup("reg.io", "a/b")[0];
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u1", "p:1"));
        assert_eq!(c.source, "/c.json: auths.\"reg.io\"");
        assert_eq!(users(&k, "other.io", "x"), ["u2"]);
        assert!(k.lookup("tok.io", "x").is_empty());
        assert!(!format!("{c:?}").contains("p:1"));
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let cases = [
            (
                r#"{"auths": {"r.io": {"auth": "%%%"}}}"#,
                "/c.json: auths.\"r.io\".auth: not base64",
            ),
            (
                &format!(
                    r#"{{"auths": {{"r.io": {{"auth": "{}"}}}}}}"#,
                    b64("nocolon")
                ),
                "/c.json: auths.\"r.io\".auth: does not decode",
            ),
            (
                r#"{"auths": {"r.io": {"username": 3}}}"#,
                "auths.\"r.io\".username: not a string",
            ),
            (r#"{"auths": []}"#, "/c.json: auths: not a JSON object"),
            ("{\n\"auths\": {,}}", "/c.json: line 2:"),
        ];
        for (json, want) in cases {
            let e = Keyring::from_config_json(json.as_bytes(), Path::new("/c.json")).unwrap_err();
            assert!(e.to_string().contains(want), "{json}: {e}");
        }
        let e = Keyring::from_dockerconfigjson(b"[]", "ns/pull").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Secret ns/pull: .dockerconfigjson: (top level): not a JSON object"
        );
    }

    #[test]
    fn kubelet_matching() {
        let entry = |u: &str| format!(r#"{{"username": "{u}", "password": "p"}}"#);
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {hub},
                "reg.io": {host},
                "https://reg.io/v2/team": {team},
                "reg.io/team/app": {app},
                "*.example.com": {glob},
                "localhost:5000": {port},
                "http://plain.io/": {plain}
            }}}}"#,
            hub = entry("hub"),
            host = entry("host"),
            team = entry("team"),
            app = entry("app"),
            glob = entry("glob"),
            port = entry("port"),
            plain = entry("plain"),
        );
        let k = Keyring::from_config_json(json.as_bytes(), Path::new("/c.json")).unwrap();
        let cases: &[(&str, &str, &[&str])] = &[
            ("docker.io", "library/busybox", &["hub"]),
            ("reg.io", "team/app", &["app", "team", "host"]),
            ("reg.io", "team/other", &["team", "host"]),
            ("reg.io", "solo", &["host"]),
            ("a.example.com", "x", &["glob"]),
            ("a.b.example.com", "x", &[]),
            ("example.com", "x", &[]),
            ("localhost:5000", "x", &["port"]),
            ("localhost", "x", &[]),
            ("localhost:5001", "x", &[]),
            ("plain.io", "x", &["plain"]),
            ("ghcr.io", "x", &[]),
        ];
        for (registry, repo, want) in cases {
            assert_eq!(users(&k, registry, repo), *want, "{registry}/{repo}");
        }
    }

    #[test]
    fn docker_io_key_and_legacy_dockercfg() {
        let json = format!(r#"{{"docker.io": {{"auth": "{}"}}}}"#, b64("d:p"));
        let k = Keyring::from_dockercfg(json.as_bytes(), Path::new("/.dockercfg")).unwrap();
        assert_eq!(users(&k, "docker.io", "library/busybox"), ["d"]);
    }

    #[test]
    fn search_order_is_the_kubelets() {
        let paths = node_search_paths(Some(Path::new("/home/u")), Some(Path::new("/cwd")));
        let want = [
            "/var/lib/kubelet/config.json",
            "/cwd/config.json",
            "/home/u/.docker/config.json",
            "/.docker/config.json",
            "/var/lib/kubelet/.dockercfg",
            "/cwd/.dockercfg",
            "/home/u/.dockercfg",
            "/.dockercfg",
        ];
        let got: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b"abc"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(glob_match(b"*.x", b"y.x"));
        assert!(!glob_match(b"a*d", b"abc"));
        assert!(glob_match(b"REG", b"reg"));
    }
}
