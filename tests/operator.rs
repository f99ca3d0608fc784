//! Operator access end to end (issue 18): the `rundmc` verbs against a real
//! agent's API socket and real runc, checked by what a user sees (output,
//! exit codes, the process's own output) and by runc's own view.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/operator.rs"]
mod op;
mod support;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use support::agent::{AgentEnv, manifest};

const T: Duration = Duration::from_secs(60);

const SLEEPER: &str =
    "  process:\n    args: [\"/bin/sh\", \"-c\", \"echo hello; exec sleep 3600\"]\n";

#[test]
fn ps_get_and_describe_show_what_the_agent_runs() {
    let a = AgentEnv::new("op-ps");
    let _agent = a.start();
    a.write("web.yaml", &manifest("web", SLEEPER));
    let done = "  restartPolicy: Never\n  process:\n    args: [\"/bin/true\"]\n";
    a.write("done.yaml", &manifest("done", done));
    a.wait("web running, done succeeded", T, || {
        a.running("web") && a.status_field("done", "phase").as_deref() == Some("Succeeded")
    });

    let (code, out, err) = op::run(&a, &["ps"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("RESTARTS"),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("web ") && l.contains("Running")),
        "{out}"
    );
    assert!(
        !out.contains("done"),
        "ps without -a hides a finished container:\n{out}"
    );

    let (code, out, err) = op::run(&a, &["ps", "-a", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let row = |n: &str| rows.iter().find(|r| r["name"] == n).cloned().unwrap();
    assert_eq!(row("web")["phase"], "Running");
    assert_eq!(row("web")["restarts"], 0);
    assert!(
        row("web")["source"]
            .as_str()
            .unwrap()
            .ends_with("web.yaml#1")
    );
    assert_eq!(row("done")["phase"], "Succeeded");

    let (code, out, err) = op::run(&a, &["get", "web", "-o", "yaml"]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
    assert_eq!(doc["kind"].as_str(), Some("Container"));
    assert_eq!(doc["metadata"]["name"].as_str(), Some("web"));
    assert_eq!(doc["status"]["phase"].as_str(), Some("Running"));
    assert_eq!(doc["spec"]["process"]["args"][0].as_str(), Some("/bin/sh"));

    let (code, out, err) = op::run(&a, &["describe", "web"]);
    assert_eq!(code, 0, "{err}");
    let pid = a.main_pid("web").unwrap().to_string();
    for want in [
        "Name:",
        "Phase:        Running",
        "Conditions:",
        "Ready",
        "Processes:",
        "main-1",
        &pid,
        "Events:",
        "Started",
    ] {
        assert!(out.contains(want), "describe lacks {want:?}:\n{out}");
    }
}

#[test]
fn errors_say_what_is_wrong_with_their_own_exit_codes() {
    let a = AgentEnv::new("op-errors");
    // No agent yet: nothing answers on the socket.
    let (code, _, err) = op::run(&a, &["ps"]);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("agent is not running"), "{err}");

    let _agent = a.start();
    a.wait("the API socket", T, || op::socket(&a).exists());
    let (code, _, err) = op::run(&a, &["get", "nope"]);
    assert_eq!(code, 66, "{err}");
    assert!(err.contains("no such container: nope"), "{err}");
    let (code, _, err) = op::run(&a, &["describe", "team/nope"]);
    assert_eq!(code, 66, "{err}");
    assert!(err.contains("no such container: team/nope"), "{err}");
}

#[test]
fn only_root_and_the_api_group_may_use_the_socket() {
    let mut a = AgentEnv::new("op-perm");
    a.extra = vec!["--api-group".into(), "4242".into()];
    let _agent = a.start();
    a.wait("the API socket", T, || op::socket(&a).exists());

    let member = op::command(&a, &["ps"])
        .uid(4242)
        .gid(4242)
        .output()
        .unwrap();
    assert_eq!(
        member.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&member.stderr)
    );
    assert!(String::from_utf8_lossy(&member.stdout).starts_with("NAME"));

    let other = op::command(&a, &["ps"])
        .uid(4243)
        .gid(4243)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(77), "{err}");
    assert!(err.contains("permission denied"), "{err}");
}
