//! `GET /v1/stats?name=N`: CPU, memory, pids, network and block I/O of the
//! running containers (or one), read in-process from cgroup files and
//! `/proc/<pid>/net/dev` at the time of the request.

use super::node::Node;
use super::wire::{ApiError, StatsRow};
use crate::api::Handle;
use crate::cgroup::Cgroup;

/// Rows of `name`, or of every container the runtime runs.
pub async fn rows(node: &Node, name: Option<&str>) -> Result<Vec<StatsRow>, ApiError> {
    let handles: Vec<Handle> = match name {
        Some(n) => vec![node.resolve(n)?],
        None => node.containerizer.handles().unwrap_or_default(),
    };
    let mut rows = Vec::new();
    for h in handles {
        if let Some(row) = row(node, &h).await {
            rows.push(row);
        }
    }
    Ok(rows)
}

async fn row(node: &Node, handle: &Handle) -> Option<StatsRow> {
    let m = node.containerizer.metrics(handle).ok()?;
    let read_at_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let net = node.containerizer.network_counters(handle);
    Some(StatsRow {
        name: node.summary(handle).await.name,
        read_at_ns,
        cpu_usage_ns: m.cpu_usage_ns,
        memory_bytes: m.memory_usage_bytes,
        memory_limit_bytes: m.memory_limit_bytes,
        pids: m.pids_current,
        pids_limit: m.pids_limit,
        net_rx_tx: net.map(|n| (n.rx_bytes, n.tx_bytes)),
        block_read_write: block_io(&node.containerizer.cgroup(handle)),
    })
}

/// Bytes read and written, from `io.stat` (v2) or
/// `blkio.throttle.io_service_bytes` (v1).
fn block_io(cgroup: &Cgroup) -> Option<(u64, u64)> {
    match cgroup {
        Cgroup::V2(dir) => Some(parse_io_stat(
            &std::fs::read_to_string(dir.join("io.stat")).ok()?,
        )),
        Cgroup::V1(dirs) => {
            let dir = dirs.get("blkio")?;
            let text = std::fs::read_to_string(dir.join("blkio.throttle.io_service_bytes")).ok()?;
            Some(parse_blkio(&text))
        }
    }
}

/// Sums `rbytes=` and `wbytes=` over the devices of v2's `io.stat` (pure).
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let field = |k: &str| -> u64 {
        text.split_whitespace()
            .filter_map(|kv| kv.strip_prefix(k)?.parse::<u64>().ok())
            .sum()
    };
    (field("rbytes="), field("wbytes="))
}

/// Sums the `Read` and `Write` lines of v1's `io_service_bytes` (pure).
pub fn parse_blkio(text: &str) -> (u64, u64) {
    let sum = |op: &str| -> u64 {
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3 && f[1] == op).then(|| f[2].parse::<u64>().ok())?
            })
            .sum()
    };
    (sum("Read"), sum("Write"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_io_is_summed_over_devices() {
        let v2 = "8:0 rbytes=100 wbytes=20 rios=1 wios=2\n8:16 rbytes=5 wbytes=1 rios=0\n";
        assert_eq!(parse_io_stat(v2), (105, 21));
        let v1 = "8:0 Read 100\n8:0 Write 20\n8:0 Sync 3\n8:16 Read 5\nTotal 125\n";
        assert_eq!(parse_blkio(v1), (105, 20));
    }
}
