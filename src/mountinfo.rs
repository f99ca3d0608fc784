//! `/proc/self/mountinfo`, parsed: which filesystem is mounted where. The
//! rootfs room asks whether an overlay is mounted; the cgroup room asks
//! where each cgroup hierarchy is.

use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted (octal escapes decoded).
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `overlay`, `cgroup`, `cgroup2`.
    pub fstype: String,
    /// Per-superblock options, e.g. `rw,memory` for a v1 cgroup.
    pub super_options: String,
}

/// Every well-formed entry of mountinfo `text`.
pub fn parse(text: &str) -> impl Iterator<Item = MountEntry> + '_ {
    text.lines().filter_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mount_point = unescape(pre.split(' ').nth(4)?);
        let mut post = post.split(' ');
        let fstype = post.next()?.to_string();
        let super_options = post.nth(1).unwrap_or("").to_string();
        Some(MountEntry {
            mount_point,
            fstype,
            super_options,
        })
    })
}

/// The current process's mount table.
pub fn read() -> std::io::Result<String> {
    std::fs::read_to_string(Path::new("/proc/self/mountinfo"))
}

/// Mountinfo escapes space, tab, newline and backslash as `\NNN` octal.
fn unescape(s: &str) -> PathBuf {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok());
        match (bytes[i], octal.and_then(|d| u8::from_str_radix(d, 8).ok())) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_types_and_options() {
        let text = "22 1 0:21 / /proc rw - proc proc rw\n\
                    35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                    90 22 0:50 / /var/lib/rundmc/depot/web/rootfs rw - overlay overlay rw,lowerdir=/img\n\
                    91 22 0:51 / /mnt/with\\040space rw - tmpfs tmpfs rw\n\
                    garbage\n";
        let entries: Vec<_> = parse(text).collect();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[1].fstype, "cgroup");
        assert_eq!(entries[1].super_options, "rw,memory");
        assert_eq!(
            entries[2].mount_point,
            PathBuf::from("/var/lib/rundmc/depot/web/rootfs")
        );
        assert_eq!(entries[3].mount_point, PathBuf::from("/mnt/with space"));
    }
}
