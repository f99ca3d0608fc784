//! The rules, one function per concern. Order matters only where a rule
//! reads what an earlier one wrote (the init process is last, and takes the
//! capabilities and env set before it).

use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;

use oci_spec::runtime::{
    Capability, Linux, LinuxCapabilities, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType,
    LinuxIdMappingBuilder, LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxPids,
    LinuxResources, Mount, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, Process, Root, Spec,
    User,
};

use super::caps::{self, CapSet};
use super::{BundleInput, Rule};
use crate::api::{ContainerSpec, Resources, capability, secctx};

/// Where init is bind-mounted inside every container.
pub const INIT_PATH: &str = "/.rundmc/init";
/// The PATH every process gets unless it sets its own.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub use crate::api::validate::CPU_PERIOD_US;

/// The capability set containerd gives an unprivileged container.
pub const DEFAULT_CAPABILITIES: &[&str] = capability::DEFAULT;

/// Every capability up to CAP_CHECKPOINT_RESTORE, for privileged containers,
/// in number order: a name's index is its capability number.
const ALL_CAPABILITIES: &[&str] = capability::ALL;

/// Paths hidden from unprivileged containers: containerd's list, and
/// /proc/interrupts, as Docker and Kubernetes (1.34's default procMount) hide it.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths read-only in unprivileged containers (containerd's list).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The pipeline, in order.
pub const RULES: &[(&str, Rule)] = &[
    ("root", root),
    ("namespaces", namespaces),
    ("standard_mounts", standard_mounts),
    ("user_namespace", user_namespace),
    ("etc_files", etc_files),
    ("bind_mounts", bind_mounts),
    ("hostname_env", hostname_env),
    ("limits", limits),
    ("cgroup_path", cgroup_path),
    ("capabilities", capabilities),
    ("hardening", hardening),
    ("seccomp", super::seccomp::seccomp),
    ("init", init),
];

/// A config with nothing set but the OCI version, for the rules to fill.
pub fn empty_spec() -> Spec {
    let mut spec = Spec::default();
    spec.set_version("1.0.2".to_string());
    spec.set_mounts(Some(Vec::new()));
    spec.set_hooks(None);
    spec.set_annotations(None);
    let mut linux = Linux::default();
    linux.set_namespaces(Some(Vec::new()));
    linux.set_masked_paths(None);
    linux.set_readonly_paths(None);
    linux.set_resources(None);
    spec.set_linux(Some(linux));
    let mut process = Process::default();
    process.set_args(None);
    process.set_env(None);
    process.set_capabilities(None);
    process.set_rlimits(None);
    process.set_no_new_privileges(None);
    spec.set_process(Some(process));
    spec
}

fn linux(spec: &mut Spec) -> &mut Linux {
    spec.linux_mut().get_or_insert_with(Linux::default)
}

fn process(spec: &mut Spec) -> &mut Process {
    spec.process_mut().get_or_insert_with(Process::default)
}

fn mounts(spec: &mut Spec) -> &mut Vec<Mount> {
    spec.mounts_mut().get_or_insert_with(Vec::new)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// The overlay mount point, relative to the bundle; read-only with
/// `readOnlyRootFilesystem` (the mounts over it stay as they are).
fn root(input: &BundleInput<'_>, spec: &mut Spec) {
    let mut root = Root::default();
    root.set_path(PathBuf::from("rootfs"));
    root.set_readonly(Some(secctx::read_only_root(input.spec)));
    spec.set_root(Some(root));
}

/// pid, mount, uts, ipc, and a private network namespace unless the
/// container shares the host's network: the pinned one its network was
/// attached in, or a fresh one (runc brings up its loopback).
fn namespaces(input: &BundleInput<'_>, spec: &mut Spec) {
    let mut types = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
    ];
    if !input.spec.host_network {
        types.push(LinuxNamespaceType::Network);
    }
    let list = types
        .into_iter()
        .map(|t| {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(t);
            if t == LinuxNamespaceType::Network {
                ns.set_path(input.netns.clone());
            }
            ns
        })
        .collect();
    linux(spec).set_namespaces(Some(list));
}

/// containerd's CRI mounts: /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue,
/// /sys and the container's own cgroup at /sys/fs/cgroup (both read-only
/// unless privileged). No /run tmpfs: the CRI leaves it out too.
fn standard_mounts(input: &BundleInput<'_>, spec: &mut Spec) {
    let sys_opts: &[&str] = if input.spec.privileged {
        &["nosuid", "noexec", "nodev"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    let cgroup_opts: &[&str] = if input.spec.privileged {
        &["nosuid", "noexec", "nodev", "relatime", "rw"]
    } else {
        &["nosuid", "noexec", "nodev", "relatime", "ro"]
    };
    let list = mounts(spec);
    list.push(mount(
        "/proc",
        "proc",
        "proc",
        &["nosuid", "noexec", "nodev"],
    ));
    list.push(mount(
        "/dev",
        "tmpfs",
        "tmpfs",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    ));
    list.push(mount(
        "/dev/pts",
        "devpts",
        "devpts",
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ],
    ));
    list.push(mount(
        "/dev/shm",
        "tmpfs",
        "shm",
        &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    ));
    list.push(mount(
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    ));
    list.push(mount("/sys", "sysfs", "sysfs", sys_opts));
    list.push(mount("/sys/fs/cgroup", "cgroup", "cgroup", cgroup_opts));
}

/// A user namespace of the container's own, its ids 0..65535 mapped to its
/// range on the host. sysfs can be mounted only by the owner of the network
/// namespace: in a pinned one (CNI), which the host's user namespace owns,
/// /sys is the host's, bound read-only all the way down, as crun falls back
/// to (runc 1.1 fails instead).
fn user_namespace(input: &BundleInput<'_>, spec: &mut Spec) {
    let Some(range) = input.userns else {
        return;
    };
    // The builder has no validation for these fields, so it cannot fail.
    let map = LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(range.host_id)
        .size(range.size)
        .build()
        .unwrap_or_default();
    let l = linux(spec);
    let mut ns = LinuxNamespace::default();
    ns.set_typ(LinuxNamespaceType::User);
    l.namespaces_mut().get_or_insert_with(Vec::new).push(ns);
    l.set_uid_mappings(Some(vec![map]));
    l.set_gid_mappings(Some(vec![map]));
    if input.netns.is_none() {
        return;
    }
    for m in mounts(spec) {
        if m.destination() == &PathBuf::from("/sys") {
            *m = mount(
                "/sys",
                "bind",
                "/sys",
                &["rbind", "rro", "nosuid", "noexec", "nodev"],
            );
        }
    }
}

/// /etc/hosts, /etc/resolv.conf and /etc/hostname, written per container
/// (the image is read-only), as the kubelet mounts them.
fn etc_files(input: &BundleInput<'_>, spec: &mut Spec) {
    for (dest, source) in &input.etc_files {
        let source = source.to_string_lossy();
        let bind = mount(
            dest,
            "bind",
            &source,
            &["rbind", "rprivate", "rw", "nosuid", "nodev", "noexec"],
        );
        mounts(spec).push(bind);
    }
}

/// The spec's bind mounts, keeping the nosuid/nodev/noexec of their source.
fn bind_mounts(input: &BundleInput<'_>, spec: &mut Spec) {
    for (i, m) in input.spec.mounts.iter().enumerate() {
        let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
        options.push(if m.read_only { "ro" } else { "rw" }.to_string());
        if let Some(flags) = input.bind_flags.get(i) {
            options.extend(flags.iter().cloned());
        }
        let mut bind = mount(&m.destination, "bind", &m.source, &[]);
        bind.set_options(Some(options));
        mounts(spec).push(bind);
    }
}

/// The container's hostname: the spec's, or the handle made hostname-safe.
pub fn hostname(handle: &crate::api::Handle, spec: &crate::api::ContainerSpec) -> String {
    spec.hostname.clone().unwrap_or_else(|| {
        let h: String = handle.as_str().chars().take(63).collect();
        h.replace(['_', '+'], "-")
    })
}

/// The hostname and the env.
fn hostname_env(input: &BundleInput<'_>, spec: &mut Spec) {
    spec.set_hostname(Some(hostname(input.handle, input.spec)));
    let mut env = vec![DEFAULT_PATH.to_string()];
    env.extend(
        input
            .spec
            .env
            .iter()
            .map(|v| format!("{}={}", v.name, v.value)),
    );
    process(spec).set_env(Some(env));
}

/// Memory, CPU (quota from millicores) and pids; all devices for privileged
/// containers, containerd's default devices otherwise.
fn limits(input: &BundleInput<'_>, spec: &mut Spec) {
    let mut res = limit_resources(&input.resources, false);
    res.set_devices(Some(device_rules(input.spec.privileged)));
    linux(spec).set_resources(Some(res));
}

/// The device cgroup rules containerd gives a container (its
/// WithDefaultUnixDevices after denying all): character devices (major,
/// minor; `None` any minor) read, written and made.
pub const DEFAULT_DEVICES: &[(i64, Option<i64>)] = &[
    (1, Some(3)),    // /dev/null
    (1, Some(8)),    // /dev/random
    (1, Some(7)),    // /dev/full
    (5, Some(0)),    // /dev/tty
    (1, Some(5)),    // /dev/zero
    (1, Some(9)),    // /dev/urandom
    (5, Some(1)),    // /dev/console
    (136, None),     // /dev/pts/*
    (5, Some(2)),    // /dev/ptmx
    (10, Some(200)), // /dev/net/tun
];

/// Every device for a privileged container; otherwise none but
/// [`DEFAULT_DEVICES`].
fn device_rules(privileged: bool) -> Vec<LinuxDeviceCgroup> {
    let mut all = LinuxDeviceCgroup::default();
    all.set_allow(privileged);
    all.set_access(Some("rwm".to_string()));
    if privileged {
        return vec![all];
    }
    let allowed = DEFAULT_DEVICES.iter().map(|&(major, minor)| {
        let mut rule = LinuxDeviceCgroup::default();
        rule.set_allow(true);
        rule.set_typ(Some(LinuxDeviceType::C));
        rule.set_major(Some(major));
        rule.set_minor(minor);
        rule.set_access(Some("rwm".to_string()));
        rule
    });
    std::iter::once(all).chain(allowed).collect()
}

/// The cgroup limits of `resources`. With `clear_unset`, a limit that is
/// not set becomes -1 (no limit), which is what `runc update` needs to lift
/// one; a fresh bundle simply leaves it out.
pub fn limit_resources(resources: &Resources, clear_unset: bool) -> LinuxResources {
    let mut res = LinuxResources::default();
    let memory = resources
        .memory_bytes
        .map(|b| b as i64)
        .or(clear_unset.then_some(-1));
    if let Some(limit) = memory {
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(limit));
        res.set_memory(Some(mem));
    }
    let quota = resources
        .cpu_millis
        .map(cpu_quota_us)
        .or(clear_unset.then_some(-1));
    if let Some(quota) = quota {
        let mut cpu = LinuxCpu::default();
        cpu.set_period(Some(CPU_PERIOD_US));
        cpu.set_quota(Some(quota));
        res.set_cpu(Some(cpu));
    }
    let pids = resources.pids.or(clear_unset.then_some(-1));
    if let Some(max) = pids {
        let mut p = LinuxPids::default();
        p.set_limit(max);
        res.set_pids(Some(p));
    }
    res
}

/// CFS quota for a CPU limit: millicores of each period, at least 1 ms.
pub fn cpu_quota_us(millis: u64) -> i64 {
    let quota = millis.saturating_mul(CPU_PERIOD_US) / 1000;
    quota.max(1000).min(i64::MAX as u64) as i64
}

/// `/<parent>/<handle>`.
fn cgroup_path(input: &BundleInput<'_>, spec: &mut Spec) {
    let path = format!(
        "/{}/{}",
        input.cgroup_parent.trim_matches('/'),
        input.handle
    );
    linux(spec).set_cgroups_path(Some(PathBuf::from(path)));
}

/// What the spec asks for (containerd's default set, every capability when
/// privileged, and `securityContext.capabilities`), within the agent's
/// bounding set. The same set as every process's ([`wanted_capabilities`]).
fn capabilities(input: &BundleInput<'_>, spec: &mut Spec) {
    process(spec).set_capabilities(Some(capability_sets(&granted_capabilities(input))));
}

/// The names of the container's bounding set, as the config gives it:
/// [`wanted_capabilities`] that the config can name.
pub fn granted_capabilities(input: &BundleInput<'_>) -> Vec<&'static str> {
    let (mut names, _) = wanted_capabilities(input.spec, input.bounding_set);
    names.retain(|n| Capability::from_str(n.trim_start_matches("CAP_")).is_ok());
    names
}

/// The capabilities `spec` asks for ([`capability::wanted`]), cut to
/// `bounding`: (granted, left out). Init's and every process's set.
pub fn wanted_capabilities(
    spec: &ContainerSpec,
    bounding: CapSet,
) -> (Vec<&'static str>, Vec<&'static str>) {
    caps::within(&capability::wanted(spec), ALL_CAPABILITIES, bounding)
}

/// Bounding, effective and permitted sets of `names`; none inheritable or ambient.
pub fn capability_sets(names: &[&str]) -> LinuxCapabilities {
    let set: HashSet<Capability> = names
        .iter()
        .filter_map(|n| Capability::from_str(n.trim_start_matches("CAP_")).ok())
        .collect();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    caps.set_inheritable(None);
    caps.set_ambient(None);
    caps
}

/// Every capability name rundmc knows, for privileged containers.
pub fn all_capabilities() -> &'static [&'static str] {
    ALL_CAPABILITIES
}

/// Masked and read-only /proc and /sys paths (none when privileged or
/// with `procMount: Unmasked`), no-new-privileges (unless privileged or
/// `allowPrivilegeEscalation`), the spec's sysctls and an open files limit.
fn hardening(input: &BundleInput<'_>, spec: &mut Spec) {
    if secctx::masked(input.spec) {
        let l = linux(spec);
        l.set_masked_paths(Some(MASKED_PATHS.iter().map(|s| s.to_string()).collect()));
        l.set_readonly_paths(Some(READONLY_PATHS.iter().map(|s| s.to_string()).collect()));
    }
    if secctx::no_new_privileges(input.spec) {
        process(spec).set_no_new_privileges(Some(true));
    }
    let sysctls = secctx::sysctls(input.spec);
    if !sysctls.is_empty() {
        linux(spec).set_sysctl(Some(sysctls.into_iter().collect()));
    }
    process(spec).set_rlimits(Some(nofile_rlimits(input.nofile_hard)));
}

/// RLIMIT_NOFILE: 1024 soft (what select(2)-era programs expect) and the
/// agent's own hard limit, which a container cannot raise: runc sets limits
/// after dropping to the container's capabilities.
pub fn nofile_rlimits(hard: u64) -> Vec<PosixRlimit> {
    // The builder has no validation for these fields, so it cannot fail.
    PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(hard.min(1024))
        .hard(hard)
        .build()
        .map(|r| vec![r])
        .unwrap_or_default()
}

/// PID 1 is rundmc-init, bind-mounted read-only from the host, as root, or
/// as `runAsUser`/`runAsGroup` when set (it needs no privilege: it only
/// reaps), so that no process of such a container runs as root.
fn init(input: &BundleInput<'_>, spec: &mut Spec) {
    mounts(spec).push(mount(
        INIT_PATH,
        "bind",
        &input.init_binary.to_string_lossy(),
        &["bind", "ro", "nosuid", "nodev"],
    ));
    let p = process(spec);
    p.set_terminal(Some(false));
    p.set_args(Some(vec![INIT_PATH.to_string()]));
    p.set_cwd(PathBuf::from("/"));
    let (uid, gid, _) = secctx::ids(input.spec);
    let mut user = User::default();
    user.set_uid(uid.unwrap_or(0));
    user.set_gid(gid.unwrap_or(0));
    p.set_user(user);
}
