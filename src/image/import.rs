//! Images from files, for air-gapped nodes: an OCI image layout directory,
//! an OCI archive (a tar of one) and a docker-archive tar (`docker save`,
//! `manifest.json` with Config/RepoTags/Layers), which this project's
//! `make image` writes as one file. A tar is read in place: its members
//! are indexed once and each blob is read from its offset, never
//! extracted. Every manifest, config and layer is verified against its
//! digest on its way into the store ([`Store::put_blob`],
//! [`Store::unpack_layer`]). Names come from the OCI index's annotations
//! (`io.containerd.image.name`, or `org.opencontainers.image.ref.name`
//! when it is a reference rather than a bare tag) or the archive's
//! RepoTags, normalised the Docker way.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::store::{
    Descriptor, ImageRecord, LayerBlob, MAX_JSON, Manifest, Store, StoreError, digest_hex,
    normalize_name, sha256_digest,
};
use super::unpack::{Compression, sniff};

/// Why an import failed.
#[derive(Debug, Error)]
pub enum ImportError {
    /// Reading the file or one of its members failed.
    #[error("{path}: {member}: {source}")]
    Io {
        /// The layout or archive.
        path: PathBuf,
        /// The member (empty for the file itself).
        member: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A JSON member that does not parse as what it must be.
    #[error("{path}: {member}: {reason}")]
    Json {
        /// The layout or archive.
        path: PathBuf,
        /// The member.
        member: String,
        /// Why.
        reason: String,
    },
    /// Neither an OCI layout (`index.json`) nor a docker archive (`manifest.json`).
    #[error("{0}: neither an OCI image layout (index.json) nor a docker archive (manifest.json)")]
    NotAnImage(PathBuf),
    /// A member that the index or manifest names is not there.
    #[error("{path}: {member}: missing")]
    Missing {
        /// The layout or archive.
        path: PathBuf,
        /// The member.
        member: String,
    },
    /// A member path that leaves the layout.
    #[error("{path}: {member}: refused: the path leaves the archive")]
    UnsafeMember {
        /// The layout or archive.
        path: PathBuf,
        /// The member.
        member: String,
    },
    /// An index with no manifest for this node's platform.
    #[error("{path}: index {digest}: no manifest for linux/{arch}")]
    NoPlatform {
        /// The layout or archive.
        path: PathBuf,
        /// The index.
        digest: String,
        /// This node's architecture, as OCI names it.
        arch: &'static str,
    },
    /// The store refused or failed (a digest mismatch names the digest).
    #[error("{path}: {source}")]
    Store {
        /// The layout or archive.
        path: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
}

impl Store {
    /// Imports every image of an OCI layout directory, an OCI archive or a
    /// docker-archive tar; the records, one per image.
    pub fn import(&self, path: &Path) -> Result<Vec<ImageRecord>, ImportError> {
        let source = Source::open(path)?;
        let _shared = self.shared_lock().map_err(|e| source.store_err(e))?;
        let importer = Importer {
            store: self,
            source: &source,
        };
        if source.exists("index.json") {
            importer.oci()
        } else if source.exists("manifest.json") {
            importer.docker()
        } else {
            Err(ImportError::NotAnImage(path.into()))
        }
    }
}

/// One member of a tar: where its bytes are.
#[derive(Debug, Clone)]
enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

/// Where an import reads from.
enum Source {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        members: BTreeMap<String, Member>,
    },
}

impl Source {
    fn open(path: &Path) -> Result<Source, ImportError> {
        let io_err = |source| ImportError::Io {
            path: path.into(),
            member: String::new(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if meta.is_dir() {
            return Ok(Source::Dir(path.into()));
        }
        Ok(Source::Tar {
            path: path.into(),
            members: index_tar(path).map_err(io_err)?,
        })
    }

    fn path(&self) -> &Path {
        match self {
            Source::Dir(p) | Source::Tar { path: p, .. } => p,
        }
    }

    fn store_err(&self, source: StoreError) -> ImportError {
        ImportError::Store {
            path: self.path().into(),
            source,
        }
    }

    fn missing(&self, member: &str) -> ImportError {
        ImportError::Missing {
            path: self.path().into(),
            member: member.into(),
        }
    }

    /// A tar member's data, following links (a few deep).
    fn tar_member(&self, members: &BTreeMap<String, Member>, member: &str) -> Option<(u64, u64)> {
        let mut name = member.to_string();
        for _ in 0..8 {
            match members.get(&name)? {
                Member::File { offset, size } => return Some((*offset, *size)),
                Member::Link(target) => name = target.clone(),
            }
        }
        None
    }

    fn exists(&self, member: &str) -> bool {
        match self {
            Source::Dir(dir) => dir.join(member).is_file(),
            Source::Tar { members, .. } => self.tar_member(members, member).is_some(),
        }
    }

    /// The member's bytes as a reader, and their length.
    fn open_member(&self, member: &str) -> Result<(Box<dyn Read + '_>, u64), ImportError> {
        let safe = member_path("", member).ok_or_else(|| ImportError::UnsafeMember {
            path: self.path().into(),
            member: member.into(),
        })?;
        let io_err = |source| ImportError::Io {
            path: self.path().into(),
            member: member.into(),
            source,
        };
        match self {
            Source::Dir(dir) => {
                let file = match File::open(dir.join(&safe)) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(self.missing(member));
                    }
                    other => other.map_err(io_err)?,
                };
                let len = file.metadata().map_err(io_err)?.len();
                Ok((Box::new(file), len))
            }
            Source::Tar { path, members } => {
                let (offset, size) = self
                    .tar_member(members, &safe)
                    .ok_or_else(|| self.missing(member))?;
                let mut file = File::open(path).map_err(io_err)?;
                file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
                Ok((Box::new(file.take(size)), size))
            }
        }
    }

    /// A small member's bytes (a manifest, a config, an index).
    fn read(&self, member: &str) -> Result<Vec<u8>, ImportError> {
        let (reader, len) = self.open_member(member)?;
        if len > MAX_JSON {
            return Err(self.json_err(member, format!("{len} bytes: too large")));
        }
        let mut bytes = Vec::new();
        reader
            .take(MAX_JSON)
            .read_to_end(&mut bytes)
            .map_err(|source| ImportError::Io {
                path: self.path().into(),
                member: member.into(),
                source,
            })?;
        Ok(bytes)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, member: &str) -> Result<T, ImportError> {
        let bytes = self.read(member)?;
        serde_json::from_slice(&bytes).map_err(|e| self.json_err(member, e.to_string()))
    }

    fn json_err(&self, member: &str, reason: String) -> ImportError {
        ImportError::Json {
            path: self.path().into(),
            member: member.into(),
            reason,
        }
    }
}

/// Where each member of the tar at `path` is (regular files) or leads
/// (symlinks and hard links, as member paths); directories are left out.
fn index_tar(path: &Path) -> io::Result<BTreeMap<String, Member>> {
    let file = File::open(path)?;
    let mut archive = tar::Archive::new(io::BufReader::new(file));
    let mut members = BTreeMap::new();
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(name) = member_path("", &name) else {
            continue;
        };
        let kind = entry.header().entry_type();
        let member = if kind.is_file() {
            Member::File {
                offset: entry.raw_file_position(),
                size: entry.size(),
            }
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name_bytes().unwrap_or_default();
            let target = String::from_utf8_lossy(&target);
            let base = if kind.is_symlink() {
                parent_of(&name)
            } else {
                ""
            };
            match member_path(base, &target) {
                Some(t) => Member::Link(t),
                None => continue,
            }
        } else {
            continue;
        };
        members.insert(name, member);
    }
    Ok(members)
}

/// `target` (relative to directory `base`, or absolute from the archive's
/// root) as a member path; `None` when it leaves the archive or is empty.
fn member_path(base: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    let start = if target.starts_with('/') { "" } else { base };
    for part in start.split('/').chain(target.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn parent_of(member: &str) -> &str {
    member.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// A blob's member path in an OCI layout.
fn blob_member(digest: &str) -> Option<String> {
    let hex = digest_hex(digest).ok()?;
    Some(format!("blobs/sha256/{hex}"))
}

/// This node's architecture as OCI platforms name it.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The names an OCI index entry's annotations give, normalised: the
/// containerd image name, and `ref.name` when it is a whole reference (a
/// bare tag such as `1.0` names nothing on its own).
fn annotation_names(annotations: &BTreeMap<String, String>) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(n) = annotations.get("io.containerd.image.name") {
        names.extend(normalize_name(n).ok());
    }
    if let Some(r) = annotations.get("org.opencontainers.image.ref.name")
        && r.contains([':', '/', '@'])
    {
        names.extend(normalize_name(r).ok());
    }
    names.dedup();
    names
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize, Default)]
struct DiffIds {
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// The OCI manifest written for a docker archive, which has none.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewManifest {
    schema_version: u32,
    media_type: &'static str,
    config: NewDescriptor,
    layers: Vec<NewDescriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewDescriptor {
    media_type: String,
    digest: String,
    size: u64,
}

impl NewManifest {
    fn new(config_digest: &str, config_size: u64, layers: Vec<LayerBlob>) -> NewManifest {
        NewManifest {
            schema_version: 2,
            media_type: "application/vnd.oci.image.manifest.v1+json",
            config: NewDescriptor {
                media_type: "application/vnd.oci.image.config.v1+json".into(),
                digest: config_digest.into(),
                size: config_size,
            },
            layers: layers
                .into_iter()
                .map(|l| NewDescriptor {
                    media_type: l.media_type,
                    digest: l.digest,
                    size: l.size,
                })
                .collect(),
        }
    }
}

struct Importer<'a> {
    store: &'a Store,
    source: &'a Source,
}

impl Importer<'_> {
    fn store_err(&self, e: StoreError) -> ImportError {
        self.source.store_err(e)
    }

    /// Every image an OCI layout's index.json names.
    fn oci(&self) -> Result<Vec<ImageRecord>, ImportError> {
        let index: Index = self.source.json("index.json")?;
        let mut out = Vec::new();
        for desc in &index.manifests {
            if desc
                .platform
                .as_ref()
                .is_some_and(|p| p.os != "linux" || p.architecture != oci_arch())
            {
                continue;
            }
            let mut names = annotation_names(&desc.annotations);
            let manifest_desc = self.platform_manifest(desc, 0)?;
            let bytes = self.verified_blob(&manifest_desc.digest)?;
            let manifest =
                Manifest::parse(&manifest_desc.digest, &bytes).map_err(|e| self.store_err(e))?;
            if names.is_empty() {
                names = self.docker_names_for(&manifest.config.digest);
            }
            out.push(self.import_manifest(&manifest_desc.digest, &manifest, &names)?);
        }
        if out.is_empty() && !index.manifests.is_empty() {
            return Err(ImportError::NoPlatform {
                path: self.source.path().into(),
                digest: "index.json".into(),
                arch: oci_arch(),
            });
        }
        Ok(out)
    }

    /// The image manifest `desc` leads to: itself, or an index's entry for
    /// this node's platform.
    fn platform_manifest(&self, desc: &Descriptor, depth: u8) -> Result<Descriptor, ImportError> {
        let is_index =
            desc.media_type.contains("index") || desc.media_type.contains("manifest.list");
        if !is_index {
            return Ok(desc.clone());
        }
        let bytes = self.verified_blob(&desc.digest)?;
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| self.source.json_err(&desc.digest, e.to_string()))?;
        let no_platform = || ImportError::NoPlatform {
            path: self.source.path().into(),
            digest: desc.digest.clone(),
            arch: oci_arch(),
        };
        let chosen = index
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == oci_arch())
            })
            .ok_or_else(no_platform)?;
        if depth > 2 {
            return Err(no_platform());
        }
        self.platform_manifest(chosen, depth + 1)
    }

    /// A layout blob's bytes, stored after checking its digest.
    fn verified_blob(&self, digest: &str) -> Result<Vec<u8>, ImportError> {
        let member = blob_member(digest).ok_or_else(|| {
            self.store_err(StoreError::InvalidDigest {
                digest: digest.into(),
            })
        })?;
        let bytes = self.source.read(&member)?;
        self.store
            .put_blob(digest, &bytes)
            .map_err(|e| self.store_err(e))?;
        Ok(bytes)
    }

    /// Unpacks every layer, stores the config, commits under `names`.
    fn import_manifest(
        &self,
        digest: &str,
        manifest: &Manifest,
        names: &[String],
    ) -> Result<ImageRecord, ImportError> {
        self.verified_blob(&manifest.config.digest)?;
        for layer in manifest.layer_blobs() {
            let member = blob_member(&layer.digest).ok_or_else(|| {
                self.store_err(StoreError::InvalidDigest {
                    digest: layer.digest.clone(),
                })
            })?;
            self.unpack(&layer, &member)?;
        }
        self.commit(digest, &manifest.config.digest, names)
    }

    fn unpack(&self, layer: &LayerBlob, member: &str) -> Result<(), ImportError> {
        if self.store.has_layer(&layer.digest) {
            return Ok(());
        }
        let (mut reader, _) = self.source.open_member(member)?;
        self.store
            .unpack_layer(layer, &mut reader)
            .map_err(|e| self.store_err(e))
    }

    fn commit(
        &self,
        digest: &str,
        config: &str,
        names: &[String],
    ) -> Result<ImageRecord, ImportError> {
        let mut record = self
            .store
            .commit(names.first().map(String::as_str), digest, config)
            .map_err(|e| self.store_err(e))?;
        for name in names.iter().skip(1) {
            record = self
                .store
                .commit(Some(name), digest, config)
                .map_err(|e| self.store_err(e))?;
        }
        Ok(record)
    }

    /// The docker view's RepoTags for the image whose config is `config`
    /// (an archive that is both, without names in its OCI index).
    fn docker_names_for(&self, config: &str) -> Vec<String> {
        let Ok(entries) = self.source.json::<Vec<DockerEntry>>("manifest.json") else {
            return Vec::new();
        };
        entries
            .into_iter()
            .filter(|e| {
                self.source
                    .read(&e.config)
                    .is_ok_and(|bytes| sha256_digest(&bytes) == config)
            })
            .flat_map(|e| e.repo_tags.unwrap_or_default())
            .filter_map(|t| normalize_name(&t).ok())
            .collect()
    }

    /// Every image of a docker archive's manifest.json.
    fn docker(&self) -> Result<Vec<ImageRecord>, ImportError> {
        let entries: Vec<DockerEntry> = self.source.json("manifest.json")?;
        entries.iter().map(|e| self.docker_image(e)).collect()
    }

    fn docker_image(&self, entry: &DockerEntry) -> Result<ImageRecord, ImportError> {
        let config_bytes = self.source.read(&entry.config)?;
        let config_digest =
            named_digest(&entry.config).unwrap_or_else(|| sha256_digest(&config_bytes));
        self.store
            .put_blob(&config_digest, &config_bytes)
            .map_err(|e| self.store_err(e))?;
        let diff_ids = serde_json::from_slice::<DiffIds>(&config_bytes)
            .map_err(|e| self.source.json_err(&entry.config, e.to_string()))?
            .rootfs
            .unwrap_or_default()
            .diff_ids;
        let mut layers = Vec::new();
        for (i, member) in entry.layers.iter().enumerate() {
            let layer = self.docker_layer(member, diff_ids.get(i))?;
            self.unpack(&layer, member)?;
            layers.push(layer);
        }
        let manifest = NewManifest::new(&config_digest, config_bytes.len() as u64, layers);
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| self.source.json_err("manifest.json", e.to_string()))?;
        let digest = sha256_digest(&bytes);
        self.store
            .put_blob(&digest, &bytes)
            .map_err(|e| self.store_err(e))?;
        let names: Vec<String> = entry
            .repo_tags
            .iter()
            .flatten()
            .filter_map(|t| normalize_name(t).ok())
            .collect();
        self.commit(&digest, &config_digest, &names)
    }

    /// A docker archive layer as a blob: its digest from its path
    /// (`blobs/sha256/<hex>`), else its diff_id when it is a plain tar, else
    /// its bytes' hash; its media type from its first bytes.
    fn docker_layer(
        &self,
        member: &str,
        diff_id: Option<&String>,
    ) -> Result<LayerBlob, ImportError> {
        let (mut reader, size) = self.source.open_member(member)?;
        let mut head = [0u8; 4];
        let n = read_head(&mut reader, &mut head).map_err(|source| ImportError::Io {
            path: self.source.path().into(),
            member: member.into(),
            source,
        })?;
        let kind = sniff(&head[..n]);
        let media_type = match kind {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        let digest = match (named_digest(member), kind, diff_id) {
            (Some(d), _, _) => d,
            (None, Compression::None, Some(d)) => d.clone(),
            _ => self.hash_member(member)?,
        };
        Ok(LayerBlob {
            digest,
            media_type: media_type.into(),
            size,
        })
    }

    fn hash_member(&self, member: &str) -> Result<String, ImportError> {
        use sha2::{Digest, Sha256};
        let (mut reader, _) = self.source.open_member(member)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf).map_err(|source| ImportError::Io {
                path: self.source.path().into(),
                member: member.into(),
                source,
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(format!("sha256:{}", super::unpack::hex(&hasher.finalize())))
    }
}

fn read_head(reader: &mut dyn Read, head: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < head.len() {
        match reader.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The digest a member's path names: `blobs/sha256/<hex>`, `<hex>.json`,
/// `<hex>/layer.tar` is not one (its id is no digest of it).
fn named_digest(member: &str) -> Option<String> {
    let hex = member
        .strip_prefix("blobs/sha256/")
        .or_else(|| member.strip_suffix(".json").filter(|h| !h.contains('/')))?;
    let digest = format!("sha256:{hex}");
    digest_hex(&digest).is_ok().then_some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_stay_in_the_archive() {
        assert_eq!(
            member_path("", "./index.json").as_deref(),
            Some("index.json")
        );
        assert_eq!(
            member_path("a/b", "../c/layer.tar").as_deref(),
            Some("a/c/layer.tar")
        );
        assert_eq!(member_path("a", "/blobs/x").as_deref(), Some("blobs/x"));
        assert_eq!(member_path("", "../x"), None);
        assert_eq!(member_path("a", "../../x"), None);
        assert_eq!(member_path("", "./"), None);
    }

    #[test]
    fn names_come_from_full_references_only() {
        let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            annotation_names(&ann(&[
                ("io.containerd.image.name", "docker.io/rundmc/rundmc:0.1.0"),
                ("org.opencontainers.image.ref.name", "0.1.0"),
            ])),
            ["docker.io/rundmc/rundmc:0.1.0"]
        );
        assert_eq!(
            annotation_names(&ann(&[(
                "org.opencontainers.image.ref.name",
                "busybox:1.36"
            )])),
            ["docker.io/library/busybox:1.36"]
        );
        assert!(annotation_names(&ann(&[("org.opencontainers.image.ref.name", "1.0")])).is_empty());
    }

    #[test]
    fn digests_named_by_member_paths() {
        let hex = "c".repeat(64);
        assert_eq!(
            named_digest(&format!("blobs/sha256/{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            named_digest(&format!("{hex}.json")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(named_digest(&format!("{hex}/layer.tar")), None);
        assert_eq!(named_digest("blobs/sha256/short"), None);
    }
}
