//! Pods end to end through the agent and real runc: init processes run to
//! completion in order before the main process, once per make of the
//! container; a failing one backs off and status names it. Sidecars run
//! beside the main process, each restarted and edited on its own. Peas
//! (sidecars with a rootfs of their own) are containers of their own that
//! join the main container's network, IPC and UTS namespaces.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/operator.rs"]
mod op;
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

/// The pid of the current run of process `slot` (`sidecar-<name>`) of `name`.
fn slot_pid(a: &AgentEnv, name: &str, slot: &str) -> Option<i32> {
    let dir = a.env.depot.join(name);
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{slot}.json"))).ok()?).ok()?;
    let runs = file["runs"].as_u64()?;
    let pid = std::fs::read_to_string(
        a.bundle(name)
            .join("processes")
            .join(format!("{slot}-{runs}"))
            .join("pid"),
    );
    pid.ok()?.trim().parse().ok()
}

/// Running: neither gone nor a zombie (this machine's PID 1 reaps late).
fn alive(pid: i32) -> bool {
    !support::ended(pid)
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

#[test]
fn a_sidecar_restarts_on_its_own_and_holds_ready() {
    let a = AgentEnv::new("pods-sidecar");
    let mut agent = a.start();
    let spec = r#"  process:
    args: ["/bin/sh", "-c", "exec sleep 100000"]
  sidecars:
  - name: helper
    args: ["/bin/sh", "-c", "echo helper up; exec sleep 100000"]
    readinessProbe:
      exec: {command: ["cat", "/ready"]}
      periodSeconds: 1
"#;
    a.write("s.yaml", &manifest("pod", spec));
    a.wait("running, not ready for the sidecar", T, || {
        a.running("pod")
            && a.condition("pod", "Ready").is_some_and(|(s, r, m)| {
                s == "False" && r == "Unhealthy" && m.starts_with("sidecar helper is not ready")
            })
    });
    let (code, _, err) = a.env.exec("pod", &["touch", "/ready"]);
    assert_eq!(code, 0, "{err}");
    a.wait("ready", T, || {
        a.condition("pod", "Ready")
            .is_some_and(|(s, _, _)| s == "True")
            && process_field(&a, "pod", "helper", &["ready"]).as_deref() == Some("true")
    });
    let log = a
        .env
        .depot
        .join("pod/processes/sidecar-helper-1/output.log");
    assert!(std::fs::read_to_string(&log).unwrap().contains("helper up"));

    let main = a.main_pid("pod").unwrap();
    let helper = slot_pid(&a, "pod", "sidecar-helper").unwrap();
    kill(helper);
    a.wait("the sidecar restarted", T, || {
        slot_pid(&a, "pod", "sidecar-helper").is_some_and(|p| p != helper && alive(p))
            && process_field(&a, "pod", "helper", &["restartCount"]).as_deref() == Some("1")
    });
    assert_eq!(
        a.main_pid("pod"),
        Some(main),
        "the main process was not touched"
    );
    assert!(alive(main));
    assert_eq!(a.status_field("pod", "restartCount").as_deref(), Some("0"));
    assert_eq!(
        process_field(&a, "pod", "helper", &["lastTermination", "exitCode"]).as_deref(),
        Some("137")
    );
    // `rundmc logs --process NAME`: the sidecar's newest run, or the one
    // before, as `kubectl logs -c NAME [--previous]`.
    for extra in [&[][..], &["--previous"][..]] {
        let mut args = vec!["logs", "--process", "helper"];
        args.extend_from_slice(extra);
        args.push("pod");
        let (code, out, err) = op::run(&a, &args);
        assert_eq!((code, out.as_str()), (0, "helper up\n"), "{args:?}: {err}");
    }

    // A restarted agent reattaches: nothing is restarted.
    let helper = slot_pid(&a, "pod", "sidecar-helper").unwrap();
    agent.kill9();
    let _agent = a.start();
    a.wait("ready again after the agent restart", T, || {
        a.condition("pod", "Ready")
            .is_some_and(|(s, _, _)| s == "True")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a.main_pid("pod"), Some(main));
    assert_eq!(slot_pid(&a, "pod", "sidecar-helper"), Some(helper));
    assert!(alive(main) && alive(helper));
}

const TWO_SIDECARS: &str = r#"  process:
    args: ["/bin/sh", "-c", "exec sleep 100000"]
  sidecars:
  - name: one
    args: ["/bin/sh", "-c", "exec sleep 100001"]
  - name: two
    args: ["/bin/sh", "-c", "exec sleep 100002"]
"#;

#[test]
fn an_edit_of_one_sidecar_touches_only_that_sidecar() {
    let a = AgentEnv::new("pods-edit");
    let _agent = a.start();
    a.write("e.yaml", &manifest("pod", TWO_SIDECARS));
    a.wait("running with both sidecars", T, || {
        a.running("pod")
            && slot_pid(&a, "pod", "sidecar-one").is_some_and(alive)
            && slot_pid(&a, "pod", "sidecar-two").is_some_and(alive)
    });
    let init = a.env.init_pid("pod");
    let main = a.main_pid("pod").unwrap();
    let one = slot_pid(&a, "pod", "sidecar-one").unwrap();
    let two = slot_pid(&a, "pod", "sidecar-two").unwrap();
    a.write(
        "e.yaml",
        &manifest("pod", &TWO_SIDECARS.replace("100002", "100003")),
    );
    // Its pid is runc's exec until it execs the sidecar: wait for that.
    let cmdline = |pid: i32| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    a.wait("the edited sidecar replaced", T, || {
        slot_pid(&a, "pod", "sidecar-two").is_some_and(|p| {
            p != two && alive(p) && String::from_utf8_lossy(&cmdline(p)).contains("100003")
        })
    });
    assert!(!alive(two), "the old one is gone");
    assert_eq!(
        a.env.init_pid("pod"),
        init,
        "the container was not made again"
    );
    assert_eq!(a.main_pid("pod"), Some(main));
    assert_eq!(slot_pid(&a, "pod", "sidecar-one"), Some(one));
    assert!(alive(main) && alive(one));

    // Removed: it stops, and the rest runs on.
    let only_one = TWO_SIDECARS.split("  - name: two").next().unwrap();
    a.write("e.yaml", &manifest("pod", only_one));
    let two = slot_pid(&a, "pod", "sidecar-two").unwrap();
    a.wait("the removed sidecar stopped", T, || {
        !alive(two) && process(&a, "pod", "two").is_none()
    });
    assert_eq!(a.main_pid("pod"), Some(main));
    assert_eq!(slot_pid(&a, "pod", "sidecar-one"), Some(one));
    assert_eq!(a.env.init_pid("pod"), init);
}

/// A copy of the test image with a file that tells it apart.
fn pea_rootfs(a: &AgentEnv) -> std::path::PathBuf {
    let dir = a.env.dir.join("pea-rootfs");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(support::image())
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(dir.join("pea-marker"), "pea\n").unwrap();
    dir
}

fn ns(pid: i32, kind: &str) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

/// The pea's runtime id: `<handle>+pea-<name>`.
fn pea_id(name: &str, pea: &str) -> String {
    format!("{name}+pea-{pea}")
}

fn pea_spec(rootfs: &std::path::Path, share: bool) -> String {
    format!(
        r#"  shareProcessNamespace: {share}
  process:
    args: ["/bin/sh", "-c", "mkdir -p /www; echo from-main > /www/index.html; exec httpd -f -p 8080 -h /www"]
  sidecars:
  - name: web
    rootfs: {}
    args: ["/bin/sh", "-c", "until wget -q -O /got http://127.0.0.1:8080/index.html; do sleep 0.2; done; exec sleep 100000"]
    limits: {{pids: 50}}
"#,
        rootfs.display()
    )
}

#[test]
fn a_pea_reaches_the_main_process_over_loopback_and_shares_its_ipc() {
    let a = AgentEnv::new("pods-pea");
    let mut agent = a.start();
    let rootfs = pea_rootfs(&a);
    a.write("p.yaml", &manifest("pod", &pea_spec(&rootfs, false)));
    let pea = pea_id("pod", "web");
    a.wait("the pea fetched from the main process", T, || {
        a.running("pod") && a.env.exec(&pea, &["cat", "/got"]).1 == "from-main\n"
    });
    // Its own rootfs and mount namespace; the container's network, IPC
    // and UTS namespaces; its own PID namespace unless shared.
    assert_eq!(cat(&a, &pea, "/pea-marker"), "pea\n");
    let (code, _, _) = a.env.exec("pod", &["cat", "/pea-marker"]);
    assert_ne!(code, 0, "the main container does not see the pea's files");
    let main = a.main_pid("pod").unwrap();
    let web = slot_pid(&a, "pod", "sidecar-web").unwrap();
    for kind in ["net", "ipc", "uts"] {
        assert_eq!(ns(web, kind), ns(main, kind), "{kind}");
    }
    for kind in ["mnt", "pid"] {
        assert_ne!(ns(web, kind), ns(main, kind), "{kind}");
    }
    let pids_max = format!(
        "/sys/fs/cgroup/pids/{}-peas/{pea}/pids.max",
        a.env.cgroup_parent
    );
    assert_eq!(
        std::fs::read_to_string(pids_max).unwrap().trim(),
        "50",
        "its own limits"
    );
    let log = a.env.depot.join("pod/processes/sidecar-web-1/output.log");
    assert!(log.exists(), "logged as every process");

    // The agent killed and started again: nothing is restarted.
    let pea_init = a.env.init_pid(&pea);
    agent.kill9();
    let _agent = a.start();
    a.wait("reported running again", T, || {
        a.running("pod")
            && process_field(&a, "pod", "web", &["state"]).as_deref() == Some("Running")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a.main_pid("pod"), Some(main));
    assert_eq!(slot_pid(&a, "pod", "sidecar-web"), Some(web));
    assert_eq!(a.env.init_pid(&pea), pea_init);
    assert!(alive(main) && alive(web) && alive(pea_init));
}

#[test]
fn share_process_namespace_lets_a_pea_see_the_main_process() {
    let a = AgentEnv::new("pods-pea-pid");
    let _agent = a.start();
    let rootfs = pea_rootfs(&a);
    a.write("p.yaml", &manifest("pod", &pea_spec(&rootfs, true)));
    let pea = pea_id("pod", "web");
    a.wait("the pea running", T, || {
        a.running("pod") && a.env.exec(&pea, &["cat", "/got"]).1 == "from-main\n"
    });
    let main = a.main_pid("pod").unwrap();
    let web = slot_pid(&a, "pod", "sidecar-web").unwrap();
    assert_eq!(ns(web, "pid"), ns(main, "pid"));
    assert_ne!(ns(web, "mnt"), ns(main, "mnt"));
    let (code, out, err) = a.env.exec(&pea, &["ps"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("httpd -f -p 8080"),
        "the pea sees the main process: {out}"
    );
}

#[test]
fn destroy_leaves_no_pea_container_mount_or_cgroup() {
    let a = AgentEnv::new("pods-pea-destroy");
    let mut agent = a.start();
    let rootfs = pea_rootfs(&a);
    a.write("p.yaml", &manifest("pod", &pea_spec(&rootfs, false)));
    let pea = pea_id("pod", "web");
    a.wait("the pea running", T, || {
        a.running("pod") && a.env.runc_status(&pea).as_deref() == Some("running")
    });
    let pea_init = a.env.init_pid(&pea);
    let cgroup = std::path::PathBuf::from(format!(
        "/sys/fs/cgroup/pids/{}-peas/{pea}",
        a.env.cgroup_parent
    ));
    assert!(cgroup.is_dir(), "{}", cgroup.display());
    let mount = a.bundle("pod").join("peas/web/rootfs");
    assert!(support::is_mounted(&mount));

    // Removed while the agent is down: the next one destroys it at start.
    agent.kill9();
    // And a pea a killed agent left half-made: its directory and overlay,
    // no runtime container yet.
    // Its upper and work in the depot, its rootfs in the bundle.
    let ghost = a.env.depot.join("pod/peas/ghost");
    let ghost_rootfs = a.bundle("pod").join("peas/ghost/rootfs");
    for sub in ["upper", "work"] {
        std::fs::create_dir_all(ghost.join(sub)).unwrap();
    }
    std::fs::create_dir_all(&ghost_rootfs).unwrap();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        support::image().display(),
        ghost.join("upper").display(),
        ghost.join("work").display()
    );
    let status = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(&ghost_rootfs)
        .status()
        .unwrap();
    assert!(status.success());
    a.remove("p.yaml");
    let _agent = a.start();
    a.wait("destroyed", T, || {
        a.env.runc_status("pod").is_none() && !a.env.depot.join("pod").exists()
    });
    assert_eq!(a.env.runc_status(&pea), None, "no pea container");
    assert!(!support::is_mounted(&mount), "no pea mount");
    assert!(
        !support::is_mounted(&ghost_rootfs),
        "no mount of the half-made pea"
    );
    assert!(!cgroup.exists(), "no pea cgroup");
    assert!(!a.bundle("pod").exists(), "no bundle directory");
    assert!(!alive(pea_init));
}
