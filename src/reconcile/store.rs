//! The desired store: what every source declares, keyed by handle and tagged
//! by the source it came from. Sources write it; the controller reads it.
//! A declaration that turns invalid keeps its last good spec, so a typo
//! never takes a running service down.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::api::{ContainerSpec, ContainerStatus, Handle};
use crate::source::admission::Admission;
use crate::source::manifest::{Manifest, ManifestError, file_handle};

/// Which kind of source declared a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// The watched manifest directory.
    File,
    /// Container custom resources.
    Kube,
}

impl SourceKind {
    /// The value of the depot label that records it.
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Kube => "kube",
        }
    }

    /// The kind named by a depot label.
    pub fn from_label(s: &str) -> Option<Self> {
        match s {
            "file" => Some(SourceKind::File),
            "kube" => Some(SourceKind::Kube),
            _ => None,
        }
    }
}

/// The depot label key naming a container's source kind.
pub const SOURCE_LABEL: &str = "rundmc.io/source";

/// Where exactly a declaration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A document of a manifest file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based document index.
        document: usize,
    },
    /// A custom resource.
    Kube {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its uid.
        uid: String,
    },
}

impl Origin {
    /// The kind of source.
    pub fn kind(&self) -> SourceKind {
        match self {
            Origin::File { .. } => SourceKind::File,
            Origin::Kube { .. } => SourceKind::Kube,
        }
    }
}

/// Why a declaration cannot be applied as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclError {
    /// `InvalidManifest` or `Forbidden`.
    pub reason: &'static str,
    /// What is wrong, naming where and which field.
    pub message: String,
}

use crate::report::events::reason::{FORBIDDEN, INVALID_MANIFEST as INVALID};

/// One declared container.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Its handle.
    pub handle: Handle,
    /// Where it was declared.
    pub origin: Origin,
    /// The last valid spec; `None` if the declaration was never valid.
    pub spec: Option<ContainerSpec>,
    /// Bumped on every spec change (`metadata.generation` for resources).
    pub generation: i64,
    /// Why the current declaration cannot be applied, if it cannot.
    pub error: Option<DeclError>,
    /// The declaration is being deleted (a resource with a deletion timestamp).
    pub deleting: bool,
    /// The resource carries rundmc's cleanup finalizer.
    pub finalizer: bool,
}

/// What a store update changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Handles whose declaration was added, removed or changed.
    pub handles: Vec<Handle>,
    /// Manifest files whose own errors (those naming no container) changed.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Handle, Desired>,
    file_errors: BTreeMap<PathBuf, Vec<String>>,
    synced: HashSet<SourceKind>,
    reported: HashMap<Handle, ContainerStatus>,
    mirrors: HashMap<Handle, Mirror>,
}

/// The mirror object this agent published for a file-sourced container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirror {
    /// Its name.
    pub name: String,
    /// Its uid, which tells it from an older object of the same name;
    /// empty while it is being (re)created.
    pub uid: String,
    /// Its `metadata.generation` after this agent's last apply.
    pub generation: i64,
    /// The hash of the spec this agent applies (set before the apply, so
    /// the watch event of that apply, however early, matches it).
    pub spec_hash: String,
    /// Someone else changed its spec, or deleted it: publish it anew.
    pub stale: bool,
}

/// A mirror object as the server shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorSight<'a> {
    /// It exists at this generation, with a spec of this hash.
    At {
        /// `metadata.generation`.
        generation: i64,
        /// The hash of its spec.
        spec_hash: &'a str,
    },
    /// It was deleted.
    Deleted,
}

impl Mirror {
    /// Whether the server showing object `uid` so means someone else
    /// changed or deleted this mirror. Events about other objects of the
    /// name, events older than this agent's last apply, and the event of
    /// its own apply arriving before the apply's answer, do not count.
    pub fn changed_by(&self, uid: &str, sight: MirrorSight<'_>) -> bool {
        uid == self.uid
            && match sight {
                MirrorSight::Deleted => true,
                MirrorSight::At {
                    generation,
                    spec_hash,
                } => generation > self.generation && spec_hash != self.spec_hash,
            }
    }
}

/// The store, shared by sources and workers.
#[derive(Debug, Default)]
pub struct Store {
    inner: RwLock<Inner>,
}

/// Every file of the manifest directory, sorted by path, with its documents.
pub type FileSnapshot = Vec<(PathBuf, Vec<Result<Manifest, ManifestError>>)>;

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        crate::sync::read(&self.inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        crate::sync::write(&self.inner)
    }

    /// The declaration of `handle`.
    pub fn get(&self, handle: &Handle) -> Option<Desired> {
        self.read().entries.get(handle).cloned()
    }

    /// The declaration of `handle` and which sources had listed, read at
    /// one instant: a source that lists after this read must not make an
    /// absence read before it count as "undeclared".
    pub fn get_with_synced(&self, handle: &Handle) -> (Option<Desired>, HashSet<SourceKind>) {
        let inner = self.read();
        (inner.entries.get(handle).cloned(), inner.synced.clone())
    }

    /// Every declared handle.
    pub fn handles(&self) -> Vec<Handle> {
        self.read().entries.keys().cloned().collect()
    }

    /// Errors of a manifest file that name no container.
    pub fn file_errors(&self, path: &std::path::Path) -> Vec<String> {
        self.read()
            .file_errors
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// The manifest files that have errors naming no container.
    pub fn files_in_error(&self) -> Vec<PathBuf> {
        self.read().file_errors.keys().cloned().collect()
    }

    /// Record that `kind` has delivered its first complete listing: until
    /// then, a container it made is never destroyed for being undeclared.
    pub fn mark_synced(&self, kind: SourceKind) {
        self.write().synced.insert(kind);
    }

    /// Whether `kind` has delivered its first complete listing.
    pub fn is_synced(&self, kind: SourceKind) -> bool {
        self.read().synced.contains(&kind)
    }

    /// Insert or replace one declaration; true when it changed.
    pub fn upsert(&self, desired: Desired) -> bool {
        let mut inner = self.write();
        let changed = inner.entries.get(&desired.handle) != Some(&desired);
        inner.entries.insert(desired.handle.clone(), desired);
        changed
    }

    /// Remove one declaration; true when there was one.
    pub fn remove(&self, handle: &Handle) -> bool {
        self.write().entries.remove(handle).is_some()
    }

    /// The status the declaration's source holds now (a resource's
    /// `.status`), to write only what changed.
    pub fn reported(&self, handle: &Handle) -> Option<ContainerStatus> {
        self.read().reported.get(handle).cloned()
    }

    /// Remember the status the source holds for `handle`.
    pub fn set_reported(&self, handle: &Handle, status: Option<ContainerStatus>) {
        let mut inner = self.write();
        match status {
            Some(s) => inner.reported.insert(handle.clone(), s),
            None => inner.reported.remove(handle),
        };
    }

    /// The mirror published for `handle`, if any.
    pub fn mirror(&self, handle: &Handle) -> Option<Mirror> {
        self.read().mirrors.get(handle).cloned()
    }

    /// Remember the mirror just published for `handle` (`None`: removed).
    pub fn set_mirror(&self, handle: &Handle, mirror: Option<Mirror>) {
        let mut inner = self.write();
        match mirror {
            Some(m) => inner.mirrors.insert(handle.clone(), m),
            None => inner.mirrors.remove(handle),
        };
    }

    /// The server shows mirror object `uid` of `handle` so. True when that
    /// makes the mirror stale: someone else changed or deleted what this
    /// agent published.
    pub fn mirror_seen(&self, handle: &Handle, uid: &str, sight: MirrorSight<'_>) -> bool {
        let mut inner = self.write();
        match inner.mirrors.get_mut(handle) {
            Some(m) if m.changed_by(uid, sight) => {
                m.stale = true;
                true
            }
            _ => false,
        }
    }

    /// Replace every declaration of `kind` with `entries` (a source's full
    /// relist); what it no longer declares is removed.
    pub fn replace_kind(&self, kind: SourceKind, entries: Vec<Desired>) -> Changes {
        let mut inner = self.write();
        let mut changes = Changes::default();
        let fresh: HashMap<Handle, Desired> =
            entries.into_iter().map(|d| (d.handle.clone(), d)).collect();
        let gone: Vec<Handle> = inner
            .entries
            .iter()
            .filter(|(h, d)| d.origin.kind() == kind && !fresh.contains_key(*h))
            .map(|(h, _)| h.clone())
            .collect();
        for h in gone {
            inner.entries.remove(&h);
            changes.handles.push(h);
        }
        for (h, d) in fresh {
            if inner.entries.get(&h) != Some(&d) {
                changes.handles.push(h.clone());
                inner.entries.insert(h, d);
            }
        }
        changes.handles.sort();
        changes
    }

    /// Replace everything the directory declares with `snapshot`. With an
    /// admission policy, what it refuses keeps its last admitted spec.
    pub fn apply_files(&self, snapshot: FileSnapshot, admission: Option<&Admission>) -> Changes {
        let mut inner = self.write();
        let previous: HashMap<Handle, Desired> = inner
            .entries
            .iter()
            .filter(|(_, d)| d.origin.kind() == SourceKind::File)
            .map(|(h, d)| (h.clone(), d.clone()))
            .collect();
        let (entries, file_errors) = resolve_files(&previous, snapshot, admission);
        let mut changes = Changes::default();
        for (h, d) in &entries {
            if previous.get(h) != Some(d) {
                changes.handles.push(h.clone());
            }
        }
        for h in previous.keys().filter(|h| !entries.contains_key(*h)) {
            changes.handles.push(h.clone());
            inner.entries.remove(h);
        }
        let paths: HashSet<&PathBuf> = inner.file_errors.keys().chain(file_errors.keys()).collect();
        changes.files = paths
            .into_iter()
            .filter(|p| inner.file_errors.get(*p) != file_errors.get(*p))
            .cloned()
            .collect();
        changes.files.sort();
        changes.handles.sort();
        inner.entries.extend(entries);
        inner.file_errors = file_errors;
        changes
    }
}

/// The declarations and file-level errors of a directory snapshot. The
/// first document (by path, then position) to claim a name wins.
fn resolve_files(
    previous: &HashMap<Handle, Desired>,
    snapshot: FileSnapshot,
    admission: Option<&Admission>,
) -> (HashMap<Handle, Desired>, BTreeMap<PathBuf, Vec<String>>) {
    let mut entries: HashMap<Handle, Desired> = HashMap::new();
    let mut claims: HashMap<Handle, (PathBuf, usize)> = HashMap::new();
    let mut file_errors: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    // Files with an error that names no container: a syntax error, an
    // unreadable or oversized file. What they declared is unknown.
    let mut broken: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (path, docs) in snapshot {
        for doc in docs {
            let decl = match judge(&path, doc, admission) {
                Ok(decl) => decl,
                Err(message) => {
                    broken
                        .entry(path.clone())
                        .or_insert_with(|| message.clone());
                    file_errors.entry(path.clone()).or_default().push(message);
                    continue;
                }
            };
            if let Some((first, first_doc)) = claims.get(&decl.handle) {
                let msg = format!(
                    "{}: document {}: metadata.name: {:?} is already declared in {} document {first_doc}",
                    path.display(),
                    decl.document,
                    decl.handle.as_str(),
                    first.display()
                );
                file_errors.entry(path.clone()).or_default().push(msg);
                continue;
            }
            claims.insert(decl.handle.clone(), (path.clone(), decl.document));
            let prev = previous.get(&decl.handle);
            let desired = decl.into_desired(&path, prev);
            entries.insert(desired.handle.clone(), desired);
        }
    }
    keep_what_broken_files_declared(previous, &broken, &mut entries);
    (entries, file_errors)
}

/// A file that turned unreadable keeps declaring what it declared before,
/// with the file's error: a typo must not take a service down. (A file
/// that is removed, or parses without some document, declares less.)
fn keep_what_broken_files_declared(
    previous: &HashMap<Handle, Desired>,
    broken: &BTreeMap<PathBuf, String>,
    entries: &mut HashMap<Handle, Desired>,
) {
    for (handle, prev) in previous {
        let Origin::File { path, .. } = &prev.origin else {
            continue;
        };
        let Some(message) = broken.get(path) else {
            continue;
        };
        if entries.contains_key(handle) {
            continue;
        }
        let error = DeclError {
            reason: INVALID,
            message: message.clone(),
        };
        entries.insert(
            handle.clone(),
            Desired {
                error: Some(error),
                ..prev.clone()
            },
        );
    }
}

/// One document of a manifest file, judged: the container it declares,
/// with its spec when valid and admitted, or the error that keeps it out.
struct FileDecl {
    handle: Handle,
    document: usize,
    spec: Option<ContainerSpec>,
    error: Option<DeclError>,
}

impl FileDecl {
    /// The declaration, keeping the last good spec (and its generation)
    /// while the file is in error.
    fn into_desired(self, path: &Path, prev: Option<&Desired>) -> Desired {
        let spec_changed =
            self.spec.is_some() && prev.and_then(|p| p.spec.as_ref()) != self.spec.as_ref();
        let generation =
            prev.map(|p| p.generation).unwrap_or(0) + i64::from(spec_changed || prev.is_none());
        Desired {
            spec: self.spec.or_else(|| prev.and_then(|p| p.spec.clone())),
            handle: self.handle,
            origin: Origin::File {
                path: path.to_owned(),
                document: self.document,
            },
            generation,
            error: self.error,
            deleting: false,
            finalizer: false,
        }
    }
}

/// Judge one parsed document. `Err` is an error that names no container,
/// which belongs to the file.
fn judge(
    path: &Path,
    doc: Result<Manifest, ManifestError>,
    admission: Option<&Admission>,
) -> Result<FileDecl, String> {
    let m = match doc {
        Ok(m) => m,
        Err(e) => {
            let Some(Ok(handle)) = e.name.as_deref().map(file_handle) else {
                return Err(e.to_string());
            };
            let error = DeclError {
                reason: INVALID,
                message: e.to_string(),
            };
            return Ok(FileDecl {
                handle,
                document: e.document,
                spec: None,
                error: Some(error),
            });
        }
    };
    let admitted =
        admission.map(|a| a.admit(&m.container.spec, |p: &Path| std::fs::canonicalize(p)));
    let (spec, error) = match admitted {
        Some(Err(why)) => {
            let message = format!("{}: document {}: {why}", path.display(), m.document);
            let error = DeclError {
                reason: FORBIDDEN,
                message,
            };
            (None, Some(error))
        }
        Some(Ok(spec)) => (Some(spec), None),
        None => (Some(m.container.spec), None),
    };
    Ok(FileDecl {
        handle: m.handle,
        document: m.document,
        spec,
        error,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::source::manifest::parse;

    fn doc(name: &str, rootfs: &str) -> String {
        format!(
            "apiVersion: rundmc.io/v1alpha1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  rootfs: {rootfs}\n"
        )
    }

    fn snap(files: &[(&str, String)]) -> FileSnapshot {
        files
            .iter()
            .map(|(p, text)| (PathBuf::from(p), parse(Path::new(p), text)))
            .collect()
    }

    fn h(s: &str) -> Handle {
        Handle::new(s).unwrap()
    }

    impl Store {
        fn apply_files_t(&self, snapshot: FileSnapshot) -> Changes {
            self.apply_files(snapshot, None)
        }
    }

    #[test]
    fn adds_changes_and_removes() {
        let store = Store::new();
        let c = store.apply_files_t(snap(&[
            ("/m/a.yaml", doc("web", "/img")),
            ("/m/b.yaml", doc("db", "/img")),
        ]));
        assert_eq!(c.handles, vec![h("db"), h("web")]);
        assert_eq!(store.get(&h("web")).unwrap().generation, 1);

        let c = store.apply_files_t(snap(&[
            ("/m/a.yaml", doc("web", "/img2")),
            ("/m/b.yaml", doc("db", "/img")),
        ]));
        assert_eq!(c.handles, vec![h("web")], "only the changed one");
        assert_eq!(store.get(&h("web")).unwrap().generation, 2);

        let c = store.apply_files_t(snap(&[("/m/a.yaml", doc("web", "/img2"))]));
        assert_eq!(c.handles, vec![h("db")]);
        assert!(store.get(&h("db")).is_none());
        let c = store.apply_files_t(snap(&[("/m/a.yaml", doc("web", "/img2"))]));
        assert_eq!(c, Changes::default(), "a resync changes nothing");
    }

    #[test]
    fn invalid_keeps_the_last_good_spec() {
        let store = Store::new();
        store.apply_files_t(snap(&[("/m/a.yaml", doc("web", "/img"))]));
        let c = store.apply_files_t(snap(&[("/m/a.yaml", doc("web", "relative"))]));
        assert_eq!(c.handles, vec![h("web")]);
        let d = store.get(&h("web")).unwrap();
        assert_eq!(d.spec.unwrap().rootfs, "/img", "last good spec");
        assert_eq!(d.generation, 1, "the running spec did not change");
        let err = d.error.unwrap();
        assert_eq!(err.reason, "InvalidManifest");
        assert!(
            err.message
                .contains("/m/a.yaml: document 1, line 6: spec.rootfs")
        );

        store.apply_files_t(snap(&[("/m/a.yaml", doc("web", "/img"))]));
        assert_eq!(store.get(&h("web")).unwrap().error, None, "fixed");
    }

    #[test]
    fn a_file_broken_beyond_parsing_keeps_what_it_declared() {
        let store = Store::new();
        let two = format!("{}---\n{}", doc("web", "/img"), doc("db", "/img"));
        store.apply_files_t(snap(&[
            ("/m/a.yaml", two),
            ("/m/b.yaml", doc("other", "/img")),
        ]));
        // A syntax error in the first document: the parser sees no more.
        let typo = format!(
            "{}  hostname: [oops\n---\n{}",
            doc("web", "/img"),
            doc("db", "/img")
        );
        let c = store.apply_files_t(snap(&[
            ("/m/a.yaml", typo),
            ("/m/b.yaml", doc("other", "/img")),
        ]));
        for name in ["web", "db"] {
            let d = store.get(&h(name)).expect("still declared");
            assert_eq!(d.spec.unwrap().rootfs, "/img", "{name}: last good spec");
            assert_eq!(d.generation, 1);
            let err = d.error.expect("the file's error");
            assert_eq!(err.reason, "InvalidManifest");
            assert!(err.message.contains("/m/a.yaml"), "{}", err.message);
        }
        assert!(c.handles.contains(&h("web")) && c.handles.contains(&h("db")));
        assert!(!store.file_errors(Path::new("/m/a.yaml")).is_empty());

        // Fixed, but without db: db goes, as a removed document does.
        store.apply_files_t(snap(&[
            ("/m/a.yaml", doc("web", "/img")),
            ("/m/b.yaml", doc("other", "/img")),
        ]));
        assert_eq!(store.get(&h("web")).unwrap().error, None);
        assert!(store.get(&h("db")).is_none());
        // A removed file declares nothing, broken or not.
        store.apply_files_t(snap(&[("/m/a.yaml", "key: [oops\n".to_string())]));
        assert!(store.get(&h("web")).is_some(), "a.yaml is broken, not gone");
        assert!(store.get(&h("other")).is_none(), "b.yaml is gone");
    }

    #[test]
    fn never_valid_has_no_spec() {
        let store = Store::new();
        store.apply_files_t(snap(&[("/m/a.yaml", doc("web", "relative"))]));
        let d = store.get(&h("web")).unwrap();
        assert_eq!(d.spec, None);
        assert!(d.error.is_some());
    }

    #[test]
    fn admission_refuses_and_keeps_the_last_admitted_spec() {
        let store = Store::new();
        // Rootfs paths are resolved on this machine: real ones, all allowed.
        let policy = Admission {
            allowed_rootfs_paths: vec!["/".into()],
            ..Admission::default()
        };
        store.apply_files(snap(&[("/m/a.yaml", doc("web", "/tmp"))]), Some(&policy));
        let privileged = format!("{}  privileged: true\n", doc("web", "/var/tmp"));
        store.apply_files(snap(&[("/m/a.yaml", privileged)]), Some(&policy));
        let d = store.get(&h("web")).unwrap();
        assert_eq!(d.spec.unwrap().rootfs, "/tmp", "the admitted spec stays");
        let err = d.error.unwrap();
        assert_eq!(err.reason, "Forbidden");
        assert!(
            err.message
                .starts_with("/m/a.yaml: document 1: spec.privileged:"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_relist_replaces_one_kind_only() {
        let store = Store::new();
        store.apply_files_t(snap(&[("/m/a.yaml", doc("web", "/img"))]));
        let kube = |name: &str| Desired {
            handle: h(&format!("k8s_ns_{name}")),
            origin: Origin::Kube {
                namespace: "ns".into(),
                name: name.into(),
                uid: name.into(),
            },
            spec: None,
            generation: 1,
            error: None,
            deleting: false,
            finalizer: true,
        };
        store.replace_kind(SourceKind::Kube, vec![kube("a"), kube("b")]);
        let c = store.replace_kind(SourceKind::Kube, vec![kube("b"), kube("c")]);
        assert_eq!(c.handles, vec![h("k8s_ns_a"), h("k8s_ns_c")]);
        assert!(store.get(&h("web")).is_some(), "files untouched");
    }

    #[test]
    fn duplicate_names_first_by_path_wins() {
        let store = Store::new();
        let c = store.apply_files_t(snap(&[
            ("/m/a.yaml", doc("web", "/a")),
            ("/m/b.yaml", doc("web", "/b")),
        ]));
        assert_eq!(store.get(&h("web")).unwrap().spec.unwrap().rootfs, "/a");
        assert_eq!(c.files, vec![PathBuf::from("/m/b.yaml")]);
        let errs = store.file_errors(Path::new("/m/b.yaml"));
        assert_eq!(
            errs,
            vec![
                r#"/m/b.yaml: document 1: metadata.name: "web" is already declared in /m/a.yaml document 1"#
            ]
        );
    }

    #[test]
    fn errors_naming_no_container_belong_to_the_file() {
        let store = Store::new();
        let c = store.apply_files_t(snap(&[("/m/junk.yaml", "kind: [".to_string())]));
        assert_eq!(c.files, vec![PathBuf::from("/m/junk.yaml")]);
        assert_eq!(store.file_errors(Path::new("/m/junk.yaml")).len(), 1);
        let c = store.apply_files_t(snap(&[]));
        assert_eq!(
            c.files,
            vec![PathBuf::from("/m/junk.yaml")],
            "cleared errors are a change too"
        );
        assert!(store.file_errors(Path::new("/m/junk.yaml")).is_empty());
    }

    #[test]
    fn other_sources_are_untouched() {
        let store = Store::new();
        store.upsert(Desired {
            handle: h("k8s_ns_web"),
            origin: Origin::Kube {
                namespace: "ns".into(),
                name: "web".into(),
                uid: "u".into(),
            },
            spec: None,
            generation: 1,
            error: None,
            deleting: false,
            finalizer: false,
        });
        store.apply_files_t(snap(&[]));
        assert!(store.get(&h("k8s_ns_web")).is_some());
    }

    #[test]
    fn a_mirror_is_stale_only_when_someone_else_changed_it() {
        let m = Mirror {
            name: "web-node-1".into(),
            uid: "u1".into(),
            generation: 2,
            spec_hash: "ours".into(),
            stale: false,
        };
        let at = |generation, spec_hash| MirrorSight::At {
            generation,
            spec_hash,
        };
        // The event of our own apply, early (before its answer) or on time.
        assert!(!m.changed_by("u1", at(3, "ours")));
        assert!(!m.changed_by("u1", at(2, "ours")));
        // An event older than our last apply.
        assert!(!m.changed_by("u1", at(1, "older")));
        // Someone else's spec edit, or deletion.
        assert!(m.changed_by("u1", at(3, "theirs")));
        assert!(m.changed_by("u1", MirrorSight::Deleted));
        // Another object of the name: one we replaced, or one being made.
        assert!(!m.changed_by("u0", MirrorSight::Deleted));
        assert!(!Mirror::default().changed_by("u1", MirrorSight::Deleted));

        let store = Store::new();
        let handle = h("web");
        assert!(
            !store.mirror_seen(&handle, "u1", MirrorSight::Deleted),
            "none published"
        );
        store.set_mirror(&handle, Some(m.clone()));
        assert!(store.mirror_seen(&handle, "u1", at(3, "theirs")));
        assert!(store.mirror(&handle).unwrap().stale);
        store.set_mirror(&handle, None);
        assert_eq!(store.mirror(&handle), None);
    }
}
