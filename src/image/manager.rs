//! The agent's images: for each create from an image, whether the image is
//! on the node; otherwise a pull in the background that wakes the waiting
//! handles when it ends. Failed pulls back off as the kubelet's do (10 s,
//! doubling to 5 min), per reference. Says what to announce, once per
//! handle and attempt: `Pulling`, `Pulled`, `Failed` (`ErrImagePull`),
//! `BackOff` (`ImagePullBackOff`), `ErrImageNeverPull`. And the store's
//! garbage collection, on a period and after each pull.
//!
//! The decision is pure ([`decide`]); this file's I/O is the store, the
//! puller and the Secrets lookup. It knows nothing of containers but their
//! handles: which images are in use is the caller's to say.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::credentials::Keyring;
use super::gc::GcThresholds;
use super::pull::{PullError, Pulled, Puller};
use super::state::{ImageEvent, ImageState, ImageWait, ReadyImage, Wake};
use super::store::{ImageRecord, Store, StoreError};
use crate::api::reference::ImageReference;
use crate::api::{ContainerSpec, Handle, ImageUse, PullPolicy, Reason};

/// Where `kubernetes.io/dockerconfigjson` Secrets come from: the API server.
pub trait SecretSource: Send + Sync + 'static {
    /// The `.dockerconfigjson` of Secret `name` in `namespace`.
    fn docker_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>>;
}

/// Tunables.
#[derive(Debug, Clone, Copy)]
pub struct ManagerConfig {
    /// First pull backoff (kubelet: 10 s).
    pub backoff_initial: Duration,
    /// Largest pull backoff (kubelet: 5 min).
    pub backoff_max: Duration,
    /// How often to try the store's GC besides after pulls.
    pub gc_period: Duration,
    /// The GC's thresholds.
    pub gc: GcThresholds,
    /// An image pulled or used more recently than this is never collected
    /// (kubelet's ImageMinimumGCAge): a fresh pull waits for its create.
    pub gc_min_age: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            gc_period: Duration::from_secs(300),
            gc: GcThresholds::default(),
            gc_min_age: Duration::from_secs(120),
        }
    }
}

/// One reference's pulls.
#[derive(Default)]
struct Pulls {
    /// Attempts so far.
    attempt: u32,
    /// The last attempt's end, when it failed.
    failed: Option<Failure>,
    /// Handles to wake when the running attempt ends; `None` when none runs.
    running: Option<Vec<Wake>>,
}

#[derive(Debug, Clone)]
struct Failure {
    message: String,
    until: Instant,
    backoff: Duration,
}

/// What a handle was told last, so each event goes out once per attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Told {
    reference: String,
    attempt: u32,
    pulling: bool,
    failed: bool,
    backoff: bool,
    /// The attempt it asked for ended well: its `Pulled` event is due.
    pulled: Option<String>,
}

#[derive(Default)]
struct State {
    pulls: HashMap<String, Pulls>,
    told: HashMap<Handle, Told>,
}

/// The agent's images.
pub struct Manager {
    store: Arc<Store>,
    puller: Arc<Puller>,
    secrets: Option<Arc<dyn SecretSource>>,
    config: ManagerConfig,
    state: Mutex<State>,
    gc_now: tokio::sync::Notify,
}

/// What [`decide`] says to do for one ensure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Use what the store has.
    UseStored,
    /// Start a pull (or join the running one).
    Pull,
    /// Wait: this is why.
    Wait(ImageWait),
}

/// The pure rule: given the policy, whether the store has the image, and
/// the reference's pulls, what to do now.
fn decide(
    policy: PullPolicy,
    stored: bool,
    fresh: bool,
    failed: Option<&Failure>,
    now: Instant,
    name: &str,
) -> Decision {
    match (policy, stored) {
        (PullPolicy::Never, true) | (PullPolicy::IfNotPresent, true) => Decision::UseStored,
        (PullPolicy::Always, true) if fresh => Decision::UseStored,
        (PullPolicy::Never, false) => Decision::Wait(ImageWait {
            reason: Reason::ErrImageNeverPull,
            message: format!("Container image \"{name}\" is not present with pull policy of Never"),
            retry_in: Some(Duration::from_secs(30)),
        }),
        _ => match failed {
            Some(f) if f.until > now => Decision::Wait(ImageWait {
                reason: Reason::ImagePullBackOff,
                message: format!("Back-off pulling image \"{name}\": {}", f.message),
                retry_in: Some(f.until - now),
            }),
            _ => Decision::Pull,
        },
    }
}

impl Manager {
    /// Images from `store`, pulled by `puller`; Secrets from `secrets`.
    pub fn new(
        store: Arc<Store>,
        puller: Arc<Puller>,
        secrets: Option<Arc<dyn SecretSource>>,
        config: ManagerConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            puller,
            secrets,
            config,
            state: Mutex::new(State::default()),
            gc_now: tokio::sync::Notify::new(),
        })
    }

    /// Where `spec`'s image stands for a create of `handle`.
    pub fn ensure(
        self: &Arc<Self>,
        handle: &Handle,
        spec: &ContainerSpec,
        namespace: Option<&str>,
        wake: Wake,
    ) -> (ImageState, Vec<ImageEvent>) {
        let raw = spec.image.as_deref().unwrap_or_default();
        let reference = match ImageReference::parse(raw) {
            Ok(r) => r,
            Err(e) => {
                let wait = ImageWait {
                    reason: Reason::InvalidImageName,
                    message: format!("Failed to apply default image tag \"{raw}\": {e}"),
                    retry_in: None,
                };
                return (ImageState::Waiting(wait), Vec::new());
            }
        };
        let name = reference.to_string();
        let policy = spec
            .image_pull_policy
            .unwrap_or_else(|| reference.default_pull_policy());
        let stored = self.store.resolve(&name).ok().flatten();
        let secrets = secret_names(spec, namespace);
        let key = pull_key(&name, &secrets);
        let mut state = crate::sync::lock(&self.state);
        let told = state.told.entry(handle.clone()).or_default();
        if told.reference != key {
            *told = Told {
                reference: key.clone(),
                ..Told::default()
            };
        }
        let fresh = told.pulled.is_some();
        let failed = state.pulls.get(&key).and_then(|p| p.failed.clone());
        let decision = decide(
            policy,
            stored.is_some(),
            fresh,
            failed.as_ref(),
            Instant::now(),
            raw,
        );
        match (decision, stored) {
            (Decision::UseStored, Some(record)) => {
                let told = state.told.remove(handle).unwrap_or_default();
                drop(state);
                self.ready(&name, raw, record, told.pulled)
            }
            (Decision::Wait(mut wait), _) => {
                let events = self.tell_wait(&mut state, handle, &key, &mut wait, failed.as_ref());
                (ImageState::Waiting(wait), events)
            }
            (Decision::Pull, _) | (Decision::UseStored, None) => {
                let pull = Pull {
                    reference,
                    key,
                    secrets,
                };
                let events = self.join_pull(&mut state, handle, pull, raw, wake);
                let wait = ImageWait {
                    reason: Reason::Creating,
                    message: format!("Pulling image \"{raw}\""),
                    retry_in: None,
                };
                (ImageState::Waiting(wait), events)
            }
        }
    }

    /// `handle` is gone: what it was told goes too, and what its peas
    /// were (asked about as `<handle>+pea-<name>`).
    pub fn forget(&self, handle: &Handle) {
        let peas = format!("{handle}+pea-");
        crate::sync::lock(&self.state)
            .told
            .retain(|h, _| h != handle && !h.as_str().starts_with(&peas));
    }

    /// The image is here: its layers, held until the create is recorded.
    fn ready(
        &self,
        name: &str,
        raw: &str,
        record: ImageRecord,
        pulled: Option<String>,
    ) -> (ImageState, Vec<ImageEvent>) {
        let held = self.store.shared_lock().and_then(|lock| {
            // Again under the lock: a GC may have run since the look.
            let record = self.store.resolve(name)?.unwrap_or(record);
            let lowerdirs = self.store.lowerdirs(&record)?;
            if let Err(e) = self.store.touch(&record.id) {
                tracing::debug!(image = name, error = %e, "marking the image used");
            }
            Ok((lock, record, lowerdirs))
        });
        let (lock, record, lowerdirs) = match held {
            Ok(held) => held,
            Err(e) => return store_failed(raw, &e),
        };
        let message = pulled
            .unwrap_or_else(|| format!("Container image \"{raw}\" already present on machine"));
        let event = ImageEvent {
            warning: false,
            reason: Reason::Pulled,
            message,
        };
        let ready = ReadyImage {
            image: ImageUse {
                name: name.to_string(),
                id: record.id,
                defaults: record.defaults,
            },
            lowerdirs,
            lease: Some(Box::new(lock)),
        };
        (ImageState::Ready(ready), vec![event])
    }

    /// A failure or a backoff, announced once per attempt. The first look
    /// after a failed pull reports it as the kubelet does (`ErrImagePull`,
    /// looked at again in a second); later ones, the backoff.
    fn tell_wait(
        &self,
        state: &mut State,
        handle: &Handle,
        name: &str,
        wait: &mut ImageWait,
        failed: Option<&Failure>,
    ) -> Vec<ImageEvent> {
        let attempt = state.pulls.get(name).map_or(0, |p| p.attempt);
        let told = state.told.entry(handle.clone()).or_default();
        if told.attempt != attempt {
            told.attempt = attempt;
            told.failed = false;
            told.backoff = false;
        }
        let raw = wait.message.split('"').nth(1).unwrap_or(name).to_string();
        let event = |warning, reason, message: String| ImageEvent {
            warning,
            reason,
            message,
        };
        match (wait.reason, failed) {
            (Reason::ImagePullBackOff, Some(f)) if !told.failed => {
                told.failed = true;
                wait.reason = Reason::ErrImagePull;
                wait.message = f.message.clone();
                wait.retry_in = wait.retry_in.map(|r| r.min(Duration::from_secs(1)));
                vec![
                    event(
                        true,
                        Reason::Failed,
                        format!("Failed to pull image \"{raw}\": {}", f.message),
                    ),
                    event(true, Reason::Failed, "Error: ErrImagePull".into()),
                ]
            }
            (Reason::ImagePullBackOff, _) if !told.backoff => {
                told.backoff = true;
                vec![
                    event(
                        false,
                        Reason::BackOff,
                        format!("Back-off pulling image \"{raw}\""),
                    ),
                    event(true, Reason::Failed, "Error: ImagePullBackOff".into()),
                ]
            }
            (Reason::ErrImageNeverPull, _) if !told.failed => {
                told.failed = true;
                vec![event(true, Reason::ErrImageNeverPull, wait.message.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// Wait on the reference's running pull, starting one when none runs.
    fn join_pull(
        self: &Arc<Self>,
        state: &mut State,
        handle: &Handle,
        pull: Pull,
        raw: &str,
        wake: Wake,
    ) -> Vec<ImageEvent> {
        let name = pull.key.clone();
        let pulls = state.pulls.entry(name.clone()).or_default();
        match &mut pulls.running {
            Some(waiters) => waiters.push(wake),
            None => {
                pulls.attempt += 1;
                pulls.running = Some(vec![wake]);
                self.start_pull(pull);
            }
        }
        let attempt = pulls.attempt;
        let told = state.told.entry(handle.clone()).or_default();
        if told.attempt == attempt && told.pulling {
            return Vec::new();
        }
        *told = Told {
            reference: name,
            attempt,
            pulling: true,
            ..Told::default()
        };
        vec![ImageEvent {
            warning: false,
            reason: Reason::Pulling,
            message: format!("Pulling image \"{raw}\""),
        }]
    }

    fn start_pull(self: &Arc<Self>, pull: Pull) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let (keyring, unread) = me.keyring(&pull.secrets).await;
            let started = Instant::now();
            let result = me
                .puller
                .pull(&pull.reference, keyring.as_ref(), None)
                .await;
            let result = result.map_err(|e| failure_message(&e, &unread));
            me.pull_ended(&pull, result, started);
        });
    }

    /// The credentials of the Secrets a resource names; one that cannot be
    /// read is skipped with a warning, as the kubelet does.
    /// Also says which could not be read, and why.
    async fn keyring(&self, secrets: &[(String, String)]) -> (Option<Keyring>, Vec<String>) {
        let Some(source) = self.secrets.as_ref() else {
            return (None, Vec::new());
        };
        let mut keyring: Option<Keyring> = None;
        let mut unread = Vec::new();
        for (namespace, name) in secrets {
            let read = source
                .docker_config(namespace, name)
                .await
                .and_then(|bytes| {
                    let what = format!("Secret {namespace}/{name}");
                    Keyring::from_dockerconfigjson(&bytes, &what).map_err(|e| e.to_string())
                });
            match read {
                Ok(k) => keyring = Some(keyring.map_or_else(|| k.clone(), |all| all.merged(&k))),
                Err(e) => {
                    tracing::warn!(secret = %name, %namespace, error = %e, "image pull secret");
                    unread.push(format!("{namespace}/{name}: {e}"));
                }
            }
        }
        (keyring, unread)
    }

    fn pull_ended(&self, pull: &Pull, result: Result<Pulled, String>, started: Instant) {
        let (name, key) = (pull.reference.to_string(), pull.key.as_str());
        let waiters = {
            let mut state = crate::sync::lock(&self.state);
            let State { pulls, told } = &mut *state;
            let entry = pulls.entry(key.to_string()).or_default();
            let waiters = entry.running.take().unwrap_or_default();
            match &result {
                Ok(pulled) => {
                    entry.failed = None;
                    let note = pulled_note(&name, pulled, started);
                    for t in told
                        .values_mut()
                        .filter(|t| t.reference == key && t.pulling)
                    {
                        t.pulled = Some(note.clone());
                    }
                }
                Err(e) => {
                    let backoff = entry
                        .failed
                        .as_ref()
                        .map_or(self.config.backoff_initial, |f| {
                            (f.backoff * 2).min(self.config.backoff_max)
                        });
                    tracing::warn!(image = %name, error = %e, retry_in = ?backoff, "image pull failed");
                    entry.failed = Some(Failure {
                        message: e.clone(),
                        until: Instant::now() + backoff,
                        backoff,
                    });
                }
            }
            waiters
        };
        if result.is_ok() {
            self.gc_now.notify_one();
        }
        for wake in waiters {
            wake();
        }
    }

    /// Collect the store's garbage every period and after each pull, never
    /// an image `in_use` names; when it cannot say, nothing is collected.
    pub async fn collect_garbage(
        self: Arc<Self>,
        in_use: impl Fn() -> Result<BTreeSet<String>, String> + Send + Sync + 'static,
    ) {
        let in_use = Arc::new(in_use);
        loop {
            let store = Arc::clone(&self.store);
            let used = Arc::clone(&in_use);
            let thresholds = self.config.gc;
            let min_age = self.config.gc_min_age;
            let swept = tokio::task::spawn_blocking(move || {
                // Asked under the store's lock: a create that was under way
                // when the collection began has written its record by then.
                let in_use = || {
                    let mut ids = used()?;
                    ids.extend(young(&store, min_age).map_err(|e| e.to_string())?);
                    Ok(ids)
                };
                store
                    .gc_in_use(&in_use, thresholds)
                    .map_err(|e| e.to_string())
            })
            .await;
            match swept {
                Ok(Ok(r)) if !r.images.is_empty() => {
                    tracing::info!(images = ?r.images, layers = r.layers, bytes = r.bytes, "image gc");
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "image gc skipped"),
                Err(e) => tracing::warn!(error = %e, "image gc task"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.gc_period) => {}
                () = self.gc_now.notified() => {}
            }
        }
    }
}

/// The images pulled or used within `min_age`: kept like the ones in use.
fn young(store: &Store, min_age: Duration) -> Result<Vec<String>, StoreError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let images = store.list()?;
    Ok(images
        .into_iter()
        .filter(|i| now.saturating_sub(i.pulled_at.max(i.last_used)) < min_age.as_secs())
        .map(|i| i.id)
        .collect())
}

/// What a failed pull says, with the Secrets that could not be read (the
/// kubelet's FailedToRetrieveImagePullSecret), which may explain it.
fn failure_message(e: &PullError, unread: &[String]) -> String {
    match unread.is_empty() {
        true => e.to_string(),
        false => format!(
            "{e}; unable to retrieve image pull Secrets: {}",
            unread.join("; ")
        ),
    }
}

/// One pull: of a reference, with the credentials of some Secrets.
struct Pull {
    reference: ImageReference,
    /// [`pull_key`].
    key: String,
    /// (namespace, name) of the Secrets.
    secrets: Vec<(String, String)>,
}

/// Pulls of one reference with different Secrets back off apart: one
/// resource's missing credentials never hold back another's.
fn pull_key(name: &str, secrets: &[(String, String)]) -> String {
    let mut key = name.to_string();
    for (namespace, secret) in secrets {
        key.push_str(&format!(" {namespace}/{secret}"));
    }
    key
}

/// (namespace, name) of each Secret a resource's spec names.
fn secret_names(spec: &ContainerSpec, namespace: Option<&str>) -> Vec<(String, String)> {
    let Some(ns) = namespace else {
        return Vec::new();
    };
    spec.image_pull_secrets
        .iter()
        .map(|s| (ns.to_string(), s.name.clone()))
        .collect()
}

/// The kubelet's words for a pull that ended well.
fn pulled_note(name: &str, pulled: &Pulled, started: Instant) -> String {
    format!(
        "Successfully pulled image \"{name}\" in {:.3}s ({:.3}s including waiting). Image size: {} bytes.",
        pulled.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        pulled.image.size
    )
}

/// The store failed under a ready image: wait, and say so.
fn store_failed(raw: &str, e: &StoreError) -> (ImageState, Vec<ImageEvent>) {
    let wait = ImageWait {
        reason: Reason::ErrImagePull,
        message: format!("image \"{raw}\" in the store: {e}"),
        retry_in: Some(Duration::from_secs(10)),
    };
    (ImageState::Waiting(wait), Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(secs: u64, now: Instant) -> Failure {
        Failure {
            message: "unauthorized".into(),
            until: now + Duration::from_secs(secs),
            backoff: Duration::from_secs(secs),
        }
    }

    #[test]
    fn the_policy_decides_between_the_store_and_a_pull() {
        let now = Instant::now();
        use Decision::*;
        use PullPolicy::*;
        assert_eq!(decide(IfNotPresent, true, false, None, now, "a"), UseStored);
        assert_eq!(decide(IfNotPresent, false, false, None, now, "a"), Pull);
        assert_eq!(decide(Always, true, false, None, now, "a"), Pull);
        assert_eq!(decide(Always, true, true, None, now, "a"), UseStored);
        assert_eq!(decide(Never, true, false, None, now, "a"), UseStored);
        let Wait(w) = decide(Never, false, false, None, now, "a") else {
            panic!("Never without the image waits");
        };
        assert_eq!(w.reason, Reason::ErrImageNeverPull);
        assert_eq!(
            w.message,
            "Container image \"a\" is not present with pull policy of Never"
        );
    }

    #[test]
    fn a_failed_pull_backs_off_until_its_time_is_up() {
        let now = Instant::now();
        let f = failure(10, now);
        let Decision::Wait(w) = decide(PullPolicy::IfNotPresent, false, false, Some(&f), now, "a")
        else {
            panic!("in backoff");
        };
        assert_eq!(w.reason, Reason::ImagePullBackOff);
        assert_eq!(w.retry_in, Some(Duration::from_secs(10)));
        let later = now + Duration::from_secs(11);
        assert_eq!(
            decide(PullPolicy::IfNotPresent, false, false, Some(&f), later, "a"),
            Decision::Pull
        );
        // The store has it: a failed Always pull still backs off.
        assert!(matches!(
            decide(PullPolicy::Always, true, false, Some(&f), now, "a"),
            Decision::Wait(_)
        ));
    }
}
