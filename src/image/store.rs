//! STAND-IN: replaced by the img-store branch at merge.
//!
//! The smallest store the puller's tests need, to the signatures of
//! IMAGE_API.md and nothing more: blobs by digest, layers unpacked with
//! the `tar` crate (plain, gzip or zstd) into a temp dir and renamed into
//! place once their digest is verified, image records with names, and the
//! shared lock. No whiteout conversion, no short links, no GC, no import.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::api::ImageDefaults;

/// The content-addressed image store under one root.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
}

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Manifest digest, `sha256:<hex>`.
    pub id: String,
    /// Normalised references pointing at it.
    pub names: Vec<String>,
    /// The config blob's digest.
    pub config_digest: String,
    /// Layer blob digests, base first.
    pub layers: Vec<String>,
    /// What the config gives containers.
    pub defaults: ImageDefaults,
    /// Sum of the layer blobs' sizes.
    pub size: u64,
    /// Unix seconds.
    pub pulled_at: u64,
    /// Unix seconds.
    pub last_used: u64,
}

/// A layer blob to unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// `sha256:<hex>` of the compressed blob.
    pub digest: String,
    /// Its media type (tar, tar+gzip, tar+zstd).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What went wrong in the store.
#[derive(Error, Debug)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Content does not hash to its digest; nothing of it was kept.
    #[error("digest mismatch: content of {digest} hashes to {actual}")]
    DigestMismatch {
        /// The expected digest.
        digest: String,
        /// What it hashed to.
        actual: String,
    },
    /// Not a `sha256:<64 hex>` digest.
    #[error("invalid digest {0:?}")]
    BadDigest(String),
    /// A layer of a media type the store cannot unpack.
    #[error("layer {digest}: unsupported media type {media_type}")]
    MediaType {
        /// The layer.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// A manifest or config the store cannot read.
    #[error("{digest}: {message}")]
    Malformed {
        /// The blob.
        digest: String,
        /// What is wrong.
        message: String,
    },
    /// Commit before a blob or layer is present.
    #[error("commit of {image}: {what} {digest} is not in the store")]
    Missing {
        /// The image.
        image: String,
        /// `layer`, `manifest`, `config`.
        what: &'static str,
        /// The missing digest.
        digest: String,
    },
}

/// A shared lock on the store, released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _flock: nix::fcntl::Flock<File>,
}

static TEMP: AtomicU64 = AtomicU64::new(0);

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn hex_of(digest: &str) -> Result<&str, StoreError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| StoreError::BadDigest(digest.to_string()))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// Opens (creating) the store at `root`, clearing temp leftovers.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        for dir in ["blobs/sha256", "layers", "images", "tmp"] {
            let d = root.join(dir);
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        Ok(Store { root })
    }

    /// The store's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn layer_dir(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("layers").join(hex_of(digest)?))
    }

    fn temp_path(&self) -> PathBuf {
        let n = TEMP.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()))
    }

    /// Whether the layer is unpacked.
    pub fn has_layer(&self, digest: &str) -> bool {
        self.layer_dir(digest).is_ok_and(|d| d.is_dir())
    }

    /// Streams, verifies and unpacks one layer blob (see IMAGE_API.md).
    pub fn unpack_layer(&self, layer: &LayerBlob, blob: &mut dyn Read) -> Result<(), StoreError> {
        let dest = self.layer_dir(&layer.digest)?;
        if dest.is_dir() {
            return Ok(());
        }
        let tmp = self.temp_path();
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let result = self.unpack_into(layer, blob, &tmp);
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_dir_all(&tmp);
            if !dest.is_dir() {
                return Err(io_err(&dest)(e));
            }
        }
        Ok(())
    }

    fn unpack_into(
        &self,
        layer: &LayerBlob,
        blob: &mut dyn Read,
        tmp: &Path,
    ) -> Result<(), StoreError> {
        let mut hashing = Hashing {
            inner: blob,
            hasher: Sha256::new(),
        };
        let unpacked = unpack_tar(layer, &mut hashing, tmp);
        // Read what the decoder left, so the digest covers the whole blob.
        let drained = io::copy(&mut hashing, &mut io::sink()).map_err(io_err(tmp));
        let actual = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
        if actual != layer.digest {
            return Err(StoreError::DigestMismatch {
                digest: layer.digest.clone(),
                actual,
            });
        }
        unpacked.and(drained.map(|_| ()))
    }

    /// Writes a manifest or config blob after verifying its digest.
    pub fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.root.join("blobs/sha256").join(hex_of(digest)?);
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        if actual != digest {
            return Err(StoreError::DigestMismatch {
                digest: digest.to_string(),
                actual,
            });
        }
        self.write_atomic(&path, bytes)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = self.temp_path();
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))
    }

    /// A blob's bytes, if present.
    pub fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.root.join("blobs/sha256").join(hex_of(digest)?);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Records the image and points `name` at it.
    pub fn commit(
        &self,
        name: Option<&str>,
        manifest_digest: &str,
        config_digest: &str,
    ) -> Result<ImageRecord, StoreError> {
        let missing = |what, digest: &str| StoreError::Missing {
            image: manifest_digest.to_string(),
            what,
            digest: digest.to_string(),
        };
        let manifest = self
            .blob(manifest_digest)?
            .ok_or_else(|| missing("manifest", manifest_digest))?;
        let config = self
            .blob(config_digest)?
            .ok_or_else(|| missing("config", config_digest))?;
        let malformed = |digest: &str, e: serde_json::Error| StoreError::Malformed {
            digest: digest.to_string(),
            message: e.to_string(),
        };
        let m: ManifestDoc =
            serde_json::from_slice(&manifest).map_err(|e| malformed(manifest_digest, e))?;
        let c: ConfigDoc =
            serde_json::from_slice(&config).map_err(|e| malformed(config_digest, e))?;
        for l in &m.layers {
            if !self.has_layer(&l.digest) {
                return Err(missing("layer", &l.digest));
            }
        }
        let mut names: Vec<String> = self
            .resolve(manifest_digest)?
            .map(|r| r.names)
            .unwrap_or_default();
        if let Some(name) = name {
            self.take_name(name, manifest_digest)?;
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        let record = ImageRecord {
            id: manifest_digest.to_string(),
            names,
            config_digest: config_digest.to_string(),
            layers: m.layers.iter().map(|l| l.digest.clone()).collect(),
            defaults: c.config.unwrap_or_default().into_defaults(),
            size: m.layers.iter().map(|l| l.size).sum(),
            pulled_at: now(),
            last_used: now(),
        };
        self.write_record(&record)?;
        Ok(record)
    }

    fn write_record(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let path = self
            .root
            .join("images")
            .join(format!("{}.json", hex_of(&record.id)?));
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Malformed {
            digest: record.id.clone(),
            message: e.to_string(),
        })?;
        self.write_atomic(&path, &bytes)
    }

    fn take_name(&self, name: &str, keep: &str) -> Result<(), StoreError> {
        for mut r in self.list()? {
            if r.id != keep && r.names.iter().any(|n| n == name) {
                r.names.retain(|n| n != name);
                self.write_record(&r)?;
            }
        }
        Ok(())
    }

    /// Every image record.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = e.map_err(io_err(&dir))?.path();
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let r: ImageRecord =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Malformed {
                    digest: path.display().to_string(),
                    message: e.to_string(),
                })?;
            out.push(r);
        }
        Ok(out)
    }

    /// A record by name, id, or unique id prefix of 12+ hex digits.
    pub fn resolve(&self, name_or_id: &str) -> Result<Option<ImageRecord>, StoreError> {
        let all = self.list()?;
        if let Some(r) = all
            .iter()
            .find(|r| r.names.iter().any(|n| n == name_or_id) || r.id == name_or_id)
        {
            return Ok(Some(r.clone()));
        }
        let prefix = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if prefix.len() < 12 {
            return Ok(None);
        }
        let hits: Vec<&ImageRecord> = all
            .iter()
            .filter(|r| {
                r.id.strip_prefix("sha256:")
                    .is_some_and(|h| h.starts_with(prefix))
            })
            .collect();
        Ok(if hits.len() == 1 {
            Some(hits[0].clone())
        } else {
            None
        })
    }

    /// A shared lock on the store.
    pub fn shared_lock(&self) -> Result<StoreLock, StoreError> {
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let flock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockShared)
            .map_err(|(_, e)| io_err(&path)(e.into()))?;
        Ok(StoreLock { _flock: flock })
    }
}

fn unpack_tar(layer: &LayerBlob, blob: &mut dyn Read, dest: &Path) -> Result<(), StoreError> {
    let mt = layer.media_type.as_str();
    let decoded: Box<dyn Read + '_> = if mt.ends_with("gzip") {
        Box::new(flate2::read::GzDecoder::new(blob))
    } else if mt.ends_with("zstd") {
        Box::new(zstd::stream::read::Decoder::new(blob).map_err(io_err(dest))?)
    } else if mt.ends_with("tar") {
        Box::new(blob)
    } else {
        return Err(StoreError::MediaType {
            digest: layer.digest.clone(),
            media_type: mt.to_string(),
        });
    };
    let mut archive = tar::Archive::new(decoded);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.unpack(dest).map_err(io_err(dest))
}

struct Hashing<'a> {
    inner: &'a mut dyn Read,
    hasher: Sha256,
}

impl Read for Hashing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[derive(Deserialize)]
struct ManifestDoc {
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    size: u64,
}

#[derive(Deserialize)]
struct ConfigDoc {
    config: Option<ConfigBody>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ConfigBody {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
}

impl ConfigBody {
    fn into_defaults(self) -> ImageDefaults {
        ImageDefaults {
            entrypoint: self.entrypoint.unwrap_or_default(),
            cmd: self.cmd.unwrap_or_default(),
            env: self.env.unwrap_or_default(),
            working_dir: self.working_dir.filter(|s| !s.is_empty()),
            user: self.user.filter(|s| !s.is_empty()),
        }
    }
}
