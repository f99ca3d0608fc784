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
use support::lines_of;

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

    let (code, out, err) = op::run(&a, &["ps", "-o", "wide"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().next().unwrap().contains("HANDLE  SOURCE"),
        "{out}"
    );
    assert!(
        out.contains("web.yaml#1") && out.contains("rootfs"),
        "{out}"
    );

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

    // The flag wins over the environment.
    let socket = op::socket(&a);
    let out = op::command(
        &a,
        &["--api-socket", socket.to_str().unwrap(), "ps", "-o", "yaml"],
    )
    .env("RUNDMC_API_SOCKET", "/nonexistent/rundmc.sock")
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");
    let (code, out, _) = op::run(&a, &["completion", "bash"]);
    assert_eq!(code, 0);
    assert!(out.contains("rundmc") && out.contains("exec") && out.contains("--api-socket"));
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

#[test]
fn logs_follow_keeps_every_line_across_rotations() {
    let mut a = AgentEnv::new("op-logs-f");
    a.extra = [
        "--container-log-max-size",
        "1Ki",
        "--container-log-max-files",
        "3",
    ]
    .map(String::from)
    .to_vec();
    let _agent = a.start();
    let spec = "  process:\n    args: [\"/bin/sh\", \"-c\", \"i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.01; done\"]\n";
    a.write("web.yaml", &manifest("web", spec));
    a.wait("web running", T, || a.running("web"));

    let mut follower = op::command(&a, &["logs", "-f", "web"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let number = |l: &str| l.strip_prefix("line-").unwrap().parse::<u64>().unwrap();
    let first = number(&rx.recv_timeout(T).unwrap());
    let mut last = first;
    // About 20 records fit a 1 KiB file: 300 lines cross about 15 rotations.
    while last < first + 300 {
        let line = rx.recv_timeout(T).expect("logs -f stopped delivering");
        assert_eq!(
            number(&line),
            last + 1,
            "a line lost or repeated after line-{last}"
        );
        last += 1;
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let dir = a.main_log_dir("web").unwrap();
    assert!(dir.join("output.log.2").exists(), "the log rotated");
}

#[test]
fn logs_split_streams_and_take_tail_since_timestamps_and_previous() {
    let a = AgentEnv::new("op-logs");
    let _agent = a.start();
    let spec = "  process:\n    args: [\"/bin/sh\", \"-c\", \"if [ -e /tmp/ran ]; then echo second; exec sleep 3600; fi; touch /tmp/ran; echo out-a; echo err-b >&2; sleep 0.2; echo out-c; exit 1\"]\n";
    a.write("web.yaml", &manifest("web", spec));
    a.wait("the second run", T, || {
        a.running("web") && a.main_log("web").contains("second")
    });

    let (code, out, err) = op::run(&a, &["logs", "web"]);
    assert_eq!((code, out.as_str()), (0, "second\n"), "{err}");
    let (code, out, err) = op::run(&a, &["logs", "--previous", "web"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "out-a\nout-c\n", "err-b\n")
    );
    let (_, out, err) = op::run(&a, &["logs", "-p", "--tail", "1", "web"]);
    assert_eq!((out.as_str(), err.as_str()), ("out-c\n", ""));
    let (_, out, _) = op::run(&a, &["logs", "-p", "--timestamps", "web"]);
    for line in out.lines() {
        let (ts, text) = line.split_once(' ').unwrap();
        assert!(
            humantime::parse_rfc3339(ts).is_ok() && text.starts_with("out-"),
            "{line}"
        );
    }
    let (_, out, _) = op::run(&a, &["logs", "-p", "--since", "1h", "web"]);
    assert_eq!(out, "out-a\nout-c\n");
    let (_, out, err) = op::run(
        &a,
        &["logs", "-p", "--since", "2999-01-01T00:00:00Z", "web"],
    );
    assert_eq!((out.as_str(), err.as_str()), ("", ""));
    let (code, _, err) = op::run(&a, &["logs", "--process", "main-9", "web"]);
    assert_eq!(code, 66, "{err}");
    assert!(err.contains("no process \"main-9\""), "{err}");
}

/// (state, exit code) of the exec processes `describe` lists, oldest first.
fn exec_rows(describe: &str) -> Vec<(String, String)> {
    describe
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.first().is_some_and(|id| id.starts_with("exec-")) && f.len() >= 4)
        .map(|f| (f[2].to_string(), f[3].to_string()))
        .collect()
}

#[test]
fn exec_keeps_stdout_and_stderr_apart_and_passes_the_exit_code() {
    let a = AgentEnv::new("op-exec");
    let _agent = a.start();
    a.write("web.yaml", &manifest("web", SLEEPER));
    a.wait("web running", T, || a.running("web"));

    let script = "echo out; echo err >&2; exit 5";
    let (code, out, err) = op::run(&a, &["exec", "web", "--", "sh", "-c", script]);
    assert_eq!((code, out.as_str(), err.as_str()), (5, "out\n", "err\n"));

    let script = "id -u; pwd; echo $K";
    let args = [
        "exec", "-u", "1000", "-w", "/tmp", "-e", "K=V", "web", "--", "sh", "-c", script,
    ];
    let (code, out, err) = op::run(&a, &args);
    assert_eq!((code, out.as_str()), (0, "1000\n/tmp\nV\n"), "{err}");

    let mut cat = op::command(&a, &["exec", "-i", "web", "--", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = cat.stdin.take().unwrap();
        stdin.write_all(b"hello\nworld\n").unwrap();
    } // closed: cat sees the end of its input and exits
    let out = cat.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nworld\n");

    let (code, _, err) = op::run(&a, &["exec", "web", "--", "/no/such/command"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("/no/such/command"), "{err}");

    // Each exec is a process of the container like any other: reaped, its
    // exit recorded (a start failure's record lands just after the
    // refusal, as its supervisor's last act).
    let (_, out, _) = op::run(&a, &["get", "web", "-o", "json"]);
    assert!(out.contains("\"kind\": \"Container\""), "{out}");
    let describe = || op::run(&a, &["describe", "web"]).1;
    a.wait("every exec recorded as exited", T, || {
        exec_rows(&describe())
            .iter()
            .all(|(state, _)| state == "Exited")
    });
    let out = describe();
    let execs = exec_rows(&out);
    assert_eq!(execs.len(), 4, "{out}");
    assert!(execs.iter().all(|(state, _)| state == "Exited"), "{out}");
    let codes: Vec<&str> = execs.iter().map(|(_, code)| code.as_str()).collect();
    assert_eq!(codes, ["5", "0", "0", "128"], "{out}");
}

#[test]
fn exec_with_a_terminal_sizes_resizes_and_exits_with_the_shell() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    let a = AgentEnv::new("op-tty");
    let _agent = a.start();
    a.write("web.yaml", &manifest("web", SLEEPER));
    a.wait("web running", T, || a.running("web"));

    let size = |rows, cols| nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size(24, 80)), None).unwrap();
    let mut cmd = op::command(&a, &["exec", "-i", "-t", "web", "--", "/bin/sh"]);
    cmd.stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap());
    // SAFETY: only async-signal-safe calls between fork and exec: the
    // client gets a session whose controlling terminal is the pty, so a
    // resize sends it SIGWINCH as a terminal emulator's would.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            match libc::ioctl(0, libc::TIOCSCTTY, 0) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    drop(pty.slave);
    let master = pty.master;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                return;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut writer = std::fs::File::from(master.try_clone().unwrap());
    let mut ask_size_until = |want: &str| {
        let found = support::eventually(T, || {
            writer.write_all(b"stty size\n").unwrap();
            support::eventually(Duration::from_secs(1), || {
                seen.lock().unwrap().contains(want)
            })
        });
        assert!(
            found,
            "no {want:?} from stty size; the terminal showed:\n{}",
            seen.lock().unwrap()
        );
    };
    ask_size_until("24 80");
    // SAFETY: TIOCSWINSZ reads one winsize through a valid pointer.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size(40, 100)) };
    assert_eq!(rc, 0);
    ask_size_until("40 100");
    writer.write_all(b"exit 3\n").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{}", seen.lock().unwrap());
    let (_, out, _) = op::run(&a, &["describe", "web"]);
    assert_eq!(
        exec_rows(&out),
        [("Exited".to_string(), "3".to_string())],
        "{out}"
    );
}

#[test]
fn cp_copies_both_ways_keeping_modes_and_owners_and_symlinks_resolve_inside() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let a = AgentEnv::new("op-cp");
    let _agent = a.start();
    a.write("web.yaml", &manifest("web", SLEEPER));
    a.wait("web running", T, || a.running("web"));
    let here = a.env.dir.join("here");
    std::fs::create_dir_all(here.join("up/sub")).unwrap();
    std::fs::write(here.join("up/a.txt"), "alpha\n").unwrap();
    std::fs::write(here.join("up/sub/b.txt"), "beta\n").unwrap();
    std::fs::set_permissions(
        here.join("up/a.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::chown(here.join("up/a.txt"), Some(1000), Some(1000)).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();

    let (code, _, err) = op::run(&a, &["cp", &s(&here.join("up")), "web:/tmp/up"]);
    assert_eq!(code, 0, "{err}");
    let script = "cat /tmp/up/a.txt; stat -c '%a %u:%g' /tmp/up/a.txt; cat /tmp/up/sub/b.txt";
    let (_, out, err) = op::run(&a, &["exec", "web", "--", "sh", "-c", script]);
    assert_eq!(out, "alpha\n640 1000:1000\nbeta\n", "{err}");

    let (code, _, err) = op::run(&a, &["cp", "web:/tmp/up", &s(&here.join("back"))]);
    assert_eq!(code, 0, "{err}");
    let back = here.join("back/a.txt");
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "alpha\n");
    let meta = std::fs::metadata(&back).unwrap();
    assert_eq!(
        (meta.mode() & 0o777, meta.uid(), meta.gid()),
        (0o640, 1000, 1000)
    );
    assert_eq!(
        std::fs::read_to_string(here.join("back/sub/b.txt")).unwrap(),
        "beta\n"
    );
    let (code, _, err) = op::run(&a, &["cp", "web:/tmp/up/sub/b.txt", &s(&here.join("b2"))]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(here.join("b2")).unwrap(), "beta\n");

    // A symlink in the container pointing at a node path: what is copied
    // through it lands in the container's own tree, never the node's.
    let escape = a.env.dir.join("escape");
    std::fs::create_dir_all(&escape).unwrap();
    let target = format!("../../../../../../..{}", s(&escape));
    let script = format!("mkdir -p {} && ln -s {target} /tmp/esc", s(&escape));
    let (code, _, err) = op::run(&a, &["exec", "web", "--", "sh", "-c", &script]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = op::run(&a, &["cp", &s(&here.join("up/a.txt")), "web:/tmp/esc/"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !escape.join("a.txt").exists(),
        "cp wrote through a symlink onto the node"
    );
    let inside = format!("{}/a.txt", s(&escape));
    let (_, out, err) = op::run(&a, &["exec", "web", "--", "cat", &inside]);
    assert_eq!(out, "alpha\n", "{err}");
    // Out of the container, a symlink stays a symlink: nothing of the node
    // behind it is read, nothing here written through it.
    let (code, _, err) = op::run(&a, &["exec", "web", "--", "ln", "-s", "/", "/tmp/root"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = op::run(&a, &["cp", "web:/tmp/root", &s(&here.join("root"))]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_link(here.join("root")).unwrap(),
        std::path::Path::new("/")
    );

    let (code, _, err) = op::run(&a, &["cp", "web:/no/such", &s(&here.join("x"))]);
    assert_eq!(code, 66, "{err}");
    assert!(err.contains("/no/such"), "{err}");
}

#[test]
fn stats_events_and_attach_show_usage_history_and_live_output() {
    let a = AgentEnv::new("op-watch");
    let _agent = a.start();
    a.wait("the API socket", T, || op::socket(&a).exists());
    let mut follow = op::command(&a, &["events", "-f", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let events = lines_of(&mut follow);
    let spec = "  limits: {memory: 64Mi}\n  process:\n    args: [\"/bin/sh\", \"-c\", \"i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done\"]\n";
    a.write("web.yaml", &manifest("web", spec));
    a.wait("web running", T, || a.running("web"));

    // events -f delivers each event as it is recorded.
    let started = loop {
        let line = events
            .recv_timeout(T)
            .expect("events -f delivered no Started");
        let e: serde_json::Value = serde_json::from_str(&line).unwrap();
        if e["handle"] == "web" && e["reason"] == "Started" {
            break e;
        }
    };
    assert_eq!(started["type"], "Normal");
    let _ = follow.kill();
    let _ = follow.wait();
    let (code, out, err) = op::run(&a, &["events"]);
    assert_eq!(code, 0, "{err}");
    let created = out
        .lines()
        .position(|l| l.contains("Created") && l.contains("web: "));
    let started = out
        .lines()
        .position(|l| l.contains("Started") && l.contains("web: "));
    assert!(created.is_some() && created < started, "{out}");

    let (code, out, err) = op::run(&a, &["stats", "--no-stream", "web"]);
    assert_eq!(code, 0, "{err}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[0], "web", "{out}");
    assert!(row[1].ends_with('%'), "{out}");
    assert!(out.contains("/ 64.0MiB"), "the memory limit: {out}");
    let pids: u64 = row[6]
        .parse()
        .unwrap_or_else(|_| panic!("pids column: {out}"));
    assert!(pids >= 2, "init and the shell at least: {out}");

    // attach follows the main process's output live, and ends with it.
    let mut attach = op::command(&a, &["attach", "web"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let output = lines_of(&mut attach);
    let first: u64 = output
        .recv_timeout(T)
        .unwrap()
        .strip_prefix("tick-")
        .unwrap()
        .parse()
        .unwrap();
    let next: u64 = output
        .recv_timeout(T)
        .unwrap()
        .strip_prefix("tick-")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(next, first + 1);
    let pid = nix::unistd::Pid::from_raw(a.main_pid("web").unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    assert_eq!(attach.wait().unwrap().code(), Some(137));
}

#[test]
fn only_the_newest_sixteen_finished_execs_are_kept() {
    let a = AgentEnv::new("op-keep");
    let _agent = a.start();
    a.write("web.yaml", &manifest("web", SLEEPER));
    a.wait("web running", T, || a.running("web"));
    for i in 0..20 {
        let (code, _, err) = op::run(&a, &["exec", "web", "--", "sh", "-c", &format!("exit {i}")]);
        assert_eq!(code, i, "{err}");
    }
    // The record of an exec goes once its stream has ended, which is
    // after its client exited: wait for it.
    let kept = || {
        let (_, out, _) = op::run(&a, &["describe", "web"]);
        exec_rows(&out)
    };
    a.wait("16 execs kept", T, || kept().len() == 16);
    let codes: Vec<String> = kept().into_iter().map(|(_, code)| code).collect();
    let newest: Vec<String> = (4..20).map(|i: i32| i.to_string()).collect();
    assert_eq!(codes, newest, "the newest are kept, in order");
    // The pruned execs' directories (spec, supervisor's files) and logs
    // go with their records.
    let execs_in = |dir: std::path::PathBuf| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("exec-"))
            })
            .count()
    };
    assert_eq!(
        execs_in(a.bundle("web").join("processes")),
        16,
        "the directories of the pruned execs are gone"
    );
    assert_eq!(
        execs_in(a.env.depot.join("web/processes")),
        16,
        "the logs of the pruned execs are gone"
    );
}

/// Block I/O in `stats` is what the container read from disk: a file the
/// page cache does not hold, read by the container's process, shows in
/// its row.
#[test]
fn stats_counts_what_the_container_reads_from_disk() {
    let a = AgentEnv::new("op-blkio");
    let _agent = a.start();
    let data = a.env.dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let blob = data.join("blob");
    std::fs::write(&blob, vec![7u8; 8 << 20]).unwrap();
    let file = std::fs::File::open(&blob).unwrap();
    file.sync_all().unwrap();
    nix::fcntl::posix_fadvise(
        &file,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .unwrap();
    let spec = format!(
        "  mounts: [{{source: {}, destination: /data, readOnly: true}}]\n  process:\n    args: [\"sh\", \"-c\", \"cat /data/blob >/dev/null; echo read; sleep 600\"]\n",
        data.display()
    );
    a.write("blk.yaml", &manifest("blk", &spec));
    a.wait("blk has read its file", T, || {
        a.running("blk") && a.main_log("blk").contains("read")
    });
    let read = || {
        let (code, out, err) = op::run(&a, &["stats", "--no-stream", "blk"]);
        assert_eq!(code, 0, "{err}");
        // The last three cells: read, "/", written.
        let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[row.len() - 2], "/", "{out}");
        parse_bytes(row[row.len() - 3]).unwrap_or_else(|| panic!("block read: {out}"))
    };
    let read = read();
    assert!(
        read >= (8 << 20) as f64 * 0.9,
        "an 8 MiB read from disk shows in BLOCK I/O: {read}"
    );
}

/// `8.0MiB` as bytes.
fn parse_bytes(cell: &str) -> Option<f64> {
    let units = [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ];
    let (unit, scale) = units.iter().find(|(u, _)| cell.ends_with(u))?;
    let n: f64 = cell.strip_suffix(unit)?.parse().ok()?;
    Some(n * *scale as f64)
}
