//! Pure parsing of what the runtime binary prints: its JSON log lines, the
//! JSON of `state`, `list` and `events`, and the wording by which it says a
//! container does not exist. runc and crun differ in small ways (key order
//! in log lines, `null` versus `[]` for an empty list, absent fields) and
//! both are accepted.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Event, State, Stats, Status};

#[derive(Deserialize)]
struct LogLine {
    level: Option<String>,
    msg: Option<String>,
}

/// The message of the last `"level":"error"` line of a JSON log, if any.
/// Lines that are not JSON are skipped.
pub fn last_logged_error(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<LogLine>(line).ok())
        .find(|line| line.level.as_deref() == Some("error"))
        .and_then(|line| line.msg)
        .filter(|msg| !msg.trim().is_empty())
}

/// The last non-empty line of stderr, trimmed.
pub fn last_stderr_line(stderr: &[u8]) -> Option<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned)
}

/// Does the runtime's message say that container `id` does not exist?
/// runc says "container does not exist"; crun says "container `ID` does not
/// exist", or reports ENOENT on the container's state directory or its
/// `status` file ("error opening file `ROOT/ID/status`: No such file or
/// directory", "cannot open directory 'ROOT/ID': No such file or directory").
pub fn says_not_found(message: &str, id: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    if lower.contains("container does not exist") {
        return true;
    }
    let names_it = message.contains(&format!("/{id}/status"))
        || message.contains(&format!("/{id}'"))
        || message.contains(&format!("/{id}`"))
        || message.contains(&format!("`{id}`"));
    names_it && (lower.contains("does not exist") || lower.contains("no such file or directory"))
}

#[derive(Deserialize)]
struct StateJson {
    id: String,
    #[serde(default)]
    pid: i32,
    status: Status,
    #[serde(default)]
    bundle: PathBuf,
}

impl From<StateJson> for State {
    fn from(json: StateJson) -> Self {
        let pid = (json.pid > 0 && json.status != Status::Stopped).then_some(json.pid);
        State {
            id: json.id,
            pid,
            status: json.status,
            bundle: json.bundle,
        }
    }
}

/// The output of `state ID` (the OCI state document).
pub fn parse_state(stdout: &[u8]) -> Result<State, serde_json::Error> {
    serde_json::from_slice::<StateJson>(stdout).map(State::from)
}

/// The output of `list --format json`: runc prints `null` when there is no
/// container, crun `[]`.
pub fn parse_list(stdout: &[u8]) -> Result<Vec<State>, serde_json::Error> {
    let list: Option<Vec<StateJson>> = serde_json::from_slice(stdout)?;
    Ok(list
        .unwrap_or_default()
        .into_iter()
        .map(State::from)
        .collect())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StatsJson {
    cpu: CpuJson,
    memory: MemoryJson,
    pids: PidsJson,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CpuJson {
    usage: CpuUsageJson,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CpuUsageJson {
    total: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MemoryJson {
    usage: MemoryUsageJson,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MemoryUsageJson {
    usage: u64,
    limit: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PidsJson {
    current: u64,
    limit: u64,
}

#[derive(Deserialize)]
struct EventJson {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    #[serde(default)]
    data: Option<StatsJson>,
}

/// The output of `events --stats ID`: one `{"type":"stats","data":{..}}`
/// line. runc leaves out zero fields (`"pids":{}` once the container has
/// stopped), which read as 0.
pub fn parse_stats(stdout: &[u8]) -> Result<Stats, serde_json::Error> {
    let event: EventJson = serde_json::from_slice(stdout)?;
    let data = event.data.unwrap_or_default();
    Ok(Stats {
        cpu_usage_ns: data.cpu.usage.total,
        memory_usage_bytes: data.memory.usage.usage,
        memory_limit_bytes: data.memory.usage.limit,
        pids_current: data.pids.current,
        pids_limit: data.pids.limit,
    })
}

/// One line of `events ID`. Periodic `stats` samples are not events and
/// give `None`.
pub fn parse_event(line: &str) -> Result<Option<Event>, serde_json::Error> {
    let event: EventJson = serde_json::from_str(line)?;
    Ok(match event.kind.as_str() {
        "stats" => None,
        "oom" => Some(Event::Oom { id: event.id }),
        _ => Some(Event::Other {
            id: event.id,
            kind: event.kind,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_is_taken_from_runc_and_crun_logs() {
        let runc = concat!(
            "{\"level\":\"warning\",\"msg\":\"early\",\"time\":\"2026-11-29T10:05:24Z\"}\n",
            "{\"level\":\"error\",\"msg\":\"container does not exist\",\"time\":\"2026-11-29T10:05:24Z\"}\n",
        );
        assert_eq!(
            last_logged_error(runc).as_deref(),
            Some("container does not exist")
        );
        let crun = concat!(
            "{\"msg\":\"first\",\"level\":\"error\",\"time\":\"2026-11-29T10:05:24.9Z\"}\n",
            "{\"msg\":\"make `/b/rootfs` private: No such file or directory\",\"level\":\"error\",\"time\":\"2026-11-29T10:05:31.0Z\"}\n",
            "not json\n",
        );
        assert_eq!(
            last_logged_error(crun).as_deref(),
            Some("make `/b/rootfs` private: No such file or directory")
        );
    }

    #[test]
    fn a_log_without_errors_gives_nothing() {
        assert_eq!(last_logged_error(""), None);
        assert_eq!(
            last_logged_error("{\"level\":\"info\",\"msg\":\"hi\"}\n"),
            None
        );
    }

    #[test]
    fn stderr_gives_its_last_non_empty_line() {
        assert_eq!(last_stderr_line(b"one\ntwo  \n\n").as_deref(), Some("two"));
        assert_eq!(last_stderr_line(b"\n \n"), None);
    }

    #[test]
    fn not_found_wordings_of_runc_and_crun_are_recognised() {
        assert!(says_not_found("container does not exist", "web"));
        assert!(says_not_found(
            "exec failed: container does not exist",
            "web"
        ));
        assert!(says_not_found("container `web` does not exist", "web"));
        assert!(says_not_found(
            "error opening file `/run/crun/web/status`: No such file or directory",
            "web"
        ));
        assert!(says_not_found(
            "cannot open directory '/run/crun/web': No such file or directory",
            "web"
        ));
    }

    #[test]
    fn other_enoent_messages_are_not_not_found() {
        assert!(!says_not_found(
            "runc create failed: invalid rootfs: stat /b/rootfs: no such file or directory",
            "web"
        ));
        assert!(!says_not_found(
            "make `/b/rootfs` private: No such file or directory",
            "web"
        ));
        assert!(!says_not_found(
            "error opening file `/run/crun/other/status`: No such file or directory",
            "web"
        ));
    }

    #[test]
    fn runc_state_document_is_parsed() {
        let json = br#"{"ociVersion":"1.0.2-dev","id":"c1","pid":10746,"status":"created","bundle":"/tmp/b","rootfs":"/tmp/b/rootfs","created":"2026-11-29T10:03:25.009065821Z","owner":""}"#;
        let state = parse_state(json).unwrap();
        assert_eq!(
            state,
            State {
                id: "c1".into(),
                pid: Some(10746),
                status: Status::Created,
                bundle: "/tmp/b".into()
            }
        );
    }

    #[test]
    fn stopped_state_has_no_pid() {
        let json = br#"{"ociVersion":"1.0.0","id":"k1","pid":0,"status":"stopped","bundle":"/tmp/k","systemd-scope":"","owner":"root"}"#;
        let state = parse_state(json).unwrap();
        assert_eq!(state.status, Status::Stopped);
        assert_eq!(state.pid, None);
    }

    #[test]
    fn unknown_status_is_a_decode_error() {
        assert!(parse_state(br#"{"id":"x","pid":1,"status":"exploded","bundle":"/b"}"#).is_err());
    }

    #[test]
    fn list_accepts_runc_null_and_crun_array() {
        assert_eq!(parse_list(b"null").unwrap(), vec![]);
        assert_eq!(parse_list(b"[\n\n]").unwrap(), vec![]);
        let crun = br#"[{"id":"k1","pid":11250,"status":"running","bundle":"/tmp/k","created":"2026-11-29T10:04:04.704988Z","owner":"root"}]"#;
        assert_eq!(
            parse_list(crun).unwrap(),
            vec![State {
                id: "k1".into(),
                pid: Some(11250),
                status: Status::Running,
                bundle: "/tmp/k".into()
            }]
        );
    }

    #[test]
    fn runc_v1_stats_sample_is_parsed() {
        let sample = include_bytes!("testdata/runc-events-stats-v1.json");
        let stats = parse_stats(sample).unwrap();
        assert_eq!(
            stats,
            Stats {
                cpu_usage_ns: 22423290,
                memory_usage_bytes: 761856,
                memory_limit_bytes: 33554432,
                pids_current: 2,
                pids_limit: 0,
            }
        );
    }

    #[test]
    fn stats_of_a_stopped_container_read_missing_pids_as_zero() {
        let line = br#"{"type":"stats","id":"c1","data":{"cpu":{"usage":{"total":7}},"memory":{"usage":{"limit":16,"usage":9}},"pids":{}}}"#;
        let stats = parse_stats(line).unwrap();
        assert_eq!(
            (
                stats.cpu_usage_ns,
                stats.memory_usage_bytes,
                stats.pids_current
            ),
            (7, 9, 0)
        );
    }

    #[test]
    fn events_lines_become_events_and_stats_are_dropped() {
        assert_eq!(
            parse_event(r#"{"type":"oom","id":"c1"}"#).unwrap(),
            Some(Event::Oom { id: "c1".into() })
        );
        assert_eq!(
            parse_event(r#"{"type":"intelrdt","id":"c1","data":{}}"#).unwrap(),
            Some(Event::Other {
                id: "c1".into(),
                kind: "intelrdt".into()
            })
        );
        assert_eq!(
            parse_event(r#"{"type":"stats","id":"c1","data":{"pids":{"current":1}}}"#).unwrap(),
            None
        );
        assert!(parse_event("garbage").is_err());
    }
}
