//! Processes beside the main one: init processes that run to completion
//! before it, sidecars that run beside it, and what status says of every
//! process of a container. Their validation names the field of each bad
//! entry.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::image::{ImageDefaults, NoCommand, main_process};
use super::probe::Probe;
use super::reference::ImageReference;
use super::types::{
    ContainerSpec, EnvVar, Limits, ProcessSpec, PullPolicy, RestartPolicy, Termination,
};
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

/// A long-running process beside the main one, as a Kubernetes native
/// sidecar: started before the main process and stopped after it,
/// supervised, logged and restarted on its own. Its argv is `command` +
/// `args`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sidecar {
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
    /// When to restart it after it exits: Always (the default), OnFailure
    /// or Never. The main process's policy does not apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// Until it first succeeds, the other probes wait; when it fails
    /// `failureThreshold` times, the sidecar is restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    /// When it fails `failureThreshold` times in a row, the sidecar is
    /// killed and restarted as its restart policy says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// The container is Ready only while it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Absolute path of a read-only image directory on the node: the
    /// sidecar is then a pea, an OCI container of its own (its own writable
    /// overlay, mount namespace and cgroup) that joins the container's
    /// network, IPC and UTS namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
    /// An OCI image reference: the sidecar is then a pea (as with
    /// `rootfs`) whose rootfs is the image's layers under a writable
    /// overlay of its own. The image's Entrypoint, Cmd, Env, WorkingDir and
    /// User fill what the sidecar leaves unset, as for `spec.image`. Pulled
    /// with the container's `imagePullSecrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When to pull `image`: Always, IfNotPresent or Never. Defaults to
    /// Always for `:latest` or no tag, IfNotPresent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// A pea's own limits (its own cgroup); only with `rootfs` or `image`.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
}

impl Sidecar {
    /// Whether it is a pea: a container of its own beside the main one.
    pub fn is_pea(&self) -> bool {
        self.rootfs.is_some() || self.image.is_some()
    }

    /// The argv it runs.
    pub fn argv(&self) -> Vec<String> {
        self.command.iter().chain(&self.args).cloned().collect()
    }

    /// Its restart policy: Always unless it says otherwise.
    pub fn policy(&self) -> RestartPolicy {
        self.restart_policy.unwrap_or(RestartPolicy::Always)
    }

    /// The process it runs in `container`: its own fields, over the
    /// defaults of its image (`defaults`, empty without one) by the rules
    /// of `spec.image` (`command` replaces the Entrypoint, `args` the Cmd,
    /// the image's Env loses to any variable the container or the sidecar
    /// sets; its WorkingDir and User fill what the sidecar leaves unset).
    pub fn process(
        &self,
        container: &ContainerSpec,
        defaults: &ImageDefaults,
    ) -> Result<ProcessSpec, NoCommand> {
        if self.image.is_none() {
            return Ok(ProcessSpec {
                args: self.argv(),
                ..self.as_process()
            });
        }
        let process = main_process(&self.alone(container), defaults)?;
        Ok(process.unwrap_or_default())
    }

    /// A pea of an image, as if it were a container of its own in
    /// `container`: its image, pull policy and process, the container's
    /// env, pull secrets and security context. What the image room and the
    /// image's checks are asked about.
    pub fn alone(&self, container: &ContainerSpec) -> ContainerSpec {
        ContainerSpec {
            image: self.image.clone(),
            image_pull_policy: self.image_pull_policy,
            image_pull_secrets: container.image_pull_secrets.clone(),
            env: container.env.clone(),
            process: Some(self.as_process()),
            security_context: container.security_context.clone(),
            ..ContainerSpec::default()
        }
    }

    /// As a process spec, for what checks, runs and probes every process.
    pub fn as_process(&self) -> ProcessSpec {
        ProcessSpec {
            command: self.command.clone(),
            args: self.args.clone(),
            working_dir: self.working_dir.clone(),
            user: self.user.clone(),
            env: self.env.clone(),
            startup_probe: self.startup_probe.clone(),
            liveness_probe: self.liveness_probe.clone(),
            readiness_probe: self.readiness_probe.clone(),
            lifecycle: None,
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

/// Check the init processes and sidecars: each a runnable argv with a
/// name unique among them all, a DNS label; a sidecar's probes too.
pub(super) fn check(errs: &mut Vec<FieldError>, spec: &ContainerSpec) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in spec.init_processes.iter().enumerate() {
        let at = format!("spec.initProcesses[{i}]");
        check_name(errs, &at, &p.name, &mut seen);
        check_process(errs, &at, &p.as_process(), false);
    }
    let ports: Vec<_> = spec
        .ports
        .iter()
        .map(|p| (p.name.as_deref(), p.container_port))
        .collect();
    for (i, s) in spec.sidecars.iter().enumerate() {
        let at = format!("spec.sidecars[{i}]");
        check_name(errs, &at, &s.name, &mut seen);
        check_pea(errs, &at, spec, s);
        let process = s.as_process();
        check_process(errs, &at, &process, s.image.is_some());
        for (field, message) in super::probe::probe_errors(&process, &ports) {
            let field = field.replacen("spec.process", &at, 1);
            errs.push(FieldError::new(field, message));
        }
    }
}

/// A pea: a rootfs directory or an image (one of them), its own limits,
/// and namespaces it can join.
fn check_pea(errs: &mut Vec<FieldError>, at: &str, spec: &ContainerSpec, s: &Sidecar) {
    let mut refuse = |field: &str, message: &str| {
        errs.push(FieldError::new(format!("{at}.{field}"), message));
    };
    if s.image.is_none() && s.image_pull_policy.is_some() {
        refuse("imagePullPolicy", "is for an image only");
    }
    if !s.is_pea() {
        if !s.limits.is_empty() {
            refuse(
                "limits",
                "only a sidecar with a rootfs or image of its own has limits of its own",
            );
        }
        return;
    }
    match (&s.rootfs, &s.image) {
        (Some(_), Some(_)) => refuse(
            "rootfs",
            "must not be set with image: a sidecar runs from one or the other",
        ),
        (Some(rootfs), None) if !rootfs.starts_with('/') => {
            refuse("rootfs", "must be an absolute path")
        }
        (None, Some(image)) => {
            if let Err(e) = ImageReference::parse(image) {
                refuse("image", &format!("{image:?}: {e}"));
            }
        }
        _ => {}
    }
    if spec.host_users == Some(false) {
        let field = if s.rootfs.is_some() {
            "rootfs"
        } else {
            "image"
        };
        refuse(
            field,
            "a sidecar with a rootfs or image of its own cannot join a container with hostUsers: false",
        );
    }
    if let Err(e) = super::validate::resources(&s.limits) {
        for err in e.0 {
            let field = err.field.replacen("spec.", &format!("{at}."), 1);
            errs.push(FieldError::new(field, err.message));
        }
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
    fn sidecar_names_are_unique_among_every_process() {
        let mut spec = with_inits(vec![init("a", &["/bin/true"])]);
        spec.sidecars = vec![
            Sidecar {
                name: "a".into(),
                args: vec!["x".into()],
                ..Sidecar::default()
            },
            Sidecar {
                name: "b".into(),
                ..Sidecar::default()
            },
        ];
        let fields: Vec<String> = validate(&spec)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["spec.sidecars[0].name", "spec.sidecars[1].args"]);
    }

    #[test]
    fn a_pea_needs_a_rootfs_directory_and_namespaces_it_can_join() {
        let pea = |s: Sidecar| ContainerSpec {
            rootfs: "/r".into(),
            sidecars: vec![Sidecar {
                name: "p".into(),
                args: vec!["x".into()],
                ..s
            }],
            ..ContainerSpec::default()
        };
        let fields = |spec: &ContainerSpec| -> Vec<String> {
            validate(spec)
                .err()
                .map_or(vec![], |e| e.0.into_iter().map(|e| e.field).collect())
        };
        let ok = pea(Sidecar {
            rootfs: Some("/pea".into()),
            ..Sidecar::default()
        });
        assert_eq!(fields(&ok), Vec::<String>::new());
        let image = pea(Sidecar {
            image: Some("busybox".into()),
            ..Sidecar::default()
        });
        assert_eq!(fields(&image), Vec::<String>::new());
        let relative = pea(Sidecar {
            rootfs: Some("pea".into()),
            ..Sidecar::default()
        });
        assert_eq!(fields(&relative), ["spec.sidecars[0].rootfs"]);
        let mut limited = pea(Sidecar::default());
        limited.sidecars[0].limits.pids = Some(5);
        assert_eq!(fields(&limited), ["spec.sidecars[0].limits"]);
        let userns = ContainerSpec {
            host_users: Some(false),
            ..ok
        };
        assert!(fields(&userns).contains(&"spec.sidecars[0].rootfs".to_string()));
    }

    #[test]
    fn a_pea_image_is_a_reference_that_may_give_the_command() {
        let pea = |s: Sidecar| ContainerSpec {
            rootfs: "/r".into(),
            sidecars: vec![Sidecar::default(), s],
            ..ContainerSpec::default()
        };
        let errors = |spec: &ContainerSpec| -> Vec<(String, String)> {
            validate(spec).err().map_or(vec![], |e| {
                e.0.into_iter()
                    .filter(|e| e.field.starts_with("spec.sidecars[1]"))
                    .map(|e| (e.field, e.message))
                    .collect()
            })
        };
        let named = |image: &str| Sidecar {
            name: "p".into(),
            image: Some(image.into()),
            ..Sidecar::default()
        };
        // No args: the image's Entrypoint and Cmd run.
        assert_eq!(errors(&pea(named("registry.local:5000/app:1"))), vec![]);
        let bad = errors(&pea(named("Bad Image!")));
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].0, "spec.sidecars[1].image");
        assert!(bad[0].1.contains("Bad Image!"), "{bad:?}");
        let both = Sidecar {
            rootfs: Some("/pea".into()),
            ..named("app:1")
        };
        assert_eq!(errors(&pea(both))[0].0, "spec.sidecars[1].rootfs");
        let policy = Sidecar {
            name: "p".into(),
            args: vec!["x".into()],
            image_pull_policy: Some(PullPolicy::Never),
            ..Sidecar::default()
        };
        assert_eq!(
            errors(&pea(policy))[0].0,
            "spec.sidecars[1].imagePullPolicy"
        );
    }

    #[test]
    fn a_pea_image_fills_what_the_sidecar_leaves_unset() {
        let defaults = ImageDefaults {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            env: vec!["A=image".into(), "B=image".into()],
            working_dir: Some("/app".into()),
            user: Some("1000".into()),
        };
        let container = ContainerSpec {
            env: vec![EnvVar {
                name: "A".into(),
                value: "container".into(),
            }],
            ..ContainerSpec::default()
        };
        let sidecar = Sidecar {
            name: "p".into(),
            image: Some("app:1".into()),
            args: vec!["other".into()],
            ..Sidecar::default()
        };
        let p = sidecar.process(&container, &defaults).unwrap();
        assert_eq!(p.args, ["/entry", "other"]);
        assert_eq!(p.working_dir.as_deref(), Some("/app"));
        assert_eq!(p.user.as_deref(), Some("1000"));
        let env: Vec<_> = p
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect();
        assert_eq!(env, ["B=image"]);
        let bare = Sidecar {
            args: vec![],
            ..sidecar
        };
        assert!(bare.process(&container, &ImageDefaults::default()).is_err());
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
