//! The network phase (issue 14). On a bridge and private subnet of the
//! run's ([`net::BenchNet`]) it measures, sample by sample, the order
//! flipping every sample so drift hits all alike:
//!
//! 1. drop to running of a container publishing a host port, on an agent
//!    whose `--cni-conf-dir` holds the bridge + portmap conflist, against
//!    the same container (without the port) on an agent whose conf dir is
//!    empty (loopback only), as [`latency`](crate::latency) measures it;
//!    and the plugins' own cost: the same list's ADD run by hand
//!    ([`net::HandCni`]) into a namespace made with `ip netns add`;
//! 2. teardown of each container (manifest removed until its depot
//!    directory is gone), and the hand-run DEL.
//!
//! Then both agents stop, and the network must hold nothing: no veth on
//! the bridge, no host-local lease, no portmap rule naming it.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::agent::AgentEnv;
use crate::latency::{agent_teardown, drop_manifest};
use crate::net::{self, BenchNet, CONTAINER_PORT, HandAttachment, HandCni};
use crate::phases::{Run, WORKERS};
use crate::report::brief;
use crate::stats::{Samples, ratio};
use crate::wait::check_interrupted;

/// Unmeasured rounds first.
const WARMUP: usize = 2;
/// The target: the agent's added drop time ≤ this × the plugins' own.
pub const BOUND: f64 = 1.2;

/// What the network phase measured, ms.
#[derive(Debug, Default)]
pub struct NetResults {
    /// The subnet, `10.x.y.0/24`.
    pub subnet: String,
    /// Drop to running with the bridge network.
    pub drop_net: Samples,
    /// Drop to running with no network.
    pub drop_none: Samples,
    /// The list's ADD by hand.
    pub hand_add: Samples,
    /// Teardown with the bridge network.
    pub teardown_net: Samples,
    /// Teardown with no network.
    pub teardown_none: Samples,
    /// The list's DEL by hand.
    pub hand_del: Samples,
    /// Per-sample differences, drop with − without.
    pub drop_diff: Samples,
    /// Per-sample differences, teardown with − without.
    pub teardown_diff: Samples,
}

impl NetResults {
    /// (drop with − drop without) ÷ hand ADD, medians.
    pub fn add_ratio(&self) -> f64 {
        ratio(
            self.drop_net.p50() - self.drop_none.p50(),
            self.hand_add.p50(),
        )
    }

    /// (teardown with − teardown without) ÷ hand DEL, medians.
    pub fn del_ratio(&self) -> f64 {
        ratio(
            self.teardown_net.p50() - self.teardown_none.p50(),
            self.hand_del.p50(),
        )
    }
}

/// Both agents, the list and the hand runner of one phase.
struct Sides<'a> {
    bridged: &'a AgentEnv,
    plain: &'a AgentEnv,
    hand: HandCni<'a>,
    agent_port: u16,
    net: &'a BenchNet,
}

/// The whole phase.
pub fn phase(run: &Run) -> Result<NetResults> {
    let net = BenchNet::create(&run.base.join("net-ipam"))?;
    let bridged = run.agent_env_on("net-bridge", "runc", run.image())?;
    net.write_conflist(&bridged.dir.join("cni"))?;
    let plain = run.agent_env_on("net-none", "runc", run.image())?;
    std::fs::create_dir_all(plain.dir.join("cni")).context("creating the empty conf dir")?;
    let workers = WORKERS.to_string();
    let flags = ["--workers", &workers, "--cni-bin-dir", net::CNI_BIN];
    let mut agents = [bridged.start(&flags)?, plain.start(&flags)?];
    let (agent_port, hand_port) = free_ports()?;
    let sides = Sides {
        bridged: &bridged,
        plain: &plain,
        hand: HandCni {
            net: &net,
            runtime_config: HandCni::ports(hand_port),
        },
        agent_port,
        net: &net,
    };
    let mut r = sides.measure(run.sizes().net_samples)?;
    r.subnet = format!("{}.0/24", net.prefix);
    for a in &mut agents {
        a.terminate();
    }
    let held = net.held();
    if !held.is_empty() {
        bail!("after every teardown the network still holds {held:?}");
    }
    for (what, v) in [
        ("drop to running, bridge", &r.drop_net),
        ("drop to running, none", &r.drop_none),
        ("hand-run ADD", &r.hand_add),
        ("teardown, bridge", &r.teardown_net),
        ("teardown, none", &r.teardown_none),
        ("hand-run DEL", &r.hand_del),
    ] {
        eprintln!("  {}", brief(what, v));
    }
    Ok(r)
}

/// Two distinct ports on 127.0.0.1 that nothing listens on now.
fn free_ports() -> Result<(u16, u16)> {
    let a = std::net::TcpListener::bind("127.0.0.1:0")?;
    let b = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// One sample's six times.
type Six = [Duration; 6];

impl Sides<'_> {
    fn measure(&self, n: usize) -> Result<NetResults> {
        let mut d: [Vec<Duration>; 6] = Default::default();
        for i in 0..WARMUP + n {
            check_interrupted()?;
            let times = self.sample(i)?;
            if i >= WARMUP {
                for (v, t) in d.iter_mut().zip(times) {
                    v.push(t);
                }
            }
        }
        let [dn, dp, ha, tn, tp, hd] = d.map(|v| Samples::from_durations(&v));
        let diff =
            |a: &Samples, b: &Samples| Samples(a.0.iter().zip(&b.0).map(|(x, y)| x - y).collect());
        Ok(NetResults {
            drop_diff: diff(&dn, &dp),
            teardown_diff: diff(&tn, &tp),
            drop_net: dn,
            drop_none: dp,
            hand_add: ha,
            teardown_net: tn,
            teardown_none: tp,
            hand_del: hd,
            subnet: String::new(),
        })
    }

    /// Drops and the hand ADD, then teardowns and the hand DEL, in the
    /// same order, flipped every other sample.
    fn sample(&self, i: usize) -> Result<Six> {
        let (n, p) = (format!("n{i}"), format!("p{i}"));
        let h = format!("{}-h{i}", self.net.name);
        let (dn, dp, (att, ha));
        if i.is_multiple_of(2) {
            dn = self.drop_bridged(&n)?;
            dp = drop_manifest(self.plain, &p, &self.plain.manifest(&p, "Always"))?;
            (att, ha) = self.hand.add(&h)?;
        } else {
            (att, ha) = self.hand.add(&h)?;
            dp = drop_manifest(self.plain, &p, &self.plain.manifest(&p, "Always"))?;
            dn = self.drop_bridged(&n)?;
        }
        if i == 0 {
            self.check_attached(&n, &att)?;
        }
        let (tn, tp, hd);
        if i.is_multiple_of(2) {
            tn = agent_teardown(self.bridged, &n)?;
            tp = agent_teardown(self.plain, &p)?;
            hd = self.hand.del(&att)?;
        } else {
            hd = self.hand.del(&att)?;
            tp = agent_teardown(self.plain, &p)?;
            tn = agent_teardown(self.bridged, &n)?;
        }
        Ok([dn, dp, ha, tn, tp, hd])
    }

    fn drop_bridged(&self, name: &str) -> Result<Duration> {
        let ports = format!(
            "spec:\n  ports:\n  - containerPort: {CONTAINER_PORT}\n    hostPort: {}\n",
            self.agent_port
        );
        let yaml = self
            .bridged
            .manifest(name, "Always")
            .replacen("spec:\n", &ports, 1);
        drop_manifest(self.bridged, name, &yaml)
    }

    /// The first sample proves the figures are what they claim: the
    /// agent's container has an address on the subnet, the plain one has
    /// none, and portmap made rules for both the agent's and the hand's.
    fn check_attached(&self, name: &str, hand: &HandAttachment) -> Result<()> {
        let status = std::fs::read_to_string(self.bridged.status_path(name))
            .context("reading the networked container's status")?;
        let prefix = format!("{}.", self.net.prefix);
        let ip_line = status
            .lines()
            .find(|l| l.trim_start().starts_with("podIP:"));
        if !ip_line.is_some_and(|l| l.contains(&prefix)) {
            bail!("{name}'s status has no podIP on {prefix}0/24:\n{status}");
        }
        let plain = std::fs::read_to_string(self.plain.status_path(&format!("p{}", &name[1..])))
            .unwrap_or_default();
        if plain.contains("podIP:") {
            bail!("the container without a network has a podIP:\n{plain}");
        }
        let rules = net::nat_rules(&self.net.name);
        for id in [name, hand.id()] {
            if !rules.iter().any(|r| r.contains(&format!("\\\"{id}\\\""))) {
                bail!(
                    "no portmap rule for {id} naming {}: {rules:?}",
                    self.net.name
                );
            }
        }
        Ok(())
    }
}
