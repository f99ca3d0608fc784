//! The puller against a real registry (Debian's `docker-registry`) on
//! loopback, with images built from busybox and pushed with skopeo: TLS
//! with a test CA, plain HTTP when allowed, anonymous and Basic auth,
//! digests verified, a manifest list resolved to this node, zstd layers,
//! and one pull for concurrent pulls of one reference.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/registry.rs"]
mod registry;
#[path = "support/test_images.rs"]
mod test_images;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use registry::{Options, Registry, TokenOptions, test_ca};
use rundmc::api::reference::ImageReference;
use rundmc::image::credentials::Keyring;
use rundmc::image::pull::{Progress, PullError, Puller};
use rundmc::image::registry::{NodePlatform, RegistryConfig};
use rundmc::image::store::Store;
use test_images::{TestImages, images};

/// A store in a temp dir, removed on drop.
struct TempStore {
    dir: PathBuf,
    store: Arc<Store>,
}

impl TempStore {
    fn new(name: &str) -> TempStore {
        let dir = std::env::temp_dir().join(format!("rundmc-pull-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(dir.join("images")).unwrap());
        TempStore { dir, store }
    }

    fn puller(&self, config: RegistryConfig, node: Keyring) -> Puller {
        Puller::new(self.store.clone(), config, node).unwrap()
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls() -> RegistryConfig {
    RegistryConfig {
        insecure: vec![],
        ca_files: vec![test_ca().ca_cert()],
    }
}

fn insecure(r: &Registry) -> RegistryConfig {
    RegistryConfig {
        insecure: vec![r.addr.clone()],
        ca_files: vec![],
    }
}

fn reference(r: &Registry, repo: &str) -> ImageReference {
    ImageReference::parse(&format!("{}/{repo}", r.addr)).unwrap()
}

/// A Docker config.json giving `user:pass` for `registry`, as a keyring.
fn keyring(dir: &std::path::Path, registry: &str, user: &str, pass: &str) -> Keyring {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("config.json");
    let json = serde_json::json!({"auths": {registry: {"username": user, "password": pass}}});
    std::fs::write(&path, json.to_string()).unwrap();
    Keyring::from_file(&path).unwrap()
}

/// Remembers the last progress of each layer.
#[derive(Default)]
struct Seen(Mutex<HashMap<String, (u64, u64)>>);

impl Progress for Seen {
    fn update(&self, digest: &str, done: u64, total: u64) {
        self.0
            .lock()
            .unwrap()
            .insert(digest.to_string(), (done, total));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_over_tls_with_the_test_ca_and_applies_the_config() {
    let imgs = images();
    let reg = Registry::start(Options {
        tls: true,
        ..Default::default()
    });
    reg.push(&imgs.layout, "simple", "app/simple:1");
    let r = reference(&reg, "app/simple:1");

    // Without the CA the registry's certificate is not trusted.
    let untrusted = TempStore::new("tls-untrusted");
    let err = untrusted
        .puller(RegistryConfig::default(), Keyring::empty())
        .pull(&r, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Network { .. }), "{err:?}");
    assert!(err.to_string().contains(&reg.addr), "{err}");

    let t = TempStore::new("tls");
    let seen = Arc::new(Seen::default());
    let pulled = t
        .puller(tls(), Keyring::empty())
        .pull(&r, None, Some(seen.clone()))
        .await
        .unwrap();
    let image = &pulled.image;
    assert_eq!(image.id, TestImages::digest(&imgs.layout, "simple"));
    assert_eq!(image.names, [r.to_string()]);
    assert_eq!(image.layers, imgs.layers("simple"));
    let d = &image.defaults;
    assert_eq!(d.entrypoint, test_images::ENTRYPOINT);
    assert_eq!(d.cmd, [test_images::CMD]);
    assert_eq!(d.env, [test_images::ENV]);
    assert_eq!(d.working_dir.as_deref(), Some(test_images::WORKDIR));
    assert_eq!(d.user.as_deref(), Some(test_images::USER));
    for layer in &image.layers {
        assert!(t.store.has_layer(layer), "{layer} not unpacked");
        let (done, total) = seen.0.lock().unwrap()[layer];
        assert_eq!(done, total, "{layer}: progress ended at {done} of {total}");
    }
    assert!(
        pulled.bytes >= image.size,
        "{} < {}",
        pulled.bytes,
        image.size
    );
    let found = t.store.resolve(&r.to_string()).unwrap().unwrap();
    assert_eq!(found.id, image.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_over_plain_http_only_from_an_insecure_registry() {
    let reg = Registry::start(Options::default());
    reg.push(&images().layout, "simple", "plain:1");
    let r = reference(&reg, "plain:1");

    let t = TempStore::new("http-refused");
    let err = t
        .puller(RegistryConfig::default(), Keyring::empty())
        .pull(&r, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Network { .. }), "{err:?}");
    assert!(t.store.resolve(&r.to_string()).unwrap().is_none());

    let t = TempStore::new("http");
    let pulled = t
        .puller(insecure(&reg), Keyring::empty())
        .pull(&r, None, None)
        .await
        .unwrap();
    assert_eq!(
        pulled.image.id,
        TestImages::digest(&images().layout, "simple")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_takes_the_right_credentials_and_reports_the_wrong() {
    let reg = Registry::start(Options {
        tls: true,
        basic_auth: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    });
    reg.push(&images().layout, "simple", "private/app:1");
    let r = reference(&reg, "private/app:1");
    let t = TempStore::new("auth");
    let creds = t.dir.join("creds");

    // Anonymous: refused, and the message names the registry.
    let err = t
        .puller(tls(), Keyring::empty())
        .pull(&r, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&reg.addr) && msg.contains("unauthorized") && msg.contains("anonymous"),
        "{msg}"
    );

    // Wrong password on the node: refused, naming where the credential came from.
    let wrong = keyring(&creds.join("wrong"), &reg.addr, "alice", "nope");
    let err = t
        .puller(tls(), wrong.clone())
        .pull(&r, None, None)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err:?}");
    assert!(
        msg.contains(&reg.addr)
            && msg.contains("user \"alice\"")
            && msg.contains("wrong/config.json"),
        "{msg}"
    );
    assert!(t.store.resolve(&r.to_string()).unwrap().is_none());

    // The resource's secret is tried before the node's wrong one.
    let right = Keyring::from_dockerconfigjson(
        serde_json::json!({"auths": {format!("https://{}", reg.addr): {"auth": "YWxpY2U6czNjcmV0"}}})
            .to_string()
            .as_bytes(),
        "default/pull-secret",
    )
    .unwrap();
    let pulled = t
        .puller(tls(), wrong)
        .pull(&r, Some(&right), None)
        .await
        .unwrap();
    assert_eq!(
        pulled.image.id,
        TestImages::digest(&images().layout, "simple")
    );

    // The node's right credentials alone.
    let t2 = TempStore::new("auth-node");
    let node = keyring(&creds.join("right"), &reg.addr, "alice", "s3cret");
    t2.puller(tls(), node).pull(&r, None, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_layer_is_refused_by_digest_and_nothing_is_committed() {
    let imgs = images();
    let reg = Registry::start(Options::default());
    reg.push(&imgs.layout, "layers", "corrupt:1");
    let layers = imgs.layers("layers");
    let bad = layers[1].clone();
    reg.corrupt_blob(&bad);
    let r = reference(&reg, "corrupt:1");

    let t = TempStore::new("corrupt");
    let err = t
        .puller(insecure(&reg), Keyring::empty())
        .pull(&r, None, None)
        .await
        .unwrap_err();
    match &err {
        PullError::DigestMismatch { digest, .. } => assert_eq!(digest, &bad),
        other => panic!("want a digest mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains(&bad), "{err}");
    assert!(!t.store.has_layer(&bad), "the corrupt layer was kept");
    assert!(
        t.store.resolve(&r.to_string()).unwrap().is_none(),
        "an image was committed"
    );
    assert!(t.store.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_tag_or_repository_is_not_found() {
    let reg = Registry::start(Options::default());
    reg.push(&images().layout, "simple", "there:1");
    let t = TempStore::new("notfound");
    let puller = t.puller(insecure(&reg), Keyring::empty());
    for missing in ["there:2", "nowhere:1"] {
        let err = puller
            .pull(&reference(&reg, missing), None, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PullError::NotFound { .. }),
            "{missing}: {err:?}"
        );
        assert!(err.to_string().contains("not found"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_arch_index_resolves_to_this_platform() {
    let imgs = images();
    let reg = Registry::start(Options::default());
    reg.push_from(
        &format!("oci:{}:multi", imgs.layout.display()),
        "multi:1",
        &["--all"],
    );
    let t = TempStore::new("multi");
    let pulled = t
        .puller(insecure(&reg), Keyring::empty())
        .pull(&reference(&reg, "multi:1"), None, None)
        .await
        .unwrap();
    let arch = NodePlatform::current().architecture;
    let want = TestImages::digest(&imgs.layout, &format!("multi-{arch}"));
    assert_eq!(pulled.image.id, want, "not the {arch} manifest");
    assert_eq!(pulled.image.layers, imgs.layers(&format!("multi-{arch}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_without_this_platform_says_what_it_has() {
    let imgs = images();
    let reg = Registry::start(Options::default());
    reg.push_from(
        &format!("oci:{}:foreign", imgs.layout.display()),
        "foreign:1",
        &["--all"],
    );
    let t = TempStore::new("foreign");
    let err = t
        .puller(insecure(&reg), Keyring::empty())
        .pull(&reference(&reg, "foreign:1"), None, None)
        .await
        .unwrap_err();
    match &err {
        PullError::NoMatchingPlatform { available, .. } => assert_eq!(available, &["linux/s390x"]),
        other => panic!("want no matching platform, got {other:?}"),
    }
    let arch = NodePlatform::current().architecture;
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("no image for linux/{arch}")) && msg.contains("it has: linux/s390x"),
        "{msg}"
    );
    assert!(t.store.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_schema_2_image_is_pulled() {
    let imgs = images();
    let reg = Registry::start(Options::default());
    let src = format!("oci:{}:layers", imgs.layout.display());
    reg.push_from(&src, "docker:1", &["--format", "v2s2"]);
    let t = TempStore::new("v2s2");
    let pulled = t
        .puller(insecure(&reg), Keyring::empty())
        .pull(&reference(&reg, "docker:1"), None, None)
        .await
        .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&t.store.blob(&pulled.image.id).unwrap().unwrap()).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let layer = &manifest["layers"][0]["mediaType"];
    assert_eq!(layer, "application/vnd.docker.image.rootfs.diff.tar.gzip");
    assert_eq!(pulled.image.layers.len(), imgs.layers("layers").len());
    for l in &pulled.image.layers {
        assert!(t.store.has_layer(l), "{l}");
    }
    assert_eq!(pulled.image.defaults.entrypoint, test_images::ENTRYPOINT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_layer_is_pulled_and_unpacked() {
    let imgs = images();
    let reg = Registry::start(Options::default());
    reg.push(&imgs.zstd_layout, "zstd", "zstd:1");
    let manifest = TestImages::json(
        &imgs.zstd_layout,
        &TestImages::digest(&imgs.zstd_layout, "zstd"),
    );
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let t = TempStore::new("zstd");
    let pulled = t
        .puller(insecure(&reg), Keyring::empty())
        .pull(&reference(&reg, "zstd:1"), None, None)
        .await
        .unwrap();
    assert_eq!(pulled.image.layers, [layer["digest"].as_str().unwrap()]);
    assert!(t.store.has_layer(layer["digest"].as_str().unwrap()));
    assert_eq!(pulled.image.defaults.cmd, [test_images::CMD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_reference_fetch_each_layer_once() {
    let imgs = images();
    let reg = Registry::start(Options::default());
    reg.push(&imgs.layout, "layers", "shared:1");
    let r = reference(&reg, "shared:1");
    let t = TempStore::new("shared");
    let puller = t.puller(insecure(&reg), Keyring::empty());
    let (a, b, c) = tokio::join!(
        puller.pull(&r, None, None),
        puller.pull(&r, None, None),
        puller.pull(&r, None, None)
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!((&a.image.id, &b.image.id), (&c.image.id, &c.image.id));
    for layer in imgs.layers("layers") {
        assert_eq!(
            reg.blob_gets(&layer),
            1,
            "{layer} fetched more than once:\n{}",
            reg.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_by_digest_and_refuses_a_manifest_that_does_not_match_it() {
    let imgs = images();
    let reg = Registry::start(Options::default());
    reg.push(&imgs.layout, "simple", "bydigest:1");
    let digest = TestImages::digest(&imgs.layout, "simple");
    let t = TempStore::new("bydigest");
    let puller = t.puller(insecure(&reg), Keyring::empty());
    let r = reference(&reg, &format!("bydigest@{digest}"));
    let pulled = puller.pull(&r, None, None).await.unwrap();
    assert_eq!(pulled.image.id, digest);
    assert_eq!(t.store.resolve(&r.to_string()).unwrap().unwrap().id, digest);

    // The registry's copy of the manifest corrupted: refused by its digest.
    reg.tamper_manifest(&digest);
    let t = TempStore::new("bydigest-bad");
    let err = t
        .puller(insecure(&reg), Keyring::empty())
        .pull(&r, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::DigestMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&digest), "{err}");
    assert!(t.store.list().unwrap().is_empty());
}

fn token_registry(anonymous_pull: bool) -> Registry {
    let reg = Registry::start(Options {
        token_auth: Some(TokenOptions {
            user: "bob".into(),
            password: "t0ken".into(),
            anonymous_pull,
        }),
        ..Default::default()
    });
    reg.push(&images().layout, "simple", "bearer/app:1");
    reg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_fetched_with_the_credentials_from_the_challenge_realm() {
    let reg = token_registry(false);
    let tokens = reg.tokens.as_ref().unwrap();
    let r = reference(&reg, "bearer/app:1");
    let t = TempStore::new("bearer");
    let creds = t.dir.join("creds");

    let refused = tokens.refused.load(Ordering::SeqCst);
    let err = t
        .puller(insecure(&reg), Keyring::empty())
        .pull(&r, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains(&reg.addr), "{err}");
    assert!(
        tokens.refused.load(Ordering::SeqCst) > refused,
        "the token server was not asked"
    );

    let wrong = keyring(&creds.join("wrong"), &reg.addr, "bob", "nope");
    let err = t
        .puller(insecure(&reg), wrong)
        .pull(&r, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err:?}");

    let issued = tokens.issued.load(Ordering::SeqCst);
    let right = keyring(&creds.join("right"), &reg.addr, "bob", "t0ken");
    let pulled = t
        .puller(insecure(&reg), right)
        .pull(&r, None, None)
        .await
        .unwrap();
    assert_eq!(
        pulled.image.id,
        TestImages::digest(&images().layout, "simple")
    );
    assert!(
        tokens.issued.load(Ordering::SeqCst) > issued,
        "no token was issued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_pulls_get_an_anonymous_token_as_from_docker_hub() {
    let reg = token_registry(true);
    let tokens = reg.tokens.as_ref().unwrap();
    let issued = tokens.issued.load(Ordering::SeqCst);
    let t = TempStore::new("bearer-anon");
    let pulled = t
        .puller(insecure(&reg), Keyring::empty())
        .pull(&reference(&reg, "bearer/app:1"), None, None)
        .await
        .unwrap();
    assert_eq!(
        pulled.image.id,
        TestImages::digest(&images().layout, "simple")
    );
    assert!(
        tokens.issued.load(Ordering::SeqCst) > issued,
        "no token was issued"
    );
}
