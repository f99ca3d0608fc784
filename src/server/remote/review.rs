//! Who a remote caller is and what it may do, asked of the API server as
//! the kubelet asks it: a bearer token through a TokenReview
//! (authentication.k8s.io/v1), a request through a SubjectAccessReview
//! (authorization.k8s.io/v1) on `containers/{log,exec,attach}`. Answers
//! are cached briefly, with the kubelet's defaults: an authenticated token
//! for 2 minutes, an allowed request for 5 minutes, a denied one for 30
//! seconds; a failure to ask is never cached.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use thiserror::Error;

use super::target::{GROUP, RESOURCE, Target};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Identity {
    /// The user name.
    pub user: String,
    /// The user's uid, when the authenticator gives one.
    pub uid: Option<String>,
    /// The user's groups.
    pub groups: Vec<String>,
    /// Extra attributes the authenticator gave (passed on to the SAR).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The authoriser's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// The authoriser's reason, when it gave one.
    pub reason: String,
}

/// The API server could not be asked, or did not answer.
#[derive(Debug, Error)]
#[error("{review}: {source}")]
pub struct ReviewError {
    /// Which review.
    pub review: &'static str,
    /// Why.
    #[source]
    pub source: kube::Error,
}

/// Authentication and authorisation of remote requests.
pub trait Reviews: Send + Sync {
    /// Who `token` belongs to; `None` when it authenticates no one.
    fn token(&self, token: &str) -> BoxFuture<'_, Result<Option<Identity>, ReviewError>>;
    /// Whether `who` may do what `target` asks.
    fn access<'a>(
        &'a self,
        who: &'a Identity,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Decision, ReviewError>>;
}

/// Reviews asked of the API server through the agent's client.
pub struct KubeReviews {
    client: kube::Client,
    audiences: Vec<String>,
    tokens: Cache<String, Identity>,
    decisions: Cache<(Identity, Target), Decision>,
}

/// How long an authenticated token is trusted without asking again.
const TOKEN_TTL: Duration = Duration::from_secs(120);
/// How long an allowed request is.
const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a denied request is.
const DENIED_TTL: Duration = Duration::from_secs(30);
/// Entries kept per cache; beyond it the cache is emptied (as a flood of
/// distinct tokens must not grow the agent).
const CACHE_MAX: usize = 4096;

impl KubeReviews {
    /// Reviews through `client`; a token must be meant for one of
    /// `audiences` (none: the API server's own).
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Self {
        Self {
            client,
            audiences,
            tokens: Cache::default(),
            decisions: Cache::default(),
        }
    }

    async fn review_token(&self, token: &str) -> Result<Option<Identity>, ReviewError> {
        if let Some(who) = self.tokens.get(&token.to_string()) {
            return Ok(Some(who));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| ReviewError {
                review: "TokenReview",
                source,
            })?;
        let who = identity(&answer);
        if let Some(w) = &who {
            self.tokens.put(token.to_string(), w.clone(), TOKEN_TTL);
        }
        Ok(who)
    }

    async fn review_access(
        &self,
        who: &Identity,
        target: &Target,
    ) -> Result<Decision, ReviewError> {
        let key = (who.clone(), target.clone());
        if let Some(d) = self.decisions.get(&key) {
            return Ok(d);
        }
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &access_review(who, target))
            .await
            .map_err(|source| ReviewError {
                review: "SubjectAccessReview",
                source,
            })?;
        let status = answer.status.unwrap_or_default();
        let decision = Decision {
            allowed: status.allowed && !status.denied.unwrap_or(false),
            reason: status.reason.unwrap_or_default(),
        };
        let ttl = match decision.allowed {
            true => ALLOWED_TTL,
            false => DENIED_TTL,
        };
        self.decisions.put(key, decision.clone(), ttl);
        Ok(decision)
    }
}

impl Reviews for KubeReviews {
    fn token(&self, token: &str) -> BoxFuture<'_, Result<Option<Identity>, ReviewError>> {
        let token = token.to_string();
        Box::pin(async move { self.review_token(&token).await })
    }

    fn access<'a>(
        &'a self,
        who: &'a Identity,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Decision, ReviewError>> {
        Box::pin(self.review_access(who, target))
    }
}

/// The user a TokenReview's answer authenticates, if any (pure).
pub fn identity(answer: &TokenReview) -> Option<Identity> {
    let status = answer.status.as_ref()?;
    let user = status.user.as_ref()?;
    let name = user.username.clone().filter(|u| !u.is_empty())?;
    status.authenticated.unwrap_or(false).then(|| Identity {
        user: name,
        uid: user.uid.clone(),
        groups: user.groups.clone().unwrap_or_default(),
        extra: user.extra.clone().unwrap_or_default(),
    })
}

/// The SubjectAccessReview that asks whether `who` may do `target` (pure).
pub fn access_review(who: &Identity, target: &Target) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(who.user.clone()),
            uid: who.uid.clone(),
            groups: Some(who.groups.clone()),
            extra: (!who.extra.is_empty()).then(|| who.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.to_string()),
                resource: Some(RESOURCE.to_string()),
                subresource: Some(target.subresource.as_str().to_string()),
                verb: Some(target.subresource.verb().to_string()),
                namespace: Some(target.namespace.clone()),
                name: Some(target.name.clone()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// Answers kept until their deadline.
struct Cache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, V: Clone> Cache<K, V> {
    fn get(&self, key: &K) -> Option<V> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(deadline, _)| Instant::now() < *deadline)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V, ttl: Duration) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_MAX {
            let now = Instant::now();
            map.retain(|_, (deadline, _)| now < *deadline);
            if map.len() >= CACHE_MAX {
                map.clear();
            }
        }
        map.insert(key, (Instant::now() + ttl, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::remote::target::Subresource;
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    #[test]
    fn only_an_authenticated_named_user_is_an_identity() {
        let answer = |authenticated, name: &str| TokenReview {
            status: Some(TokenReviewStatus {
                authenticated: Some(authenticated),
                user: Some(UserInfo {
                    username: Some(name.into()),
                    groups: Some(vec!["devs".into()]),
                    ..UserInfo::default()
                }),
                ..TokenReviewStatus::default()
            }),
            ..TokenReview::default()
        };
        let who = identity(&answer(true, "alice")).unwrap();
        assert_eq!(
            (who.user.as_str(), who.groups.as_slice()),
            ("alice", &["devs".to_string()][..])
        );
        assert_eq!(identity(&answer(false, "alice")), None);
        assert_eq!(identity(&answer(true, "")), None);
        assert_eq!(identity(&TokenReview::default()), None);
    }

    #[test]
    fn the_review_names_the_resource_subresource_and_verb() {
        let who = Identity {
            user: "alice".into(),
            groups: vec!["devs".into()],
            ..Identity::default()
        };
        let target = Target {
            namespace: "team".into(),
            name: "web".into(),
            subresource: Subresource::Exec,
        };
        let sar = access_review(&who, &target);
        let a = sar.spec.resource_attributes.unwrap();
        assert_eq!(
            (
                a.group.as_deref(),
                a.resource.as_deref(),
                a.subresource.as_deref(),
                a.verb.as_deref(),
                a.namespace.as_deref(),
                a.name.as_deref()
            ),
            (
                Some("rundmc.io"),
                Some("containers"),
                Some("exec"),
                Some("create"),
                Some("team"),
                Some("web")
            )
        );
        assert_eq!(sar.spec.user.as_deref(), Some("alice"));
    }

    #[test]
    fn cached_answers_expire() {
        let cache: Cache<u8, u8> = Cache::default();
        cache.put(1, 10, Duration::from_secs(60));
        cache.put(2, 20, Duration::ZERO);
        assert_eq!((cache.get(&1), cache.get(&2)), (Some(10), None));
    }
}
