//! Request handling: records each request, dispatches by route and method,
//! and serves the read verbs (get, list, watch). Writes are in `writes`.
//!
//! resourceVersion semantics follow the API concepts doc: a list with no
//! resourceVersion (or "0") is served at the current revision; with N and
//! `resourceVersionMatch=Exact` (or a limit without a match, the legacy
//! form) at exactly N, 410 Expired once compacted; `NotOlderThan` waits up
//! to 3s for N, then 504. Continue tokens pin the revision of the first page
//! and expire (410) with compaction. A watch from N replays changes after N,
//! or sends one ERROR event with a 410 Status in a 200 stream when N is
//! compacted, as the watch cache does; a watch with no resourceVersion or
//! "0" starts with synthetic ADDED events.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::controls::RequestRecord;
use super::kinds::Kind;
use super::routes::{Route, Target, parse_query, route};
use super::selectors::{FieldSelector, LabelSelector, parse_field_selector, parse_label_selector};
use super::server::Outage;
use super::status::ApiError;
use super::store::Store;
use super::watch::{WatchSpec, body_stream, bookmark_frame, error_frame, frame};
use super::{Shared, State, discovery, writes};

pub type Body = BoxBody<Bytes, Infallible>;

/// One resource request, parsed.
pub struct Req<'a> {
    pub shared: &'a Shared,
    pub method: Method,
    pub target: Target,
    pub kind: Kind,
    pub query: BTreeMap<String, String>,
    pub body: Bytes,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
}

impl Req<'_> {
    /// The namespace key in the store ("" for cluster-scoped kinds).
    pub fn ns(&self) -> String {
        self.target.namespace.clone().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or_default()
    }

    pub fn status(&self) -> bool {
        self.target.subresource.as_deref() == Some("status")
    }

    /// The field manager: `fieldManager`, else the User-Agent's product
    /// (what the apiserver derives), else "unknown".
    pub fn manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager").filter(|m| !m.is_empty()) {
            return m.clone();
        }
        self.user_agent
            .as_deref()
            .and_then(|ua| ua.split('/').next())
            .filter(|p| !p.is_empty())
            .unwrap_or("unknown")
            .to_string()
    }
}

/// Serves one request.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if let Some(target) = super::nodeproxy::parse(req.uri().path()) {
        return super::nodeproxy::serve(shared, req, target).await;
    }
    let (parts, body) = req.into_parts();
    let query = parse_query(parts.uri.query());
    let path = parts.uri.path().to_string();
    let (route, kind, outage) = shared.peek(|s| {
        let r = route(&path, &s.store);
        let kind = match &r {
            Route::Resource(t) => Some(s.store.kinds[t.kind].clone()),
            _ => None,
        };
        (r, kind, s.outage)
    });
    let header = |h: header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let mut record = RequestRecord::new(&parts.method, &path, &query, &route, kind.as_ref());
    record.content_type = header(header::CONTENT_TYPE);
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Some(r) = super::reviews::answer(&shared.reviews, &parts.method, &path, &body) {
        return r;
    }
    let response = if outage == Outage::ServiceUnavailable {
        error(&ApiError::service_unavailable())
    } else {
        match (route, kind) {
            (Route::Resource(target), Some(kind)) => {
                let req = Req {
                    shared: &shared,
                    method: parts.method.clone(),
                    target,
                    kind,
                    query,
                    body,
                    content_type: header(header::CONTENT_TYPE),
                    user_agent: header(header::USER_AGENT),
                };
                record.field_manager = Some(req.manager());
                resource(&req).await
            }
            (route, _) => {
                shared.peek(|s| discovery::serve(&route, &s.store, &shared.version, &shared.addr))
            }
        }
    };
    record.code = response.status().as_u16();
    shared.with(|s| s.requests.push(record));
    response
}

async fn resource(req: &Req<'_>) -> Response<Body> {
    let has_name = req.target.name.is_some();
    let result = match (&req.method, has_name) {
        (&Method::GET, true) => get(req).map(|v| (200, v)),
        (&Method::GET, false) if is_watch(&req.query) => {
            return watch(req).unwrap_or_else(|e| error(&e));
        }
        (&Method::GET, false) => list(req).await.map(|v| (200, v)),
        (&Method::POST, false) => writes::create(req),
        (&Method::PUT, true) => writes::update(req).map(|v| (200, v)),
        (&Method::PATCH, true) => writes::patch(req),
        (&Method::DELETE, true) => writes::delete(req).map(|v| (200, v)),
        (&Method::DELETE, false) => writes::delete_collection(req, selectors(req)),
        (m, _) => Err(ApiError::method_not_allowed(m.as_str(), &req.kind)),
    };
    match result {
        Ok((code, value)) => json_response(code, &value),
        Err(e) => error(&e),
    }
}

/// `watch=true` or `watch=1`.
pub fn is_watch(query: &BTreeMap<String, String>) -> bool {
    matches!(query.get("watch").map(String::as_str), Some("true" | "1"))
}

fn get(req: &Req) -> Result<Value, ApiError> {
    let (k, ns, name) = (req.target.kind, req.ns(), req.name());
    req.shared
        .peek(|s| s.store.get(k, &ns, name).cloned())
        .ok_or_else(|| ApiError::not_found(&req.kind, name))
}

/// Parses and validates the selectors against the kind's field labels.
pub fn selectors(req: &Req) -> Result<(FieldSelector, LabelSelector), ApiError> {
    let fields = parse_field_selector(req.query.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let labels = parse_label_selector(req.query.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    req.shared.peek(|s| {
        for term in &fields.terms {
            if !field_label_supported(&s.store, &req.kind, req.shared.version.minor, &term.field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {}",
                    term.field
                )));
            }
        }
        Ok((fields, labels))
    })
}

/// Which field labels a kind accepts: metadata.name (and metadata.namespace
/// when namespaced) always; a built-in's own labels; a custom resource's
/// CRD `selectableFields` only from 1.31, where the CustomResourceFieldSelectors
/// gate is on by default (alpha 1.30, beta 1.31, GA 1.32). Before that the
/// CR converter refuses everything else with "field label not supported".
pub fn field_label_supported(store: &Store, kind: &Kind, minor: u32, label: &str) -> bool {
    match label {
        "metadata.name" => true,
        "metadata.namespace" => kind.namespaced,
        _ if !kind.custom => kind.field_labels.iter().any(|l| l == label),
        _ if minor < 31 => false,
        _ => store
            .crd_selectable_fields(kind)
            .unwrap_or_else(|| kind.field_labels.clone())
            .iter()
            .any(|l| l == label),
    }
}

/// Where a list reads.
enum ListAt {
    Current,
    Exact(u64),
    NotOlderThan(u64),
}

fn parse_rv(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{text}\"")))
}

fn list_at(query: &BTreeMap<String, String>) -> Result<ListAt, ApiError> {
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let exact_match = query.get("resourceVersionMatch").map(String::as_str);
    let limited = query.get("limit").is_some_and(|l| l != "0");
    Ok(match (rv, exact_match) {
        ("" | "0", _) => ListAt::Current,
        (n, Some("Exact")) => ListAt::Exact(parse_rv(n)?),
        (n, None) if limited => ListAt::Exact(parse_rv(n)?),
        (n, _) => ListAt::NotOlderThan(parse_rv(n)?),
    })
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent \
list result. You can start a new list without the continue parameter, or use the continue token in \
this response to retrieve the remainder of the results. Continuing with the provided token results in \
an inconsistent list - objects that were created, modified, or deleted between the time the first \
chunk was returned and now may show up in the list.";

/// An opaque continue token: the list's revision and the last key served.
fn encode_continue(rv: u64, last: &str) -> String {
    format!("{rv}:{last}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Option<(u64, String)> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (rv, last) = text.split_once(':')?;
    Some((rv.parse().ok()?, last.to_string()))
}

fn object_key(obj: &Value) -> String {
    let meta = |f: &str| {
        obj.pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    format!("{}/{}", meta("namespace"), meta("name"))
}

async fn list(req: &Req<'_>) -> Result<Value, ApiError> {
    let (fields, labels) = selectors(req)?;
    let limit: usize = req
        .query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let (at, start) = match req.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, last) = decode_continue(token).ok_or_else(|| {
                ApiError::bad_request("continue key is not valid: not a token of this server")
            })?;
            (ListAt::Exact(rv), Some(last))
        }
        None => (list_at(&req.query)?, None),
    };
    if let ListAt::NotOlderThan(n) = at {
        wait_for_rv(req.shared, n).await?;
    }
    let k = req.target.kind;
    let ns = req.target.namespace.clone();
    let (items, list_rv) = req.shared.peek(|s| {
        let current = s.store.resource_version();
        let (pin, list_rv) = match at {
            ListAt::Exact(n) if n > current => {
                return Err(ApiError::too_large_resource_version(n, current));
            }
            ListAt::Exact(n) => (Some(n), n),
            _ => (None, current),
        };
        let items = s
            .store
            .list(k, ns.as_deref(), pin)
            .map_err(|e| match start {
                Some(_) => ApiError::expired(CONTINUE_EXPIRED),
                None => e,
            })?;
        Ok((items, list_rv))
    })?;
    let mut items: Vec<Value> = items
        .into_iter()
        .filter(|o| fields.matches(o) && labels.matches(o))
        .filter(|o| start.as_deref().is_none_or(|s| object_key(o).as_str() > s))
        .collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if limit > 0 && items.len() > limit {
        let remaining = items.len() - limit;
        items.truncate(limit);
        metadata["continue"] = json!(encode_continue(list_rv, &object_key(&items[limit - 1])));
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(json!({
        "kind": format!("{}List", req.kind.kind),
        "apiVersion": req.kind.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}

/// Waits up to 3s (the apiserver's wait for its cache) for revision `n`.
async fn wait_for_rv(shared: &Shared, n: u64) -> Result<(), ApiError> {
    let mut activity = shared.activity.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let current = shared.peek(|s| s.store.resource_version());
        if current >= n {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, activity.changed())
            .await
            .is_err()
        {
            return Err(ApiError::too_large_resource_version(n, current));
        }
    }
}

/// Where a watch starts and what it sends first.
struct WatchStart {
    /// Replay changes after this revision; `None`: start now.
    from: Option<u64>,
    /// Synthetic ADDED events for the current state first.
    initial_events: bool,
    /// `sendInitialEvents=true`: close the initial events with a bookmark.
    initial_end_bookmark: bool,
}

fn watch(req: &Req) -> Result<Response<Body>, ApiError> {
    let (fields, labels) = selectors(req)?;
    let q = |k: &str| req.query.get(k).map(String::as_str);
    let from = match q("resourceVersion").unwrap_or("") {
        "" | "0" => None,
        n => Some(parse_rv(n)?),
    };
    let start = WatchStart {
        from,
        initial_events: q("sendInitialEvents").map_or(from.is_none(), |v| v == "true"),
        initial_end_bookmark: q("sendInitialEvents") == Some("true"),
    };
    let spec = WatchSpec {
        kind: req.target.kind,
        namespace: req.target.namespace.clone(),
        fields,
        labels,
        bookmarks: q("allowWatchBookmarks") == Some("true"),
    };
    let timeout = q("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs);
    let (tx, rx) = mpsc::unbounded_channel();
    req.shared.with(|s| start_watch(s, spec, &start, tx));
    let body = StreamBody::new(body_stream(rx, timeout));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(body))
        .expect("static response parts"))
}

/// Sends the replayed or initial events and registers the watch, under the
/// state lock so that no change slips between the two. sendInitialEvents
/// (WatchList) is served whatever the emulated version; the real feature
/// gate's default differs by release.
fn start_watch(
    s: &mut State,
    spec: WatchSpec,
    start: &WatchStart,
    tx: mpsc::UnboundedSender<Bytes>,
) {
    if let Some(n) = start.from {
        match s.store.changes_since(spec.kind, n) {
            Err(oldest) => {
                s.expired_watches += 1;
                let msg = format!("too old resource version: {n} ({oldest})");
                let _ = tx.send(error_frame(&ApiError::expired(msg)));
                return;
            }
            Ok(changes) if !start.initial_events => {
                for (t, obj) in changes.iter().filter_map(|c| spec.event_for(c)) {
                    let _ = tx.send(frame(t, obj));
                }
            }
            Ok(_) => {}
        }
    }
    if start.initial_events {
        let current = s
            .store
            .list(spec.kind, spec.namespace.as_deref(), None)
            .unwrap_or_default();
        for obj in current.iter().filter(|o| spec.selects(o)) {
            let _ = tx.send(frame("ADDED", obj));
        }
        if start.initial_end_bookmark && spec.bookmarks {
            let rv = s.store.resource_version();
            let _ = tx.send(bookmark_frame(&s.store.kinds[spec.kind], rv, true));
        }
    }
    s.hub.register(spec, tx);
}

/// A JSON response.
pub fn json_response(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .expect("static response parts")
}

/// A `Status` error response. Like the apiserver's response writer, it
/// sends `Retry-After` when the Status carries `details.retryAfterSeconds`.
pub fn error(err: &ApiError) -> Response<Body> {
    let mut response = json_response(err.code, &err.to_status());
    let retry_after = err
        .details
        .as_ref()
        .and_then(|d| d.get("retryAfterSeconds"))
        .and_then(Value::as_u64);
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, seconds.into());
    }
    response
}
