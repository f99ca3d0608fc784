//! How the verbs print: aligned tables, kubectl-style descriptions, YAML
//! and JSON. Pure: the caller says whether to colour and what time it is.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use crate::server::local::wire::{Detail, Summary};

/// Whether to colour output: only on a terminal, and never with `NO_COLOR`.
pub fn use_colour(is_tty: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_tty && no_color.is_none_or(|v| v.is_empty())
}

/// Columns padded to their widest cell, two spaces apart.
pub fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// An age the way kubectl prints one: `42s`, `5m`, `3h`, `2d`.
pub fn age(created: Option<&str>, now: SystemTime) -> String {
    let Some(t) = created.and_then(|c| humantime::parse_rfc3339_weak(c).ok()) else {
        return "-".to_string();
    };
    let secs = now.duration_since(t).unwrap_or(Duration::ZERO).as_secs();
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A phase, coloured when asked.
fn phase(p: &str, colour: bool) -> String {
    let code = match p {
        "Running" | "Succeeded" => "32",
        "Failed" | "Invalid" => "31",
        "Pending" | "Creating" | "Terminating" => "33",
        _ => return p.to_string(),
    };
    match colour {
        true => format!("\x1b[{code}m{p}\x1b[0m"),
        false => p.to_string(),
    }
}

fn ready(r: Option<bool>) -> String {
    match r {
        Some(true) => "True".into(),
        Some(false) => "False".into(),
        None => "-".into(),
    }
}

/// `rundmc ps` as a table; `wide` adds the handle, source and image.
pub fn ps_table(rows: &[Summary], wide: bool, colour: bool, now: SystemTime) -> String {
    let mut header: Vec<String> = ["NAME", "PHASE", "READY", "RESTARTS", "AGE", "IP"]
        .map(String::from)
        .to_vec();
    if wide {
        header.extend(["HANDLE", "SOURCE", "IMAGE"].map(String::from));
    }
    let mut out = vec![header];
    for r in rows {
        let mut row = vec![
            r.name.clone(),
            phase(&r.phase, false),
            ready(r.ready),
            r.restarts.to_string(),
            age(r.created.as_deref(), now),
            r.ip.clone().unwrap_or_else(|| "-".into()),
        ];
        if wide {
            row.extend([r.handle.clone(), r.source.clone(), r.image.clone()]);
        }
        out.push(row);
    }
    let text = table(&out);
    // Coloured after aligning, so escape codes take no width.
    match colour {
        false => text,
        true => rows.iter().fold(text, |t, r| {
            t.replacen(
                &format!("  {}  ", r.phase),
                &format!("  {}  ", phase(&r.phase, true)),
                1,
            )
        }),
    }
}

/// A resource document for `get -o yaml|json`: what `kubectl apply` takes,
/// with the status beside.
pub fn resource(d: &Detail) -> serde_json::Value {
    let (namespace, name) = match d.summary.name.split_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, d.summary.name.as_str()),
    };
    let mut metadata = serde_json::json!({ "name": name });
    if let Some(ns) = namespace {
        metadata["namespace"] = ns.into();
    }
    serde_json::json!({
        "apiVersion": "rundmc.io/v1alpha1",
        "kind": "Container",
        "metadata": metadata,
        "spec": d.spec,
        "status": d.status,
    })
}

/// `rundmc describe`: kubectl-style sections.
pub fn describe(d: &Detail, now: SystemTime) -> String {
    let s = &d.summary;
    let mut out = String::new();
    let mut field = |k: &str, v: &str| {
        let _ = writeln!(out, "{:<14}{v}", format!("{k}:"));
    };
    field("Name", &s.name);
    field("Handle", &s.handle);
    field("Source", &s.source);
    field("Image", &s.image);
    field("Phase", &s.phase);
    field("Ready", &ready(s.ready));
    field("Restarts", &s.restarts.to_string());
    let created = s.created.clone().unwrap_or_else(|| "-".into());
    field(
        "Created",
        &format!("{created} ({} ago)", age(s.created.as_deref(), now)),
    );
    field("IP", s.ip.as_deref().unwrap_or("-"));
    let runtime = match (&d.runtime_status, d.init_pid) {
        (Some(st), Some(pid)) => format!("{st} (init pid {pid})"),
        (Some(st), None) => st.clone(),
        _ => "-".into(),
    };
    field("Runtime", &runtime);
    if let Some(e) = &d.error {
        field("Error", e);
    }
    if let Some(m) = d.status.as_ref().and_then(|s| s.message.as_deref()) {
        field("Message", m);
    }
    section(&mut out, "Spec", &indent(&yaml(&d.spec)));
    let conditions = d
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut rows = vec![
        ["TYPE", "STATUS", "REASON", "MESSAGE"]
            .map(String::from)
            .to_vec(),
    ];
    rows.extend(conditions.iter().map(|c| {
        vec![
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        ]
    }));
    section(&mut out, "Conditions", &indent(&table(&rows)));
    let mut rows = vec![
        ["ID", "PID", "STATE", "EXIT", "DETAIL"]
            .map(String::from)
            .to_vec(),
    ];
    rows.extend(d.processes.iter().map(|p| {
        vec![
            p.id.clone(),
            p.pid.map_or("-".into(), |p| p.to_string()),
            p.state.clone(),
            p.exit_code.map_or("-".into(), |c| c.to_string()),
            p.detail.clone().unwrap_or_default(),
        ]
    }));
    section(&mut out, "Processes", &indent(&table(&rows)));
    let mut rows = vec![
        ["TIME", "TYPE", "REASON", "MESSAGE"]
            .map(String::from)
            .to_vec(),
    ];
    rows.extend(d.events.iter().map(|e| {
        vec![
            e.time.clone(),
            e.type_.clone(),
            e.reason.clone(),
            e.message.clone(),
        ]
    }));
    let events = match d.events.is_empty() && s.source.starts_with("kube:") {
        true => "  (see kubectl describe container for a resource's Events)\n".to_string(),
        false => indent(&table(&rows)),
    };
    section(&mut out, "Events", &events);
    out
}

fn section(out: &mut String, title: &str, body: &str) {
    let _ = write!(out, "{title}:\n{body}");
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// YAML of `value`, or why not.
pub fn yaml<T: serde::Serialize>(value: &T) -> String {
    serde_yaml::to_string(value).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, phase: &str) -> Summary {
        Summary {
            name: name.into(),
            handle: name.into(),
            source: "file:/m/a.yaml#1".into(),
            phase: phase.into(),
            ready: Some(true),
            restarts: 1,
            created: Some("2026-01-01T00:00:00Z".into()),
            image: "/rootfs".into(),
            ip: None,
        }
    }

    #[test]
    fn tables_align_and_age_like_kubectl() {
        let now = humantime::parse_rfc3339("2026-01-01T00:05:00Z").unwrap();
        let text = ps_table(
            &[row("web", "Running"), row("a-long-name", "Failed")],
            false,
            false,
            now,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME         PHASE    READY  RESTARTS  AGE  IP");
        assert_eq!(lines[1], "web          Running  True   1         5m   -");
        let coloured = ps_table(&[row("web", "Running")], false, true, now);
        assert!(coloured.contains("\x1b[32mRunning\x1b[0m"), "{coloured}");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(!use_colour(false, None));
        assert!(!use_colour(true, Some("1".into())));
        assert!(use_colour(true, Some("".into())));
    }

    #[test]
    fn ages() {
        let now = humantime::parse_rfc3339("2026-01-03T00:00:00Z").unwrap();
        assert_eq!(age(Some("2026-01-02T23:59:30Z"), now), "30s");
        assert_eq!(age(Some("2026-01-02T21:00:00Z"), now), "3h");
        assert_eq!(age(Some("2026-01-01T00:00:00Z"), now), "2d");
        assert_eq!(age(None, now), "-");
    }
}
