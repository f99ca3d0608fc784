//! CPU spent in a window, per container: the agent process's own (every
//! thread, live or gone, from its process CPU clock, in ns; and by thread
//! name from each live thread's schedstat), its CPU cgroup's (the agent, the
//! runtime processes it spawned and the supervisors), and the harness's
//! reaped children's (the raw runtime's processes).

use std::collections::BTreeMap;

use crate::procfs::{self, CpuCgroup};

/// Readings at the start of a window.
#[derive(Debug, Clone)]
pub struct Meter {
    pid: Option<i32>,
    agent_s: f64,
    threads: BTreeMap<String, u64>,
    cgroup_ns: u64,
    children_s: f64,
}

/// What one window cost, per container, in ms.
#[derive(Debug, Clone, Default)]
pub struct Cost {
    /// The agent process's own CPU.
    pub agent_ms: f64,
    /// The agent's cgroup: agent, runtime processes, supervisors.
    pub cgroup_ms: f64,
    /// The harness's reaped children (the raw runtime's processes).
    pub children_ms: f64,
    /// The agent's live threads, by name.
    pub threads: BTreeMap<String, f64>,
}

impl Meter {
    /// Readings now, of the agent `pid` (when there is one) and `cgroup`.
    pub fn start(pid: Option<i32>, cgroup: &CpuCgroup) -> Meter {
        Meter {
            pid,
            agent_s: pid.map_or(0.0, own_seconds),
            threads: pid.map(procfs::thread_cpu_ns).unwrap_or_default(),
            cgroup_ns: cgroup.usage_ns().unwrap_or(0),
            children_s: procfs::children_cpu_seconds(),
        }
    }

    /// What the window since [`Meter::start`] cost per container, for `n`
    /// containers.
    pub fn per_container(&self, cgroup: &CpuCgroup, n: usize) -> Cost {
        let n = n.max(1) as f64;
        let threads = match self.pid {
            Some(pid) => procfs::thread_cpu_ns(pid)
                .into_iter()
                .map(|(name, ns)| {
                    let was = self.threads.get(&name).copied().unwrap_or(0);
                    (name, ns.saturating_sub(was) as f64 / 1e6 / n)
                })
                .collect(),
            None => BTreeMap::new(),
        };
        let agent_s = self.pid.map_or(0.0, own_seconds);
        let cgroup_ns = cgroup.usage_ns().unwrap_or(self.cgroup_ns);
        Cost {
            agent_ms: (agent_s - self.agent_s) * 1e3 / n,
            cgroup_ms: cgroup_ns.saturating_sub(self.cgroup_ns) as f64 / 1e6 / n,
            children_ms: (procfs::children_cpu_seconds() - self.children_s) * 1e3 / n,
            threads,
        }
    }
}

fn own_seconds(pid: i32) -> f64 {
    procfs::process_cpu_ns(pid).map_or(f64::NAN, |ns| ns as f64 / 1e9)
}

/// Adds `cost`'s per-thread figures to `into`, divided by `rounds`.
pub fn add_threads(into: &mut BTreeMap<String, f64>, cost: &Cost, rounds: usize) {
    for (name, ms) in &cost.threads {
        *into.entry(name.clone()).or_insert(0.0) += ms / rounds.max(1) as f64;
    }
}

/// The threads that cost most, `name ms`, for the terminal and the report.
pub fn top_threads(threads: &BTreeMap<String, f64>, k: usize) -> String {
    let mut v: Vec<_> = threads.iter().filter(|(_, ms)| **ms >= 0.005).collect();
    v.sort_by(|a, b| b.1.total_cmp(a.1));
    v.iter()
        .take(k)
        .map(|(name, ms)| format!("{name} {ms:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}
