//! TokenReview (authentication.k8s.io/v1) and SubjectAccessReview
//! (authorization.k8s.io/v1) as the API server answers them: a POST of the
//! review, answered 201 with its `status` filled in. The test decides:
//! which tokens authenticate whom ([`FakeApiServer::accept_token`]) and
//! which access reviews are allowed ([`FakeApiServer::authorize`]); every
//! review received is kept for the test to read. Without a decision, a
//! token authenticates no one and every access is denied.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Response};
use serde_json::{Value, json};

use super::FakeApiServer;
use super::handlers::{Body, json_response};

/// Decides an access review from its `spec`.
type Rule = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// What the test decided, and what was asked.
#[derive(Default)]
pub struct Reviews {
    /// token -> (user, groups).
    tokens: BTreeMap<String, (String, Vec<String>)>,
    rule: Option<Rule>,
    token_reviews: Vec<Value>,
    access_reviews: Vec<Value>,
}

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

fn lock(m: &Mutex<Reviews>) -> std::sync::MutexGuard<'_, Reviews> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The answer to a review POST; `None` for any other request.
pub fn answer(
    reviews: &Mutex<Reviews>,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Option<Response<Body>> {
    if method != Method::POST || (path != TOKEN_REVIEWS && path != ACCESS_REVIEWS) {
        return None;
    }
    let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
        return Some(json_response(
            400,
            &json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "message": "the review is not JSON", "code": 400}),
        ));
    };
    let spec = review.get("spec").cloned().unwrap_or(Value::Null);
    let mut r = lock(reviews);
    let status = match path {
        TOKEN_REVIEWS => {
            r.token_reviews.push(review.clone());
            let token = spec
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match r.tokens.get(token) {
                Some((user, groups)) => json!({"authenticated": true,
                    "user": {"username": user, "uid": format!("uid-{user}"), "groups": groups}}),
                None => json!({"authenticated": false, "error": "token not recognised"}),
            }
        }
        _ => {
            r.access_reviews.push(review.clone());
            let allowed = r.rule.as_ref().is_some_and(|rule| rule(&spec));
            match allowed {
                true => json!({"allowed": true, "reason": "the test allows it"}),
                false => json!({"allowed": false, "reason": "the test denies it"}),
            }
        }
    };
    review["status"] = status;
    Some(json_response(201, &review))
}

/// Who `token` authenticates as (user, groups), as a TokenReview would answer.
pub fn user_of(reviews: &Mutex<Reviews>, token: &str) -> Option<(String, Vec<String>)> {
    lock(reviews).tokens.get(token).cloned()
}

impl FakeApiServer {
    /// A TokenReview of `token` authenticates `user` in `groups`.
    pub fn accept_token(&self, token: &str, user: &str, groups: &[&str]) {
        let groups = groups.iter().map(|g| g.to_string()).collect();
        lock(&self.shared().reviews)
            .tokens
            .insert(token.to_string(), (user.to_string(), groups));
    }

    /// SubjectAccessReviews are allowed when `rule` says so of their spec.
    pub fn authorize(&self, rule: impl Fn(&Value) -> bool + Send + Sync + 'static) {
        lock(&self.shared().reviews).rule = Some(Arc::new(rule));
    }

    /// Every TokenReview received.
    pub fn token_reviews(&self) -> Vec<Value> {
        lock(&self.shared().reviews).token_reviews.clone()
    }

    /// Every SubjectAccessReview received.
    pub fn access_reviews(&self) -> Vec<Value> {
        lock(&self.shared().reviews).access_reviews.clone()
    }
}
