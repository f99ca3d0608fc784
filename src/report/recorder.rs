//! Kubernetes Events (`events.k8s.io/v1`), recorded as client-go's events
//! library does: the same event again (same object, type, reason, action
//! and note) within six minutes becomes a series on the first one (count,
//! last seen); any other note is an event of its own. kube-runtime's
//! `Recorder` leaves the note out of that identity, so a series there shows
//! its first note for every later one: "Started main-1 (pid 23623)" while
//! main-2 runs. Notes are therefore worded, as kubelet's are, to stay true
//! for every event of a series; what changes goes in status.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::events::EventType;
use crate::sync::lock;

/// How long an event can still grow a series (client-go's, and kubelet's).
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// What makes two events the same event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    regarding: (Option<String>, Option<String>, Option<String>),
    type_: &'static str,
    reason: String,
    action: String,
    note: String,
}

/// Publishes events as one controller instance (`rundmc` on a node).
pub struct EventRecorder {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<HashMap<Key, Event>>,
}

impl EventRecorder {
    /// Events from `controller`, instance `instance` (the node).
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Publish an event about `regarding`: a new Event, or the next of its
    /// series when the same one was published within the window.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Key {
            regarding: (
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            type_: type_name(type_),
            reason: reason.to_string(),
            action: reason.to_string(),
            note: note.to_string(),
        };
        let earlier = self.earlier(&key, now);
        let api: Api<Event> = Api::namespaced(
            self.client.clone(),
            regarding.namespace.as_deref().unwrap_or("default"),
        );
        let event = match earlier {
            Some(first) => {
                let next = next_of_series(first, now);
                match api
                    .patch(
                        &name_of(&next),
                        &PatchParams::default(),
                        &Patch::Merge(&next),
                    )
                    .await
                {
                    Ok(_) => next,
                    // Gone (expired or deleted): start again.
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        self.create(&api, &key, regarding, now).await?
                    }
                    Err(e) => return Err(e),
                }
            }
            None => self.create(&api, &key, regarding, now).await?,
        };
        lock(&self.recent).insert(key, event);
        Ok(())
    }

    /// The event `key` names, if it was published within the window;
    /// forgets the ones that fell out of it.
    fn earlier(&self, key: &Key, now: Timestamp) -> Option<Event> {
        let mut recent = lock(&self.recent);
        let window = SignedDuration::try_from(SERIES_WINDOW).unwrap_or(SignedDuration::MAX);
        recent.retain(|_, e| last_seen(e).is_some_and(|t| t + window > now));
        recent.get(key).cloned()
    }

    async fn create(
        &self,
        api: &Api<Event>,
        key: &Key,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> Result<Event, kube::Error> {
        let event = Event {
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(key.type_.to_string()),
            reason: Some(key.reason.clone()),
            action: Some(key.action.clone()),
            note: Some(key.note.clone()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        // Kept as sent: a later merge patch must not carry the server's
        // resourceVersion, which the series' own patches move on.
        api.create(&PostParams::default(), &event).await?;
        Ok(event)
    }
}

/// `first` seen once more at `now`.
fn next_of_series(first: Event, now: Timestamp) -> Event {
    let count = first.series.as_ref().map_or(2, |s| s.count + 1);
    Event {
        series: Some(EventSeries {
            count,
            last_observed_time: MicroTime(now),
        }),
        ..first
    }
}

/// When `event` was last seen.
fn last_seen(event: &Event) -> Option<Timestamp> {
    match &event.series {
        Some(s) => Some(s.last_observed_time.0),
        None => event.event_time.as_ref().map(|t| t.0),
    }
}

fn name_of(event: &Event) -> String {
    event.metadata.name.clone().unwrap_or_default()
}

fn type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_counts_from_two_and_keeps_its_identity() {
        let first = Event {
            metadata: ObjectMeta {
                name: Some("web.1".into()),
                ..ObjectMeta::default()
            },
            note: Some("Started main process".into()),
            event_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            ..Event::default()
        };
        let later = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(10);
        let second = next_of_series(first.clone(), later);
        assert_eq!(second.series.as_ref().map(|s| s.count), Some(2));
        assert_eq!(last_seen(&second), Some(later));
        assert_eq!(
            (&second.note, &second.metadata.name),
            (&first.note, &first.metadata.name)
        );
        let third = next_of_series(second, later);
        assert_eq!(third.series.map(|s| s.count), Some(3));
    }
}
