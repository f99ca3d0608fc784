//! Probes and lifecycle hooks of a process, in Kubernetes' field names and
//! with the kubelet's defaults: what `startupProbe`, `livenessProbe`,
//! `readinessProbe` and `lifecycle` say. Pure data and the defaults; the
//! prober runs them.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A check of the main process, run periodically while it runs.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// Run a command in the container; exit 0 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// An HTTP GET to the container; a status from 200 to 399 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// A TCP connect to the container; an accepted connection is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    /// A gRPC health check (grpc.health.v1) to the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcAction>,
    /// Seconds after the main process starts before the first probe. Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    /// Seconds after which a probe times out. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Seconds between probes. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    /// Consecutive successes, after a failure, to be successful. Defaults
    /// to 1; must be 1 for liveness and startup probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    /// Consecutive failures to be failed. Defaults to 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
}

/// A command run in the container.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ExecAction {
    /// The command and its arguments; not run in a shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

/// An HTTP GET.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    /// The path. Defaults to `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The port: a number, or the name of one of `spec.ports`.
    pub port: IntOrString,
    /// The host to connect to. Defaults to the container's loopback, in
    /// its own network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// HTTP or HTTPS (the certificate is not verified, as the kubelet).
    /// Defaults to HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Scheme>,
    /// Headers to send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// A URL scheme.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    /// HTTP over TLS.
    #[serde(rename = "HTTPS")]
    Https,
}

/// One header.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct HttpHeader {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A TCP connect.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct TcpSocketAction {
    /// The port: a number, or the name of one of `spec.ports`.
    pub port: IntOrString,
    /// The host to connect to. Defaults to the container's loopback, in
    /// its own network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A gRPC health check.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct GrpcAction {
    /// The port.
    pub port: i32,
    /// The service name to check; empty checks the server as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// Hooks run around the main process's life, as a container's `lifecycle`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// Run right after the main process starts; it is not Ready until the
    /// hook returns, and a failed hook gets it killed and restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<LifecycleHandler>,
    /// Run before the main process is sent SIGTERM; its time counts
    /// against `terminationGracePeriodSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<LifecycleHandler>,
}

/// What a hook does: exactly one of these.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleHandler {
    /// Run a command in the container; exit 0 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// An HTTP GET to the container; a status from 200 to 399 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// Wait this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<SleepAction>,
}

/// A pause.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SleepAction {
    /// Seconds to sleep.
    pub seconds: i64,
}

impl LifecycleHandler {
    /// How many actions are set (exactly one is valid).
    pub fn actions(&self) -> usize {
        [
            self.exec.is_some(),
            self.http_get.is_some(),
            self.sleep.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }
}

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// Gates the other two until it first succeeds; failing, restarts.
    Startup,
    /// Failing, restarts the main process.
    Liveness,
    /// Drives the Ready condition.
    Readiness,
}

impl ProbeKind {
    /// `Startup`, `Liveness`, `Readiness`, as the kubelet's messages say.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }

    /// The field that declares it: `startupProbe`...
    pub fn field(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startupProbe",
            ProbeKind::Liveness => "livenessProbe",
            ProbeKind::Readiness => "readinessProbe",
        }
    }
}

/// A probe's timing, the kubelet's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    /// Before the first probe.
    pub initial_delay: Duration,
    /// A probe's time limit.
    pub timeout: Duration,
    /// Between probes.
    pub period: Duration,
    /// Consecutive successes to succeed.
    pub success_threshold: u32,
    /// Consecutive failures to fail.
    pub failure_threshold: u32,
}

impl Probe {
    /// The timing, defaults filled in; values below the minimum (validated
    /// away) are raised to it.
    pub fn timing(&self) -> ProbeTiming {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(0))
        };
        let count =
            |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1);
        ProbeTiming {
            initial_delay: secs(self.initial_delay_seconds, 0, 0),
            timeout: secs(self.timeout_seconds, 1, 1),
            period: secs(self.period_seconds, 10, 1),
            success_threshold: count(self.success_threshold, 1),
            failure_threshold: count(self.failure_threshold, 3),
        }
    }

    /// How many handlers are set (exactly one is valid).
    pub fn handlers(&self) -> usize {
        [
            self.exec.is_some(),
            self.http_get.is_some(),
            self.tcp_socket.is_some(),
            self.grpc.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }
}

/// A probe's port resolved: a number, or a name looked up in `ports`
/// (`(name, containerPort)`); `None` when the name is unknown or the
/// number out of range.
pub fn resolve_port(port: &IntOrString, ports: &[(Option<&str>, i32)]) -> Option<u16> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => ports
            .iter()
            .find(|(n, _)| *n == Some(name.as_str()))
            .map(|(_, p)| *p)?,
    };
    u16::try_from(number).ok().filter(|p| *p > 0)
}

/// The problems with the process's probes, as (field, message), fields
/// under `spec.process`. `ports` are the spec's, for named ports.
pub fn probe_errors(
    process: &crate::api::ProcessSpec,
    ports: &[(Option<&str>, i32)],
) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    for (kind, probe) in [
        (ProbeKind::Startup, &process.startup_probe),
        (ProbeKind::Liveness, &process.liveness_probe),
        (ProbeKind::Readiness, &process.readiness_probe),
    ] {
        if let Some(probe) = probe {
            let field = format!("spec.process.{}", kind.field());
            check_probe(&mut errs, &field, kind, probe, ports);
        }
    }
    if let Some(lifecycle) = &process.lifecycle {
        for (name, hook) in [
            ("postStart", &lifecycle.post_start),
            ("preStop", &lifecycle.pre_stop),
        ] {
            if let Some(hook) = hook {
                let field = format!("spec.process.lifecycle.{name}");
                check_hook(&mut errs, &field, hook, ports);
            }
        }
    }
    errs
}

fn check_hook(
    errs: &mut Vec<(String, String)>,
    field: &str,
    hook: &LifecycleHandler,
    ports: &[(Option<&str>, i32)],
) {
    let mut err = |f: &str, m: &str| errs.push((format!("{field}{f}"), m.to_string()));
    match hook.actions() {
        0 => err("", "must set one of exec, httpGet and sleep"),
        1 => {}
        _ => err("", "must set only one of exec, httpGet and sleep"),
    }
    check_actions(&mut err, hook.exec.as_ref(), hook.http_get.as_ref(), ports);
    if hook.sleep.as_ref().is_some_and(|s| s.seconds < 0) {
        err(".sleep.seconds", "must not be negative");
    }
}

/// The checks probes and hooks share: an exec needs its command, an
/// httpGet a port of the container's and a path from `/`.
fn check_actions(
    err: &mut impl FnMut(&str, &str),
    exec: Option<&ExecAction>,
    http: Option<&HttpGetAction>,
    ports: &[(Option<&str>, i32)],
) {
    if exec.is_some_and(|e| e.command.first().is_none_or(String::is_empty)) {
        err(".exec.command", "needs at least the command");
    }
    let Some(http) = http else {
        return;
    };
    if resolve_port(&http.port, ports).is_none() {
        err(
            ".httpGet.port",
            "must be 1-65535 or the name of one of spec.ports",
        );
    }
    if http
        .path
        .as_deref()
        .is_some_and(|p| !p.is_empty() && !p.starts_with('/'))
    {
        err(".httpGet.path", "must start with /");
    }
}

fn check_probe(
    errs: &mut Vec<(String, String)>,
    field: &str,
    kind: ProbeKind,
    probe: &Probe,
    ports: &[(Option<&str>, i32)],
) {
    let mut err = |f: &str, m: &str| errs.push((format!("{field}{f}"), m.to_string()));
    match probe.handlers() {
        0 => err("", "must set one of exec, httpGet, tcpSocket and grpc"),
        1 => {}
        _ => err("", "must set only one of exec, httpGet, tcpSocket and grpc"),
    }
    check_actions(
        &mut err,
        probe.exec.as_ref(),
        probe.http_get.as_ref(),
        ports,
    );
    if let Some(tcp) = &probe.tcp_socket
        && resolve_port(&tcp.port, ports).is_none()
    {
        err(
            ".tcpSocket.port",
            "must be 1-65535 or the name of one of spec.ports",
        );
    }
    if let Some(grpc) = &probe.grpc
        && !(1..=65535).contains(&grpc.port)
    {
        err(".grpc.port", "must be 1-65535");
    }
    for (name, value, min) in [
        ("initialDelaySeconds", probe.initial_delay_seconds, 0),
        ("timeoutSeconds", probe.timeout_seconds, 1),
        ("periodSeconds", probe.period_seconds, 1),
        ("successThreshold", probe.success_threshold, 1),
        ("failureThreshold", probe.failure_threshold, 1),
    ] {
        if value.is_some_and(|v| v < min) {
            err(&format!(".{name}"), &format!("must be at least {min}"));
        }
    }
    if kind != ProbeKind::Readiness && probe.success_threshold.is_some_and(|v| v != 1) {
        err(
            ".successThreshold",
            "must be 1 for liveness and startup probes",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ProcessSpec;

    fn tcp(port: IntOrString) -> Probe {
        Probe {
            tcp_socket: Some(TcpSocketAction { port, host: None }),
            ..Probe::default()
        }
    }

    #[test]
    fn the_kubelets_defaults_fill_the_timing() {
        let t = tcp(IntOrString::Int(80)).timing();
        assert_eq!(t.initial_delay, Duration::ZERO);
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
    }

    #[test]
    fn hooks_need_exactly_one_action() {
        let process = ProcessSpec {
            lifecycle: Some(Lifecycle {
                post_start: Some(LifecycleHandler::default()),
                pre_stop: Some(LifecycleHandler {
                    sleep: Some(SleepAction { seconds: -1 }),
                    exec: Some(ExecAction {
                        command: vec!["true".into()],
                    }),
                    ..LifecycleHandler::default()
                }),
            }),
            ..ProcessSpec::default()
        };
        let fields: Vec<String> = probe_errors(&process, &[])
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.process.lifecycle.postStart",
                "spec.process.lifecycle.preStop",
                "spec.process.lifecycle.preStop.sleep.seconds",
            ]
        );
        // A hook's httpGet is checked as a probe's.
        let process = ProcessSpec {
            lifecycle: Some(Lifecycle {
                post_start: Some(LifecycleHandler {
                    http_get: Some(HttpGetAction {
                        port: IntOrString::Int(8080),
                        path: Some("health".into()),
                        ..HttpGetAction::default()
                    }),
                    ..LifecycleHandler::default()
                }),
                pre_stop: None,
            }),
            ..ProcessSpec::default()
        };
        let fields: Vec<String> = probe_errors(&process, &[])
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(fields, ["spec.process.lifecycle.postStart.httpGet.path"]);
    }

    #[test]
    fn named_ports_resolve_through_spec_ports() {
        let ports = [(Some("http"), 8080), (None, 9090)];
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &ports),
            Some(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("web".into()), &ports),
            None
        );
        assert_eq!(resolve_port(&IntOrString::Int(70000), &ports), None);
        assert_eq!(resolve_port(&IntOrString::Int(0), &ports), None);
    }

    #[test]
    fn bad_probes_name_their_fields() {
        let process = ProcessSpec {
            startup_probe: Some(Probe::default()),
            liveness_probe: Some(Probe {
                success_threshold: Some(2),
                ..tcp(IntOrString::String("nope".into()))
            }),
            readiness_probe: Some(Probe {
                exec: Some(ExecAction { command: vec![] }),
                http_get: Some(HttpGetAction {
                    port: IntOrString::Int(443),
                    scheme: Some(Scheme::Https),
                    ..HttpGetAction::default()
                }),
                period_seconds: Some(0),
                ..Probe::default()
            }),
            ..ProcessSpec::default()
        };
        let fields: Vec<String> = probe_errors(&process, &[])
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.process.startupProbe",
                "spec.process.livenessProbe.tcpSocket.port",
                "spec.process.livenessProbe.successThreshold",
                "spec.process.readinessProbe",
                "spec.process.readinessProbe.exec.command",
                "spec.process.readinessProbe.periodSeconds",
            ]
        );
    }
}
