//! Image vocabulary every room shares: what an image's config gives its
//! containers ([`ImageDefaults`]), which image a container was made from
//! ([`ImageUse`]), and how a spec's `command`/`args` combine with the
//! image's Entrypoint and Cmd, as Kubernetes does. Pure data.

use serde::{Deserialize, Serialize};

/// The defaults an image's config gives its containers (OCI image config:
/// `Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageDefaults {
    /// `Entrypoint`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `WorkingDir`; `None` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `User`; `None` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The image a container was made from, as its depot record keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageUse {
    /// The normalised reference the spec named (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The image's id: its manifest's digest, `sha256:<hex>`.
    pub id: String,
    /// What its config gives the container.
    #[serde(default)]
    pub defaults: ImageDefaults,
}

use super::types::{ContainerSpec, EnvVar, ProcessSpec};

/// Why a spec and its image give no process to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "image {image} has no Entrypoint or Cmd, and spec.process sets neither command nor args: \
     nothing to run"
)]
pub struct NoCommand {
    /// The image's name.
    pub image: String,
}

impl ContainerSpec {
    /// Whether the container has a main process: one in the spec, or the
    /// image's. Without either it idles on its init.
    pub fn runs_main(&self) -> bool {
        self.process.is_some() || self.image.is_some()
    }
}

/// The main process `spec` runs on an image with `defaults` (empty for a
/// rootfs directory), by Kubernetes' rules: `command` replaces the
/// Entrypoint and `args` the Cmd; the image's Env comes first and loses to
/// any variable the spec sets (`spec.env` or `spec.process.env`); the
/// spec's workingDir and user win over the image's. `None` when there is no
/// main process.
pub fn main_process(
    spec: &ContainerSpec,
    defaults: &ImageDefaults,
) -> Result<Option<ProcessSpec>, NoCommand> {
    if !spec.runs_main() {
        return Ok(None);
    }
    let own = spec.process.clone().unwrap_or_default();
    let argv = argv(&own, defaults);
    if argv.first().is_none_or(String::is_empty) {
        return Err(NoCommand {
            image: spec.image.clone().unwrap_or_default(),
        });
    }
    let set_by_spec = |name: &str| {
        spec.env
            .iter()
            .chain(own.env.iter())
            .any(|e| e.name == name)
    };
    let mut env: Vec<EnvVar> = defaults
        .env
        .iter()
        .filter_map(|kv| {
            let (name, value) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            (!name.is_empty() && !set_by_spec(name)).then(|| EnvVar {
                name: name.to_string(),
                value: value.to_string(),
            })
        })
        .collect();
    env.extend(own.env.iter().cloned());
    Ok(Some(ProcessSpec {
        command: Vec::new(),
        args: argv,
        working_dir: own.working_dir.or_else(|| defaults.working_dir.clone()),
        user: own.user.or_else(|| defaults.user.clone()),
        env,
        startup_probe: own.startup_probe,
        liveness_probe: own.liveness_probe,
        readiness_probe: own.readiness_probe,
        lifecycle: own.lifecycle,
        stdin: own.stdin,
        stdin_once: own.stdin_once,
        tty: own.tty,
    }))
}

/// Kubernetes' command/args table.
fn argv(own: &ProcessSpec, image: &ImageDefaults) -> Vec<String> {
    match (own.command.is_empty(), own.args.is_empty()) {
        (false, _) => own.command.iter().chain(&own.args).cloned().collect(),
        (true, false) => image.entrypoint.iter().chain(&own.args).cloned().collect(),
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageDefaults {
        ImageDefaults {
            entrypoint: vec!["/entry".into(), "-x".into()],
            cmd: vec!["serve".into()],
            env: vec!["PATH=/bin".into(), "MODE=image".into(), "EMPTY".into()],
            working_dir: Some("/app".into()),
            user: Some("1000".into()),
        }
    }

    fn spec(process: Option<ProcessSpec>) -> ContainerSpec {
        ContainerSpec {
            image: Some("app".into()),
            process,
            ..ContainerSpec::default()
        }
    }

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        let run = |command: &[&str], args: &[&str]| {
            let p = ProcessSpec {
                command: words(command),
                args: words(args),
                ..ProcessSpec::default()
            };
            main_process(&spec(Some(p)), &image())
                .unwrap()
                .unwrap()
                .args
        };
        assert_eq!(run(&[], &[]), words(&["/entry", "-x", "serve"]));
        assert_eq!(run(&[], &["debug"]), words(&["/entry", "-x", "debug"]));
        assert_eq!(run(&["/bin/sh"], &[]), words(&["/bin/sh"]));
        assert_eq!(
            run(&["/bin/sh"], &["-c", "x"]),
            words(&["/bin/sh", "-c", "x"])
        );
        let none = main_process(&spec(None), &image()).unwrap().unwrap();
        assert_eq!(none.args, words(&["/entry", "-x", "serve"]));
    }

    #[test]
    fn the_spec_wins_over_the_image() {
        let mut s = spec(Some(ProcessSpec {
            working_dir: Some("/w".into()),
            env: vec![EnvVar {
                name: "MODE".into(),
                value: "process".into(),
            }],
            ..ProcessSpec::default()
        }));
        s.env = vec![EnvVar {
            name: "PATH".into(),
            value: "/usr/bin".into(),
        }];
        let p = main_process(&s, &image()).unwrap().unwrap();
        let env: Vec<_> = p
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect();
        assert_eq!(env, words(&["EMPTY=", "MODE=process"]));
        assert_eq!(p.working_dir.as_deref(), Some("/w"));
        assert_eq!(p.user.as_deref(), Some("1000"));
    }

    #[test]
    fn an_image_without_a_command_is_an_error() {
        let err = main_process(&spec(None), &ImageDefaults::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("image app has no Entrypoint or Cmd")
        );
    }

    #[test]
    fn a_rootfs_without_process_idles_and_with_one_runs_command_then_args() {
        let mut s = ContainerSpec {
            rootfs: "/img".into(),
            ..ContainerSpec::default()
        };
        assert_eq!(main_process(&s, &ImageDefaults::default()), Ok(None));
        s.process = Some(ProcessSpec {
            command: words(&["sh"]),
            args: words(&["-c", "true"]),
            ..ProcessSpec::default()
        });
        let p = main_process(&s, &ImageDefaults::default())
            .unwrap()
            .unwrap();
        assert_eq!(p.args, words(&["sh", "-c", "true"]));
    }
}
