//! `GET /v1/containers/{name}/logs`: a process's CRI log records, as the
//! supervisor wrote them (one `<time> <stream> <P|F> <content>` line each),
//! optionally the last `tail` of them, only those from `since` on, and with
//! `follow` as they are written, across rotations, until the process ends.
//! The client splits the streams and drops the framing.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rundmc_shim::cri::format_record;
use tokio::sync::mpsc;

use super::node::Node;
use super::wire::{ApiError, ErrorKind};
use super::{Body, flag};
use crate::api::Handle;
use crate::process::{FollowFrom, Follower};

/// Bytes read from a log file at a time.
const CHUNK: usize = 256 << 10;

/// What the request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Follow new records until the process ends.
    pub follow: bool,
    /// Only the last this many records.
    pub tail: Option<usize>,
    /// Only records at or after this RFC 3339 time (UTC, nanoseconds).
    pub since: Option<String>,
    /// The main process's previous run.
    pub previous: bool,
    /// Another process of the container, by id, or a sidecar's or init
    /// process's name (its newest run).
    pub process: Option<String>,
}

impl LogQuery {
    /// From the query string.
    pub fn parse(q: &std::collections::HashMap<String, String>) -> Result<Self, ApiError> {
        let tail = match q.get("tail") {
            Some(t) => Some(t.parse::<i64>().map_err(|_| {
                ApiError::new(
                    ErrorKind::BadRequest,
                    format!("tail: {t:?} is not a number"),
                )
            })?)
            .and_then(|n| usize::try_from(n).ok()),
            None => None,
        };
        Ok(LogQuery {
            follow: flag(q, "follow"),
            tail,
            since: q.get("since").cloned().filter(|s| !s.is_empty()),
            previous: flag(q, "previous"),
            process: q.get("process").cloned().filter(|s| !s.is_empty()),
        })
    }
}

/// The directory of the process whose log `q` asks for.
pub fn process_dir(
    node: &Node,
    name: &str,
    handle: &Handle,
    q: &LogQuery,
) -> Result<PathBuf, ApiError> {
    let id = match &q.process {
        Some(id) => by_name(node, handle, id, q.previous).unwrap_or_else(|| id.clone()),
        None => node.main_run(handle, q.previous).ok_or_else(|| {
            let what = if q.previous {
                "no previous run of its main process"
            } else {
                "no main process yet"
            };
            ApiError::new(ErrorKind::NotFound, format!("{name} has {what}"))
        })?,
    };
    let valid = Handle::new(id.as_str()).is_ok();
    let dir = node.containerizer.process_dir(handle, &id);
    match valid && dir.is_dir() {
        true => Ok(dir),
        false => Err(ApiError::new(
            ErrorKind::NotFound,
            format!("{name} has no process {id:?}"),
        )),
    }
}

/// `process` as a name (`shipper` for a sidecar's or init process's
/// runs, as `kubectl logs -c` takes a container's name) when no process
/// has it as its id: the newest run of that name, or the one before with
/// `previous`.
fn by_name(node: &Node, handle: &Handle, process: &str, previous: bool) -> Option<String> {
    if node.containerizer.process_dir(handle, process).is_dir() {
        return None;
    }
    let dir = node.containerizer.depot_dir(handle).join("processes");
    let ids: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    run_of(&ids, process, previous)
}

/// Of the process ids `ids`, the newest run of sidecar or init process
/// `name` (`sidecar-<name>-<n>`, `init-<name>-<n>`), or the one before
/// with `previous` (pure).
pub fn run_of(ids: &[String], name: &str, previous: bool) -> Option<String> {
    let mut runs: Vec<(u64, &String)> = ids
        .iter()
        .filter_map(|id| {
            let rest = id
                .strip_prefix("sidecar-")
                .or_else(|| id.strip_prefix("init-"))?;
            let (n, number) = rest.rsplit_once('-')?;
            (n == name).then_some((number.parse().ok()?, id))
        })
        .collect();
    runs.sort();
    let skip = usize::from(previous);
    runs.iter().rev().nth(skip).map(|(_, id)| (*id).clone())
}

/// The response body: the records, streamed from a task of their own.
pub fn stream(dir: PathBuf, q: LogQuery) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    match q.follow {
        true => {
            tokio::spawn(follow(dir, q, tx));
        }
        false => {
            tokio::task::spawn_blocking(move || read_kept(&dir, &q, &tx));
        }
    }
    super::channel_body(rx)
}

/// Every kept record (filtered), in chunks.
fn read_kept(dir: &Path, q: &LogQuery, tx: &mpsc::Sender<Bytes>) {
    let Ok(files) = open_all(dir) else { return };
    if q.tail.is_none() && q.since.is_none() {
        // The whole log: raw bytes, no parsing (records never span files).
        for mut f in files {
            let mut buf = vec![0u8; CHUNK];
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 || tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                    break;
                }
            }
        }
        return;
    }
    let mut all = Vec::new();
    for mut f in files {
        let _ = f.read_to_end(&mut all);
    }
    let lines = select(&all, q.tail, q.since.as_deref());
    for chunk in lines.chunks(4096) {
        let mut out = Vec::new();
        for l in chunk {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        if tx.blocking_send(Bytes::from(out)).is_err() {
            return;
        }
    }
}

/// Every log file of `dir`, opened before any is read, so that a rotation
/// meanwhile neither loses nor repeats one.
fn open_all(dir: &Path) -> Result<Vec<File>, std::io::Error> {
    let paths = crate::process::logs::kept_files(dir).map_err(std::io::Error::other)?;
    Ok(paths.iter().filter_map(|p| File::open(p).ok()).collect())
}

/// The complete lines of `all` at or after `since`, the last `tail` of them (pure).
pub fn select<'a>(all: &'a [u8], tail: Option<usize>, since: Option<&str>) -> Vec<&'a [u8]> {
    let mut lines: Vec<&[u8]> = all
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter(|l| since.is_none_or(|s| at_or_after(l, s)))
        .collect();
    if let Some(n) = tail {
        let cut = lines.len().saturating_sub(n);
        lines.drain(..cut);
    }
    lines
}

/// Whether the record `line` is at or after `since`: both are RFC 3339
/// UTC with nine fractional digits, which order as strings.
fn at_or_after(line: &[u8], since: &str) -> bool {
    let ts = line.split(|b| *b == b' ').next().unwrap_or_default();
    ts >= since.as_bytes()
}

/// Follow the log; the first `skip` records are the ones `tail` leaves out.
async fn follow(dir: PathBuf, q: LogQuery, tx: mpsc::Sender<Bytes>) {
    let skip = match q.tail {
        Some(n) => count_records(&dir).saturating_sub(n),
        None => 0,
    };
    let Ok(mut follower) = Follower::new(&dir, FollowFrom::Start) else {
        return;
    };
    let mut seen = 0usize;
    while let Some(Ok(line)) = follower.next().await {
        seen += 1;
        if seen <= skip
            || q.since
                .as_deref()
                .is_some_and(|s| line.timestamp.as_str() < s)
        {
            continue;
        }
        let mut out = Vec::with_capacity(line.content.len() + 48);
        format_record(
            &mut out,
            &line.timestamp,
            line.stream,
            line.partial,
            &line.content,
        );
        if tx.send(Bytes::from(out)).await.is_err() {
            return;
        }
    }
}

fn count_records(dir: &Path) -> usize {
    crate::process::logs::read_all(dir)
        .map(|l| l.len())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_sidecars_name_is_its_newest_run() {
        let ids: Vec<String> = [
            "main-1",
            "sidecar-shipper-1",
            "sidecar-shipper-10",
            "sidecar-shipper-9",
            "sidecar-ship-3",
            "init-setup-1",
            "exec-4",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            run_of(&ids, "shipper", false).as_deref(),
            Some("sidecar-shipper-10")
        );
        assert_eq!(
            run_of(&ids, "shipper", true).as_deref(),
            Some("sidecar-shipper-9")
        );
        assert_eq!(
            run_of(&ids, "setup", false).as_deref(),
            Some("init-setup-1")
        );
        assert_eq!(run_of(&ids, "setup", true), None);
        assert_eq!(run_of(&ids, "nobody", false), None);
    }
    use super::*;

    #[test]
    fn selects_the_tail_since_a_time() {
        let log = b"2026-01-01T00:00:01.000000000Z stdout F a\n\
2026-01-01T00:00:02.000000000Z stderr F b\n\
2026-01-01T00:00:03.000000000Z stdout F c\n";
        let got = |tail, since| {
            select(log, tail, since)
                .iter()
                .map(|l| l[l.len() - 1] as char)
                .collect::<String>()
        };
        assert_eq!(got(None, None), "abc");
        assert_eq!(got(Some(2), None), "bc");
        assert_eq!(got(Some(0), None), "");
        assert_eq!(got(None, Some("2026-01-01T00:00:02.000000000Z")), "bc");
        assert_eq!(got(Some(1), Some("2026-01-01T00:00:02.000000000Z")), "c");
    }
}
