//! The registry client: an `oci-client` configured from the agent's flags
//! (`--insecure-registry HOST:PORT` speaks plain HTTP to that registry,
//! `--registry-ca FILE` adds trusted roots), on rustls with the `ring`
//! provider kube already brings; and the choice of this node's manifest
//! from a manifest list or an OCI index.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::ImageIndexEntry;
use thiserror::Error;

/// How the agent reaches registries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    /// `host:port` of registries spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// PEM files of extra root certificates.
    pub ca_files: Vec<PathBuf>,
}

/// Why the client could not be made.
#[derive(Error, Debug)]
pub enum RegistryConfigError {
    /// A `--registry-ca` file could not be read.
    #[error("--registry-ca {}: {source}", path.display())]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A `--registry-ca` file holds no PEM certificate.
    #[error("--registry-ca {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
    },
    /// The HTTP client refused the configuration (a bad certificate).
    #[error("registry client: {0}")]
    Client(String),
}

/// How long to wait for a registry to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a read may stall before the pull fails.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Installs `ring` as rustls' process-wide provider, once; one already
/// installed (by kube, or by an earlier call) is kept.
pub fn install_crypto_provider() {
    // An Err means a provider is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client for `config`.
pub fn client(config: &RegistryConfig) -> Result<oci_client::Client, RegistryConfigError> {
    install_crypto_provider();
    let mut roots = Vec::new();
    for path in &config.ca_files {
        roots.push(read_ca(path)?);
    }
    let client_config = ClientConfig {
        protocol: if config.insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(config.insecure.clone())
        },
        extra_root_certificates: roots,
        // The puller resolves indexes itself, to report what it found.
        platform_resolver: None,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: concat!("rundmc/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    };
    oci_client::Client::try_from(client_config)
        .map_err(|e| RegistryConfigError::Client(e.to_string()))
}

fn read_ca(path: &Path) -> Result<Certificate, RegistryConfigError> {
    let data = std::fs::read(path).map_err(|source| RegistryConfigError::ReadCa {
        path: path.to_owned(),
        source,
    })?;
    if !data
        .windows(27)
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(RegistryConfigError::NotPem {
            path: path.to_owned(),
        });
    }
    Ok(Certificate {
        encoding: CertificateEncoding::Pem,
        data,
    })
}

/// This node's platform in an index's terms: `linux`, the GOARCH of this
/// build's architecture, and its variant where one is customary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlatform {
    /// `linux`.
    pub os: String,
    /// GOARCH: `amd64`, `arm64`, ...
    pub architecture: String,
    /// `v8` for arm64, `v7` for arm; `None` elsewhere.
    pub variant: Option<String>,
}

impl NodePlatform {
    /// The platform this binary runs on.
    pub fn current() -> NodePlatform {
        NodePlatform::for_arch(std::env::consts::ARCH)
    }

    /// The platform of Rust's `arch` on Linux.
    pub fn for_arch(arch: &str) -> NodePlatform {
        let (architecture, variant) = match arch {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        NodePlatform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_string),
        }
    }
}

/// `os/arch[/variant]` of an index entry, for messages.
pub fn describe(entry: &ImageIndexEntry) -> String {
    match &entry.platform {
        None => format!("(no platform) {}", entry.digest),
        Some(p) => match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        },
    }
}

/// The entry for `node`, as containerd's matcher picks it: same OS and
/// architecture, and the same variant, or none given (an arm64 entry
/// without variant serves a v8 node); an exact variant wins.
pub fn choose_platform<'a>(
    entries: &'a [ImageIndexEntry],
    node: &NodePlatform,
) -> Option<&'a ImageIndexEntry> {
    let fits = |e: &&ImageIndexEntry| {
        e.platform.as_ref().is_some_and(|p| {
            p.os.to_string() == node.os && p.architecture.to_string() == node.architecture
        })
    };
    let variant = |e: &ImageIndexEntry| e.platform.as_ref().and_then(|p| p.variant.clone());
    let candidates: Vec<&ImageIndexEntry> = entries.iter().filter(fits).collect();
    candidates
        .iter()
        .find(|e| variant(e) == node.variant)
        .or_else(|| candidates.iter().find(|e| variant(e).is_none()))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>, digest: &str) -> ImageIndexEntry {
        serde_json::from_value(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": 1,
            "platform": {"os": "linux", "architecture": arch, "variant": variant},
        }))
        .unwrap()
    }

    #[test]
    fn maps_rust_arch_to_goarch() {
        assert_eq!(NodePlatform::for_arch("x86_64").architecture, "amd64");
        let arm = NodePlatform::for_arch("aarch64");
        assert_eq!(
            (arm.architecture.as_str(), arm.variant.as_deref()),
            ("arm64", Some("v8"))
        );
    }

    #[test]
    fn chooses_this_platform() {
        let entries = [
            entry("amd64", None, "a"),
            entry("arm64", None, "b"),
            entry("arm64", Some("v8"), "c"),
            entry("arm", Some("v6"), "d"),
        ];
        let pick = |arch| {
            choose_platform(&entries, &NodePlatform::for_arch(arch)).map(|e| e.digest.as_str())
        };
        assert_eq!(pick("x86_64"), Some("a"));
        assert_eq!(pick("aarch64"), Some("c"));
        assert_eq!(pick("arm"), None);
        assert_eq!(pick("s390x"), None);
        assert_eq!(
            choose_platform(&entries[1..2], &NodePlatform::for_arch("aarch64"))
                .map(|e| e.digest.as_str()),
            Some("b")
        );
        assert_eq!(describe(&entries[2]), "linux/arm64/v8");
    }
}
