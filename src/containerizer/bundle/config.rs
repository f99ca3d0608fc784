//! The config's bytes, as the runtime reads them. Pure: the containerizer
//! writes what [`config_json`] returns.
//!
//! Three things make it cheaper than serialising the [`Spec`] as a JSON
//! tree, as [`super::canonical_json`] does for the tests: it is compact
//! (only the runtime reads it); each capability set is written in one
//! fixed order straight from its hash set, with no tree to sort; and the
//! seccomp filter, three quarters of a config's bytes, is spliced in as
//! JSON made once per capability set ([`super::seccomp::for_container_json`])
//! instead of being built and written again for every container. The
//! config's other maps (sysctls, annotations) keep their hash order: equal
//! as JSON, not always byte for byte.

use std::collections::HashSet;

use oci_spec::runtime::{Capability, Linux, LinuxCapabilities, Process, Spec};
use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::value::RawValue;

use super::BundleInput;
use super::rules::{RULES, granted_capabilities};
use super::seccomp;

/// The rule [`config_json`] leaves out of the config tree and splices in.
const SECCOMP_RULE: &str = "seccomp";

/// Every rule but the seccomp one, in order, over an empty config: what
/// [`config_json`] takes, once the caller has made its own changes.
pub fn generate_without_seccomp(input: &BundleInput<'_>) -> Spec {
    let mut spec = super::rules::empty_spec();
    for (_, rule) in RULES.iter().filter(|(name, _)| *name != SECCOMP_RULE) {
        rule(input, &mut spec);
    }
    spec
}

/// `spec` (from [`generate_without_seccomp`]) with `input`'s seccomp
/// filter, as compact JSON. Equal, as JSON, to [`super::generate`]'s
/// config.
pub fn config_json(input: &BundleInput<'_>, mut spec: Spec) -> Result<Vec<u8>, serde_json::Error> {
    let filter = seccomp::for_container_json(input, &granted_capabilities(input))?;
    let mut process = spec.process_mut().take();
    let capabilities = process.as_mut().and_then(|p| {
        let caps = p.capabilities().clone();
        p.set_capabilities(None);
        caps
    });
    let mut linux = spec.linux_mut().take();
    if let Some(linux) = linux.as_mut() {
        linux.set_seccomp(None);
    }
    let config = Config {
        rest: &spec,
        process: process.as_ref().map(|rest| ProcessOut {
            rest,
            capabilities: capabilities.as_ref().map(CapabilitiesOut),
        }),
        linux: linux.as_ref().map(|rest| LinuxOut {
            rest,
            seccomp: filter.as_deref(),
        }),
    };
    serde_json::to_vec(&config)
}

/// The config: the spec without its process and Linux parts, then those.
#[derive(serde::Serialize)]
struct Config<'a> {
    #[serde(flatten)]
    rest: &'a Spec,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<ProcessOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    linux: Option<LinuxOut<'a>>,
}

/// The process without its capabilities, then those.
#[derive(serde::Serialize)]
struct ProcessOut<'a> {
    #[serde(flatten)]
    rest: &'a Process,
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<CapabilitiesOut<'a>>,
}

/// The Linux part without its seccomp filter, then the filter's JSON.
#[derive(serde::Serialize)]
struct LinuxOut<'a> {
    #[serde(flatten)]
    rest: &'a Linux,
    #[serde(skip_serializing_if = "Option::is_none")]
    seccomp: Option<&'a RawValue>,
}

/// The capability sets, each in [`Capability`]'s declaration order.
struct CapabilitiesOut<'a>(&'a LinuxCapabilities);

impl Serialize for CapabilitiesOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let caps = self.0;
        let sets = [
            ("bounding", caps.bounding()),
            ("effective", caps.effective()),
            ("inheritable", caps.inheritable()),
            ("permitted", caps.permitted()),
            ("ambient", caps.ambient()),
        ];
        serializer.collect_map(
            sets.into_iter()
                .filter_map(|(key, set)| set.as_ref().map(|set| (key, Ordered(set)))),
        )
    }
}

/// One capability set, in declaration order.
struct Ordered<'a>(&'a HashSet<Capability>);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut caps: Vec<Capability> = self.0.iter().copied().collect();
        // A fieldless enum: its discriminant is its place in the list.
        caps.sort_by_key(|c| *c as u32);
        let mut seq = serializer.serialize_seq(Some(caps.len()))?;
        for cap in &caps {
            seq.serialize_element(cap)?;
        }
        seq.end()
    }
}
