//! Exec probes and hooks run by the container's own init (no runtime, no
//! supervisor), through the agent and real runc, checked as an operator
//! would from inside the container and from /proc on the node: what a probe
//! command forks is gone when it ends; a probe gets the main process's user,
//! namespaces, cgroup, capabilities, no_new_privs and seccomp filter; only
//! the agent may use the init's socket; a container whose init does not
//! serve falls back to the runtime's exec.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

mod support;

use std::time::Duration;

use support::agent::{AgentEnv, manifest};

const T: Duration = Duration::from_secs(60);

fn ready(a: &AgentEnv, name: &str) -> bool {
    a.condition(name, "Ready")
        .is_some_and(|(s, _, _)| s == "True")
}

/// Lines of `path` in the container `name`, read from the node through
/// its main process's root (whatever the runtime).
fn lines(a: &AgentEnv, name: &str, path: &str) -> Vec<String> {
    let Some(pid) = a.main_pid(name) else {
        return Vec::new();
    };
    std::fs::read_to_string(format!("/proc/{pid}/root{path}"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_probe_command_that_forks_daemons_leaves_nothing_running() {
    let a = AgentEnv::new("init-exec-daemon");
    let _agent = a.start();
    // Each run starts one child in its process group and one in a session
    // of its own, checks both are alive, and exits at once.
    let spec = r#"  process:
    args: ["/bin/sh", "-c", "exec sleep 100000"]
    readinessProbe:
      exec: {command: ["/bin/sh", "-c", "sleep 4243 & p=$!; setsid sleep 4244 & q=$!; kill -0 $p && kill -0 $q && echo started >> /tmp/runs"]}
      periodSeconds: 1
"#;
    a.write("d.yaml", &manifest("forker", spec));
    a.wait("ready", T, || ready(&a, "forker"));
    a.wait("three runs that forked", T, || {
        lines(&a, "forker", "/tmp/runs").len() >= 3
    });
    // Without the sweep, every run would leave two sleeps re-parented to
    // init; with it, at most the run in flight has any.
    a.wait("no daemon left", T, || {
        let (code, ps, _) = a.env.exec("forker", &["ps", "-o", "args"]);
        code == 0 && !ps.contains("sleep 424")
    });
    assert!(
        lines(&a, "forker", "/tmp/runs")
            .iter()
            .all(|l| l == "started")
    );
}

/// The `Name:\tvalue` fields of a /proc status text that confinement shows.
fn confinement(status: &str) -> Vec<String> {
    const FIELDS: [&str; 11] = [
        "Uid",
        "Gid",
        "Groups",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
        "Seccomp_filters",
    ];
    status
        .lines()
        .filter(|l| FIELDS.iter().any(|f| l.split(':').next() == Some(*f)))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn a_probe_gets_the_main_processes_user_and_the_containers_confinement() {
    probe_confinement("init-exec-confined", &[], "", true);
}

#[test]
fn under_crun_a_probe_gets_the_same() {
    probe_confinement("init-exec-crun", &["--runtime", "crun"], "", true);
}

#[test]
fn in_a_user_namespace_a_probe_gets_the_same() {
    // Ids read from the node are the host's, the probe's own the
    // container's: those fields are compared from inside instead.
    probe_confinement("init-exec-userns", &[], "  hostUsers: false\n", false);
}

/// The main process runs as 1000:1000 with an added group and capability;
/// its exec readiness probe records what it is from inside, and that is
/// compared with the main process seen from the node.
fn probe_confinement(name: &str, flags: &[&str], extra: &str, host_ids: bool) {
    let mut a = AgentEnv::new(name);
    a.extra = flags.iter().map(|f| f.to_string()).collect();
    let _agent = a.start();
    let spec = format!(
        r#"  process:
    args: ["/bin/sh", "-c", "cat /proc/self/cgroup > /tmp/main-cgroup; exec sleep 100000"]
    user: "1000:1000"
    readinessProbe:
      exec: {{command: ["/bin/sh", "-c", "cat /proc/self/status > /tmp/probe-status; cat /proc/self/cgroup > /tmp/probe-cgroup; ls -l /proc/self/ns > /tmp/probe-ns"]}}
      periodSeconds: 1
  securityContext:
    supplementalGroups: [4000]
    capabilities: {{add: [NET_ADMIN]}}
{extra}"#
    );
    a.write("c.yaml", &manifest("confined", &spec));
    // Ready as soon as one probe passed, which may be before the main
    // process's first line ran.
    a.wait("ready, with both views written", T, || {
        ready(&a, "confined") && !lines(&a, "confined", "/tmp/main-cgroup").is_empty()
    });
    let pid = a.main_pid("confined").unwrap();
    let probe = lines(&a, "confined", "/tmp/probe-status").join("\n");
    let main = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |l: &String| ["Uid", "Gid", "Groups"].iter().any(|f| l.starts_with(f));
    let (mut want, mut got) = (confinement(&main), confinement(&probe));
    if !host_ids {
        want.retain(|l| !ids(l));
        got.retain(|l| !ids(l));
    }
    assert_eq!(got, want, "{probe}");
    assert!(probe.contains("Uid:\t1000\t1000\t1000\t1000"), "{probe}");
    assert!(probe.contains("\nGroups:\t4000"), "{probe}");
    assert!(probe.contains("\nSeccomp:\t2"), "{probe}");
    // Its parent is in the container: the init's handler, not a runtime
    // exec (whose parent is outside the container's pid namespace).
    let ppid = probe.lines().find(|l| l.starts_with("PPid:")).unwrap();
    assert_ne!(ppid.split_whitespace().nth(1), Some("0"), "{probe}");
    assert_eq!(
        lines(&a, "confined", "/tmp/probe-cgroup"),
        lines(&a, "confined", "/tmp/main-cgroup")
    );
    let ns = lines(&a, "confined", "/tmp/probe-ns").join("\n");
    for kind in ["mnt", "pid", "net", "ipc", "uts", "cgroup", "user"] {
        let main_ns = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
        let main_ns = main_ns.to_string_lossy().into_owned();
        assert!(ns.contains(&main_ns), "{kind}: {main_ns} not in\n{ns}");
    }
}

/// A request to run `id -u` for 2 s, as the agent encodes it.
const ID_REQUEST: &str = "import socket,struct,sys
args=[b'/', b'id', b'-u', b'PATH=/bin:/usr/bin']
s=b''.join(a+b'\\0' for a in args)
body=struct.pack('<6I',0,0,0,2000,2,1)+s
c=socket.socket(socket.AF_UNIX); c.connect(sys.argv[1])
out=b''
try:
    c.sendall(b'RDP1'+struct.pack('<I',len(body))+body); c.shutdown(socket.SHUT_WR)
    while True:
        d=c.recv(4096)
        if not d: break
        out+=d
except OSError:
    pass
print(repr(out))";

#[test]
fn only_the_agent_may_use_the_inits_socket() {
    let a = AgentEnv::new("init-exec-peer");
    let _agent = a.start();
    let spec = "  process:\n    args: [\"/bin/sh\", \"-c\", \"exec sleep 100000\"]\n";
    a.write("p.yaml", &manifest("guarded", spec));
    a.wait("running", T, || a.running("guarded"));
    let socket = a.bundle("guarded").join("init.sock");
    let mode = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // From the node (outside the container's pid namespace): served.
    let host = std::process::Command::new("python3")
        .args(["-c", ID_REQUEST])
        .arg(&socket)
        .output()
        .unwrap();
    let host = String::from_utf8_lossy(&host.stdout).into_owned();
    assert!(host.contains("0\\nRDX\\x00"), "{host}");
    // From a process in the container's pid namespace: refused unread.
    let pid = a.main_pid("guarded").unwrap().to_string();
    let inside = std::process::Command::new("nsenter")
        .args(["--target", &pid, "--pid", "--", "python3", "-c", ID_REQUEST])
        .arg(&socket)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&inside.stderr).into_owned();
    let inside = String::from_utf8_lossy(&inside.stdout).into_owned();
    assert_eq!(inside.trim(), "b''", "{err}");
}

#[test]
fn without_a_serving_init_probes_fall_back_to_the_runtimes_exec() {
    let a = AgentEnv::new("init-exec-fallback");
    let _agent = a.start();
    let spec = r#"  process:
    args: ["/bin/sh", "-c", "exec sleep 100000"]
    readinessProbe:
      exec: {command: ["/bin/sh", "-c", "grep PPid /proc/self/status >> /tmp/ppids"]}
      periodSeconds: 1
"#;
    a.write("f.yaml", &manifest("older", spec));
    a.wait("ready", T, || ready(&a, "older"));
    let ppid = |l: &String| l.split_whitespace().nth(1).map(str::to_string);
    let by_init = lines(&a, "older", "/tmp/ppids");
    assert!(
        by_init.iter().all(|l| ppid(l).as_deref() != Some("0")),
        "{by_init:?}"
    );
    // As a container made before the init served: no socket.
    std::fs::remove_file(a.bundle("older").join("init.sock")).unwrap();
    a.wait("probes by the runtime's exec", T, || {
        lines(&a, "older", "/tmp/ppids")
            .iter()
            .filter(|l| ppid(l).as_deref() == Some("0"))
            .count()
            >= 2
    });
    assert!(ready(&a, "older"));
    // Each such probe's process directory (its spec and supervisor's
    // files, in the bundle) and its log directory go with it: at most the
    // one in flight.
    let probes = |dir: std::path::PathBuf| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("probe-"))
            .collect()
    };
    let inputs = probes(a.bundle("older").join("processes"));
    assert!(inputs.len() <= 1, "{inputs:?}");
    let dirs = probes(a.env.depot.join("older/processes"));
    assert!(dirs.len() <= 1, "{dirs:?}");
}
