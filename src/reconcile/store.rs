//! The desired store: what every source declares, keyed by handle and tagged
//! by the source it came from. It has one writer, [`Store::apply`], which
//! takes the sources' [`Update`]s in order (as kube-rs's reflector has one
//! writer); the controller reads it. Sources resolve and admit on their own
//! tasks (see [`crate::source::files`]): no path is looked up under its lock.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::api::Handle;
pub use crate::api::{Desired, SOURCE_LABEL, SourceKind};
use crate::source::{FileErrors, Update};

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
    file_errors: FileErrors,
    synced: HashSet<SourceKind>,
}

/// The store, written by one writer and read by workers.
#[derive(Debug, Default)]
pub struct Store {
    inner: RwLock<Inner>,
}

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

    /// Whether `handle` is declared by a source of `kind`.
    pub fn declared_by(&self, handle: &Handle, kind: SourceKind) -> bool {
        self.read()
            .entries
            .get(handle)
            .is_some_and(|d| d.origin.kind() == kind)
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

    /// Whether `kind` has delivered its first complete listing: until
    /// then, a container it made is never destroyed for being undeclared.
    pub fn is_synced(&self, kind: SourceKind) -> bool {
        self.read().synced.contains(&kind)
    }

    /// Apply one update from a source; what it changed. The store's only
    /// writer.
    pub fn apply(&self, update: Update) -> Changes {
        match update {
            Update::Listed {
                kind,
                declared,
                file_errors,
                ..
            } => self.listed(kind, declared, file_errors),
            Update::Declared { desired, .. } => self.upsert(*desired),
            Update::Undeclared { kind, handle, .. } => self.remove(kind, handle),
            Update::Seen(_) => Changes::default(),
        }
    }

    fn upsert(&self, desired: Desired) -> Changes {
        let mut inner = self.write();
        let handle = desired.handle.clone();
        let changed = inner.entries.get(&handle) != Some(&desired);
        inner.entries.insert(handle.clone(), desired);
        Changes {
            handles: if changed { vec![handle] } else { vec![] },
            files: vec![],
        }
    }

    fn remove(&self, kind: SourceKind, handle: Handle) -> Changes {
        let mut inner = self.write();
        if inner
            .entries
            .get(&handle)
            .is_none_or(|d| d.origin.kind() != kind)
        {
            return Changes::default();
        }
        inner.entries.remove(&handle);
        Changes {
            handles: vec![handle],
            files: vec![],
        }
    }

    /// Replace every declaration of `kind` with `entries` (a source's full
    /// listing), and its file errors; what it no longer declares is removed.
    /// Marks `kind` as listed.
    fn listed(&self, kind: SourceKind, entries: Vec<Desired>, file_errors: FileErrors) -> Changes {
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
        if kind == SourceKind::File {
            changes.files = changed_files(&inner.file_errors, &file_errors);
            inner.file_errors = file_errors;
        }
        inner.synced.insert(kind);
        changes
    }
}

/// The files whose errors differ between `old` and `new`, sorted.
fn changed_files(old: &FileErrors, new: &FileErrors) -> Vec<PathBuf> {
    let paths: HashSet<&PathBuf> = old.keys().chain(new.keys()).collect();
    let mut files: Vec<PathBuf> = paths
        .into_iter()
        .filter(|p| old.get(*p) != new.get(*p))
        .cloned()
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::api::Origin;
    use crate::source::admission::Admission;
    use crate::source::files::{FileSnapshot, resolve_files};
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

    /// The directory source's resolution (on its task), then the store's
    /// writer: what one scan of the directory does to the store.
    impl Store {
        fn apply_files(&self, snapshot: FileSnapshot, admission: Option<&Admission>) -> Changes {
            let previous: HashMap<Handle, Desired> = self
                .read()
                .entries
                .iter()
                .filter(|(_, d)| d.origin.kind() == SourceKind::File)
                .map(|(h, d)| (h.clone(), d.clone()))
                .collect();
            let (declared, file_errors) = resolve_files(&previous, snapshot, admission);
            self.apply(Update::Listed {
                kind: SourceKind::File,
                declared: declared.into_values().collect(),
                file_errors,
                seen: vec![],
            })
        }

        fn apply_files_t(&self, snapshot: FileSnapshot) -> Changes {
            self.apply_files(snapshot, None)
        }

        fn replace_kind(&self, kind: SourceKind, declared: Vec<Desired>) -> Changes {
            self.apply(Update::Listed {
                kind,
                declared,
                file_errors: FileErrors::new(),
                seen: vec![],
            })
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
        assert_eq!(err.reason.as_str(), "InvalidManifest");
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
            assert_eq!(err.reason.as_str(), "InvalidManifest");
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
        assert_eq!(err.reason.as_str(), "Forbidden");
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
    fn the_writer_marks_a_source_listed_and_removes_only_its_own() {
        let store = Store::new();
        assert!(!store.is_synced(SourceKind::File));
        store.apply_files_t(snap(&[("/m/a.yaml", doc("web", "/img"))]));
        assert!(store.is_synced(SourceKind::File) && !store.is_synced(SourceKind::Kube));
        assert!(store.declared_by(&h("web"), SourceKind::File));
        let c = store.apply(Update::Undeclared {
            kind: SourceKind::Kube,
            handle: h("web"),
            seen: vec![],
        });
        assert_eq!(c, Changes::default(), "not the Kubernetes source's");
        assert!(store.get(&h("web")).is_some());
        assert_eq!(store.apply(Update::Seen(vec![])), Changes::default());
    }
}
