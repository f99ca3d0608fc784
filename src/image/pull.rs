//! The puller: fetches an image from its registry into the store, once
//! however many ask for it at the same time.
//!
//! Credentials are tried as the kubelet orders them (the resource's
//! `imagePullSecrets`, then the node's, most specific key first), then
//! anonymously; the first that the registry accepts for the manifest serves
//! the whole pull. Bearer-token registries (the `WWW-Authenticate`
//! challenge) and Basic auth are `oci-client`'s. A manifest list or OCI
//! index is resolved to this node's platform. Every blob's digest is
//! verified: the manifest's and config's here and by the store, each
//! layer's here (hashed as it streams) and by the store, which unpacks it
//! from the stream without keeping the blob. The store's shared lock is
//! held from the first layer until the image is committed.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::{StreamExt, TryStreamExt, stream};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use sha2::{Digest as _, Sha256};
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::api::reference::ImageReference;
use crate::image::credentials::{Credential, Keyring};
use crate::image::registry::{self, NodePlatform, RegistryConfig};
use crate::image::store::{ImageRecord, LayerBlob, Store, StoreError};

/// Manifest media types the puller asks for.
const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// Layers fetched at once.
const PARALLEL_LAYERS: usize = 3;
/// Chunks in flight between the network and the unpacker, per layer.
const CHANNEL_CHUNKS: usize = 8;

/// What a pull brought.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image as the store recorded it.
    pub image: ImageRecord,
    /// Bytes fetched from the registry (layers the store had are not).
    pub bytes: u64,
    /// How long the pull took.
    pub elapsed: Duration,
}

/// Told of each layer's progress: `done` of `total` bytes (`total` is the
/// manifest's size for the layer).
pub trait Progress: Send + Sync {
    /// `digest` has `done` of `total` bytes.
    fn update(&self, digest: &str, done: u64, total: u64);
}

/// Why a pull failed; its Display is what an event shows a user.
#[derive(Error, Debug, Clone)]
pub enum PullError {
    /// The registry refused every credential tried (and anonymous access).
    #[error("{registry} refused to serve {reference}: unauthorized ({message}; tried {tried})")]
    Unauthorized {
        /// The registry.
        registry: String,
        /// The normalised reference.
        reference: String,
        /// What the registry or token server said.
        message: String,
        /// The credentials tried, by source, and `anonymous`.
        tried: String,
    },
    /// No such repository, tag or manifest.
    #[error("{reference}: not found in {registry} ({message})")]
    NotFound {
        /// The registry.
        registry: String,
        /// The normalised reference.
        reference: String,
        /// What the registry said.
        message: String,
    },
    /// A blob's content does not hash to its digest; nothing of it is kept.
    #[error("{reference}: digest mismatch: {what} {digest} hashes to {actual}")]
    DigestMismatch {
        /// The normalised reference.
        reference: String,
        /// `manifest`, `config` or `layer`.
        what: &'static str,
        /// The digest the content should have.
        digest: String,
        /// What it hashed to.
        actual: String,
    },
    /// A manifest list or index without an entry for this node.
    #[error("{reference}: no image for {wanted} in its index (it has: {})", available.join(", "))]
    NoMatchingPlatform {
        /// The normalised reference.
        reference: String,
        /// This node's platform, `linux/amd64`.
        wanted: String,
        /// The index's platforms.
        available: Vec<String>,
    },
    /// A manifest or layer rundmc cannot use (schema 1, foreign layers).
    #[error("{reference}: unsupported {what}")]
    Unsupported {
        /// The normalised reference.
        reference: String,
        /// What is unsupported.
        what: String,
    },
    /// The registry could not be reached or the transfer broke.
    #[error("{registry}: {message}")]
    Network {
        /// The registry.
        registry: String,
        /// What failed, with its causes.
        message: String,
    },
    /// The registry answered with an error not covered above.
    #[error("{reference}: registry {registry}: {message}")]
    Registry {
        /// The registry.
        registry: String,
        /// The normalised reference.
        reference: String,
        /// Its answer.
        message: String,
    },
    /// The image store failed.
    #[error("{reference}: image store: {source}")]
    Store {
        /// The normalised reference.
        reference: String,
        /// The store's error.
        source: Arc<StoreError>,
    },
    /// The registry client could not be made (`--registry-ca`).
    #[error("{0}")]
    Config(String),
    /// The pull's task ended abnormally.
    #[error("{reference}: pull failed: {message}")]
    Internal {
        /// The normalised reference.
        reference: String,
        /// What happened.
        message: String,
    },
}

type Flight = Shared<BoxFuture<'static, Result<Pulled, PullError>>>;

/// Pulls images into a store; `Send + Sync`, shared by the agent's tasks.
pub struct Puller {
    inner: Arc<Inner>,
    in_flight: Arc<Mutex<HashMap<String, Flight>>>,
}

struct Inner {
    store: Arc<Store>,
    config: RegistryConfig,
    node: Keyring,
    platform: NodePlatform,
}

impl Puller {
    /// A puller into `store`, reaching registries as `config` says, with
    /// the node's credentials `node`.
    pub fn new(
        store: Arc<Store>,
        config: RegistryConfig,
        node: Keyring,
    ) -> Result<Puller, PullError> {
        // Make one client now, so a bad --registry-ca fails at start.
        registry::client(&config).map_err(|e| PullError::Config(e.to_string()))?;
        Ok(Puller {
            inner: Arc::new(Inner {
                store,
                config,
                node,
                platform: NodePlatform::current(),
            }),
            in_flight: Arc::default(),
        })
    }

    /// Pulls `reference` into the store. Concurrent pulls of one reference
    /// share one: the first caller's `secrets` and `progress` serve it. The
    /// pull runs on its own task, so a caller that gives up does not
    /// cancel it for the others.
    pub async fn pull(
        &self,
        reference: &ImageReference,
        secrets: Option<&Keyring>,
        progress: Option<Arc<dyn Progress>>,
    ) -> Result<Pulled, PullError> {
        let key = reference.to_string();
        let flight = {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let f = self.start(reference.clone(), secrets.cloned(), progress);
                    map.insert(key, f.clone());
                    f
                }
            }
        };
        flight.await
    }

    fn start(
        &self,
        reference: ImageReference,
        secrets: Option<Keyring>,
        progress: Option<Arc<dyn Progress>>,
    ) -> Flight {
        let inner = self.inner.clone();
        let in_flight = self.in_flight.clone();
        let key = reference.to_string();
        let task = tokio::spawn(async move {
            let result = inner.pull(&reference, secrets.as_ref(), progress).await;
            // Under the lock `pull` inserted this flight with, so it is
            // there to remove.
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&reference.to_string());
            result
        });
        async move {
            task.await.unwrap_or_else(|e| {
                Err(PullError::Internal {
                    reference: key,
                    message: e.to_string(),
                })
            })
        }
        .boxed()
        .shared()
    }
}

/// One pull's context: the client whose credential the registry took.
struct Session<'a> {
    inner: &'a Inner,
    client: oci_client::Client,
    target: oci_client::Reference,
    reference: String,
    registry: String,
    progress: Option<Arc<dyn Progress>>,
}

impl Inner {
    async fn pull(
        &self,
        reference: &ImageReference,
        secrets: Option<&Keyring>,
        progress: Option<Arc<dyn Progress>>,
    ) -> Result<Pulled, PullError> {
        let started = Instant::now();
        info!(image = %reference, "pulling");
        let (session, raw, digest) = self.authenticate(reference, secrets, progress).await?;
        let (manifest, manifest_bytes, manifest_digest) =
            session.resolve_platform(raw, digest).await?;
        let config_digest = manifest.config.digest.clone();
        let mut bytes = manifest_bytes.len() as u64;
        let config = session.config(&manifest.config).await?;
        bytes += config.len() as u64;
        let store = self.store.clone();
        let (md, cd) = (manifest_digest.clone(), config_digest.clone());
        session
            .blocking(move || {
                store.put_blob(&md, &manifest_bytes)?;
                store.put_blob(&cd, &config)
            })
            .await?;
        let store = self.store.clone();
        let lock = session.blocking(move || store.shared_lock()).await?;
        bytes += session.layers(&manifest.layers).await?;
        let store = self.store.clone();
        let name = reference.to_string();
        let image = session
            .blocking(move || store.commit(Some(&name), &manifest_digest, &config_digest))
            .await?;
        drop(lock);
        info!(image = %reference, id = %image.id, bytes, "pulled");
        Ok(Pulled {
            image,
            bytes,
            elapsed: started.elapsed(),
        })
    }

    /// Fetches the manifest with each credential in turn (then anonymously)
    /// until the registry accepts one: the session it made, the manifest's
    /// bytes and digest.
    async fn authenticate(
        &self,
        reference: &ImageReference,
        secrets: Option<&Keyring>,
        progress: Option<Arc<dyn Progress>>,
    ) -> Result<(Session<'_>, Bytes, String), PullError> {
        let mut creds: Vec<Credential> = secrets
            .map(|k| k.lookup(&reference.registry, &reference.repository))
            .unwrap_or_default();
        creds.extend(self.node.lookup(&reference.registry, &reference.repository));
        let attempts = creds.iter().map(Some).chain(std::iter::once(None));
        let mut tried = Vec::new();
        let mut last = None;
        for cred in attempts {
            let client =
                registry::client(&self.config).map_err(|e| PullError::Config(e.to_string()))?;
            let session = Session {
                inner: self,
                client,
                target: target(reference),
                reference: reference.to_string(),
                registry: reference.registry.clone(),
                progress: progress.clone(),
            };
            let auth = match cred {
                Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
                None => RegistryAuth::Anonymous,
            };
            tried.push(match cred {
                Some(c) => format!("user {:?} from {}", c.username, c.source),
                None => "anonymous".to_string(),
            });
            match session.manifest(&session.target, &auth).await {
                Ok((raw, digest)) => return Ok((session, raw, digest)),
                Err(PullError::Unauthorized { message, .. }) => {
                    debug!(image = %reference, tried = %tried[tried.len() - 1], %message, "refused");
                    last = Some(message);
                }
                Err(e) => return Err(e),
            }
        }
        Err(PullError::Unauthorized {
            registry: reference.registry.clone(),
            reference: reference.to_string(),
            message: last.unwrap_or_default(),
            tried: tried.join(", "),
        })
    }
}

/// The `oci-client` reference for `r`.
fn target(r: &ImageReference) -> oci_client::Reference {
    let (registry, repository) = (r.registry.clone(), r.repository.clone());
    match (&r.tag, &r.digest) {
        (Some(t), Some(d)) => {
            oci_client::Reference::with_tag_and_digest(registry, repository, t.clone(), d.clone())
        }
        (None, Some(d)) => oci_client::Reference::with_digest(registry, repository, d.clone()),
        (Some(t), None) => oci_client::Reference::with_tag(registry, repository, t.clone()),
        (None, None) => oci_client::Reference::with_tag(registry, repository, "latest".into()),
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What a manifest document is.
enum Doc {
    Image(Box<OciImageManifest>),
    Index(OciImageIndex),
}

impl Session<'_> {
    /// The manifest `target` names (its digest verified when it names one).
    async fn manifest(
        &self,
        target: &oci_client::Reference,
        auth: &RegistryAuth,
    ) -> Result<(Bytes, String), PullError> {
        let (raw, digest) = self
            .client
            .pull_manifest_raw(target, auth, ACCEPT)
            .await
            .map_err(|e| match self.error(e) {
                PullError::DigestMismatch {
                    reference,
                    digest,
                    actual,
                    ..
                } => PullError::DigestMismatch {
                    reference,
                    what: "manifest",
                    digest,
                    actual,
                },
                other => other,
            })?;
        let actual = sha256(&raw);
        let wanted = target.digest().map_or(digest, str::to_string);
        if actual != wanted {
            return Err(self.mismatch("manifest", &wanted, actual));
        }
        Ok((raw, wanted))
    }

    fn parse(&self, raw: &[u8]) -> Result<Doc, PullError> {
        let bad = |what: String| PullError::Unsupported {
            reference: self.reference.clone(),
            what,
        };
        let value: serde_json::Value =
            serde_json::from_slice(raw).map_err(|e| bad(format!("manifest: not JSON: {e}")))?;
        if value.get("schemaVersion").and_then(|v| v.as_i64()) != Some(2) {
            return Err(bad(
                "manifest schema (only schema 2 and OCI manifests are)".into()
            ));
        }
        if value.get("manifests").is_some() {
            let index = serde_json::from_value(value).map_err(|e| bad(format!("index: {e}")))?;
            return Ok(Doc::Index(index));
        }
        let manifest = serde_json::from_value(value).map_err(|e| bad(format!("manifest: {e}")))?;
        Ok(Doc::Image(Box::new(manifest)))
    }

    /// The image manifest for this node: `raw` itself, or the entry of the
    /// index `raw` is that matches this node, fetched.
    async fn resolve_platform(
        &self,
        raw: Bytes,
        digest: String,
    ) -> Result<(OciImageManifest, Bytes, String), PullError> {
        let index = match self.parse(&raw)? {
            Doc::Image(m) => return self.checked(*m, raw, digest),
            Doc::Index(index) => index,
        };
        let platform = &self.inner.platform;
        let Some(entry) = registry::choose_platform(&index.manifests, platform) else {
            let mut wanted = format!("{}/{}", platform.os, platform.architecture);
            if let Some(v) = &platform.variant {
                wanted = format!("{wanted}/{v}");
            }
            return Err(PullError::NoMatchingPlatform {
                reference: self.reference.clone(),
                wanted,
                available: index.manifests.iter().map(registry::describe).collect(),
            });
        };
        debug!(image = %self.reference, digest = %entry.digest, "platform manifest");
        let target = self.target.clone_with_digest(entry.digest.clone());
        let (raw, digest) = self.manifest(&target, &RegistryAuth::Anonymous).await?;
        match self.parse(&raw)? {
            Doc::Image(m) => self.checked(*m, raw, digest),
            Doc::Index(_) => Err(PullError::Unsupported {
                reference: self.reference.clone(),
                what: format!("nested index at {}", entry.digest),
            }),
        }
    }

    /// `manifest`, once every layer is one the store can unpack.
    fn checked(
        &self,
        manifest: OciImageManifest,
        raw: Bytes,
        digest: String,
    ) -> Result<(OciImageManifest, Bytes, String), PullError> {
        for layer in &manifest.layers {
            let mt = layer.media_type.as_str();
            let tar = mt.ends_with(".tar")
                || mt.ends_with("tar+gzip")
                || mt.ends_with("tar.gzip")
                || mt.ends_with("tar+zstd");
            if !tar || mt.contains("foreign") || mt.contains("nondistributable") {
                return Err(PullError::Unsupported {
                    reference: self.reference.clone(),
                    what: format!("layer media type {mt} ({})", layer.digest),
                });
            }
        }
        Ok((manifest, raw, digest))
    }

    /// The config blob, verified.
    async fn config(&self, desc: &OciDescriptor) -> Result<Vec<u8>, PullError> {
        let mut out = Vec::new();
        self.client
            .pull_blob(&self.target, desc, &mut out)
            .await
            .map_err(|e| self.error(e))?;
        let actual = sha256(&out);
        if actual != desc.digest {
            return Err(self.mismatch("config", &desc.digest, actual));
        }
        Ok(out)
    }

    /// Fetches and unpacks every layer the store lacks, a few at once; the
    /// bytes fetched.
    async fn layers(&self, layers: &[OciDescriptor]) -> Result<u64, PullError> {
        stream::iter(layers.to_vec())
            .map(|l| async move { self.layer(&l).await })
            .buffer_unordered(PARALLEL_LAYERS)
            .try_fold(0, |sum, n| async move { Ok(sum + n) })
            .await
    }

    /// Streams one layer into the store's unpacker on a blocking thread,
    /// hashing it on the way.
    async fn layer(&self, desc: &OciDescriptor) -> Result<u64, PullError> {
        let store = self.inner.store.clone();
        if store.has_layer(&desc.digest) {
            return Ok(0);
        }
        let total = u64::try_from(desc.size).unwrap_or(0);
        let mut source = self
            .client
            .pull_blob_stream(&self.target, desc)
            .await
            .map_err(|e| self.error(e))?
            .stream;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
        let blob = LayerBlob {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            size: total,
        };
        let unpack = tokio::task::spawn_blocking(move || {
            store.unpack_layer(&blob, &mut ChannelReader::new(rx))
        });
        let mut hasher = Sha256::new();
        let (mut done, mut complete, mut broken) = (0u64, false, None);
        // When the unpacker stops early (a corrupt blob seldom decodes),
        // the rest is still read and hashed, to tell a digest mismatch
        // from the store's own failure.
        let mut unpacker_gone = false;
        loop {
            match source.next().await {
                None => {
                    complete = true;
                    break;
                }
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    done += chunk.len() as u64;
                    if let Some(p) = &self.progress {
                        p.update(&desc.digest, done, total);
                    }
                    if !unpacker_gone && tx.send(Ok(chunk)).await.is_err() {
                        unpacker_gone = true;
                    }
                }
                Some(Err(e)) => {
                    // oci-client's own check at the end of the body: all of
                    // it went through the hasher, whose verdict is below.
                    let verified = e
                        .get_ref()
                        .is_some_and(|i| i.is::<oci_client::errors::DigestError>());
                    if verified {
                        complete = true;
                    } else {
                        broken = Some(e.to_string());
                    }
                    let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                    break;
                }
            }
        }
        drop(tx);
        let unpacked = unpack.await;
        if let Some(message) = broken {
            return Err(PullError::Network {
                registry: self.registry.clone(),
                message: format!("layer {}: {message}", desc.digest),
            });
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if complete && actual != desc.digest {
            return Err(self.mismatch("layer", &desc.digest, actual));
        }
        match unpacked {
            Ok(r) => r.map_err(|e| self.store_error(e))?,
            Err(e) => {
                return Err(PullError::Internal {
                    reference: self.reference.clone(),
                    message: format!("unpacking {}: {e}", desc.digest),
                });
            }
        }
        Ok(done)
    }

    /// Runs a store call on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, PullError> {
        match tokio::task::spawn_blocking(f).await {
            Ok(r) => r.map_err(|e| self.store_error(e)),
            Err(e) => Err(PullError::Internal {
                reference: self.reference.clone(),
                message: e.to_string(),
            }),
        }
    }

    fn store_error(&self, e: StoreError) -> PullError {
        PullError::Store {
            reference: self.reference.clone(),
            source: Arc::new(e),
        }
    }

    fn mismatch(&self, what: &'static str, digest: &str, actual: String) -> PullError {
        PullError::DigestMismatch {
            reference: self.reference.clone(),
            what,
            digest: digest.to_string(),
            actual,
        }
    }

    /// An `oci-client` error in a user's terms.
    fn error(&self, e: OciDistributionError) -> PullError {
        let registry = self.registry.clone();
        let reference = self.reference.clone();
        match e {
            OciDistributionError::UnauthorizedError { url } => PullError::Unauthorized {
                registry,
                reference,
                message: format!("401 Unauthorized from {url}"),
                tried: String::new(),
            },
            OciDistributionError::AuthenticationFailure(message) => PullError::Unauthorized {
                registry,
                reference,
                message: format!("token server: {}", message.trim()),
                tried: String::new(),
            },
            OciDistributionError::RegistryError { envelope, url } => {
                let message = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                let code = envelope.errors.first().map(|e| &e.code);
                match code {
                    Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => {
                        PullError::Unauthorized {
                            registry,
                            reference,
                            message,
                            tried: String::new(),
                        }
                    }
                    Some(
                        OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound,
                    ) => PullError::NotFound {
                        registry,
                        reference,
                        message,
                    },
                    _ => PullError::Registry {
                        registry,
                        reference,
                        message: format!("{message} ({url})"),
                    },
                }
            }
            OciDistributionError::ServerError { code, url, message } => match code {
                401 | 403 => PullError::Unauthorized {
                    registry,
                    reference,
                    message: format!("{code} from {url}: {}", message.trim()),
                    tried: String::new(),
                },
                404 => PullError::NotFound {
                    registry,
                    reference,
                    message: format!("404 from {url}"),
                },
                _ => PullError::Registry {
                    registry,
                    reference,
                    message: format!("HTTP {code} from {url}: {}", message.trim()),
                },
            },
            OciDistributionError::DigestError(
                oci_client::errors::DigestError::VerificationError { expected, actual },
            ) => PullError::DigestMismatch {
                reference,
                what: "blob",
                digest: expected,
                actual,
            },
            OciDistributionError::RequestError(e) => PullError::Network {
                registry,
                message: chain(&e),
            },
            OciDistributionError::IoError(e) => PullError::Network {
                registry,
                message: chain(&e),
            },
            other => PullError::Registry {
                registry,
                reference,
                message: chain(&other),
            },
        }
    }
}

/// An error and its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        source = s.source();
    }
    out
}

/// A blocking `Read` over the chunks the network task sends.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            chunk: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(chunk) => self.chunk = chunk?,
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_reader_reassembles_chunks_and_passes_errors() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"hel"))).unwrap();
        tx.try_send(Ok(Bytes::from_static(b"lo"))).unwrap();
        tx.try_send(Err(io::Error::other("cut"))).unwrap();
        drop(tx);
        let mut r = ChannelReader::new(rx);
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        assert_eq!(r.read(&mut buf).unwrap_err().to_string(), "cut");
        assert_eq!(r.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn targets() {
        let r = ImageReference::parse("127.0.0.1:5000/a/b:t").unwrap();
        let t = target(&r);
        assert_eq!(
            (t.resolve_registry(), t.repository(), t.tag()),
            ("127.0.0.1:5000", "a/b", Some("t"))
        );
    }
}
