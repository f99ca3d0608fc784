//! The remote API's TLS: its serving certificate and key from PEM files,
//! and, with a client CA, client certificates verified against it (a
//! client may still come without one and present a bearer token). A
//! verified certificate names its holder as the API server does: the
//! subject's common name is the user, its organisations the groups.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use thiserror::Error;

use super::review::Identity;

/// Why the TLS settings are unusable.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{flag} {path}: {message}")]
    File {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the combination.
    #[error("remote API TLS: {0}")]
    Config(#[from] rustls::Error),
    /// The client CA could not make a verifier.
    #[error("--remote-api-client-ca: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn file_error(flag: &'static str, path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        flag,
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Every certificate of a PEM file.
fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(flag, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(flag, path, e))?;
    match certs.is_empty() {
        true => Err(file_error(flag, path, "no PEM certificate in it")),
        false => Ok(certs),
    }
}

/// The server's TLS configuration (HTTP/1.1 only: exec streams upgrade).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("--remote-api-tls-cert", cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_error("--remote-api-tls-key", key, e))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates("--remote-api-client-ca", path)? {
                roots
                    .add(c)
                    .map_err(|e| file_error("--remote-api-client-ca", path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The user a verified client certificate names: CN the user, each O a
/// group; `None` without a common name (pure).
pub fn certificate_identity(der: &[u8]) -> Option<Identity> {
    let (mut user, mut groups) = (None, Vec::new());
    for (oid, value) in subject(der)? {
        match oid {
            OID_CN => user = Some(value),
            OID_O => groups.push(value),
            _ => {}
        }
    }
    Some(Identity {
        user: user.filter(|u| !u.is_empty())?,
        groups,
        ..Identity::default()
    })
}

/// id-at-commonName, 2.5.4.3.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// id-at-organizationName, 2.5.4.10.
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];

/// One DER element: its tag, its contents, and what follows it.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (n as usize, rest),
        n => {
            let count = (n & 0x7f) as usize;
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, &rest[count..])
        }
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The subject's attributes (OID, text) of an X.509 certificate.
fn subject(der: &[u8]) -> Option<Vec<(&[u8], String)>> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, cert, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = element(cert)? else {
        return None;
    };
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs)?.2; // [0] version
    }
    // serialNumber, signature, issuer, validity; then the subject.
    for _ in 0..4 {
        tbs = element(tbs)?.2;
    }
    let (SEQUENCE, mut name, _) = element(tbs)? else {
        return None;
    };
    let mut out = Vec::new();
    while !name.is_empty() {
        let (_, mut set, rest) = element(name)?;
        name = rest;
        while !set.is_empty() {
            let (_, attr, rest) = element(set)?;
            set = rest;
            let (_, oid, value) = element(attr)?;
            let (_, text, _) = element(value)?;
            out.push((oid, String::from_utf8_lossy(text).into_owned()));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl req -x509 -subj "/O=devs/O=ops/CN=alice"` (P-256).
    const ALICE: &str = "-----BEGIN CERTIFICATE-----
MIIBsjCCAVegAwIBAgIURXFyxLgZ9zMP0VVL5D4w1y+S+oQwCgYIKoZIzj0EAwIw
LTENMAsGA1UECgwEZGV2czEMMAoGA1UECgwDb3BzMQ4wDAYDVQQDDAVhbGljZTAg
Fw0yNjExMzAxNzA3MjZaGA8yMTI2MTEwNjE3MDcyNlowLTENMAsGA1UECgwEZGV2
czEMMAoGA1UECgwDb3BzMQ4wDAYDVQQDDAVhbGljZTBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABEdIvFXweZyPacMy7gOEpsM4/M1A+iYYG39LshAktyYcD32lYHli
BmmT0ynH60PKTLkswsXhexMvgWSlYV5KCc+jUzBRMB0GA1UdDgQWBBQkzdgwoGWC
SRKFGZ3g06ENJYPSRzAfBgNVHSMEGDAWgBQkzdgwoGWCSRKFGZ3g06ENJYPSRzAP
BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQD9DwuWLAazmiMhaZ6s
VznujdMYcMWNduiE6y9HXwlf4gIhAJA5hIaBTXuBFe7o7itZyHjq4HFZWghuGmav
S5QcuCP3
-----END CERTIFICATE-----
";

    #[test]
    fn a_certificate_names_its_user_and_groups() {
        let der = CertificateDer::from_pem_slice(ALICE.as_bytes()).unwrap();
        let who = certificate_identity(&der).unwrap();
        assert_eq!(who.user, "alice");
        assert_eq!(who.groups, ["devs", "ops"]);
    }

    #[test]
    fn garbage_names_no_one() {
        assert_eq!(certificate_identity(&[]), None);
        assert_eq!(certificate_identity(&[0x30, 0x82, 0xff]), None);
        assert_eq!(certificate_identity(&[0x30, 0x03, 0x02, 0x01, 0x00]), None);
    }
}
