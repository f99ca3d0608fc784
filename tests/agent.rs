//! `rundmc agent` as a user runs it: the real binary, a manifest directory,
//! real runc. What is checked is what an operator would look at: runc state,
//! the process's log, status files, events, the cgroup tree and the depot.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

mod support;

use std::time::Duration;

use support::agent::{AgentEnv, manifest};
use support::is_mounted;

const T: Duration = Duration::from_secs(30);

const SERVICE: &str = "  env: [{name: GREETING, value: hello}]\n  process:\n    args: [\"/bin/sh\", \"-c\", \"echo $GREETING from main; exec sleep 100000\"]\n";

#[test]
fn a_dropped_file_runs_and_its_output_lands_in_the_log() {
    let a = AgentEnv::new("agent-drop");
    let _agent = a.start();
    a.write("web.yaml", &manifest("web", SERVICE));
    a.wait("web running", T, || a.running("web"));
    a.wait("output in the log", T, || {
        a.main_log("web").contains("stdout F hello from main")
    });
    assert_eq!(
        a.condition("web", "Ready").map(|c| c.0).as_deref(),
        Some("True")
    );
    assert_eq!(
        a.status_field("web", "observedGeneration").as_deref(),
        Some("1")
    );
    let reasons: Vec<String> = a
        .events()
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        reasons.contains(&"Created".to_string()) && reasons.contains(&"Started".to_string()),
        "{reasons:?}"
    );
}

#[test]
fn env_edits_recreate_and_limit_edits_apply_in_place() {
    let a = AgentEnv::new("agent-edit");
    let _agent = a.start();
    let limits = |mem: &str| format!("{SERVICE}  limits: {{memory: {mem}, pids: 50}}\n");
    a.write("web.yaml", &manifest("web", &limits("64Mi")));
    a.wait("web running", T, || a.running("web"));
    let (init, main) = (a.env.init_pid("web"), a.main_pid("web").unwrap());

    a.write("web.yaml", &manifest("web", &limits("96Mi")));
    let mem = a
        .env
        .cgroup_dir("memory", "web")
        .join("memory.limit_in_bytes");
    a.wait("new memory limit", T, || {
        std::fs::read_to_string(&mem).is_ok_and(|v| v.trim() == (96u64 << 20).to_string())
    });
    assert_eq!(a.env.init_pid("web"), init, "same init");
    assert_eq!(a.main_pid("web"), Some(main), "same main pid: no restart");
    a.wait("generation 2 observed", T, || {
        a.status_field("web", "observedGeneration").as_deref() == Some("2")
    });

    a.write(
        "web.yaml",
        &manifest(
            "web",
            &limits("96Mi").replace("value: hello", "value: howdy"),
        ),
    );
    a.wait("recreated with the new env", T, || {
        a.running("web") && a.main_log("web").contains("howdy from main")
    });
    assert_ne!(a.env.init_pid("web"), init, "a new container");
}

#[test]
fn stopped_keeps_init_and_running_starts_again() {
    let a = AgentEnv::new("agent-stop");
    let _agent = a.start();
    a.write("web.yaml", &manifest("web", SERVICE));
    a.wait("web running", T, || a.running("web"));
    let (init, main) = (a.env.init_pid("web"), a.main_pid("web").unwrap());

    a.write(
        "web.yaml",
        &manifest("web", &format!("{SERVICE}  state: Stopped\n")),
    );
    a.wait("phase Stopped", T, || {
        a.status_field("web", "phase").as_deref() == Some("Stopped")
    });
    assert!(
        !std::path::Path::new(&format!("/proc/{main}")).exists(),
        "main process gone"
    );
    assert_eq!(
        a.env.runc_status("web").as_deref(),
        Some("running"),
        "init alive"
    );
    assert_eq!(a.env.init_pid("web"), init);

    a.write("web.yaml", &manifest("web", SERVICE));
    a.wait("running again", T, || {
        a.running("web") && a.main_pid("web") != Some(main)
    });
    assert_eq!(a.env.init_pid("web"), init, "the same container");
    assert_eq!(
        a.status_field("web", "restartCount").as_deref(),
        Some("0"),
        "a start is not a restart"
    );
}

#[test]
fn deleting_the_file_destroys_the_container() {
    let a = AgentEnv::new("agent-delete");
    let _agent = a.start();
    a.write("web.yaml", &manifest("web", SERVICE));
    a.wait("web running", T, || a.running("web"));
    a.remove("web.yaml");
    // The bundle goes last of the container; its status file and the
    // Destroyed event follow it.
    a.wait("destroyed and reported", T, || {
        a.env.runc_status("web").is_none()
            && !a.env.depot.join("web").exists()
            && !a.bundle("web").exists()
            && a.status("web").is_none()
            && a.events().iter().any(|e| e["reason"] == "Destroyed")
    });
    assert!(!is_mounted(&a.bundle("web").join("rootfs")));
}

#[test]
fn invalid_files_are_reported_and_never_take_a_service_down() {
    let a = AgentEnv::new("agent-invalid");
    let _agent = a.start();
    a.write("good.yaml", &manifest("good", SERVICE));
    a.write("bad.yaml", &manifest("bad", "  limits: {memory: 64Q}\n"));
    a.write("junk.yaml", "this: [is not yaml\n");
    a.wait("good running", T, || a.running("good"));
    let bad_path = a.manifests.join("bad.yaml");
    let expect = format!(
        "{}: document 1, line 7: spec.limits.memory: \"64Q\" is not a quantity",
        bad_path.display()
    );
    a.wait("bad reported", T, || {
        a.condition("bad", "Valid").is_some_and(|c| c.2 == expect)
    });
    assert!(a.env.runc_status("bad").is_none(), "nothing created for it");
    assert!(
        a.events()
            .iter()
            .any(|e| e["reason"] == "InvalidManifest" && e["message"] == expect.as_str())
    );
    let junk = a.state.join("status/files/junk.yaml.yaml");
    a.wait("junk reported under its path", T, || junk.exists());
    assert!(
        std::fs::read_to_string(&junk)
            .unwrap()
            .contains("junk.yaml: document 1, line")
    );

    let init = a.env.init_pid("good");
    a.write(
        "good.yaml",
        &manifest("good", &format!("{SERVICE}  hostname: -nope\n")),
    );
    a.wait("good flagged invalid", T, || {
        a.condition("good", "Valid")
            .is_some_and(|c| c.0 == "False" && c.2.contains("spec.hostname"))
    });
    assert!(a.running("good"), "the last good spec keeps running");
    assert_eq!(a.env.init_pid("good"), init);
    assert_eq!(
        a.condition("good", "Ready").map(|c| c.0).as_deref(),
        Some("True")
    );

    // A typo the YAML parser cannot get past: the same.
    let main = a.main_pid("good");
    a.write(
        "good.yaml",
        &format!("{}  hostname: [oops\n", manifest("good", SERVICE)),
    );
    let good_path = a.manifests.join("good.yaml");
    a.wait("good flagged unparsable", T, || {
        a.condition("good", "Valid").is_some_and(|c| {
            c.0 == "False"
                && c.2
                    .starts_with(&format!("{}: document 1, line", good_path.display()))
        })
    });
    // Given a resync (2 s in tests) to take it down, were it going to.
    std::thread::sleep(Duration::from_secs(3));
    assert!(a.running("good"), "the last good spec keeps running");
    assert_eq!((a.env.init_pid("good"), a.main_pid("good")), (init, main));
}

#[test]
fn a_crash_loop_restarts_with_growing_backoff() {
    let a = AgentEnv::new("agent-crash");
    let _agent = a.start();
    a.write(
        "crash.yaml",
        &manifest(
            "crash",
            "  process:\n    args: [\"/bin/sh\", \"-c\", \"echo boom; exit 3\"]\n",
        ),
    );
    let restarts = || {
        a.status_field("crash", "restartCount")
            .and_then(|r| r.parse::<u32>().ok())
            .unwrap_or(0)
    };
    a.wait("three restarts", T, || restarts() >= 3);
    let term = a.status("crash").unwrap()["status"]["lastTermination"].clone();
    assert_eq!(term["exitCode"].as_i64(), Some(3));
    assert_eq!(term["reason"].as_str(), Some("Error"));
    let starts: Vec<std::time::SystemTime> = a
        .events()
        .iter()
        .filter(|e| e["handle"] == "crash" && e["reason"] == "Started")
        .map(|e| humantime::parse_rfc3339(e["time"].as_str().unwrap()).unwrap())
        .collect();
    assert!(starts.len() >= 4, "{starts:?}");
    let gaps: Vec<Duration> = starts
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap())
        .collect();
    assert!(
        gaps[2] > gaps[1] && gaps[1] > gaps[0],
        "backoff grows: {gaps:?}"
    );
    assert!(
        a.events()
            .iter()
            .any(|e| e["handle"] == "crash" && e["reason"] == "BackOff")
    );
}

#[test]
fn a_killed_agent_restarts_without_restarting_anything() {
    let a = AgentEnv::new("agent-restart");
    let mut agent = a.start();
    for n in ["one", "two", "three"] {
        a.write(&format!("{n}.yaml"), &manifest(n, SERVICE));
    }
    a.write("idle.yaml", &manifest("idle", ""));
    a.wait("all running", T, || {
        ["one", "two", "three"].iter().all(|n| a.running(n))
    });
    let before: Vec<(i32, Option<i32>)> = ["one", "two", "three", "idle"]
        .iter()
        .map(|n| (a.env.init_pid(n), a.main_pid(n)))
        .collect();
    agent.kill9();

    let _agent = a.start();
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<(i32, Option<i32>)> = ["one", "two", "three", "idle"]
        .iter()
        .map(|n| (a.env.init_pid(n), a.main_pid(n)))
        .collect();
    assert_eq!(before, after, "same inits and same main processes");
    let listed = a.env.runc(&["list", "-q"]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().count(),
        4,
        "no duplicates"
    );
    for n in ["one", "two", "three"] {
        assert_eq!(a.status_field(n, "restartCount").as_deref(), Some("0"));
    }
}

#[test]
fn a_container_with_an_unreadable_record_is_rebuilt() {
    let a = AgentEnv::new("agent-corrupt");
    let mut agent = a.start();
    a.write("web.yaml", &manifest("web", SERVICE));
    a.wait("web running", T, || a.running("web"));
    let init = a.env.init_pid("web");
    agent.kill9();
    // What a machine crash can leave of an unsynced write, at worst.
    let record = a.env.depot.join("web/container.json");
    std::fs::write(&record, b"{\"handle\": \"web\", \"sp").unwrap();

    let _agent = a.start();
    let whole = || {
        std::fs::read(&record)
            .is_ok_and(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).is_ok())
    };
    a.wait("web rebuilt, with a whole record, and running", T, || {
        whole() && a.running("web") && a.env.init_pid("web") != init
    });
    assert!(support::ended(init), "the old container's init is gone");
}

#[test]
fn a_process_keeps_its_log_on_disk_and_everything_else_on_the_state_tmpfs() {
    let a = AgentEnv::new("agent-split");
    let _agent = a.start();
    a.write("web.yaml", &manifest("web", SERVICE));
    a.wait("web running", T, || a.running("web"));
    let (run, logs) = (a.main_dir("web").unwrap(), a.main_log_dir("web").unwrap());
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    assert!(run.starts_with(&a.state), "{}", run.display());
    assert_eq!(
        names(&run),
        [
            "control",
            "pid",
            "process.json",
            "runtime.log",
            "shim.json",
            "shim.log"
        ],
        "the spec and the supervisor's files, on the state directory"
    );
    assert_eq!(names(&logs), ["output.log"], "only the log in the depot");
    let shim: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("shim.json")).unwrap()).unwrap();
    assert_eq!(shim["logDir"].as_str(), logs.to_str());
    a.wait("the greeting logged", T, || {
        a.main_log("web").contains("stdout F hello from main")
    });
}

#[test]
fn a_main_process_whose_supervisor_died_is_replaced_not_duplicated() {
    let a = AgentEnv::new("agent-lost");
    let _agent = a.start();
    a.write("web.yaml", &manifest("web", SERVICE));
    a.wait("web running", T, || a.running("web"));
    let init = a.env.init_pid("web");
    let old = a.main_pid("web").unwrap();
    let shim_json = a.main_dir("web").unwrap().join("shim.json");
    let shim: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&shim_json).unwrap()).unwrap();
    let shim = shim["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) on the supervisor's pid, read from its own record.
    assert_eq!(unsafe { libc::kill(shim, libc::SIGKILL) }, 0);

    a.wait("main restarted", T, || {
        a.main_pid("web").is_some_and(|p| p != old) && a.running("web")
    });
    assert!(support::ended(old), "the unsupervised main is gone");
    // Init and the one main process: nothing runs beside its restart.
    let left = support::cgroup_pids(&a.env.cgroup_dir("pids", "web").join("cgroup.procs"));
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&init) && left.contains(&a.main_pid("web").unwrap()));
    assert_eq!(a.env.init_pid("web"), init, "the same container");
}

#[test]
fn an_oom_kill_beside_the_main_process_is_reported() {
    let a = AgentEnv::new("agent-oom");
    let _agent = a.start();
    let spec = format!("{SERVICE}  limits: {{memory: 16Mi}}\n");
    a.write("web.yaml", &manifest("web", &spec));
    a.wait("web running", T, || a.running("web"));
    let main = a.main_pid("web");
    // A memory hog beside the main process, started behind the agent's back.
    let (code, _, _) = a
        .env
        .exec("web", &["sh", "-c", "x=a; while true; do x=$x$x; done"]);
    assert_eq!(code, 137, "the hog was OOM-killed");
    a.wait("an OOMKilled event", T, || {
        a.events()
            .iter()
            .any(|e| e["reason"] == "OOMKilled" && e["handle"] == "web")
    });
    assert_eq!(a.main_pid("web"), main, "the main process runs on");
    assert!(a.running("web"));
    assert_eq!(a.status_field("web", "restartCount").as_deref(), Some("0"));
}

#[test]
fn main_process_logs_rotate_as_the_flags_say() {
    let mut a = AgentEnv::new("agent-logrot");
    a.extra = [
        "--container-log-max-size",
        "8Ki",
        "--container-log-max-files",
        "3",
    ]
    .map(String::from)
    .to_vec();
    let _agent = a.start();
    let chatty = "  process:\n    args: [\"/bin/sh\", \"-c\", \"i=0; while [ $i -lt 2000 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; echo last; exec sleep 100000\"]\n";
    a.write("chatty.yaml", &manifest("chatty", chatty));
    a.wait("the last line logged", T, || {
        a.main_log("chatty").contains("stdout F last")
    });
    let dir = a.main_log_dir("chatty").unwrap();
    let mut logs: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("output.log"))
        .collect();
    logs.sort();
    assert_eq!(logs, ["output.log", "output.log.1", "output.log.2"]);
    for name in &logs {
        let size = std::fs::metadata(dir.join(name)).unwrap().len();
        assert!(size <= 8 * 1024, "{name}: {size} bytes");
    }
}

#[test]
fn sigterm_stops_the_agent_and_leaves_containers_running() {
    let a = AgentEnv::new("agent-term");
    let mut agent = a.start();
    a.write("web.yaml", &manifest("web", SERVICE));
    a.wait("web running", T, || a.running("web"));
    let main = a.main_pid("web").unwrap();
    assert!(agent.terminate().success(), "clean exit\n{}", a.agent_log());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.env.runc_status("web").as_deref(), Some("running"));
    assert!(
        std::path::Path::new(&format!("/proc/{main}")).exists(),
        "main process still runs"
    );
}

#[test]
fn a_container_destroyed_behind_the_agents_back_is_recreated() {
    let a = AgentEnv::new("agent-repair");
    let _agent = a.start();
    a.write("web.yaml", &manifest("web", SERVICE));
    a.wait("web running", T, || a.running("web"));
    let init = a.env.init_pid("web");
    assert!(a.env.runc(&["kill", "web", "KILL"]).status.success());
    std::thread::sleep(Duration::from_millis(200));
    a.env.runc(&["delete", "web"]);
    // The resync period is 2 s in these tests.
    a.wait("recreated", Duration::from_secs(15), || {
        a.running("web") && a.env.init_pid("web") != init
    });
}

#[test]
fn fifty_files_at_once_all_run_and_all_go() {
    let a = AgentEnv::new("agent-fifty");
    let _agent = a.start();
    let names: Vec<String> = (0..50).map(|i| format!("c{i:02}")).collect();
    for n in &names {
        a.write(
            &format!("{n}.yaml"),
            &manifest(n, "  process:\n    args: [\"sleep\", \"100000\"]\n"),
        );
    }
    a.wait("all fifty running", Duration::from_secs(120), || {
        names.iter().all(|n| a.running(n))
    });
    for n in &names {
        a.remove(&format!("{n}.yaml"));
    }
    // Empty but for the agent's lock file.
    a.wait("depot empty", Duration::from_secs(120), || {
        std::fs::read_dir(&a.env.depot)
            .map(|d| d.flatten().all(|e| e.file_name() == ".rundmc-agent.lock"))
            .unwrap_or(false)
    });
    assert!(
        String::from_utf8_lossy(&a.env.runc(&["list", "-q"]).stdout)
            .trim()
            .is_empty()
    );
}

#[test]
fn the_example_manifests_are_valid() {
    let dir = support::workspace().join("manifests/examples");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in rundmc::source::manifest::parse(&path, &text) {
            names.push(doc.unwrap_or_else(|e| panic!("{e}")).handle.to_string());
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "crashloop",
            "from-image",
            "idle",
            "limited",
            "pod",
            "ticker",
            "web"
        ]
    );
}

#[test]
fn metrics_health_and_readiness_are_served() {
    let mut a = AgentEnv::new("agent-metrics");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    a.extra = vec!["--metrics-addr".into(), format!("127.0.0.1:{port}")];
    let _agent = a.start();
    a.write(
        "web.yaml",
        &manifest("web", &format!("{SERVICE}  limits: {{memory: 64Mi}}\n")),
    );
    a.wait("web running", T, || a.running("web"));
    let get = |path: &str| -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let code = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, text)
    };
    assert_eq!(get("/healthz").0, 200);
    assert_eq!(get("/readyz").0, 200);
    let (code, metrics) = get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("rundmc_container_memory_limit_bytes{handle=\"web\"} 67108864"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rundmc_reconciles_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert_eq!(get("/nope").0, 404);
}

#[test]
fn removal_is_graceful_the_main_process_gets_sigterm_first() {
    let a = AgentEnv::new("agent-graceful");
    let _agent = a.start();
    let shared = a.env.dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let spec = format!(
        "  mounts: [{{source: {}, destination: /out}}]\n  process:\n    args: [\"/bin/sh\", \"-c\", \"trap 'echo bye > /out/bye; exit 0' TERM; echo up; while true; do sleep 0.1; done\"]\n",
        shared.display()
    );
    a.write("polite.yaml", &manifest("polite", &spec));
    a.wait("running and trapping", T, || {
        a.running("polite") && a.main_log("polite").contains("up")
    });
    a.remove("polite.yaml");
    a.wait("destroyed", T, || {
        a.env.runc_status("polite").is_none() && !a.env.depot.join("polite").exists()
    });
    assert_eq!(
        std::fs::read_to_string(shared.join("bye")).unwrap(),
        "bye\n",
        "it ran its TERM handler"
    );
}
