//! The directory source: every `*.yaml`/`*.yml` file of one directory,
//! watched with inotify (through notify) and relisted in full periodically
//! as a safety net, as kubelet's file source does. Each scan yields the whole
//! directory; files whose size, mtime and inode did not change are not
//! parsed again. Each scan is resolved and admitted here (see [`super::files`]),
//! then sent to the store's writer as one [`Update::Listed`].

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::admission::Admission;
use super::files::{FileSnapshot, resolve_files};
use super::manifest::{self, Manifest, ManifestError};
use super::{FileErrors, Update};
use crate::api::{Desired, Handle, SourceKind};

/// Files larger than this are refused.
pub const MAX_MANIFEST_BYTES: u64 = 10 << 20;

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

/// The directory source.
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    relist: Duration,
    admission: Option<Admission>,
    cache: HashMap<PathBuf, (FileKey, Vec<Result<Manifest, ManifestError>>)>,
    /// What the last scan declared, to resolve the next one against.
    declared: HashMap<Handle, Desired>,
    /// The file errors of the last scan.
    file_errors: FileErrors,
}

/// Whether a directory entry name is a manifest: `*.yaml` or `*.yml`, and
/// not a dotfile or an editor's temp or backup file.
pub fn is_manifest_name(name: &str) -> bool {
    let temp = name.starts_with('.') || name.starts_with('#') || name.ends_with('~');
    !temp && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

impl DirSource {
    /// Watch `dir`, relisting every `relist`.
    pub fn new(dir: impl Into<PathBuf>, relist: Duration) -> Self {
        Self {
            dir: dir.into(),
            relist,
            admission: None,
            cache: HashMap::new(),
            declared: HashMap::new(),
            file_errors: FileErrors::new(),
        }
    }

    /// Hold the directory's manifests to the node's admission policy too
    /// (by default the directory is trusted).
    pub fn with_admission(mut self, admission: Option<Admission>) -> Self {
        self.admission = admission;
        self
    }

    /// Read every manifest in the directory, sorted by path. Unreadable or
    /// oversized files become errors on that file. `None` when the
    /// directory cannot be listed (other than for not existing, which
    /// declares nothing, as kubelet reads a missing static pod path): what
    /// it declares is then unknown, and must not read as nothing.
    pub fn scan(&mut self) -> Option<FileSnapshot> {
        let mut paths: Vec<(PathBuf, Entry)> = match fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .flatten()
                .filter(|e| is_manifest_name(&e.file_name().to_string_lossy()))
                .filter_map(|e| {
                    let path = e.path();
                    let entry = Entry::of(&path)?;
                    Some((path, entry))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(dir = %self.dir.display(), "the manifest directory does not exist: it declares nothing");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the manifest directory; keeping what it declared");
                return None;
            }
        };
        paths.sort_by(|a, b| a.0.cmp(&b.0));
        let mut fresh = HashMap::with_capacity(paths.len());
        let mut snapshot = Vec::with_capacity(paths.len());
        for (path, entry) in paths {
            let meta = match entry {
                Entry::File(meta) => meta,
                Entry::Unreadable(why) => {
                    // Not cached: it is looked at again on every scan.
                    snapshot.push((path.clone(), file_error(&path, why)));
                    continue;
                }
            };
            let key = FileKey {
                ino: meta.ino(),
                size: meta.size(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            };
            let docs = match self.cache.remove(&path) {
                Some((k, docs)) if k == key => docs,
                _ => read_manifest(&path, meta.size()),
            };
            snapshot.push((path.clone(), docs.clone()));
            fresh.insert(path, (key, docs));
        }
        self.cache = fresh;
        Some(snapshot)
    }

    /// Scan now, then on every change in the directory and every relist
    /// period; send each scan that declares something new (and the first).
    pub async fn run(mut self, updates: mpsc::Sender<Update>) {
        if let Err(e) = fs::create_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot create the manifest directory");
        }
        let (tx, mut events) = mpsc::unbounded_channel::<()>();
        let _watcher = watch(&self.dir, tx);
        let mut relist = tokio::time::interval(self.relist);
        relist.tick().await;
        // The first listing is sent only once one succeeds.
        let mut listed = false;
        loop {
            if let Some(update) = self.scan().and_then(|s| self.resolve(s, !listed)) {
                listed = true;
                if updates.send(update).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                event = events.recv() => {
                    if event.is_none() { return; }
                    // Everything that arrived meanwhile is covered by the next scan.
                    while events.try_recv().is_ok() {}
                }
                _ = relist.tick() => {}
            }
        }
    }

    /// Resolve and admit a scan against the last one (outside any lock):
    /// the update to send, `None` when it declares nothing new and need
    /// not be sent (`always`: send it anyway).
    pub fn resolve(&mut self, snapshot: FileSnapshot, always: bool) -> Option<Update> {
        let (declared, file_errors) =
            resolve_files(&self.declared, snapshot, self.admission.as_ref());
        if !always && declared == self.declared && file_errors == self.file_errors {
            return None;
        }
        self.declared = declared;
        self.file_errors = file_errors;
        Some(Update::Listed {
            kind: SourceKind::File,
            declared: self.declared.values().cloned().collect(),
            file_errors: self.file_errors.clone(),
            seen: Vec::new(),
        })
    }
}

/// What a directory entry with a manifest's name is.
#[derive(Debug)]
enum Entry {
    /// A regular file, or a symlink to one.
    File(fs::Metadata),
    /// It exists but cannot be read as a regular file: a dangling symlink,
    /// a symlink loop, a FIFO, a socket, a device, or one whose metadata
    /// cannot be read. It is an error on that file, which keeps declaring
    /// what it declared: it was not deleted.
    Unreadable(String),
}

impl Entry {
    /// Look at `path`, following symlinks. `None` for what is not a
    /// manifest at all: a directory, or an entry gone since the listing.
    fn of(path: &Path) -> Option<Entry> {
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) => {
                // Gone since the listing (neither it nor a link left): deleted.
                let link = fs::symlink_metadata(path).ok()?;
                let what = if link.file_type().is_symlink() {
                    "a symlink that leads nowhere readable"
                } else {
                    "unreadable"
                };
                return Some(Entry::Unreadable(format!("{what}: {e}")));
            }
        };
        let kind = meta.file_type();
        if kind.is_file() {
            Some(Entry::File(meta))
        } else if kind.is_dir() {
            None
        } else {
            Some(Entry::Unreadable(format!(
                "not a regular file but {}",
                describe(kind)
            )))
        }
    }
}

/// A non-regular, non-directory file type, in words.
fn describe(kind: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "a special file"
    }
}

/// One error that belongs to the whole file.
fn file_error(path: &Path, message: String) -> Vec<Result<Manifest, ManifestError>> {
    vec![Err(ManifestError {
        path: path.into(),
        document: 0,
        line: None,
        field: None,
        message,
        name: None,
    })]
}

/// Read and parse one file, refusing oversized ones. Opened without
/// blocking, and only read when the opened file is regular: a FIFO swapped
/// in after the listing must not hang the source.
fn read_manifest(path: &Path, size: u64) -> Vec<Result<Manifest, ManifestError>> {
    use std::os::unix::fs::OpenOptionsExt;
    if size > MAX_MANIFEST_BYTES {
        return file_error(
            path,
            format!("{size} bytes is over the {MAX_MANIFEST_BYTES}-byte limit for a manifest"),
        );
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    let file = match file.and_then(|f| f.metadata().map(|m| (f, m))) {
        Ok((f, m)) if m.is_file() => f,
        Ok((_, m)) => {
            let why = format!("not a regular file but {}", describe(m.file_type()));
            return file_error(path, why);
        }
        Err(e) => return file_error(path, format!("cannot read: {e}")),
    };
    let mut text = String::new();
    match file.take(MAX_MANIFEST_BYTES + 1).read_to_string(&mut text) {
        Ok(_) => manifest::parse(path, &text),
        Err(e) => file_error(path, format!("cannot read: {e}")),
    }
}

/// Start an inotify watch on `dir` that pokes `tx` on every event that can
/// change what the directory declares. Writes in progress are skipped: the
/// close that ends them is the event.
fn watch(dir: &Path, tx: mpsc::UnboundedSender<()>) -> Option<RecommendedWatcher> {
    let handler = move |res: notify::Result<Event>| {
        let relevant = match res {
            Ok(ev) => is_relevant(&ev),
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(());
        }
    };
    match notify::recommended_watcher(handler)
        .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w))
    {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the manifest directory; relisting only");
            None
        }
    }
}

/// Whether an event can change what the directory declares. Events that
/// name only files that are not manifests are not: an atomic writer's temp
/// file (`.web.yaml.tmp`) makes three (create, close, rename away), and each
/// would cost a scan of the whole directory. A rename counts when either of
/// its names is a manifest's; an event naming no file (a queue overflow)
/// always counts.
fn is_relevant(ev: &Event) -> bool {
    if ev.need_rescan() {
        return true;
    }
    let kind = matches!(
        ev.kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Modify(ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    );
    let names_a_manifest = ev.paths.is_empty()
        || ev.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| is_manifest_name(&n.to_string_lossy()))
        });
    kind && names_a_manifest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names() {
        for yes in ["web.yaml", "a.b.yml", "x-1.yaml"] {
            assert!(is_manifest_name(yes), "{yes}");
        }
        for no in [
            ".web.yaml",
            ".web.yaml.swp",
            "web.yaml~",
            "#web.yaml#",
            "web.json",
            "web.yaml.tmp",
            "README",
        ] {
            assert!(!is_manifest_name(no), "{no}");
        }
    }

    #[test]
    fn only_events_naming_a_manifest_are_relevant() {
        use notify::event::{CreateKind, Flag, RenameMode};
        let ev = |kind: EventKind, paths: &[&str]| Event {
            kind,
            paths: paths.iter().map(PathBuf::from).collect(),
            attrs: Default::default(),
        };
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let rename = |m| EventKind::Modify(ModifyKind::Name(m));
        let create = EventKind::Create(CreateKind::File);
        assert!(!is_relevant(&ev(create, &["/m/.web.yaml.tmp"])));
        assert!(!is_relevant(&ev(close, &["/m/.web.yaml.tmp"])));
        assert!(!is_relevant(&ev(
            rename(RenameMode::From),
            &["/m/.web.yaml.tmp"]
        )));
        assert!(is_relevant(&ev(rename(RenameMode::To), &["/m/web.yaml"])));
        assert!(is_relevant(&ev(
            rename(RenameMode::Both),
            &["/m/.web.yaml.tmp", "/m/web.yaml"]
        )));
        assert!(is_relevant(&ev(rename(RenameMode::From), &["/m/web.yml"])));
        assert!(is_relevant(&ev(close, &["/m/web.yaml"])));
        assert!(is_relevant(&ev(
            EventKind::Remove(notify::event::RemoveKind::File),
            &["/m/web.yaml"]
        )));
        assert!(!is_relevant(&ev(
            EventKind::Access(AccessKind::Read),
            &["/m/web.yaml"]
        )));
        assert!(is_relevant(&ev(create, &[])), "no path: cannot tell");
        let overflow = ev(EventKind::Other, &[]).set_flag(Flag::Rescan);
        assert!(is_relevant(&overflow));
    }

    #[test]
    fn scan_reads_sorted_skips_junk_and_caches() {
        let dir = std::env::temp_dir().join(format!("rundmc-dirsrc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub.yaml")).unwrap();
        let doc = |n: &str| {
            format!(
                "apiVersion: rundmc.io/v1alpha1\nkind: Container\nmetadata:\n  name: {n}\nspec:\n  rootfs: /img\n"
            )
        };
        fs::write(dir.join("b.yaml"), doc("b")).unwrap();
        fs::write(dir.join("a.yml"), doc("a")).unwrap();
        fs::write(dir.join(".hidden.yaml"), doc("h")).unwrap();
        fs::write(
            dir.join("big.yaml"),
            vec![b'#'; (MAX_MANIFEST_BYTES + 1) as usize],
        )
        .unwrap();
        let mut src = DirSource::new(&dir, Duration::from_secs(20));
        let snap = src.scan().unwrap();
        let names: Vec<_> = snap
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.yml", "b.yaml", "big.yaml"]);
        let big = snap[2].1[0].as_ref().unwrap_err();
        assert!(
            big.to_string().contains("over the 10485760-byte limit"),
            "{big}"
        );
        assert_eq!(src.scan(), Some(snap), "a second scan gives the same");

        // A directory that cannot be listed declares something unknown; a
        // missing one declares nothing.
        let not_a_dir = dir.join("b.yaml");
        assert_eq!(
            DirSource::new(&not_a_dir, Duration::from_secs(20)).scan(),
            None
        );
        let missing = dir.join("missing");
        assert_eq!(
            DirSource::new(&missing, Duration::from_secs(20)).scan(),
            Some(vec![])
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn entries_that_cannot_be_read_are_errors_on_their_file() {
        let dir = std::env::temp_dir().join(format!("rundmc-dirsrc-odd-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling.yaml")).unwrap();
        std::os::unix::fs::symlink(dir.join("loop.yaml"), dir.join("loop.yaml")).unwrap();
        let snap = DirSource::new(&dir, Duration::from_secs(20))
            .scan()
            .unwrap();
        let errors: Vec<String> = snap
            .iter()
            .map(|(_, docs)| docs[0].as_ref().unwrap_err().to_string())
            .collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("dangling.yaml: a symlink"), "{errors:?}");
        assert!(errors[1].contains("fifo.yaml: not a regular file but a FIFO"));
        assert!(errors[2].contains("loop.yaml: a symlink"), "{errors:?}");
        // A FIFO that turns up after the listing is not read either.
        let late = read_manifest(&fifo, 0);
        assert!(late[0].as_ref().unwrap_err().message.contains("FIFO"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_scan_is_resolved_here_and_sent_only_when_it_declares_something_new() {
        let doc = |rootfs: &str| {
            format!(
                "apiVersion: rundmc.io/v1alpha1\nkind: Container\nmetadata:\n  name: web\nspec:\n  rootfs: {rootfs}\n"
            )
        };
        let snap = |rootfs: &str| {
            let path = PathBuf::from("/m/a.yaml");
            vec![(path.clone(), manifest::parse(&path, &doc(rootfs)))]
        };
        let mut src = DirSource::new("/m", Duration::from_secs(20));
        assert!(
            src.resolve(Vec::new(), true).is_some(),
            "the first, empty or not"
        );
        let Some(Update::Listed { declared, .. }) = src.resolve(snap("/img"), false) else {
            panic!("a new declaration is sent")
        };
        assert_eq!(declared[0].generation, 1);
        assert_eq!(src.resolve(snap("/img"), false), None, "nothing new");
        // Invalid now: the last good spec, which the source keeps itself.
        let Some(Update::Listed { declared, .. }) = src.resolve(snap("relative"), false) else {
            panic!("an error is news")
        };
        assert_eq!(declared[0].spec.as_ref().unwrap().rootfs, "/img");
        assert!(declared[0].error.is_some());
    }
}
