//! The network phase's own CNI network and its hand runner. [`BenchNet`]
//! is a bridge of the run's (`rdmcb<pid>`, also the network's name, so
//! portmap's rules name it), made with the gateway address of a private
//! 10.x.y.0/24 that no address or route of the host is in, and a conflist
//! of bridge (host-local IPAM, its `dataDir` in the run's directory,
//! `isGateway: false`, `ipMasq: false`, no route) and portmap
//! (`portMappings`). [`HandCni`] runs that list's ADD and DEL by hand, as
//! `cnitool` would: each plugin exec'd from `/usr/lib/cni` with the CNI
//! variables and its config on stdin, ADD's result threaded as
//! `prevResult`. Everything is registered for the sweep before it is made,
//! and [`sweep`] removes namespaces, veths, portmap rules and the bridge.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use crate::cleanup;

/// Where Debian's plugins are.
pub const CNI_BIN: &str = "/usr/lib/cni";
/// The container's interface.
pub const IFNAME: &str = "eth0";
/// The container port published by every networked container.
pub const CONTAINER_PORT: u16 = 8080;

/// The run's bridge network.
pub struct BenchNet {
    /// The network's name, also the bridge's.
    pub name: String,
    /// The subnet's first three octets.
    pub prefix: String,
    /// The conflist's JSON.
    pub list: Value,
    /// host-local's `dataDir`.
    pub ipam_dir: PathBuf,
}

impl BenchNet {
    /// Makes the bridge (registered for the sweep first) and the list.
    pub fn create(ipam_dir: &Path) -> Result<BenchNet> {
        let name = format!("rdmcb{}", std::process::id());
        let prefix = free_prefix()?;
        cleanup::register(|r| r.bridges.push(name.clone()));
        let [.., a, b] = std::process::id().to_be_bytes();
        let mac = format!("02:72:64:62:{a:02x}:{b:02x}");
        ip(&["link", "add", &name, "address", &mac, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", &name])?;
        ip(&["link", "set", &name, "up"])?;
        let list = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": name,
                    "isGateway": false,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": format!("{prefix}.0/24"),
                                     "gateway": format!("{prefix}.1")}]],
                        "dataDir": ipam_dir,
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
            ]
        });
        Ok(BenchNet {
            name,
            prefix,
            list,
            ipam_dir: ipam_dir.to_owned(),
        })
    }

    /// Writes the conflist into `conf_dir`.
    pub fn write_conflist(&self, conf_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(conf_dir)
            .with_context(|| format!("creating {}", conf_dir.display()))?;
        let path = conf_dir.join("10-bench.conflist");
        std::fs::write(&path, serde_json::to_vec_pretty(&self.list)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Addresses host-local holds leased on this network.
    pub fn leases(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.ipam_dir.join(&self.name)) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    /// What the network still holds: veths on the bridge, leases, portmap
    /// rules naming it. Empty once every attachment is gone.
    pub fn held(&self) -> Vec<String> {
        let mut held: Vec<String> = veths(&self.name)
            .into_iter()
            .map(|v| format!("veth {v}"))
            .collect();
        held.extend(self.leases().into_iter().map(|l| format!("lease {l}")));
        held.extend(
            nat_rules(&self.name)
                .into_iter()
                .map(|r| format!("nat rule {r}")),
        );
        held
    }
}

/// One plugin run by hand: the chain's ADD, then its DEL.
pub struct HandCni<'a> {
    /// The list.
    pub net: &'a BenchNet,
    /// The runtime config (`portMappings`) given to plugins that ask.
    pub runtime_config: Map<String, Value>,
}

/// A namespace made with `ip netns add`, and what ADD left in it.
pub struct HandAttachment {
    netns: String,
    id: String,
    result: Value,
}

impl HandAttachment {
    /// The container id ADD was given.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl HandCni<'_> {
    /// The runtime config publishing `host_port` on [`CONTAINER_PORT`].
    pub fn ports(host_port: u16) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "portMappings".into(),
            json!([{"hostPort": host_port, "containerPort": CONTAINER_PORT, "protocol": "tcp"}]),
        );
        m
    }

    /// `ip netns add <id>` (untimed), then the chain's ADD, timed from the
    /// first plugin's spawn to the last one's exit.
    pub fn add(&self, id: &str) -> Result<(HandAttachment, Duration)> {
        let netns = id.to_owned();
        cleanup::register(|r| r.netns.push(netns.clone()));
        ip(&["netns", "add", &netns])?;
        let path = PathBuf::from("/run/netns").join(&netns);
        let plugins = self.plugins()?;
        let t0 = Instant::now();
        let mut prev: Option<Value> = None;
        for p in plugins {
            let stdin = self.stdin(p, prev.as_ref());
            let out = exec_plugin(p, "ADD", id, Some(&path), &stdin)?;
            prev = Some(serde_json::from_slice(&out).with_context(|| {
                format!("{} ADD printed {}", kind(p), String::from_utf8_lossy(&out))
            })?);
        }
        let took = t0.elapsed();
        let result = prev.context("the list has no plugins")?;
        let id = id.to_owned();
        Ok((HandAttachment { netns, id, result }, took))
    }

    /// The chain's DEL in reverse order with ADD's result as `prevResult`,
    /// timed; then `ip netns del` (untimed).
    pub fn del(&self, a: &HandAttachment) -> Result<Duration> {
        let path = PathBuf::from("/run/netns").join(&a.netns);
        let plugins = self.plugins()?;
        let t0 = Instant::now();
        for p in plugins.iter().rev() {
            let stdin = self.stdin(p, Some(&a.result));
            exec_plugin(p, "DEL", &a.id, Some(&path), &stdin)?;
        }
        let took = t0.elapsed();
        ip(&["netns", "del", &a.netns])?;
        cleanup::register(|r| r.netns.retain(|n| *n != a.netns));
        Ok(took)
    }

    fn plugins(&self) -> Result<&Vec<Value>> {
        self.net.list["plugins"]
            .as_array()
            .context("the conflist has no plugins")
    }

    /// The plugin's object with the list's name and version, `prevResult`,
    /// and the runtime config it declares capabilities for (as libcni).
    fn stdin(&self, plugin: &Value, prev: Option<&Value>) -> Vec<u8> {
        let mut conf = plugin.as_object().cloned().unwrap_or_default();
        conf.insert("name".into(), self.net.list["name"].clone());
        conf.insert("cniVersion".into(), self.net.list["cniVersion"].clone());
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        let granted: Map<String, Value> = self
            .runtime_config
            .iter()
            .filter(|(k, _)| plugin["capabilities"][k.as_str()] == Value::Bool(true))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !granted.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(granted));
        }
        serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
    }
}

fn kind(plugin: &Value) -> &str {
    plugin["type"].as_str().unwrap_or("?")
}

/// Execs one plugin; its stdout, or an error carrying what it printed.
fn exec_plugin(
    plugin: &Value,
    command: &str,
    id: &str,
    netns: Option<&Path>,
    stdin: &[u8],
) -> Result<Vec<u8>> {
    let kind = kind(plugin);
    let mut cmd = Command::new(Path::new(CNI_BIN).join(kind));
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns.map(Path::as_os_str).unwrap_or_default())
        .env("CNI_IFNAME", IFNAME)
        .env("CNI_ARGS", "")
        .env("CNI_PATH", CNI_BIN)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = crate::reaper::spawn(&mut cmd).with_context(|| format!("running {kind}"))?;
    let pid = child.id();
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin)
            .with_context(|| format!("writing {kind}'s config"))?;
    }
    let out = child.wait_with_output();
    crate::reaper::forget(pid);
    let out = out.with_context(|| format!("waiting for {kind}"))?;
    if !out.status.success() {
        bail!(
            "{kind} {command} {id}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// A 10.a.b prefix that no address or route of the host is in.
fn free_prefix() -> Result<String> {
    let routes = run("ip", &["-4", "route", "show", "table", "all"])?;
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    let addrs = run("ip", &["-4", "-o", "addr"])?;
    let taken = routes + &String::from_utf8_lossy(&addrs.stdout);
    let first = 100 + std::process::id() % 50;
    (0..250)
        .map(|i| format!("10.{first}.{}", (i + 7) % 250 + 1))
        .find(|p| !taken.contains(&format!("{p}.")))
        .context("no free 10.x.y.0/24")
}

fn run(program: &str, args: &[&str]) -> Result<Output> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stderr(Stdio::piped());
    crate::reaper::output(&mut cmd).with_context(|| format!("running {program}"))
}

fn ip(args: &[&str]) -> Result<()> {
    let out = run("ip", args)?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The interfaces enslaved to `bridge`.
pub fn veths(bridge: &str) -> Vec<String> {
    let Ok(out) = run("ip", &["-o", "link", "show", "master", bridge]) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1)?.split('@').next().map(str::to_owned))
        .collect()
}

/// The nat table's lines that mention `name`.
pub fn nat_rules(name: &str) -> Vec<String> {
    let Ok(out) = run("iptables-save", &["-t", "nat"]) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(name))
        .map(str::to_owned)
        .collect()
}

/// The `iptables-restore --noflush` script removing the rules in `lines`
/// (`-A` lines naming the network) and the per-container chains
/// (`CNI-DN-…`, `CNI-SN-…`) they jump to.
pub fn removal_script(lines: &[String]) -> Option<String> {
    let rules: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("-A ")).collect();
    if rules.is_empty() {
        return None;
    }
    let mut script = String::from("*nat\n");
    for r in &rules {
        script.push_str(&format!("-D {r}\n"));
    }
    let mut chains: Vec<&str> = rules
        .iter()
        .filter_map(|r| r.rsplit(" -j ").next())
        .filter(|c| c.starts_with("CNI-DN-") || c.starts_with("CNI-SN-"))
        .collect();
    chains.sort_unstable();
    chains.dedup();
    for c in chains {
        script.push_str(&format!("-F {c}\n-X {c}\n"));
    }
    script.push_str("COMMIT\n");
    Some(script)
}

/// Namespaces, then per bridge: the veths on it, portmap's rules naming
/// it, the bridge. Best effort; [`left`] says what stayed.
pub fn sweep(netns: &[String], bridges: &[String]) {
    for n in netns {
        let _ = ip(&["netns", "del", n]);
    }
    for b in bridges {
        for v in veths(b) {
            let _ = ip(&["link", "del", &v]);
        }
        if let Some(script) = removal_script(&nat_rules(b)) {
            let _ = restore(&script);
        }
        let _ = ip(&["link", "del", b]);
    }
}

fn restore(script: &str) -> Result<()> {
    let mut cmd = Command::new("iptables-restore");
    cmd.arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = crate::reaper::spawn(&mut cmd)?;
    let pid = child.id();
    if let Some(mut input) = child.stdin.take() {
        input.write_all(script.as_bytes())?;
    }
    let status = child.wait();
    crate::reaper::forget(pid);
    if !status?.success() {
        bail!("iptables-restore failed");
    }
    Ok(())
}

/// What of the namespaces and bridges is still there.
pub fn left(netns: &[String], bridges: &[String]) -> Vec<String> {
    let mut left: Vec<String> = netns
        .iter()
        .filter(|n| Path::new("/run/netns").join(n).exists())
        .map(|n| format!("network namespace {n}"))
        .collect();
    for b in bridges {
        if Path::new("/sys/class/net").join(b).exists() {
            left.push(format!("bridge {b}"));
        }
        left.extend(nat_rules(b).into_iter().map(|r| format!("nat rule {r}")));
    }
    left
}

/// Why the phase cannot run here, if it cannot.
pub fn missing_tools() -> Option<String> {
    let plugins = ["bridge", "host-local", "portmap"]
        .map(|p| Path::new(CNI_BIN).join(p))
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string());
    let tools = ["ip", "iptables-save", "iptables-restore"]
        .into_iter()
        .filter(|t| crate::images::which(t).is_none())
        .map(str::to_owned);
    let missing: Vec<String> = plugins.chain(tools).collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} not installed (scripts/deps.sh installs them)",
            missing.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_script_deletes_the_rules_and_the_chains_they_jump_to() {
        let lines = vec![
            ":CNI-DN-abc - [0:0]".to_string(),
            "-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"n\\\" id: \\\"x\\\"\" -j CNI-DN-abc".to_string(),
            "-A CNI-DN-abc -s 10.1.2.0/24 -p tcp -j CNI-HOSTPORT-SETMARK".to_string(),
        ];
        let s = removal_script(&lines).unwrap();
        assert!(s.starts_with("*nat\n-D CNI-HOSTPORT-DNAT -p tcp"), "{s}");
        assert!(s.contains("-D CNI-DN-abc -s 10.1.2.0/24"), "{s}");
        assert!(s.ends_with("-F CNI-DN-abc\n-X CNI-DN-abc\nCOMMIT\n"), "{s}");
        assert_eq!(s.matches("-X ").count(), 1, "{s}");
        assert!(removal_script(&[":CNI-DN-abc - [0:0]".into()]).is_none());
    }
}
