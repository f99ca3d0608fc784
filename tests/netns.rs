//! Pinned network namespaces and their counters on the real kernel, checked
//! as an operator would: `stat` of the file, `nsenter --net=<file> ip link`,
//! `/proc/<pid>/ns/net` of a process put in it, `/proc/self/mountinfo`, and
//! traffic (ping over a veth pair between two namespaces the test makes;
//! nothing touches the host's network). Needs root, `nsenter` and `ip`, and
//! `RUNDMC_TEST_ROOTFS` (busybox for `sleep` and `ping`).

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::MntFlags;
use rundmc::network::{counters, netns};

const T: Duration = Duration::from_secs(10);

/// A directory of namespace files and the processes put in them, all
/// removed on drop (processes killed, every mount under it detached) by
/// plain syscalls, not by the code under test, so a failing test leaves
/// nothing behind either.
struct Scratch {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("rundmc-netns-{}-{test}", std::process::id()));
        let scratch = Scratch {
            dir,
            children: Vec::new(),
        };
        scratch.clean();
        fs::create_dir_all(&scratch.dir).unwrap();
        scratch
    }

    /// A namespace file; its directory (`<dir>/ns`) is what create makes a
    /// mount of.
    fn ns(&self, name: &str) -> PathBuf {
        self.ns_in("ns", name)
    }

    /// A namespace file in directory `sub` of the scratch directory.
    fn ns_in(&self, sub: &str, name: &str) -> PathBuf {
        self.dir.join(sub).join(name)
    }

    /// `busybox sleep` in the namespace pinned at `ns`; its pid.
    fn sleeper_in(&mut self, ns: &Path) -> i32 {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .arg(busybox())
            .args(["sleep", "100000"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        self.children.push(child);
        pid
    }

    fn clean(&self) {
        for child in &self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for sub in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            for file in fs::read_dir(sub.path()).into_iter().flatten().flatten() {
                unmount_all(&file.path());
            }
            unmount_all(&sub.path());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.clean();
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// Detach every mount stacked on `path`.
fn unmount_all(path: &Path) {
    for _ in 0..16 {
        if let Err(Errno::EINVAL | Errno::ENOENT) = nix::mount::umount2(path, MntFlags::MNT_DETACH)
        {
            return;
        }
    }
}

fn busybox() -> PathBuf {
    let rootfs = std::env::var_os("RUNDMC_TEST_ROOTFS")
        .expect("RUNDMC_TEST_ROOTFS must name a busybox rootfs (make rootfs)");
    PathBuf::from(rootfs).join("bin/busybox")
}

/// Run a command; panic with its output unless it succeeds.
fn run(program: &str, args: &[&str]) -> String {
    let out = try_run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn try_run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap()
}

/// `cmd` run in the namespace at `ns` through nsenter.
fn in_ns(ns: &Path, cmd: &[&str]) -> String {
    let net = format!("--net={}", ns.display());
    let mut args = vec![net.as_str()];
    args.extend_from_slice(cmd);
    run("nsenter", &args)
}

fn inode(path: &str) -> u64 {
    fs::metadata(path).unwrap().ino()
}

/// The raw lines of /proc/self/mountinfo whose mount point is `path`.
fn mounts_at(path: &Path) -> Vec<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_str().unwrap();
    text.lines()
        .filter(|l| l.split(' ').nth(4) == Some(want))
        .map(String::from)
        .collect()
}

/// `ip -o link` in `ns`: each interface's name and flags.
fn links(ns: &Path) -> Vec<(String, Vec<String>)> {
    in_ns(ns, &["ip", "-o", "link"])
        .lines()
        .map(|l| {
            let name = l.split(": ").nth(1).unwrap_or("").to_string();
            let flags = l
                .split_once('<')
                .and_then(|(_, r)| r.split_once('>'))
                .map(|(f, _)| f.split(',').map(String::from).collect())
                .unwrap_or_default();
            (name, flags)
        })
        .collect()
}

fn assert_only_lo_up(ns: &Path) {
    let links = links(ns);
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0].0, "lo", "{links:?}");
    assert!(
        links[0].1.iter().any(|f| f == "UP"),
        "lo is down: {links:?}"
    );
}

/// `ip -s link show <dev>` in `ns`, as counters.
fn ip_stats(ns: &Path, dev: &str) -> counters::NetCounters {
    let json: serde_json::Value =
        serde_json::from_str(&in_ns(ns, &["ip", "-s", "-j", "link", "show", dev])).unwrap();
    let stats = &json[0]["stats64"];
    let n = |dir: &str, what: &str| stats[dir][what].as_u64().unwrap();
    counters::NetCounters {
        rx_bytes: n("rx", "bytes"),
        rx_packets: n("rx", "packets"),
        tx_bytes: n("tx", "bytes"),
        tx_packets: n("tx", "packets"),
    }
}

/// Wait until `f` is true, or panic saying `what`.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn create_pins_a_new_namespace_with_lo_up_and_leaves_the_caller_in_its_own() {
    let s = Scratch::new("create");
    let ns = s.ns("web");
    let before = inode("/proc/thread-self/ns/net");

    netns::create(&ns).unwrap();

    assert!(netns::is_pinned(&ns));
    let pinned = fs::metadata(&ns).unwrap().ino();
    assert_ne!(pinned, inode("/proc/self/ns/net"), "the host's namespace");
    assert_eq!(
        inode("/proc/thread-self/ns/net"),
        before,
        "the caller moved"
    );
    assert_only_lo_up(&ns);
    let at_file = mounts_at(&ns);
    assert_eq!(at_file.len(), 1, "{at_file:?}");
    assert!(at_file[0].contains(" - nsfs "), "{at_file:?}");
    // The directory is a shared mount of its own, as `ip netns add` makes
    // /run/netns.
    let at_dir = mounts_at(ns.parent().unwrap());
    assert!(
        at_dir.iter().any(|l| l.contains(" shared:")),
        "not a shared mount: {at_dir:?}"
    );
}

#[test]
fn a_process_put_in_it_is_in_the_pinned_namespace() {
    let mut s = Scratch::new("join");
    let ns = s.ns("web");
    netns::create(&ns).unwrap();
    let want = format!("net:[{}]", fs::metadata(&ns).unwrap().ino());

    let pid = s.sleeper_in(&ns);

    let link = format!("/proc/{pid}/ns/net");
    wait_until(&format!("{link} to be {want}"), || {
        fs::read_link(&link).is_ok_and(|l| l.to_str() == Some(want.as_str()))
    });
}

#[test]
fn create_twice_keeps_the_first_namespace() {
    let s = Scratch::new("twice");
    let ns = s.ns("web");
    netns::create(&ns).unwrap();
    let first = fs::metadata(&ns).unwrap().ino();

    netns::create(&ns).unwrap();

    assert_eq!(fs::metadata(&ns).unwrap().ino(), first);
    assert_eq!(mounts_at(&ns).len(), 1, "{:?}", mounts_at(&ns));
    assert_eq!(mounts_at(ns.parent().unwrap()).len(), 1);
}

#[test]
fn concurrent_creates_in_one_directory_bind_it_once() {
    let s = Scratch::new("concurrent");
    // The race (two threads each binding the directory on itself) is lost
    // only now and then: many rounds, each in a fresh directory.
    for round in 0..20 {
        concurrent_creates(&s, &format!("r{round}"), 16);
    }
}

fn concurrent_creates(s: &Scratch, sub: &str, n: usize) {
    let paths: Vec<PathBuf> = (0..n).map(|i| s.ns_in(sub, &format!("c{i}"))).collect();
    let start = std::sync::Barrier::new(n);

    std::thread::scope(|scope| {
        for path in &paths {
            let start = &start;
            scope.spawn(move || {
                start.wait();
                netns::create(path).unwrap();
            });
        }
    });

    let dir = paths[0].parent().unwrap();
    assert_eq!(mounts_at(dir).len(), 1, "{:#?}", mounts_at(dir));
    let mut inodes: Vec<u64> = paths
        .iter()
        .map(|p| {
            assert_eq!(
                mounts_at(p).len(),
                1,
                "{}: {:#?}",
                p.display(),
                mounts_at(p)
            );
            fs::metadata(p).unwrap().ino()
        })
        .collect();
    inodes.sort();
    inodes.dedup();
    assert_eq!(inodes.len(), n, "namespaces shared between files");
}

#[test]
fn remove_leaves_no_mount_and_no_file_and_may_be_repeated() {
    let s = Scratch::new("remove");
    let ns = s.ns("web");
    netns::create(&ns).unwrap();

    netns::remove(&ns).unwrap();

    assert_eq!(mounts_at(&ns), Vec::<String>::new());
    assert!(!ns.exists(), "{} is still there", ns.display());
    assert!(!netns::is_pinned(&ns));
    netns::remove(&ns).unwrap();
    netns::remove(&s.dir.join("never/made")).unwrap();
}

#[test]
fn remove_dir_unpins_every_file_and_removes_the_directory() {
    let s = Scratch::new("remove-dir");
    let (a, b) = (s.ns("a"), s.ns("b"));
    netns::create(&a).unwrap();
    netns::create(&b).unwrap();
    let dir = a.parent().unwrap();

    netns::remove_dir(dir).unwrap();

    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .collect();
    assert_eq!(left, Vec::<&str>::new());
    assert!(!dir.exists(), "{} is still there", dir.display());
    netns::remove_dir(dir).unwrap();
}

#[test]
fn a_file_left_unpinned_by_a_crash_is_pinned_by_create() {
    let s = Scratch::new("stale");
    let ns = s.ns("web");
    fs::create_dir_all(ns.parent().unwrap()).unwrap();
    fs::write(&ns, b"").unwrap();
    assert!(!netns::is_pinned(&ns));

    netns::create(&ns).unwrap();

    assert!(netns::is_pinned(&ns));
    assert_ne!(fs::metadata(&ns).unwrap().ino(), inode("/proc/self/ns/net"));
    assert_only_lo_up(&ns);
}

#[test]
fn counters_of_a_process_grow_with_its_traffic_and_leave_lo_out() {
    let mut s = Scratch::new("counters");
    let (a, b) = (s.ns("a"), s.ns("b"));
    netns::create(&a).unwrap();
    netns::create(&b).unwrap();
    let b_arg = b.to_str().unwrap();
    // The pair is made in `a` with its peer put in `b`: the host's own
    // namespace never holds either end.
    in_ns(
        &a,
        &[
            "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b_arg,
        ],
    );
    in_ns(&a, &["ip", "addr", "add", "10.200.14.1/30", "dev", "va"]);
    in_ns(&a, &["ip", "link", "set", "va", "up"]);
    in_ns(&b, &["ip", "addr", "add", "10.200.14.2/30", "dev", "vb"]);
    in_ns(&b, &["ip", "link", "set", "vb", "up"]);
    let pid = s.sleeper_in(&b);
    let want = format!("net:[{}]", fs::metadata(&b).unwrap().ino());
    wait_until("the sleeper to be in b", || {
        fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|l| l.to_str() == Some(&want))
    });
    // Traffic on lo, which must not be counted.
    in_ns(
        &b,
        &[busybox().to_str().unwrap(), "ping", "-c", "2", "127.0.0.1"],
    );
    let before = counters::read(pid).unwrap();

    let net = format!("--net={}", a.display());
    let bb = busybox();
    let ping = [
        &net,
        bb.to_str().unwrap(),
        "ping",
        "-c",
        "3",
        "-W",
        "1",
        "10.200.14.2",
    ];
    wait_until("3 pings from a to b to be answered", || {
        try_run("nsenter", &ping).status.success()
    });

    let after = counters::read(pid).unwrap();
    let names: Vec<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["vb"], "{after:?}");
    let (old, new) = (before[0].1, after[0].1);
    assert!(new.rx_packets >= old.rx_packets + 3, "{old:?} -> {new:?}");
    assert!(new.tx_packets >= old.tx_packets + 3, "{old:?} -> {new:?}");
    // 3 echo requests and replies of 64 bytes of IP each, at least.
    assert!(new.rx_bytes >= old.rx_bytes + 3 * 64, "{old:?} -> {new:?}");
    assert!(new.tx_bytes >= old.tx_bytes + 3 * 64, "{old:?} -> {new:?}");

    // Traffic one way, so that sent and received differ: gratuitous ARP
    // answers, which nothing replies to.
    let bb_path = bb.to_str().unwrap();
    in_ns(
        &b,
        &[
            bb_path,
            "arping",
            "-A",
            "-c",
            "2",
            "-I",
            "vb",
            "10.200.14.2",
        ],
    );
    // Field for field what iproute2 reports (RTM_GETLINK's stats64), read
    // between two equal reads so that no packet slips in between.
    wait_until("counters::read to agree with `ip -s link` on vb", || {
        let first = counters::read(pid).unwrap();
        let ip = ip_stats(&b, "vb");
        first == counters::read(pid).unwrap() && first == [("vb".to_string(), ip)]
    });

    // What one read costs (printed with --nocapture; no assertion on time).
    let n = 2000;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(counters::read(pid).unwrap());
    }
    eprintln!(
        "counters::read of /proc/{pid}/net/dev: {:?} per read",
        start.elapsed() / n
    );
}
