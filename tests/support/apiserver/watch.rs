//! Watches: the registry of open watch streams, fan-out of committed changes
//! to them, and the newline-delimited JSON frames of the watch protocol
//! (`{"type":"ADDED","object":{...}}`, BOOKMARK, ERROR).
//!
//! As the apiserver's watch cache does, a MODIFIED change is seen through
//! each watch's selectors: an object that starts matching arrives as ADDED,
//! one that stops matching as DELETED.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::kinds::Kind;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Change, EventType};

/// What one watch asked for.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub kind: usize,
    pub namespace: Option<String>,
    pub fields: FieldSelector,
    pub labels: LabelSelector,
    pub bookmarks: bool,
}

impl WatchSpec {
    /// Whether an object passes this watch's namespace and selectors.
    pub fn selects(&self, obj: &Value) -> bool {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        self.namespace.as_deref().is_none_or(|want| want == ns)
            && self.fields.matches(obj)
            && self.labels.matches(obj)
    }

    /// The event this watch sees for a change, if any.
    pub fn event_for<'c>(&self, change: &'c Change) -> Option<(&'static str, &'c Value)> {
        if change.key.0 != self.kind {
            return None;
        }
        let now = self.selects(&change.object);
        let before = change.prev.as_ref().is_some_and(|p| self.selects(p));
        match change.event {
            EventType::Added => now.then_some(("ADDED", &change.object)),
            EventType::Deleted => (now || before).then_some(("DELETED", &change.object)),
            EventType::Modified => match (before, now) {
                (true, true) => Some(("MODIFIED", &change.object)),
                (false, true) => Some(("ADDED", &change.object)),
                (true, false) => Some(("DELETED", &change.object)),
                (false, false) => None,
            },
        }
    }
}

/// One frame of the watch stream.
pub fn frame(event_type: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": event_type, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// An ERROR frame carrying a Status, e.g. 410 Expired.
pub fn error_frame(err: &ApiError) -> Bytes {
    frame("ERROR", &err.to_status())
}

/// A BOOKMARK frame: only kind, apiVersion and metadata.resourceVersion,
/// plus the `k8s.io/initial-events-end` annotation closing initial events.
pub fn bookmark_frame(kind: &Kind, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    frame(
        "BOOKMARK",
        &json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": metadata}),
    )
}

struct Registered {
    spec: WatchSpec,
    tx: mpsc::UnboundedSender<Bytes>,
}

/// The open watches.
#[derive(Default)]
pub struct WatchHub {
    next: u64,
    watchers: BTreeMap<u64, Registered>,
}

impl WatchHub {
    /// Adds a watch; frames sent to `tx` go out on its stream.
    pub fn register(&mut self, spec: WatchSpec, tx: mpsc::UnboundedSender<Bytes>) {
        self.next += 1;
        self.watchers.insert(self.next, Registered { spec, tx });
    }

    /// Sends a committed change to every watch that sees it.
    pub fn dispatch(&mut self, change: &Change) {
        self.watchers.retain(|_, w| match w.spec.event_for(change) {
            Some((t, obj)) => w.tx.send(frame(t, obj)).is_ok(),
            None => !w.tx.is_closed(),
        });
    }

    /// Ends every watch stream cleanly, as an apiserver restart or watch
    /// timeout does; clients resume from their last resourceVersion.
    pub fn cut_all(&mut self) -> usize {
        let open = self.open();
        self.watchers.clear();
        open
    }

    /// Sends a BOOKMARK at `rv` to every watch that allowed bookmarks.
    pub fn bookmark_all(&mut self, kinds: &[Kind], rv: u64) {
        for w in self.watchers.values().filter(|w| w.spec.bookmarks) {
            let _ = w.tx.send(bookmark_frame(&kinds[w.spec.kind], rv, false));
        }
    }

    /// Watches whose client is still connected.
    pub fn open(&self) -> usize {
        self.watchers.values().filter(|w| !w.tx.is_closed()).count()
    }
}

/// The response body of a watch: frames until the hub drops the sender or
/// `timeoutSeconds` passes (then the stream ends cleanly, as the real
/// server's does).
pub fn body_stream(
    rx: mpsc::UnboundedReceiver<Bytes>,
    timeout: Option<Duration>,
) -> impl Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    let deadline = timeout.map(|t| Instant::now() + t);
    futures::stream::unfold((rx, deadline), |(mut rx, deadline)| async move {
        let next = match deadline {
            Some(at) => tokio::time::timeout_at(at, rx.recv()).await.ok().flatten(),
            None => rx.recv().await,
        };
        next.map(|bytes| (Ok(Frame::data(bytes)), (rx, deadline)))
    })
}
