//! Resolving a process's `user` (`uid`, `uid:gid`, or a name) to ids, from
//! the container's own /etc/passwd and /etc/group. Files are opened with
//! `openat2(RESOLVE_IN_ROOT)`, so a symlink in the image cannot make rundmc
//! read a host file. Parsing is pure.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use thiserror::Error;

use super::bundle::ExecUser;

/// Largest passwd or group file read.
const MAX_DB_BYTES: u64 = 4 << 20;

/// User resolution failures.
#[derive(Debug, Error)]
pub enum UserError {
    /// The name is in neither /etc/passwd of the rootfs.
    #[error("user {name:?} is not in {rootfs}/etc/passwd")]
    UnknownUser {
        /// The name.
        name: String,
        /// The rootfs searched.
        rootfs: PathBuf,
    },
    /// A database file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Resolve the user a process of `container` runs as: `runAsUser` over
/// `user`, then `runAsGroup` and `supplementalGroups` applied.
pub fn resolve_for(
    rootfs: &Path,
    user: Option<&str>,
    container: &crate::api::ContainerSpec,
) -> Result<ExecUser, UserError> {
    let resolved = match crate::api::secctx::ids(container).0 {
        Some(uid) => resolve(rootfs, Some(&uid.to_string()))?,
        None => resolve(rootfs, user)?,
    };
    Ok(resolved.with_context(container))
}

/// Resolve `user` (None means root) against the image mounted at `rootfs`.
pub fn resolve(rootfs: &Path, user: Option<&str>) -> Result<ExecUser, UserError> {
    let Some(user) = user else {
        return numeric(rootfs, 0, Some(0));
    };
    if let Some((Ok(uid), Ok(gid))) = user.split_once(':').map(|(u, g)| (u.parse(), g.parse())) {
        return numeric(rootfs, uid, Some(gid));
    }
    if let Ok(uid) = user.parse::<u32>() {
        return numeric(rootfs, uid, None);
    }
    let passwd = read_db(rootfs, "etc/passwd")?.unwrap_or_default();
    let entry = parse_passwd(&passwd)
        .find(|e| e.name == user)
        .ok_or_else(|| UserError::UnknownUser {
            name: user.to_string(),
            rootfs: rootfs.into(),
        })?;
    let group = read_db(rootfs, "etc/group")?.unwrap_or_default();
    Ok(ExecUser {
        uid: entry.uid,
        gid: entry.gid,
        additional_gids: supplementary_groups(&group, user, entry.gid),
        home: Some(entry.home.to_string()),
    })
}

/// A numeric user. Home, and the group when none is given, come from passwd
/// when the uid is listed there; otherwise home is `/` and the group 0, as
/// Docker does.
fn numeric(rootfs: &Path, uid: u32, gid: Option<u32>) -> Result<ExecUser, UserError> {
    let passwd = read_db(rootfs, "etc/passwd")?.unwrap_or_default();
    let entry = parse_passwd(&passwd).find(|e| e.uid == uid);
    let home = entry
        .as_ref()
        .map(|e| e.home.to_string())
        .unwrap_or_else(|| "/".into());
    let gid = gid.or(entry.map(|e| e.gid)).unwrap_or(0);
    Ok(ExecUser {
        uid,
        gid,
        additional_gids: Vec::new(),
        home: Some(home),
    })
}

/// Read `rel` inside `rootfs`, resolving symlinks as if `rootfs` were `/`.
/// A missing file is `None`.
fn read_db(rootfs: &Path, rel: &str) -> Result<Option<String>, UserError> {
    let path = rootfs.join(rel);
    let io_err = |source: io::Error| UserError::Io {
        path: path.clone(),
        source,
    };
    let root = File::open(rootfs).map_err(io_err)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = match openat2(&root, rel, how) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => return Ok(None),
        Err(e) => return Err(io_err(e.into())),
    };
    let mut text = String::new();
    File::from(fd)
        .take(MAX_DB_BYTES)
        .read_to_string(&mut text)
        .map_err(io_err)?;
    Ok(Some(text))
}

/// One /etc/passwd line.
#[derive(Debug, PartialEq, Eq)]
pub struct PasswdEntry<'a> {
    /// Login name.
    pub name: &'a str,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: &'a str,
}

/// Well-formed entries of a passwd file; malformed lines are skipped, as libc does.
pub fn parse_passwd(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

/// Groups in /etc/group that list `user` as a member, but its primary one.
pub fn supplementary_groups(text: &str, user: &str, primary: u32) -> Vec<u32> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let gid: u32 = f.get(2)?.parse().ok()?;
            let members = f.get(3)?;
            (gid != primary && members.split(',').any(|m| m == user)).then_some(gid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken\napp:x:1000:1001:app:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nwheel:x:10:root,app\naudio:x:29:app\n";

    #[test]
    fn parses_passwd_and_groups() {
        let entries: Vec<_> = parse_passwd(PASSWD).collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[1],
            PasswdEntry {
                name: "app",
                uid: 1000,
                gid: 1001,
                home: "/home/app"
            }
        );
        assert_eq!(supplementary_groups(GROUP, "app", 1001), vec![10, 29]);
        assert_eq!(supplementary_groups(GROUP, "nobody", 1), Vec::<u32>::new());
    }

    #[test]
    fn resolves_inside_the_rootfs_only() {
        let root = std::env::temp_dir().join(format!("rundmc-users-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), PASSWD).unwrap();
        // A symlink that points at the host's group file resolves inside the rootfs.
        std::os::unix::fs::symlink("/etc/group-in-image", root.join("etc/group")).unwrap();
        std::fs::write(root.join("etc/group-in-image"), GROUP).unwrap();

        let app = resolve(&root, Some("app")).unwrap();
        assert_eq!(
            (app.uid, app.gid, app.additional_gids.clone()),
            (1000, 1001, vec![10, 29])
        );
        assert_eq!(app.home.as_deref(), Some("/home/app"));
        let numeric = resolve(&root, Some("1000:5")).unwrap();
        assert_eq!((numeric.uid, numeric.gid), (1000, 5));
        assert_eq!(
            resolve(&root, Some("1000")).unwrap().gid,
            1001,
            "primary group from passwd"
        );
        assert_eq!(resolve(&root, None).unwrap().home.as_deref(), Some("/root"));
        assert!(matches!(
            resolve(&root, Some("ghost")),
            Err(UserError::UnknownUser { .. })
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
