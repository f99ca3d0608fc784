//! The agent's `/metrics`, read over loopback with a bare HTTP/1.0 GET:
//! the one counter the benchmarks need, the CPU it spent on statuses and
//! events (`rundmc_report_cpu_seconds_total`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

const REPORT_CPU: &str = "rundmc_report_cpu_seconds_total";

/// A loopback address nothing listens on now, for an agent's `--metrics-addr`.
pub fn free_loopback() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    l.local_addr().context("reading the bound port")
}

/// The agent's report CPU so far, in seconds.
pub fn report_cpu_seconds(addr: SocketAddr) -> Result<f64> {
    let text = scrape(addr)?;
    value_of(&text, REPORT_CPU).ok_or_else(|| anyhow!("no {REPORT_CPU} at {addr}"))
}

fn scrape(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .with_context(|| format!("reading /metrics from {addr}"))?;
    Ok(text)
}

/// The value of the unlabelled series `name` in a Prometheus text body.
fn value_of(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unlabelled_series_only() {
        let body = "# TYPE x counter\nrundmc_report_cpu_seconds_total 0.125\nrundmc_report_cpu_seconds_totalx 9\n";
        assert_eq!(value_of(body, REPORT_CPU), Some(0.125));
        assert_eq!(value_of("nothing\n", REPORT_CPU), None);
    }
}
