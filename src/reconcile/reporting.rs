//! The controller's other seam: what it asks of the reporters, as
//! [`ReportOps`]. The real [`Reporters`] implement it by delegation; the
//! tests of the controller use a double that records what it is told.

use std::future::Future;
use std::time::Duration;

use crate::api::{ContainerSpec, ContainerStatus, Handle, Reason};
use crate::report::Reporters;
use crate::report::events::EventType;

use super::store::Desired;

/// Where the controller reports status, events and finalizers.
pub trait ReportOps: Send + Sync + 'static {
    /// Names of the containers a status file reports.
    fn reported_names(&self) -> Vec<String>;
    /// The status last reported for `d`.
    fn previous(&self, d: &Desired) -> Option<ContainerStatus>;
    /// Report `status` for `d`; when a write failed, how soon to try again.
    fn status(
        &self,
        d: &Desired,
        spec: Option<&ContainerSpec>,
        status: &ContainerStatus,
    ) -> impl Future<Output = Option<Duration>> + Send;
    /// Record an event about `handle`, declared by `desired` if it is.
    fn event(
        &self,
        desired: Option<&Desired>,
        handle: &Handle,
        type_: EventType,
        reason: Reason,
        message: String,
    ) -> impl Future<Output = ()> + Send;
    /// `handle` is gone and undeclared: drop what was reported for it.
    fn forget(&self, handle: &Handle) -> impl Future<Output = ()> + Send;
    /// `handle` is undeclared and nothing of it exists: drop what may still report it.
    fn forget_undeclared(&self, handle: &Handle) -> impl Future<Output = ()> + Send;
    /// Add the cleanup finalizer to `d`'s resource, if it is one without it.
    fn add_finalizer(&self, d: &Desired) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Remove the cleanup finalizer from `d`'s resource, if it carries it.
    fn remove_finalizer(&self, d: &Desired)
    -> impl Future<Output = Result<(), kube::Error>> + Send;
}

impl ReportOps for Reporters {
    fn reported_names(&self) -> Vec<String> {
        self.files.names()
    }

    fn previous(&self, d: &Desired) -> Option<ContainerStatus> {
        Reporters::previous(self, d)
    }

    async fn status(
        &self,
        d: &Desired,
        spec: Option<&ContainerSpec>,
        status: &ContainerStatus,
    ) -> Option<Duration> {
        Reporters::status(self, d, spec, status).await
    }

    async fn event(
        &self,
        desired: Option<&Desired>,
        handle: &Handle,
        type_: EventType,
        reason: Reason,
        message: String,
    ) {
        Reporters::event(self, desired, handle, type_, reason, message).await
    }

    async fn forget(&self, handle: &Handle) {
        Reporters::forget(self, handle).await
    }

    async fn forget_undeclared(&self, handle: &Handle) {
        Reporters::forget_undeclared(self, handle).await
    }

    async fn add_finalizer(&self, d: &Desired) -> Result<(), kube::Error> {
        Reporters::add_finalizer(self, d).await
    }

    async fn remove_finalizer(&self, d: &Desired) -> Result<(), kube::Error> {
        Reporters::remove_finalizer(self, d).await
    }
}
