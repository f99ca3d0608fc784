//! The runtime adapter against real runc and real crun, as root: lifecycle,
//! errors in the runtime's own words, cgroup updates and stats, OOM events,
//! timeouts, and the in-process state reader checked against the binaries'
//! own `state` and `list`.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/common.rs"]
mod common;
#[path = "support/runtime_bundle.rs"]
mod runtime_bundle;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxMemoryBuilder, LinuxResourcesBuilder};
use rundmc::runtime::{Event, OciRuntime, Runc, RuntimeConfig, RuntimeError, State, Status};
use runtime_bundle::{BundleSpec, MEMORY_LIMIT, Sandbox, processes_with, wait_until};
use serde_json::Value;

const MEMORY_HOG: &str = "x=a; while true; do x=$x$x; done";

async fn wait_for_status(rt: &Runc, id: &str, want: Status) -> State {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = rt.state(id).await.unwrap();
        if state.status == want {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never became {want:?}, last {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_and_start(sb: &Sandbox, rt: &Runc, id: &str, spec: &BundleSpec) -> PathBuf {
    let bundle = sb.bundle(id, spec);
    rt.create(id, &bundle, None).await.unwrap();
    rt.start(id).await.unwrap();
    bundle
}

fn call_logs_left(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|name| name.starts_with(".rundmc-"))
                .collect()
        })
        .unwrap_or_default()
}

/// A state as the binary's own JSON document says it.
fn state_of_document(doc: &Value) -> State {
    let status: Status = serde_json::from_value(doc["status"].clone()).unwrap();
    let pid = doc["pid"].as_i64().unwrap() as i32;
    State {
        id: doc["id"].as_str().unwrap().to_owned(),
        pid: (pid > 0).then_some(pid),
        status,
        bundle: PathBuf::from(doc["bundle"].as_str().unwrap()),
    }
}

/// Run `exec_argv` of `echo hello from $(hostname)` with std's Command, as
/// the process supervisor would: (its stdout, the pid it wrote).
fn run_exec_argv(sb: &Sandbox, rt: &Runc, id: &str) -> (String, i32) {
    let work = sb.dir.join("exec");
    std::fs::create_dir_all(&work).unwrap();
    let process = serde_json::json!({
        "terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/",
        "args": ["sh", "-c", "echo hello from $(hostname)"], "env": ["PATH=/bin"],
    });
    std::fs::write(work.join("process.json"), process.to_string()).unwrap();
    let argv = rt.exec_argv(
        id,
        &work.join("process.json"),
        &work.join("pid"),
        &work.join("runtime.log"),
    );
    let out = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = std::fs::read_to_string(work.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), pid)
}

async fn lifecycle(binary: &'static str) {
    let sb = Sandbox::new(binary, "life");
    let rt = sb.runtime();
    let id = "life";
    let bundle = sb.bundle(id, &BundleSpec::default());

    rt.create(id, &bundle, None).await.unwrap();
    let created = rt.state(id).await.unwrap();
    assert_eq!(created.status, Status::Created);
    assert_eq!(created.bundle, bundle);
    let pid = created.pid.expect("a created container has an init pid");
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    rt.start(id).await.unwrap();
    let running = rt.state(id).await.unwrap();
    assert_eq!((running.status, running.pid), (Status::Running, Some(pid)));
    // start returns once init may go on; its execve of sleep follows.
    wait_until(Duration::from_secs(5), "init to exec sleep 1000", || {
        std::fs::read(format!("/proc/{pid}/cmdline")).unwrap() == b"sleep\x001000\x00"
    });
    assert!(rt.list().await.unwrap().contains(&running));

    // exec_argv is complete: another program runs it as is.
    let (stdout, exec_pid) = run_exec_argv(&sb, &rt, id);
    assert_eq!(stdout, "hello from life\n");
    assert!(exec_pid > 0 && exec_pid != pid);

    rt.kill(id, 9, false).await.unwrap();
    let stopped = wait_for_status(&rt, id, Status::Stopped).await;
    assert_eq!(stopped.pid, None);
    rt.delete(id, false).await.unwrap();
    assert!(matches!(
        rt.state(id).await,
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(sb.raw_state(id).is_none());
    assert!(!rt.list().await.unwrap().iter().any(|s| s.id == id));
    assert!(!rt.list_spawned().await.unwrap().iter().any(|s| s.id == id));
    assert!(matches!(
        rt.delete(id, false).await,
        Err(RuntimeError::NotFound { .. })
    ));
    assert_eq!(call_logs_left(&sb.root), Vec::<String>::new());
}

#[tokio::test]
async fn runc_lifecycle() {
    lifecycle("runc").await;
}

#[tokio::test]
async fn crun_lifecycle() {
    lifecycle("crun").await;
}

/// `run --detach`: one call, and the container runs with the init on the
/// stdin it was handed; a bundle the runtime cannot use fails in its own
/// words under the verb `run` and leaves no container behind.
async fn run_detached_runs_the_init_on_its_stdin(binary: &'static str) {
    let sb = Sandbox::new(binary, "rund");
    let rt = sb.runtime();
    let bundle = sb.bundle("rund", &BundleSpec::default());
    let stdin_path = sb.dir.join("init-stdin");
    std::fs::write(&stdin_path, b"").unwrap();
    let stdin = std::fs::File::open(&stdin_path).unwrap();
    rt.run_detached("rund", &bundle, Some(stdin.into()))
        .await
        .unwrap();
    let running = rt.state("rund").await.unwrap();
    assert_eq!(running.status, Status::Running);
    let pid = running.pid.expect("a running container has an init pid");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap(),
        stdin_path
    );
    rt.kill("rund", 9, false).await.unwrap();
    wait_for_status(&rt, "rund", Status::Stopped).await;
    rt.delete("rund", false).await.unwrap();

    let missing = sb.dir.join("no-such-rootfs");
    let broken = BundleSpec {
        rootfs: Some(missing.clone()),
        ..BundleSpec::default()
    };
    let bundle = sb.bundle("broken", &broken);
    match rt.run_detached("broken", &bundle, None).await {
        Err(RuntimeError::Failed {
            verb: "run",
            message,
            ..
        }) => {
            assert!(message.contains(missing.to_str().unwrap()), "{message}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(matches!(
        rt.state("broken").await,
        Err(RuntimeError::NotFound { .. })
    ));
    assert_eq!(call_logs_left(&sb.root), Vec::<String>::new());
}

#[tokio::test]
async fn runc_run_detached_runs_the_init_on_its_stdin() {
    run_detached_runs_the_init_on_its_stdin("runc").await;
}

#[tokio::test]
async fn crun_run_detached_runs_the_init_on_its_stdin() {
    run_detached_runs_the_init_on_its_stdin("crun").await;
}

async fn missing_ids_are_not_found(binary: &'static str) {
    let sb = Sandbox::new(binary, "missing");
    let rt = sb.runtime();
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(MEMORY_LIMIT)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let not_found = |r: Result<(), RuntimeError>| matches!(r, Err(RuntimeError::NotFound { ref id }) if id == "nope");
    assert!(not_found(rt.delete("nope", false).await));
    assert!(not_found(rt.start("nope").await));
    assert!(not_found(rt.kill("nope", 15, true).await));
    assert!(not_found(rt.update("nope", &resources).await));
    assert!(not_found(rt.state("nope").await.map(drop)));
    assert!(not_found(rt.state_spawned("nope").await.map(drop)));
    assert!(not_found(rt.stats("nope").await.map(drop)));
    assert!(not_found(rt.events("nope").await.map(drop)));
    // A forced delete of nothing is what both runtimes call a success.
    rt.delete("nope", true).await.unwrap();
}

#[tokio::test]
async fn runc_missing_ids_are_not_found() {
    missing_ids_are_not_found("runc").await;
}

#[tokio::test]
async fn crun_missing_ids_are_not_found() {
    missing_ids_are_not_found("crun").await;
}

async fn missing_rootfs_fails_in_the_runtimes_words(binary: &'static str) {
    let sb = Sandbox::new(binary, "norootfs");
    let rt = sb.runtime();
    let missing = sb.dir.join("no-such-rootfs");
    let bundle = sb.bundle(
        "norootfs",
        &BundleSpec {
            rootfs: Some(missing.clone()),
            ..BundleSpec::default()
        },
    );
    match rt.create("norootfs", &bundle, None).await {
        Err(RuntimeError::Failed {
            verb: "create",
            id,
            message,
            code,
        }) => {
            assert_eq!(id, "norootfs");
            assert!(message.contains(missing.to_str().unwrap()), "{message}");
            assert!(
                message.to_lowercase().contains("no such file or directory"),
                "{message}"
            );
            assert_eq!(code, Some(1));
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(call_logs_left(&sb.root), Vec::<String>::new());
}

#[tokio::test]
async fn runc_missing_rootfs_fails_in_runcs_words() {
    missing_rootfs_fails_in_the_runtimes_words("runc").await;
}

#[tokio::test]
async fn crun_missing_rootfs_fails_in_cruns_words() {
    missing_rootfs_fails_in_the_runtimes_words("crun").await;
}

async fn update_changes_the_memory_limit(binary: &'static str) {
    let sb = Sandbox::new(binary, "update");
    let rt = sb.runtime();
    create_and_start(&sb, &rt, "update", &BundleSpec::default()).await;
    let limit_file = sb
        .cgroup_dir("memory", "update")
        .join("memory.limit_in_bytes");
    let read_limit = || {
        std::fs::read_to_string(&limit_file)
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    assert_eq!(read_limit(), MEMORY_LIMIT);

    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(2 * MEMORY_LIMIT)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    rt.update("update", &resources).await.unwrap();
    assert_eq!(read_limit(), 2 * MEMORY_LIMIT);
}

#[tokio::test]
async fn runc_update_changes_the_memory_limit() {
    update_changes_the_memory_limit("runc").await;
}

#[tokio::test]
async fn crun_update_changes_the_memory_limit() {
    update_changes_the_memory_limit("crun").await;
}

async fn stats_report_usage(binary: &'static str) {
    let sb = Sandbox::new(binary, "stats");
    let rt = sb.runtime();
    create_and_start(&sb, &rt, "stats", &BundleSpec::default()).await;
    let stats = rt.stats("stats").await.unwrap();
    assert!(stats.memory_usage_bytes > 0, "{stats:?}");
    assert_eq!(stats.memory_limit_bytes, MEMORY_LIMIT as u64);
    assert!(stats.pids_current >= 1, "{stats:?}");
    assert!(stats.cpu_usage_ns > 0, "{stats:?}");
    let pids_file = sb.cgroup_dir("pids", "stats").join("pids.current");
    let pids: u64 = std::fs::read_to_string(pids_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(stats.pids_current, pids);
}

#[tokio::test]
async fn runc_stats_report_usage() {
    stats_report_usage("runc").await;
}

#[tokio::test]
async fn crun_stats_report_usage() {
    stats_report_usage("crun").await;
}

/// Run the memory hog until an OOM event arrives: `runc events` needs a
/// moment to register for OOM notifications, and an OOM before that is not
/// reported, so each attempt allocates again.
async fn hog_until_oom(sb: &Sandbox, id: &str, rx: &mut tokio::sync::mpsc::Receiver<Event>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no OOM event within a minute");
        let (code, _) = sb.exec(id, &["sh", "-c", MEMORY_HOG]);
        assert_eq!(code, 137, "the memory hog was not killed");
        match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            Ok(Some(Event::Oom { id: got })) => return assert_eq!(got, id),
            Ok(Some(other)) => panic!("unexpected event {other:?}"),
            Ok(None) => panic!("the event stream ended"),
            Err(_elapsed) => continue,
        }
    }
}

async fn events_report_ooms(binary: &'static str) {
    let sb = Sandbox::new(binary, "oom");
    let rt = sb.runtime();
    let spec = BundleSpec {
        memory_swap: Some(MEMORY_LIMIT),
        ..BundleSpec::default()
    };
    create_and_start(&sb, &rt, "oom", &spec).await;
    let mut rx = rt.events("oom").await.unwrap();
    hog_until_oom(&sb, "oom", &mut rx).await;

    let root = sb.root.to_str().unwrap();
    let watchers = || processes_with(&[binary, "events", "oom", root]);
    if binary == "runc" {
        assert_eq!(watchers().len(), 1, "one runc events process");
    }
    drop(rx);
    wait_until(Duration::from_secs(5), "the events process to exit", || {
        watchers().is_empty()
    });

    // A stream ends when its container is deleted.
    let mut rx = rt.events("oom").await.unwrap();
    rt.delete("oom", true).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
    wait_until(Duration::from_secs(5), "the events process to exit", || {
        watchers().is_empty()
    });
    assert_eq!(call_logs_left(&sb.root), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_events_report_ooms() {
    events_report_ooms("runc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crun_events_report_ooms() {
    events_report_ooms("crun").await;
}

#[tokio::test]
async fn a_hung_runtime_times_out_and_leaves_nothing_behind() {
    let sb = Sandbox::new("runc", "hung");
    let marker = format!("{}", 700_000 + std::process::id());
    let script = sb.dir.join("hung-runtime");
    std::fs::write(&script, format!("#!/bin/sh\nsleep {marker}\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt = Runc::new(RuntimeConfig {
        binary: script.clone(),
        root: sb.root.clone(),
        timeout: Duration::from_millis(300),
    });

    let started = Instant::now();
    let err = rt.kill("any", 15, false).await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::Timeout { verb: "kill", ref id, .. } if id == "any"),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let err = rt.list_spawned().await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::Timeout { verb: "list", .. }),
        "{err:?}"
    );
    wait_until(
        Duration::from_secs(2),
        "the hung runtime's children to die",
        || {
            processes_with(&["sleep", &marker]).is_empty()
                && processes_with(&["/bin/sh", script.to_str().unwrap()]).is_empty()
        },
    );
    assert_eq!(call_logs_left(&sb.root), Vec::<String>::new());

    // State and list come from the state directory: the binary is not run.
    let started = Instant::now();
    assert!(matches!(
        rt.state("any").await,
        Err(RuntimeError::NotFound { .. })
    ));
    assert_eq!(rt.list().await.unwrap(), vec![]);
    assert!(started.elapsed() < Duration::from_millis(300));
}

async fn in_process_state_agrees_with_the_binary(binary: &'static str) {
    let sb = Sandbox::new(binary, "agree");
    let rt = sb.runtime();
    let spec = BundleSpec::default();
    let bundle = sb.bundle("created", &spec);
    rt.create("created", &bundle, None).await.unwrap();
    create_and_start(&sb, &rt, "running", &spec).await;
    create_and_start(&sb, &rt, "paused", &spec).await;
    let out = sb.raw(&["pause", "paused"]);
    assert!(
        out.status.success(),
        "pause: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    create_and_start(&sb, &rt, "stopped", &spec).await;
    rt.kill("stopped", 9, false).await.unwrap();
    wait_until(
        Duration::from_secs(10),
        "the stopped container to stop",
        || {
            sb.raw_state("stopped")
                .is_some_and(|doc| doc["status"] == "stopped")
        },
    );

    let expected = [
        ("created", Status::Created),
        ("paused", Status::Paused),
        ("running", Status::Running),
        ("stopped", Status::Stopped),
    ];
    for (id, status) in expected {
        let ours = rt.state(id).await.unwrap();
        let theirs = state_of_document(&sb.raw_state(id).unwrap());
        assert_eq!(ours, theirs, "{binary} state {id}");
        assert_eq!(ours.status, status);
        assert_eq!(rt.state_spawned(id).await.unwrap(), theirs);
    }
    let theirs: Vec<State> = sb.raw_list().iter().map(state_of_document).collect();
    let by_id = |states: Vec<State>| {
        states
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(by_id(rt.list().await.unwrap()), by_id(theirs.clone()));
    assert_eq!(rt.list().await.unwrap().len(), 4);
    assert_eq!(by_id(rt.list_spawned().await.unwrap()), by_id(theirs));
}

#[tokio::test]
async fn runc_in_process_state_agrees_with_runc() {
    in_process_state_agrees_with_the_binary("runc").await;
}

#[tokio::test]
async fn crun_in_process_state_agrees_with_crun() {
    in_process_state_agrees_with_the_binary("crun").await;
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// CPU time of this process's reaped children, in nanoseconds (clock ticks
/// of 10 ms, so only meaningful over many calls).
fn children_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = text[text.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    // Fields 16 and 17 (cutime, cstime), counted from field 3.
    let ticks: u64 = fields[13].parse::<u64>().unwrap() + fields[14].parse::<u64>().unwrap();
    ticks * 10_000_000
}

/// Checks that 200 in-process and 200 spawned `state` calls agree, and
/// prints what each costs (run alone, `--test-threads=1`, for clean CPU
/// figures: other tests' children count otherwise).
#[tokio::test]
async fn in_process_state_matches_spawned_state_over_many_calls() {
    const CALLS: u32 = 200;
    let sb = Sandbox::new("runc", "cost");
    let rt = sb.runtime();
    create_and_start(&sb, &rt, "cost", &BundleSpec::default()).await;
    let reference = rt.state_spawned("cost").await.unwrap();

    let (wall, cpu) = (Instant::now(), thread_cpu_ns());
    for _ in 0..CALLS {
        assert_eq!(rt.state("cost").await.unwrap(), reference);
    }
    let (in_wall, in_cpu) = (
        wall.elapsed() / CALLS,
        (thread_cpu_ns() - cpu) / u64::from(CALLS),
    );

    let (wall, cpu, children) = (Instant::now(), thread_cpu_ns(), children_cpu_ns());
    for _ in 0..CALLS {
        assert_eq!(rt.state_spawned("cost").await.unwrap(), reference);
    }
    let sp_wall = wall.elapsed() / CALLS;
    let sp_cpu = (thread_cpu_ns() - cpu + children_cpu_ns() - children) / u64::from(CALLS);
    eprintln!(
        "state, mean of {CALLS}: in-process {in_wall:?} wall, {in_cpu} ns CPU; \
         spawned runc {sp_wall:?} wall, {sp_cpu} ns CPU (agent + runc); \
         ratio wall {:.0}x, CPU {:.0}x",
        sp_wall.as_secs_f64() / in_wall.as_secs_f64(),
        sp_cpu as f64 / in_cpu.max(1) as f64,
    );
}
