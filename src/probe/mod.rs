//! Probes of main processes: the kubelet's startup, liveness and readiness
//! rules ([`health`], pure), the network checks that run inside the
//! container's namespace without an exec ([`check`], with TLS for HTTPS
//! as the kubelet does it: [`tls`]), and the prober that
//! schedules them ([`prober`]). This room reports what the probes say and
//! wakes reconciles; it never restarts, stops or reports anything itself:
//! that is the controller's, which reads [`prober::Prober::health`].

pub mod check;
pub mod health;
pub mod prober;
mod tls;

pub use health::{Health, failure_message};
pub use prober::{ExecProbe, Prober, Subject, Wake};
