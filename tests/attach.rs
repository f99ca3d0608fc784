//! `rundmc attach -i` end to end (issue 18): the main process's stdin when
//! its spec says `stdin: true`, through the real CLI, a real agent and
//! real runc. Checked by what a user sees: the process's answers in the
//! attach output and in `rundmc logs`, its end of file (`eof`, exit 4)
//! only when `stdinOnce` says so, and the CLI's refusals.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/operator.rs"]
mod op;
mod support;

use std::io::Write;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use support::agent::{AgentEnv, manifest};

const T: Duration = Duration::from_secs(60);

/// A main process that answers each line of its stdin, and says when its
/// stdin ends.
fn reader(extra: &str) -> String {
    format!(
        "  process:\n    args: [\"/bin/sh\", \"-c\", \"while read l; do echo got:$l; done; echo eof; exit 4\"]\n{extra}"
    )
}

/// One `rundmc attach -i NAME` session, its stdin and stdout piped.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Session {
    fn start(a: &AgentEnv, name: &str) -> Session {
        let mut child = op::command(a, &["attach", "-i", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let lines = support::lines_of(&mut child);
        Session {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Reads the attach output until `want`, failing with what came instead.
    fn expect(&mut self, want: &str) {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(T) {
                Ok(line) if line == want => return,
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = self.child.kill();
                    let err = stderr_of(&mut self.child);
                    panic!("attach never printed {want:?}; it printed {seen:?}; stderr: {err}");
                }
            }
        }
    }

    /// Ends this session's stdin (the CLI sends close-stdin).
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Detaches by going away (as a killed terminal would).
    fn disconnect(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an ended (or killed) session wrote to stderr.
fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = child.wait();
    err
}

/// `rundmc logs NAME`'s stdout.
fn logs(a: &AgentEnv, name: &str) -> String {
    let (code, out, err) = op::run(a, &["logs", name]);
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn stdin_reaches_the_process_and_survives_detaching() {
    let a = AgentEnv::new("attach-stdin");
    let _agent = a.start();
    a.write(
        "reader.yaml",
        &manifest("reader", &reader("    stdin: true\n")),
    );
    a.wait("reader running", T, || a.running("reader"));
    let pid = a.main_pid("reader");

    let mut first = Session::start(&a, "reader");
    first.send("one");
    first.send("two");
    first.expect("got:one");
    first.expect("got:two");
    let out = logs(&a, "reader");
    assert!(out.contains("got:one\ngot:two\n"), "rundmc logs: {out:?}");
    first.disconnect();

    // Its stdin outlived the session that went away.
    let mut second = Session::start(&a, "reader");
    second.send("three");
    second.expect("got:three");
    // Ending this session's stdin detaches it, and ends nothing else.
    second.close_stdin();
    let mut third = Session::start(&a, "reader");
    third.send("four");
    third.expect("got:four");
    second.disconnect();
    third.disconnect();

    let out = logs(&a, "reader");
    assert!(
        out.contains("got:three\ngot:four\n"),
        "rundmc logs: {out:?}"
    );
    assert!(
        !out.contains("eof"),
        "the process never read end of file: {out:?}"
    );
    assert!(a.running("reader"));
    assert_eq!(a.main_pid("reader"), pid, "the same run, never restarted");
}

#[test]
fn stdin_once_closes_stdin_when_the_first_session_detaches() {
    let a = AgentEnv::new("attach-once");
    let _agent = a.start();
    let once = "    stdin: true\n    stdinOnce: true\n  restartPolicy: Never\n";
    a.write("ends.yaml", &manifest("ends", &reader(once)));
    a.write("goes.yaml", &manifest("goes", &reader(once)));
    a.wait("both running", T, || a.running("ends") && a.running("goes"));

    // The session's stdin ends: the process reads end of file, and the
    // session, still attached, sees it answer and end with exit code 4.
    let mut ends = Session::start(&a, "ends");
    ends.send("one");
    ends.expect("got:one");
    ends.close_stdin();
    ends.expect("eof");
    assert_eq!(ends.child.wait().unwrap().code(), Some(4));

    // The session goes away: the same.
    let mut goes = Session::start(&a, "goes");
    goes.send("one");
    goes.expect("got:one");
    goes.disconnect();
    a.wait("goes failed with exit 4", T, || {
        a.status_field("goes", "phase").as_deref() == Some("Failed")
    });
    for name in ["ends", "goes"] {
        let out = logs(&a, name);
        assert!(out.contains("got:one\neof\n"), "{name}: {out:?}");
    }
    let last = a.status("goes").unwrap()["status"]["lastTermination"]["exitCode"].clone();
    assert_eq!(last.as_i64(), Some(4), "{last:?}");
}

#[test]
fn stdin_attaches_again_after_the_agent_is_killed() {
    let a = AgentEnv::new("attach-restart");
    let mut agent = a.start();
    a.write(
        "reader.yaml",
        &manifest("reader", &reader("    stdin: true\n")),
    );
    a.wait("reader running", T, || a.running("reader"));
    let pid = a.main_pid("reader");
    let mut before = Session::start(&a, "reader");
    before.send("one");
    before.expect("got:one");

    agent.kill9();
    // The agent's end of the session went with it.
    assert_ne!(before.child.wait().unwrap().code(), Some(0));
    let _agent = a.start();
    a.wait("the API socket again", T, || {
        op::run(&a, &["get", "reader"]).0 == 0
    });

    let mut after = Session::start(&a, "reader");
    after.send("two");
    after.expect("got:two");
    after.disconnect();
    let out = logs(&a, "reader");
    assert!(out.contains("got:one\ngot:two\n"), "rundmc logs: {out:?}");
    assert!(!out.contains("eof"), "{out:?}");
    assert_eq!(a.main_pid("reader"), pid, "the same run, never restarted");
    assert!(a.running("reader"));
}

#[test]
fn stdin_is_refused_without_stdin_true_and_tty_is_refused_by_name() {
    let a = AgentEnv::new("attach-refused");
    let _agent = a.start();
    // Without `stdin: true` its stdin is /dev/null: cat ends at once.
    let plain = "  process:\n    args: [\"/bin/sh\", \"-c\", \"cat; echo eof; exec sleep 3600\"]\n";
    a.write("plain.yaml", &manifest("plain", plain));
    a.write(
        "tty.yaml",
        &manifest("tty", &reader("    stdin: true\n    tty: true\n")),
    );
    a.wait("plain running", T, || a.running("plain"));

    let (code, _, err) = op::run(&a, &["attach", "-i", "plain"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("plain: its main process has no stdin to attach to")
            && err.contains("spec.process.stdin: true"),
        "{err}"
    );
    a.wait("plain read end of file from /dev/null", T, || {
        logs(&a, "plain") == "eof\n"
    });

    let tty = format!(
        "{}: document 1, line 10: spec.process.tty: a terminal for the main process is not supported",
        a.manifests.join("tty.yaml").display()
    );
    a.wait("tty refused", T, || {
        a.condition("tty", "Valid")
            .is_some_and(|c| c.0 == "False" && c.2.starts_with(&tty))
    });
    assert!(a.env.runc_status("tty").is_none(), "nothing made for it");
}
