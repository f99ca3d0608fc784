//! Containers from images, end to end as an operator sees them: the real
//! agent pulls from a real registry on loopback (Debian's
//! `docker-registry`, TLS from a test CA, htpasswd), runs the image's
//! command with its config's defaults, reports the image's id, backs off a
//! failed pull and recovers, refuses a corrupted blob, survives a SIGKILL
//! mid-pull, collects unused images and never used ones, and runs an
//! imported image (the agent's own) on a node with no registry.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/registry.rs"]
mod registry;
mod support;
#[path = "support/test_images.rs"]
mod test_images;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use registry::{Options, Registry, test_ca};
use support::agent::{AgentEnv, manifest};
use test_images::{TestImages, images};

const T: Duration = Duration::from_secs(60);

/// A manifest of `name` running `image`, with `extra` spec lines.
fn image_manifest(name: &str, image: &str, extra: &str) -> String {
    manifest(name, extra).replace(
        &format!("  rootfs: {}\n", support::image().display()),
        &format!("  image: {image}\n"),
    )
}

fn image_store(a: &AgentEnv) -> PathBuf {
    a.env.dir.join("images")
}

/// `rundmc image <args>` on `a`'s store and depot.
fn rundmc_image(a: &AgentEnv, args: &[&str]) -> Output {
    Command::new(support::binary("rundmc"))
        .arg("image")
        .args(args)
        .arg("--image-store")
        .arg(image_store(a))
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

/// The reasons and notes of the events about `name`.
fn events(a: &AgentEnv, name: &str) -> Vec<(String, String)> {
    a.events()
        .into_iter()
        .filter(|e| e["handle"] == name)
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("reason"), s("message"))
        })
        .collect()
}

fn has_event(a: &AgentEnv, name: &str, reason: &str, note: &str) -> bool {
    events(a, name)
        .iter()
        .any(|(r, m)| r == reason && m.contains(note))
}

/// What `name`'s main process printed, without the log's CRI prefixes.
fn printed(a: &AgentEnv, name: &str) -> String {
    a.main_log(name)
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The overlay's lowerdir option of `name`'s rootfs mount.
fn lowerdirs(a: &AgentEnv, name: &str) -> String {
    let target = a.bundle(name).join("rootfs");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(target.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{} is not mounted", target.display()));
    let opts = line.rsplit(' ').next().unwrap();
    opts.split(',')
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap()
        .to_string()
}

fn with_ca(a: &mut AgentEnv) {
    let ca = test_ca().ca_cert();
    a.extra
        .extend(["--registry-ca".into(), ca.display().to_string()]);
}

#[test]
fn a_container_runs_the_images_command_with_its_defaults_and_reports_its_id() {
    let imgs: &TestImages = images();
    let reg = Registry::start(Options {
        tls: true,
        basic_auth: None,
        ..Options::default()
    });
    reg.push(&imgs.layout, "simple", "e2e/simple:1");
    let image = format!("{}/e2e/simple:1", reg.addr);
    let mut a = AgentEnv::new("img-run");
    with_ca(&mut a);
    let _agent = a.start();

    // Cmd replaced by args, after the Entrypoint (/bin/sh -c); the image's
    // Env, WorkingDir and User apply; the spec's env wins over the image's.
    let args = "  restartPolicy: Never\n  env: [{name: EXTRA, value: spec}]\n  process:\n    args: [\"echo $GREETING $EXTRA uid=$(id -u) cwd=$(pwd)\"]\n";
    a.write("a.yaml", &image_manifest("imga", &image, args));
    // No process at all: Entrypoint + Cmd.
    let plain = "  restartPolicy: Never\n";
    a.write("b.yaml", &image_manifest("imgb", &image, plain));
    a.wait("both ran to completion", T, || {
        a.status_field("imga", "phase").as_deref() == Some("Succeeded")
            && a.status_field("imgb", "phase").as_deref() == Some("Succeeded")
    });
    assert_eq!(printed(&a, "imga"), "simple spec uid=1000 cwd=/tmp");
    assert_eq!(printed(&a, "imgb"), "hello from simple");

    let digest = TestImages::digest(&imgs.layout, "simple");
    for name in ["imga", "imgb"] {
        assert_eq!(a.status_field(name, "imageID"), Some(digest.clone()));
        assert_eq!(a.status_field(name, "image"), Some(image.clone()));
        assert!(
            has_event(&a, name, "Pulled", &image),
            "{:?}",
            events(&a, name)
        );
    }
    assert!(
        has_event(&a, "imga", "Pulling", &image) || has_event(&a, "imgb", "Pulling", &image),
        "{:?}",
        a.events()
    );
    // One copy of the image: both containers mount the same layers.
    assert_eq!(lowerdirs(&a, "imga"), lowerdirs(&a, "imgb"));
    let ls = stdout(&rundmc_image(&a, &["ls"]));
    assert!(ls.contains(&image), "{ls}");
    assert_eq!(ls.lines().count(), 2, "a header and one image: {ls}");
}

#[test]
fn a_missing_image_backs_off_as_the_kubelet_does_and_runs_once_pushed() {
    let imgs = images();
    let reg = Registry::start(Options::default());
    let image = format!("{}/e2e/later:1", reg.addr);
    let mut a = AgentEnv::new("img-backoff");
    a.extra
        .extend(["--insecure-registry".into(), reg.addr.clone()]);
    let _agent = a.start();
    a.write(
        "c.yaml",
        &image_manifest(
            "later",
            &image,
            "  process:\n    args: [\"echo up; exec sleep 100000\"]\n",
        ),
    );
    a.wait("ErrImagePull", T, || {
        a.condition("later", "Ready")
            .is_some_and(|c| c.1 == "ErrImagePull")
    });
    let (_, _, message) = a.condition("later", "Ready").unwrap();
    assert!(message.contains("e2e/later"), "{message}");
    assert_eq!(a.status_field("later", "phase").as_deref(), Some("Pending"));
    a.wait("ImagePullBackOff", T, || {
        a.condition("later", "Ready")
            .is_some_and(|c| c.1 == "ImagePullBackOff")
    });
    assert!(has_event(&a, "later", "Failed", "Failed to pull image"));
    assert!(has_event(&a, "later", "BackOff", "Back-off pulling image"));
    // Nothing half-made while it waits.
    assert!(!a.env.depot.join("later").exists());
    assert_eq!(a.env.runc_status("later"), None);

    reg.push(&imgs.layout, "simple", "e2e/later:1");
    a.wait("running once the image is there", T, || a.running("later"));
    // The retry waited out the first backoff (10 s), not less.
    let tries = manifest_gets(&reg, "e2e/later");
    assert!(tries.len() >= 2, "{tries:?}");
    assert!(
        tries[1] - tries[0] >= Duration::from_secs(9),
        "backoff between the first two tries: {:?}",
        tries[1] - tries[0]
    );
}

/// When the registry served each manifest GET of `repo`, from its access
/// log (`[30/Nov/2026:09:12:01 +0000] "GET /v2/...`), in seconds.
fn manifest_gets(reg: &Registry, repo: &str) -> Vec<Duration> {
    let needle = format!("\"GET /v2/{repo}/manifests/");
    let mut times: Vec<Duration> = reg
        .log()
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| access_time(l.split('[').nth(1)?.split(' ').next()?))
        .collect();
    times.dedup();
    times
}

/// `30/Nov/2026:09:12:01` as seconds since the day began (the test's tries
/// fall within one day, or the subtraction says so).
fn access_time(at: &str) -> Option<Duration> {
    let mut clock = at.split(':').skip(1).map(|n| n.parse::<u64>().ok());
    let (h, m, s) = (clock.next()??, clock.next()??, clock.next()??);
    Some(Duration::from_secs(h * 3600 + m * 60 + s))
}

#[test]
fn credentials_from_the_nodes_config_and_a_refusal_named() {
    let imgs = images();
    let reg = Registry::start(Options {
        tls: true,
        basic_auth: Some(("ops".into(), "s3cret".into())),
        ..Options::default()
    });
    reg.push(&imgs.layout, "simple", "e2e/private:1");
    let image = format!("{}/e2e/private:1", reg.addr);
    let mut a = AgentEnv::new("img-auth");
    with_ca(&mut a);
    let config = a.env.dir.join("config.json");
    let auth = base64_encode(b"ops:s3cret");
    std::fs::write(
        &config,
        format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"{auth}\"}}}}}}",
            reg.addr
        ),
    )
    .unwrap();
    a.extra
        .extend(["--image-credentials".into(), config.display().to_string()]);
    let mut agent = a.start();
    let run = "  process:\n    args: [\"exec sleep 100000\"]\n";
    a.write("p.yaml", &image_manifest("private", &image, run));
    a.wait("running with the node's credentials", T, || {
        a.running("private")
    });

    // Wrong credentials: the refusal is named in status.
    agent.kill9();
    let bad = base64_encode(b"ops:wrong");
    std::fs::write(
        &config,
        format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"{bad}\"}}}}}}",
            reg.addr
        ),
    )
    .unwrap();
    let _agent = a.start();
    a.write(
        "q.yaml",
        &image_manifest("denied", &image.replace(":1", ":2"), run),
    );
    a.wait("ErrImagePull", T, || {
        a.condition("denied", "Ready")
            .is_some_and(|c| c.1 == "ErrImagePull")
    });
    let (_, _, message) = a.condition("denied", "Ready").unwrap();
    assert!(message.contains("unauthorized"), "{message}");
    assert!(message.contains(&reg.addr), "{message}");
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn a_corrupted_blob_is_refused_and_nothing_of_it_kept() {
    let imgs = images();
    let reg = Registry::start(Options::default());
    reg.push(&imgs.layout, "layers", "e2e/corrupt:1");
    let layers = imgs.layers("layers");
    let bad = layers.last().unwrap().clone();
    reg.corrupt_blob(&bad);
    let image = format!("{}/e2e/corrupt:1", reg.addr);
    let mut a = AgentEnv::new("img-corrupt");
    a.extra
        .extend(["--insecure-registry".into(), reg.addr.clone()]);
    let _agent = a.start();
    a.write(
        "c.yaml",
        &image_manifest(
            "corrupt",
            &image,
            "  process:\n    args: [\"sleep 1000\"]\n",
        ),
    );
    a.wait("ErrImagePull", T, || {
        a.condition("corrupt", "Ready")
            .is_some_and(|c| c.1 == "ErrImagePull")
    });
    let (_, _, message) = a.condition("corrupt", "Ready").unwrap();
    assert!(message.contains(&bad), "names the digest: {message}");
    assert!(!a.env.depot.join("corrupt").exists());
    let ls = stdout(&rundmc_image(&a, &["ls", "-q"]));
    assert!(ls.trim().is_empty(), "no image committed: {ls}");
    let hex = bad.trim_start_matches("sha256:");
    let found = Command::new("find")
        .arg(image_store(&a))
        .args(["-name", &format!("*{hex}*"), "-not", "-path", "*/locks/*"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&found.stdout),
        "",
        "nothing of the blob kept"
    );
}

#[test]
fn an_agent_killed_mid_pull_leaves_a_store_that_a_restart_completes() {
    let imgs = images();
    let big = big_image(&imgs.layout);
    let reg = Registry::start(Options::default());
    reg.push(&big, "big", "e2e/big:1");
    let image = format!("{}/e2e/big:1", reg.addr);
    let mut a = AgentEnv::new("img-kill");
    a.extra
        .extend(["--insecure-registry".into(), reg.addr.clone()]);
    let mut agent = a.start();
    a.write(
        "k.yaml",
        &image_manifest(
            "big",
            &image,
            "  process:\n    args: [\"exec sleep 100000\"]\n",
        ),
    );
    let store = image_store(&a);
    a.wait("a layer being unpacked", T, || unpacking(&store));
    agent.kill9();
    assert!(
        !a.env.depot.join("big").exists(),
        "nothing made before the pull ended"
    );

    let _agent = a.start();
    a.wait("running after the restart", T, || a.running("big"));
    let (code, out, _) = a.env.exec("big", &["sh", "-c", "wc -c < /big.bin"]);
    assert_eq!((code, out.trim()), (0, "33554432"));
    assert!(!unpacking(&store), "no temp left behind");
}

/// Whether the store has anything being written: its `tmp/` is not empty.
fn unpacking(store: &Path) -> bool {
    std::fs::read_dir(store.join("tmp")).is_ok_and(|mut d| d.next().is_some())
}

/// `simple` plus a 32 MiB layer of random bytes, in its own layout.
fn big_image(layout: &Path) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rundmc-big-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("layout");
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci:{}:simple", layout.display()),
        &format!("oci:{}:big", big.display()),
    ]));
    let bundle = dir.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:big", big.display())])
        .arg(&bundle));
    run(Command::new("dd").args([
        "if=/dev/urandom",
        &format!("of={}", bundle.join("rootfs/big.bin").display()),
        "bs=1M",
        "count=32",
        "status=none",
    ]));
    run(Command::new("umoci")
        .args(["repack", "--image", &format!("{}:big", big.display())])
        .arg(&bundle));
    big
}

#[test]
fn gc_removes_what_no_container_uses_and_never_what_one_does() {
    let imgs = images();
    let reg = Registry::start(Options::default());
    for tag in ["simple", "layers", "multi-amd64"] {
        reg.push(&imgs.layout, tag, &format!("e2e/{tag}:1"));
    }
    let image = |tag: &str| format!("{}/e2e/{tag}:1", reg.addr);
    let mut a = AgentEnv::new("img-gc");
    a.extra.extend([
        "--insecure-registry".into(),
        reg.addr.clone(),
        // Always over the high-water mark: every unused image older than
        // the minimum age goes at the next collection.
        "--image-gc-high-threshold".into(),
        "1".into(),
        "--image-gc-low-threshold".into(),
        "0".into(),
        "--image-minimum-gc-age".into(),
        "3s".into(),
    ]);
    let _agent = a.start();
    let run = "  process:\n    args: [\"exec sleep 100000\"]\n";
    a.write("kept.yaml", &image_manifest("kept", &image("simple"), run));
    a.write("gone.yaml", &image_manifest("gone", &image("layers"), run));
    a.wait("both running", T, || a.running("kept") && a.running("gone"));
    a.remove("gone.yaml");
    a.wait("gone destroyed", T, || !a.env.depot.join("gone").exists());
    std::thread::sleep(Duration::from_secs(3));

    // The next pull sets off a collection.
    a.write(
        "next.yaml",
        &image_manifest("next", &image("multi-amd64"), run),
    );
    a.wait("next running", T, || a.running("next"));
    a.wait("the unused image collected", T, || {
        !stdout(&rundmc_image(&a, &["ls"])).contains(&image("layers"))
    });
    let ls = stdout(&rundmc_image(&a, &["ls"]));
    assert!(ls.contains(&image("simple")), "in use: kept: {ls}");
    assert!(
        ls.contains(&image("multi-amd64")),
        "fresh and in use: kept: {ls}"
    );
    assert!(a.running("kept") && a.running("next"));

    // On demand: prune removes nothing in use; once unused, everything.
    let pruned = stdout(&rundmc_image(&a, &["prune"]));
    assert!(pruned.contains("Removed 0 images"), "{pruned}");
    let refused = rundmc_image(&a, &["rm", &image("simple")]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    a.remove("kept.yaml");
    a.remove("next.yaml");
    a.wait("both destroyed", T, || {
        !a.env.depot.join("kept").exists() && !a.env.depot.join("next").exists()
    });
    let pruned = stdout(&rundmc_image(&a, &["prune"]));
    assert!(pruned.contains("Removed 2 images"), "{pruned}");
    assert!(stdout(&rundmc_image(&a, &["ls", "-q"])).trim().is_empty());
}

#[test]
fn an_imported_archive_runs_on_a_node_without_a_registry() {
    let a = AgentEnv::new("img-import");
    let archive = a.env.dir.join("rundmc.tar");
    let bin_dir = support::binary("rundmc-shim").parent().unwrap().to_owned();
    let out = Command::new(support::workspace().join("scripts/mkimage.py"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(&archive)
        .args(["--tag", "rundmc/rundmc:e2e"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported = stdout(&rundmc_image(&a, &["import", archive.to_str().unwrap()]));
    assert!(
        imported.contains("docker.io/rundmc/rundmc:e2e"),
        "{imported}"
    );

    let _agent = a.start();
    let spec = "  imagePullPolicy: Never\n  restartPolicy: Never\n  process:\n    command: [/usr/local/bin/rundmc, --version]\n";
    a.write("r.yaml", &image_manifest("own", "rundmc/rundmc:e2e", spec));
    a.wait("ran to completion", T, || {
        a.status_field("own", "phase").as_deref() == Some("Succeeded")
    });
    assert!(
        printed(&a, "own").starts_with("rundmc "),
        "{}",
        a.main_log("own")
    );

    // Never, and not there: says so, and makes nothing.
    a.write(
        "n.yaml",
        &image_manifest("absent", "rundmc/rundmc:nowhere", spec),
    );
    a.wait("ErrImageNeverPull", T, || {
        a.condition("absent", "Ready")
            .is_some_and(|c| c.1 == "ErrImageNeverPull")
    });
    assert!(!a.env.depot.join("absent").exists());
}

#[test]
fn the_image_cli_pulls_lists_and_removes_with_progress_only_on_a_terminal() {
    let imgs = images();
    let reg = Registry::start(Options::default());
    reg.push(&imgs.layout, "layers", "cli/layers:1");
    let image = format!("{}/cli/layers:1", reg.addr);
    let a = AgentEnv::new("img-cli");
    let insecure = ["--insecure-registry", reg.addr.as_str()];

    // Not a terminal: one line, no progress.
    let pulled = rundmc_image(&a, &[&["pull", &image][..], &insecure[..]].concat());
    let text = stdout(&pulled);
    let digest = TestImages::digest(&imgs.layout, "layers");
    assert!(
        text.starts_with(&format!("Pulled {image} {digest}")),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&pulled.stderr).trim().is_empty(),
        "quiet"
    );
    let quiet = stdout(&rundmc_image(
        &a,
        &[&["pull", "-q", &image][..], &insecure[..]].concat(),
    ));
    assert_eq!(quiet.trim(), digest);

    // A terminal (script(1) gives the command a pty): the progress line.
    std::fs::remove_dir_all(image_store(&a)).unwrap();
    let command = format!(
        "{} image pull {image} --insecure-registry {} --image-store {}",
        support::binary("rundmc").display(),
        reg.addr,
        image_store(&a).display()
    );
    let tty = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    assert!(shown.contains(&format!("\r{image}: ")), "{shown}");
    assert!(shown.contains("layers,"), "{shown}");

    let ls = stdout(&rundmc_image(&a, &["ls", "--json"]));
    let listed: serde_json::Value = serde_json::from_str(ls.trim()).unwrap();
    assert_eq!(listed["id"], digest.as_str());
    assert_eq!(listed["names"][0], image.as_str());
    let removed = stdout(&rundmc_image(&a, &["rm", &image]));
    assert!(removed.contains(&digest), "{removed}");
    assert!(stdout(&rundmc_image(&a, &["ls", "-q"])).trim().is_empty());
    let missing = rundmc_image(&a, &["rm", &image]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains(&format!("no image {image}")),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}
