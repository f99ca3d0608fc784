//! `rundmc stats`, `rundmc events` and `rundmc attach`: what a container
//! uses, what happened, and its main process's live output.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use super::client::{Client, ClientError};
use super::{container_path, escape, show};
use crate::server::local::wire::{EventRow, STREAM_PROTOCOL, StatsRow};

/// `rundmc stats [NAME] [--no-stream]`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// One container (default: every running one).
    pub name: Option<String>,
    /// Print once and exit, instead of refreshing every second.
    #[arg(long)]
    pub no_stream: bool,
}

/// `rundmc events [-f] [--since 10m]`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Go on printing events as they happen.
    #[arg(long, short)]
    pub follow: bool,
    /// Only events newer than this: a duration (`10m`) or an RFC 3339 time.
    #[arg(long, value_parser = super::logs::parse_since)]
    pub since: Option<SystemTime>,
    /// One JSON object a line.
    #[arg(long)]
    pub json: bool,
}

/// `rundmc attach [-i] NAME`.
#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// Pass stdin to the main process (as `kubectl attach -i`); its spec
    /// must say `stdin: true`. This stdin's end, or Ctrl-C, detaches: the
    /// process runs on, and reads end of file only under `stdinOnce`.
    #[arg(long = "stdin", short = 'i')]
    pub stdin: bool,
    /// The container: a file-sourced container's name, or `namespace/name`.
    pub name: String,
}

fn failed(client: &Client, e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol {
        path: client.socket().to_owned(),
        message: e.to_string(),
    }
}

/// `rundmc stats`.
pub async fn stats(client: &Client, args: &StatsArgs) -> Result<(), ClientError> {
    let path = match &args.name {
        Some(n) => format!("/v1/stats?name={}", escape(n)),
        None => "/v1/stats".to_string(),
    };
    let mut before: Vec<StatsRow> = client.get_json(&path).await?;
    let tty = std::io::stdout().is_terminal();
    loop {
        tokio::time::sleep(Duration::from_millis(if args.no_stream {
            500
        } else {
            1000
        }))
        .await;
        let now: Vec<StatsRow> = client.get_json(&path).await?;
        let text = stats_table(&before, &now);
        let mut out = std::io::stdout();
        let clear = if tty && !args.no_stream {
            "\x1b[2J\x1b[H"
        } else {
            ""
        };
        if write!(out, "{clear}{text}")
            .and_then(|()| out.flush())
            .is_err()
            || args.no_stream
        {
            return Ok(());
        }
        before = now;
    }
}

/// The stats table, CPU % from the growth between two reads (pure).
pub fn stats_table(before: &[StatsRow], now: &[StatsRow]) -> String {
    let prev: HashMap<&str, &StatsRow> = before.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut rows = vec![
        [
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "PIDS",
            "NET I/O",
            "BLOCK I/O",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in now {
        let cpu = prev.get(r.name.as_str()).map_or(0.0, |p| {
            let cpu = r.cpu_usage_ns.saturating_sub(p.cpu_usage_ns) as f64;
            let wall = r.read_at_ns.saturating_sub(p.read_at_ns).max(1) as f64;
            cpu / wall * 100.0
        });
        let limit = r.memory_limit_bytes.map_or("-".into(), bytes);
        let mem_pct = r.memory_limit_bytes.map_or("-".into(), |l| {
            format!("{:.2}%", r.memory_bytes as f64 / l.max(1) as f64 * 100.0)
        });
        let pair = |p: Option<(u64, u64)>| {
            p.map_or("-".into(), |(a, b)| format!("{} / {}", bytes(a), bytes(b)))
        };
        rows.push(vec![
            r.name.clone(),
            format!("{cpu:.2}%"),
            format!("{} / {limit}", bytes(r.memory_bytes)),
            mem_pct,
            r.pids.to_string(),
            pair(r.net_rx_tx),
            pair(r.block_read_write),
        ]);
    }
    show::table(&rows)
}

/// A byte count in binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    match u {
        0 => format!("{n}B"),
        _ => format!("{v:.1}{}", UNITS[u]),
    }
}

/// `rundmc events`.
pub async fn events(client: &Client, args: &EventsArgs) -> Result<(), ClientError> {
    let mut path = format!("/v1/events?follow={}", args.follow);
    if let Some(t) = args.since {
        path.push_str(&format!(
            "&since={}",
            escape(&humantime::format_rfc3339_nanos(t).to_string())
        ));
    }
    let mut body = client.get(&path).await?.into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failed(client, e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |e| e + 1);
        let mut out = std::io::stdout().lock();
        for line in buf[..end].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let text = match (args.json, serde_json::from_slice::<EventRow>(line)) {
                (false, Ok(e)) => format!(
                    "{}  {:<7}  {:<16}  {}: {}\n",
                    e.time, e.type_, e.reason, e.handle, e.message
                ),
                _ => format!("{}\n", String::from_utf8_lossy(line)),
            };
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return Ok(());
            }
        }
        buf.drain(..end);
    }
    Ok(())
}

/// The attach request's query: `?stdin=true` with `-i` (pure).
pub fn attach_query(args: &AttachArgs) -> &'static str {
    match args.stdin {
        true => "?stdin=true",
        false => "",
    }
}

/// `rundmc attach`: the main process's exit code once it ends.
pub async fn attach(client: &Client, args: &AttachArgs) -> Result<i32, ClientError> {
    let query = attach_query(args);
    let req = Request::post(format!("{}/attach{query}", container_path(&args.name)))
        .header(hyper::header::HOST, "rundmc")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, STREAM_PROTOCOL)
        .body(Full::new(Bytes::new()))
        .map_err(|e| failed(client, e))?;
    let resp = client.send(req).await?;
    let io = hyper::upgrade::on(resp)
        .await
        .map_err(|e| failed(client, e))?;
    let status = super::exec::relay(TokioIo::new(io), args.stdin, false)
        .await
        .map_err(|e| failed(client, e))?;
    Ok(status.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_usage_growth_over_time() {
        let row = |cpu, at| StatsRow {
            name: "web".into(),
            read_at_ns: at,
            cpu_usage_ns: cpu,
            memory_bytes: 512 << 20,
            memory_limit_bytes: Some(1 << 30),
            pids: 3,
            ..StatsRow::default()
        };
        let text = stats_table(&[row(0, 0)], &[row(500_000_000, 1_000_000_000)]);
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("web"), "{text}");
        assert!(
            line.contains("50.00%")
                && line.contains("512.0MiB / 1.0GiB")
                && line.contains("50.00%"),
            "{text}"
        );
        assert_eq!(bytes(1023), "1023B");
    }
}
