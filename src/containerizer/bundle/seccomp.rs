//! Seccomp: which filter a container's config gets. The built-in default
//! (Moby's and containerd's, from [`super::seccomp_table`]) and Localhost
//! profiles are both a [`Profile`], the Docker profile format, which the OCI
//! `linux.seccomp` object is a part of; a profile is evaluated for the
//! container's bounding capabilities and the node's architecture as Moby
//! does (`includes`/`excludes` of capabilities and architectures, `archMap`)
//! into the OCI form runc and crun read. Privileged and Unconfined
//! containers get no filter. Pure: Localhost files are read by the
//! containerizer and handed in through [`super::BundleInput`].

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall, Spec,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;

use super::BundleInput;
use super::seccomp_table::{self as table, Act, Arg, GROUPS};
use crate::api::SeccompProfileType;

/// A seccomp profile in Docker's format: the OCI `linux.seccomp` fields
/// (`defaultAction`, `defaultErrnoRet`, `architectures`, `flags`,
/// `syscalls[].names/action/errnoRet/args`) and Docker's extras (`archMap`,
/// `syscalls[].includes/excludes`, `comment`), which are evaluated as Moby
/// evaluates them. Anything else is refused, so that a typo or a feature
/// rundmc does not have (`listenerPath`) is not silently dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    /// What a syscall no rule matches gets.
    pub default_action: LinuxSeccompAction,
    /// The errno of an `SCMP_ACT_ERRNO` default action.
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    /// Podman's name of the default errno; kept for its files, unused.
    #[serde(default)]
    pub default_errno: Option<String>,
    /// The architectures the filter covers; with neither this nor
    /// `archMap`, the native one.
    #[serde(default)]
    pub architectures: Vec<Arch>,
    /// Per native architecture, the ones its CPU also runs.
    #[serde(default)]
    pub arch_map: Vec<ArchMapEntry>,
    /// Filter flags.
    #[serde(default)]
    pub flags: Vec<LinuxSeccompFilterFlag>,
    /// The rules, in order.
    #[serde(default)]
    pub syscalls: Vec<SyscallRule>,
}

/// One `archMap` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchMapEntry {
    /// A native architecture.
    pub architecture: Arch,
    /// What it also runs.
    #[serde(default)]
    pub sub_architectures: Option<Vec<Arch>>,
}

/// One rule: syscalls, their action, and when it applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyscallRule {
    /// The syscalls.
    #[serde(default)]
    pub names: Vec<String>,
    /// Docker's older single name.
    #[serde(default)]
    pub name: Option<String>,
    /// What they get.
    pub action: LinuxSeccompAction,
    /// The errno of an `SCMP_ACT_ERRNO` action.
    #[serde(default)]
    pub errno_ret: Option<u32>,
    /// Podman's name of the errno; kept for its files, unused.
    #[serde(default)]
    pub errno: Option<String>,
    /// Argument comparisons, all of which must hold.
    #[serde(default)]
    pub args: Option<Vec<LinuxSeccompArg>>,
    /// Applies only when these hold.
    #[serde(default)]
    pub includes: Filter,
    /// Does not apply when any of these holds.
    #[serde(default)]
    pub excludes: Filter,
    /// Free text.
    #[serde(default)]
    pub comment: Option<String>,
}

/// Docker's conditions on a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    /// Capabilities, `CAP_` names.
    #[serde(default)]
    pub caps: Vec<String>,
    /// Architectures in Go's names (`amd64`, `arm64`).
    #[serde(default)]
    pub arches: Vec<String>,
    /// The oldest kernel the rule is for. Treated as met: rundmc's other
    /// needs (cgroup v2, overlayfs in user namespaces) are newer than any
    /// kernel Docker's profiles name.
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// Why a profile file is refused.
#[derive(Debug, Error)]
pub enum ProfileError {
    /// Not JSON of the profile's shape; serde's message has the line.
    #[error("not a seccomp profile: {0}")]
    Parse(#[from] serde_json::Error),
    /// Both ways of naming architectures.
    #[error("architectures and archMap cannot both be set")]
    BothArchitectures,
    /// A rule without names.
    #[error("syscalls[{index}]: names is empty")]
    NoNames {
        /// The rule's index.
        index: usize,
    },
}

impl Profile {
    /// Parse and check a profile file's text.
    pub fn parse(text: &str) -> Result<Profile, ProfileError> {
        let profile: Profile = serde_json::from_str(text)?;
        if !profile.architectures.is_empty() && !profile.arch_map.is_empty() {
            return Err(ProfileError::BothArchitectures);
        }
        let unnamed = profile
            .syscalls
            .iter()
            .position(|r| r.names.is_empty() && r.name.is_none());
        match unnamed {
            Some(index) => Err(ProfileError::NoNames { index }),
            None => Ok(profile),
        }
    }
}

/// The node's architecture, in Rust's and Go's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Native {
    /// `x86_64`, `aarch64`.
    pub rust: &'static str,
    /// `amd64`, `arm64`: what profiles' `arches` name.
    pub go: &'static str,
}

impl Native {
    /// The architecture rundmc was built for.
    pub fn host() -> Native {
        let rust = std::env::consts::ARCH;
        let go = table::ARCH_MAP
            .iter()
            .find(|(r, _, _)| *r == rust)
            .map_or(rust, |(_, go, _)| go);
        Native { rust, go }
    }

    /// Its seccomp architecture, for `archMap`.
    fn seccomp_arch(self) -> Option<Arch> {
        let (_, _, arches) = table::ARCH_MAP.iter().find(|(r, _, _)| *r == self.rust)?;
        arches.first().and_then(|a| Arch::from_str(a).ok())
    }
}

/// The built-in default profile, as a [`Profile`].
pub fn default_profile() -> Profile {
    Profile {
        default_action: LinuxSeccompAction::ScmpActErrno,
        default_errno_ret: Some(table::DEFAULT_ERRNO),
        arch_map: table::ARCH_MAP
            .iter()
            .filter_map(|(_, _, arches)| arch_map_entry(arches))
            .collect(),
        // The builder of an argument has nothing to check, so none is
        // dropped; were one, its group would be, which only refuses more.
        syscalls: GROUPS.iter().filter_map(rule_of).collect(),
        ..Profile::default()
    }
}

fn arch_map_entry(arches: &[&str]) -> Option<ArchMapEntry> {
    let mut parsed = arches.iter().filter_map(|a| Arch::from_str(a).ok());
    Some(ArchMapEntry {
        architecture: parsed.next()?,
        sub_architectures: Some(parsed.collect()),
    })
}

fn rule_of(group: &table::Group) -> Option<SyscallRule> {
    let (action, errno_ret) = match group.action {
        Act::Allow => (LinuxSeccompAction::ScmpActAllow, None),
        Act::Errno(errno) => (LinuxSeccompAction::ScmpActErrno, Some(errno)),
    };
    let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    let args: Vec<_> = group
        .args
        .iter()
        .map(arg_of)
        .collect::<Result<_, _>>()
        .ok()?;
    Some(SyscallRule {
        names: strings(group.names),
        action,
        errno_ret,
        args: (!args.is_empty()).then_some(args),
        includes: Filter {
            caps: strings(group.only.caps),
            arches: strings(group.only.arches),
            min_kernel: None,
        },
        excludes: Filter {
            caps: strings(group.unless.caps),
            arches: strings(group.unless.arches),
            min_kernel: None,
        },
        ..SyscallRule::default()
    })
}

fn arg_of(arg: &Arg) -> Result<LinuxSeccompArg, oci_spec::OciSpecError> {
    let (index, op, value) = match *arg {
        Arg::Eq(i, v) => (i, LinuxSeccompOperator::ScmpCmpEq, v),
        Arg::Ne(i, v) => (i, LinuxSeccompOperator::ScmpCmpNe, v),
        Arg::MaskedZero(i, v) => (i, LinuxSeccompOperator::ScmpCmpMaskedEq, v),
    };
    LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value)
        .value_two(0u64)
        .build()
}

/// `profile` for a container whose bounding set is `caps` (`CAP_` names),
/// on `native`: the rules whose conditions hold, without them.
pub fn evaluate(profile: &Profile, caps: &HashSet<String>, native: Native) -> LinuxSeccomp {
    let mut out = LinuxSeccomp::default();
    out.set_default_action(profile.default_action);
    out.set_default_errno_ret(profile.default_errno_ret);
    let arches = architectures(profile, native);
    out.set_architectures((!arches.is_empty()).then_some(arches));
    out.set_flags((!profile.flags.is_empty()).then(|| profile.flags.clone()));
    let syscalls = profile
        .syscalls
        .iter()
        .filter(|r| applies(r, caps, native))
        .map(syscall_of)
        .collect();
    out.set_syscalls(Some(syscalls));
    out
}

/// `architectures`, or the native one's `archMap` entry with what it runs.
fn architectures(profile: &Profile, native: Native) -> Vec<Arch> {
    if !profile.architectures.is_empty() {
        return profile.architectures.clone();
    }
    let Some(arch) = native.seccomp_arch() else {
        return Vec::new();
    };
    profile
        .arch_map
        .iter()
        .find(|e| e.architecture == arch)
        .map(|e| {
            let subs = e.sub_architectures.iter().flatten().copied();
            std::iter::once(e.architecture).chain(subs).collect()
        })
        .unwrap_or_default()
}

/// Moby's test: every included capability held, the architecture among
/// the included ones, no excluded capability held, not an excluded
/// architecture.
fn applies(rule: &SyscallRule, caps: &HashSet<String>, native: Native) -> bool {
    let inc = &rule.includes;
    let exc = &rule.excludes;
    let arch_listed = |arches: &[String]| arches.iter().any(|a| a == native.go);
    inc.caps.iter().all(|c| caps.contains(c))
        && (inc.arches.is_empty() || arch_listed(&inc.arches))
        && !exc.caps.iter().any(|c| caps.contains(c))
        && !arch_listed(&exc.arches)
}

fn syscall_of(rule: &SyscallRule) -> LinuxSyscall {
    let mut names = rule.names.clone();
    names.extend(rule.name.iter().cloned());
    let mut out = LinuxSyscall::default();
    out.set_names(names);
    out.set_action(rule.action);
    out.set_errno_ret(rule.errno_ret);
    out.set_args(rule.args.clone());
    out
}

/// Which filter a container gets.
enum Choice<'a> {
    /// None: privileged (as containerd) or Unconfined.
    Unconfined,
    /// The built-in default.
    Default,
    /// The container's Localhost profile.
    Localhost(&'a Profile),
}

/// None when privileged or Unconfined; its Localhost profile; the
/// default otherwise.
fn choice<'a>(input: &'a BundleInput<'_>) -> Choice<'a> {
    if input.spec.privileged {
        return Choice::Unconfined;
    }
    let wanted = input
        .spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_)
        .unwrap_or_default();
    match (wanted, &input.seccomp_localhost) {
        (SeccompProfileType::Unconfined, _) => Choice::Unconfined,
        (SeccompProfileType::Localhost, Some(profile)) => Choice::Localhost(profile),
        // A Localhost profile the containerizer did not hand in (it
        // refuses to create without one): never less than the default.
        (SeccompProfileType::Localhost, None) | (SeccompProfileType::RuntimeDefault, _) => {
            Choice::Default
        }
    }
}

/// The built-in default profile, built once.
fn the_default() -> &'static Profile {
    static DEFAULT: OnceLock<Profile> = OnceLock::new();
    DEFAULT.get_or_init(default_profile)
}

/// The filter `input`'s container gets, whose bounding set is `caps`
/// (`CAP_` names).
pub fn for_container(input: &BundleInput<'_>, caps: &[&str]) -> Option<LinuxSeccomp> {
    let profile = match choice(input) {
        Choice::Unconfined => return None,
        Choice::Localhost(profile) => profile,
        Choice::Default => the_default(),
    };
    let set: HashSet<String> = caps.iter().map(|c| c.to_string()).collect();
    Some(evaluate(profile, &set, Native::host()))
}

/// A filter as the config carries it: its JSON, made once and shared.
pub type FilterJson = Arc<RawValue>;

/// How many (capability set, filter) pairs of the default profile are
/// kept: containers of a node share a handful of capability sets.
const KEPT_DEFAULT_FILTERS: usize = 16;

/// [`for_container`] as JSON. The default profile's filter is evaluated
/// and serialised once per capability set: it is most of a config's bytes
/// and most of what making one costs.
pub fn for_container_json(
    input: &BundleInput<'_>,
    caps: &[&'static str],
) -> Result<Option<FilterJson>, serde_json::Error> {
    let serialise = || -> Result<Option<FilterJson>, serde_json::Error> {
        for_container(input, caps)
            .map(|f| serde_json::value::to_raw_value(&f).map(FilterJson::from))
            .transpose()
    };
    if !matches!(choice(input), Choice::Default) {
        return serialise();
    }
    static KEPT: Mutex<Vec<(Vec<&'static str>, FilterJson)>> = Mutex::new(Vec::new());
    let lock = || KEPT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let kept = |list: &[(Vec<&'static str>, FilterJson)]| {
        list.iter()
            .find(|(kept, _)| kept.as_slice() == caps)
            .map(|(_, json)| json.clone())
    };
    if let Some(json) = kept(&lock()) {
        return Ok(Some(json));
    }
    // Made outside the lock; another thread may have made it meanwhile.
    let Some(json) = serialise()? else {
        return Ok(None);
    };
    let mut list = lock();
    if let Some(theirs) = kept(&list) {
        return Ok(Some(theirs));
    }
    if list.len() >= KEPT_DEFAULT_FILTERS {
        list.remove(0);
    }
    list.push((caps.to_vec(), json.clone()));
    Ok(Some(json))
}

/// The `seccomp` rule: `linux.seccomp`, with the capability-conditional
/// rules following the bounding set the capabilities rule gives.
pub fn seccomp(input: &BundleInput<'_>, spec: &mut Spec) {
    let filter = for_container(input, &super::rules::granted_capabilities(input));
    spec.linux_mut()
        .get_or_insert_with(Default::default)
        .set_seccomp(filter);
}

#[cfg(test)]
#[path = "seccomp_tests.rs"]
mod tests;
