//! The containerizer against real runc, as root: what a user of the library
//! would check with `runc state`, `mount`, the cgroup tree and the depot.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rundmc::api::{Handle, HandleError, Mount};
use rundmc::containerizer::depot::DepotError;
use rundmc::containerizer::{ContainerizerError, ErrorKind};
use support::{Env, cgroup_pids, eventually, handle, is_mounted, spec, zombie_children};

#[tokio::test]
async fn create_runs_our_init_as_pid_1() {
    let env = Env::new("create");
    let c = env.containerizer();
    let h = handle("web");
    c.create(&h, &spec(), BTreeMap::new()).await.unwrap();

    assert_eq!(env.runc_status("web").as_deref(), Some("running"));
    let (code, cmdline, _) = env.exec("web", &["cat", "/proc/1/cmdline"]);
    assert_eq!((code, cmdline.trim_end_matches('\0')), (0, "/.rundmc/init"));
    let info = c.info(&h).await.unwrap();
    assert_eq!(info.init_pid, Some(env.init_pid("web")));
    assert_eq!(info.bundle, env.depot.join("web"));
    assert!(
        is_mounted(&env.depot.join("web/rootfs")),
        "the overlay is mounted"
    );
    assert_eq!(c.handles().unwrap(), vec![h.clone()]);

    // Init shrugs off TERM from outside; only destroy's KILL ends it.
    env.runc(&["kill", "web", "TERM"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(env.runc_status("web").as_deref(), Some("running"));
    c.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn destroy_leaves_nothing_and_is_idempotent() {
    let env = Env::new("destroy");
    let c = env.containerizer();
    let h = handle("gone");
    let mut s = spec();
    s.limits.memory = Some(Quantity("32Mi".into()));
    c.create(&h, &s, BTreeMap::new()).await.unwrap();
    env.exec_detached("gone", &["sleep", "1000"]);
    let memory_cg = env.cgroup_dir("memory", "gone");
    assert!(memory_cg.is_dir());

    c.destroy(&h).await.unwrap();
    assert_eq!(env.runc_status("gone"), None, "runc has no container");
    assert!(
        !is_mounted(&env.depot.join("gone/rootfs")),
        "no overlay mount"
    );
    assert!(!memory_cg.exists(), "no cgroup");
    assert!(!env.depot.join("gone").exists(), "no bundle");
    c.destroy(&h).await.unwrap();
    assert!(c.handles().unwrap().is_empty());
}

#[tokio::test]
async fn destroy_finishes_a_half_made_bundle() {
    let env = Env::new("halfmade");
    let c = env.containerizer();
    let h = handle("half");
    c.create(&h, &spec(), BTreeMap::new()).await.unwrap();
    // A crash after the record went: runc container, mount and cgroup remain.
    std::fs::remove_file(env.depot.join("half/container.json")).unwrap();
    let entries = c.depot().entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert!(!entries[0].complete, "recognisably half-made");
    assert!(c.handles().unwrap().is_empty(), "not listed as a container");

    c.destroy(&h).await.unwrap();
    assert_eq!(env.runc_status("half"), None);
    assert!(!env.depot.join("half").exists());
}

#[tokio::test]
async fn failed_creates_leave_nothing_and_name_the_cause() {
    let env = Env::new("failcreate");
    let c = env.containerizer();
    let h = handle("bad");

    let mut missing_rootfs = spec();
    missing_rootfs.rootfs = "/no/such/image".into();
    let err = c
        .create(&h, &missing_rootfs, BTreeMap::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), Some(ErrorKind::RootfsMissing { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("spec.rootfs: /no/such/image"),
        "{err}"
    );

    let mut bad_mount = spec();
    bad_mount.mounts = vec![Mount {
        source: "/no/such/dir".into(),
        destination: "/data".into(),
        read_only: true,
    }];
    let err = c.create(&h, &bad_mount, BTreeMap::new()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.mounts[0].source: /no/such/dir does not exist"),
        "{err}"
    );

    let mut bad_limit = spec();
    bad_limit.limits.memory = Some(Quantity("64Q".into()));
    let err = c.create(&h, &bad_limit, BTreeMap::new()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"spec.limits.memory: "64Q" is not a quantity"#),
        "{err}"
    );

    // A runtime failure after the bundle was made is rolled back.
    let mut bad_dest = spec();
    bad_dest.mounts = vec![Mount {
        source: "/etc/hostname".into(),
        destination: "/proc/x".into(),
        read_only: true,
    }];
    let err = c.create(&h, &bad_dest, BTreeMap::new()).await.unwrap_err();
    assert!(
        matches!(err.kind(), Some(ErrorKind::Runtime { .. })),
        "{err}"
    );

    assert!(
        std::fs::read_dir(&env.depot).unwrap().next().is_none(),
        "depot is empty"
    );
    assert_eq!(env.runc_status("bad"), None);

    c.create(&h, &spec(), BTreeMap::new()).await.unwrap();
    let err = c.create(&h, &spec(), BTreeMap::new()).await.unwrap_err();
    assert!(
        matches!(err, ContainerizerError::Depot(DepotError::AlreadyExists(_))),
        "{err}"
    );
    assert_eq!(
        env.runc_status("bad").as_deref(),
        Some("running"),
        "the first one is untouched"
    );
    c.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn concurrent_creates_of_one_handle_one_wins() {
    let env = Env::new("race");
    let c = env.containerizer();
    let h = handle("race");
    let s = spec();
    let (a, b) = tokio::join!(
        c.create(&h, &s, BTreeMap::new()),
        c.create(&h, &s, BTreeMap::new())
    );
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one create succeeds: {a:?} {b:?}"
    );
    assert_eq!(env.runc_status("race").as_deref(), Some("running"));
    c.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn bad_handles_are_refused_before_the_disk() {
    let env = Env::new("badhandle");
    let c = env.containerizer();
    for bad in ["", "..", "../etc", "a/b", "a b", &"x".repeat(200)] {
        assert!(Handle::new(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        Handle::new("a/b"),
        Err(HandleError::BadChar {
            handle: "a/b".into(),
            bad: '/'
        })
    );
    assert!(std::fs::read_dir(&env.depot).unwrap().next().is_none());

    // Process ids are handles too: one that would leave its directory is
    // refused before anything is written.
    let h = handle("good");
    c.create(&h, &spec(), BTreeMap::new()).await.unwrap();
    let processes = env.depot.join("good/processes");
    let before: Vec<_> = std::fs::read_dir(&processes)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    for bad in ["../escape", "a/b", ".."] {
        let mut run = cmd(&["true"]);
        run.id = Some(bad.into());
        let err = c.run(&h, &run).await.unwrap_err();
        assert!(
            matches!(err.kind(), Some(ErrorKind::BadProcessId { .. })),
            "{bad:?}: {err}"
        );
        assert!(c.attach(&h, bad).is_err(), "{bad:?}");
    }
    let after: Vec<_> = std::fs::read_dir(&processes)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(before, after, "nothing written for them");
    assert!(!env.depot.join("good/escape").exists());
    c.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn stop_leaves_no_child_forked_on_term() {
    let env = Env::new("stopfork");
    let c = env.containerizer();
    let h = handle("forker");
    c.create(&h, &spec(), BTreeMap::new()).await.unwrap();
    let init = env.init_pid("forker");
    // On TERM it leaves a child behind and exits at once, well within grace.
    env.exec_detached(
        "forker",
        &[
            "sh",
            "-c",
            "trap 'sleep 1000 & exit 0' TERM; while true; do sleep 0.1; done",
        ],
    );
    let procs = env.cgroup_dir("freezer", "forker").join("cgroup.procs");
    assert!(eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&procs).unwrap().lines().count() >= 3
    }));
    c.stop(&h, Duration::from_secs(5)).await.unwrap();
    assert_eq!(cgroup_pids(&procs), vec![init], "only init is left");
    c.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn stop_kills_every_process_but_init_even_forking_ones() {
    let env = Env::new("stop");
    let c = env.containerizer();
    let h = handle("stopme");
    c.create(&h, &spec(), BTreeMap::new()).await.unwrap();
    let init = env.init_pid("stopme");
    env.exec_detached("stopme", &["sleep", "1000"]);
    // A fork bomb-ish process: keeps spawning short-lived children.
    env.exec_detached("stopme", &["sh", "-c", "while true; do sleep 1 & done"]);
    // One that ignores TERM, to prove the KILL round.
    env.exec_detached(
        "stopme",
        &["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
    );
    let procs = env.cgroup_dir("freezer", "stopme").join("cgroup.procs");
    assert!(eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&procs).unwrap().lines().count() >= 5
    }));

    c.stop(&h, Duration::from_millis(500)).await.unwrap();
    assert_eq!(cgroup_pids(&procs), vec![init], "only init is left");
    assert_eq!(
        env.runc_status("stopme").as_deref(),
        Some("running"),
        "the container stays"
    );
    assert!(
        env.depot.join("stopme/config.json").exists(),
        "the bundle stays"
    );
    assert_eq!(
        env.exec("stopme", &["true"]).0,
        0,
        "and still runs processes"
    );
    c.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn init_reaps_orphaned_grandchildren() {
    let env = Env::new("reap");
    let c = env.containerizer();
    let h = handle("reaper");
    c.create(&h, &spec(), BTreeMap::new()).await.unwrap();
    let init = env.init_pid("reaper");
    // The subshell exits at once; its sleeps are orphaned to init and exit soon after.
    let (code, _, _) = env.exec(
        "reaper",
        &["sh", "-c", "for i in 1 2 3 4 5; do (sleep 0.2 &); done"],
    );
    assert_eq!(code, 0);
    let procs = env.cgroup_dir("freezer", "reaper").join("cgroup.procs");
    assert!(eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&procs).unwrap().lines().count() == 1
    }));
    // An exited task leaves cgroup.procs before its parent reaps it: give
    // init the moment it needs, then none may be left.
    let reaped = eventually(Duration::from_secs(5), || zombie_children(init).is_empty());
    assert!(reaped, "zombies under init: {:?}", zombie_children(init));
    c.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn two_containers_on_one_image_do_not_share_writes() {
    let env = Env::new("overlay");
    let c = env.containerizer();
    let (a, b) = (handle("left"), handle("right"));
    c.create(&a, &spec(), BTreeMap::new()).await.unwrap();
    c.create(&b, &spec(), BTreeMap::new()).await.unwrap();
    assert_eq!(
        env.exec(
            "left",
            &["sh", "-c", "echo mine > /etc/motd && echo x > /new"]
        )
        .0,
        0
    );
    assert_eq!(env.exec("left", &["cat", "/etc/motd"]).1, "mine\n");
    assert_eq!(
        env.exec("right", &["cat", "/etc/motd"]).1,
        "rundmc test image\n"
    );
    assert_ne!(env.exec("right", &["cat", "/new"]).0, 0);
    let image = support::image();
    assert_eq!(
        std::fs::read_to_string(image.join("etc/motd")).unwrap(),
        "rundmc test image\n"
    );
    assert!(!image.join("new").exists(), "the image is untouched");
    c.destroy(&a).await.unwrap();
    c.destroy(&b).await.unwrap();
}

#[tokio::test]
async fn pids_limit_holds() {
    let env = Env::new("pids");
    let c = env.containerizer();
    let h = handle("few");
    let mut s = spec();
    s.limits.pids = Some(16);
    c.create(&h, &s, BTreeMap::new()).await.unwrap();
    // Forty background sleeps, stdio closed so the exec returns. The shell
    // dies at its first failed fork, which is the point.
    let script = "for i in $(seq 1 40); do sleep 30 </dev/null >/dev/null 2>&1 & done";
    env.exec("few", &["sh", "-c", script]);
    let m = c.metrics(&h).unwrap();
    assert_eq!(m.pids_limit, Some(16));
    assert!(
        m.pids_current <= 16,
        "pids.current {} exceeds the limit",
        m.pids_current
    );
    assert!(
        m.pids_current >= 10,
        "the sleeps that fit did start: {}",
        m.pids_current
    );
    let events =
        std::fs::read_to_string(env.cgroup_dir("pids", "few").join("pids.events")).unwrap();
    assert_ne!(events.trim(), "max 0", "forks were refused at the limit");
    c.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn memory_hog_is_oom_killed_and_counted() {
    let env = Env::new("oom");
    let c = env.containerizer();
    let h = handle("hog");
    let mut s = spec();
    s.limits.memory = Some(Quantity("16Mi".into()));
    c.create(&h, &s, BTreeMap::new()).await.unwrap();
    let before = c.metrics(&h).unwrap();
    assert_eq!(before.memory_limit_bytes, Some(16 << 20));
    assert_eq!(before.oom_kills, 0);
    let (code, _, _) = env.exec("hog", &["sh", "-c", "tail /dev/zero"]);
    assert_eq!(code, 137, "killed by SIGKILL");
    let after = c.metrics(&h).unwrap();
    assert!(after.oom_kills >= 1, "the OOM kill is observed: {after:?}");
    assert_eq!(
        env.runc_status("hog").as_deref(),
        Some("running"),
        "init survives"
    );
    c.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn stream_in_then_out_is_byte_identical() {
    let env = Env::new("stream");
    let c = env.containerizer();
    let h = handle("files");
    c.create(&h, &spec(), BTreeMap::new()).await.unwrap();

    let payload: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut tar_in = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_in);
        let mut header = tar::Header::new_gnu();
        header.set_size(payload.len() as u64);
        header.set_mode(0o640);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        b.append_data(&mut header, "blob.bin", &payload[..])
            .unwrap();
        b.finish().unwrap();
    }
    c.stream_in(&h, "/srv/in", None, &tar_in[..]).await.unwrap();
    let (code, ls, _) = env.exec("files", &["ls", "-l", "/srv/in/blob.bin"]);
    assert_eq!(code, 0, "the file is inside the container");
    assert!(ls.starts_with("-rw-r-----"), "{ls}");

    let mut tar_out = Vec::new();
    c.stream_out(&h, "/srv/in/blob.bin", None, &mut tar_out)
        .await
        .unwrap();
    let mut archive = tar::Archive::new(&tar_out[..]);
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(entry.path().unwrap().to_string_lossy(), "blob.bin");
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut back).unwrap();
    assert!(back == payload, "byte-identical");

    // As a user, files belong to that user.
    c.stream_in(&h, "/home/app/drop", Some("app"), &tar_in[..])
        .await
        .unwrap();
    let (_, owner, _) = env.exec("files", &["stat", "-c", "%u:%g", "/home/app/drop/blob.bin"]);
    assert_eq!(owner.trim(), "1000:1000");
    let err = c
        .stream_out(&h, "/no/such/path", None, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/path"), "{err}");
    c.destroy(&h).await.unwrap();
}

/// Run `args` to completion: (exit code, stdout lines).
async fn run_to_end(
    c: &rundmc::containerizer::Containerizer<rundmc::runtime::Runc>,
    h: &Handle,
    spec: rundmc::containerizer::run::RunSpec,
) -> (i32, Vec<String>) {
    let p = c.run(h, &spec).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(20), p.wait())
        .await
        .unwrap()
        .unwrap();
    let rundmc::process::Exit::Exited(rec) = exit else {
        panic!("lost: {exit:?}")
    };
    let lines = p
        .logs()
        .unwrap()
        .into_iter()
        .filter(|l| l.stream == rundmc::process::Stream::Stdout)
        .map(|l| String::from_utf8_lossy(&l.content).into_owned())
        .collect();
    (rec.exit_code, lines)
}

fn cmd(args: &[&str]) -> rundmc::containerizer::run::RunSpec {
    rundmc::containerizer::run::RunSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn run_gives_output_and_exit_codes() {
    let env = Env::new("run");
    let c = env.containerizer();
    let h = handle("runner");
    c.create(&h, &spec(), BTreeMap::new()).await.unwrap();
    assert_eq!(
        run_to_end(&c, &h, cmd(&["echo", "hello", "world"])).await,
        (0, vec!["hello world".into()])
    );
    assert_eq!(run_to_end(&c, &h, cmd(&["sh", "-c", "exit 3"])).await.0, 3);
    let listed = c.processes(&h).unwrap();
    assert_eq!(listed.len(), 2, "both runs are listed");

    // Not found in the image: the runtime's own message comes back.
    let err = c.run(&h, &cmd(&["/no/such/binary"])).await.unwrap_err();
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    c.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn env_working_dir_and_user_are_applied() {
    let env = Env::new("runenv");
    let c = env.containerizer();
    let h = handle("who");
    let mut s = spec();
    s.env = vec![rundmc::api::EnvVar {
        name: "GREETING".into(),
        value: "hello".into(),
    }];
    c.create(&h, &s, BTreeMap::new()).await.unwrap();

    let mut numeric = cmd(&["sh", "-c", "echo $GREETING $EXTRA; pwd; id -u; id -g"]);
    numeric.env = vec![rundmc::api::EnvVar {
        name: "EXTRA".into(),
        value: "there".into(),
    }];
    numeric.working_dir = Some("/tmp".into());
    numeric.user = Some("1234:5678".into());
    let (code, lines) = run_to_end(&c, &h, numeric).await;
    assert_eq!(
        (code, lines),
        (
            0,
            vec![
                "hello there".into(),
                "/tmp".into(),
                "1234".into(),
                "5678".into()
            ]
        )
    );

    let mut named = cmd(&["sh", "-c", "id -u; id -g; echo $HOME"]);
    named.user = Some("app".into());
    let (code, lines) = run_to_end(&c, &h, named).await;
    assert_eq!(
        (code, lines),
        (0, vec!["1000".into(), "1000".into(), "/home/app".into()])
    );

    let mut unknown = cmd(&["true"]);
    unknown.user = Some("ghost".into());
    let err = c.run(&h, &unknown).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.process.user: user \"ghost\""),
        "{err}"
    );
    c.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn an_oom_kill_is_reported_on_the_process() {
    let env = Env::new("runoom");
    let c = env.containerizer();
    let h = handle("hogger");
    let mut s = spec();
    s.limits.memory = Some(Quantity("16Mi".into()));
    c.create(&h, &s, BTreeMap::new()).await.unwrap();
    let p = c
        .run(&h, &cmd(&["sh", "-c", "tail /dev/zero"]))
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), p.wait())
        .await
        .unwrap()
        .unwrap();
    let rundmc::process::Exit::Exited(rec) = exit else {
        panic!("lost: {exit:?}")
    };
    assert_eq!(
        (rec.exit_code, rec.signal_name.as_deref(), rec.oom_killed),
        (137, Some("SIGKILL"), true)
    );
    assert!(c.metrics(&h).unwrap().oom_kills >= 1);
    c.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn destroy_ends_supervisors_and_leaves_no_zombies() {
    let env = Env::new("rundestroy");
    let c = env.containerizer();
    let h = handle("busy");
    c.create(&h, &spec(), BTreeMap::new()).await.unwrap();
    let a = c.run(&h, &cmd(&["sleep", "1000"])).await.unwrap();
    let b = c.run(&h, &cmd(&["sleep", "1000"])).await.unwrap();
    let shims = [a.supervisor().pid, b.supervisor().pid];
    c.destroy(&h).await.unwrap();
    for pid in shims {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        assert!(!alive, "supervisor {pid} is gone");
    }
    assert!(!env.depot.join("busy").exists(), "no files or fifos left");
    assert_eq!(
        zombie_children(std::process::id() as i32),
        Vec::<i32>::new()
    );
}

#[tokio::test]
async fn supervisors_leave_the_agents_cgroup() {
    let env = Env::new("shimcg");
    let c = env.containerizer();
    let h = handle("moved");
    c.create(&h, &spec(), BTreeMap::new()).await.unwrap();
    let p = c.run(&h, &cmd(&["sleep", "1000"])).await.unwrap();
    let shim = p.supervisor().pid;
    let cgroups = std::fs::read_to_string(format!("/proc/{shim}/cgroup")).unwrap();
    let want = format!("/{}", env.shim_cgroup());
    for line in cgroups.lines() {
        // Every hierarchy (v1 controllers, named ones, cgroup2): id:controllers:path.
        assert!(line.ends_with(&want), "{line} is not in {want}\n{cgroups}");
    }
    // The process it started is in its container's cgroup all the same.
    let pid = p.pid().unwrap();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let container = format!("/{}/moved", env.cgroup_parent);
    assert!(
        cgroups
            .lines()
            .any(|l| l.contains(":memory:") || l.starts_with("0::")),
        "{cgroups}"
    );
    for line in cgroups
        .lines()
        .filter(|l| l.contains(":memory:") || l.contains(":pids:") || l.starts_with("0::"))
    {
        assert!(line.ends_with(&container), "{line} is not in {container}");
    }
    c.destroy(&h).await.unwrap();
}
