//! Peas from images, end to end through the agent, real runc and a real
//! registry on loopback (Debian's `docker-registry`): a sidecar with
//! `image:` runs in a container of its own made from that image's layers,
//! beside a main container made from a rootfs directory. Its image's config
//! fills what the sidecar leaves unset; it reaches the main process over
//! loopback; its exec probe runs in the pea; the image store keeps its
//! image while it is in use; an edit of its image remakes only the pea;
//! destroy leaves no pea container, overlay or cgroup.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/registry.rs"]
mod registry;
mod support;
#[path = "support/test_images.rs"]
mod test_images;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use registry::{Options, Registry};
use support::agent::{AgentEnv, manifest};
use test_images::images;

const T: Duration = Duration::from_secs(60);

/// `rundmc image <args>` on `a`'s store and depot.
fn rundmc_image(a: &AgentEnv, args: &[&str]) -> Output {
    Command::new(support::binary("rundmc"))
        .arg("image")
        .args(args)
        .arg("--image-store")
        .arg(a.env.dir.join("images"))
        .arg("--depot")
        .arg(&a.env.depot)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The main container serves a page on loopback; sidecar `web` is a pea
/// of `image` whose command is only args (the image's Entrypoint, `/bin/sh
/// -c`, runs them), and whose readiness is `probe`, an exec probe.
fn pod_spec(image: &str, probe: &str) -> String {
    format!(
        r#"  process:
    args: ["/bin/sh", "-c", "mkdir -p /www; echo from-main > /www/index.html; exec httpd -f -p 8080 -h /www"]
  sidecars:
  - name: web
    image: {image}
    args: ["echo \"$(id -u) $(pwd) $GREETING\" > /tmp/who; until wget -q -O /tmp/got http://127.0.0.1:8080/index.html; do sleep 0.2; done; exec sleep 100000"]
    readinessProbe:
      exec: {{command: {probe}}}
      periodSeconds: 1
"#
    )
}

/// What `cat <file>` in runtime container `id` prints, and its exit code.
fn cat(a: &AgentEnv, id: &str, file: &str) -> (i32, String) {
    let (code, out, _) = a.env.exec(id, &["cat", file]);
    (code, out)
}

/// The init pid of runtime container `id`, while it has one.
fn init_pid(a: &AgentEnv, id: &str) -> Option<i32> {
    let out = a.env.runc(&["state", id]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["pid"].as_i64().and_then(|p| i32::try_from(p).ok())
}

fn ready(a: &AgentEnv, name: &str) -> bool {
    a.condition(name, "Ready")
        .is_some_and(|(s, _, _)| s == "True")
}

/// Mount points in this mount namespace under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// Runtime containers `runc list` shows for `a`.
fn runc_list(a: &AgentEnv) -> String {
    String::from_utf8_lossy(&a.env.runc(&["list", "-q"]).stdout).into_owned()
}

/// Every layer of the pea's overlay is one of the image store's.
fn pea_lowers_in_store(a: &AgentEnv, rootfs: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(line) = info
        .lines()
        .find(|l| l.split(' ').nth(4) == rootfs.to_str())
    else {
        return false;
    };
    let opts = line.rsplit(' ').next().unwrap_or_default();
    let lower = opts
        .split(',')
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap_or_default();
    let store = a.env.dir.join("images");
    !lower.is_empty() && lower.split(':').all(|l| Path::new(l).starts_with(&store))
}

#[test]
fn a_pea_from_an_image_runs_its_files_and_probe_beside_the_main_process() {
    let imgs = images();
    let reg = Registry::start(Options::default());
    reg.push(&imgs.layout, "layers", "e2e/layers:1");
    reg.push(&imgs.layout, "simple", "e2e/simple:1");
    let layers = format!("{}/e2e/layers:1", reg.addr);
    let simple = format!("{}/e2e/simple:1", reg.addr);
    let mut a = AgentEnv::new("pea-img");
    a.extra
        .extend(["--insecure-registry".into(), reg.addr.clone()]);
    let _agent = a.start();

    // Ready only when the probe finds a file that only `layers` has: it
    // must run in the pea, not in the main container.
    let probe = r#"["cat", "/data/keep.txt"]"#;
    a.write("p.yaml", &manifest("pod", &pod_spec(&layers, probe)));
    let pea = "pod+pea-web";
    a.wait("Ready, through the pea's exec probe", T, || {
        ready(&a, "pod")
    });
    assert_eq!(cat(&a, pea, "/data/keep.txt"), (0, "keep\n".into()));
    let (code, _) = cat(&a, "pod", "/data/keep.txt");
    assert_ne!(
        code, 0,
        "the main container does not have the image's files"
    );
    a.wait(
        "the pea fetched from the main process over loopback",
        T,
        || cat(&a, pea, "/tmp/got").1 == "from-main\n",
    );
    // The image's User, WorkingDir and Env, as the sidecar set none.
    assert_eq!(cat(&a, pea, "/tmp/who").1, "1000 /tmp simple\n");
    let rootfs = a.bundle("pod").join("peas/web/rootfs");
    assert!(
        pea_lowers_in_store(&a, &rootfs),
        "the pea's overlay is the image's layers"
    );
    let pulled = a.events().into_iter().any(|e| {
        e["reason"] == "Pulled"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("spec.sidecars[0].image: "))
    });
    assert!(pulled, "the pull is announced naming the field");

    // The store keeps the pea's image while it is in use.
    let pruned = stdout(&rundmc_image(&a, &["prune"]));
    assert!(pruned.contains("Removed 0 images"), "{pruned}");
    let refused = rundmc_image(&a, &["rm", &layers]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Another image for the pea: only the pea is made again.
    let main = a.main_pid("pod").unwrap();
    let init = a.env.init_pid("pod");
    let pea_init = init_pid(&a, pea);
    let probe = r#"["cat", "/tmp/who"]"#;
    a.write("p.yaml", &manifest("pod", &pod_spec(&simple, probe)));
    a.wait("the pea made again from the other image", T, || {
        a.env.runc_status(pea).as_deref() == Some("running")
            && init_pid(&a, pea).is_some_and(|p| Some(p) != pea_init)
            && cat(&a, pea, "/tmp/who").0 == 0
            && ready(&a, "pod")
    });
    assert_ne!(cat(&a, pea, "/data/keep.txt").0, 0, "not from layers now");
    assert_eq!(a.main_pid("pod"), Some(main), "the main process untouched");
    assert_eq!(a.env.init_pid("pod"), init, "the container untouched");
    let pruned = stdout(&rundmc_image(&a, &["prune"]));
    assert!(pruned.contains("Removed 1 images"), "the old one: {pruned}");
    let ls = stdout(&rundmc_image(&a, &["ls"]));
    assert!(ls.contains(&simple) && !ls.contains(&layers), "{ls}");

    // Destroy: no pea container, overlay, cgroup; its image unused.
    let cgroup = PathBuf::from(format!(
        "/sys/fs/cgroup/pids/{}-peas/{pea}",
        a.env.cgroup_parent
    ));
    assert!(cgroup.is_dir(), "{}", cgroup.display());
    a.remove("p.yaml");
    a.wait("destroyed", T, || !a.env.depot.join("pod").exists());
    assert!(!runc_list(&a).contains("pea"), "{}", runc_list(&a));
    assert_eq!(mounts_under(&a.env.depot), Vec::<String>::new());
    assert_eq!(mounts_under(&a.state.join("bundles")), Vec::<String>::new());
    assert!(!cgroup.exists(), "no pea cgroup");
    assert!(
        !cgroup.parent().unwrap().exists(),
        "no empty cgroup for peas left"
    );
    let pruned = stdout(&rundmc_image(&a, &["prune"]));
    assert!(pruned.contains("Removed 1 images"), "{pruned}");
}
