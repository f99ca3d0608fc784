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
        block_read_write: block_io(&node.containerizer.cgroup_everywhere(handle)),
    })
}

/// Bytes read and written, from `io.stat` (v2) or
/// `blkio.throttle.io_service_bytes` (v1). Where the v1 file counts nothing
/// (this machine's 6.18 kernel counts only cgroups with a throttle limit),
/// the container's processes' own counters stand in: `/proc/<pid>/io`,
/// which includes the children each has reaped.
fn block_io(cgroup: &Cgroup) -> Option<(u64, u64)> {
    match cgroup {
        Cgroup::V2(dir) => Some(parse_io_stat(
            &std::fs::read_to_string(dir.join("io.stat")).ok()?,
        )),
        Cgroup::V1(dirs) => {
            // Keyed by controller, or by the root of a hierarchy rundmc
            // does not read (`/sys/fs/cgroup/blkio`, or a joint mount).
            let blkio = |key: &String| {
                let name = std::path::Path::new(key).file_name();
                name.and_then(|n| n.to_str())
                    .is_some_and(|n| n.split(',').any(|c| c == "blkio"))
            };
            let counted = dirs
                .iter()
                .find(|(key, _)| blkio(key))
                .and_then(|(_, dir)| {
                    std::fs::read_to_string(dir.join("blkio.throttle.io_service_bytes")).ok()
                })
                .map(|text| parse_blkio(&text))
                .filter(|&(r, w)| r + w > 0);
            counted.or_else(|| processes_io(cgroup))
        }
    }
}

/// The sum of `/proc/<pid>/io` over the cgroup's processes.
fn processes_io(cgroup: &Cgroup) -> Option<(u64, u64)> {
    let pids = cgroup.procs().ok()?;
    let sum = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/io")).ok())
        .map(|text| parse_proc_io(&text))
        .fold((0, 0), |(r, w), (a, b)| (r + a, w + b));
    Some(sum)
}

/// `read_bytes` and `write_bytes` of a `/proc/<pid>/io` (pure): what the
/// process caused to be read from and written to storage.
pub fn parse_proc_io(text: &str) -> (u64, u64) {
    let field = |k: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("read_bytes:"), field("write_bytes:"))
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
        let proc_io = "rchar: 9\nwchar: 8\nsyscr: 1\nsyscw: 1\nread_bytes: 4096\nwrite_bytes: 512\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_proc_io(proc_io), (4096, 512));
    }
}
