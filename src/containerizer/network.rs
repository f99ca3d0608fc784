//! A container's network of its own: a pinned network namespace and a
//! CNI attachment, made after the handle is reserved and before init
//! starts, and undone by destroy whatever state a crash left (the CNI
//! cache keeps what DEL needs). The names it is told (/etc/hosts,
//! resolv.conf, hostname) are written into its bundle and bind-mounted.
//! Without a CNI configuration on the node a container gets a fresh
//! namespace from the runtime, loopback only, as before.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::depot::BundlePaths;
use super::{Containerizer, ContainerizerError, ErrorKind, Result};
use crate::api::{ContainerSpec, Handle, Protocol};
use crate::fsutil;
use crate::network::attach::{Cni, PortMapping};
use crate::network::cni::{NetworkList, default_network};
use crate::network::{names, netns};
use crate::runtime::OciRuntime;

use super::rootfs::Mounter;

/// The interface a container's network appears as.
pub const IFNAME: &str = "eth0";

/// What the containerizer needs to give containers a network.
pub struct Networking {
    /// The CNI plugins and their configuration.
    pub cni: Cni,
    /// Where network namespaces are pinned, one file per handle.
    pub netns_dir: PathBuf,
    /// Serialises the host-port check and ADD, so two creates never take
    /// one port.
    ports: Mutex<()>,
    /// The address each handle had when it was last detached, which it
    /// asks for when it is attached again.
    previous: std::sync::Mutex<Previous>,
}

impl Networking {
    /// Containers attached through `cni`, their namespaces pinned in
    /// `netns_dir`.
    pub fn new(cni: Cni, netns_dir: PathBuf) -> Networking {
        Networking {
            cni,
            netns_dir,
            ports: Mutex::new(()),
            previous: std::sync::Mutex::new(Previous::default()),
        }
    }

    fn previous(&self) -> std::sync::MutexGuard<'_, Previous> {
        // A panic while holding it cannot leave the map inconsistent.
        self.previous.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How long a detached container's address is remembered: long enough
/// for a destroy and the create that makes it again, short enough that
/// handles which are gone for good do not pile up.
const REMEMBER_FOR: Duration = Duration::from_secs(600);

/// Detached containers' addresses, by handle: a container made again
/// (its runtime state lost, its network repaired, its spec changed) keeps
/// its address when it is still free. Pure; the clock is passed in.
#[derive(Debug, Default)]
struct Previous {
    by_handle: HashMap<String, (Instant, String, IpAddr)>,
}

impl Previous {
    /// Remember `handle`'s address on `network`, forgetting what is stale.
    fn remember(&mut self, handle: &str, network: &str, ip: IpAddr, now: Instant) {
        self.by_handle
            .retain(|_, (at, _, _)| now.saturating_duration_since(*at) < REMEMBER_FOR);
        let entry = (now, network.to_string(), ip);
        self.by_handle.insert(handle.to_string(), entry);
    }

    /// The address `handle` had on `network`, once.
    fn take(&mut self, handle: &str, network: &str, now: Instant) -> Option<IpAddr> {
        let (at, net, ip) = self.by_handle.remove(handle)?;
        (net == network && now.saturating_duration_since(at) < REMEMBER_FOR).then_some(ip)
    }
}

/// The address to ask for again: the first IPv4 one, or the first.
fn first_address(ips: &[IpAddr]) -> Option<IpAddr> {
    ips.iter().find(|ip| ip.is_ipv4()).or(ips.first()).copied()
}

/// What the depot record keeps of a container's network.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkUse {
    /// The CNI network's name.
    pub network: String,
    /// The container's addresses on it.
    pub ips: Vec<String>,
}

/// A container's pinned namespace and names files, before it is attached.
#[derive(Debug)]
pub(super) struct Pinned {
    /// The network it is attached to.
    list: NetworkList,
    /// The pinned namespace.
    pub netns: PathBuf,
    /// Files bind-mounted over the image's: (path in the container, path
    /// on the host).
    pub etc_files: Vec<(String, PathBuf)>,
}

impl<R: OciRuntime, M: Mounter> Containerizer<R, M> {
    /// The network `spec` is attached to: none with the host's network or
    /// `network: none`, or when the node has no CNI configuration and the
    /// spec names none; an error when it names one the node lacks.
    fn network_for(&self, handle: &Handle, spec: &ContainerSpec) -> Result<Option<NetworkList>> {
        let Some(net) = self.networking.as_ref() else {
            return Ok(None);
        };
        if spec.host_network || spec.network.as_deref() == Some("none") {
            return Ok(None);
        }
        let lists = net
            .cni
            .networks()
            .map_err(|e| network_err(handle, e.to_string()))?;
        match spec.network.as_deref() {
            None => Ok(default_network(&lists).cloned()),
            Some(name) => match lists.iter().find(|l| l.name == name) {
                Some(list) => Ok(Some(list.clone())),
                None => {
                    let known: Vec<&str> = lists.iter().map(|l| l.name.as_str()).collect();
                    let message = format!(
                        "spec.network: no CNI network {name:?} on this node (it has: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    );
                    Err(network_err(handle, message))
                }
            },
        }
    }

    /// Pin a namespace and write the names the container is told, its
    /// addresses not yet among them: what the bundle needs before the
    /// runtime makes the container. [`Containerizer::attach_pinned`] then
    /// attaches it while the runtime works. Whatever fails, destroy undoes
    /// it all.
    pub(super) async fn pin_network(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        paths: &BundlePaths,
    ) -> Result<Option<Pinned>> {
        let (Some(net), Some(list)) = (self.networking.as_ref(), self.network_for(handle, spec)?)
        else {
            return Ok(None);
        };
        let netns = net.netns_dir.join(handle.as_str());
        blocking(handle, netns.clone(), |p| netns::create(&p)).await?;
        let etc_files = self.write_names(handle, spec, paths, &[])?;
        Ok(Some(Pinned {
            list,
            netns,
            etc_files,
        }))
    }

    /// ADD the pinned namespace to its network, then put its addresses in
    /// /etc/hosts, written in place: the runtime may already have
    /// bind-mounted it, and the main process starts only after this.
    pub(super) async fn attach_pinned(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        pinned: &Pinned,
    ) -> Result<NetworkUse> {
        let Some(net) = self.networking.as_ref() else {
            return Err(network_err(handle, "no CNI networking configured".into()));
        };
        let ports = port_mappings(spec);
        let list = &pinned.list;
        let ip = self.previous_address(net, handle, &list.name);
        let attachment = {
            let _one_at_a_time = net.ports.lock().await;
            self.check_host_ports(net, handle, &ports)?;
            net.cni
                .add_asking(list, handle.as_str(), &pinned.netns, IFNAME, &ports, ip)
                .await
                .map_err(|e| network_err(handle, e.to_string()))?
        };
        self.write_hosts(handle, spec, pinned, &attachment.ips)?;
        Ok(NetworkUse {
            network: list.name.clone(),
            ips: attachment.ips.iter().map(IpAddr::to_string).collect(),
        })
    }

    /// The address `handle` had on `network` before: remembered from its
    /// last detach, or in a cache entry a crash left.
    fn previous_address(&self, net: &Networking, handle: &Handle, network: &str) -> Option<IpAddr> {
        let now = Instant::now();
        let remembered = net.previous().take(handle.as_str(), network, now);
        remembered.or_else(|| {
            let left = net.cni.attachment(handle.as_str(), IFNAME)?;
            (left.network == network).then(|| first_address(&left.ips))?
        })
    }

    /// DEL (from the CNI cache; nothing cached is nothing to do) and the
    /// pinned namespace's removal, remembering the address the container
    /// had for when it is made again. Idempotent.
    pub(super) async fn detach_network(&self, handle: &Handle) -> Result<()> {
        let Some(net) = self.networking.as_ref() else {
            return Ok(());
        };
        let path = net.netns_dir.join(handle.as_str());
        let pinned = netns::is_pinned(&path).then_some(path.as_path());
        let undone = net
            .cni
            .del(handle.as_str(), pinned, IFNAME)
            .await
            .map_err(|e| network_err(handle, e.to_string()))?;
        if let Some((left, ip)) = undone.and_then(|l| first_address(&l.ips).map(|ip| (l, ip))) {
            net.previous()
                .remember(handle.as_str(), &left.network, ip, Instant::now());
        }
        blocking(handle, path, |p| netns::remove(&p)).await
    }

    /// Why `handle`'s attachment is broken, if it is: its namespace is no
    /// longer pinned, or its interface is gone from it. `None` when it is
    /// whole, or the container has no network of its own. Read in-process
    /// (a statfs, the cgroup's pids, `/proc/<pid>/net/dev`): cheap enough
    /// for every look. The plugins' own CHECK is not run: Debian's portmap
    /// 1.1.1 fails it on a node without IPv6 rules ("could not check ipv6
    /// dnat"), which would make every container with a port again.
    pub async fn network_fault(&self, handle: &Handle) -> Option<String> {
        let net = self.networking.as_ref()?;
        let path = net.netns_dir.join(handle.as_str());
        if !netns::is_pinned(&path) {
            return Some(format!("its network namespace {} is gone", path.display()));
        }
        let pid = *self.cgroup(handle).procs().ok()?.first()?;
        let interfaces = crate::network::counters::read(pid).ok()?;
        match interfaces.iter().any(|(name, _)| name == IFNAME) {
            true => None,
            false => Some(format!("{IFNAME} is gone from its network namespace")),
        }
    }

    /// A host port and protocol (and address) another container publishes
    /// is refused before anything is attached. What is published is read
    /// from the CNI cache, written before each ADD's first plugin and under
    /// the same lock as this check, so two creates never both pass.
    fn check_host_ports(
        &self,
        net: &Networking,
        handle: &Handle,
        wanted: &[PortMapping],
    ) -> Result<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        let mapped = net
            .cni
            .mapped_ports()
            .map_err(|e| network_err(handle, e.to_string()))?;
        let taken = mapped
            .iter()
            .filter(|(id, _)| id != handle.as_str())
            .find_map(|(id, m)| wanted.iter().any(|w| same_port(w, m)).then_some((id, m)));
        match taken {
            Some((id, m)) => Err(network_err(
                handle,
                format!(
                    "spec.ports: host port {}/{} is already published by container {id}",
                    m.host_port,
                    m.protocol.to_uppercase()
                ),
            )),
            None => Ok(()),
        }
    }

    /// /etc/hosts, /etc/resolv.conf and /etc/hostname in the bundle.
    fn write_names(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        paths: &BundlePaths,
        ips: &[IpAddr],
    ) -> Result<Vec<(String, PathBuf)>> {
        let hostname = super::bundle::hostname(handle, spec);
        let node = std::fs::read_to_string(names::node_resolv_conf_path()).unwrap_or_default();
        let files = [
            (HOSTS, "hosts", names::hosts(&hostname, ips)),
            (
                "/etc/resolv.conf",
                "resolv.conf",
                names::resolv_conf(&node, spec.dns.as_ref()),
            ),
            ("/etc/hostname", "hostname", names::hostname_file(&hostname)),
        ];
        let dir = paths.dir.join("etc");
        std::fs::create_dir_all(&dir).map_err(|e| fs_err(handle, fsutil::FsError::new(&dir, e)))?;
        files
            .into_iter()
            .map(|(dest, name, text)| {
                let path = dir.join(name);
                write_in_place(handle, &path, &text)?;
                Ok((dest.to_string(), path))
            })
            .collect()
    }

    /// /etc/hosts again, with the container's addresses.
    fn write_hosts(
        &self,
        handle: &Handle,
        spec: &ContainerSpec,
        pinned: &Pinned,
        ips: &[IpAddr],
    ) -> Result<()> {
        let hostname = super::bundle::hostname(handle, spec);
        let hosts = pinned.etc_files.iter().find(|(dest, _)| dest == HOSTS);
        match hosts {
            Some((_, path)) => write_in_place(handle, path, &names::hosts(&hostname, ips)),
            None => Ok(()),
        }
    }
}

/// Where the hosts file is in the container.
const HOSTS: &str = "/etc/hosts";

/// Truncate and write `path`, keeping its inode, so that a bind mount of it
/// shows the new text.
fn write_in_place(handle: &Handle, path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| fs_err(handle, fsutil::FsError::new(path, e)))
}

/// The spec's published ports, as portmap takes them.
fn port_mappings(spec: &ContainerSpec) -> Vec<PortMapping> {
    spec.ports
        .iter()
        .filter_map(|p| {
            let host_port = u16::try_from(p.host_port?).ok()?;
            Some(PortMapping {
                host_port,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: protocol(p.protocol.unwrap_or_default()).to_string(),
                host_ip: p.host_ip.clone(),
            })
        })
        .collect()
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// One port and protocol on the same address, or on all of them.
fn same_port(a: &PortMapping, b: &PortMapping) -> bool {
    let any = |ip: &Option<String>| ip.as_deref().is_none_or(|a| a == "0.0.0.0" || a == "::");
    a.host_port == b.host_port
        && a.protocol == b.protocol
        && (any(&a.host_ip) || any(&b.host_ip) || a.host_ip == b.host_ip)
}

/// A namespace verb (a thread that unshares, mounts) off the async workers.
async fn blocking(
    handle: &Handle,
    path: PathBuf,
    verb: fn(PathBuf) -> std::result::Result<(), netns::NetnsError>,
) -> Result<()> {
    tokio::task::spawn_blocking(move || verb(path))
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
        .map_err(|e| network_err(handle, e.to_string()))
}

fn network_err(handle: &Handle, message: String) -> ContainerizerError {
    ContainerizerError::at(handle, ErrorKind::Network { message })
}

fn fs_err(handle: &Handle, source: fsutil::FsError) -> ContainerizerError {
    ContainerizerError::at(handle, ErrorKind::Fs { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_remembered_address_is_given_once_and_only_on_its_network() {
        let mut previous = Previous::default();
        let now = Instant::now();
        previous.remember("web", "rundmc", ip("10.89.0.7"), now);
        assert_eq!(previous.take("web", "other", now), None);
        previous.remember("web", "rundmc", ip("10.89.0.7"), now);
        assert_eq!(previous.take("web", "rundmc", now), Some(ip("10.89.0.7")));
        assert_eq!(previous.take("web", "rundmc", now), None);
    }

    #[test]
    fn stale_addresses_are_forgotten() {
        let mut previous = Previous::default();
        let then = Instant::now();
        previous.remember("old", "rundmc", ip("10.89.0.7"), then);
        let later = then + REMEMBER_FOR;
        previous.remember("new", "rundmc", ip("10.89.0.8"), later);
        assert_eq!(previous.by_handle.len(), 1, "old forgotten on insert");
        assert_eq!(previous.take("new", "rundmc", later + REMEMBER_FOR), None);
    }

    #[test]
    fn the_first_ipv4_address_is_asked_for() {
        let ips = [ip("fd00::7"), ip("10.89.0.7")];
        assert_eq!(first_address(&ips), Some(ip("10.89.0.7")));
        assert_eq!(first_address(&ips[..1]), Some(ip("fd00::7")));
        assert_eq!(first_address(&[]), None);
    }
}
