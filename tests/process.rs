//! The process tracker and `rundmc-shim` against real runc, as root: a
//! container made with raw runc, processes exec'd into it under supervisors.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/common.rs"]
mod common;
#[path = "support/process_container.rs"]
mod container;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use container::{Options, TestContainer, shim_binary};
use rundmc::process::{
    Exit, ExitRecord, FollowFrom, ProcState, Process, ProcessError, Stream, Tracker, cleanup, list,
};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(30);

fn tracker() -> Tracker {
    Tracker::new(shim_binary())
}

async fn exited(p: &Process) -> ExitRecord {
    match timeout(BOUND, p.wait())
        .await
        .expect("wait timed out")
        .unwrap()
    {
        Exit::Exited(rec) => rec,
        Exit::Lost { reason } => panic!("process {} lost: {reason}", p.id()),
    }
}

fn stdout_lines(p: &Process) -> Vec<String> {
    p.logs()
        .unwrap()
        .into_iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| String::from_utf8(l.content).unwrap())
        .collect()
}

/// Waits (bounded) until `path` exists; for test code observing from outside.
fn wait_for_file(path: &Path) {
    for _ in 0..1500 {
        if path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never appeared", path.display());
}

/// Starts a `sleep` at exactly `pid` (via ns_last_pid), as a pid reuser would.
fn decoy_at(pid: i32) -> std::process::Child {
    for _ in 0..500 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let child = Command::new("sleep").arg("1000").spawn().unwrap();
        if child.id() as i32 == pid {
            return child;
        }
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    panic!("could not start a process at pid {pid}");
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| rundmc_shim::procstat::parse_state(&s))
        .is_some_and(|state| state != 'Z')
}

const ROLE: &str = "RUNDMC_PROCESS_TEST_ROLE";

/// In the spawner role (a child of the test), this test only spawns the
/// process and waits to be SIGKILLed; the test itself attaches afterwards.
#[tokio::test]
async fn a_new_agent_attaches_to_a_process_started_by_a_dead_one() {
    if let Ok(spec) = std::env::var(ROLE) {
        let (dir, argv_json) = spec.split_once('\n').unwrap();
        let argv: Vec<String> = serde_json::from_str(argv_json).unwrap();
        let mut launch =
            rundmc::process::Launch::new("p1", dir, argv.into_iter().map(Into::into).collect());
        launch.stdin = true;
        let p = tracker().spawn(launch).await.unwrap();
        println!("SPAWNED {}", p.pid().unwrap());
        tokio::time::sleep(Duration::from_secs(3600)).await;
        unreachable!("the test kills the spawner");
    }
    let c = TestContainer::start("attach", Options::default());
    let dir = c.process_dir(
        "p1",
        &[
            "sh",
            "-c",
            "echo before; read line; echo \"got $line\"; exit 7",
        ],
    );
    let argv: Vec<String> = c
        .runtime_argv(&dir, &c.id)
        .iter()
        .map(|a| a.to_string_lossy().into())
        .collect();
    shim_binary();
    let mut spawner = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_new_agent_attaches_to_a_process_started_by_a_dead_one",
            "--nocapture",
        ])
        .env(
            ROLE,
            format!(
                "{}\n{}",
                dir.display(),
                serde_json::to_string(&argv).unwrap()
            ),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(spawner.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("SPAWNED ") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "spawner ended without spawning"
        );
    }
    spawner.kill().unwrap();
    spawner.wait().unwrap();

    // No agent exists now. Anyone may write into the stdin fifo; the process
    // answers and exits while nobody supervises it but its shim.
    std::fs::write(dir.join("stdin"), "hello\n").unwrap();
    wait_for_file(&dir.join("exit.json"));

    let p = Process::attach(&dir).unwrap();
    assert_eq!(p.id(), "p1");
    assert_eq!(line.trim(), format!("SPAWNED {}", p.pid().unwrap()));
    let rec = exited(&p).await;
    assert_eq!((rec.exit_code, rec.signal), (7, None));
    assert!(matches!(p.state().unwrap(), ProcState::Exited(r) if r.exit_code == 7));
    assert_eq!(stdout_lines(&p), ["before", "got hello"]);
}

#[tokio::test]
async fn ten_mib_unread_output_is_kept_whole_and_rotated() {
    const LINES: u32 = 104_000; // 101 bytes each: 10.5 MB > 10 MiB
    const MAX_BYTES: u64 = 1 << 20;
    let c = TestContainer::start("bulk", Options::default());
    let program = format!(
        "BEGIN {{ pad = sprintf(\"%91s\", \"\"); gsub(/ /, \"x\", pad); for (i = 0; i < {LINES}; i++) printf \"%08d %s\\n\", i, pad }}"
    );
    let mut launch = c.launch("bulk", &["awk", &program]);
    launch.log_max_bytes = MAX_BYTES;
    launch.log_max_files = 20;
    let p = tracker().spawn(launch).await.unwrap();
    // Nobody reads while it writes: it must still finish.
    assert_eq!(exited(&p).await.exit_code, 0);

    let lines = p.logs().unwrap();
    assert_eq!(
        lines.len(),
        LINES as usize,
        "one record per line, none split or lost"
    );
    let mut seen = HashSet::new();
    let mut bytes = 0usize;
    for l in &lines {
        assert!(!l.partial && l.stream == Stream::Stdout);
        let text = std::str::from_utf8(&l.content).unwrap();
        let (n, pad) = text.split_once(' ').unwrap();
        assert_eq!(pad.len(), 91);
        assert!(seen.insert(n.parse::<u32>().unwrap()), "line {n} twice");
        bytes += l.content.len() + 1;
    }
    assert_eq!(seen.len(), LINES as usize);
    assert!(seen.iter().all(|n| *n < LINES));
    assert!(bytes >= 10 << 20, "{bytes} bytes");

    // 30-byte timestamp + " stdout F " + 100 content bytes + newline.
    let record = 141u64;
    let per_file = MAX_BYTES / record;
    let expected_files = (LINES as u64).div_ceil(per_file);
    let files = rundmc::process::logs::log_files(p.dir()).unwrap();
    assert_eq!(files.len() as u64, expected_files);
    for (i, f) in files.iter().enumerate() {
        let size = std::fs::metadata(f).unwrap().len();
        assert!(size <= MAX_BYTES, "{} is {size} bytes", f.display());
        if i + 1 < files.len() {
            assert_eq!(size, per_file * record, "{} is not full", f.display());
        }
    }
}

#[tokio::test]
async fn rotation_keeps_only_the_newest_files() {
    let c = TestContainer::start("rotate", Options::default());
    let mut launch = c.launch("seq", &["seq", "1", "1000"]);
    launch.log_max_bytes = 4096;
    launch.log_max_files = 3;
    let p = tracker().spawn(launch).await.unwrap();
    assert_eq!(exited(&p).await.exit_code, 0);
    let names: Vec<String> = rundmc::process::logs::log_files(p.dir())
        .unwrap()
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["output.log.2", "output.log.1", "output.log"]);
    let kept: Vec<u32> = stdout_lines(&p)
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(*kept.last().unwrap(), 1000);
    assert!(kept.len() < 1000 && kept.len() > 100, "kept {}", kept.len());
    let first = kept[0];
    assert_eq!(
        kept,
        (first..=1000).collect::<Vec<_>>(),
        "the newest lines, contiguous"
    );
}

#[tokio::test]
async fn a_log_that_cannot_be_written_loses_output_never_the_process() {
    let c = TestContainer::start("fulldisk", Options::default());
    let mut launch = c.launch(
        "loud",
        &[
            "sh",
            "-c",
            "head -c 2000000 /dev/zero | tr '\\0' x; echo; echo done",
        ],
    );
    // Every write of the log fails as on a full disk.
    std::os::unix::fs::symlink("/dev/full", launch.dir.join("output.log")).unwrap();
    launch.log_max_bytes = 1 << 40;
    let p = tracker().spawn(launch).await.unwrap();
    let rec = exited(&p).await;
    assert_eq!(
        (rec.exit_code, rec.signal),
        (0, None),
        "neither blocked nor SIGPIPEd"
    );
    let shim_log = std::fs::read_to_string(p.dir().join("shim.log")).unwrap();
    assert!(
        shim_log.contains("cannot write the log (No space left on device"),
        "{shim_log}"
    );
}

#[tokio::test]
async fn exit_codes_and_signals_are_recorded() {
    let c = TestContainer::start("exits", Options::default());
    let t = tracker();
    let three = t
        .spawn(c.launch("three", &["sh", "-c", "exit 3"]))
        .await
        .unwrap();
    let sleeper = t
        .spawn(c.launch("sleeper", &["sleep", "1000"]))
        .await
        .unwrap();
    assert_eq!(sleeper.state().unwrap(), ProcState::Running);
    sleeper.signal(libc::SIGTERM).unwrap();

    let rec = exited(&three).await;
    assert_eq!(
        (rec.exit_code, rec.signal, rec.oom_killed),
        (3, None, false)
    );
    let rec = exited(&sleeper).await;
    assert_eq!(rec.exit_code, 143);
    assert_eq!(rec.signal, Some(libc::SIGTERM));
    assert_eq!(rec.signal_name.as_deref(), Some("SIGTERM"));
    assert!(!rec.oom_killed);
    assert!(rec.finished_at.ends_with('Z'));
}

#[tokio::test]
async fn an_oom_kill_is_reported() {
    let c = TestContainer::start(
        "oom",
        Options {
            memory: Some(32 << 20),
        },
    );
    let mut launch = c.launch(
        "hog",
        &["sh", "-c", "x=aaaaaaaa; while true; do x=$x$x; done"],
    );
    launch.oom_file = Some(c.oom_file());
    let p = tracker().spawn(launch).await.unwrap();
    let rec = exited(&p).await;
    assert_eq!(
        (rec.exit_code, rec.signal_name.as_deref()),
        (137, Some("SIGKILL"))
    );
    assert!(rec.oom_killed, "{rec:?}");

    // A plain SIGKILL in the same container is not an OOM kill.
    let mut launch = c.launch("killed", &["sleep", "1000"]);
    launch.oom_file = Some(c.oom_file());
    let p = tracker().spawn(launch).await.unwrap();
    p.signal(libc::SIGKILL).unwrap();
    let rec = exited(&p).await;
    assert_eq!(rec.exit_code, 137);
    assert!(!rec.oom_killed);
}

#[tokio::test]
async fn signals_never_reach_an_ended_process_or_a_pid_reuser() {
    let c = TestContainer::start("signals", Options::default());
    let p = tracker()
        .spawn(c.launch("p", &["sleep", "1000"]))
        .await
        .unwrap();
    let pid = p.pid().unwrap();
    p.signal(libc::SIGTERM).unwrap();
    assert_eq!(exited(&p).await.exit_code, 143);

    // Its pid now belongs to an unrelated process.
    let mut decoy = decoy_at(pid);
    let err = p.signal(libc::SIGKILL).unwrap_err();
    assert!(matches!(err, ProcessError::NotRunning { .. }), "{err}");
    let fresh = Process::attach(p.dir()).unwrap();
    assert_eq!(fresh.pid(), Some(pid));
    assert!(matches!(
        fresh.signal(libc::SIGKILL),
        Err(ProcessError::NotRunning { .. })
    ));
    assert!(matches!(fresh.state().unwrap(), ProcState::Exited(r) if r.exit_code == 143));
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(pid), "the decoy at pid {pid} was signalled");
    assert!(decoy.try_wait().unwrap().is_none());
    decoy.kill().unwrap();
    decoy.wait().unwrap();
}

#[tokio::test]
async fn wait_on_a_killed_supervisor_is_lost_and_a_pid_reuser_is_not_mistaken_for_it() {
    let c = TestContainer::start("lost", Options::default());
    let p = tracker()
        .spawn(c.launch("p", &["sleep", "1000"]))
        .await
        .unwrap();
    let shim = p.supervisor();
    let waiter = {
        let p = p.clone();
        tokio::spawn(async move { p.wait().await })
    };
    assert_eq!(
        rundmc_shim::procstat::start_time(shim.pid).unwrap(),
        shim.start_time
    );
    // SAFETY: kill with a pid we just verified is the supervisor.
    assert_eq!(unsafe { libc::kill(shim.pid, libc::SIGKILL) }, 0);

    let exit = timeout(BOUND, waiter)
        .await
        .expect("wait hung")
        .unwrap()
        .unwrap();
    let Exit::Lost { reason } = exit else {
        panic!("{exit:?}")
    };
    assert!(
        reason.contains(&format!("supervisor {} died", shim.pid)),
        "{reason}"
    );
    assert!(matches!(p.state().unwrap(), ProcState::Lost { .. }));
    assert!(matches!(
        p.signal(libc::SIGTERM),
        Err(ProcessError::NotRunning { .. })
    ));

    // Once the supervisor is reaped, a new process at its pid is not it.
    for _ in 0..1500 {
        if !Path::new(&format!("/proc/{}", shim.pid)).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut decoy = decoy_at(shim.pid);
    let exit = timeout(BOUND, p.wait())
        .await
        .expect("wait hung on a pid reuser")
        .unwrap();
    assert!(matches!(exit, Exit::Lost { .. }));
    c.destroy();
    let report = cleanup(&c.processes, Duration::from_secs(2)).await.unwrap();
    assert!(
        report.killed_supervisors.is_empty(),
        "killed {:?}",
        report.killed_supervisors
    );
    assert!(
        decoy.try_wait().unwrap().is_none(),
        "cleanup killed the pid reuser"
    );
    decoy.kill().unwrap();
    decoy.wait().unwrap();
}

fn zombie_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut zombies = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
            zombies.push(e.file_name().to_string_lossy().parse().unwrap());
        }
    }
    zombies
}

fn shims_serving(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("rundmc-shim") && c.contains(&needle))
        .collect()
}

#[tokio::test]
async fn destroying_the_container_ends_supervisors_and_cleanup_leaves_nothing() {
    let c = TestContainer::start("destroy", Options::default());
    let t = tracker();
    let a = t.spawn(c.launch("a", &["sleep", "1000"])).await.unwrap();
    let mut with_stdin = c.launch("b", &["cat"]);
    with_stdin.stdin = true;
    let b = t.spawn(with_stdin).await.unwrap();
    let listed = list(&c.processes).unwrap();
    assert_eq!(
        listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(
        listed
            .iter()
            .all(|i| i.state == ProcState::Running && i.pid.is_some())
    );
    assert_eq!(shims_serving(&c.processes).len(), 2);

    c.destroy();
    for p in [&a, &b] {
        let rec = exited(p).await;
        assert_eq!(
            (rec.exit_code, rec.signal_name.as_deref()),
            (137, Some("SIGKILL"))
        );
    }
    let report = cleanup(&c.processes, Duration::from_secs(5)).await.unwrap();
    assert_eq!(report.removed, 2);
    assert!(report.killed_supervisors.is_empty());
    assert!(!c.processes.exists(), "files or fifos left behind");
    assert!(
        shims_serving(&c.processes).is_empty(),
        "{:?}",
        shims_serving(&c.processes)
    );
    // A launcher of a concurrently running test may be a zombie for an
    // instant; one that stays is a leak.
    let first = zombie_children();
    std::thread::sleep(Duration::from_millis(500));
    let lasting: Vec<i32> = zombie_children()
        .into_iter()
        .filter(|z| first.contains(z))
        .collect();
    assert!(lasting.is_empty(), "zombie children {lasting:?}");
}

#[tokio::test]
async fn stdin_reaches_the_process_and_eof_ends_it() {
    let c = TestContainer::start("stdin", Options::default());
    let mut launch = c.launch("cat", &["cat"]);
    launch.stdin = true;
    let p = tracker().spawn(launch).await.unwrap();
    let mut stdin = p.stdin().unwrap();
    stdin.write_all(b"hello\nworld\n").await.unwrap();
    drop(stdin);
    assert_eq!(exited(&p).await.exit_code, 0);
    assert_eq!(stdout_lines(&p), ["hello", "world"]);
    assert!(matches!(p.stdin(), Err(ProcessError::NotRunning { .. })));

    // Without --stdin the process reads /dev/null.
    let p = tracker().spawn(c.launch("null", &["cat"])).await.unwrap();
    assert_eq!(exited(&p).await.exit_code, 0);
    assert!(p.logs().unwrap().is_empty());
}

#[tokio::test]
async fn a_follower_gets_lines_as_they_are_written() {
    let c = TestContainer::start("follow", Options::default());
    let script = "echo one; echo err >&2; while read x; do echo \"line $x\"; done; printf tail";
    let mut launch = c.launch("f", &["sh", "-c", script]);
    launch.stdin = true;
    let p = tracker().spawn(launch).await.unwrap();
    let mut from_start = p.follow(FollowFrom::Start).unwrap();
    let mut first_two = Vec::new();
    for _ in 0..2 {
        let line = timeout(BOUND, from_start.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        first_two.push((line.stream, line.content));
    }
    // stdout and stderr are separate pipes: their order is not fixed.
    first_two.sort_by_key(|(stream, _)| *stream == Stream::Stderr);
    assert_eq!(
        first_two,
        [
            (Stream::Stdout, b"one".to_vec()),
            (Stream::Stderr, b"err".to_vec())
        ]
    );

    // Both are in the log now, so a follower from the end sees neither.
    let mut follower = p.follow(FollowFrom::End).unwrap();
    let mut stdin = p.stdin().unwrap();
    for i in 0..3 {
        stdin.write_all(format!("{i}\n").as_bytes()).await.unwrap();
        let line = timeout(BOUND, follower.next())
            .await
            .expect("no line delivered")
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(line.content).unwrap(),
            format!("line {i}")
        );
        assert_eq!(line.stream, Stream::Stdout);
    }
    drop(stdin);
    let last = timeout(BOUND, follower.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (last.content.as_slice(), last.partial),
        (&b"tail"[..], true)
    );
    assert!(
        timeout(BOUND, follower.next())
            .await
            .expect("follow did not end")
            .is_none()
    );

    let mut rest = Vec::new();
    while let Some(l) = timeout(BOUND, from_start.next()).await.unwrap() {
        rest.push(String::from_utf8(l.unwrap().content).unwrap());
    }
    assert_eq!(rest, ["line 0", "line 1", "line 2", "tail"]);
}

#[tokio::test]
async fn a_start_failure_carries_the_runtime_message() {
    let c = TestContainer::start("fail", Options::default());
    let dir = c.process_dir("p", &["true"]);
    let launch = rundmc::process::Launch::new("p", &dir, c.runtime_argv(&dir, "no-such-container"));
    let err = tracker().spawn(launch).await.unwrap_err();
    let ProcessError::StartFailed { id, message } = &err else {
        panic!("{err}")
    };
    assert_eq!(id, "p");
    assert!(message.contains("container does not exist"), "{message}");
    let p = Process::attach(&dir).unwrap();
    assert_eq!(p.pid(), None);
    let Exit::Exited(rec) = timeout(BOUND, p.wait()).await.unwrap().unwrap() else {
        panic!()
    };
    assert!(!rec.started());
    assert_eq!(rec.start_error.as_deref(), Some(message.as_str()));
    assert!(matches!(
        p.signal(libc::SIGTERM),
        Err(ProcessError::NotRunning { .. })
    ));

    let dir = c.process_dir("bad-binary", &["/no/such/binary"]);
    let launch = rundmc::process::Launch::new("bad-binary", &dir, c.runtime_argv(&dir, &c.id));
    let err = tracker().spawn(launch).await.unwrap_err();
    assert!(
        matches!(&err, ProcessError::StartFailed { message, .. } if message.contains("no such file")),
        "{err}"
    );
}
