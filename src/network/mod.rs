//! A container's own network: pinned network namespaces (`netns`), the
//! names it is told (`names`: hosts, resolv.conf, hostname) and its traffic
//! counters (`counters`). Imports only `api`, `fsutil` and `mountinfo` of
//! the crate.

pub mod attach;
pub mod counters;
pub mod names;
pub mod netns;
