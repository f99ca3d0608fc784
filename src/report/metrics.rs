//! Metrics: the agent's own counters, and each container's resource usage
//! read from its cgroup (and, for a container with a network of its own,
//! its interfaces' counters from its namespace) at scrape time (nothing is
//! collected while nobody scrapes). Exposed in Prometheus text format by the server room.

use std::fmt;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cgroup::Metrics as Usage;
use crate::network::counters::NetCounters;

/// `result` label of reconciles.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// `handle` label of per-container series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandleLabel {
    handle: String,
}

/// The agent's own metrics.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    /// Reconciles by result.
    pub reconciles: Family<ResultLabel, Counter>,
    /// How long reconciles take.
    pub reconcile_seconds: Histogram,
    /// Main-process restarts after exits.
    pub restarts: Counter,
    /// CPU seconds the agent's threads spent computing and writing
    /// statuses and events (see [`charge`]).
    pub report_cpu: ReportCpu,
}

/// A counter of CPU seconds.
pub type ReportCpu = Counter<f64, AtomicU64>;

/// The CPU the calling thread has used so far, in seconds (its own CPU
/// clock); 0 if the clock cannot be read.
pub fn thread_cpu_seconds() -> f64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

/// Runs `f` and adds the CPU the calling thread spent in it to `cpu`.
/// `f` must not wait for other tasks (it is synchronous), so that the
/// thread's clock counts nothing but `f`.
pub fn charge<T>(cpu: &ReportCpu, f: impl FnOnce() -> T) -> T {
    let start = thread_cpu_seconds();
    let out = f();
    cpu.inc_by((thread_cpu_seconds() - start).max(0.0));
    out
}

impl AgentMetrics {
    /// Reconciles so far, whatever their result.
    pub fn reconciles_total(&self) -> u64 {
        ["ok", "error"]
            .iter()
            .map(|&result| self.reconciles.get_or_create(&ResultLabel { result }).get())
            .sum()
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            restarts: Counter::default(),
            report_cpu: ReportCpu::default(),
        }
    }
}

/// A per-container series: name, help, and how to read it from usage.
type Series<T, U = Usage> = (&'static str, &'static str, fn(&U) -> T);

/// One container's usage: its cgroup's, and its network's (summed over its
/// interfaces) when it has one of its own.
pub type ContainerUsage = (String, Usage, Option<NetCounters>);

/// Reads every container's usage on demand.
pub type UsageSource = Box<dyn Fn() -> Vec<ContainerUsage> + Send + Sync>;

/// Per-container usage, collected at scrape time.
pub struct ContainerCollector {
    source: UsageSource,
}

impl fmt::Debug for ContainerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContainerCollector")
    }
}

impl ContainerCollector {
    /// A collector over `source`.
    pub fn new(source: UsageSource) -> Self {
        Self { source }
    }
}

impl Collector for ContainerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let usage = (self.source)();
        let counters: [Series<f64>; 2] = [
            (
                "rundmc_container_cpu_usage_seconds",
                "CPU time used by the container",
                |u| u.cpu_usage_ns as f64 / 1e9,
            ),
            (
                "rundmc_container_oom_kills",
                "OOM kills in the container",
                |u| u.oom_kills as f64,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0.0).metric_type(),
            )?;
            for (handle, u, _) in &usage {
                ConstCounter::new(value(u)).encode(family.encode_family(&HandleLabel {
                    handle: handle.clone(),
                })?)?;
            }
        }
        encode_network(&mut encoder, &usage)?;
        let gauges: [Series<Option<f64>>; 4] = [
            (
                "rundmc_container_memory_usage_bytes",
                "Memory in use",
                |u| Some(u.memory_usage_bytes as f64),
            ),
            ("rundmc_container_memory_limit_bytes", "Memory limit", |u| {
                u.memory_limit_bytes.map(|b| b as f64)
            }),
            ("rundmc_container_pids", "Tasks in the container", |u| {
                Some(u.pids_current as f64)
            }),
            ("rundmc_container_pids_limit", "Task limit", |u| {
                u.pids_limit.map(|p| p as f64)
            }),
        ];
        for (name, help, value) in gauges {
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstGauge::new(0.0).metric_type())?;
            for (handle, u, _) in &usage {
                if let Some(v) = value(u) {
                    ConstGauge::new(v).encode(family.encode_family(&HandleLabel {
                        handle: handle.clone(),
                    })?)?;
                }
            }
        }
        Ok(())
    }
}

/// Network counters, as cAdvisor names them (summed over interfaces).
fn encode_network(
    encoder: &mut DescriptorEncoder,
    usage: &[ContainerUsage],
) -> Result<(), fmt::Error> {
    let counters: [Series<u64, NetCounters>; 4] = [
        (
            "rundmc_container_network_receive_bytes",
            "Bytes received",
            |n| n.rx_bytes,
        ),
        (
            "rundmc_container_network_receive_packets",
            "Packets received",
            |n| n.rx_packets,
        ),
        (
            "rundmc_container_network_transmit_bytes",
            "Bytes sent",
            |n| n.tx_bytes,
        ),
        (
            "rundmc_container_network_transmit_packets",
            "Packets sent",
            |n| n.tx_packets,
        ),
    ];
    for (name, help, value) in counters {
        let mut family =
            encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
        for (handle, _, net) in usage {
            if let Some(n) = net {
                ConstCounter::new(value(n)).encode(family.encode_family(&HandleLabel {
                    handle: handle.clone(),
                })?)?;
            }
        }
    }
    Ok(())
}

/// A registry holding the agent's metrics and the container collector.
pub fn registry(agent: &AgentMetrics, containers: ContainerCollector) -> Registry {
    let mut r = Registry::default();
    r.register(
        "rundmc_reconciles",
        "Reconciles by result",
        agent.reconciles.clone(),
    );
    r.register(
        "rundmc_reconcile_duration_seconds",
        "Time per reconcile",
        agent.reconcile_seconds.clone(),
    );
    r.register(
        "rundmc_main_restarts",
        "Main-process restarts after exits",
        agent.restarts.clone(),
    );
    r.register(
        "rundmc_report_cpu_seconds",
        "CPU the agent spent computing and writing statuses and events (status files, the event log; not the API server's round trips)",
        agent.report_cpu.clone(),
    );
    r.register_collector(Box::new(containers));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charge_counts_the_cpu_its_closure_spent() {
        let cpu = ReportCpu::default();
        let start = thread_cpu_seconds();
        let spun = charge(&cpu, || {
            let mut x = 0u64;
            while thread_cpu_seconds() - start < 0.005 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            x
        });
        assert!(spun > 0);
        // Nearly all of the 5 ms spun (the clock was first read just before `charge`).
        assert!(cpu.get() >= 0.004, "{}", cpu.get());
        assert!(cpu.get() < 1.0, "{}", cpu.get());
    }

    #[test]
    fn renders_agent_and_container_metrics() {
        let agent = AgentMetrics::default();
        agent
            .reconciles
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
        agent.restarts.inc();
        agent.report_cpu.inc_by(0.25);
        let usage = Usage {
            cpu_usage_ns: 1_500_000_000,
            memory_usage_bytes: 4096,
            memory_limit_bytes: Some(64 << 20),
            pids_current: 3,
            pids_limit: None,
            oom_kills: 1,
        };
        let net = NetCounters {
            rx_bytes: 1000,
            rx_packets: 10,
            tx_bytes: 500,
            tx_packets: 5,
        };
        let collector = ContainerCollector::new(Box::new(move || {
            vec![
                ("web".to_string(), usage.clone(), Some(net)),
                ("idle".to_string(), usage.clone(), None),
            ]
        }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry(&agent, collector)).unwrap();
        for line in [
            "rundmc_reconciles_total{result=\"ok\"} 1",
            "rundmc_main_restarts_total 1",
            "rundmc_report_cpu_seconds_total 0.25",
            "rundmc_container_cpu_usage_seconds_total{handle=\"web\"} 1.5",
            "rundmc_container_memory_limit_bytes{handle=\"web\"} 67108864",
            "rundmc_container_pids{handle=\"web\"} 3",
            "rundmc_container_oom_kills_total{handle=\"web\"} 1",
            "rundmc_container_network_receive_bytes_total{handle=\"web\"} 1000",
            "rundmc_container_network_transmit_packets_total{handle=\"web\"} 5",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains("rundmc_container_pids_limit{"),
            "no limit, no series"
        );
        assert!(
            !text.contains("network_receive_bytes_total{handle=\"idle\"}"),
            "no network of its own, no series"
        );
    }
}
