//! Each container's root filesystem: an overlay whose lower layer is the
//! read-only image directory and whose upper and work directories live in
//! the container's depot directory, so that two containers on one image never
//! see each other's writes. The kernel calls are behind [`Mounter`].

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::statvfs::{FsFlags, statvfs};
use thiserror::Error;

use super::idmap;
use super::userns::IdRange;
use crate::mountinfo;

/// Rootfs failures.
#[derive(Debug, Error)]
pub enum RootfsError {
    /// mount(2) failed.
    #[error("mounting overlay of {lower} at {target}: {source}")]
    Mount {
        /// The image directory.
        lower: PathBuf,
        /// The mount point.
        target: PathBuf,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// umount(2) failed.
    #[error("unmounting {target}: {source}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// A path could not be examined.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// More layers than one page of mount options can name.
    #[error(
        "the overlay of {layers} layers needs {bytes} bytes of mount options; the kernel \
         takes {MAX_MOUNT_DATA}"
    )]
    OptionsTooLong {
        /// How many lower layers.
        layers: usize,
        /// How long the options were.
        bytes: usize,
    },
    /// A layer could not be idmapped for the container's user namespace
    /// (the kernel or its filesystem does not support idmapped mounts).
    #[error("idmapping {layer} at {target} for the user namespace {range}: {source}")]
    Idmap {
        /// The layer.
        layer: PathBuf,
        /// Where its clone was to go.
        target: PathBuf,
        /// The container's ids.
        range: IdRange,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A path overlayfs cannot take as a layer.
    #[error("{0}: overlay layer paths must not contain ',', ':' or '\\'")]
    UnsafePath(PathBuf),
}

/// The mount operations rundmc makes.
pub trait Mounter: Send + Sync + 'static {
    /// Mount an overlay of `lowers` (top-most first) with `upper`/`work`
    /// at `target`.
    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), RootfsError>;
    /// Mount each of `lowers` at `into/<index>` with its ids shifted into
    /// `range` (an idmapped mount), for an overlay of them; returns the
    /// mount points, in the same order. The layers on disk are untouched.
    fn idmap_layers(
        &self,
        lowers: &[PathBuf],
        into: &Path,
        range: IdRange,
    ) -> Result<Vec<PathBuf>, RootfsError>;
    /// Detach whatever is mounted at `target`; nothing mounted is success.
    fn unmount(&self, target: &Path) -> Result<(), RootfsError>;
    /// Mount what is mounted at `source` at `target` too (a recursive bind).
    fn bind(&self, source: &Path, target: &Path) -> Result<(), RootfsError>;
    /// True when something is mounted exactly at `target`.
    fn is_mounted(&self, target: &Path) -> Result<bool, RootfsError>;

    /// [`Mounter::unmount`], then make sure nothing is left mounted at
    /// `target` (EBUSY when something is): what must hold before a tree is
    /// removed, which would otherwise recurse into a mounted image.
    fn unmount_fully(&self, target: &Path) -> Result<(), RootfsError> {
        self.unmount(target)?;
        match self.is_mounted(target)? {
            true => Err(RootfsError::Unmount {
                target: target.into(),
                source: nix::Error::EBUSY,
            }),
            false => Ok(()),
        }
    }
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelMounter;

impl Mounter for KernelMounter {
    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), RootfsError> {
        let data = overlay_options(lowers, upper, work)?;
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|source| RootfsError::Mount {
            lower: lowers.first().cloned().unwrap_or_default(),
            target: target.into(),
            source,
        })
    }

    fn idmap_layers(
        &self,
        lowers: &[PathBuf],
        into: &Path,
        range: IdRange,
    ) -> Result<Vec<PathBuf>, RootfsError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RootfsError::Io { path, source }
        };
        let userns = idmap::userns_fd(range).map_err(io_err(Path::new("/proc/self/ns/user")))?;
        let mut points = Vec::with_capacity(lowers.len());
        for (i, layer) in lowers.iter().enumerate() {
            let target = into.join(i.to_string());
            std::fs::create_dir_all(&target).map_err(io_err(&target))?;
            idmap::mount_idmapped(layer, &target, userns.as_fd()).map_err(|source| {
                RootfsError::Idmap {
                    layer: layer.clone(),
                    target: target.clone(),
                    range,
                    source,
                }
            })?;
            points.push(target);
        }
        Ok(points)
    }

    fn unmount(&self, target: &Path) -> Result<(), RootfsError> {
        match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
            Err(source) => Err(RootfsError::Unmount {
                target: target.into(),
                source,
            }),
        }
    }

    fn bind(&self, source: &Path, target: &Path) -> Result<(), RootfsError> {
        nix::mount::mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|source_err| RootfsError::Mount {
            lower: source.into(),
            target: target.into(),
            source: source_err,
        })
    }

    fn is_mounted(&self, target: &Path) -> Result<bool, RootfsError> {
        // Two statx calls, where reading mountinfo costs time in proportion
        // to the mounts on the machine (one overlay per container).
        let parent = target.parent().unwrap_or(target);
        match (mount_id(target), mount_id(parent)) {
            (Ok(Some(own)), Ok(Some(above))) => return Ok(own != above),
            (Err(e), _) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            _ => {}
        }
        let text = mountinfo::read().map_err(|source| RootfsError::Io {
            path: "/proc/self/mountinfo".into(),
            source,
        })?;
        Ok(mountinfo::parse(&text).any(|m| m.mount_point == target))
    }
}

/// The id of the mount `path` is on (not following a final symlink);
/// `None` when the kernel does not report mount ids (before 5.8).
fn mount_id(path: &Path) -> io::Result<Option<u64>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statx is plain data; zeroed is a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a statx buffer to fill.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_MNT_ID,
            &mut st,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.stx_mask & libc::STATX_MNT_ID != 0).then_some(st.stx_mnt_id))
}

/// The most mount data the kernel takes: one page, with its NUL.
pub const MAX_MOUNT_DATA: usize = 4095;

/// `lowerdir=a:b,upperdir=..,workdir=..`, refusing paths overlayfs would
/// misparse and options longer than the kernel takes.
pub fn overlay_options(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<String, RootfsError> {
    for p in lowers.iter().map(PathBuf::as_path).chain([upper, work]) {
        if p.to_string_lossy().contains([',', ':', '\\']) {
            return Err(RootfsError::UnsafePath(p.into()));
        }
    }
    let lower: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    match data.len() > MAX_MOUNT_DATA {
        true => Err(RootfsError::OptionsTooLong {
            layers: lowers.len(),
            bytes: data.len(),
        }),
        false => Ok(data),
    }
}

/// The flags of the filesystem holding `source` that a bind mount of it must
/// keep: a bind must never lift the host's nosuid, nodev or noexec.
pub fn inherited_bind_flags(source: &Path) -> Result<Vec<String>, RootfsError> {
    let st = statvfs(source).map_err(|e| RootfsError::Io {
        path: source.into(),
        source: e.into(),
    })?;
    let flags = st.flags();
    Ok([
        (FsFlags::ST_NOSUID, "nosuid"),
        (FsFlags::ST_NODEV, "nodev"),
        (FsFlags::ST_NOEXEC, "noexec"),
    ]
    .into_iter()
    .filter(|(f, _)| flags.contains(*f))
    .map(|(_, name)| name.to_string())
    .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_refuse_separators() {
        let ok = overlay_options(
            &["/img".into()],
            Path::new("/d/upper"),
            Path::new("/d/work"),
        )
        .unwrap();
        assert_eq!(ok, "lowerdir=/img,upperdir=/d/upper,workdir=/d/work");
        assert!(matches!(
            overlay_options(&["/a,b".into()], Path::new("/u"), Path::new("/w")),
            Err(RootfsError::UnsafePath(_))
        ));
        assert!(overlay_options(&["/a:b".into()], Path::new("/u"), Path::new("/w")).is_err());
        let two = overlay_options(
            &["/l/2".into(), "/l/1".into()],
            Path::new("/u"),
            Path::new("/w"),
        );
        assert_eq!(two.unwrap(), "lowerdir=/l/2:/l/1,upperdir=/u,workdir=/w");
        let deep: Vec<PathBuf> = (0..200)
            .map(|i| format!("/var/lib/rundmc/images/l/{i:026}").into())
            .collect();
        assert!(matches!(
            overlay_options(&deep, Path::new("/u"), Path::new("/w")),
            Err(RootfsError::OptionsTooLong { layers: 200, .. })
        ));
    }

    #[test]
    fn bind_flags_follow_the_source_mount() {
        let dir = std::env::temp_dir().join(format!("rundmc-bindflags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(inherited_bind_flags(&dir).unwrap(), Vec::<String>::new());
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        assert!(!KernelMounter.is_mounted(&dir).unwrap());
        nix::mount::mount(Some("tmpfs"), &dir, Some("tmpfs"), flags, None::<&str>).unwrap();
        let got = inherited_bind_flags(&dir);
        let mounted = KernelMounter.is_mounted(&dir).unwrap();
        KernelMounter.unmount(&dir).unwrap();
        assert!(mounted, "a tmpfs on it");
        assert!(!KernelMounter.is_mounted(&dir).unwrap());
        assert!(!KernelMounter.is_mounted(&dir.join("missing")).unwrap());
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(got.unwrap(), vec!["nosuid", "nodev", "noexec"]);
    }
}
