//! What the kernel says about a process: its CPU time, its memory (RSS and
//! PSS), the processes it holds pidfds on; and a CPU-accounting cgroup that
//! counts, to the nanosecond, the agent and everything it spawns.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Resident and proportional set sizes, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mem {
    /// `Rss:` of smaps_rollup.
    pub rss_kib: u64,
    /// `Pss:` of smaps_rollup.
    pub pss_kib: u64,
}

/// RSS and PSS of `pid`.
pub fn mem(pid: i32) -> Result<Mem> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_smaps_rollup(&text).with_context(|| format!("parsing {path}"))
}

fn parse_smaps_rollup(text: &str) -> Option<Mem> {
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(Mem {
        rss_kib: field("Rss:")?,
        pss_kib: field("Pss:")?,
    })
}

/// CPU seconds of `pid` itself (every thread, live or gone), and of the
/// children it has reaped, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: i32) -> Result<(f64, f64)> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // SAFETY: sysconf with a valid name.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (own, children) = parse_stat_ticks(&text).with_context(|| format!("parsing {path}"))?;
    Ok((own as f64 / tick, children as f64 / tick))
}

/// (utime + stime, cutime + cstime) in clock ticks.
fn parse_stat_ticks(text: &str) -> Option<(u64, u64)> {
    let after = &text[text.rfind(')')? + 1..];
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|w| w.parse().ok())
        .collect::<Option<_>>()?;
    (f.len() == 4).then(|| (f[0] + f[1], f[2] + f[3]))
}

/// CPU time of the whole process `pid` (every thread, live or gone), in
/// nanoseconds, from its process CPU clock: exact, where /proc/<pid>/stat
/// counts 10 ms ticks.
pub fn process_cpu_ns(pid: i32) -> Option<u64> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: a valid pointer to a clockid_t.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    // SAFETY: an all-zero timespec is valid; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a clock id from clock_getcpuclockid and a valid pointer.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// CPU time of each thread of `pid` that is alive now, in nanoseconds, summed
/// by thread name (`comm`), from /proc/<pid>/task/*/schedstat. Threads that
/// ended are missing: [`cpu_seconds`] counts them.
pub fn thread_cpu_ns(pid: i32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.filter_map(|t| t.ok()) {
        let dir = task.path();
        let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let ns = fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok());
        if let Some(ns) = ns {
            *out.entry(comm.trim().to_owned()).or_insert(0) += ns;
        }
    }
    out
}

/// CPU seconds of the reaped children of this process (every runtime call
/// the harness spawned and waited for, and what the subreaper reaped).
pub fn children_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to an rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// The pids that `pid` holds pidfds on, from /proc/<pid>/fd and fdinfo.
pub fn pidfd_targets(pid: i32) -> HashSet<i32> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:[pidfd]"))
        .filter_map(|e| {
            let info = format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy());
            parse_fdinfo_pid(&fs::read_to_string(info).ok()?)
        })
        .collect()
}

fn parse_fdinfo_pid(text: &str) -> Option<i32> {
    text.lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()
}

/// A cgroup that counts CPU time: cpuacct on v1, the unified tree on v2.
#[derive(Debug, Clone)]
pub struct CpuCgroup {
    dir: PathBuf,
    v2: bool,
    procs: CString,
}

impl CpuCgroup {
    /// Makes cgroup `name` at the root of the CPU-accounting hierarchy.
    pub fn create(name: &str) -> Result<CpuCgroup> {
        let (root, v2) = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            (PathBuf::from("/sys/fs/cgroup"), true)
        } else if Path::new("/sys/fs/cgroup/cpuacct/cpuacct.usage").exists() {
            (PathBuf::from("/sys/fs/cgroup/cpuacct"), false)
        } else if Path::new("/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage").exists() {
            (PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"), false)
        } else {
            bail!("no cpuacct (v1) or unified (v2) cgroup hierarchy found");
        };
        let dir = root.join(name);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes())?;
        Ok(CpuCgroup { dir, v2, procs })
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves the calling process into the cgroup. Async-signal-safe: meant
    /// for `pre_exec`, between fork and exec.
    pub fn join_from_child(&self) -> std::io::Result<()> {
        // SAFETY: a valid NUL-terminated path; open/write/close only.
        unsafe {
            let fd = libc::open(self.procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0\n".as_ptr().cast(), 2);
            libc::close(fd);
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// CPU time used by everything that ever ran in it, in nanoseconds.
    pub fn usage_ns(&self) -> Result<u64> {
        let file = self
            .dir
            .join(if self.v2 { "cpu.stat" } else { "cpuacct.usage" });
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let ns = if self.v2 {
            parse_usage_usec(&text).map(|us| us * 1000)
        } else {
            text.trim().parse().ok()
        };
        ns.with_context(|| format!("parsing {}", file.display()))
    }
}

fn parse_usage_usec(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))?
        .trim()
        .parse()
        .ok()
}

/// The calling thread's own CPU so far, in seconds (its CPU clock).
pub fn thread_cpu_seconds() -> f64 {
    // SAFETY: an all-zero timespec is valid; clock_gettime fills it.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return f64::NAN;
    }
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let rollup = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:                 960 kB\nPss:                 312 kB\nPss_Anon:  40 kB\n";
        assert_eq!(
            parse_smaps_rollup(rollup),
            Some(Mem {
                rss_kib: 960,
                pss_kib: 312
            })
        );
        let stat =
            "4242 (rundmc (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 17 5 3 2 20 0 9 0 123 0 0";
        assert_eq!(parse_stat_ticks(stat), Some((22, 5)));
        assert_eq!(
            parse_fdinfo_pid("pos:\t0\nflags:\t02004002\nPid:\t1234\nNSpid:\t1234\n"),
            Some(1234)
        );
        assert_eq!(
            parse_usage_usec("usage_usec 5000\nuser_usec 3000\n"),
            Some(5000)
        );
    }

    #[test]
    fn reads_its_own_process() {
        let me = std::process::id() as i32;
        assert!(mem(me).unwrap().rss_kib > 0);
        assert!(cpu_seconds(me).unwrap().0 >= 0.0);
        assert!(process_cpu_ns(me).unwrap() > 0);
        let fd = crate::sys::PidFd::open(me).unwrap();
        assert!(pidfd_targets(me).contains(&me));
        drop(fd);
    }
}
