//! STAND-IN until the net-cni branch lands: the attach API of NET_API.md.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where CNI is.
#[derive(Debug, Clone)]
pub struct CniConfig {
    /// Configs.
    pub conf_dir: PathBuf,
    /// Plugins.
    pub bin_dirs: Vec<PathBuf>,
    /// Cache.
    pub cache_dir: PathBuf,
    /// Per plugin.
    pub timeout: Duration,
}

/// A network list.
#[derive(Debug, Clone)]
pub struct NetworkList {
    /// Name.
    pub name: String,
    /// Version.
    pub cni_version: String,
    /// File.
    pub file: PathBuf,
    /// Bytes.
    pub bytes: Vec<u8>,
}

/// A port mapping.
#[derive(Debug, Clone)]
pub struct PortMapping {
    /// Host.
    pub host_port: u16,
    /// Container.
    pub container_port: u16,
    /// tcp, udp, sctp.
    pub protocol: String,
    /// Address.
    pub host_ip: Option<String>,
}

/// An attachment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    /// Network.
    pub network: String,
    /// Interface.
    pub interface: String,
    /// Addresses.
    pub ips: Vec<IpAddr>,
    /// Result.
    pub result: serde_json::Value,
}

/// Errors.
#[derive(Debug, thiserror::Error)]
#[error("cni stand-in")]
pub struct CniError;

/// CNI.
#[derive(Debug)]
pub struct Cni(CniConfig);

impl Cni {
    /// New.
    pub fn new(config: CniConfig) -> Cni {
        Cni(config)
    }
    /// Networks.
    pub fn networks(&self) -> Result<Vec<NetworkList>, CniError> {
        Err(CniError)
    }
    /// ADD.
    pub async fn add(
        &self,
        _net: &NetworkList,
        _id: &str,
        _netns: &Path,
        _ifname: &str,
        _ports: &[PortMapping],
    ) -> Result<Attachment, CniError> {
        Err(CniError)
    }
    /// DEL.
    pub async fn del(
        &self,
        _id: &str,
        _netns: Option<&Path>,
        _ifname: &str,
    ) -> Result<(), CniError> {
        Ok(())
    }
}

/// The default.
pub fn default_network(lists: &[NetworkList]) -> Option<&NetworkList> {
    lists.first()
}
