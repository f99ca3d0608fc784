//! The supervisor's side of attach's stdin, against real runc: with
//! `keep_stdin_open` (`rundmc-shim --keep-stdin-open`, a spec's `stdin:
//! true`) writers of the `stdin` fifo come and go and the process never
//! reads end of file; with plain `stdin` (`stdinOnce`) the first writer's
//! close is its end of file.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/common.rs"]
mod common;
#[path = "support/process_container.rs"]
mod container;

use std::time::Duration;

use container::{Options, TestContainer, shim_binary};
use rundmc::process::{Exit, ProcState, Process, Stream, Tracker};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(30);

const READER: &[&str] = &[
    "sh",
    "-c",
    "while read l; do echo got:$l; done; echo eof; exit 4",
];

fn stdout_lines(p: &Process) -> Vec<String> {
    p.logs()
        .unwrap()
        .into_iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| String::from_utf8(l.content).unwrap())
        .collect()
}

/// Opens the process's stdin, writes `line`, and closes it: one session.
async fn session(p: &Process, line: &str) {
    let mut w = p.stdin().unwrap();
    w.write_all(format!("{line}\n").as_bytes()).await.unwrap();
}

/// Waits (bounded) until the process's stdout is `want`.
async fn output_becomes(p: &Process, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while stdout_lines(p) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stdout {:?}, wanted {want:?}",
            stdout_lines(p)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_kept_open_stdin_outlives_its_writers() {
    let c = TestContainer::start("keep-stdin", Options::default());
    let mut launch = c.launch("p1", READER);
    launch.stdin = true;
    launch.keep_stdin_open = true;
    let p = Tracker::new(shim_binary()).spawn(launch).await.unwrap();
    session(&p, "one").await;
    session(&p, "two").await;
    output_becomes(&p, &["got:one", "got:two"]).await;
    session(&p, "three").await;
    output_becomes(&p, &["got:one", "got:two", "got:three"]).await;
    assert_eq!(p.state().unwrap(), ProcState::Running, "no end of file");
    p.signal(libc::SIGKILL).unwrap();
    let _ = timeout(BOUND, p.wait()).await.unwrap();
}

#[tokio::test]
async fn a_once_stdin_ends_with_its_first_writer() {
    let c = TestContainer::start("once-stdin", Options::default());
    let mut launch = c.launch("p1", READER);
    launch.stdin = true;
    let p = Tracker::new(shim_binary()).spawn(launch).await.unwrap();
    session(&p, "one").await;
    match timeout(BOUND, p.wait()).await.unwrap().unwrap() {
        Exit::Exited(rec) => assert_eq!(rec.exit_code, 4),
        other => panic!("{other:?}"),
    }
    assert_eq!(stdout_lines(&p), ["got:one", "eof"]);
}
