//! A container's own network: its attachment through CNI (`cni`: the
//! node's configurations; `plugin`: the exec protocol; `attach`: ADD,
//! CHECK and DEL of a configuration's chain, with the cache DEL needs),
//! its pinned namespace (`netns`), the names it is told (`names`: hosts,
//! resolv.conf, hostname) and its traffic counters (`counters`). Imports
//! only `api`, `fsutil`, `mountinfo` and `procgroup` of the crate; it knows nothing of
//! containers but their ids.

pub mod attach;
pub mod cni;
pub mod counters;
pub mod names;
pub mod netns;
pub mod plugin;
