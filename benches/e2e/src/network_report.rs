//! The network section of `BENCHMARKS.md` (issue 14): its method, where
//! its target stands, and the table behind it.

use std::fmt::Write;

use crate::network::{BOUND, NetResults};
use crate::report::{f1, x};
use crate::stats::Samples;

/// Appends the section.
pub fn render(s: &mut String, r: &NetResults) {
    let _ = write!(
        s,
        "\n## Network (issue 14)\n\nA bridge made by the run, holding the gateway (`.1`) of {}, \
         and a conflist of Debian's `bridge` (host-local IPAM, its `dataDir` in the run's directory, \
         `isGateway: false`, `ipMasq: false`, no route) and `portmap` (`portMappings`, `snat: true`).\n",
        if r.subnet.is_empty() {
            "a private 10.x.y.0/24"
        } else {
            &r.subnet
        }
    );
    s.push_str(METHOD);
    targets(s, r);
    table(s, r);
}

const METHOD: &str = "
- **Drop to running, bridge against none**: two agents (4 workers, `--cni-bin-dir /usr/lib/cni`) \
running side by side, one whose `--cni-conf-dir` holds the conflist, the other's empty. The first's \
container publishes a host port (`containerPort: 8080`, `hostPort` free on the host), so portmap \
makes rules; the second's is the same container without the port. Measured as the drop to running \
above (manifest rename until the first output line).
- **Hand-run ADD**: the same list run as `cnitool` runs it: `ip netns add` (untimed), then \
`/usr/lib/cni/bridge` and `/usr/lib/cni/portmap` exec'd in turn with `CNI_COMMAND=ADD`, \
`CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME=eth0`, `CNI_PATH`, each plugin's config on stdin (the \
list's name and version, `prevResult` from the plugin before, `runtimeConfig.portMappings` for \
portmap, another free host port); timed from the first spawn until the last exit. **Hand-run DEL**: \
portmap then bridge with ADD's result as `prevResult`, then `ip netns del` (untimed).
- **Teardown**: manifest removed until the container's depot directory is gone (the agent's DEL runs \
before the bundle goes).
- The three (drops, then teardowns) go in one order and the reverse on every other sample; two \
warm-up samples are dropped. Added time = p50 with the network − p50 without; the per-sample \
difference (same sample, with − without) is shown too. After the phase the bridge must have no \
veth, host-local no lease and the nat table no rule naming the network, or the phase fails.
";

fn targets(s: &mut String, r: &NetResults) {
    s.push_str("\n| target (issue 14) | measured | |\n|---|---|---|\n");
    let add = r.add_ratio();
    let mark = |v: f64| match v.is_nan() {
        true => "not measured",
        false if v <= BOUND => "met",
        false => "**missed**",
    };
    let _ = writeln!(
        s,
        "| Drop to running: added time ≤ {BOUND}× the plugins' own ADD | {} ({} − {} = {} ms against {} ms) | {} |",
        x(add),
        f1(r.drop_net.p50()),
        f1(r.drop_none.p50()),
        f1(r.drop_net.p50() - r.drop_none.p50()),
        f1(r.hand_add.p50()),
        mark(add)
    );
    let del = r.del_ratio();
    let _ = writeln!(
        s,
        "| Teardown: added time against the plugins' own DEL (no bound in the issue; {BOUND}× shown) | {} ({} − {} = {} ms against {} ms) | {} |",
        x(del),
        f1(r.teardown_net.p50()),
        f1(r.teardown_none.p50()),
        f1(r.teardown_net.p50() - r.teardown_none.p50()),
        f1(r.hand_del.p50()),
        mark(del)
    );
}

fn table(s: &mut String, r: &NetResults) {
    s.push_str("\n| figure (ms) | n | p50 | p95 |\n|---|---|---|---|\n");
    let rows: [(&str, &Samples); 8] = [
        ("Drop to running, bridge network", &r.drop_net),
        ("Drop to running, no network", &r.drop_none),
        ("Per-sample difference, drop", &r.drop_diff),
        ("Hand-run ADD (bridge + portmap)", &r.hand_add),
        ("Teardown, bridge network", &r.teardown_net),
        ("Teardown, no network", &r.teardown_none),
        ("Per-sample difference, teardown", &r.teardown_diff),
        ("Hand-run DEL (portmap + bridge)", &r.hand_del),
    ];
    for (what, v) in rows {
        let _ = writeln!(
            s,
            "| {what} | {} | {} | {} |",
            v.len(),
            f1(v.p50()),
            f1(v.p95())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_compares_added_time_with_the_hand_run_add() {
        let s = |v: &[f64]| Samples(v.to_vec());
        let r = NetResults {
            drop_net: s(&[100.0]),
            drop_none: s(&[60.0]),
            hand_add: s(&[30.0]),
            teardown_net: s(&[50.0]),
            teardown_none: s(&[40.0]),
            hand_del: s(&[10.0]),
            ..NetResults::default()
        };
        let mut text = String::new();
        render(&mut text, &r);
        let rows: Vec<&str> = text.lines().filter(|l| l.contains("added time")).collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(
            rows[0].contains("1.33× (100.0 − 60.0 = 40.0 ms against 30.0 ms)"),
            "{}",
            rows[0]
        );
        assert!(rows[0].ends_with("| **missed** |"), "{}", rows[0]);
        assert!(rows[1].contains("1.00×") && rows[1].ends_with("| met |"));
    }
}
