//! A runtime exec that reports failure after starting the process (issue
//! 11, defect 2) must never leave two main processes: the supervisor kills
//! what the failed exec left running, and the agent makes sure the previous
//! run is gone before it starts the next. The runtime is the faulty wrapper
//! of `support/faulty_runtime.rs` over real runc.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

/// What `support/process_container.rs` takes from `crate::common`.
mod common {
    pub use crate::support::{binary, runc_spec};
}
#[path = "support/process_container.rs"]
mod container;
#[path = "support/faulty_runtime.rs"]
mod faulty_runtime;
mod support;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::time::Duration;

use container::{Options, TestContainer, shim_binary};
use faulty_runtime::{Fault, FaultyRuntime, Mode};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rundmc::process::{Launch, ProcessError, Tracker};
use rundmc_shim::protocol::{ExitRecord, START_ERROR_EXIT_CODE};
use support::agent::{AgentEnv, manifest};
use support::ended;

const T: Duration = Duration::from_secs(60);

const SLEEPER: &str = "  process:\n    args: [\"/bin/sh\", \"-c\", \"exec sleep 100000\"]\n";

/// An agent whose runtime is a faulty wrapper over runc with `faults`.
fn agent_env(name: &str, seed: u64, faults: &[Fault]) -> (AgentEnv, FaultyRuntime) {
    let mut a = AgentEnv::new(name);
    let runtime = FaultyRuntime::new(&a.env.dir.join("faulty-runtime"), "runc", seed, faults);
    a.extra = vec![
        "--runtime".into(),
        runtime.path().to_string_lossy().into_owned(),
    ];
    (a, runtime)
}

/// The tasks of `name`'s cgroup other than runc's init.
fn non_init_tasks(a: &AgentEnv, name: &str) -> Option<BTreeSet<i32>> {
    let out = a.env.runc(&["state", name]);
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let init = state["pid"].as_i64()? as i32;
    let procs = a.env.cgroup_dir("freezer", name).join("cgroup.procs");
    let text = std::fs::read_to_string(procs).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|p| *p != init)
            .collect(),
    )
}

/// Running, with exactly one main process in the container: the current run's.
fn one_main(a: &AgentEnv, name: &str) -> bool {
    a.running(name)
        && a.main_pid(name)
            .is_some_and(|main| non_init_tasks(a, name) == Some(BTreeSet::from([main])))
}

/// `status.lastTermination.<field>` of `name`.
fn last_termination(a: &AgentEnv, name: &str, field: &str) -> String {
    a.status(name)
        .and_then(|s| {
            s["status"]["lastTermination"][field]
                .as_str()
                .map(String::from)
        })
        .unwrap_or_default()
}

#[test]
fn an_exec_failing_after_it_started_the_process_leaves_one_main() {
    let fault = Fault::new("exec", Mode::FailAfter).id("web").times(1);
    let (a, runtime) = agent_env("exec-fail-once", 1, &[fault]);
    let _agent = a.start();
    a.write("web.yaml", &manifest("web", SLEEPER));
    a.wait("web running with one main process", T, || {
        one_main(&a, "web") && a.status_field("web", "restartCount").as_deref() == Some("1")
    });
    let injected = runtime.injected();
    assert_eq!(injected.len(), 1, "{injected:?}");
    assert_eq!(
        (injected[0].verb.as_str(), injected[0].id.as_str()),
        ("exec", "web")
    );
    // The first run did start (its pid was written) and is gone.
    let first = a.bundle("web").join("processes/main-1/pid");
    let first: i32 = std::fs::read_to_string(first)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ended(first), "the first run's process {first} still runs");
    // The restart is told as it happened.
    assert_eq!(last_termination(&a, "web", "reason"), "StartError");
    let message = last_termination(&a, "web", "message");
    assert!(
        message.contains("injected fail-after of exec") && message.contains("killed"),
        "{message}"
    );
}

#[test]
fn execs_failing_at_random_leave_each_container_one_main() {
    let fault = Fault::new("exec", Mode::FailAfter).probability(0.3);
    let (a, runtime) = agent_env("exec-fail-random", 22, &[fault]);
    let _agent = a.start();
    // Seed 22 fails the first exec of c0 and c1 and the first two of c4.
    let names = ["c0", "c1", "c2", "c3", "c4"];
    for name in names {
        a.write(&format!("{name}.yaml"), &manifest(name, SLEEPER));
    }
    // What a user sees: running, one main process, and as many restarts
    // as execs that failed for it.
    let failed = |name: &str| runtime.injected().iter().filter(|c| c.id == name).count();
    for name in names {
        a.wait(&format!("{name} running with one main process"), T, || {
            one_main(&a, name)
                && a.status_field(name, "restartCount") == Some(failed(name).to_string())
        });
    }
    let injected = runtime.injected();
    assert!(
        names.iter().filter(|n| failed(n) > 0).count() >= 2,
        "the seed should fail execs of several containers: {injected:?}"
    );
}

#[tokio::test]
async fn the_supervisor_kills_what_a_failed_exec_left_running() {
    let c = TestContainer::start("exec-fail-after", Options::default());
    let runtime = FaultyRuntime::new(
        &c.tmp.join("faulty-runtime"),
        "runc",
        3,
        &[Fault::new("exec", Mode::FailAfter)],
    );
    let dir = c.process_dir("p", &["sleep", "100000"]);
    let mut argv: Vec<OsString> = c.runtime_argv(&dir, &c.id);
    argv[0] = runtime.path().into();
    let err = Tracker::new(shim_binary())
        .spawn(Launch::new("p", &dir, argv))
        .await
        .unwrap_err();
    let ProcessError::StartFailed { message, .. } = &err else {
        panic!("{err}")
    };
    assert!(message.contains("injected fail-after of exec"), "{message}");
    let pid: i32 = std::fs::read_to_string(dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Killed and reaped before the supervisor said it failed.
    assert!(ended(pid), "the exec'd process {pid} still runs");
    assert!(message.contains(&pid.to_string()), "{message}");
}

#[test]
fn a_run_recorded_as_a_failed_start_is_killed_before_its_restart() {
    let (a, _runtime) = agent_env("exec-start-error-lives", 5, &[]);
    let mut agent = a.start();
    a.write("web.yaml", &manifest("web", SLEEPER));
    a.wait("web running", T, || one_main(&a, "web"));
    let old = a.main_pid("web").unwrap();
    agent.kill9();
    // What a supervisor that could not end it leaves: a failed start on
    // record, and the process running in the container.
    let dir = a.main_dir("web").unwrap();
    let shim: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("shim.json")).unwrap()).unwrap();
    let shim = Pid::from_raw(shim["pid"].as_i64().unwrap() as i32);
    kill(shim, Signal::SIGKILL).unwrap();
    let record = ExitRecord {
        exit_code: START_ERROR_EXIT_CODE,
        signal: None,
        signal_name: None,
        oom_killed: false,
        finished_at: "2026-01-01T00:00:00.000000000Z".into(),
        start_error: Some("exec failed after starting the process".into()),
    };
    std::fs::write(dir.join("exit.json"), serde_json::to_vec(&record).unwrap()).unwrap();

    let _agent = a.start();
    a.wait("restarted, with one main process", T, || {
        one_main(&a, "web") && a.main_pid("web") != Some(old)
    });
    assert!(ended(old), "the run recorded as failed, {old}, still runs");
}

/// The wrapper itself, over a stub that echoes what it was asked: rules
/// pick by verb and id (the id of `kill` is not its last word), `times`
/// caps them per id, and each mode does what it says.
#[test]
fn the_faulty_runtime_fires_by_verb_id_and_count() {
    let dir = std::env::temp_dir().join(format!("rundmc-faulty-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let stub = dir.join("stub");
    std::fs::write(&stub, "#!/bin/sh\necho real \"$@\"\n").unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let faults = [
        Fault::new("exec", Mode::FailBefore).id("web").times(1),
        Fault::new("kill", Mode::FailAfter).id("w*"),
        Fault::new("*", Mode::Hang).id("slow").hang_secs(0),
    ];
    let runtime = FaultyRuntime::new(&dir.join("rt"), &stub.to_string_lossy(), 9, &faults);
    let log = dir.join("log.json");
    let run = |words: &[&str]| {
        let out = std::process::Command::new(runtime.path())
            .args(["--root", "/r", "--log"])
            .arg(&log)
            .args(["--log-format", "json"])
            .args(words)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let exec = [
        "exec",
        "--detach",
        "--pid-file",
        "/p",
        "--process",
        "/j",
        "web",
    ];
    assert_eq!(run(&exec), (Some(1), String::new()), "fails before, once");
    assert_eq!(run(&exec).0, Some(0), "then runs the real one");
    let (code, out) = run(&["kill", "--all", "web", "9"]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("real --root /r"),
        "ran the real one first: {out}"
    );
    assert_eq!(run(&["kill", "db", "9"]).0, Some(0), "other ids untouched");
    assert_eq!(run(&["start", "slow"]), (Some(1), String::new()));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(
            r#""level":"error","msg":"faulty runtime: injected fail-before of exec web (call 1)""#
        ),
        "{text}"
    );
    let injected: Vec<(String, String, u32, Option<String>)> = runtime
        .injected()
        .into_iter()
        .map(|c| (c.verb, c.id, c.n, c.mode))
        .collect();
    let want = |v: &str, id: &str, n, m: &str| (v.into(), id.into(), n, Some(m.into()));
    assert_eq!(
        injected,
        [
            want("exec", "web", 1, "fail-before"),
            want("kill", "web", 1, "fail-after"),
            want("start", "slow", 1, "hang"),
        ]
    );
    assert_eq!(runtime.calls().len(), 5);
    runtime.clear();
    assert_eq!(run(&["kill", "web", "9"]).0, Some(0), "no rules, no faults");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same seed fails the same calls; another seed, others.
#[test]
fn the_faulty_runtime_is_seeded() {
    let dir = std::env::temp_dir().join(format!("rundmc-faulty-seed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let fault = [Fault::new("state", Mode::FailBefore).probability(0.5)];
    let picked = |name: &str, seed| {
        let runtime = FaultyRuntime::new(&dir.join(name), "true", seed, &fault);
        for i in 0..20 {
            let id = format!("c{i}");
            std::process::Command::new(runtime.path())
                .args(["state", &id])
                .output()
                .unwrap();
        }
        let ids: Vec<String> = runtime.injected().into_iter().map(|c| c.id).collect();
        ids
    };
    let (a, b, c) = (picked("a", 9), picked("b", 9), picked("c", 10));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!((1..20).contains(&a.len()), "{a:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
