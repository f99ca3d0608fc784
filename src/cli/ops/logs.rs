//! `rundmc logs`: the agent streams a process's CRI records; this splits
//! them back into stdout and stderr (as crictl and podman do), joins
//! partial lines, and prefixes timestamps when asked.

use std::io::Write;
use std::time::{Duration, SystemTime};

use http_body_util::BodyExt;
use rundmc_shim::cri::{Stream, parse_record};

use super::client::{Client, ClientError};
use super::{container_path, escape};

/// `rundmc logs [-f] [--tail N] [--since 10m] [--timestamps] [--previous] [--process ID|NAME] NAME`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The container: a file-sourced container's name, or `namespace/name`.
    pub name: String,
    /// Follow the log as it is written, across rotations, until the process ends.
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// Only lines newer than this: a duration (`10m`, `1h30m`) or an RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<SystemTime>,
    /// Prefix each line with the time the supervisor read it (RFC 3339).
    #[arg(long, short)]
    pub timestamps: bool,
    /// The main process's previous run (after a restart).
    #[arg(long, short)]
    pub previous: bool,
    /// Another process of the container: its id (`describe` lists them), or
    /// a sidecar's or init process's name for its newest run (with
    /// `--previous`, the run before).
    #[arg(long, value_name = "ID")]
    pub process: Option<String>,
}

/// `10m` before now, or an RFC 3339 time.
pub(super) fn parse_since(s: &str) -> Result<SystemTime, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(SystemTime::now()
            .checked_sub(d)
            .unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(s)
        .map_err(|_| format!("{s:?} is neither a duration (10m, 1h) nor an RFC 3339 time"))
}

/// The API path for `args`.
pub fn logs_path(args: &LogsArgs) -> String {
    let mut path = format!(
        "{}/logs?follow={}&previous={}&tail={}",
        container_path(&args.name),
        args.follow,
        args.previous,
        args.tail
    );
    if let Some(t) = args.since {
        let t = t.max(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
        path.push_str(&format!(
            "&since={}",
            escape(&humantime::format_rfc3339_nanos(t).to_string())
        ));
    }
    if let Some(p) = &args.process {
        path.push_str(&format!("&process={}", escape(p)));
    }
    path
}

/// `rundmc logs`.
pub async fn logs(client: &Client, args: &LogsArgs) -> Result<(), ClientError> {
    let mut body = client.get(&logs_path(args)).await?.into_body();
    let mut out = Output::new(args.timestamps);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Protocol {
            path: client.socket().to_owned(),
            message: e.to_string(),
        })?;
        if let Ok(data) = frame.into_data()
            && out.push(&data).is_err()
        {
            return Ok(()); // our reader went away (`| head`)
        }
    }
    let _ = out.flush();
    Ok(())
}

/// Splits records into the two streams.
pub(crate) struct Output {
    timestamps: bool,
    buf: Vec<u8>,
    stdout: std::io::BufWriter<std::io::Stdout>,
    stderr: std::io::BufWriter<std::io::Stderr>,
}

impl Output {
    /// Writing to stdout and stderr.
    pub(crate) fn new(timestamps: bool) -> Self {
        Self {
            timestamps,
            buf: Vec::new(),
            stdout: std::io::BufWriter::with_capacity(256 << 10, std::io::stdout()),
            stderr: std::io::BufWriter::new(std::io::stderr()),
        }
    }

    /// Take a chunk of records; write out every complete one.
    pub(crate) fn push(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let Some(i) = data.iter().position(|b| *b == b'\n') else {
                self.buf.extend_from_slice(data);
                return Ok(());
            };
            self.buf.extend_from_slice(&data[..i]);
            let line = std::mem::take(&mut self.buf);
            self.write(&line)?;
            data = &data[i + 1..];
        }
        let end = data.iter().rposition(|b| *b == b'\n').map_or(0, |e| e + 1);
        for line in data[..end].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            self.write(line)?;
        }
        self.buf.extend_from_slice(&data[end..]);
        self.flush()
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        let Some(r) = parse_record(line) else {
            return Ok(());
        };
        let w: &mut dyn Write = match r.stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        if self.timestamps {
            w.write_all(r.timestamp.as_bytes())?;
            w.write_all(b" ")?;
        }
        w.write_all(r.content)?;
        if !r.partial {
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Write out what is buffered.
    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        self.stdout.flush()?;
        self.stderr.flush()
    }
}
