//! One agent per depot and state directory (issue 20), checked with real
//! agents as a user meets them: a second `rundmc agent` on the state of a
//! running one refuses (or waits, with `--wait-for-lock`) and changes
//! nothing; a waiting one takes over when the first exits, adopting every
//! container with the same pids and no new events; and a SIGKILLed agent's
//! lock is gone even while the supervisors it started live on.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use support::agent::{AgentEnv, manifest};
use support::{binary, eventually};

const T: Duration = Duration::from_secs(60);
const LOCK_FILE: &str = ".rundmc-agent.lock";
const SLEEPER: &str = "  process:\n    args: [\"/bin/sh\", \"-c\", \"exec sleep 100000\"]\n";

/// Where another agent runs, against (some of) `a`'s state.
struct Other {
    manifests: PathBuf,
    depot: PathBuf,
    log: PathBuf,
    extra: Vec<&'static str>,
}

impl Other {
    /// `a`'s depot, state dir and runtime root, with manifests of its own.
    fn on(a: &AgentEnv, name: &str) -> Self {
        let manifests = a.env.dir.join(format!("{name}-manifests"));
        std::fs::create_dir_all(&manifests).unwrap();
        Other {
            manifests,
            depot: a.env.depot.clone(),
            log: a.env.dir.join(format!("{name}.log")),
            extra: Vec::new(),
        }
    }

    /// `rundmc agent` with `a`'s flags (as `AgentEnv::start` gives them)
    /// but these manifests, this depot, and its own log.
    fn start(&self, a: &AgentEnv) -> Killed {
        let log = File::create(&self.log).unwrap();
        let child = a
            .command(&self.manifests, &self.depot)
            .args(&self.extra)
            .stderr(log)
            .spawn()
            .unwrap();
        Killed(child)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An agent killed when the test ends, passed or failed.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a user would look at to see whether anything moved: runc's view
/// (status and init pid), each main process's pid, the status files and
/// the event log, and the depot's entries (of those containers, and its
/// dotfiles).
#[derive(Debug, PartialEq)]
struct Snapshot {
    runc: BTreeMap<String, (Option<String>, i32)>,
    mains: BTreeMap<String, Option<i32>>,
    status_files: BTreeMap<String, String>,
    events: Vec<serde_json::Value>,
    depot: Vec<String>,
}

fn snapshot(a: &AgentEnv, names: &[&str]) -> Snapshot {
    let status_dir = a.state.join("status");
    Snapshot {
        runc: names
            .iter()
            .map(|n| (n.to_string(), (a.env.runc_status(n), a.env.init_pid(n))))
            .collect(),
        mains: names
            .iter()
            .map(|n| (n.to_string(), a.main_pid(n)))
            .collect(),
        status_files: names
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(status_dir.join(format!("{n}.yaml")));
                (n.to_string(), text.unwrap_or_default())
            })
            .collect(),
        events: a
            .events()
            .into_iter()
            .filter(|e| names.contains(&e["handle"].as_str().unwrap_or_default()))
            .collect(),
        depot: entries(&a.env.depot, names),
    }
}

/// The depot's entries, but for containers other than `names`.
fn entries(dir: &Path, names: &[&str]) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || names.contains(&n.as_str()))
        .collect();
    found.sort();
    found
}

/// Two sleepers running under a first agent.
fn two_running(name: &str) -> (AgentEnv, support::agent::Agent) {
    let a = AgentEnv::new(name);
    a.write("web.yaml", &manifest("web", SLEEPER));
    a.write("db.yaml", &manifest("db", SLEEPER));
    let first = a.start();
    a.wait("web and db running", T, || {
        a.running("web") && a.running("db")
    });
    (a, first)
}

/// Its exit, once it has exited on its own (None: still running at `T`).
fn exited(child: &mut Child) -> Option<ExitStatus> {
    let mut status = None;
    eventually(T, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status
}

/// Whether an exclusive flock on `path` is free right now (taken and let go).
fn lock_is_free(path: &Path) -> bool {
    let file = File::options().read(true).write(true).open(path).unwrap();
    Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok()
}

fn holder(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

#[test]
fn a_second_agent_on_the_same_depot_or_state_dir_refuses_and_changes_nothing() {
    let (a, first) = two_running("lock-refuse");
    let names = ["web", "db"];
    let before = snapshot(&a, &names);
    let pid = first.child.id();

    // Its own, empty, manifest directory: had it run, it would have
    // destroyed both containers.
    let second = Other::on(&a, "second");
    let mut child = second.start(&a);
    let status = exited(&mut child.0);
    assert!(
        status.is_some_and(|s| !s.success()),
        "the second agent did not refuse: {status:?}\n--- its log ---\n{}",
        second.log()
    );
    let depot_lock = a.env.depot.join(LOCK_FILE);
    let log = second.log();
    assert!(
        log.contains(&depot_lock.display().to_string()) && log.contains(&format!("pid {pid}")),
        "the error names neither the lock file nor its holder:\n{log}"
    );
    assert_eq!(
        snapshot(&a, &names),
        before,
        "the refused agent changed something"
    );

    // Another depot, the same state directory: refused as well, on it.
    let mut third = Other::on(&a, "third");
    third.depot = a.env.dir.join("depot-2");
    let mut child = third.start(&a);
    let status = exited(&mut child.0);
    assert!(
        status.is_some_and(|s| !s.success()),
        "an agent on the same state dir did not refuse: {status:?}\n{}",
        third.log()
    );
    let state_lock = a.state.join(LOCK_FILE);
    let log = third.log();
    assert!(
        log.contains(&state_lock.display().to_string()) && log.contains(&format!("pid {pid}")),
        "the error names neither the state dir's lock nor its holder:\n{log}"
    );
    assert_eq!(
        snapshot(&a, &names),
        before,
        "the refused agent changed something"
    );
    assert_eq!(holder(&depot_lock), pid.to_string());
    assert_eq!(holder(&state_lock), pid.to_string());
    drop(first);
}

#[test]
fn an_agent_on_another_depot_and_state_but_the_same_runtime_root_refuses() {
    let (a, first) = two_running("lock-root");
    let names = ["web", "db"];
    let before = snapshot(&a, &names);
    let pid = first.child.id();
    let mut b = AgentEnv::new("lock-root-other");
    b.env.runc_root = a.env.runc_root.clone();
    let mut second = b.start();
    let status = exited(&mut second.child);
    assert!(
        status.is_some_and(|s| !s.success()),
        "an agent on the same runtime root did not refuse: {status:?}\n{}",
        b.agent_log()
    );
    let root_lock = a.env.runc_root.join(LOCK_FILE);
    let log = b.agent_log();
    assert!(
        log.contains(&root_lock.display().to_string()) && log.contains(&format!("pid {pid}")),
        "the error names neither the runtime root's lock nor its holder:\n{log}"
    );
    assert_eq!(
        snapshot(&a, &names),
        before,
        "the refused agent changed something"
    );
    assert_eq!(holder(&root_lock), pid.to_string());
    // runc still lists the containers beside the lock file.
    let list = a.env.runc(&["list", "-q"]);
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(listed.contains("web") && listed.contains("db"), "{listed}");
    drop(first);
}

#[test]
fn a_waiting_agent_takes_over_when_the_first_exits_with_the_same_pids_and_no_new_events() {
    let (a, mut first) = two_running("lock-wait");
    let names = ["web", "db"];
    let before = snapshot(&a, &names);
    let pid = first.child.id();

    let mut second = Other::on(&a, "second");
    second.manifests = a.manifests.clone();
    second.extra = vec!["--wait-for-lock", "2m"];
    let mut child = second.start(&a);
    let depot_lock = a.env.depot.join(LOCK_FILE);
    assert!(
        eventually(T, || second.log().contains("waiting for it to exit")),
        "the second agent does not say it waits\n--- its log ---\n{}",
        second.log()
    );
    let log = second.log();
    assert!(
        log.contains(&depot_lock.display().to_string()) && log.contains(&format!("pid {pid}")),
        "the wait names neither the lock file nor its holder:\n{log}"
    );
    assert_eq!(
        child.0.try_wait().unwrap(),
        None,
        "the waiting agent exited"
    );
    assert_eq!(
        snapshot(&a, &names),
        before,
        "the waiting agent changed something"
    );

    assert!(first.terminate().success());
    // Taken over: a container declared now is made by the second agent.
    a.write("late.yaml", &manifest("late", SLEEPER));
    assert!(
        eventually(T, || a.running("late")),
        "the second agent did not take over\n--- its log ---\n{}",
        second.log()
    );
    assert_eq!(snapshot(&a, &names), before, "adopting moved something");
    let log = second.log();
    assert_eq!(log.matches("waiting for it to exit").count(), 1, "{log}");
    let child_pid = child.0.id().to_string();
    assert_eq!(holder(&depot_lock), child_pid);
    assert_eq!(holder(&a.state.join(LOCK_FILE)), child_pid);
}

#[test]
fn a_sigkilled_agents_lock_is_released_while_its_supervisors_live_on() {
    let a = AgentEnv::new("lock-kill9");
    a.write("web.yaml", &manifest("web", SLEEPER));
    let mut first = a.start();
    a.wait("web running", T, || a.running("web"));
    let shim: serde_json::Value = serde_json::from_slice(
        &std::fs::read(a.main_dir("web").unwrap().join("shim.json")).unwrap(),
    )
    .unwrap();
    let shim = shim["pid"].as_i64().unwrap() as i32;
    let main = a.main_pid("web").unwrap();

    first.kill9();
    assert!(!support::ended(shim), "the supervisor outlives the agent");
    for lock in [a.env.depot.join(LOCK_FILE), a.state.join(LOCK_FILE)] {
        assert!(lock_is_free(&lock), "{} is still held", lock.display());
    }

    // A new agent, not told to wait, starts and adopts web as it was.
    let second = a.start();
    a.wait("the new agent holding the lock", T, || {
        holder(&a.env.depot.join(LOCK_FILE)) == second.child.id().to_string()
    });
    a.write("late.yaml", &manifest("late", SLEEPER));
    a.wait("late running under the new agent", T, || a.running("late"));
    assert_eq!(a.main_pid("web"), Some(main));
    assert!(!support::ended(shim));
}

#[test]
fn clean_run_refuses_while_an_agent_runs_and_cleans_once_it_has_stopped() {
    let (a, mut first) = two_running("lock-clean");
    let names = ["web", "db"];
    let before = snapshot(&a, &names);
    // `make clean-run`'s script, on a state laid out as `make run` does:
    // the depot at <state>/depot.
    let clean = || {
        Command::new(support::workspace().join("scripts/clean-state.sh"))
            .arg(&a.env.dir)
            .arg(&a.env.cgroup_parent)
            .arg(binary("rundmc"))
            .output()
            .unwrap()
    };
    let out = clean();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "clean-state ran under the agent: {stderr}"
    );
    let pid = first.child.id();
    assert!(
        stderr.contains(&format!("pid {pid}")) && stderr.contains("Nothing was removed"),
        "{stderr}"
    );
    assert_eq!(
        snapshot(&a, &names),
        before,
        "clean-state changed something"
    );

    assert!(first.terminate().success());
    let out = clean();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!a.env.dir.exists(), "the state is left");
    for n in names {
        assert_eq!(a.env.runc_status(n), None, "{n} is left");
    }
}
