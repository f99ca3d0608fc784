//! Validation of a `ContainerSpec`. Every error names the field it is about,
//! in the dotted form users see in `kubectl explain` (`spec.limits.memory`).
//! Pure: nothing here touches the disk.

use std::collections::BTreeSet;
use std::fmt;

use super::quantity::{self, QuantityError};
use super::reference::ImageReference;
use super::types::{ContainerSpec, EnvVar, Limits, Mount, ProcessSpec, SeccompProfileType};

/// Smallest memory limit runc accepts in practice.
pub const MIN_MEMORY_BYTES: u64 = 4 << 20;

/// CFS period for CPU limits, in microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The largest CFS quota the kernel takes, in microseconds: `max_cfs_runtime`
/// is `(1 << 44) - 1` µs (`MAX_BW` in kernel/sched/core.c), for
/// `cpu.cfs_quota_us` on v1 and `cpu.max` on v2 alike.
pub const MAX_CFS_QUOTA_US: u64 = (1 << 44) - 1;

/// The largest CPU limit whose quota (at [`CPU_PERIOD_US`]) the kernel
/// takes, in millicores: about 175.9 million cores.
pub const MAX_CPU_MILLIS: u64 = MAX_CFS_QUOTA_US * 1000 / CPU_PERIOD_US;

/// The largest `pids.max` the kernel takes: `PID_MAX_LIMIT` on 64-bit
/// (kernel/cgroup/pids.c refuses anything from `PID_MAX_LIMIT + 1` on).
pub const MAX_PIDS: i64 = 4 << 20;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `spec.mounts[1].source`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// The error `message` about `field` (a path such as `spec.image`).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All the problems found in one spec, in field order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for ValidationErrors {}

/// Limits as the kernel takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU limit in millicores.
    pub cpu_millis: Option<u64>,
    /// Maximum number of tasks.
    pub pids: Option<i64>,
}

/// Check a spec; `Ok` means the containerizer can build a bundle from it.
pub fn validate(spec: &ContainerSpec) -> Result<(), ValidationErrors> {
    let mut errs = Vec::new();
    check_image(&mut errs, spec);
    if let Some(h) = &spec.hostname {
        check_hostname(&mut errs, h);
    }
    check_env(&mut errs, "spec.env", &spec.env);
    if let Some(p) = &spec.process {
        check_process(&mut errs, "spec.process", p, spec.image.is_some());
        check_main_stdio(&mut errs, "spec.process", p);
        let ports: Vec<_> = spec
            .ports
            .iter()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect();
        let probes = super::probe::probe_errors(p, &ports).into_iter();
        errs.extend(probes.map(|(field, message)| FieldError::new(field, message)));
    }
    super::pods::check(&mut errs, spec);
    check_mounts(&mut errs, &spec.mounts);
    check_network(&mut errs, spec);
    super::secctx::check(&mut errs, spec);
    check_host_users(&mut errs, spec);
    check_seccomp(&mut errs, spec);
    if let Err(e) = resources(&spec.limits) {
        errs.extend(e.0);
    }
    if spec.termination_grace_period_seconds.is_some_and(|s| s < 0) {
        errs.push(FieldError::new(
            "spec.terminationGracePeriodSeconds",
            "must not be negative",
        ));
    }
    if spec.properties.keys().any(String::is_empty) {
        errs.push(FieldError::new("spec.properties", "keys must not be empty"));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errs))
    }
}

/// Parse the limits, naming every bad field.
pub fn resources(limits: &Limits) -> Result<Resources, ValidationErrors> {
    let mut errs = Vec::new();
    let memory_bytes = limits.memory.as_ref().and_then(|q| {
        let checked = quantity::bytes(&q.0)
            .map_err(|e| match e {
                QuantityError::Range(_) => {
                    format!("{e}: the kernel takes 4Mi to {} bytes (8Ei - 1)", i64::MAX)
                }
                QuantityError::Syntax(_) => e.to_string(),
            })
            .and_then(|b| match b < MIN_MEMORY_BYTES {
                true => Err(format!("{:?} is below the minimum of 4Mi", q.0)),
                false => Ok(b),
            });
        checked
            .map_err(|e| errs.push(FieldError::new("spec.limits.memory", e)))
            .ok()
    });
    let cpu_millis = limits.cpu.as_ref().and_then(|q| {
        let checked = quantity::millicores(&q.0)
            .map_err(|e| e.to_string())
            .and_then(|m| match m {
                0 => Err(format!("{:?} must be more than zero", q.0)),
                m if m > MAX_CPU_MILLIS => Err(format!(
                    "{:?} is out of range: the kernel takes 1m to {MAX_CPU_MILLIS}m \
                     (a CFS quota of at most {MAX_CFS_QUOTA_US}us per {CPU_PERIOD_US}us period)",
                    q.0
                )),
                m => Ok(m),
            });
        checked
            .map_err(|e| errs.push(FieldError::new("spec.limits.cpu", e)))
            .ok()
    });
    if let Some(p) = limits.pids.filter(|p| !(1..=MAX_PIDS).contains(p)) {
        errs.push(FieldError::new(
            "spec.limits.pids",
            format!("{p} is out of range: the kernel takes 1 to {MAX_PIDS} (PID_MAX_LIMIT)"),
        ));
    }
    if !errs.is_empty() {
        return Err(ValidationErrors(errs));
    }
    Ok(Resources {
        memory_bytes,
        cpu_millis,
        pids: limits.pids,
    })
}

fn check_abs(errs: &mut Vec<FieldError>, field: &str, path: &str) {
    if !path.starts_with('/') {
        errs.push(FieldError::new(
            field,
            format!("{path:?} is not an absolute path"),
        ));
    } else if path.split('/').any(|c| c == "..") {
        errs.push(FieldError::new(
            field,
            format!("{path:?} must not contain \"..\""),
        ));
    } else if path.contains('\0') {
        errs.push(FieldError::new(field, "must not contain NUL"));
    }
}

fn check_hostname(errs: &mut Vec<FieldError>, h: &str) {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if h.is_empty() || h.len() > 64 || !h.chars().all(ok_char) || h.starts_with(['-', '.']) {
        errs.push(FieldError::new(
            "spec.hostname",
            format!("{h:?} is not a hostname (1-64 of letters, digits, '-' and '.')"),
        ));
    }
}

pub(super) fn check_env(errs: &mut Vec<FieldError>, field: &str, env: &[EnvVar]) {
    for (i, var) in env.iter().enumerate() {
        if var.name.is_empty() || var.name.contains(['=', '\0']) {
            errs.push(FieldError::new(
                format!("{field}[{i}].name"),
                format!("{:?} is not a variable name (non-empty, no '=')", var.name),
            ));
        }
        if var.value.contains('\0') {
            errs.push(FieldError::new(
                format!("{field}[{i}].value"),
                "must not contain NUL",
            ));
        }
    }
}

/// `hostUsers: false` with what Kubernetes refuses it with: the node's
/// network (its namespace belongs to the node's user namespace), and
/// privileged (every capability, meant for the node's root).
fn check_host_users(errs: &mut Vec<FieldError>, spec: &ContainerSpec) {
    if spec.host_users != Some(false) {
        return;
    }
    if spec.host_network {
        errs.push(FieldError::new(
            "spec.hostUsers",
            "must not be false with spec.hostNetwork: the node's network belongs to the node's user namespace",
        ));
    }
    if spec.privileged {
        errs.push(FieldError::new(
            "spec.hostUsers",
            "must not be false with spec.privileged: a privileged container runs as the node's root",
        ));
    }
}

/// The network: a name (or `none`) only without the host's network;
/// ports in range, each host port once per protocol and address; DNS
/// servers that are addresses.
fn check_network(errs: &mut Vec<FieldError>, spec: &ContainerSpec) {
    match spec.network.as_deref() {
        Some(_) if spec.host_network => errs.push(FieldError::new(
            "spec.network",
            "must not be set with spec.hostNetwork: the container shares the node's network",
        )),
        Some("") => errs.push(FieldError::new("spec.network", "must not be empty")),
        _ => {}
    }
    if spec.host_network && spec.ports.iter().any(|p| p.host_port.is_some()) {
        errs.push(FieldError::new(
            "spec.ports",
            "hostPort needs the container's own network: with spec.hostNetwork its ports are the node's",
        ));
    }
    let mut taken = std::collections::BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let in_range = |n: i32| (1..=65535).contains(&n);
        if !in_range(p.container_port) {
            errs.push(FieldError::new(
                format!("spec.ports[{i}].containerPort"),
                format!("{} is not a port: 1 to 65535", p.container_port),
            ));
        }
        if let Some(h) = p.host_port.filter(|h| !in_range(*h)) {
            errs.push(FieldError::new(
                format!("spec.ports[{i}].hostPort"),
                format!("{h} is not a port: 1 to 65535"),
            ));
        }
        if let Some(ip) = p
            .host_ip
            .as_deref()
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_err())
        {
            errs.push(FieldError::new(
                format!("spec.ports[{i}].hostIP"),
                format!("{ip:?} is not an IP address"),
            ));
        }
        let key = (
            p.host_port,
            p.protocol.unwrap_or_default(),
            p.host_ip.clone(),
        );
        if p.host_port.is_some() && !taken.insert(key) {
            errs.push(FieldError::new(
                format!("spec.ports[{i}].hostPort"),
                "is published twice for one protocol and address",
            ));
        }
    }
    let servers = spec
        .dns
        .iter()
        .flat_map(|d| d.nameservers.iter().enumerate());
    for (i, server) in servers {
        if server.parse::<std::net::IpAddr>().is_err() {
            errs.push(FieldError::new(
                format!("spec.dns.nameservers[{i}]"),
                format!("{server:?} is not an IP address"),
            ));
        }
    }
}

/// Exactly one of `image` and `rootfs`; the image a reference, the rootfs
/// an absolute path; pull secrets named.
fn check_image(errs: &mut Vec<FieldError>, spec: &ContainerSpec) {
    match (&spec.image, spec.rootfs.is_empty()) {
        (None, true) => errs.push(FieldError::new(
            "spec.image",
            "is required: set spec.image to an image reference, or spec.rootfs to a directory",
        )),
        (Some(_), false) => errs.push(FieldError::new(
            "spec.rootfs",
            "must not be set with spec.image: a container runs from one or the other",
        )),
        (None, false) => check_abs(errs, "spec.rootfs", &spec.rootfs),
        (Some(image), true) => {
            if let Err(e) = ImageReference::parse(image) {
                errs.push(FieldError::new("spec.image", format!("{image:?}: {e}")));
            }
        }
    }
    if spec.image.is_none() && spec.image_pull_policy.is_some() {
        errs.push(FieldError::new(
            "spec.imagePullPolicy",
            "is for spec.image only",
        ));
    }
    for (i, secret) in spec.image_pull_secrets.iter().enumerate() {
        if secret.name.is_empty() {
            errs.push(FieldError::new(
                format!("spec.imagePullSecrets[{i}].name"),
                "is required",
            ));
        }
    }
}

/// The process: without an image, `command` + `args` is the whole argv
/// and must name an executable; with one, the image may supply it.
pub(super) fn check_process(
    errs: &mut Vec<FieldError>,
    at: &str,
    p: &ProcessSpec,
    from_image: bool,
) {
    let first = p.command.first().or(p.args.first());
    if !from_image && first.is_none_or(|a| a.is_empty()) {
        errs.push(FieldError::new(
            format!("{at}.args"),
            "needs at least the command",
        ));
    }
    if p.command.first().is_some_and(String::is_empty) {
        errs.push(FieldError::new(
            format!("{at}.command"),
            "must not start with an empty string",
        ));
    }
    for (field, words) in [("command", &p.command), ("args", &p.args)] {
        if words.iter().any(|a| a.contains('\0')) {
            errs.push(FieldError::new(
                format!("{at}.{field}"),
                "must not contain NUL",
            ));
        }
    }
    if let Some(dir) = &p.working_dir {
        check_abs(errs, &format!("{at}.workingDir"), dir);
    }
    if let Some(Err(msg)) = p.user.as_deref().map(check_user) {
        errs.push(FieldError::new(format!("{at}.user"), msg));
    }
    check_env(errs, &format!("{at}.env"), &p.env);
}

/// The main process's `tty`: refused, since its output goes to its log
/// through pipes and a terminal would need its master held by a
/// supervisor that outlives the agent (the agent holds `exec -t`'s).
fn check_main_stdio(errs: &mut Vec<FieldError>, at: &str, p: &ProcessSpec) {
    if p.tty {
        errs.push(FieldError::new(
            format!("{at}.tty"),
            "a terminal for the main process is not supported (its output is logged \
             through pipes); use `stdin: true` with `rundmc attach -i`, or \
             `rundmc exec -it NAME -- sh` for an interactive terminal",
        ));
    }
}

/// `uid`, `uid:gid` or a passwd name.
pub fn check_user(user: &str) -> Result<(), String> {
    let numeric = |s: &str| !s.is_empty() && s.parse::<u32>().is_ok();
    let name = |s: &str| {
        !s.is_empty()
            && s.len() <= 32
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !s.starts_with('-')
    };
    let ok = match user.split_once(':') {
        Some((u, g)) => numeric(u) && numeric(g),
        None => numeric(user) || name(user),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{user:?} is not uid, uid:gid or a user name"))
    }
}

fn check_mounts(errs: &mut Vec<FieldError>, mounts: &[Mount]) {
    let mut seen = BTreeSet::new();
    for (i, m) in mounts.iter().enumerate() {
        check_abs(errs, &format!("spec.mounts[{i}].source"), &m.source);
        let dest_field = format!("spec.mounts[{i}].destination");
        check_abs(errs, &dest_field, &m.destination);
        let dest = m.destination.trim_end_matches('/');
        if dest.is_empty() {
            errs.push(FieldError::new(&dest_field, "must not be \"/\""));
        } else if !seen.insert(dest.to_string()) {
            errs.push(FieldError::new(
                &dest_field,
                format!("{:?} is mounted twice", m.destination),
            ));
        }
    }
}

/// `securityContext.seccompProfile`: `localhostProfile` exactly for type
/// Localhost, as a path that stays below the agent's profile root.
fn check_seccomp(errs: &mut Vec<FieldError>, spec: &ContainerSpec) {
    let Some(profile) = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
    else {
        return;
    };
    let field = "spec.securityContext.seccompProfile.localhostProfile";
    match (profile.type_, profile.localhost_profile.as_deref()) {
        (SeccompProfileType::Localhost, None) => {
            errs.push(FieldError::new(field, "must be set for type Localhost"));
        }
        (SeccompProfileType::Localhost, Some(path)) if !is_below(path) => {
            errs.push(FieldError::new(
                field,
                format!(
                    "{path:?} must be a relative path below the node's seccomp profile root, \
                     without .."
                ),
            ));
        }
        (SeccompProfileType::Localhost, Some(_)) | (_, None) => {}
        (other, Some(_)) => errs.push(FieldError::new(
            field,
            format!("must not be set for type {other:?}, only for Localhost"),
        )),
    }
}

/// Whether `path` is relative and names something below the directory it
/// is relative to: not empty, not absolute, no `..`.
pub fn is_below(path: &str) -> bool {
    !path.is_empty()
        && std::path::Path::new(path).components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::ProcessSpec;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            rootfs: "/var/lib/rundmc/rootfs/busybox".into(),
            ..Default::default()
        }
    }

    fn fields(spec: &ContainerSpec) -> Vec<String> {
        match validate(spec) {
            Ok(()) => vec![],
            Err(e) => e.0.into_iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn minimal_spec_is_valid() {
        assert_eq!(fields(&spec()), Vec::<String>::new());
    }

    #[test]
    fn bad_memory_names_the_field() {
        let mut s = spec();
        s.limits.memory = Some(Quantity("64Q".into()));
        assert_eq!(
            fields(&s),
            vec![r#"spec.limits.memory: "64Q" is not a quantity"#]
        );
        s.limits.memory = Some(Quantity("1Ki".into()));
        assert_eq!(
            fields(&s),
            vec![r#"spec.limits.memory: "1Ki" is below the minimum of 4Mi"#]
        );
    }

    #[test]
    fn a_main_process_terminal_is_refused_naming_the_field() {
        let mut s = spec();
        s.process = Some(ProcessSpec {
            args: vec!["/bin/sh".into()],
            stdin: true,
            stdin_once: true,
            ..Default::default()
        });
        assert_eq!(fields(&s), Vec::<String>::new(), "stdin is fine");
        if let Some(p) = s.process.as_mut() {
            p.tty = true;
        }
        let got = fields(&s);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0]
                .starts_with("spec.process.tty: a terminal for the main process is not supported"),
            "{got:?}"
        );
    }

    #[test]
    fn every_field_is_checked() {
        let mut s = spec();
        s.rootfs = "relative".into();
        s.hostname = Some("-bad".into());
        s.env = vec![EnvVar {
            name: "A=B".into(),
            value: String::new(),
        }];
        s.process = Some(ProcessSpec {
            command: vec![],
            args: vec![],
            working_dir: Some("tmp".into()),
            user: Some("1000:x".into()),
            env: vec![],
            ..Default::default()
        });
        s.mounts = vec![
            Mount {
                source: "/srv".into(),
                destination: "/data".into(),
                read_only: false,
            },
            Mount {
                source: "srv/..".into(),
                destination: "/data/".into(),
                read_only: false,
            },
        ];
        s.limits.cpu = Some(Quantity("0".into()));
        s.limits.pids = Some(0);
        s.termination_grace_period_seconds = Some(-1);
        let got: Vec<String> = fields(&s)
            .iter()
            .map(|e| e.split(':').next().unwrap_or("").to_string())
            .collect();
        assert_eq!(
            got,
            vec![
                "spec.rootfs",
                "spec.hostname",
                "spec.env[0].name",
                "spec.process.args",
                "spec.process.workingDir",
                "spec.process.user",
                "spec.mounts[1].source",
                "spec.mounts[1].destination",
                "spec.limits.cpu",
                "spec.limits.pids",
                "spec.terminationGracePeriodSeconds",
            ]
        );
    }

    #[test]
    fn limits_beyond_what_the_kernel_takes_name_field_and_range() {
        let mut s = spec();
        s.limits.cpu = Some(Quantity("99999999999".into()));
        s.limits.pids = Some(i64::MAX);
        assert_eq!(
            fields(&s),
            vec![
                r#"spec.limits.cpu: "99999999999" is out of range: the kernel takes 1m to 175921860444m (a CFS quota of at most 17592186044415us per 100000us period)"#,
                "spec.limits.pids: 9223372036854775807 is out of range: the kernel takes 1 to 4194304 (PID_MAX_LIMIT)",
            ]
        );
    }

    #[test]
    fn the_largest_limits_the_kernel_takes_are_valid() {
        let mut s = spec();
        s.limits.cpu = Some(Quantity(format!("{MAX_CPU_MILLIS}m")));
        s.limits.pids = Some(MAX_PIDS);
        s.limits.memory = Some(Quantity("8Ei".into()));
        assert_eq!(
            fields(&s),
            vec![
                r#"spec.limits.memory: "8Ei" is out of range: the kernel takes 4Mi to 9223372036854775807 bytes (8Ei - 1)"#
            ]
        );
        s.limits.memory = Some(Quantity(i64::MAX.to_string()));
        assert_eq!(fields(&s), Vec::<String>::new());
        s.limits.cpu = Some(Quantity(format!("{}m", MAX_CPU_MILLIS + 1)));
        assert_eq!(fields(&s).len(), 1);
    }

    #[test]
    fn resources_parse() {
        let limits = Limits {
            memory: Some(Quantity("64Mi".into())),
            cpu: Some(Quantity("500m".into())),
            pids: Some(100),
        };
        assert_eq!(
            resources(&limits),
            Ok(Resources {
                memory_bytes: Some(64 << 20),
                cpu_millis: Some(500),
                pids: Some(100)
            })
        );
    }

    #[test]
    fn users() {
        for ok in ["0", "1000:1000", "nobody", "www-data"] {
            assert_eq!(check_user(ok), Ok(()), "{ok}");
        }
        for bad in ["", ":", "1000:", "a:b", "-x", "a b"] {
            assert!(check_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_users_false_refuses_host_network_and_privileged() {
        let mut own = spec();
        own.host_users = Some(false);
        assert_eq!(fields(&own), Vec::<String>::new());
        own.host_network = true;
        own.privileged = true;
        let errs = fields(&own);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs.iter().all(|e| e.starts_with("spec.hostUsers:")),
            "{errs:?}"
        );
        own.host_users = Some(true);
        assert_eq!(fields(&own), Vec::<String>::new());
        let msg = validate(&ContainerSpec {
            host_users: Some(false),
            privileged: true,
            ..spec()
        })
        .unwrap_err()
        .to_string();
        assert!(msg.contains("spec.privileged"), "{msg}");
    }

    #[test]
    fn network_fields_name_what_is_wrong() {
        use crate::api::types::{ContainerPort, DnsConfig};
        let mut s = spec();
        let port = |c: i32, h: Option<i32>| ContainerPort {
            container_port: c,
            host_port: h,
            ..Default::default()
        };
        s.ports = vec![
            port(0, None),
            port(80, Some(70000)),
            port(81, Some(8080)),
            port(82, Some(8080)),
        ];
        s.ports[1].host_ip = Some("localhost".into());
        s.dns = Some(DnsConfig {
            nameservers: vec!["1.1.1.1".into(), "dns.example".into()],
            ..Default::default()
        });
        let fields: Vec<String> = validate(&s)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.ports[0].containerPort: 0 is not a port: 1 to 65535",
                "spec.ports[1].hostPort: 70000 is not a port: 1 to 65535",
                "spec.ports[1].hostIP: \"localhost\" is not an IP address",
                "spec.ports[3].hostPort: is published twice for one protocol and address",
                "spec.dns.nameservers[1]: \"dns.example\" is not an IP address",
            ]
        );
        let mut host = spec();
        host.host_network = true;
        host.network = Some("other".into());
        assert!(
            validate(&host)
                .unwrap_err()
                .to_string()
                .contains("spec.network: must not be set with spec.hostNetwork")
        );
    }
}
