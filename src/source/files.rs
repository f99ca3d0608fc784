//! The directory source's resolution and admission: a snapshot of the
//! manifest directory becomes declarations and file errors. It runs on the
//! directory source's task, before the store is touched, so a slow path
//! lookup of the admission policy stalls no worker. A declaration that turns
//! invalid or refused keeps its last good spec, so a typo never takes a
//! running service down.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::FileErrors;
use super::admission::Admission;
use super::manifest::{Manifest, ManifestError, file_handle};
use crate::api::{ContainerSpec, DeclError, DeclReason, Desired, Handle, Origin};

/// Every file of the manifest directory, sorted by path, with its documents.
pub type FileSnapshot = Vec<(PathBuf, Vec<Result<Manifest, ManifestError>>)>;

/// The declarations and file-level errors of a directory snapshot, given
/// what the directory declared before. The first document (by path, then
/// position) to claim a name wins.
pub fn resolve_files(
    previous: &HashMap<Handle, Desired>,
    snapshot: FileSnapshot,
    admission: Option<&Admission>,
) -> (HashMap<Handle, Desired>, FileErrors) {
    let mut entries: HashMap<Handle, Desired> = HashMap::new();
    let mut claims: HashMap<Handle, (PathBuf, usize)> = HashMap::new();
    let mut file_errors: FileErrors = BTreeMap::new();
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
            reason: DeclReason::InvalidManifest,
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
                reason: DeclReason::InvalidManifest,
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
                reason: DeclReason::Forbidden,
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
