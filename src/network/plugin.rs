//! The CNI exec protocol for one plugin: the `CNI_*` environment, the
//! config on stdin (the plugin's object with the list's `name` and
//! `cniVersion`, the `prevResult`, and the `runtimeConfig` entries of the
//! capabilities it declares), and its stdout read back as a result or as
//! an error JSON (`{code, msg, details}` with a non-zero exit).
//!
//! Running is behind [`PluginExec`]: [`ProcessExec`] runs the binary in a
//! process group of its own and kills the group at the timeout or when the
//! call is dropped; unit tests use a recording double. Everything else here
//! is pure.

use crate::procgroup::{GroupGuard, exchange};
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::process::Child;

use super::cni::{CniError, ParsedList, PluginConf};

/// A CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach.
    Add,
    /// Check an attachment.
    Check,
    /// Detach.
    Del,
}

impl Command {
    /// Its name in `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Check => "CHECK",
            Command::Del => "DEL",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run of one plugin, everything decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRequest {
    /// The plugin's `type`: the binary's name.
    pub plugin: String,
    /// The command (also in `env`).
    pub command: Command,
    /// Where the binary is looked up, in order.
    pub bin_dirs: Vec<PathBuf>,
    /// The `CNI_*` variables, set over the agent's environment (`PATH`
    /// included: portmap and firewall run iptables).
    pub env: Vec<(String, String)>,
    /// The plugin's config.
    pub stdin: Vec<u8>,
    /// When it is killed.
    pub timeout: Duration,
}

/// How a plugin ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginOutput {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: Vec<u8>,
}

/// Runs one plugin to its end, or kills it (and its process group) at the
/// request's timeout with [`CniError::Timeout`].
pub trait PluginExec: Send + Sync + 'static {
    /// Run `request`. A binary missing from every directory is
    /// [`CniError::PluginNotFound`].
    fn exec(
        &self,
        request: PluginRequest,
    ) -> impl Future<Output = Result<PluginOutput, CniError>> + Send;
}

/// [`PluginExec`] on `tokio::process`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessExec;

impl PluginExec for ProcessExec {
    async fn exec(&self, request: PluginRequest) -> Result<PluginOutput, CniError> {
        let path = find_binary(&request.plugin, &request.bin_dirs)?;
        let exec_error = |source| CniError::Exec {
            plugin: request.plugin.clone(),
            path: path.clone(),
            source,
        };
        let mut child = spawn(&path, &request.env).map_err(exec_error)?;
        let mut group = GroupGuard::new(&child);
        match tokio::time::timeout(request.timeout, drive(&mut child, &request.stdin)).await {
            Ok(Ok(output)) => {
                group.disarm();
                Ok(output)
            }
            Ok(Err(source)) => Err(exec_error(source)),
            Err(_elapsed) => {
                group.kill();
                // Reap it, so that no zombie is left behind either.
                let _ = child.wait().await;
                Err(CniError::Timeout {
                    plugin: request.plugin,
                    command: request.command,
                    after: request.timeout,
                })
            }
        }
    }
}

/// The first executable regular file named `plugin` in `dirs`.
fn find_binary(plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    dirs.iter()
        .map(|dir| dir.join(plugin))
        .find(|path| is_executable(path))
        .ok_or_else(|| CniError::PluginNotFound {
            plugin: plugin.to_string(),
            dirs: dirs.to_vec(),
        })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn spawn(path: &Path, env: &[(String, String)]) -> io::Result<Child> {
    let mut command = tokio::process::Command::new(path);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CNI_") {
            command.env_remove(key);
        }
    }
    command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

async fn drive(child: &mut Child, input: &[u8]) -> io::Result<PluginOutput> {
    let ended = exchange(child, input).await?;
    Ok(PluginOutput {
        code: ended.status.code(),
        signal: ended.status.signal(),
        stdout: ended.stdout,
        stderr: ended.stderr,
    })
}

/// Where and on what a chain runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) container_id: &'a str,
    /// The netns path; `None` passes an empty `CNI_NETNS` (DEL of a
    /// namespace that is gone).
    pub(crate) netns: Option<&'a Path>,
    pub(crate) ifname: &'a str,
    /// `CNI_ARGS`, as [`cni_args`] builds it; empty for none.
    pub(crate) args: &'a str,
}

/// The `CNI_*` environment of one call. `CNI_ARGS` is the target's: empty,
/// or the addresses asked for (see [`cni_args`]); everything else plugins
/// need reaches them through the config.
pub(crate) fn environment(
    command: Command,
    target: &Target<'_>,
    bin_dirs: &[PathBuf],
) -> Vec<(String, String)> {
    let netns = target.netns.map(|p| p.display().to_string());
    let path: Vec<OsString> = bin_dirs
        .iter()
        .map(|d| d.clone().into_os_string())
        .collect();
    let path = path.join(std::ffi::OsStr::new(":"));
    vec![
        ("CNI_COMMAND".into(), command.as_str().into()),
        ("CNI_CONTAINERID".into(), target.container_id.into()),
        ("CNI_NETNS".into(), netns.unwrap_or_default()),
        ("CNI_IFNAME".into(), target.ifname.into()),
        ("CNI_ARGS".into(), target.args.into()),
        ("CNI_PATH".into(), path.to_string_lossy().into_owned()),
    ]
}

/// `CNI_ARGS` asking IPAM for `ip` (host-local's `IP`), with
/// `IgnoreUnknown=1` so that plugins which parse `CNI_ARGS` and know no
/// `IP` (bridge) accept it, as container runtimes pass it. One address:
/// host-local 1.1 takes no list, and gives the other range sets of a
/// dual-stack network whatever is free. Empty for none.
pub(crate) fn cni_args(ip: Option<IpAddr>) -> String {
    match ip {
        Some(ip) => format!("IgnoreUnknown=1;IP={ip}"),
        None => String::new(),
    }
}

/// The config one plugin reads on stdin: its own object, with the list's
/// `name` and `cniVersion`, `prevResult` when there is one, and of
/// `runtime_config` only the keys the plugin declares as capabilities
/// (as libcni does: `portMappings` reaches portmap, not bridge).
pub(crate) fn stdin_config(
    list: &ParsedList,
    plugin: &PluginConf,
    prev_result: Option<&Value>,
    runtime_config: &Map<String, Value>,
) -> Vec<u8> {
    let mut conf = plugin.raw.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    match prev_result {
        Some(prev) => conf.insert("prevResult".into(), prev.clone()),
        None => conf.remove("prevResult"),
    };
    let granted: Map<String, Value> = runtime_config
        .iter()
        .filter(|(key, _)| plugin.capabilities.get(*key) == Some(&true))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if granted.is_empty() {
        conf.remove("runtimeConfig");
    } else {
        conf.insert("runtimeConfig".into(), Value::Object(granted));
    }
    // A map of JSON values always serialises.
    serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
}

/// What a plugin's run means: for ADD the result object; for CHECK and DEL
/// `null` (what they print is not read). A non-zero exit is the plugin's
/// error JSON when it printed one.
pub(crate) fn interpret(request: &PluginRequest, output: &PluginOutput) -> Result<Value, CniError> {
    if output.code != Some(0) {
        return Err(failure(request, output));
    }
    if request.command != Command::Add {
        return Ok(Value::Null);
    }
    let bad = |message: String| CniError::BadResult {
        plugin: request.plugin.clone(),
        command: request.command,
        message,
    };
    let value: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| bad(format!("{e}: {}", text(&output.stdout))))?;
    if !value.is_object() {
        return Err(bad(format!("not an object: {}", text(&output.stdout))));
    }
    Ok(value)
}

fn failure(request: &PluginRequest, output: &PluginOutput) -> CniError {
    let error: Option<Map<String, Value>> = serde_json::from_slice(&output.stdout).ok();
    let code = error.as_ref().and_then(|e| e.get("code")?.as_u64());
    match (error.as_ref(), code) {
        (Some(error), Some(code)) => CniError::PluginFailed {
            plugin: request.plugin.clone(),
            command: request.command,
            code,
            msg: string_field(error, "msg"),
            details: string_field(error, "details"),
        },
        _ => CniError::Exited {
            plugin: request.plugin.clone(),
            command: request.command,
            status: match (output.code, output.signal) {
                (Some(code), _) => format!("code {code}"),
                (None, Some(signal)) => format!("signal {signal}"),
                (None, None) => "an unknown status".into(),
            },
            output: if output.stderr.trim_ascii().is_empty() {
                text(&output.stdout)
            } else {
                text(&output.stderr)
            },
        },
    }
}

fn string_field(object: &Map<String, Value>, key: &str) -> String {
    object
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes.trim_ascii()).into_owned()
}

/// The addresses a result gives the container's interface `ifname`: each
/// `ips[].address` whose `interface` index names the interface of that name
/// inside a sandbox, or that names no interface.
pub(crate) fn result_ips(result: &Value, ifname: &str) -> Vec<IpAddr> {
    let interfaces = result.get("interfaces").and_then(Value::as_array);
    let is_ours = |index: u64| {
        let iface = usize::try_from(index).ok().and_then(|i| interfaces?.get(i));
        iface.is_some_and(|iface| {
            iface.get("name").and_then(Value::as_str) == Some(ifname)
                && iface
                    .get("sandbox")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
        })
    };
    let ips = result.get("ips").and_then(Value::as_array);
    ips.into_iter()
        .flatten()
        .filter(|ip| {
            ip.get("interface")
                .and_then(Value::as_u64)
                .is_none_or(is_ours)
        })
        .filter_map(|ip| ip.get("address")?.as_str()?.split('/').next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::cni::parse_list;
    use serde_json::json;

    fn list() -> ParsedList {
        let bytes = json!({
            "cniVersion": "1.0.0",
            "name": "net",
            "plugins": [
                {"type": "bridge", "bridge": "br0", "runtimeConfig": {"stale": 1}},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
            ]
        });
        parse_list(&serde_json::to_vec(&bytes).unwrap()).unwrap()
    }

    fn request(command: Command) -> PluginRequest {
        PluginRequest {
            plugin: "bridge".into(),
            command,
            bin_dirs: vec![],
            env: vec![],
            stdin: vec![],
            timeout: Duration::from_secs(1),
        }
    }

    fn output(code: i32, stdout: &str, stderr: &str) -> PluginOutput {
        PluginOutput {
            code: Some(code),
            signal: None,
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn an_address_asked_for_goes_in_cni_args_for_host_local() {
        assert_eq!(cni_args(None), "");
        let ip = "10.89.0.7".parse().ok();
        assert_eq!(cni_args(ip), "IgnoreUnknown=1;IP=10.89.0.7");
        let target = Target {
            container_id: "web",
            netns: None,
            ifname: "eth0",
            args: &cni_args(ip),
        };
        let env = environment(Command::Add, &target, &[]);
        assert!(env.contains(&("CNI_ARGS".into(), "IgnoreUnknown=1;IP=10.89.0.7".into())));
    }

    #[test]
    fn the_environment_names_everything_and_an_absent_netns_is_empty() {
        let target = Target {
            container_id: "web",
            netns: Some(Path::new("/run/netns/web")),
            ifname: "eth0",
            args: "",
        };
        let dirs = [PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")];
        let env = environment(Command::Add, &target, &dirs);
        let get = |env: &[(String, String)], k: &str| {
            env.iter().find(|(key, _)| key == k).unwrap().1.clone()
        };
        assert_eq!(get(&env, "CNI_COMMAND"), "ADD");
        assert_eq!(get(&env, "CNI_CONTAINERID"), "web");
        assert_eq!(get(&env, "CNI_NETNS"), "/run/netns/web");
        assert_eq!(get(&env, "CNI_IFNAME"), "eth0");
        assert_eq!(get(&env, "CNI_ARGS"), "");
        assert_eq!(get(&env, "CNI_PATH"), "/usr/lib/cni:/opt/cni/bin");
        let gone = Target {
            netns: None,
            ..target
        };
        let env = environment(Command::Del, &gone, &dirs);
        assert_eq!(get(&env, "CNI_COMMAND"), "DEL");
        assert_eq!(get(&env, "CNI_NETNS"), "");
    }

    #[test]
    fn stdin_carries_name_version_prev_result_and_only_granted_capabilities() {
        let list = list();
        let runtime =
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
        let runtime = runtime.as_object().unwrap();
        let prev = json!({"cniVersion": "1.0.0", "ips": []});

        let first: Value =
            serde_json::from_slice(&stdin_config(&list, &list.plugins[0], None, runtime)).unwrap();
        assert_eq!(first["name"], "net");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert_eq!(first["bridge"], "br0");
        assert!(first.get("prevResult").is_none());
        assert!(first.get("runtimeConfig").is_none(), "{first}");

        let second: Value =
            serde_json::from_slice(&stdin_config(&list, &list.plugins[1], Some(&prev), runtime))
                .unwrap();
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert_eq!(second["snat"], true);
        assert_eq!(second["capabilities"]["portMappings"], true);

        let none: Value =
            serde_json::from_slice(&stdin_config(&list, &list.plugins[1], None, &Map::new()))
                .unwrap();
        assert!(none.get("runtimeConfig").is_none());
    }

    #[test]
    fn an_add_result_is_parsed_and_other_commands_give_none() {
        let ok = output(0, r#"{"cniVersion":"1.0.0","ips":[]}"#, "");
        let result = interpret(&request(Command::Add), &ok).unwrap();
        assert_eq!(result["cniVersion"], "1.0.0");
        assert_eq!(interpret(&request(Command::Del), &ok).unwrap(), Value::Null);
        assert_eq!(
            interpret(&request(Command::Check), &output(0, "", "")).unwrap(),
            Value::Null
        );
        let err = interpret(&request(Command::Add), &output(0, "", "")).unwrap_err();
        assert!(matches!(err, CniError::BadResult { .. }), "{err}");
        let err = interpret(&request(Command::Add), &output(0, "[1]", "")).unwrap_err();
        assert!(err.to_string().contains("not an object"), "{err}");
    }

    #[test]
    fn an_error_json_becomes_plugin_failed_with_code_msg_and_details() {
        let stdout = r#"{"cniVersion":"1.0.0","code":11,"msg":"no IP addresses available","details":"range 10.0.0.0/30"}"#;
        let err = interpret(&request(Command::Add), &output(1, stdout, "")).unwrap_err();
        match &err {
            CniError::PluginFailed {
                plugin,
                command,
                code,
                msg,
                details,
            } => {
                assert_eq!(
                    (plugin.as_str(), *command, *code),
                    ("bridge", Command::Add, 11)
                );
                assert_eq!(msg, "no IP addresses available");
                assert_eq!(details, "range 10.0.0.0/30");
            }
            other => panic!("{other}"),
        }
        assert_eq!(
            err.to_string(),
            "CNI plugin bridge ADD failed: no IP addresses available: range 10.0.0.0/30 (code 11)"
        );
    }

    #[test]
    fn a_failure_without_error_json_keeps_what_the_plugin_said() {
        let err = interpret(&request(Command::Del), &output(2, "", "panic: boom\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CNI plugin bridge DEL exited with code 2: panic: boom"
        );
        let killed = PluginOutput {
            code: None,
            signal: Some(9),
            stdout: b"partial".to_vec(),
            stderr: vec![],
        };
        let err = interpret(&request(Command::Add), &killed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CNI plugin bridge ADD exited with signal 9: partial"
        );
    }

    #[test]
    fn result_ips_are_those_of_the_sandboxed_interface() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa"},
                {"name": "veth1", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/run/netns/x"},
                {"name": "eth1", "mac": "dd", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "10.22.0.5/24", "gateway": "10.22.0.1", "interface": 2},
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.22.0.1/24", "interface": 0},
                {"address": "10.99.0.1/24", "interface": 3},
                {"address": "192.168.1.9/24"},
                {"address": "junk"}
            ]
        });
        let ips: Vec<String> = result_ips(&result, "eth0")
            .iter()
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(ips, ["10.22.0.5", "fd00::5", "192.168.1.9"]);
        assert!(result_ips(&json!({}), "eth0").is_empty());
    }

    /// Write an executable script from a child process, so that no fd of
    /// it is ever open in this multi-threaded test process: a fork by
    /// another test could carry one into its child, and the exec would
    /// fail with ETXTBSY ("Text file busy").
    fn write_script(path: &Path, text: &str) {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
            .arg(path)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }

    #[tokio::test]
    async fn process_exec_kills_the_plugin_and_what_it_forked_at_the_timeout() {
        let dir = std::env::temp_dir().join(format!("rundmc-plugin-t-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("sleeper");
        let script = dir.join("hang");
        let body = format!(
            "#!/bin/sh\nsleep 60 &\necho $! > {}\nwait\n",
            pid_file.display()
        );
        write_script(&script, &body);
        let mut request = request(Command::Del);
        request.plugin = "hang".into();
        request.bin_dirs = vec![dir.clone()];
        request.timeout = Duration::from_millis(500);

        let err = ProcessExec.exec(request).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "CNI plugin hang DEL did not finish within 500ms and was killed"
        );
        let sleeper = std::fs::read_to_string(&pid_file).unwrap();
        let stat = Path::new("/proc").join(sleeper.trim()).join("stat");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        // Gone, or a zombie until init reaps it.
        while std::fs::read_to_string(&stat).is_ok_and(|s| !s.contains(") Z ")) {
            assert!(
                std::time::Instant::now() < deadline,
                "sleep {sleeper} survived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn process_exec_runs_the_binary_with_env_and_stdin() {
        let dir = std::env::temp_dir().join(format!("rundmc-plugin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("echo-plugin");
        write_script(
            &script,
            "#!/bin/sh\necho \"$CNI_COMMAND $CNI_CONTAINERID\"; cat; echo err >&2; exit 3\n",
        );
        let mut request = request(Command::Add);
        request.plugin = "echo-plugin".into();
        request.bin_dirs = vec![dir.join("missing"), dir.clone()];
        request.env = vec![
            ("CNI_COMMAND".into(), "ADD".into()),
            ("CNI_CONTAINERID".into(), "c1".into()),
        ];
        request.stdin = b"{}".to_vec();
        let out = ProcessExec.exec(request.clone()).await.unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, b"ADD c1\n{}");
        assert_eq!(out.stderr, b"err\n");

        request.plugin = "absent".into();
        let err = ProcessExec.exec(request).await.unwrap_err();
        assert!(
            matches!(&err, CniError::PluginNotFound { plugin, .. } if plugin == "absent"),
            "{err}"
        );
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
