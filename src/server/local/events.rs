//! `GET /v1/events?follow&since=T`: the event log (`events.jsonl`, events
//! of file-sourced and undeclared containers; a resource's are Kubernetes
//! Events), one JSON object a line, and with `follow` each new one as it is
//! recorded, woken by inotify on the state directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};

use super::wire::EventRow;
use super::{Body, channel_body};

/// The response body.
pub fn stream(path: PathBuf, since: Option<String>, follow: bool) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let wake = Arc::new(Notify::new());
        let waker = Arc::clone(&wake);
        // Watched before the first read, so nothing recorded between is missed.
        let watcher = match follow {
            true => watch(&path, move || waker.notify_one()),
            false => None,
        };
        let mut last = since.unwrap_or_default();
        loop {
            let text = tokio::fs::read_to_string(&path).await.unwrap_or_default();
            let (out, newest) = newer_than(&text, &last);
            last = newest;
            if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                return;
            }
            if watcher.is_none() {
                return;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tx.closed() => return,
            }
        }
    });
    channel_body(rx)
}

fn watch(path: &Path, wake: impl Fn() + Send + 'static) -> Option<notify::RecommendedWatcher> {
    let mut w = notify::recommended_watcher(move |_: notify::Result<notify::Event>| wake()).ok()?;
    w.watch(path.parent()?, RecursiveMode::NonRecursive).ok()?;
    Some(w)
}

/// The lines of `text` whose event is newer than `last` (RFC 3339 UTC with
/// nanoseconds, which order as strings), and the newest time seen (pure).
pub fn newer_than(text: &str, last: &str) -> (String, String) {
    let mut out = String::new();
    let mut newest = last.to_string();
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<EventRow>(line) else {
            continue;
        };
        if e.time.as_str() > last {
            out.push_str(line);
            out.push('\n');
            if e.time > newest {
                newest = e.time;
            }
        }
    }
    (out, newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_newer_events_pass() {
        let line = |t: &str| {
            format!(
                r#"{{"time":"{t}","handle":"web","type":"Normal","reason":"Started","message":"m"}}"#
            )
        };
        let text = [
            line("2026-01-01T00:00:01.000000000Z"),
            line("2026-01-01T00:00:02.000000000Z"),
        ]
        .join("\n");
        let (out, newest) = newer_than(&text, "2026-01-01T00:00:01.000000000Z");
        assert_eq!(out.lines().count(), 1);
        assert_eq!(newest, "2026-01-01T00:00:02.000000000Z");
        let (out, _) = newer_than(&text, "");
        assert_eq!(out.lines().count(), 2);
    }
}
