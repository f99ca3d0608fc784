//! ADD, CHECK and DEL of a network list's chain for one container and
//! interface, and the cache that makes DEL possible whatever happened
//! before it, as libcni's `/var/lib/cni/results`.
//!
//! The cache holds one JSON file per container and interface,
//! `<cache_dir>/<container_id>@<ifname>.json` (CNI allows no `@` in a
//! container id): the list's bytes, the runtime config (port mappings) and,
//! once ADD finished, its result. ADD writes it durably *before* the first
//! plugin runs, so an agent killed mid-ADD leaves what DEL needs; DEL then
//! runs without `prevResult`, which Debian's bridge, host-local and portmap
//! need not to free the veth, the lease and the port rules (their DEL works
//! from the container id, the interface name and the runtime config).
//!
//! A container's calls are the caller's to serialise; different containers
//! may be attached concurrently.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::cni::{self, CniConfig, CniError, NetworkList, ParsedList};
use super::plugin::{self, Command, PluginExec, PluginRequest, ProcessExec, Target};
use crate::fsutil::{self, Durability};

/// What a cache entry says it is.
const CACHE_KIND: &str = "rundmcCniCacheV1";
/// The capability (and runtime config key) of port mappings.
const PORT_MAPPINGS: &str = "portMappings";

/// A host port mapped onto the container, in portmap's `portMappings` form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The node's port.
    pub host_port: u16,
    /// The container's port.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The node's address to bind on; all when `None`.
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// A container's finished attachment to a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// The network's name.
    pub network: String,
    /// The container's interface, e.g. `eth0`.
    pub interface: String,
    /// Its addresses, from the result.
    pub ips: Vec<IpAddr>,
    /// The chain's result, as the last plugin gave it.
    pub result: Value,
}

/// One cache entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheEntry {
    kind: String,
    container_id: String,
    if_name: String,
    network_name: String,
    /// The network list's bytes (JSON, so UTF-8).
    config: String,
    /// The capability arguments, e.g. `portMappings`.
    runtime_config: Map<String, Value>,
    /// The result, once ADD finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
}

/// Attaches containers to CNI networks by running plugins through `E`.
#[derive(Debug)]
pub struct Cni<E: PluginExec = ProcessExec> {
    config: CniConfig,
    exec: E,
}

impl Cni {
    /// Plugins run as processes.
    pub fn new(config: CniConfig) -> Cni {
        Cni::with_exec(config, ProcessExec)
    }
}

impl<E: PluginExec> Cni<E> {
    /// Plugins run through `exec`.
    pub fn with_exec(config: CniConfig, exec: E) -> Cni<E> {
        Cni { config, exec }
    }

    /// The networks of the config directory (see [`cni::load`]).
    pub fn networks(&self) -> Result<Vec<NetworkList>, CniError> {
        cni::load(&self.config.conf_dir)
    }

    /// Attach the container's `netns` as `ifname` to `net`, mapping `ports`
    /// (an error before anything runs when no plugin of `net` declares the
    /// `portMappings` capability, rather than ports silently unpublished).
    /// An entry left by an earlier ADD for the same container and interface
    /// is detached first. The cache entry (the list and runtime config) is
    /// written before the first plugin runs; the chain then runs in order,
    /// each plugin given the one before's result as `prevResult`, and the
    /// result is recorded. When a plugin fails, the chain is deleted (best
    /// effort), the cache entry removed once that DEL succeeded (kept for a
    /// later [`Cni::del`] otherwise), and the plugin's error returned.
    pub async fn add(
        &self,
        net: &NetworkList,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        ports: &[PortMapping],
    ) -> Result<Attachment, CniError> {
        self.add_asking(net, container_id, netns, ifname, ports, None)
            .await
    }

    /// [`Cni::add`], asking IPAM for `ip` first (the address the container
    /// had before it was made again). When that ADD fails (the address is
    /// taken, or not in the network's ranges) the chain is undone as for
    /// any failure and run again without asking, so a wish never fails a
    /// create.
    pub async fn add_asking(
        &self,
        net: &NetworkList,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        ports: &[PortMapping],
        ip: Option<IpAddr>,
    ) -> Result<Attachment, CniError> {
        let target = Target {
            container_id,
            netns: Some(netns),
            ifname,
            args: "",
        };
        let path = self.entry_path(container_id, ifname)?;
        if let Some(old) = read_entry(&path)? {
            let gone_or_not = Target {
                netns: target.netns.filter(|p| is_netns(p)),
                ..target
            };
            self.del_entry(&path, &old, gone_or_not).await?;
        }
        let list = cni::parse_list(&net.bytes).map_err(|message| CniError::Config {
            file: net.file.clone(),
            message,
        })?;
        let entry = intent(net, &list, container_id, ifname, ports)?;
        if ip.is_some() {
            let args = plugin::cni_args(ip);
            let asking = Target {
                args: &args,
                ..target
            };
            match self.add_chain(&path, entry.clone(), &list, asking).await {
                Ok(attached) => return Ok(attached),
                Err(error) => tracing::debug!(%error, container = container_id,
                    "CNI ADD asking for the previous address failed; adding without"),
            }
        }
        self.add_chain(&path, entry, &list, target).await
    }

    /// Write the intent, run the chain, record its result.
    async fn add_chain(
        &self,
        path: &Path,
        mut entry: CacheEntry,
        list: &ParsedList,
        target: Target<'_>,
    ) -> Result<Attachment, CniError> {
        self.write_intent(path, &entry)?;
        let result = self.add_or_undo(path, &entry, list, target).await?;
        entry.result = Some(result.clone());
        if let Err(error) = write_entry(path, &entry) {
            self.undo(path, &entry, list, target, Some(&result)).await;
            return Err(error);
        }
        Ok(attachment(&list.name, target.ifname, result))
    }

    fn write_intent(&self, path: &Path, entry: &CacheEntry) -> Result<(), CniError> {
        std::fs::create_dir_all(&self.config.cache_dir).map_err(|source| CniError::Io {
            path: self.config.cache_dir.clone(),
            source,
        })?;
        write_entry(path, entry)
    }

    async fn add_or_undo(
        &self,
        path: &Path,
        entry: &CacheEntry,
        list: &ParsedList,
        target: Target<'_>,
    ) -> Result<Value, CniError> {
        let mut prev: Option<Value> = None;
        for conf in &list.plugins {
            let stdin = plugin::stdin_config(list, conf, prev.as_ref(), &entry.runtime_config);
            match self.run(Command::Add, &conf.kind, target, stdin).await {
                Ok(result) => prev = Some(result),
                Err(error) => {
                    self.undo(path, entry, list, target, prev.as_ref()).await;
                    return Err(error);
                }
            }
        }
        prev.ok_or_else(|| CniError::Cache {
            path: path.to_path_buf(),
            message: "the list has no plugins".into(),
        })
    }

    /// DEL of a failed ADD's chain; the entry goes only when that worked.
    async fn undo(
        &self,
        path: &Path,
        entry: &CacheEntry,
        list: &ParsedList,
        target: Target<'_>,
        prev: Option<&Value>,
    ) {
        let outcome = match self.del_chain(list, entry, target, prev).await {
            Ok(()) => remove_entry(path),
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, container = target.container_id,
                "CNI DEL after a failed ADD failed; the cache entry is kept for the next DEL");
        }
    }

    /// Run the chain's CHECK in order, each plugin given the cached result.
    /// Lists before 0.4.0 (which has no CHECK) and lists with
    /// `disableCheck` pass without running anything.
    pub async fn check(
        &self,
        container_id: &str,
        netns: &Path,
        ifname: &str,
    ) -> Result<(), CniError> {
        let path = self.entry_path(container_id, ifname)?;
        let not_attached = || CniError::NotAttached {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        };
        let entry = read_entry(&path)?.ok_or_else(not_attached)?;
        let result = entry.result.as_ref().ok_or_else(not_attached)?;
        let list = cached_list(&path, &entry)?;
        if !list.version.has_check() || list.disable_check {
            return Ok(());
        }
        let target = Target {
            container_id,
            netns: Some(netns),
            ifname,
            args: "",
        };
        for conf in &list.plugins {
            let stdin = plugin::stdin_config(&list, conf, Some(result), &entry.runtime_config);
            self.run(Command::Check, &conf.kind, target, stdin).await?;
        }
        Ok(())
    }

    /// Detach, from the cache: the chain's DEL in reverse order, with the
    /// cached result as `prevResult` when ADD finished (0.4.0 and later).
    /// Idempotent: no cache entry is Ok. A `netns` that is gone (absent, or
    /// no longer a namespace) is passed as an empty `CNI_NETNS`, as the
    /// spec allows. The entry is removed once every plugin succeeded.
    /// Returns the attachment that was undone, if its ADD had finished.
    pub async fn del(
        &self,
        container_id: &str,
        netns: Option<&Path>,
        ifname: &str,
    ) -> Result<Option<Attachment>, CniError> {
        let path = self.entry_path(container_id, ifname)?;
        let Some(entry) = read_entry(&path)? else {
            return Ok(None);
        };
        let target = Target {
            container_id,
            netns: netns.filter(|p| is_netns(p)),
            ifname,
            args: "",
        };
        self.del_entry(&path, &entry, target).await?;
        let undone = entry
            .result
            .map(|r| attachment(&entry.network_name, ifname, r));
        Ok(undone)
    }

    async fn del_entry(
        &self,
        path: &Path,
        entry: &CacheEntry,
        target: Target<'_>,
    ) -> Result<(), CniError> {
        let list = cached_list(path, entry)?;
        self.del_chain(&list, entry, target, entry.result.as_ref())
            .await?;
        remove_entry(path)
    }

    async fn del_chain(
        &self,
        list: &ParsedList,
        entry: &CacheEntry,
        target: Target<'_>,
        prev: Option<&Value>,
    ) -> Result<(), CniError> {
        let prev = prev.filter(|_| list.version.has_check());
        for conf in list.plugins.iter().rev() {
            let stdin = plugin::stdin_config(list, conf, prev, &entry.runtime_config);
            self.run(Command::Del, &conf.kind, target, stdin).await?;
        }
        Ok(())
    }

    /// Container ids with a cache entry, sorted, each once (for the sweep
    /// of a restarted agent). A missing cache directory has none.
    pub fn cached(&self) -> Result<Vec<String>, CniError> {
        let mut ids: Vec<String> = self.entry_keys()?.into_iter().map(|(id, _)| id).collect();
        ids.dedup();
        Ok(ids)
    }

    /// The (container id, interface) of every cache entry, sorted.
    fn entry_keys(&self) -> Result<Vec<(String, String)>, CniError> {
        let dir = &self.config.cache_dir;
        let io_error = |source| CniError::Io {
            path: dir.clone(),
            source,
        };
        let entries = match std::fs::read_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other.map_err(io_error)?,
        };
        let mut keys = Vec::new();
        for entry in entries {
            let name = entry.map_err(io_error)?.file_name();
            if let Some((id, ifname)) = parse_entry_name(&name.to_string_lossy()) {
                keys.push((id.to_string(), ifname.to_string()));
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// The port mappings of every cache entry, with its container id, by
    /// container id: what a new container's host ports must not collide
    /// with, since portmap lets a second mapping of a port shadow the first
    /// without an error.
    pub fn mapped_ports(&self) -> Result<Vec<(String, PortMapping)>, CniError> {
        let mut mapped = Vec::new();
        for (id, ifname) in self.entry_keys()? {
            let path = self.entry_path(&id, &ifname)?;
            let Some(entry) = read_entry(&path)? else {
                continue; // deleted since listed
            };
            let ports = entry.runtime_config.get(PORT_MAPPINGS).cloned();
            let ports: Vec<PortMapping> = match ports {
                Some(ports) => serde_json::from_value(ports).map_err(|e| CniError::Cache {
                    path,
                    message: format!("runtimeConfig.portMappings: {e}"),
                })?,
                None => Vec::new(),
            };
            mapped.extend(ports.into_iter().map(|p| (id.clone(), p)));
        }
        Ok(mapped)
    }

    /// The attachment recorded for a container, if its ADD finished.
    pub fn attachment(&self, container_id: &str, ifname: &str) -> Option<Attachment> {
        let path = self.entry_path(container_id, ifname).ok()?;
        let entry = read_entry(&path).ok()??;
        let result = entry.result?;
        Some(attachment(&entry.network_name, ifname, result))
    }

    async fn run(
        &self,
        command: Command,
        plugin: &str,
        target: Target<'_>,
        stdin: Vec<u8>,
    ) -> Result<Value, CniError> {
        let request = PluginRequest {
            plugin: plugin.to_string(),
            command,
            bin_dirs: self.config.bin_dirs.clone(),
            env: plugin::environment(command, &target, &self.config.bin_dirs),
            stdin,
            timeout: self.config.timeout,
        };
        let output = self.exec.exec(request.clone()).await?;
        plugin::interpret(&request, &output)
    }

    fn entry_path(&self, container_id: &str, ifname: &str) -> Result<PathBuf, CniError> {
        check_container_id(container_id)?;
        check_ifname(ifname)?;
        Ok(self.config.cache_dir.join(entry_name(container_id, ifname)))
    }
}

fn attachment(network: &str, ifname: &str, result: Value) -> Attachment {
    Attachment {
        network: network.to_string(),
        interface: ifname.to_string(),
        ips: plugin::result_ips(&result, ifname),
        result,
    }
}

fn intent(
    net: &NetworkList,
    list: &ParsedList,
    container_id: &str,
    ifname: &str,
    ports: &[PortMapping],
) -> Result<CacheEntry, CniError> {
    let config = String::from_utf8(net.bytes.clone()).map_err(|e| CniError::Config {
        file: net.file.clone(),
        message: e.to_string(),
    })?;
    let mapper = list
        .plugins
        .iter()
        .any(|p| p.capabilities.get(PORT_MAPPINGS) == Some(&true));
    if !ports.is_empty() && !mapper {
        return Err(CniError::Config {
            file: net.file.clone(),
            message: format!(
                "host ports asked for, but no plugin of network {} declares capabilities.{PORT_MAPPINGS}",
                list.name
            ),
        });
    }
    let mut runtime_config = Map::new();
    if !ports.is_empty() {
        // A list of plain structs always serialises.
        let ports = serde_json::to_value(ports).unwrap_or_default();
        runtime_config.insert(PORT_MAPPINGS.into(), ports);
    }
    Ok(CacheEntry {
        kind: CACHE_KIND.into(),
        container_id: container_id.into(),
        if_name: ifname.into(),
        network_name: list.name.clone(),
        config,
        runtime_config,
        result: None,
    })
}

fn entry_name(container_id: &str, ifname: &str) -> String {
    format!("{container_id}@{ifname}.json")
}

/// The container id and interface of a cache file's name; `None` for
/// anything else (atomic writes' hidden temporaries included).
fn parse_entry_name(name: &str) -> Option<(&str, &str)> {
    let stem = name.strip_suffix(".json")?;
    let (id, ifname) = stem.split_once('@')?;
    let valid = check_container_id(id).is_ok() && check_ifname(ifname).is_ok();
    valid.then_some((id, ifname))
}

/// CNI's rule: at least one of alphanumerics, `_`, `.` and `-`, and here
/// not starting with `.`, so it is a plain file name.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let reason = if id.is_empty() {
        Some("must not be empty")
    } else if !id.chars().all(allowed) {
        Some("only letters, digits, '_', '.' and '-' are allowed")
    } else if id.starts_with('.') {
        Some("must not start with '.'")
    } else {
        None
    };
    invalid("container id", id, reason)
}

/// The kernel's rule for an interface name.
fn check_ifname(ifname: &str) -> Result<(), CniError> {
    let reason = if ifname.is_empty() || ifname.len() > 15 {
        Some("must be 1 to 15 bytes long")
    } else if ifname == "." || ifname == ".." {
        Some("must not be '.' or '..'")
    } else if ifname
        .chars()
        .any(|c| c == '/' || c == ':' || c == '@' || c.is_whitespace())
    {
        Some("must not contain '/', ':', '@' or whitespace")
    } else {
        None
    };
    invalid("interface name", ifname, reason)
}

fn invalid(what: &'static str, value: &str, reason: Option<&'static str>) -> Result<(), CniError> {
    match reason {
        Some(reason) => Err(CniError::InvalidArgument {
            what,
            value: value.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn read_entry(path: &Path) -> Result<Option<CacheEntry>, CniError> {
    let bytes = match std::fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other.map_err(|source| CniError::Io {
            path: path.to_path_buf(),
            source,
        })?,
    };
    let entry: CacheEntry = serde_json::from_slice(&bytes).map_err(|e| CniError::Cache {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if entry.kind != CACHE_KIND {
        return Err(CniError::Cache {
            path: path.to_path_buf(),
            message: format!("kind {:?} is not {CACHE_KIND}", entry.kind),
        });
    }
    Ok(Some(entry))
}

fn cached_list(path: &Path, entry: &CacheEntry) -> Result<ParsedList, CniError> {
    cni::parse_list(entry.config.as_bytes()).map_err(|message| CniError::Config {
        file: path.to_path_buf(),
        message,
    })
}

/// Durable: host-local's leases outlive a reboot, and so must what frees them.
fn write_entry(path: &Path, entry: &CacheEntry) -> Result<(), CniError> {
    fsutil::write_json_with(path, entry, Durability::Durable).map_err(fs_error)
}

fn remove_entry(path: &Path) -> Result<(), CniError> {
    fsutil::remove_file_if_exists(path).map_err(fs_error)
}

fn fs_error(e: fsutil::FsError) -> CniError {
    CniError::Io {
        path: e.path,
        source: e.source,
    }
}

/// Whether `path` is a network namespace (a pinned nsfs file, or a
/// `/proc/<pid>/ns/net`); an unmounted pin file or a missing path is not.
fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::network::plugin::PluginOutput;

    /// One call the double saw: the request, its stdin as JSON, and whether
    /// the cache entry existed when it ran.
    #[derive(Debug, Clone)]
    struct Call {
        plugin: String,
        command: Command,
        env: Vec<(String, String)>,
        stdin: Value,
        cached: bool,
    }

    impl Call {
        fn env(&self, key: &str) -> &str {
            let found = self.env.iter().find(|(k, _)| k == key);
            found.map(|(_, v)| v.as_str()).unwrap_or_default()
        }
    }

    /// Records every call; ADD results list the plugins that ran so far
    /// (from `prevResult`) and give eth0 an address. `fail` makes one
    /// plugin's command fail with an error JSON.
    #[derive(Clone, Default)]
    struct Recorder {
        calls: Arc<Mutex<Vec<Call>>>,
        fail: Arc<Mutex<Vec<(String, Command)>>>,
        cache_dir: PathBuf,
    }

    impl Recorder {
        fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }

        fn seen(&self) -> Vec<String> {
            let calls = self.calls();
            calls
                .iter()
                .map(|c| format!("{} {}", c.command, c.plugin))
                .collect()
        }

        fn fail(&self, plugin: &str, command: Command) {
            self.fail.lock().unwrap().push((plugin.into(), command));
        }

        fn respond(&self, request: &PluginRequest, stdin: &Value) -> PluginOutput {
            let failing = (request.plugin.clone(), request.command);
            if self.fail.lock().unwrap().contains(&failing) {
                let error = json!({"code": 7, "msg": format!("{} refused", request.plugin)});
                return output(1, error);
            }
            if request.command != Command::Add {
                return output(0, Value::Null);
            }
            let mut by: Vec<Value> = stdin["prevResult"]["by"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            by.push(request.plugin.clone().into());
            output(
                0,
                json!({
                    "cniVersion": stdin["cniVersion"],
                    "by": by,
                    "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
                    "ips": [{"address": "10.1.2.3/24", "interface": 0}],
                }),
            )
        }
    }

    fn output(code: i32, stdout: Value) -> PluginOutput {
        PluginOutput {
            code: Some(code),
            signal: None,
            stdout: serde_json::to_vec(&stdout).unwrap(),
            stderr: vec![],
        }
    }

    impl PluginExec for Recorder {
        async fn exec(&self, request: PluginRequest) -> Result<PluginOutput, CniError> {
            let stdin: Value = serde_json::from_slice(&request.stdin).unwrap();
            let cached = std::fs::read_dir(&self.cache_dir)
                .map(|d| d.count() > 0)
                .unwrap_or(false);
            self.calls.lock().unwrap().push(Call {
                plugin: request.plugin.clone(),
                command: request.command,
                env: request.env.clone(),
                stdin: stdin.clone(),
                cached,
            });
            Ok(self.respond(&request, &stdin))
        }
    }

    struct Fixture {
        dir: PathBuf,
        cni: Cni<Recorder>,
        recorder: Recorder,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("rundmc-attach-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = CniConfig {
            conf_dir: dir.join("net.d"),
            bin_dirs: vec![dir.join("bin")],
            cache_dir: dir.join("cache"),
            timeout: Duration::from_secs(5),
        };
        let recorder = Recorder {
            cache_dir: config.cache_dir.clone(),
            ..Recorder::default()
        };
        let cni = Cni::with_exec(config, recorder.clone());
        Fixture { dir, cni, recorder }
    }

    fn net(version: &str) -> NetworkList {
        let list = json!({
            "cniVersion": version,
            "name": "testnet",
            "plugins": [
                {"type": "bridge", "bridge": "br0"},
                {"type": "tuning"},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        cni::network_list(
            Path::new("/etc/cni/net.d/10-test.conflist"),
            &serde_json::to_vec(&list).unwrap(),
        )
        .unwrap()
    }

    fn ports() -> Vec<PortMapping> {
        vec![PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: None,
        }]
    }

    const NS: &str = "/run/netns/x";

    #[tokio::test]
    async fn add_runs_the_chain_in_order_threading_prev_result_after_writing_the_cache() {
        let f = fixture("add");
        let got = f
            .cni
            .add(&net("1.0.0"), "web", Path::new(NS), "eth0", &ports())
            .await
            .unwrap();
        assert_eq!(
            f.recorder.seen(),
            ["ADD bridge", "ADD tuning", "ADD portmap"]
        );
        let calls = f.recorder.calls();
        assert!(
            calls.iter().all(|c| c.cached),
            "cache written before the first plugin"
        );
        assert!(calls[0].stdin.get("prevResult").is_none());
        assert_eq!(calls[1].stdin["prevResult"]["by"], json!(["bridge"]));
        assert_eq!(
            calls[2].stdin["prevResult"]["by"],
            json!(["bridge", "tuning"])
        );
        assert!(calls[0].stdin.get("runtimeConfig").is_none());
        assert_eq!(
            calls[2].stdin["runtimeConfig"]["portMappings"][0]["hostPort"],
            8080
        );
        assert_eq!(
            (calls[0].env("CNI_NETNS"), calls[0].env("CNI_CONTAINERID")),
            (NS, "web")
        );

        assert_eq!(got.network, "testnet");
        assert_eq!(got.interface, "eth0");
        assert_eq!(got.ips, ["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(got.result["by"], json!(["bridge", "tuning", "portmap"]));
        assert_eq!(f.cni.attachment("web", "eth0"), Some(got));
        assert_eq!(f.cni.attachment("web", "eth1"), None);
        assert_eq!(f.cni.cached().unwrap(), ["web"]);
    }

    #[tokio::test]
    async fn del_runs_the_chain_in_reverse_with_the_cached_result_and_is_idempotent() {
        let f = fixture("del");
        f.cni
            .add(&net("1.0.0"), "web", Path::new(NS), "eth0", &ports())
            .await
            .unwrap();
        f.recorder.calls.lock().unwrap().clear();
        f.cni.del("web", Some(Path::new(NS)), "eth0").await.unwrap();
        assert_eq!(
            f.recorder.seen(),
            ["DEL portmap", "DEL tuning", "DEL bridge"]
        );
        let calls = f.recorder.calls();
        let full = json!(["bridge", "tuning", "portmap"]);
        assert!(calls.iter().all(|c| c.stdin["prevResult"]["by"] == full));
        assert_eq!(
            calls[0].stdin["runtimeConfig"]["portMappings"][0]["containerPort"],
            80
        );
        // Not a namespace (this fixture's path does not exist): empty CNI_NETNS.
        assert!(calls.iter().all(|c| c.env("CNI_NETNS").is_empty()));
        assert!(f.cni.cached().unwrap().is_empty());
        assert_eq!(f.cni.attachment("web", "eth0"), None);

        f.recorder.calls.lock().unwrap().clear();
        f.cni.del("web", None, "eth0").await.unwrap();
        f.cni.del("never-added", None, "eth0").await.unwrap();
        assert!(f.recorder.calls().is_empty());
    }

    #[tokio::test]
    async fn del_passes_a_live_namespace_and_no_prev_result_before_add_finished() {
        let f = fixture("del-intent");
        let net = net("1.0.0");
        let list = cni::parse_list(&net.bytes).unwrap();
        let path = f.cni.entry_path("web", "eth0").unwrap();
        let entry = intent(&net, &list, "web", "eth0", &ports()).unwrap();
        f.cni.write_intent(&path, &entry).unwrap();
        assert_eq!(f.cni.attachment("web", "eth0"), None);
        assert_eq!(f.cni.cached().unwrap(), ["web"]);

        let live = Path::new("/proc/self/ns/net");
        f.cni.del("web", Some(live), "eth0").await.unwrap();
        let calls = f.recorder.calls();
        assert_eq!(
            f.recorder.seen(),
            ["DEL portmap", "DEL tuning", "DEL bridge"]
        );
        assert!(calls.iter().all(|c| c.stdin.get("prevResult").is_none()));
        assert!(
            calls
                .iter()
                .all(|c| c.env("CNI_NETNS") == "/proc/self/ns/net")
        );
        assert_eq!(
            calls[0].stdin["runtimeConfig"]["portMappings"][0]["hostPort"],
            8080
        );
        assert!(f.cni.cached().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failed_add_deletes_the_chain_removes_the_cache_and_returns_the_error() {
        let f = fixture("add-fails");
        f.recorder.fail("tuning", Command::Add);
        let err = f
            .cni
            .add(&net("1.0.0"), "web", Path::new(NS), "eth0", &[])
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CNI plugin tuning ADD failed: tuning refused (code 7)"
        );
        assert_eq!(
            f.recorder.seen(),
            [
                "ADD bridge",
                "ADD tuning",
                "DEL portmap",
                "DEL tuning",
                "DEL bridge"
            ]
        );
        let calls = f.recorder.calls();
        assert!(
            calls[2..]
                .iter()
                .all(|c| c.stdin["prevResult"]["by"] == json!(["bridge"]))
        );
        assert!(f.cni.cached().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failed_undo_keeps_the_cache_for_the_next_del() {
        let f = fixture("undo-fails");
        f.recorder.fail("portmap", Command::Add);
        f.recorder.fail("bridge", Command::Del);
        let err = f
            .cni
            .add(&net("1.0.0"), "web", Path::new(NS), "eth0", &[])
            .await
            .unwrap_err();
        assert!(matches!(&err, CniError::PluginFailed { plugin, .. } if plugin == "portmap"));
        assert_eq!(f.cni.cached().unwrap(), ["web"]);
        let err = f.cni.del("web", None, "eth0").await.unwrap_err();
        assert!(matches!(&err, CniError::PluginFailed { plugin, .. } if plugin == "bridge"));
        assert_eq!(f.cni.cached().unwrap(), ["web"]);
        f.recorder.fail.lock().unwrap().clear();
        f.cni.del("web", None, "eth0").await.unwrap();
        assert!(f.cni.cached().unwrap().is_empty());
    }

    #[tokio::test]
    async fn add_over_an_earlier_entry_deletes_that_first() {
        let f = fixture("re-add");
        let net = net("1.0.0");
        f.cni
            .add(&net, "web", Path::new(NS), "eth0", &ports())
            .await
            .unwrap();
        f.recorder.calls.lock().unwrap().clear();
        f.cni
            .add(&net, "web", Path::new(NS), "eth0", &[])
            .await
            .unwrap();
        assert_eq!(
            f.recorder.seen(),
            [
                "DEL portmap",
                "DEL tuning",
                "DEL bridge",
                "ADD bridge",
                "ADD tuning",
                "ADD portmap"
            ]
        );
        let calls = f.recorder.calls();
        assert_eq!(
            calls[0].stdin["runtimeConfig"]["portMappings"][0]["hostPort"],
            8080
        );
        assert!(calls[5].stdin.get("runtimeConfig").is_none());
    }

    #[tokio::test]
    async fn check_runs_in_order_with_the_cached_result() {
        let f = fixture("check");
        let err = f.cni.check("web", Path::new(NS), "eth0").await.unwrap_err();
        assert!(matches!(err, CniError::NotAttached { .. }), "{err}");
        f.cni
            .add(&net("1.0.0"), "web", Path::new(NS), "eth0", &[])
            .await
            .unwrap();
        f.recorder.calls.lock().unwrap().clear();
        f.cni.check("web", Path::new(NS), "eth0").await.unwrap();
        assert_eq!(
            f.recorder.seen(),
            ["CHECK bridge", "CHECK tuning", "CHECK portmap"]
        );
        let full = json!(["bridge", "tuning", "portmap"]);
        assert!(
            f.recorder
                .calls()
                .iter()
                .all(|c| c.stdin["prevResult"]["by"] == full)
        );

        f.recorder.fail("tuning", Command::Check);
        let err = f.cni.check("web", Path::new(NS), "eth0").await.unwrap_err();
        assert!(matches!(&err, CniError::PluginFailed { plugin, .. } if plugin == "tuning"));
    }

    #[tokio::test]
    async fn lists_before_0_4_0_get_no_check_and_no_prev_result_on_del() {
        let f = fixture("v031");
        f.cni
            .add(&net("0.3.1"), "web", Path::new(NS), "eth0", &[])
            .await
            .unwrap();
        f.recorder.calls.lock().unwrap().clear();
        f.cni.check("web", Path::new(NS), "eth0").await.unwrap();
        assert!(f.recorder.calls().is_empty());
        f.cni.del("web", None, "eth0").await.unwrap();
        let calls = f.recorder.calls();
        assert_eq!(calls.len(), 3);
        assert!(calls.iter().all(|c| c.stdin.get("prevResult").is_none()));
        assert!(calls.iter().all(|c| c.stdin["cniVersion"] == "0.3.1"));
    }

    #[tokio::test]
    async fn bad_ids_and_interface_names_are_refused_before_anything_runs() {
        let f = fixture("ids");
        for (id, ifname) in [
            ("", "eth0"),
            ("a/b", "eth0"),
            ("..", "eth0"),
            ("a@b", "eth0"),
        ] {
            let err = f.cni.del(id, None, ifname).await.unwrap_err();
            assert!(err.to_string().starts_with("invalid container id"), "{err}");
        }
        for ifname in ["", "a-very-long-interface", "e/0", "e:0", "e 0", ".."] {
            let err = f
                .cni
                .add(&net("1.0.0"), "web", Path::new(NS), ifname, &[])
                .await
                .unwrap_err();
            assert!(
                err.to_string().starts_with("invalid interface name"),
                "{err}"
            );
        }
        assert!(f.recorder.calls().is_empty());
    }

    #[test]
    fn cached_lists_each_container_once_and_ignores_other_files() {
        let f = fixture("cached");
        let cache = &f.cni.config.cache_dir;
        std::fs::create_dir_all(cache).unwrap();
        for name in [
            "b@eth0.json",
            "a@eth0.json",
            "a@eth1.json",
            ".a@eth2.json.tmp-1-0",
            "junk.json",
            "c@eth0.txt",
        ] {
            std::fs::write(cache.join(name), "{}").unwrap();
        }
        assert_eq!(f.cni.cached().unwrap(), ["a", "b"]);
    }

    #[tokio::test]
    async fn mapped_ports_lists_every_entrys_mappings_with_its_container() {
        let f = fixture("ports");
        assert!(f.cni.mapped_ports().unwrap().is_empty());
        let net = net("1.0.0");
        f.cni
            .add(&net, "web", Path::new(NS), "eth0", &ports())
            .await
            .unwrap();
        f.cni
            .add(&net, "db", Path::new(NS), "eth0", &[])
            .await
            .unwrap();
        let udp = PortMapping {
            host_port: 53,
            container_port: 5353,
            protocol: "udp".into(),
            host_ip: Some("127.0.0.1".into()),
        };
        let list = cni::parse_list(&net.bytes).unwrap();
        let path = f.cni.entry_path("dns", "eth1").unwrap();
        let entry = intent(&net, &list, "dns", "eth1", std::slice::from_ref(&udp)).unwrap();
        f.cni.write_intent(&path, &entry).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(written.contains(r#""hostIP": "127.0.0.1""#), "{written}");
        let expected = vec![
            ("dns".to_string(), udp),
            ("web".to_string(), ports()[0].clone()),
        ];
        assert_eq!(f.cni.mapped_ports().unwrap(), expected);
        f.cni.del("web", None, "eth0").await.unwrap();
        assert_eq!(f.cni.mapped_ports().unwrap(), expected[..1]);
    }

    #[tokio::test]
    async fn ports_on_a_network_without_port_mapping_are_refused_before_anything_runs() {
        let f = fixture("no-portmap");
        let list = json!({"cniVersion": "1.0.0", "name": "plain", "plugins": [{"type": "bridge"}]});
        let net = cni::network_list(
            Path::new("/n/plain.conflist"),
            &serde_json::to_vec(&list).unwrap(),
        )
        .unwrap();
        let err = f
            .cni
            .add(&net, "web", Path::new(NS), "eth0", &ports())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CNI config /n/plain.conflist: host ports asked for, but no plugin of network plain declares capabilities.portMappings"
        );
        assert!(f.recorder.calls().is_empty());
        assert!(f.cni.cached().unwrap().is_empty());
        f.cni
            .add(&net, "web", Path::new(NS), "eth0", &[])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_corrupt_cache_entry_is_an_error_naming_it() {
        let f = fixture("corrupt");
        let cache = &f.cni.config.cache_dir;
        std::fs::create_dir_all(cache).unwrap();
        std::fs::write(cache.join("web@eth0.json"), "{\"kind\":").unwrap();
        let err = f.cni.del("web", None, "eth0").await.unwrap_err();
        assert!(err.to_string().contains("web@eth0.json"), "{err}");
        assert!(f.recorder.calls().is_empty());
    }

    #[test]
    fn a_namespace_is_told_from_a_plain_file() {
        assert!(is_netns(Path::new("/proc/self/ns/net")));
        assert!(!is_netns(Path::new("/proc/self/status")));
        assert!(!is_netns(Path::new("/nonexistent/netns")));
    }
}
