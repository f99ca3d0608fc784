//! Pods end to end through the agent and real runc: init processes run to
//! completion in order before the main process, once per make of the
//! container; a failing one backs off and status names it.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

mod support;

use std::time::Duration;

use support::agent::{AgentEnv, manifest};

const T: Duration = Duration::from_secs(60);

/// `status.processes[name=<process>]` of `name`.
fn process(a: &AgentEnv, name: &str, process: &str) -> Option<serde_yaml::Value> {
    let status = a.status(name)?;
    let all = status.get("status")?.get("processes")?.as_sequence()?;
    all.iter()
        .find(|p| p.get("name").and_then(|n| n.as_str()) == Some(process))
        .cloned()
}

/// A field of `status.processes[name=<proc>]` as a string.
fn process_field(a: &AgentEnv, name: &str, proc: &str, path: &[&str]) -> Option<String> {
    let mut v = process(a, name, proc)?;
    for key in path {
        v = v.get(*key)?.clone();
    }
    Some(match v {
        serde_yaml::Value::String(s) => s,
        other => serde_yaml::to_string(&other).ok()?.trim().to_string(),
    })
}

/// What `cat <file>` prints in container `name`.
fn cat(a: &AgentEnv, name: &str, file: &str) -> String {
    let (code, out, err) = a.env.exec(name, &["cat", file]);
    assert_eq!(code, 0, "cat {file}: {err}");
    out
}

fn kill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

const IN_ORDER: &str = r#"  env: [{name: WHO, value: pod}]
  initProcesses:
  - name: first
    args: ["/bin/sh", "-c", "echo first >> /order"]
  - name: second
    command: ["/bin/sh", "-c"]
    args: ["echo second >> /order"]
  process:
    args: ["/bin/sh", "-c", "echo main >> /order; exec sleep 100000"]
"#;

#[test]
fn init_processes_run_in_order_once_before_the_main_process() {
    let a = AgentEnv::new("pods-init-order");
    let _agent = a.start();
    a.write("p.yaml", &manifest("pod", IN_ORDER));
    a.wait("running", T, || a.running("pod"));
    assert_eq!(cat(&a, "pod", "/order"), "first\nsecond\nmain\n");
    for init in ["first", "second"] {
        assert_eq!(
            process_field(&a, "pod", init, &["state"]).as_deref(),
            Some("Terminated"),
            "{init}"
        );
        assert_eq!(
            process_field(&a, "pod", init, &["lastTermination", "reason"]).as_deref(),
            Some("Completed")
        );
    }

    // Only the main process restarts: the init processes are not run again.
    let first = a.main_pid("pod").unwrap();
    kill(first);
    a.wait("main restarted", T, || {
        a.running("pod")
            && a.main_pid("pod").is_some_and(|p| p != first)
            && process_field(&a, "pod", "main", &["restartCount"]).as_deref() == Some("1")
    });
    assert_eq!(cat(&a, "pod", "/order"), "first\nsecond\nmain\nmain\n");

    // Made again (the env is baked into it): they run again, in order.
    a.write(
        "p.yaml",
        &manifest("pod", &IN_ORDER.replace("value: pod", "value: again")),
    );
    a.wait("made again", T, || {
        a.running("pod") && a.env.exec("pod", &["cat", "/order"]).1 == "first\nsecond\nmain\n"
    });
}

#[test]
fn a_failing_init_process_backs_off_and_status_names_it() {
    let a = AgentEnv::new("pods-init-fail");
    let _agent = a.start();
    let spec = r#"  initProcesses:
  - name: ok
    args: ["/bin/sh", "-c", "echo ok >> /runs"]
  - name: setup
    args: ["/bin/sh", "-c", "[ -e /fixed ] || exit 3"]
  process:
    args: ["/bin/sh", "-c", "exec sleep 100000"]
"#;
    a.write("f.yaml", &manifest("fails", spec));
    a.write(
        "n.yaml",
        &manifest("never", &format!("  restartPolicy: Never\n{spec}")),
    );
    a.wait("backing off, naming the init process", T, || {
        a.condition("fails", "Ready").is_some_and(|(s, r, m)| {
            s == "False"
                && r == "CrashLoopBackOff"
                && m.contains("init process setup")
                && m.contains("exit code 3")
        }) && process_field(&a, "fails", "setup", &["restartCount"]).is_some_and(|c| c != "0")
    });
    assert_eq!(
        process_field(&a, "fails", "setup", &["lastTermination", "exitCode"]).as_deref(),
        Some("3")
    );
    assert_eq!(a.status_field("fails", "phase").as_deref(), Some("Pending"));
    assert_eq!(a.main_pid("fails"), None, "the main process never started");

    a.wait("failed for good under Never", T, || {
        a.status_field("never", "phase").as_deref() == Some("Failed")
            && a.condition("never", "Ready")
                .is_some_and(|(_, _, m)| m == "init process setup failed (exit code 3)")
    });
    assert_eq!(a.main_pid("never"), None);

    let (code, _, err) = a.env.exec("fails", &["touch", "/fixed"]);
    assert_eq!(code, 0, "{err}");
    a.wait("running once the init process succeeds", T, || {
        a.running("fails")
    });
    assert_eq!(
        cat(&a, "fails", "/runs"),
        "ok\n",
        "a completed one is not rerun"
    );
}

#[test]
fn a_restarted_agent_neither_reruns_nor_loses_an_init_process() {
    let a = AgentEnv::new("pods-init-restart");
    let mut agent = a.start();
    let spec = r#"  initProcesses:
  - name: done
    args: ["/bin/sh", "-c", "echo done >> /order"]
  - name: wait
    args: ["/bin/sh", "-c", "echo wait >> /order; while [ ! -e /go ]; do sleep 0.1; done"]
  process:
    args: ["/bin/sh", "-c", "echo main >> /order; exec sleep 100000"]
"#;
    a.write("w.yaml", &manifest("waits", spec));
    a.wait("the second init process running", T, || {
        process_field(&a, "waits", "wait", &["state"]).as_deref() == Some("Running")
    });
    agent.kill9();
    let _agent = a.start();
    let (code, _, err) = a.env.exec("waits", &["touch", "/go"]);
    assert_eq!(code, 0, "{err}");
    a.wait("running", T, || a.running("waits"));
    assert_eq!(cat(&a, "waits", "/order"), "done\nwait\nmain\n");
}
