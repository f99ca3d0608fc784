//! The shim's command line, parsed by hand to keep the binary small:
//! `rundmc-shim [--stdin] [--keep-stdin-open] [--log-max-bytes N] [--log-max-files N]
//! [--oom-file PATH] [--join-cgroup PROCS-FILE]... [--log-dir DIR] --dir DIR -- RUNTIME-ARGV...`.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use rundmc_shim::protocol::{DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_MAX_FILES};

/// What the shim was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub dir: PathBuf,
    /// Where `output.log` and its rotations go, when not in `dir`.
    pub log_dir: Option<PathBuf>,
    pub stdin: bool,
    /// The `stdin` fifo outlives its writers (implies `stdin`): the shim
    /// holds it read-write, so no writer's close is an end of file.
    pub keep_stdin_open: bool,
    pub log_max_bytes: u64,
    pub log_max_files: u32,
    pub oom_file: Option<PathBuf>,
    /// `cgroup.procs` files the supervisor moves itself into first.
    pub join_cgroups: Vec<PathBuf>,
    pub runtime_argv: Vec<OsString>,
}

/// Why the command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    Missing(&'static str),
    NoValue(String),
    BadNumber(String, String),
    Unknown(String),
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::Missing(what) => write!(f, "missing {what}"),
            ArgsError::NoValue(flag) => write!(f, "{flag} needs a value"),
            ArgsError::BadNumber(flag, v) => write!(f, "{flag}: not a positive number: {v}"),
            ArgsError::Unknown(arg) => write!(f, "unknown argument {arg}"),
        }
    }
}

pub const USAGE: &str = "usage: rundmc-shim [--stdin] [--keep-stdin-open] [--log-max-bytes N] [--log-max-files N] \
[--oom-file PATH] [--join-cgroup PROCS-FILE]... [--log-dir DIR] --dir DIR -- RUNTIME-ARGV...";

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, ArgsError> {
    let mut it = args.into_iter();
    let mut dir = None;
    let mut parsed = Args {
        dir: PathBuf::new(),
        log_dir: None,
        stdin: false,
        keep_stdin_open: false,
        log_max_bytes: DEFAULT_LOG_MAX_BYTES,
        log_max_files: DEFAULT_LOG_MAX_FILES,
        oom_file: None,
        join_cgroups: Vec::new(),
        runtime_argv: Vec::new(),
    };
    while let Some(arg) = it.next() {
        let flag = arg.to_string_lossy().into_owned();
        let mut value = || it.next().ok_or_else(|| ArgsError::NoValue(flag.clone()));
        match flag.as_str() {
            "--" => {
                parsed.runtime_argv = it.collect();
                break;
            }
            "--stdin" => parsed.stdin = true,
            "--keep-stdin-open" => {
                parsed.stdin = true;
                parsed.keep_stdin_open = true;
            }
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--log-dir" => parsed.log_dir = Some(PathBuf::from(value()?)),
            "--oom-file" => parsed.oom_file = Some(PathBuf::from(value()?)),
            "--join-cgroup" => parsed.join_cgroups.push(PathBuf::from(value()?)),
            "--log-max-bytes" => parsed.log_max_bytes = number(&flag, value()?)?,
            "--log-max-files" => parsed.log_max_files = number(&flag, value()?)?,
            _ => return Err(ArgsError::Unknown(flag)),
        }
    }
    parsed.dir = dir.ok_or(ArgsError::Missing("--dir"))?;
    if parsed.runtime_argv.is_empty() {
        return Err(ArgsError::Missing("the runtime argv after --"));
    }
    Ok(parsed)
}

impl Args {
    /// Where `output.log` goes: `--log-dir`, else `--dir`.
    pub fn log_dir(&self) -> &std::path::Path {
        self.log_dir.as_deref().unwrap_or(&self.dir)
    }
}

fn number<T: std::str::FromStr + Default + PartialEq>(
    flag: &str,
    v: OsString,
) -> Result<T, ArgsError> {
    let text = v.to_string_lossy();
    match text.parse::<T>() {
        Ok(n) if n != T::default() => Ok(n),
        _ => Err(ArgsError::BadNumber(flag.to_owned(), text.into_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_a_full_command_line() {
        let a = parse(os(&[
            "--stdin",
            "--log-max-bytes",
            "1024",
            "--log-max-files",
            "3",
            "--oom-file",
            "/cg/memory.events",
            "--join-cgroup",
            "/sys/fs/cgroup/memory/shims/cgroup.procs",
            "--join-cgroup",
            "/sys/fs/cgroup/pids/shims/cgroup.procs",
            "--log-dir",
            "/logs",
            "--dir",
            "/d",
            "--",
            "runc",
            "exec",
            "--",
            "x",
        ]))
        .unwrap();
        assert!(a.stdin);
        assert_eq!((a.log_max_bytes, a.log_max_files), (1024, 3));
        assert_eq!(a.oom_file, Some(PathBuf::from("/cg/memory.events")));
        assert_eq!(a.dir, PathBuf::from("/d"));
        assert_eq!(a.log_dir(), Path::new("/logs"));
        assert_eq!(
            a.join_cgroups,
            [
                PathBuf::from("/sys/fs/cgroup/memory/shims/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/pids/shims/cgroup.procs")
            ]
        );
        assert_eq!(a.runtime_argv, os(&["runc", "exec", "--", "x"]));
    }

    #[test]
    fn defaults_and_refusals() {
        let a = parse(os(&["--dir", "/d", "--", "runc"])).unwrap();
        assert!(!a.stdin && !a.keep_stdin_open);
        assert_eq!(a.log_max_bytes, DEFAULT_LOG_MAX_BYTES);
        assert_eq!(
            a.log_dir(),
            Path::new("/d"),
            "the log is in --dir by default"
        );
        let open = parse(os(&["--keep-stdin-open", "--dir", "/d", "--", "runc"])).unwrap();
        assert!(open.stdin && open.keep_stdin_open, "it implies --stdin");
        assert!(a.join_cgroups.is_empty());
        assert_eq!(parse(os(&["--", "runc"])), Err(ArgsError::Missing("--dir")));
        assert!(matches!(
            parse(os(&["--dir", "/d"])),
            Err(ArgsError::Missing(_))
        ));
        assert!(matches!(parse(os(&["--dir"])), Err(ArgsError::NoValue(_))));
        assert!(matches!(
            parse(os(&["--log-max-files", "0", "--dir", "/d", "--", "r"])),
            Err(ArgsError::BadNumber(..))
        ));
        assert!(matches!(
            parse(os(&["--bogus"])),
            Err(ArgsError::Unknown(_))
        ));
    }
}
