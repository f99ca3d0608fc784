//! Processes beside the main one: init processes that run to completion
//! before it, and what status says of every process of a container. Their
//! validation names the field of each bad entry.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{ContainerSpec, EnvVar, ProcessSpec, Termination};
use super::validate::{FieldError, check_process};

/// A process run to completion in the container's rootfs before the main
/// process, as a Kubernetes init container (without an image of its own).
/// Its argv is `command` + `args`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitProcess {
    /// Unique among the container's processes; a DNS label. Status and logs
    /// name the process by it.
    pub name: String,
    /// The executable and its first arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments after `command`; without it, the first is the executable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Working directory inside the container. Defaults to `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `uid:gid`, `uid`, or a user name from the rootfs' /etc/passwd. Defaults to root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Extra environment for this process, after the container's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

impl InitProcess {
    /// The argv it runs.
    pub fn argv(&self) -> Vec<String> {
        self.command.iter().chain(&self.args).cloned().collect()
    }

    /// As a process spec, for what checks and runs every process.
    pub fn as_process(&self) -> ProcessSpec {
        ProcessSpec {
            command: self.command.clone(),
            args: self.args.clone(),
            working_dir: self.working_dir.clone(),
            user: self.user.clone(),
            env: self.env.clone(),
            ..ProcessSpec::default()
        }
    }
}

/// Which part a process plays in its container.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ProcessRole {
    /// Runs to completion before the main process.
    Init,
    /// The main process.
    Main,
    /// Runs beside the main process.
    Sidecar,
}

/// What a process is doing now.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ProcessState {
    /// Not running: not started yet, or waiting out a backoff.
    Waiting,
    /// Running.
    Running,
    /// Ended, and not restarted (an init process that completed, too).
    Terminated,
}

/// One process of the container, as status reports it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStatus {
    /// The process's name (`main` for the main process).
    pub name: String,
    /// Init, Main or Sidecar.
    pub role: ProcessRole,
    /// Waiting, Running or Terminated.
    pub state: ProcessState,
    /// Why it is in that state, e.g. CrashLoopBackOff or Completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Running and, where it has a readiness probe, passing it. An init
    /// process is ready once it completed.
    pub ready: bool,
    /// How many times it was restarted.
    #[serde(default)]
    pub restart_count: i64,
    /// How it last ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_termination: Option<Termination>,
}

/// The name status gives the main process; no other process may take it.
pub const MAIN_NAME: &str = "main";

/// Check the init processes: each a runnable argv with a unique DNS-label
/// name.
pub(super) fn check(errs: &mut Vec<FieldError>, spec: &ContainerSpec) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in spec.init_processes.iter().enumerate() {
        let at = format!("spec.initProcesses[{i}]");
        check_name(errs, &at, &p.name, &mut seen);
        check_process(errs, &at, &p.as_process(), false);
    }
}

/// A process's name: a DNS label (it names a directory), not `main`, unique.
fn check_name<'a>(
    errs: &mut Vec<FieldError>,
    at: &str,
    name: &'a str,
    seen: &mut std::collections::BTreeSet<&'a str>,
) {
    let label = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !label {
        errs.push(FieldError::new(
            format!("{at}.name"),
            "must be 1 to 40 lowercase letters, digits and '-', starting and ending with a letter or digit",
        ));
    } else if name == MAIN_NAME {
        errs.push(FieldError::new(
            format!("{at}.name"),
            "\"main\" names the main process",
        ));
    } else if !seen.insert(name) {
        errs.push(FieldError::new(
            format!("{at}.name"),
            format!("{name:?} is taken by another process of the container"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validate;

    fn with_inits(inits: Vec<InitProcess>) -> ContainerSpec {
        ContainerSpec {
            rootfs: "/r".into(),
            init_processes: inits,
            ..ContainerSpec::default()
        }
    }

    fn init(name: &str, args: &[&str]) -> InitProcess {
        InitProcess {
            name: name.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..InitProcess::default()
        }
    }

    #[test]
    fn init_processes_need_a_unique_name_and_an_argv() {
        let ok = with_inits(vec![init("a", &["/bin/true"]), init("b-2", &["x"])]);
        assert_eq!(validate(&ok), Ok(()));
        let bad = with_inits(vec![
            init("a", &["/bin/true"]),
            init("a", &["/bin/true"]),
            init("main", &["/bin/true"]),
            init("Bad_", &["/bin/true"]),
            init("c", &[]),
        ]);
        let fields: Vec<String> = validate(&bad)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.initProcesses[1].name",
                "spec.initProcesses[2].name",
                "spec.initProcesses[3].name",
                "spec.initProcesses[4].args",
            ]
        );
    }
}
