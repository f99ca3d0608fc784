//! A throwaway CNI network for tests against Debian's plugins: a bridge of
//! its own (`rdmc-t<pid%1000>-<n>`) on a private 10.x.y.0/24 that no route
//! of the host uses, made by the test with the gateway address on it (so
//! the bridge plugin runs with `isGateway: false` and never turns on the
//! host's IP forwarding), `ipMasq: false` and no default route; a conflist
//! of bridge (host-local IPAM with its `dataDir` in the test's directory)
//! and portmap (`capabilities: {portMappings: true}`); network namespaces
//! made with `ip netns add`; and wrapper plugins in a bin dir searched
//! first. Dropping it kills what it started, deletes its namespaces, the
//! portmap rules naming its network, the bridge and the directory, also
//! when the test failed.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rundmc::network::cni::{CniConfig, NetworkList};
use serde_json::{Value, json};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// One test's network.
pub struct TestNet {
    /// The test's directory: configs, cache, IPAM store, wrappers.
    pub dir: PathBuf,
    /// The network's name, also the bridge's.
    pub name: String,
    /// The subnet's first three octets, e.g. `10.163.0`.
    pub prefix: String,
    /// The bridge's address, the subnet's `.1`.
    pub gateway: Ipv4Addr,
    namespaces: Mutex<Vec<String>>,
    children: Mutex<Vec<Child>>,
}

impl TestNet {
    /// A bridge, a subnet and the default conflist (bridge, portmap).
    pub fn new() -> TestNet {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("rdmc-t{}-{n}", pid % 1000);
        let dir = std::env::temp_dir().join(format!("rundmc-cni-{pid}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["net.d", "bin", "cache", "ipam", "www"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let prefix = free_prefix(pid, n);
        let gateway: Ipv4Addr = format!("{prefix}.1").parse().unwrap();
        let net = TestNet {
            dir,
            name,
            prefix,
            gateway,
            namespaces: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
        };
        net.make_bridge();
        net.write_list(
            "10-test.conflist",
            vec![net.bridge_plugin(), portmap_plugin()],
        );
        net
    }

    /// With a MAC of its own, as the bridge plugin makes one: a bridge
    /// without takes its lowest port's, which fails the plugin's CHECK.
    fn make_bridge(&self) {
        let [.., a, b] = std::process::id().to_be_bytes();
        let n = COUNTER.load(Ordering::Relaxed) as u8;
        let mac = format!("02:72:64:{a:02x}:{b:02x}:{n:02x}");
        ip(&["link", "add", &self.name, "address", &mac, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.gateway),
            "dev",
            &self.name,
        ]);
        ip(&["link", "set", &self.name, "up"]);
    }

    /// The bridge plugin's config, with host-local IPAM.
    pub fn bridge_plugin(&self) -> Value {
        json!({
            "type": "bridge",
            "bridge": self.name,
            "isGateway": false,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("{}.0/24", self.prefix),
                             "gateway": self.gateway.to_string()}]],
                "dataDir": self.ipam_dir(),
            }
        })
    }

    /// Write a conflist of `plugins` as `file` in the config directory.
    pub fn write_list(&self, file: &str, plugins: Vec<Value>) -> NetworkList {
        let list = json!({"cniVersion": "1.0.0", "name": self.name, "plugins": plugins});
        let path = self.conf_dir().join(file);
        std::fs::write(&path, serde_json::to_vec_pretty(&list).unwrap()).unwrap();
        let lists = rundmc::network::cni::load(&self.conf_dir()).unwrap();
        lists.into_iter().find(|l| l.file == path).unwrap()
    }

    /// The default conflist (bridge, portmap).
    pub fn network(&self) -> NetworkList {
        let lists = rundmc::network::cni::load(&self.conf_dir()).unwrap();
        rundmc::network::cni::default_network(&lists)
            .unwrap()
            .clone()
    }

    /// Plugins from the wrapper dir first, then Debian's.
    pub fn config(&self, timeout: Duration) -> CniConfig {
        CniConfig {
            conf_dir: self.conf_dir(),
            bin_dirs: vec![self.dir.join("bin"), PathBuf::from("/usr/lib/cni")],
            cache_dir: self.cache_dir(),
            timeout,
        }
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// host-local's `dataDir`; its store for this network is `<it>/<name>`.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    /// A wrapper plugin: a shell script named `name` in the bin dir,
    /// written by a child process so that no fd of it is ever open in this
    /// multi-threaded test process (a fork by another test could carry one
    /// into its child, and the plugin's exec would fail with ETXTBSY).
    pub fn wrapper(&self, name: &str, script: &str) {
        let path = self.dir.join("bin").join(name);
        let mut child = Command::new("sh")
            .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
            .arg(&path)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let text = format!("#!/bin/sh\n{script}\n");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }

    /// A new network namespace, `/run/netns/<its name>`, removed on drop.
    pub fn netns(&self) -> PathBuf {
        let mut namespaces = self.namespaces.lock().unwrap();
        let name = format!("{}-{}", self.name, namespaces.len());
        ip(&["netns", "add", &name]);
        namespaces.push(name.clone());
        PathBuf::from("/run/netns").join(name)
    }

    /// Delete a namespace made by [`TestNet::netns`].
    pub fn delete_netns(&self, path: &Path) {
        let name = path.file_name().unwrap().to_str().unwrap();
        ip(&["netns", "del", name]);
        self.namespaces.lock().unwrap().retain(|n| n != name);
    }

    /// The addresses host-local has leased on this network.
    pub fn leases(&self) -> BTreeSet<IpAddr> {
        let store = self.ipam_dir().join(&self.name);
        let Ok(entries) = std::fs::read_dir(&store) else {
            return BTreeSet::new();
        };
        entries
            .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
            .collect()
    }

    /// The interfaces enslaved to the bridge (the host ends of the veths).
    pub fn veths(&self) -> Vec<String> {
        let out = run("ip", &["-o", "link", "show", "master", &self.name]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1)?.split('@').next().map(str::to_owned))
            .collect()
    }

    /// The nat table's lines that mention `word` (portmap names the
    /// container id in a comment on its rules).
    pub fn nat_rules(word: &str) -> Vec<String> {
        let out = run("iptables-save", &["-t", "nat"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(word))
            .map(str::to_owned)
            .collect()
    }

    /// The busybox of the test image.
    pub fn busybox() -> PathBuf {
        super::common::image().join("bin/busybox")
    }

    /// Start busybox's httpd on `port` in `netns`, serving `body` as its
    /// index; killed on drop.
    pub fn serve(&self, netns: &Path, port: u16, body: &str) {
        let www = self.dir.join("www");
        std::fs::write(www.join("index.html"), body).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", netns_name(netns)])
            .arg(Self::busybox())
            .args(["httpd", "-f", "-p", &port.to_string(), "-h"])
            .arg(&www)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.children.lock().unwrap().push(child);
    }

    /// busybox wget of `url` from inside `netns` (bounded by timeout(1):
    /// this busybox's own `wget -T` crashes).
    pub fn wget_in(netns: &Path, url: &str) -> Output {
        let mut args = vec!["10", "ip", "netns", "exec", netns_name(netns)];
        let busybox = Self::busybox();
        args.push(busybox.to_str().unwrap());
        args.extend(["wget", "-qO-", url]);
        run("timeout", &args)
    }

    /// busybox ping, one packet, from inside `netns`.
    pub fn ping_in(netns: &Path, ip: &str) -> Output {
        let busybox = Self::busybox();
        let args = [
            "10",
            "ip",
            "netns",
            "exec",
            netns_name(netns),
            busybox.to_str().unwrap(),
            "ping",
            "-c",
            "1",
            ip,
        ];
        run("timeout", &args)
    }

    fn remove_portmap_rules(&self) {
        let tag = format!("dnat name: \\\"{}\\\"", self.name);
        let jumps: Vec<String> = Self::nat_rules(&tag)
            .into_iter()
            .filter(|l| l.starts_with("-A CNI-HOSTPORT-DNAT "))
            .collect();
        if jumps.is_empty() {
            return;
        }
        let mut script = String::from("*nat\n");
        for jump in &jumps {
            script.push_str(&format!("-D{}\n", &jump[2..]));
        }
        for chain in jumps.iter().filter_map(|l| l.rsplit(" -j ").next()) {
            script.push_str(&format!("-F {chain}\n-X {chain}\n"));
        }
        script.push_str("COMMIT\n");
        let mut child = Command::new("iptables-restore")
            .arg("--noflush")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(script.as_bytes());
        let _ = child.wait();
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for child in self.children.get_mut().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in self.namespaces.get_mut().unwrap().drain(..) {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
        self.remove_portmap_rules();
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// portmap, taking the port mappings from `runtimeConfig`.
pub fn portmap_plugin() -> Value {
    json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true})
}

/// A 10.a.b prefix no address or route of the host is in.
fn free_prefix(pid: u32, n: usize) -> String {
    let routes =
        String::from_utf8_lossy(&run("ip", &["-4", "route", "show", "table", "all"]).stdout)
            .into_owned();
    let first = 150 + pid % 97;
    (0..250)
        .map(|i| format!("10.{first}.{}", (n * 7 + i) % 250 + 1))
        .find(|prefix| !routes.contains(&format!("{prefix}.")))
        .expect("no free 10.x.y.0/24")
}

fn netns_name(path: &Path) -> &str {
    path.file_name().unwrap().to_str().unwrap()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap()
}

fn ip(args: &[&str]) {
    let out = run("ip", args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `GET /` on `addr` over plain HTTP/1.0; the body, or why not.
pub fn http_get(addr: &str) -> Result<String, String> {
    let sock = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut stream =
        TcpStream::connect_timeout(&sock, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(format!("unexpected response: {response}")),
    }
}

/// Retry `attempt` until it gives `Ok` or `within` passes; the last error
/// fails the test.
pub fn eventually<T>(within: Duration, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(e) if Instant::now() > deadline => panic!("still failing after {within:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
