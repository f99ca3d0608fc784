//! Per-container network counters, read in-process: `/proc/<pid>/net/dev`
//! shows the interfaces of the network namespace `pid` is in, so one read
//! of a file (no exec, no namespace switch) gives every interface of a
//! container from its init's pid. `lo` is left out: traffic a container
//! sends itself is not its network use. The parser is pure ([`parse`]).
//!
//! Why not rtnetlink: measured on this machine (C, -O2, a namespace with
//! `lo` and a veth), one read of the file costs about 21 µs, the same as an
//! `RTM_GETLINK` dump with `IFLA_STATS64` on a socket kept open in the
//! namespace (21 µs), and half of making that socket per read (setns,
//! socket, dump, setns back: 48 µs). The file needs no descriptor kept per
//! container and no thread switched into its namespace.

use std::io;

use thiserror::Error;

/// One interface's totals since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

/// A line of `/proc/<pid>/net/dev` that is not what the kernel writes.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// The interfaces of `pid`'s network namespace but `lo`, with their
/// counters, in the kernel's order.
pub fn read(pid: i32) -> io::Result<Vec<(String, NetCounters)>> {
    let path = format!("/proc/{pid}/net/dev");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))
}

/// The interfaces of a `/proc/net/dev` text but `lo`. The two header lines
/// (the ones with `|`) are skipped; each other line is `name: ` and sixteen
/// counters, receive then transmit, bytes and packets first of each.
pub fn parse(text: &str) -> Result<Vec<(String, NetCounters)>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.contains('|') || line.trim().is_empty() {
            continue;
        }
        let error = |message: String| ParseError {
            line: i + 1,
            message,
        };
        let (name, rest) = line
            .split_once(':')
            .ok_or_else(|| error(format!("no `name:` in {line:?}")))?;
        let name = name.trim();
        let fields = rest
            .split_whitespace()
            .map(str::parse::<u64>)
            .collect::<Result<Vec<u64>, _>>()
            .map_err(|e| error(format!("{name}: {e}")))?;
        if fields.len() < 16 {
            return Err(error(format!("{name}: {} counters, not 16", fields.len())));
        }
        if name != "lo" {
            out.push((
                name.to_string(),
                NetCounters {
                    rx_bytes: fields[0],
                    rx_packets: fields[1],
                    tx_bytes: fields[8],
                    tx_packets: fields[9],
                },
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's, with a veth whose counters run into the name.
    const SAMPLE: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 3737387360  202039    0    0    0     0          0         0 3737387360  202039    0    0    0     0       0          0
  ifb0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0: 328982543   17562    0    0    0     0          0         0  1265529   15716    0    0    0     0       0          0
veth1234567:18446744073709551615 7    1    2    3     4          5         6 42 9    0    0    0     0       0          0
";

    fn counters(rx_bytes: u64, rx_packets: u64, tx_bytes: u64, tx_packets: u64) -> NetCounters {
        NetCounters {
            rx_bytes,
            rx_packets,
            tx_bytes,
            tx_packets,
        }
    }

    #[test]
    fn parses_every_interface_but_lo() {
        assert_eq!(
            parse(SAMPLE).unwrap(),
            vec![
                ("ifb0".to_string(), counters(0, 0, 0, 0)),
                (
                    "eth0".to_string(),
                    counters(328982543, 17562, 1265529, 15716)
                ),
                ("veth1234567".to_string(), counters(u64::MAX, 7, 42, 9)),
            ]
        );
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        let cases = [
            ("garbage\n", 1, "no `name:`"),
            ("  eth0: 1 2 3\n", 1, "3 counters"),
            (
                "x|y\n  eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 -1\n",
                2,
                "eth0",
            ),
        ];
        for (text, line, says) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}");
            assert!(e.message.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn reads_its_own_namespace() {
        let own = read(std::process::id() as i32).unwrap();
        assert!(own.iter().all(|(name, _)| name != "lo"), "{own:?}");
        let missing = read(i32::MAX).unwrap_err();
        assert!(missing.to_string().contains("/proc/2147483647/net/dev"));
    }
}
