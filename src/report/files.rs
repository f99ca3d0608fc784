//! Status files for file-sourced containers: `<state>/status/<name>.yaml`,
//! written atomically and only when the status changed. Errors of a manifest
//! that name no container go to `<state>/status/files/<file name>.yaml`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::api::ContainerStatus;
use crate::fsutil::{self, Durability, FsError};
use crate::sync::lock;

/// The status file of one container: its status, and where it was declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusFile {
    /// The manifest file and document.
    pub source: String,
    /// The status, as a custom resource would carry it.
    pub status: ContainerStatus,
}

/// The status file of a manifest file's own errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileErrorsFile {
    /// The manifest file.
    pub source: String,
    /// Every error that names no container.
    pub errors: Vec<String>,
}

/// Writer of status files, remembering what it wrote.
#[derive(Debug)]
pub struct StatusFiles {
    dir: PathBuf,
    written: Mutex<HashMap<String, StatusFile>>,
}

impl StatusFiles {
    /// Status files under `dir` (created if needed). The temporary files
    /// of writes a killed agent left go: the caller holds the state
    /// directory's lock, so no other writer is at work.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, FsError> {
        let dir = dir.into();
        std::fs::create_dir_all(dir.join("files")).map_err(fsutil::at(&dir))?;
        let stale =
            fsutil::remove_stale_temps(&dir) + fsutil::remove_stale_temps(&dir.join("files"));
        if stale > 0 {
            tracing::info!(dir = %dir.display(), count = stale, "removed temporary files a killed agent left");
        }
        Ok(Self {
            dir,
            written: Mutex::new(HashMap::new()),
        })
    }

    /// Path of a container's status file.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.yaml"))
    }

    /// The status last written for `name` (read from disk the first time,
    /// so a restarted agent does not rewrite what is already there).
    pub fn previous(&self, name: &str) -> Option<ContainerStatus> {
        let mut written = lock(&self.written);
        if let Some(f) = written.get(name) {
            return Some(f.status.clone());
        }
        let text = std::fs::read_to_string(self.path(name)).ok()?;
        let file: StatusFile = serde_yaml::from_str(&text).ok()?;
        let status = file.status.clone();
        written.insert(name.to_string(), file);
        Some(status)
    }

    /// Write `status` unless it is what the file already holds; true when written.
    pub fn write(
        &self,
        name: &str,
        source: &str,
        status: &ContainerStatus,
    ) -> Result<bool, FsError> {
        let file = StatusFile {
            source: source.to_string(),
            status: status.clone(),
        };
        let _ = self.previous(name);
        let mut written = lock(&self.written);
        if written.get(name) == Some(&file) {
            return Ok(false);
        }
        let path = self.path(name);
        let yaml = serde_yaml::to_string(&file).unwrap_or_default();
        // Rebuilt by the next agent from what it observes: no fsync needed.
        fsutil::write_atomic_with(&path, yaml.as_bytes(), Durability::Volatile)?;
        written.insert(name.to_string(), file);
        Ok(true)
    }

    /// Remove a container's status file.
    pub fn remove(&self, name: &str) -> Result<(), FsError> {
        lock(&self.written).remove(name);
        fsutil::remove_file_if_exists(&self.path(name))
    }

    /// Write (or, with no errors, remove) the status file of a manifest file.
    pub fn write_file_errors(&self, manifest: &Path, errors: &[String]) -> Result<(), FsError> {
        let name = manifest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = self.dir.join("files").join(format!("{name}.yaml"));
        if errors.is_empty() {
            return fsutil::remove_file_if_exists(&path);
        }
        let file = FileErrorsFile {
            source: manifest.display().to_string(),
            errors: errors.to_vec(),
        };
        let yaml = serde_yaml::to_string(&file).unwrap_or_default();
        fsutil::write_atomic_with(&path, yaml.as_bytes(), Durability::Volatile)
    }

    /// The names of every container status file on disk: after a restart,
    /// these are checked against what is declared, so a status of a
    /// declaration that went while the agent was down is removed too.
    pub fn names(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".yaml").map(str::to_string)
            })
            .collect()
    }

    /// Remove the file-error statuses of manifest files other than those
    /// named in `keep` (file names): errors of a file that is gone, or that
    /// was fixed, while the agent was down.
    pub fn prune_file_errors(&self, keep: &HashSet<String>) {
        let dir = self.dir.join("files");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(manifest) = name.strip_suffix(".yaml") else {
                continue;
            };
            if !keep.contains(manifest)
                && let Err(err) = fsutil::remove_file_if_exists(&e.path())
            {
                tracing::warn!(error = %err, "cannot remove a stale file status");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;

    #[test]
    fn writes_only_changes_and_survives_restart() {
        let dir = std::env::temp_dir().join(format!("rundmc-statusfiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = StatusFiles::open(&dir).unwrap();
        let st = ContainerStatus {
            phase: Some(Phase::Running),
            ..Default::default()
        };
        assert!(files.write("web", "/m/web.yaml#1", &st).unwrap());
        assert!(
            !files.write("web", "/m/web.yaml#1", &st).unwrap(),
            "unchanged: not written"
        );
        let again = StatusFiles::open(&dir).unwrap();
        assert_eq!(again.previous("web"), Some(st.clone()));
        assert!(
            !again.write("web", "/m/web.yaml#1", &st).unwrap(),
            "a restarted writer does not rewrite"
        );
        let text = std::fs::read_to_string(files.path("web")).unwrap();
        assert!(text.contains("phase: Running"), "{text}");

        files
            .write_file_errors(Path::new("/m/junk.yaml"), &["bad".into()])
            .unwrap();
        assert!(dir.join("files/junk.yaml.yaml").is_file());
        files
            .write_file_errors(Path::new("/m/junk.yaml"), &[])
            .unwrap();
        assert!(!dir.join("files/junk.yaml.yaml").exists());

        for junk in ["gone.yaml", "kept.yml"] {
            files
                .write_file_errors(&Path::new("/m").join(junk), &["bad".into()])
                .unwrap();
        }
        files.prune_file_errors(&HashSet::from(["kept.yml".to_string()]));
        assert!(!dir.join("files/gone.yaml.yaml").exists());
        assert!(dir.join("files/kept.yml.yaml").is_file());
        assert_eq!(files.names(), vec!["web".to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
