//! Where the agent meets the kernel's edges: OOM kills counted on the
//! cgroup they happened in (not on one made again at its path), limits the
//! kernel takes and refuses, and privileged containers under an agent whose
//! own bounding set is short of a capability. Checked as an operator would:
//! events, status files, cgroup files and /proc.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rundmc::cgroup::{Hierarchy, OomWatch};
use support::agent::{Agent, AgentEnv, manifest};

const T: Duration = Duration::from_secs(30);

/// A main process that idles; `N` tells one version of the spec from another.
fn sleeper(n: u32, extra: &str) -> String {
    format!(
        "  env: [{{name: N, value: \"{n}\"}}]\n  process:\n    args: [\"/bin/sh\", \"-c\", \"exec sleep 100000\"]\n{extra}"
    )
}

/// `OOMKilled` events of `handle` in the event log.
fn oom_events(a: &AgentEnv, handle: &str) -> usize {
    a.events()
        .iter()
        .filter(|e| e["reason"] == "OOMKilled" && e["handle"] == handle)
        .count()
}

/// Whether `name` runs with `N=n` in its main process's environment.
fn runs_version(a: &AgentEnv, name: &str, n: u32) -> bool {
    a.running(name)
        && a.main_pid(name).is_some_and(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .any(|var| var == format!("N={n}").as_bytes())
        })
}

#[test]
fn remade_containers_are_never_oom_kills_and_a_real_kill_counts_once() {
    let a = AgentEnv::new("oom-instances");
    let _agent = a.start();
    let limit = "  limits: {memory: 16Mi}\n";
    a.write("web.yaml", &manifest("web", &sleeper(0, limit)));
    a.wait("web running", T, || runs_version(&a, "web", 0));
    // Each env edit destroys the container and makes it again at the same
    // cgroup path; the removal wakes the old cgroup's OOM watch.
    for n in 1..=40 {
        a.write("web.yaml", &manifest("web", &sleeper(n, limit)));
        a.wait(&format!("version {n} running"), T, || {
            runs_version(&a, "web", n)
        });
    }
    let oom_control = a.env.cgroup_dir("memory", "web").join("memory.oom_control");
    let text = std::fs::read_to_string(&oom_control).unwrap_or_default();
    assert!(text.is_empty() || text.contains("oom_kill 0\n"), "{text}");
    assert_eq!(oom_events(&a, "web"), 0, "no OOM kill happened");

    // A memory hog beside the main process: one real kill, one event.
    let (code, _, _) = a
        .env
        .exec("web", &["sh", "-c", "x=a; while true; do x=$x$x; done"]);
    assert_eq!(code, 137, "the hog was OOM-killed");
    a.wait("an OOMKilled event", T, || oom_events(&a, "web") >= 1);
    // Anything else queued for it is reported before a later edit's run.
    a.write("web.yaml", &manifest("web", &sleeper(41, limit)));
    a.wait("version 41 running", T, || runs_version(&a, "web", 41));
    assert_eq!(oom_events(&a, "web"), 1, "{:#?}", a.events());
}

/// A memory cgroup (the v2 one on a unified machine) made for one test and
/// removed after it.
struct ScratchCgroup {
    dir: PathBuf,
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[tokio::test]
async fn an_oom_watch_ends_with_its_cgroup_even_when_one_is_made_at_its_path() {
    let rel = format!("rundmc-test/oom-watch-{}", std::process::id());
    let cgroup = Hierarchy::host().cgroup(&rel);
    let scratch = ScratchCgroup {
        dir: cgroup.dir("memory").unwrap().to_owned(),
    };
    std::fs::create_dir_all(&scratch.dir).unwrap();
    let mut watch = OomWatch::new(&cgroup).unwrap();
    std::fs::remove_dir(&scratch.dir).unwrap();
    std::fs::create_dir(&scratch.dir).unwrap();
    let woke = tokio::time::timeout(T, watch.next()).await;
    assert_eq!(woke, Ok(None), "the removal ends the watch; it is no kill");
}

/// The value of a cgroup file of `name`'s container.
fn cgroup_file(a: &AgentEnv, controller: &str, name: &str, file: &str) -> String {
    let path = a.env.cgroup_dir(controller, name).join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn limits_beyond_the_kernels_are_invalid_and_the_largest_it_takes_run() {
    let a = AgentEnv::new("kernel-limits");
    let _agent = a.start();
    a.write(
        "cpu.yaml",
        &manifest("cpu", "  limits: {cpu: 99999999999}\n"),
    );
    a.write(
        "pids.yaml",
        &manifest("pids", "  limits:\n    pids: 9223372036854775807\n"),
    );
    let largest =
        "  limits:\n    cpu: 175921860444m\n    pids: 4194304\n    memory: 9223372036854775807\n";
    a.write("max.yaml", &manifest("max", &sleeper(0, largest)));

    let invalid = |name: &str, message: String| {
        let expect = format!(
            "{}: document 1, {message}",
            a.manifests.join(format!("{name}.yaml")).display()
        );
        a.wait(&format!("{name} invalid"), T, || {
            a.condition(name, "Valid")
                .is_some_and(|c| c.0 == "False" && c.2 == expect)
        });
        assert!(a.env.runc_status(name).is_none(), "nothing made for {name}");
    };
    invalid(
        "cpu",
        "line 7: spec.limits.cpu: \"99999999999\" is out of range: the kernel takes 1m to 175921860444m (a CFS quota of at most 17592186044415us per 100000us period)".into(),
    );
    invalid(
        "pids",
        "line 8: spec.limits.pids: 9223372036854775807 is out of range: the kernel takes 1 to 4194304 (PID_MAX_LIMIT)".into(),
    );

    a.wait("max running", T, || a.running("max"));
    if Path::new("/sys/fs/cgroup/cpu").is_dir() {
        assert_eq!(
            cgroup_file(&a, "cpu", "max", "cpu.cfs_quota_us"),
            "17592186044400"
        );
        assert_eq!(cgroup_file(&a, "pids", "max", "pids.max"), "4194304");
    } else {
        assert_eq!(
            cgroup_file(&a, "cpu", "max", "cpu.max"),
            "17592186044400 100000"
        );
        assert_eq!(cgroup_file(&a, "pids", "max", "pids.max"), "4194304");
    }
}

/// CAP_SYS_RESOURCE.
const SYS_RESOURCE: u32 = 24;

/// Start the agent in a process whose bounding set lacks capability `cap`,
/// as in a pod or host that does not grant it: the agent is spawned from a
/// thread of its own that drops it first (capabilities belong to a thread,
/// and a child inherits its parent thread's).
fn start_without(a: &AgentEnv, cap: u32) -> Agent {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: PR_CAPBSET_DROP reads only its integer argument and
            // changes only the calling thread, which ends after the spawn.
            let rc =
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
            assert_eq!(
                rc,
                0,
                "PR_CAPBSET_DROP: {}",
                std::io::Error::last_os_error()
            );
            a.start()
        })
        .join()
        .unwrap()
    })
}

/// A capability set line (`CapBnd:`, `CapEff:`) of /proc/<pid>/status.
fn cap_line(pid: u32, line: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
fn a_privileged_container_runs_under_an_agent_short_of_a_capability() {
    let a = AgentEnv::new("privileged-bounded");
    let agent = start_without(&a, SYS_RESOURCE);
    let bounding = cap_line(agent.child.id(), "CapBnd:");
    assert_eq!(bounding & (1 << SYS_RESOURCE), 0, "the agent lacks it");
    a.write(
        "priv.yaml",
        &manifest("priv", &sleeper(0, "  privileged: true\n")),
    );
    a.wait("priv running", T, || a.running("priv"));
    let main = a.main_pid("priv").unwrap() as u32;
    // Every capability the agent has, and so none it lacks.
    let every = (1u64 << 41) - 1;
    assert_eq!(cap_line(main, "CapEff:"), bounding & every);
    assert!(
        a.agent_log().contains("CAP_SYS_RESOURCE"),
        "what was left out is logged"
    );
}
