//! The on-disk image store: content-addressed blobs (manifests, configs),
//! layers each unpacked once into their own directory, image records and
//! the names pointing at them, and the locks that let a pull, the agent's
//! creates and the CLI share it. Removal is in [`super::gc`], unpacking one
//! layer in [`super::unpack`], reading archives in [`super::import`].
//!
//! Layout under the root (default `/var/lib/rundmc/images`):
//!
//! ```text
//! lock                      flock: shared while in use, exclusive to remove
//! blobs/sha256/<hex>        manifests and configs, verified
//! layers/<hex>/diff         a layer's tree, in overlay's form
//! layers/<hex>/link         its short id; l/<id> -> ../layers/<hex>/diff
//! layers/<hex>/size         bytes of its regular files (for gc)
//! l/<id>                    4-character links: 120 lowerdirs fit one page
//! images/<hex>.json         image records (by manifest digest)
//! names.json                name -> id
//! locks/<hex>, locks/names  flocks: one unpack per layer, one names writer
//! tmp/<hex>                 a layer being unpacked; renamed to layers/
//! ```
//!
//! A layer exists once `layers/<hex>` does: it is unpacked in `tmp/` under
//! its digest's lock and renamed into place, so a crash leaves only what
//! [`Store::open`] removes. A short link is claimed before the rename and
//! repaired by [`Store::lowerdirs`] if it went missing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::unpack;
use crate::api::ImageDefaults;
use crate::fsutil::{self, Durability, FsError};

/// Length of a layer's short id (`l/<id>`), from `[0-9a-z]`.
const SHORT_ID_LEN: usize = 4;
/// How many short ids a layer tries before giving up.
const SHORT_ID_TRIES: u32 = 10_000;
/// Largest manifest or config read into memory.
pub(crate) const MAX_JSON: u64 = 16 << 20;

/// The image store. Cheap to clone; every method is blocking.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The manifest's digest, `sha256:<hex>`.
    pub id: String,
    /// The normalised references pointing at it (kept in `names.json`, and
    /// filled in when a record is read).
    pub names: Vec<String>,
    /// The config blob's digest.
    pub config_digest: String,
    /// Layer blob digests, base first.
    pub layers: Vec<String>,
    /// What its config gives a container.
    pub defaults: ImageDefaults,
    /// The sum of the layer blobs' sizes.
    pub size: u64,
    /// When it was committed, unix seconds.
    pub pulled_at: u64,
    /// When a container last used it ([`Store::touch`]), unix seconds.
    pub last_used: u64,
}

/// A layer blob to unpack, as a manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// `sha256:<hex>` of the compressed bytes.
    pub digest: String,
    /// Its media type, which says how it is compressed.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What the store refuses or fails at.
#[derive(Debug, Error)]
pub enum StoreError {
    /// What containers use could not be read: nothing is removed.
    #[error("the images in use could not be read: {0}")]
    InUseUnknown(String),
    /// A file operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A digest that is not `sha256:` and 64 lowercase hex digits.
    #[error("{digest}: not a sha256 digest (sha256:<64 hex digits>)")]
    InvalidDigest {
        /// The digest given.
        digest: String,
    },
    /// The bytes do not hash to the digest they were given as.
    #[error("{digest}: digest mismatch: the content hashes to {actual}")]
    DigestMismatch {
        /// The digest expected.
        digest: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// A blob's length is not the size its descriptor gives.
    #[error(
        "{digest}: size mismatch: expected {expected} bytes, read {actual} (reading stops one past)"
    )]
    SizeMismatch {
        /// The blob.
        digest: String,
        /// The descriptor's size.
        expected: u64,
        /// What was read.
        actual: u64,
    },
    /// A media type that is no layer the store can unpack.
    #[error("{digest}: unsupported layer media type {media_type:?}")]
    MediaType {
        /// The layer.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// Reading or decompressing a layer failed.
    #[error("{digest}: reading the layer: {source}")]
    Read {
        /// The layer.
        digest: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A tar entry that would land outside the layer.
    #[error("{digest}: entry {path}: refused: {reason}")]
    UnsafePath {
        /// The layer.
        digest: String,
        /// The entry's path in the tar.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// Writing a tar entry failed.
    #[error("{digest}: entry {path}: {source}")]
    Entry {
        /// The layer.
        digest: String,
        /// The entry's path in the layer.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A manifest or config that is not what it must be.
    #[error("{digest}: {reason}")]
    BadBlob {
        /// The blob.
        digest: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A blob that commit needs is not in the store.
    #[error("{digest}: blob not in the store")]
    MissingBlob {
        /// The blob.
        digest: String,
    },
    /// A layer that commit or lowerdirs needs is not unpacked.
    #[error("{digest}: layer not in the store")]
    MissingLayer {
        /// The layer.
        digest: String,
    },
    /// A stored file that does not parse.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No image has this name or id.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// An id prefix that more than one image has.
    #[error("image id prefix {0:?} is ambiguous")]
    Ambiguous(String),
    /// A name that is no image reference.
    #[error("{name:?}: not an image name: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The image is used by a container.
    #[error("image {id} is in use by a container")]
    InUse {
        /// The image.
        id: String,
    },
    /// No free short id for a layer (the store is full of them).
    #[error("{digest}: no free short layer id after {SHORT_ID_TRIES} tries")]
    ShortIds {
        /// The layer.
        digest: String,
    },
    /// A root overlay could not take layers from (`,`, `:` or `\\` in it).
    #[error("{0}: an image store's path must not contain ',', ':' or '\\'")]
    UnsafeRoot(PathBuf),
    /// flock(2) failed.
    #[error("{path}: flock: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
}

/// A held flock on the store (or one of its digests); released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _lock: Flock<File>,
}

/// The names in `dir` that are sha256 hex digests; others are skipped.
fn hexes_in(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(fs_err(dir))? {
        let name = entry.map_err(fs_err(dir))?.file_name();
        let name = name.to_string_lossy();
        if digest_hex(&format!("sha256:{name}")).is_ok() {
            out.push(name.into_owned());
        }
    }
    Ok(out)
}

fn fs_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |e| StoreError::Fs(FsError::new(path, e))
}

/// `sha256:<hex>`'s hex, refusing anything else (it becomes a path).
pub fn digest_hex(digest: &str) -> Result<&str, StoreError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .ok_or_else(|| StoreError::InvalidDigest {
            digest: digest.into(),
        })
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", unpack::hex(&Sha256::digest(bytes)))
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `n`th short id candidate for layer `hex`: 4 characters of
/// `[0-9a-z]` from a hash of both, so each layer tries its own sequence.
pub fn short_id(hex: &str, n: u32) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let hash = Sha256::digest(format!("{hex}/{n}").as_bytes());
    let mut v = u64::from_be_bytes([
        hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7],
    ]);
    (0..SHORT_ID_LEN)
        .map(|_| {
            let c = ALPHABET[(v % 36) as usize];
            v /= 36;
            char::from(c)
        })
        .collect()
}

fn valid_short_id(id: &str) -> bool {
    id.len() == SHORT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

impl Store {
    /// Opens (creating) the store at `root`, and removes what a crash left:
    /// half-unpacked layers no process is unpacking, dangling short links,
    /// temporary files of processes that are gone.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root: PathBuf = root.into();
        let root = std::path::absolute(&root).map_err(fs_err(&root))?;
        // Overlay's options are split on these: no lowerdir may hold one.
        if root.to_string_lossy().contains([',', ':', '\\']) {
            return Err(StoreError::UnsafeRoot(root));
        }
        let store = Store { root };
        for dir in ["blobs/sha256", "layers", "l", "images", "locks", "tmp"] {
            let path = store.root.join(dir);
            fs::create_dir_all(&path).map_err(fs_err(&path))?;
        }
        let _shared = store.shared_lock()?;
        store.clean_tmp()?;
        store.clean_links()?;
        for dir in [
            store.root.clone(),
            store.root.join("blobs/sha256"),
            store.root.join("images"),
        ] {
            clean_temp_files(&dir)?;
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn layer_dir(&self, hex: &str) -> PathBuf {
        self.root.join("layers").join(hex)
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex)
    }

    fn record_path(&self, hex: &str) -> PathBuf {
        self.root.join("images").join(format!("{hex}.json"))
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn names_path(&self) -> PathBuf {
        self.root.join("names.json")
    }

    /// True when `digest`'s layer is unpacked and complete.
    pub fn has_layer(&self, digest: &str) -> bool {
        digest_hex(digest).is_ok_and(|hex| self.layer_dir(hex).is_dir())
    }

    // ---- locks ----

    fn flock(&self, path: &Path, arg: FlockArg) -> Result<Option<StoreLock>, StoreError> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(fs_err(path))?;
        loop {
            match Flock::lock(file, arg) {
                Ok(lock) => return Ok(Some(StoreLock { _lock: lock })),
                Err((f, nix::Error::EINTR)) => file = f,
                Err((_, nix::Error::EWOULDBLOCK)) => return Ok(None),
                Err((_, source)) => {
                    return Err(StoreError::Lock {
                        path: path.into(),
                        source,
                    });
                }
            }
        }
    }

    fn flock_blocking(&self, path: &Path, arg: FlockArg) -> Result<StoreLock, StoreError> {
        self.flock(path, arg)?.ok_or_else(|| StoreError::Lock {
            path: path.into(),
            source: nix::Error::EWOULDBLOCK,
        })
    }

    /// Held by a pull from its first layer to its commit, and by a
    /// container's creation from resolve until its depot record names the
    /// image: nothing is removed from the store while any is held.
    pub fn shared_lock(&self) -> Result<StoreLock, StoreError> {
        self.flock_blocking(&self.root.join("lock"), FlockArg::LockShared)
    }

    /// Taken by whatever removes from the store.
    pub(crate) fn exclusive_lock(&self) -> Result<StoreLock, StoreError> {
        self.flock_blocking(&self.root.join("lock"), FlockArg::LockExclusive)
    }

    /// The lock of one layer digest (by hex); `None` when `wait` is false
    /// and someone holds it.
    pub(crate) fn digest_lock(
        &self,
        hex: &str,
        wait: bool,
    ) -> Result<Option<StoreLock>, StoreError> {
        let arg = if wait {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        self.flock(&self.root.join("locks").join(hex), arg)
    }

    // ---- crash leftovers ----

    /// Removes `tmp/` entries: a layer's only when no process holds its lock.
    fn clean_tmp(&self) -> Result<(), StoreError> {
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(fs_err(&tmp))? {
            let path = entry.map_err(fs_err(&tmp))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let _lock = match name.as_deref().map(digest_of_tmp_name) {
                Some(Some(hex)) => match self.digest_lock(hex, false)? {
                    Some(lock) => Some(lock),
                    None => continue, // being unpacked now
                },
                _ => None, // a removal's leftover: removals hold the store
            };
            fsutil::remove_dir_all_if_exists(&path)?;
        }
        Ok(())
    }

    /// Removes short links whose layer is gone and that no unpack holds.
    fn clean_links(&self) -> Result<(), StoreError> {
        let dir = self.root.join("l");
        for entry in fs::read_dir(&dir).map_err(fs_err(&dir))? {
            let path = entry.map_err(fs_err(&dir))?.path();
            let Ok(target) = fs::read_link(&path) else {
                continue;
            };
            let hex = target
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if dir.join(&target).exists() {
                continue;
            }
            let _lock = if digest_hex(&format!("sha256:{hex}")).is_ok() {
                match self.digest_lock(&hex, false)? {
                    Some(lock) => Some(lock),
                    None => continue,
                }
            } else {
                None
            };
            if !dir.join(&target).exists() {
                fsutil::remove_file_if_exists(&path)?;
            }
        }
        Ok(())
    }

    // ---- layers ----

    /// Streams `blob` (compressed per `layer.media_type`) into the layer's
    /// directory, verifying its digest and size; a mismatch is an error
    /// naming the digest and leaves nothing. Concurrent calls for one
    /// digest, in this process or another, unpack once; a layer already
    /// present is Ok without reading.
    pub fn unpack_layer(
        &self,
        layer: &LayerBlob,
        blob: &mut dyn io::Read,
    ) -> Result<(), StoreError> {
        let hex = digest_hex(&layer.digest)?;
        if self.has_layer(&layer.digest) {
            return Ok(());
        }
        let _store = self.shared_lock()?;
        let _digest = self.digest_lock(hex, true)?;
        if self.has_layer(&layer.digest) {
            return Ok(());
        }
        let tmp = self.tmp_dir().join(hex);
        let result = self.unpack_into(layer, blob, hex, &tmp);
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn unpack_into(
        &self,
        layer: &LayerBlob,
        blob: &mut dyn io::Read,
        hex: &str,
        tmp: &Path,
    ) -> Result<(), StoreError> {
        fsutil::remove_dir_all_if_exists(tmp)?;
        let diff = tmp.join("diff");
        fs::create_dir_all(&diff).map_err(fs_err(&diff))?;
        fs::set_permissions(&diff, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(fs_err(&diff))?;
        let bytes = unpack::unpack(blob, layer, &diff)?;
        let size = tmp.join("size");
        fs::write(&size, bytes.to_string()).map_err(fs_err(&size))?;
        let id = self.claim_short_id(hex)?;
        let link = tmp.join("link");
        fs::write(&link, &id).map_err(fs_err(&link))?;
        syncfs(tmp)?;
        let dest = self.layer_dir(hex);
        fs::rename(tmp, &dest).map_err(fs_err(&dest))?;
        let layers = self.root.join("layers");
        rundmc_shim::atomic::sync_dir(&layers).map_err(fs_err(&layers))
    }

    fn link_target(hex: &str) -> PathBuf {
        Path::new("../layers").join(hex).join("diff")
    }

    /// Claims `l/<id>` for layer `hex` (symlink(2) is the claim, so two
    /// layers never share one); an existing link of its own is reused.
    fn claim_short_id(&self, hex: &str) -> Result<String, StoreError> {
        let target = Self::link_target(hex);
        for n in 0..SHORT_ID_TRIES {
            let id = short_id(hex, n);
            let link = self.root.join("l").join(&id);
            match std::os::unix::fs::symlink(&target, &link) {
                Ok(()) => return Ok(id),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if fs::read_link(&link).is_ok_and(|t| t == target) {
                        return Ok(id);
                    }
                }
                Err(e) => return Err(fs_err(&link)(e)),
            }
        }
        Err(StoreError::ShortIds {
            digest: format!("sha256:{hex}"),
        })
    }

    /// The layer's short link `l/<id>`, made again if it went missing.
    fn short_link(&self, hex: &str) -> Result<PathBuf, StoreError> {
        let file = self.layer_dir(hex).join("link");
        let id = match fs::read_to_string(&file) {
            Ok(id) => id.trim().to_string(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingLayer {
                    digest: format!("sha256:{hex}"),
                });
            }
            Err(e) => return Err(fs_err(&file)(e)),
        };
        let link = self.root.join("l").join(&id);
        if valid_short_id(&id) && fs::read_link(&link).is_ok_and(|t| t == Self::link_target(hex)) {
            return Ok(link);
        }
        let _digest = self.digest_lock(hex, true)?;
        let id = self.claim_short_id(hex)?;
        fsutil::write_atomic(&file, id.as_bytes())?;
        Ok(self.root.join("l").join(id))
    }

    /// Bytes of the layer's regular files, as unpack counted them.
    pub(crate) fn layer_bytes(&self, hex: &str) -> u64 {
        fs::read_to_string(self.layer_dir(hex).join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Hex digests of every unpacked layer.
    pub(crate) fn layer_hexes(&self) -> Result<Vec<String>, StoreError> {
        hexes_in(&self.root.join("layers"))
    }

    /// Removes layer `hex`: first out of `layers/` (so it is gone at once),
    /// then its short link, then its files. Under the exclusive lock.
    pub(crate) fn remove_layer(&self, hex: &str) -> Result<(), StoreError> {
        let dir = self.layer_dir(hex);
        let link = self.layer_dir(hex).join("link");
        let id = fs::read_to_string(&link).unwrap_or_default();
        let trash = self.tmp_dir().join(format!("{hex}.removed"));
        fsutil::remove_dir_all_if_exists(&trash)?;
        fs::rename(&dir, &trash).map_err(fs_err(&dir))?;
        let id = id.trim();
        if valid_short_id(id) {
            let short = self.root.join("l").join(id);
            if fs::read_link(&short).is_ok_and(|t| t == Self::link_target(hex)) {
                fsutil::remove_file_if_exists(&short)?;
            }
        }
        Ok(fsutil::remove_dir_all_if_exists(&trash)?)
    }

    /// Removes the lock files of layers that are not in the store (a failed
    /// unpack leaves one). Under the exclusive lock: no one holds them.
    pub(crate) fn remove_stale_locks(&self) -> Result<(), StoreError> {
        let dir = self.root.join("locks");
        for entry in fs::read_dir(&dir).map_err(fs_err(&dir))? {
            let name = entry.map_err(fs_err(&dir))?.file_name();
            let name = name.to_string_lossy();
            if digest_of_tmp_name(&name).is_some() && !self.layer_dir(&name).exists() {
                fsutil::remove_file_if_exists(&dir.join(name.as_ref()))?;
            }
        }
        Ok(())
    }

    /// Lower dirs for overlay, top-most layer first: `<root>/l/<id>`.
    pub fn lowerdirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>, StoreError> {
        image
            .layers
            .iter()
            .rev()
            .map(|digest| self.short_link(digest_hex(digest)?))
            .collect()
    }

    // ---- blobs ----

    /// Stores a manifest or config after checking its sha256.
    pub fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let hex = digest_hex(digest)?;
        let actual = sha256_digest(bytes);
        if actual != digest {
            return Err(StoreError::DigestMismatch {
                digest: digest.into(),
                actual,
            });
        }
        let path = self.blob_path(hex);
        if path.is_file() {
            return Ok(());
        }
        Ok(fsutil::write_atomic(&path, bytes)?)
    }

    /// A stored blob's bytes; `None` when absent.
    pub fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.blob_path(digest_hex(digest)?);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fs_err(&path)(e)),
        }
    }

    /// Hex digests of every stored manifest and config.
    pub(crate) fn blob_hexes(&self) -> Result<Vec<String>, StoreError> {
        hexes_in(&self.root.join("blobs/sha256"))
    }

    pub(crate) fn remove_blob(&self, hex: &str) -> Result<(), StoreError> {
        Ok(fsutil::remove_file_if_exists(&self.blob_path(hex))?)
    }

    // ---- images ----

    /// After `put_blob` of the manifest and config and the unpack of every
    /// layer: writes the image's record and points `name` at it (taking the
    /// name from any other image).
    pub fn commit(
        &self,
        name: Option<&str>,
        manifest_digest: &str,
        config_digest: &str,
    ) -> Result<ImageRecord, StoreError> {
        let hex = digest_hex(manifest_digest)?;
        // No layer goes between the check below and the record.
        let _shared = self.shared_lock()?;
        let manifest = Manifest::parse(manifest_digest, &self.required_blob(manifest_digest)?)?;
        if manifest.config.digest != config_digest {
            return Err(StoreError::BadBlob {
                digest: manifest_digest.into(),
                reason: format!(
                    "its config is {}, not {config_digest}",
                    manifest.config.digest
                ),
            });
        }
        let defaults = parse_defaults(config_digest, &self.required_blob(config_digest)?)?;
        if let Some(missing) = manifest.layers.iter().find(|l| !self.has_layer(&l.digest)) {
            return Err(StoreError::MissingLayer {
                digest: missing.digest.clone(),
            });
        }
        let now = unix_now();
        let mut record = ImageRecord {
            id: manifest_digest.into(),
            names: Vec::new(),
            config_digest: config_digest.into(),
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            defaults,
            size: manifest.layers.iter().map(|l| l.size).sum(),
            pulled_at: now,
            last_used: now,
        };
        fsutil::write_json_with(&self.record_path(hex), &record, Durability::Durable)?;
        if let Some(name) = name {
            self.update_names(|names| {
                names.insert(name.to_string(), record.id.clone());
            })?;
        }
        record.names = self.names_of(&record.id)?;
        Ok(record)
    }

    fn required_blob(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        self.blob(digest)?.ok_or_else(|| StoreError::MissingBlob {
            digest: digest.into(),
        })
    }

    /// The image `name_or_id` names: a name (as given, then normalised the
    /// Docker way), `sha256:<hex>`, or a unique hex prefix of 12 or more.
    pub fn resolve(&self, name_or_id: &str) -> Result<Option<ImageRecord>, StoreError> {
        let names = self.names()?;
        let by_name = names
            .get(name_or_id)
            .or_else(|| normalize_name(name_or_id).ok().and_then(|n| names.get(&n)));
        if let Some(id) = by_name {
            return self.record(id);
        }
        if digest_hex(name_or_id).is_ok() {
            return self.record(name_or_id);
        }
        let prefix = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if prefix.len() < 12 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let mut found = self
            .list()?
            .into_iter()
            .filter(|r| r.id[7..].starts_with(prefix));
        match (found.next(), found.next()) {
            (Some(one), None) => Ok(Some(one)),
            (Some(_), Some(_)) => Err(StoreError::Ambiguous(name_or_id.into())),
            _ => Ok(None),
        }
    }

    /// The record of image `id`; `None` when absent.
    fn record(&self, id: &str) -> Result<Option<ImageRecord>, StoreError> {
        let path = self.record_path(digest_hex(id)?);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fs_err(&path)(e)),
        };
        // What a machine crash leaves of a volatile touch: the image is
        // gone from the store's view, and a pull commits it again.
        if fsutil::is_unwritten(&bytes) {
            return Ok(None);
        }
        let mut record: ImageRecord =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        record.names = self.names_of(&record.id)?;
        Ok(Some(record))
    }

    /// Every image, by id.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.root.join("images");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(fs_err(&dir))? {
            let name = entry.map_err(fs_err(&dir))?.file_name();
            if let Some(hex) = name.to_string_lossy().strip_suffix(".json")
                && digest_hex(&format!("sha256:{hex}")).is_ok()
            {
                ids.push(format!("sha256:{hex}"));
            }
        }
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.record(&id)?);
        }
        Ok(out)
    }

    /// Marks image `id` as used now (for gc's least-recently-used order).
    pub fn touch(&self, id: &str) -> Result<(), StoreError> {
        // Never writes back a record a removal took meanwhile.
        let _shared = self.shared_lock()?;
        let mut record = self
            .record(id)?
            .ok_or_else(|| StoreError::NotFound(id.into()))?;
        record.last_used = unix_now();
        self.write_record(&record)
    }

    fn write_record(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let path = self.record_path(digest_hex(&record.id)?);
        let stored = ImageRecord {
            names: Vec::new(),
            ..record.clone()
        };
        Ok(fsutil::write_json_with(
            &path,
            &stored,
            Durability::Volatile,
        )?)
    }

    /// Removes an image's record and its names (under the exclusive lock).
    pub(crate) fn remove_record(&self, id: &str) -> Result<(), StoreError> {
        self.update_names(|names| names.retain(|_, v| v != id))?;
        Ok(fsutil::remove_file_if_exists(
            &self.record_path(digest_hex(id)?),
        )?)
    }

    /// Removes `name_or_id`: only the name when the image has others, the
    /// image (and then every layer and blob no image needs) otherwise,
    /// refusing an image in `in_use`. What was removed: the names, then the
    /// id when the image went.
    pub fn remove(
        &self,
        name_or_id: &str,
        in_use: &BTreeSet<String>,
    ) -> Result<Vec<String>, StoreError> {
        self.remove_in_use(name_or_id, &|| Ok(in_use.clone()))
    }

    /// [`Store::remove`], asking what is in use only once the store is
    /// locked (see [`Store::prune_in_use`]).
    pub fn remove_in_use(
        &self,
        name_or_id: &str,
        in_use: super::gc::InUse<'_>,
    ) -> Result<Vec<String>, StoreError> {
        let _lock = self.exclusive_lock()?;
        let in_use = &in_use().map_err(StoreError::InUseUnknown)?;
        let record = self
            .resolve(name_or_id)?
            .ok_or_else(|| StoreError::NotFound(name_or_id.into()))?;
        let by_name = record
            .names
            .iter()
            .find(|n| {
                n.as_str() == name_or_id || normalize_name(name_or_id).ok().as_ref() == Some(n)
            })
            .cloned();
        if let Some(name) = by_name.filter(|_| record.names.len() > 1) {
            self.update_names(|names| {
                names.remove(&name);
            })?;
            return Ok(vec![name]);
        }
        if in_use.contains(&record.id) {
            return Err(StoreError::InUse { id: record.id });
        }
        self.remove_record(&record.id)?;
        self.sweep()?;
        let mut removed = record.names;
        removed.push(record.id);
        Ok(removed)
    }

    // ---- names ----

    /// name -> id.
    pub(crate) fn names(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let path = self.names_path();
        match fs::read(&path) {
            Ok(bytes) if fsutil::is_unwritten(&bytes) => Ok(BTreeMap::new()),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(fs_err(&path)(e)),
        }
    }

    fn names_of(&self, id: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .names()?
            .into_iter()
            .filter(|(_, v)| v == id)
            .map(|(k, _)| k)
            .collect())
    }

    /// Changes the name map under its own lock, atomically.
    fn update_names(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, String>),
    ) -> Result<(), StoreError> {
        let _lock = self.flock_blocking(&self.root.join("locks/names"), FlockArg::LockExclusive)?;
        let mut names = self.names()?;
        change(&mut names);
        Ok(fsutil::write_json_with(
            &self.names_path(),
            &names,
            Durability::Durable,
        )?)
    }
}

/// A temp dir's layer hex (`tmp/<hex>`); `None` for other leftovers.
fn digest_of_tmp_name(name: &str) -> Option<&str> {
    (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
}

/// Removes `.<name>.tmp-<pid>-<n>` files (fsutil's atomic writes) whose
/// writer is gone.
fn clean_temp_files(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(fs_err(dir))? {
        let name = entry.map_err(fs_err(dir))?.file_name();
        let name = name.to_string_lossy();
        if let Some(pid) = temp_file_pid(&name)
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            fsutil::remove_file_if_exists(&dir.join(name.as_ref()))?;
        }
    }
    Ok(())
}

/// The writer's pid in an atomic write's temp name.
fn temp_file_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp-")?;
    tail.split('-').next()?.parse().ok()
}

/// Flushes the filesystem holding `path` (one call for a whole layer).
fn syncfs(path: &Path) -> Result<(), StoreError> {
    let dir = File::open(path).map_err(fs_err(path))?;
    nix::unistd::syncfs(&dir).map_err(|e| fs_err(path)(e.into()))
}

// ---- manifests and configs ----

/// An OCI or Docker descriptor.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// A descriptor's platform (in an index).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

/// An OCI image manifest or a Docker v2 schema 2 manifest.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Manifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl Manifest {
    /// Parses manifest `digest`; an index or schema 1 is refused.
    pub(crate) fn parse(digest: &str, bytes: &[u8]) -> Result<Manifest, StoreError> {
        let bad = |reason: String| StoreError::BadBlob {
            digest: digest.into(),
            reason,
        };
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not an image manifest: {e}")))?;
        if manifest.media_type.contains("index") || manifest.media_type.contains("list") {
            return Err(bad(format!(
                "a {}, not an image manifest",
                manifest.media_type
            )));
        }
        for layer in &manifest.layers {
            digest_hex(&layer.digest)?;
        }
        digest_hex(&manifest.config.digest)?;
        Ok(manifest)
    }

    /// The layers as blobs to unpack.
    pub(crate) fn layer_blobs(&self) -> Vec<LayerBlob> {
        self.layers
            .iter()
            .map(|l| LayerBlob {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect()
    }
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ContainerConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

/// The defaults config `digest` gives a container.
pub(crate) fn parse_defaults(digest: &str, bytes: &[u8]) -> Result<ImageDefaults, StoreError> {
    let file: ConfigFile = serde_json::from_slice(bytes).map_err(|e| StoreError::BadBlob {
        digest: digest.into(),
        reason: format!("not an image config: {e}"),
    })?;
    let c = file.config.unwrap_or_default();
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(ImageDefaults {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: non_empty(c.working_dir),
        user: non_empty(c.user),
    })
}

// ---- names ----

/// `reference` in the normal form Docker and the kubelet use:
/// `busybox` -> `docker.io/library/busybox:latest`, `r:5000/a` ->
/// `r:5000/a:latest`; a digest is kept (`name@sha256:..`).
pub fn normalize_name(reference: &str) -> Result<String, StoreError> {
    let invalid = |reason| StoreError::InvalidName {
        name: reference.into(),
        reason,
    };
    let (rest, digest) = match reference.split_once('@') {
        Some((r, d)) => (
            r,
            Some(
                digest_hex(d)
                    .map(|_| d)
                    .map_err(|_| invalid("a bad digest"))?,
            ),
        ),
        None => (reference, None),
    };
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if name.is_empty() || tag.is_some_and(str::is_empty) {
        return Err(invalid("an empty name or tag"));
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
            (first, path.to_string())
        }
        _ => ("docker.io", name.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if path.is_empty() || path != path.to_lowercase() || path.split('/').any(str::is_empty) {
        return Err(invalid(
            "a repository must be lowercase, without empty parts",
        ));
    }
    Ok(match (tag, digest) {
        (Some(t), Some(d)) => format!("{domain}/{path}:{t}@{d}"),
        (None, Some(d)) => format!("{domain}/{path}@{d}"),
        (Some(t), None) => format!("{domain}/{path}:{t}"),
        (None, None) => format!("{domain}/{path}:latest"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise_the_docker_way() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("rundmc/rundmc:0.1.0", "docker.io/rundmc/rundmc:0.1.0"),
            ("index.docker.io/library/x", "docker.io/library/x:latest"),
            ("ghcr.io/org/app:1.2", "ghcr.io/org/app:1.2"),
            ("localhost/app", "localhost/app:latest"),
            ("registry:5000/app", "registry:5000/app:latest"),
            (
                "docker.io/rundmc/rundmc:test",
                "docker.io/rundmc/rundmc:test",
            ),
        ];
        for (given, want) in cases {
            assert_eq!(normalize_name(given).unwrap(), want, "{given}");
        }
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize_name(&format!("r:5000/a@{d}")).unwrap(),
            format!("r:5000/a@{d}")
        );
        for bad in ["", "Busybox", "a:", "a//b", "x@sha256:12"] {
            assert!(normalize_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_must_be_sha256_hex() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(digest_hex(&format!("sha256:{hex}")).unwrap(), hex);
        assert!(digest_hex(&format!("sha512:{hex}")).is_err());
        assert!(digest_hex(&format!("sha256:{}", hex.to_uppercase())).is_err());
        assert!(digest_hex("sha256:../../etc").is_err());
    }

    #[test]
    fn short_ids_are_short_and_differ_per_try() {
        let hex = "ab".repeat(32);
        let ids: BTreeSet<_> = (0..50).map(|n| short_id(&hex, n)).collect();
        assert!(ids.len() > 45, "{ids:?}");
        assert!(ids.iter().all(|id| valid_short_id(id)), "{ids:?}");
        assert_eq!(short_id(&hex, 3), short_id(&hex, 3));
    }

    #[test]
    fn records_round_trip_and_configs_give_defaults() {
        let config = br#"{"architecture":"amd64","config":{"Entrypoint":["/bin/app"],
            "Cmd":null,"Env":["PATH=/bin"],"WorkingDir":"","User":"1000"}}"#;
        let defaults = parse_defaults("sha256:x", config).unwrap();
        assert_eq!(defaults.entrypoint, vec!["/bin/app"]);
        assert!(defaults.cmd.is_empty());
        assert_eq!(defaults.env, vec!["PATH=/bin"]);
        assert_eq!(defaults.working_dir, None);
        assert_eq!(defaults.user.as_deref(), Some("1000"));
        assert_eq!(
            parse_defaults("sha256:x", b"{}").unwrap(),
            ImageDefaults::default()
        );
        assert!(parse_defaults("sha256:x", b"[").is_err());
        let record = ImageRecord {
            id: format!("sha256:{}", "1".repeat(64)),
            names: vec!["docker.io/library/a:1".into()],
            config_digest: format!("sha256:{}", "2".repeat(64)),
            layers: vec![format!("sha256:{}", "3".repeat(64))],
            defaults,
            size: 42,
            pulled_at: 1,
            last_used: 2,
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<ImageRecord>(&text).unwrap(), record);
    }

    #[test]
    fn manifests_parse_and_indexes_are_refused() {
        let d = |c: &str| format!("sha256:{}", c.repeat(64));
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"{}"}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":9,"digest":"{}"}}]}}"#,
            d("a"),
            d("b")
        );
        let m = Manifest::parse("sha256:m", manifest.as_bytes()).unwrap();
        assert_eq!(m.config.digest, d("a"));
        assert_eq!(m.layer_blobs()[0].size, 9);
        let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(Manifest::parse("sha256:i", index.as_bytes()).is_err());
    }

    #[test]
    fn temp_names_give_their_writer() {
        assert_eq!(temp_file_pid(".names.json.tmp-123-4"), Some(123));
        assert_eq!(temp_file_pid("names.json"), None);
        assert_eq!(
            digest_of_tmp_name(&"a".repeat(64)),
            Some("a".repeat(64).as_str())
        );
        assert_eq!(digest_of_tmp_name("x.removed"), None);
    }
}
