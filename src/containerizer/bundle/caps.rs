//! Capabilities a container can be given: what it asks for (every one when
//! privileged, containerd's default set otherwise) within the agent's own
//! bounding set. runc cannot raise a capability its caller's bounding set
//! lacks (`unable to apply caps: operation not permitted`), so, as
//! containerd does, a container gets the intersection. Pure: the bounding
//! set is read by the containerizer and handed in.

use std::fmt;

/// A set of capabilities as the kernel writes it (`CapBnd:` in
/// `/proc/<pid>/status`): bit *n* is capability number *n*.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    /// Every capability: what the rules assume when nothing is known.
    pub const ALL: CapSet = CapSet(u64::MAX);

    /// Whether capability number `n` is in the set.
    pub fn has(self, n: usize) -> bool {
        n < 64 && self.0 & (1 << n) != 0
    }

    /// The `CapBnd:` line of a `/proc/<pid>/status` text.
    pub fn from_status(status: &str) -> Option<CapSet> {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))?
            .trim();
        u64::from_str_radix(hex, 16).ok().map(CapSet)
    }
}

impl fmt::Display for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Which of `wanted` (capability names) `bounding` allows, and which it
/// leaves out, each in `wanted`'s order. `numbered` lists every capability
/// name in number order (index = number); a name not in it is kept, as
/// runc decides about capabilities newer than rundmc.
pub fn within<'a>(
    wanted: &[&'a str],
    numbered: &[&str],
    bounding: CapSet,
) -> (Vec<&'a str>, Vec<&'a str>) {
    wanted.iter().partition(|name| {
        numbered
            .iter()
            .position(|n| n == *name)
            .is_none_or(|number| bounding.has(number))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NUMBERED: &[&str] = &["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH"];

    #[test]
    fn the_bounding_line_is_read_from_status() {
        let status = "Name:\tx\nCapPrm:\t0000000000000000\nCapBnd:\t000001fffeffffff\nCapAmb:\t0\n";
        let set = CapSet::from_status(status);
        assert_eq!(set, Some(CapSet(0x1fffeffffff)));
        assert_eq!(set.map(|s| s.has(24)), Some(false));
        assert_eq!(set.map(|s| s.has(25)), Some(true));
        assert_eq!(CapSet::from_status("Name:\tx\n"), None);
        assert_eq!(CapSet::from_status("CapBnd:\tzz\n"), None);
    }

    #[test]
    fn wanted_is_cut_to_the_bounding_set() {
        let wanted = ["CAP_DAC_READ_SEARCH", "CAP_CHOWN", "CAP_FUTURE"];
        assert_eq!(
            within(&wanted, NUMBERED, CapSet(0b001)),
            (vec!["CAP_CHOWN", "CAP_FUTURE"], vec!["CAP_DAC_READ_SEARCH"])
        );
        assert_eq!(
            within(&wanted, NUMBERED, CapSet::ALL),
            (wanted.to_vec(), vec![])
        );
        assert!(!CapSet::ALL.has(64));
    }
}
