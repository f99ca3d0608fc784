//! Reading cgroup files: the pure parsing of their formats, and the plain
//! reads and writes that name the file in their error.

use std::fs;
use std::path::Path;

use super::CgroupError;
use crate::fsutil;

/// The value of `key` in "key value" lines (memory.events, cpu.stat,
/// memory.oom_control).
pub fn kv_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// `"max"` → `Some(None)`, a number → `Some(Some(n))`, else `None`.
pub fn parse_max(s: &str) -> Option<Option<u64>> {
    if s == "max" {
        Some(None)
    } else {
        s.parse().ok().map(Some)
    }
}

/// The pids of a `cgroup.procs` file read from `path`.
pub fn pids(path: &Path, text: &str) -> Result<Vec<i32>, CgroupError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().map_err(|_| parse_err(path, l)))
        .collect()
}

pub(super) fn read(path: &Path) -> Result<String, CgroupError> {
    fsutil::read_small_string(path).map_err(|source| CgroupError::Io {
        path: path.into(),
        source,
    })
}

pub(super) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Io {
        path: path.into(),
        source,
    })
}

fn parse_err(path: &Path, content: &str) -> CgroupError {
    CgroupError::Parse {
        path: path.into(),
        content: content.to_string(),
    }
}

pub(super) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| parse_err(path, &text))
}

/// A number, or "max" for no limit.
pub(super) fn read_max(path: &Path) -> Result<Option<u64>, CgroupError> {
    let text = read(path)?;
    parse_max(text.trim()).ok_or_else(|| parse_err(path, &text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files() {
        assert_eq!(
            kv_value("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
        assert_eq!(
            kv_value("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n", "oom_kill"),
            Some(1)
        );
        assert_eq!(
            kv_value("usage_usec 1500\nuser_usec 1000\n", "usage_usec"),
            Some(1500)
        );
        assert_eq!(kv_value("", "oom_kill"), None);
    }

    #[test]
    fn limits_and_pids() {
        assert_eq!(parse_max("max"), Some(None));
        assert_eq!(parse_max("100"), Some(Some(100)));
        assert_eq!(parse_max("x"), None);
        let path = Path::new("cgroup.procs");
        assert_eq!(pids(path, "12\n345\n\n").unwrap(), [12, 345]);
        assert!(matches!(
            pids(path, "12\nzz\n"),
            Err(CgroupError::Parse { content, .. }) if content == "zz"
        ));
    }
}
