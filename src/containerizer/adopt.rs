//! Containers an earlier version made, with their OCI bundle inside the
//! depot directory, adopted into the bundle root at start without
//! restarting anything: the bundle directory is made, `config.json` copied,
//! the running rootfs bind-mounted at the bundle's mount point (the overlay
//! itself cannot move: its parent mount is shared) and `init.sock` linked.
//! From then on exec, probes, copies and destroy find everything where
//! they look for it; destroy unmounts both mount points
//! ([`BundlePaths::rootfs_mounts`]).
//!
//! Process directories moved too: an earlier version kept them in the
//! depot, where the supervisors it started still write. A bundle without a
//! `processes` directory gets a link to the depot's, so those processes are
//! found, signalled and logged as before, and the container's later
//! processes live there too until it is made again.
//!
//! Owns only that; it must not touch the runtime or any process.

use std::fs;
use std::path::Path;

use super::depot::{BundlePaths, PEAS_DIR};
use super::rootfs::Mounter;
use super::{Containerizer, ContainerizerError, ErrorKind, Result};
use crate::api::Handle;
use crate::fsutil::FsError;
use crate::runtime::OciRuntime;

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// Adopt every container (and pea) whose bundle is still in its depot
    /// directory; returns how many. Nothing to do without a bundle root.
    pub fn adopt_earlier_layout(&self) -> Result<usize> {
        if !self.depot.has_bundle_root() {
            return Ok(0);
        }
        let mut adopted = 0;
        for entry in self.depot.entries()? {
            let paths = self.depot.paths(&entry.handle);
            let bundle = self.adopt(&entry.handle, &paths)?;
            let processes = self.adopt_processes(&entry.handle, &paths)?;
            adopted += usize::from(bundle || processes);
            let peas = fs::read_dir(paths.dir.join(PEAS_DIR))
                .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()))
                .into_iter()
                .flatten();
            for name in peas.collect::<Vec<_>>() {
                adopted += usize::from(self.adopt(&entry.handle, &paths.pea(&name))?);
            }
        }
        Ok(adopted)
    }

    /// Links the bundle's `processes` to the depot's when the bundle has
    /// none and the depot does; false when there is nothing to link (no
    /// bundle: a reboot took it, and the container is made again).
    fn adopt_processes(&self, handle: &Handle, paths: &BundlePaths) -> Result<bool> {
        let (link, old) = (paths.processes(), paths.process_logs());
        if link == old
            || fs::symlink_metadata(&link).is_ok()
            || !paths.bundle.is_dir()
            || !old.is_dir()
        {
            return Ok(false);
        }
        std::os::unix::fs::symlink(&old, &link).map_err(|e| {
            ContainerizerError::at(
                handle,
                ErrorKind::Fs {
                    source: FsError::new(&link, e),
                },
            )
        })?;
        tracing::info!(%handle, processes = %old.display(),
            "adopted process directories an earlier version kept in the depot");
        Ok(true)
    }

    /// One bundle; false when it is not of the earlier layout. Each step is
    /// skipped when done, so a crash half-way leaves what this finishes.
    fn adopt(&self, handle: &Handle, paths: &BundlePaths) -> Result<bool> {
        let old_config = paths.dir.join("config.json");
        if !old_config.is_file() || paths.config().exists() {
            return Ok(false);
        }
        let fs_err = |path: &Path| {
            let path = path.to_path_buf();
            move |e| {
                ContainerizerError::at(
                    handle,
                    ErrorKind::Fs {
                        source: FsError::new(path, e),
                    },
                )
            }
        };
        let rootfs_err = |source| ContainerizerError::at(handle, ErrorKind::Rootfs { source });
        let (old_rootfs, rootfs) = (paths.dir.join("rootfs"), paths.rootfs());
        fs::create_dir_all(&rootfs).map_err(fs_err(&rootfs))?;
        if self.mounter.is_mounted(&old_rootfs).map_err(rootfs_err)?
            && !self.mounter.is_mounted(&rootfs).map_err(rootfs_err)?
        {
            self.mounter
                .bind(&old_rootfs, &rootfs)
                .map_err(rootfs_err)?;
        }
        let (old_socket, socket) = (paths.dir.join("init.sock"), paths.init_socket());
        if old_socket.exists() && fs::symlink_metadata(&socket).is_err() {
            std::os::unix::fs::symlink(&old_socket, &socket).map_err(fs_err(&socket))?;
        }
        // Last: a crash before it leaves a bundle this adopts again.
        fs::copy(&old_config, paths.config()).map_err(fs_err(&paths.config()))?;
        tracing::info!(%handle, bundle = %paths.bundle.display(),
            "adopted a bundle an earlier version made in the depot");
        Ok(true)
    }
}
