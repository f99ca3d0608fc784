//! `hostUsers: false` as a user checks it: the container's uid and gid maps
//! are its assigned range, a file it makes belongs to the mapped owner on
//! the host while the image keeps its owners, two containers get disjoint
//! ranges that a restarted agent keeps, and a destroyed container's range
//! is given again. With runc and with crun.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/cni_net.rs"]
mod cni_net;
/// What `cni_net` takes from the shared support code.
mod common {
    pub use crate::support::image;
}
mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use cni_net::{TestNet, free_port, http_get};
use support::agent::{AgentEnv, manifest};
use support::image;

const T: Duration = Duration::from_secs(30);

/// Prints its maps, makes a file, and idles.
const PRIVATE: &str = "  hostUsers: false\n  process:\n    args: [\"/bin/sh\", \"-c\", \"echo uid_map $(cat /proc/self/uid_map); echo gid_map $(cat /proc/self/gid_map); echo image owner $(stat -c %u:%g /bin/busybox); touch /made-here && echo made; exec sleep 100000\"]\n";

/// The first host id of a `0 <host> <size>` map line the container logged.
fn logged_map(a: &AgentEnv, name: &str, which: &str) -> Option<(u32, u32)> {
    let log = a.main_log(name);
    let line = log.lines().find(|l| l.contains(&format!("{which} 0 ")))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let at = fields.iter().position(|f| *f == which)?;
    match fields.get(at + 1..at + 4)? {
        ["0", host, size] => Some((host.parse().ok()?, size.parse().ok()?)),
        _ => None,
    }
}

/// The range the depot recorded for `name`.
fn recorded(a: &AgentEnv, name: &str) -> (u32, u32) {
    let bytes = std::fs::read(a.env.depot.join(name).join("userns.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    (
        v["hostId"].as_u64().unwrap() as u32,
        v["size"].as_u64().unwrap() as u32,
    )
}

/// The uid map of `pid`, as the host reads it: `(first host id, size)`.
fn host_map(pid: i32) -> (u32, u32) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let f: Vec<u32> = text
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(f.len(), 3, "one line: {text}");
    assert_eq!(f[0], 0, "{text}");
    (f[1], f[2])
}

fn phase_running(a: &AgentEnv, name: &str) -> bool {
    a.status_field(name, "phase").as_deref() == Some("Running")
}

fn maps_and_owner(runtime: &str) {
    let mut a = AgentEnv::new(&format!("userns-{runtime}"));
    a.extra = vec!["--runtime".into(), runtime.into()];
    let _agent = a.start();
    a.write("private.yaml", &manifest("private", PRIVATE));
    a.wait("the maps and the file logged", T, || {
        phase_running(&a, "private") && a.main_log("private").contains("made")
    });
    let range = recorded(&a, "private");
    assert_eq!(range.1, 65_536);
    assert!(
        range.0 >= 65_536 && range.0.is_multiple_of(65_536),
        "{range:?}"
    );
    assert_eq!(logged_map(&a, "private", "uid_map"), Some(range));
    assert_eq!(logged_map(&a, "private", "gid_map"), Some(range));

    let made = std::fs::metadata(a.env.depot.join("private/upper/made-here")).unwrap();
    assert_eq!(
        (made.uid(), made.gid()),
        (range.0, range.0),
        "the mapped root owns it"
    );
    assert!(
        a.main_log("private").contains("image owner 0:0"),
        "the image is the container root's inside: {}",
        a.main_log("private")
    );
    let bin = std::fs::metadata(image().join("bin")).unwrap();
    assert_eq!(
        (bin.uid(), bin.gid()),
        (0, 0),
        "the shared image keeps its owners"
    );

    // Gone with its manifest: nothing of crun's is left for runc's cleanup.
    a.remove("private.yaml");
    a.wait("private destroyed", T, || {
        !a.env.depot.join("private").exists()
    });
}

#[test]
fn runc_maps_the_assigned_range_and_files_belong_to_it() {
    maps_and_owner("runc");
}

#[test]
fn crun_maps_the_assigned_range_and_files_belong_to_it() {
    maps_and_owner("crun");
}

#[test]
fn ranges_are_disjoint_survive_a_restart_and_are_given_again_once_freed() {
    let a = AgentEnv::new("userns-ranges");
    let mut agent = a.start();
    for n in ["one", "two"] {
        a.write(&format!("{n}.yaml"), &manifest(n, PRIVATE));
    }
    a.wait("both running with their maps", T, || {
        ["one", "two"]
            .iter()
            .all(|n| a.running(n) && a.main_log(n).contains("made"))
    });
    let one = host_map(a.env.init_pid("one"));
    let two = host_map(a.env.init_pid("two"));
    assert_eq!(one, recorded(&a, "one"));
    assert_eq!(two, recorded(&a, "two"));
    assert!(
        one.0 + one.1 <= two.0 || two.0 + two.1 <= one.0,
        "disjoint: {one:?} {two:?}"
    );
    let inits = (a.env.init_pid("one"), a.env.init_pid("two"));
    agent.kill9();

    let _agent = a.start();
    // A third made by the new agent must not get a range already held: only
    // a pool rebuilt from the depot knows them.
    a.write("three.yaml", &manifest("three", PRIVATE));
    a.wait("three running", T, || {
        a.running("three") && a.main_log("three").contains("made")
    });
    assert_eq!(
        (a.env.init_pid("one"), a.env.init_pid("two")),
        inits,
        "adopted, not recreated"
    );
    assert_eq!(host_map(inits.0), one, "one's map unchanged");
    assert_eq!(host_map(inits.1), two, "two's map unchanged");
    let three = host_map(a.env.init_pid("three"));
    for held in [one, two] {
        assert!(
            three.0 + three.1 <= held.0 || held.0 + held.1 <= three.0,
            "three {three:?} overlaps {held:?}"
        );
    }

    a.remove("one.yaml");
    a.wait("one destroyed", T, || !a.env.depot.join("one").exists());
    a.write("four.yaml", &manifest("four", PRIVATE));
    a.wait("four running", T, || {
        a.running("four") && a.main_log("four").contains("made")
    });
    assert_eq!(
        host_map(a.env.init_pid("four")),
        one,
        "the first free block is one's again"
    );
}

#[test]
fn host_users_false_with_privileged_or_host_network_is_invalid() {
    let a = AgentEnv::new("userns-invalid");
    let _agent = a.start();
    a.write(
        "priv.yaml",
        &manifest("priv", "  hostUsers: false\n  privileged: true\n"),
    );
    a.write(
        "hostnet.yaml",
        &manifest("hostnet", "  hostUsers: false\n  hostNetwork: true\n"),
    );
    for (name, other) in [("priv", "spec.privileged"), ("hostnet", "spec.hostNetwork")] {
        a.wait(&format!("{name} reported"), T, || {
            a.condition(name, "Valid").is_some_and(|c| {
                c.0 == "False" && c.2.contains("spec.hostUsers") && c.2.contains(other)
            })
        });
        assert!(
            a.env.runc_status(name).is_none(),
            "nothing created for {name}"
        );
        assert!(!Path::new(&a.env.depot.join(name)).exists());
    }
}

/// On a CNI network its namespace is pinned by the agent and owned by the
/// node's user namespace, where the container may not mount a sysfs: it
/// still starts, reads its names files, and serves a published port.
fn on_a_network(runtime: &str) {
    let net = TestNet::new();
    let mut a = AgentEnv::new(&format!("userns-net-{runtime}"));
    let bins = format!("{},/usr/lib/cni", net.dir.join("bin").display());
    a.extra = vec![
        "--runtime".into(),
        runtime.into(),
        "--cni-conf-dir".into(),
        net.conf_dir().display().to_string(),
        "--cni-bin-dir".into(),
        bins,
        "--cni-cache-dir".into(),
        net.cache_dir().display().to_string(),
    ];
    let _agent = a.start();
    let port = free_port();
    let spec = format!(
        "  hostUsers: false\n  ports: [{{containerPort: 8080, hostPort: {port}}}]\n  process:\n    args: [\"/bin/sh\", \"-c\", \"echo uid_map $(cat /proc/self/uid_map); cat /etc/hostname /etc/hosts /etc/resolv.conf > /dev/null && echo names read; ls /sys/class/net > /dev/null && echo sys read; mkdir -p /www; echo hello > /www/index.html; exec httpd -f -p 8080 -h /www\"]\n"
    );
    a.write("web.yaml", &manifest("web", &spec));
    a.wait("web serving its names and /sys read", T, || {
        let log = a.main_log("web");
        phase_running(&a, "web") && log.contains("names read") && log.contains("sys read")
    });
    assert_eq!(logged_map(&a, "web", "uid_map"), Some(recorded(&a, "web")));
    let got = cni_net::eventually(T, || http_get(&format!("127.0.0.1:{port}")));
    assert!(got.contains("hello"), "{got}");
    a.remove("web.yaml");
    a.wait("web destroyed", T, || !a.env.depot.join("web").exists());
}

/// runc before 1.2 joins the container's user namespace before its network
/// one, which it may then not join: the create is refused, saying so,
/// rather than a main process that fails to start again and again.
#[test]
fn runc_on_a_network_of_its_own() {
    let version = std::process::Command::new("runc")
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    if rundmc::containerizer::userns::execs_into_foreign_netns(&version) {
        return on_a_network("runc");
    }
    let net = TestNet::new();
    let mut a = AgentEnv::new("userns-net-runc-old");
    a.extra = vec![
        "--cni-conf-dir".into(),
        net.conf_dir().display().to_string(),
        "--cni-bin-dir".into(),
        format!("{},/usr/lib/cni", net.dir.join("bin").display()),
        "--cni-cache-dir".into(),
        net.cache_dir().display().to_string(),
    ];
    let _agent = a.start();
    a.write("web.yaml", &manifest("web", PRIVATE));
    a.wait("web refused with the reason", T, || {
        a.condition("web", "Ready").is_some_and(|c| {
            c.2.contains("needs crun or runc 1.2+") && c.2.contains("runc version 1.1")
        })
    });
    assert!(!a.env.depot.join("web").exists(), "nothing half-made");
    assert!(net.leases().is_empty(), "no address kept");
}

#[test]
fn crun_on_a_network_of_its_own() {
    on_a_network("crun");
}

/// A tar streamed in as root lands as the container's root: owned by 0
/// inside, by the range's first id on the host.
#[tokio::test]
async fn streamed_in_files_belong_to_the_containers_root() {
    let env = support::Env::new("userns-stream");
    let c = env.containerizer();
    let h = support::handle("files");
    let spec = rundmc::api::ContainerSpec {
        host_users: Some(false),
        ..support::spec()
    };
    c.create(&h, &spec, std::collections::BTreeMap::new())
        .await
        .unwrap();
    let range = c.userns_range(&h).unwrap();
    let mut tar_in = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_in);
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        b.append_data(&mut header, "in.txt", &b"hello"[..]).unwrap();
        b.finish().unwrap();
    }
    c.stream_in(&h, "/srv", None, &tar_in[..]).await.unwrap();
    let (code, owner, err) = env.exec("files", &["stat", "-c", "%u:%g", "/srv/in.txt"]);
    let on_host = std::fs::metadata(env.depot.join("files/upper/srv/in.txt")).map(|m| m.uid());
    c.destroy(&h).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(owner.trim(), "0:0", "the container's root owns it inside");
    assert_eq!(on_host.unwrap(), range.host_id);
}
