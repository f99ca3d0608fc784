//! The depot: one directory per container, named by its handle, holding
//! everything rundmc knows about the container that must outlive a reboot
//! or is too large for memory. It is the source of truth: a container is
//! what its depot directory says.
//!
//! The OCI bundle proper (`config.json`, the rootfs mount point, the init's
//! socket) is what the runtime reads and what a reboot ends anyway. With a
//! bundle root ([`Depot::with_bundles`], the agent's `<state-dir>/bundles`,
//! a tmpfs as `/run`) it lives there, at `<bundles>/<handle>/`, as
//! containerd and Podman keep theirs under `/run`: files made there cost no
//! inode allocation on the disk, which on ext4 without a journal grows with
//! every file deleted in the last minutes (issue 19). Without one it is in
//! the depot directory itself.
//!
//! ```text
//! <depot>/<handle>/
//!   container.json  the ContainerRecord: spec, its hash, labels. Written last
//!                   by create: a directory without it (or with it empty, as
//!                   a machine crash may leave it) is half-made.
//!   upper/ work/    the container's own writable layer
//!   userns.json     its user namespace's id range (`hostUsers: false`),
//!                   written right after the reservation, before it is used
//!   lower/<n>/      mount points of the idmapped image layers while the
//!                   overlay is being mounted (empty otherwise)
//!   processes/<id>/ each process's log, `output.log` and its rotations
//!   peas/<name>/    a pea's upper/ and work/, and pea.json, the image it
//!                   was made from, written before its overlay is mounted
//! <bundles>/<handle>/ (the depot directory itself without a bundle root)
//!   config.json     the OCI runtime config
//!   rootfs/         the overlay mount point (lower: the image)
//!   init.sock       the socket the container's init serves commands on
//!   processes/<id>/ one directory per process (see rundmc_shim::protocol):
//!                   its OCI process spec, its supervisor's record and own
//!                   log, pid, fifos and exit; its output is the depot's
//!                   `processes/<id>/`
//!   peas/<name>/    a pea's config.json and rootfs/
//! ```
//!
//! The bundle directory is made right after the depot directory and
//! removed right before it, so it never outlives it; a depot directory
//! whose bundle a reboot took is destroyed and made again like any
//! container whose runtime state is gone.
//!
//! Records read are kept by the version of `container.json` they came
//! from, so a look at an unchanged record costs one `statx` (issue 19).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::api::{ContainerSpec, Handle};
use crate::fsutil::{self, Durability, FileVersion, FsError};
use crate::sync::lock;

/// Depot failures.
#[derive(Debug, Error)]
pub enum DepotError {
    /// The handle is taken.
    #[error("container {0} already exists")]
    AlreadyExists(Handle),
    /// No such container.
    #[error("container {0} does not exist")]
    NotFound(Handle),
    /// A file in the depot could not be read or written.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// `container.json` is not what this version writes.
    #[error("{path}: corrupt container record: {source}")]
    Corrupt {
        /// The record.
        path: PathBuf,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
}

/// What the depot remembers of a container beyond its OCI bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    /// The container's handle.
    pub handle: Handle,
    /// The spec the bundle was made from (limits updated in place).
    pub spec: ContainerSpec,
    /// [`spec_hash`] of `spec`.
    pub spec_hash: String,
    /// When the container was created, RFC 3339.
    pub created_at: String,
    /// Free labels the caller attached at create (e.g. which source declared it).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The image it was made from, when it runs one: its layers stay in
    /// use, and its config gives the main process's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<crate::api::ImageUse>,
    /// Its network of its own (CNI), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<super::network::NetworkUse>,
    /// Its user namespace's host ids, when it has one (`hostUsers: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<super::userns::IdRange>,
}

/// Where a container's peas have their bundles, in its own.
pub const PEAS_DIR: &str = "peas";

/// What the depot remembers of a pea beyond its bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeaRecord {
    /// The image it was made from, when it runs one: its layers stay in
    /// use, and its config gives the sidecar's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<crate::api::ImageUse>,
}

/// Paths of one container (or pea): its depot directory and its OCI
/// bundle directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundlePaths {
    /// The depot directory: the record, the writable layer, the processes.
    pub dir: PathBuf,
    /// The OCI bundle directory the runtime is given: the config, the
    /// rootfs mount point and the init's socket. `dir` itself without a
    /// bundle root.
    pub bundle: PathBuf,
}

impl BundlePaths {
    /// Paths with the bundle in the depot directory itself.
    pub fn in_one(dir: PathBuf) -> Self {
        BundlePaths {
            bundle: dir.clone(),
            dir,
        }
    }
    /// The paths of pea `name` inside these.
    pub fn pea(&self, name: &str) -> Self {
        BundlePaths {
            dir: self.dir.join(PEAS_DIR).join(name),
            bundle: self.bundle.join(PEAS_DIR).join(name),
        }
    }
    /// The OCI config.
    pub fn config(&self) -> PathBuf {
        self.bundle.join("config.json")
    }
    /// The container record.
    pub fn record(&self) -> PathBuf {
        self.dir.join("container.json")
    }
    /// The overlay mount point.
    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }
    /// Every place the rootfs may be mounted, for a destroy to unmount: the
    /// bundle's, and with a bundle root also the depot directory's own,
    /// where versions before the bundle root mounted it (an agent upgraded
    /// with containers running).
    pub fn rootfs_mounts(&self) -> Vec<PathBuf> {
        let mut points = vec![self.rootfs()];
        if self.bundle != self.dir {
            points.push(self.dir.join("rootfs"));
        }
        points
    }
    /// The overlay's upper directory.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    /// The overlay's work directory.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// The socket the container's init serves commands on (exec probes and
    /// hooks), bound by the agent and handed to the init at create.
    pub fn init_socket(&self) -> PathBuf {
        self.bundle.join("init.sock")
    }
    /// Where process directories live (in the bundle): each supervisor's
    /// record, the process's pid, fifos and exit.
    pub fn processes(&self) -> PathBuf {
        self.bundle.join("processes")
    }
    /// Where processes' logs live (in the depot): `<id>/output.log` and its
    /// rotations, which outlive the process (`kubectl logs --previous`).
    /// `processes()` itself without a bundle root.
    pub fn process_logs(&self) -> PathBuf {
        self.dir.join("processes")
    }
    /// The user namespace's id range, recorded before it is used.
    pub fn userns(&self) -> PathBuf {
        self.dir.join("userns.json")
    }
    /// Where the idmapped image layers are mounted while the overlay is made.
    pub fn lower(&self) -> PathBuf {
        self.dir.join("lower")
    }
    /// A pea's record (in a pea's bundle).
    pub fn pea_record(&self) -> PathBuf {
        self.dir.join("pea.json")
    }
}

/// One directory found in the depot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepotEntry {
    /// Its handle.
    pub handle: Handle,
    /// False for a half-made bundle (no container record): a crash during
    /// create or destroy left it, and destroy finishes it.
    pub complete: bool,
}

pub use crate::api::spec_hash;

/// Records parsed, by handle, with the version of the file each came from.
type Parsed = HashMap<Handle, (FileVersion, ContainerRecord)>;

/// The depot directory. Clones share what was read.
#[derive(Debug, Clone)]
pub struct Depot {
    root: PathBuf,
    /// Where OCI bundles go; `None`: in the depot directories.
    bundles: Option<PathBuf>,
    parsed: Arc<Mutex<Parsed>>,
}

impl Depot {
    /// Open (creating if needed) the depot at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DepotError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(fsutil::at(&root))?;
        if let Err(e) = fsutil::spread_subdirectories(&root) {
            tracing::debug!(depot = %root.display(), error = %e,
                "the depot's file system takes no placement hint");
        }
        Ok(Self {
            root,
            bundles: None,
            parsed: Arc::default(),
        })
    }

    /// Open (creating if needed) the depot at `root`, keeping OCI bundles
    /// under `bundles` (see the module's doc).
    pub fn with_bundles(
        root: impl Into<PathBuf>,
        bundles: impl Into<PathBuf>,
    ) -> Result<Self, DepotError> {
        let bundles = bundles.into();
        fs::create_dir_all(&bundles).map_err(fsutil::at(&bundles))?;
        Ok(Self {
            bundles: Some(bundles),
            ..Self::open(root)?
        })
    }

    /// The depot's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether OCI bundles are kept under a bundle root of their own.
    pub fn has_bundle_root(&self) -> bool {
        self.bundles.is_some()
    }

    /// Paths of `handle`'s bundle, whether or not it exists.
    pub fn paths(&self, handle: &Handle) -> BundlePaths {
        let dir = self.root.join(handle.as_str());
        match &self.bundles {
            Some(bundles) => BundlePaths {
                dir,
                bundle: bundles.join(handle.as_str()),
            },
            None => BundlePaths::in_one(dir),
        }
    }

    /// Reserve `handle` by creating its directory, then its bundle
    /// directory. `mkdir` is atomic, so of two creates of one handle
    /// exactly one succeeds. A bundle directory already there (only a
    /// crash between the two removals of [`Depot::remove`] leaves one,
    /// and it is empty) is taken as it is.
    pub fn reserve(&self, handle: &Handle) -> Result<BundlePaths, DepotError> {
        let paths = self.paths(handle);
        match fs::create_dir(&paths.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(DepotError::AlreadyExists(handle.clone()));
            }
            Err(e) => return Err(FsError::new(&paths.dir, e).into()),
        }
        if paths.bundle != paths.dir {
            fs::create_dir_all(&paths.bundle).map_err(fsutil::at(&paths.bundle))?;
        }
        Ok(paths)
    }

    /// Write the record, marking the bundle complete (or updating it).
    /// Atomic but not durable (see [`fsutil`]): after a machine crash the
    /// container is recreated anyway, and a record the crash left empty
    /// reads as half-made.
    pub fn write_record(&self, record: &ContainerRecord) -> Result<(), DepotError> {
        let path = self.paths(&record.handle).record();
        self.forget(&record.handle);
        Ok(fsutil::write_json_with(
            &path,
            record,
            Durability::Volatile,
        )?)
    }

    /// The record of `handle`; `NotFound` when the directory is absent,
    /// `Ok(None)` when it is half-made (no record, or one a machine crash
    /// left unwritten).
    ///
    /// A record unchanged since it was last read is not read again. The
    /// version is taken before the read: a rename in between pairs the
    /// older version with the newer record, which only costs a read later.
    pub fn record(&self, handle: &Handle) -> Result<Option<ContainerRecord>, DepotError> {
        let paths = self.paths(handle);
        let path = paths.record();
        let read = fs::metadata(&path).and_then(|meta| {
            let version = FileVersion::of(&meta);
            match self.parsed_at(handle, version) {
                Some(record) => Ok(Ok(record)),
                None => fsutil::read_small(&path).map(|bytes| Err((version, bytes))),
            }
        });
        match read {
            Ok(Ok(record)) => Ok(Some(record)),
            Ok(Err((_, bytes))) if fsutil::is_unwritten(&bytes) => Ok(None),
            Ok(Err((version, bytes))) => {
                let record: ContainerRecord = serde_json::from_slice(&bytes)
                    .map_err(|source| DepotError::Corrupt { path, source })?;
                lock(&self.parsed).insert(handle.clone(), (version, record.clone()));
                Ok(Some(record))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget(handle);
                if paths.dir.is_dir() {
                    Ok(None)
                } else {
                    Err(DepotError::NotFound(handle.clone()))
                }
            }
            Err(e) => Err(FsError::new(path, e).into()),
        }
    }

    /// Every container directory, complete or not, sorted by handle. Names
    /// that are not handles (temp files, strays) are skipped.
    pub fn entries(&self) -> Result<Vec<DepotEntry>, DepotError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(fsutil::at(&self.root))? {
            let entry = entry.map_err(fsutil::at(&self.root))?;
            let Ok(handle) = Handle::new(entry.file_name().to_string_lossy().into_owned()) else {
                continue;
            };
            if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let complete = fs::metadata(self.paths(&handle).record())
                .is_ok_and(|m| m.is_file() && m.len() > 0);
            out.push(DepotEntry { handle, complete });
        }
        out.sort_by(|a, b| a.handle.cmp(&b.handle));
        Ok(out)
    }

    /// The ids of the images the depot's containers were made from: what
    /// the image store must keep. A record that cannot be read keeps
    /// nothing, so the error is returned rather than skipped.
    /// Its peas' images count as long as their bundles are there, whether
    /// or not the container's record is (a destroy removes it first).
    pub fn images_in_use(&self) -> Result<BTreeSet<String>, DepotError> {
        let mut used = BTreeSet::new();
        for entry in self.entries()? {
            match self.record(&entry.handle) {
                Ok(Some(record)) => used.extend(record.image.map(|i| i.id)),
                Ok(None) | Err(DepotError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            for pea in self.pea_records(&entry.handle)? {
                used.extend(pea.image.map(|i| i.id));
            }
        }
        Ok(used)
    }

    /// The records of `handle`'s peas: one per pea bundle that has one (a
    /// pea of a rootfs directory, or half-made, may have none).
    pub fn pea_records(&self, handle: &Handle) -> Result<Vec<PeaRecord>, DepotError> {
        let dir = self.paths(handle).dir.join(PEAS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(FsError::new(dir, e).into()),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(fsutil::at(&dir))?;
            let paths = BundlePaths::in_one(entry.path());
            if let Some(record) = read_pea_record(&paths)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Mark the bundle half-made, so that a crash from here on leaves a
    /// directory that the next destroy or start-up finishes removing.
    pub fn unmark(&self, handle: &Handle) -> Result<(), DepotError> {
        self.forget(handle);
        Ok(fsutil::remove_file_if_exists(&self.paths(handle).record())?)
    }

    /// The record of `handle` read before, if it was read from `version`.
    fn parsed_at(&self, handle: &Handle, version: FileVersion) -> Option<ContainerRecord> {
        let parsed = lock(&self.parsed);
        let (v, record) = parsed.get(handle)?;
        (*v == version).then(|| record.clone())
    }

    /// Forget the record of `handle` read before.
    fn forget(&self, handle: &Handle) {
        lock(&self.parsed).remove(handle);
    }

    /// Remove the bundle directory, then the depot directory, so that
    /// the first never outlives the second. The caller has unmounted the
    /// rootfs. Missing is success.
    pub fn remove(&self, handle: &Handle) -> Result<(), DepotError> {
        self.forget(handle);
        let paths = self.paths(handle);
        if paths.bundle != paths.dir {
            fsutil::remove_dir_all_if_exists(&paths.bundle)?;
        }
        Ok(fsutil::remove_dir_all_if_exists(&paths.dir)?)
    }
}

/// The record in pea bundle `paths`; `None` when it has none (yet).
pub fn read_pea_record(paths: &BundlePaths) -> Result<Option<PeaRecord>, DepotError> {
    let path = paths.pea_record();
    match fs::read(&path) {
        Ok(bytes) if fsutil::is_unwritten(&bytes) => Ok(None),
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| DepotError::Corrupt { path, source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new(path, e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_depot(name: &str) -> Depot {
        let dir = std::env::temp_dir().join(format!("rundmc-depot-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Depot::open(dir).unwrap()
    }

    #[test]
    fn a_peas_image_is_in_use_while_its_bundle_is_there() {
        let depot = tmp_depot("pea-images");
        let h = Handle::new("web").unwrap();
        depot.reserve(&h).unwrap();
        let pea = depot.paths(&h).pea("p");
        fs::create_dir_all(&pea.dir).unwrap();
        assert!(depot.images_in_use().unwrap().is_empty());
        let record = PeaRecord {
            image: Some(crate::api::ImageUse {
                name: "app:1".into(),
                id: "sha256:pea".into(),
                defaults: Default::default(),
            }),
        };
        fsutil::write_json_with(&pea.pea_record(), &record, Durability::Volatile).unwrap();
        // No container record (half-made, or a destroy under way): still in use.
        assert_eq!(
            depot.images_in_use().unwrap(),
            BTreeSet::from(["sha256:pea".to_string()])
        );
        fs::write(pea.pea_record(), b"{").unwrap();
        assert!(
            depot.images_in_use().is_err(),
            "unreadable keeps everything"
        );
        fs::remove_dir_all(depot.root()).unwrap();
    }

    #[test]
    fn reserve_is_exclusive_and_half_made_is_visible() {
        let depot = tmp_depot("reserve");
        let h = Handle::new("web").unwrap();
        depot.reserve(&h).unwrap();
        assert!(matches!(
            depot.reserve(&h),
            Err(DepotError::AlreadyExists(_))
        ));
        assert_eq!(depot.record(&h).unwrap(), None);
        assert_eq!(
            depot.entries().unwrap(),
            vec![DepotEntry {
                handle: h.clone(),
                complete: false
            }]
        );

        let spec = ContainerSpec {
            rootfs: "/img".into(),
            ..Default::default()
        };
        let record = ContainerRecord {
            image: None,
            network: None,
            userns: None,
            handle: h.clone(),
            spec_hash: spec_hash(&spec),
            spec,
            created_at: "2026-01-01T00:00:00Z".into(),
            labels: BTreeMap::new(),
        };
        depot.write_record(&record).unwrap();
        assert_eq!(depot.record(&h).unwrap(), Some(record.clone()));
        assert!(depot.entries().unwrap()[0].complete);

        // What was read before is not what a later write or another
        // writer left: each version is read again.
        let mut updated = record.clone();
        updated.labels.insert("team".into(), "web".into());
        depot.write_record(&updated).unwrap();
        assert_eq!(depot.record(&h).unwrap(), Some(updated.clone()));
        let mut elsewhere = updated.clone();
        elsewhere.created_at = "2026-01-02T00:00:00.5Z".into();
        fsutil::write_json_with(&depot.paths(&h).record(), &elsewhere, Durability::Volatile)
            .unwrap();
        assert_eq!(depot.record(&h).unwrap(), Some(elsewhere));

        fs::write(depot.root().join(".web.tmp-1-1"), b"x").unwrap();
        assert_eq!(
            depot.entries().unwrap().len(),
            1,
            "temp files are not containers"
        );

        fs::write(depot.paths(&h).record(), b"").unwrap();
        assert_eq!(depot.record(&h).unwrap(), None, "a crash's empty record");
        assert!(!depot.entries().unwrap()[0].complete);

        depot.remove(&h).unwrap();
        depot.remove(&h).unwrap();
        assert!(matches!(depot.record(&h), Err(DepotError::NotFound(_))));
        fs::remove_dir_all(depot.root()).unwrap();
    }

    #[test]
    fn with_a_bundle_root_the_bundle_is_made_after_and_removed_before_the_depot_directory() {
        let depot = tmp_depot("split");
        let bundles = depot.root().with_extension("bundles");
        let _ = fs::remove_dir_all(&bundles);
        let depot = Depot::with_bundles(depot.root(), &bundles).unwrap();
        let h = Handle::new("web").unwrap();
        let paths = depot.reserve(&h).unwrap();
        assert_eq!(paths.dir, depot.root().join("web"));
        assert_eq!(paths.bundle, bundles.join("web"));
        assert!(paths.dir.is_dir() && paths.bundle.is_dir());
        assert_eq!(paths.config(), bundles.join("web/config.json"));
        assert_eq!(paths.rootfs(), bundles.join("web/rootfs"));
        assert_eq!(paths.init_socket(), bundles.join("web/init.sock"));
        assert_eq!(paths.record(), depot.root().join("web/container.json"));
        assert_eq!(paths.upper(), depot.root().join("web/upper"));
        assert_eq!(paths.processes(), bundles.join("web/processes"));
        assert_eq!(paths.process_logs(), depot.root().join("web/processes"));
        let pea = paths.pea("side");
        assert_eq!(pea.dir, depot.root().join("web/peas/side"));
        assert_eq!(pea.rootfs(), bundles.join("web/peas/side/rootfs"));
        assert!(matches!(
            depot.reserve(&h),
            Err(DepotError::AlreadyExists(_))
        ));

        // A reboot empties the tmpfs: the depot directory is still a
        // container, half-made, and goes whole.
        fs::remove_dir_all(&paths.bundle).unwrap();
        assert_eq!(depot.record(&h).unwrap(), None);
        depot.remove(&h).unwrap();
        assert!(!paths.dir.exists());

        depot.reserve(&h).unwrap();
        fs::write(paths.config(), b"{}").unwrap();
        depot.remove(&h).unwrap();
        assert!(!paths.dir.exists() && !paths.bundle.exists());
        depot.remove(&h).unwrap();
        fs::remove_dir_all(depot.root()).unwrap();
        fs::remove_dir_all(&bundles).unwrap();
    }

    #[test]
    fn spec_hash_changes_with_spec() {
        let a = ContainerSpec {
            rootfs: "/a".into(),
            ..Default::default()
        };
        let b = ContainerSpec {
            rootfs: "/b".into(),
            ..Default::default()
        };
        assert_eq!(spec_hash(&a), spec_hash(&a.clone()));
        assert_ne!(spec_hash(&a), spec_hash(&b));
    }
}
