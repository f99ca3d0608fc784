//! CNI network configuration: where the plugins and their configs are
//! ([`CniConfig`]), the network lists of a config directory ([`load`],
//! [`default_network`]), the parsed form the exec protocol reads
//! ([`ParsedList`]), and the one error type of the network attachment
//! ([`CniError`]).
//!
//! A file is a list when its object has `plugins`, and a single plugin
//! config (wrapped in a list of one, as libcni's `ConfListFromConf` does)
//! otherwise, whatever its extension (`.conflist`, `.conf` or `.json`).
//! Versions 0.3.0, 0.3.1, 0.4.0 and 1.0.0 are accepted: their results have
//! the same shape. This module does no I/O beyond reading the directory.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use thiserror::Error;

use super::plugin::Command;

/// The default config directory, as containerd's and the kubelet's.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// The default plugin directories: Debian's package, then the upstream path.
pub const DEFAULT_BIN_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];

/// File name endings read as network configs.
const EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// Where the network configs, the plugins and the attachment cache are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniConfig {
    /// The directory of network configs.
    pub conf_dir: PathBuf,
    /// Where plugins are looked up, in order (also `CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    /// Where an entry per container and interface records its attachment.
    pub cache_dir: PathBuf,
    /// How long one plugin may run before it is killed.
    pub timeout: Duration,
}

/// One network: a config file, read and checked, as a list of plugins.
#[derive(Debug, Clone)]
pub struct NetworkList {
    /// The network's `name`.
    pub name: String,
    /// Its `cniVersion`.
    pub cni_version: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// The list as read; a single plugin's config is wrapped in a list.
    pub bytes: Vec<u8>,
}

/// Why a network could not be configured, attached, checked or detached.
#[derive(Debug, Error)]
pub enum CniError {
    /// A network config (or a cached copy of one) is not valid.
    #[error("CNI config {file}: {message}")]
    Config {
        /// The file.
        file: PathBuf,
        /// What is wrong, with the field and, for JSON errors, the line.
        message: String,
    },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A cache entry is not what this module writes.
    #[error("CNI cache entry {path}: {message}")]
    Cache {
        /// The entry.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A container id or interface name CNI does not allow.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        /// `container id` or `interface name`.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// No plugin binary of that type in any plugin directory.
    #[error("CNI plugin {plugin} not found in {}", display_dirs(.dirs))]
    PluginNotFound {
        /// The plugin's `type`.
        plugin: String,
        /// Where it was looked for.
        dirs: Vec<PathBuf>,
    },
    /// The plugin could not be started, or its pipes failed.
    #[error("CNI plugin {plugin} ({path}): {source}")]
    Exec {
        /// The plugin's `type`.
        plugin: String,
        /// Its binary.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The plugin ran past the timeout and was killed with its process group.
    #[error("CNI plugin {plugin} {command} did not finish within {after:?} and was killed")]
    Timeout {
        /// The plugin's `type`.
        plugin: String,
        /// The CNI command.
        command: Command,
        /// The timeout.
        after: Duration,
    },
    /// The plugin reported an error (its error JSON on stdout, a non-zero exit).
    #[error("CNI plugin {plugin} {command} failed: {msg}{} (code {code})", details_suffix(.details))]
    PluginFailed {
        /// The plugin's `type`.
        plugin: String,
        /// The CNI command.
        command: Command,
        /// The CNI error code (1-99 the spec's, 100+ the plugin's).
        code: u64,
        /// The message.
        msg: String,
        /// The details, if any.
        details: String,
    },
    /// The plugin exited non-zero (or was killed) without an error JSON.
    #[error("CNI plugin {plugin} {command} exited with {status}: {output}")]
    Exited {
        /// The plugin's `type`.
        plugin: String,
        /// The CNI command.
        command: Command,
        /// The exit code or signal.
        status: String,
        /// What it wrote (stderr, else stdout), trimmed.
        output: String,
    },
    /// The plugin succeeded but its result is not a CNI result.
    #[error("CNI plugin {plugin} {command} gave a bad result: {message}")]
    BadResult {
        /// The plugin's `type`.
        plugin: String,
        /// The CNI command.
        command: Command,
        /// What is wrong.
        message: String,
    },
    /// CHECK on a container whose ADD did not finish.
    #[error("container {container_id} has no finished CNI attachment on {ifname}")]
    NotAttached {
        /// The container.
        container_id: String,
        /// The interface.
        ifname: String,
    },
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    names.join(":")
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(": {details}")
    }
}

/// A CNI version this module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
}

impl Version {
    fn parse(text: &str) -> Option<Version> {
        match text {
            "0.3.0" => Some(Version::V0_3_0),
            "0.3.1" => Some(Version::V0_3_1),
            "0.4.0" => Some(Version::V0_4_0),
            "1.0.0" => Some(Version::V1_0_0),
            _ => None,
        }
    }

    /// CHECK, and the cached result as DEL's `prevResult`, came with 0.4.0.
    pub(crate) fn has_check(self) -> bool {
        self >= Version::V0_4_0
    }
}

/// One plugin of a list: its `type`, whether it takes port mappings, and
/// its config object as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PluginConf {
    pub(crate) kind: String,
    pub(crate) capabilities: BTreeMap<String, bool>,
    pub(crate) raw: Map<String, Value>,
}

/// A network list, parsed for the exec protocol.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedList {
    pub(crate) name: String,
    pub(crate) cni_version: String,
    pub(crate) version: Version,
    pub(crate) disable_check: bool,
    pub(crate) plugins: Vec<PluginConf>,
}

/// The fields a list must have, typed so that errors name field and line.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListDoc {
    cni_version: String,
    name: String,
    #[serde(default)]
    disable_check: bool,
    plugins: Vec<PluginDoc>,
}

/// The fields a single plugin config must have.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SingleDoc {
    cni_version: String,
    name: String,
    /// Read only so that a missing or mistyped `type` is named with its line.
    #[serde(flatten)]
    _plugin: PluginDoc,
}

#[derive(Deserialize)]
struct PluginDoc {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    capabilities: BTreeMap<String, bool>,
}

/// Every network in `conf_dir` (see [`load_with_errors`]); a file that is
/// not a valid config is logged as a warning and left out, so one bad file
/// never hides the good ones. A missing directory has no networks.
pub fn load(conf_dir: &Path) -> Result<Vec<NetworkList>, CniError> {
    let (lists, errors) = load_with_errors(conf_dir)?;
    for error in errors {
        tracing::warn!(%error, "ignoring a CNI network config");
    }
    Ok(lists)
}

/// The networks of the `*.conflist`, `*.conf` and `*.json` files in
/// `conf_dir`, sorted by file name, and an error for each such file that
/// is not a valid config. Hidden files and directories are skipped. A
/// missing directory has no networks; one that cannot be listed is an error.
pub fn load_with_errors(conf_dir: &Path) -> Result<(Vec<NetworkList>, Vec<CniError>), CniError> {
    let mut lists = Vec::new();
    let mut errors = Vec::new();
    for file in config_files(conf_dir)? {
        match read_list(&file) {
            Ok(list) => lists.push(list),
            Err(error) => errors.push(error),
        }
    }
    Ok((lists, errors))
}

/// The default network: the first by file name, as containerd picks it.
pub fn default_network(lists: &[NetworkList]) -> Option<&NetworkList> {
    lists.iter().min_by(|a, b| a.file.cmp(&b.file))
}

fn config_files(conf_dir: &Path) -> Result<Vec<PathBuf>, CniError> {
    let io_error = |source| CniError::Io {
        path: conf_dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(conf_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.map_err(io_error)?,
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error)?;
        let path = entry.path();
        if is_config_name(&path) && !entry.file_type().map_err(io_error)?.is_dir() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn is_config_name(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && EXTENSIONS.contains(&ext)
}

fn read_list(file: &Path) -> Result<NetworkList, CniError> {
    let bytes = std::fs::read(file).map_err(|source| CniError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    network_list(file, &bytes)
}

/// `bytes` (the contents of `file`) checked and made a [`NetworkList`]; a
/// single plugin's config is wrapped in a list of one.
pub(crate) fn network_list(file: &Path, bytes: &[u8]) -> Result<NetworkList, CniError> {
    let config_error = |message: String| CniError::Config {
        file: file.to_path_buf(),
        message,
    };
    let value: Value = serde_json::from_slice(bytes).map_err(|e| config_error(e.to_string()))?;
    let bytes = match value.get("plugins") {
        Some(_) => bytes.to_vec(),
        None => wrap_single(bytes, value).map_err(config_error)?,
    };
    let parsed = parse_list(&bytes).map_err(config_error)?;
    Ok(NetworkList {
        name: parsed.name,
        cni_version: parsed.cni_version,
        file: file.to_path_buf(),
        bytes,
    })
}

fn wrap_single(bytes: &[u8], value: Value) -> Result<Vec<u8>, String> {
    let doc: SingleDoc = typed(bytes)?;
    let list = serde_json::json!({
        "cniVersion": doc.cni_version,
        "name": doc.name,
        "plugins": [value],
    });
    serde_json::to_vec_pretty(&list).map_err(|e| e.to_string())
}

fn typed<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })
}

/// A list's bytes parsed and checked: a supported `cniVersion`, a `name`,
/// and at least one plugin, each an object with a plain `type`.
pub(crate) fn parse_list(bytes: &[u8]) -> Result<ParsedList, String> {
    let doc: ListDoc = typed(bytes)?;
    let version = Version::parse(&doc.cni_version).ok_or_else(|| {
        format!(
            "cniVersion: {:?} is not supported (0.3.0, 0.3.1, 0.4.0 or 1.0.0)",
            doc.cni_version
        )
    })?;
    if doc.name.is_empty() {
        return Err("name: must not be empty".into());
    }
    if doc.plugins.is_empty() {
        return Err("plugins: must name at least one plugin".into());
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let raws = value.get("plugins").and_then(Value::as_array);
    let plugins = doc
        .plugins
        .into_iter()
        .enumerate()
        .map(|(i, plugin)| plugin_conf(i, plugin, raws.and_then(|r| r.get(i))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ParsedList {
        name: doc.name,
        cni_version: doc.cni_version,
        version,
        disable_check: doc.disable_check,
        plugins,
    })
}

fn plugin_conf(index: usize, doc: PluginDoc, raw: Option<&Value>) -> Result<PluginConf, String> {
    let plain = !doc.kind.is_empty() && !doc.kind.contains('/') && doc.kind != "..";
    if !plain {
        return Err(format!(
            "plugins[{index}].type: {:?} is not a plugin name",
            doc.kind
        ));
    }
    let raw = raw
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| format!("plugins[{index}]: not an object"))?;
    Ok(PluginConf {
        kind: doc.kind,
        capabilities: doc.capabilities,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rundmc-cni-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const LIST: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "net",
  "plugins": [
    {"type": "bridge", "bridge": "br0", "ipam": {"type": "host-local"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}"#;

    #[test]
    fn a_list_keeps_each_plugin_as_written_and_its_capabilities() {
        let parsed = parse_list(LIST.as_bytes()).unwrap();
        assert_eq!(parsed.name, "net");
        assert_eq!(parsed.version, Version::V1_0_0);
        let kinds: Vec<_> = parsed.plugins.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(kinds, ["bridge", "portmap"]);
        assert_eq!(parsed.plugins[0].raw["bridge"], "br0");
        assert!(parsed.plugins[0].capabilities.is_empty());
        assert!(parsed.plugins[1].capabilities["portMappings"]);
    }

    #[test]
    fn a_single_config_is_wrapped_in_a_list() {
        let conf = r#"{"cniVersion": "0.4.0", "name": "one", "type": "bridge", "bridge": "b"}"#;
        let list = network_list(Path::new("/x/10-one.conf"), conf.as_bytes()).unwrap();
        assert_eq!(
            (list.name.as_str(), list.cni_version.as_str()),
            ("one", "0.4.0")
        );
        let parsed = parse_list(&list.bytes).unwrap();
        assert_eq!(parsed.plugins.len(), 1);
        assert_eq!(parsed.plugins[0].kind, "bridge");
        assert_eq!(parsed.plugins[0].raw["bridge"], "b");
    }

    #[test]
    fn errors_name_the_file_the_field_and_the_line() {
        let missing = r#"{"cniVersion": "1.0.0", "name": "n",
            "plugins": [{"type": "bridge"}, {"bridge": "x"}]}"#;
        let err = network_list(Path::new("/c/bad.conflist"), missing.as_bytes()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("CNI config /c/bad.conflist: plugins[1]"),
            "{text}"
        );
        assert!(
            text.contains("missing field `type`") && text.contains("line 2"),
            "{text}"
        );

        let syntax = "{\"name\": \"n\",\n  \"plugins\": [,]}";
        let text = network_list(Path::new("/c/s.conflist"), syntax.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("/c/s.conflist") && text.contains("line 2"),
            "{text}"
        );

        let version = r#"{"cniVersion": "0.2.0", "name": "n", "plugins": [{"type": "b"}]}"#;
        let text = parse_list(version.as_bytes()).unwrap_err();
        assert!(text.starts_with("cniVersion: \"0.2.0\""), "{text}");

        let escape = r#"{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../sh"}]}"#;
        let text = parse_list(escape.as_bytes()).unwrap_err();
        assert!(text.starts_with("plugins[0].type"), "{text}");

        let empty = r#"{"cniVersion": "1.0.0", "name": "n", "plugins": []}"#;
        assert!(
            parse_list(empty.as_bytes())
                .unwrap_err()
                .starts_with("plugins")
        );
    }

    #[test]
    fn load_sorts_by_file_name_and_reports_bad_files_beside_the_good() {
        let dir = scratch("load");
        std::fs::write(dir.join("20-b.conflist"), LIST.replace("\"net\"", "\"b\"")).unwrap();
        std::fs::write(
            dir.join("10-a.conf"),
            r#"{"cniVersion": "1.0.0", "name": "a", "type": "bridge"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("15-bad.json"), "{not json").unwrap();
        std::fs::write(dir.join("30-c.conflist.bak"), LIST).unwrap();
        std::fs::write(dir.join(".05-hidden.conflist"), LIST).unwrap();
        std::fs::create_dir(dir.join("00-dir.conf")).unwrap();

        let (lists, errors) = load_with_errors(&dir).unwrap();
        let names: Vec<_> = lists.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("15-bad.json"),
            "{}",
            errors[0]
        );
        assert_eq!(default_network(&lists).unwrap().name, "a");
        assert_eq!(load(&dir).unwrap().len(), 2);

        std::fs::remove_dir_all(&dir).unwrap();
        assert!(load(&dir).unwrap().is_empty());
        assert!(default_network(&[]).is_none());
    }
}
