//! `rundmc image`: the operator's verbs on the node's image store (pull,
//! ls, rm, prune, import), wired from the image room and the depot, which
//! says what containers use. Safe beside a running agent: the store's own
//! locks order them.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::{ImageArgs, ImageCommand, RegistryArgs};
use crate::api::reference::{ImageReference, ReferenceError};
use crate::containerizer::depot::{Depot, DepotError};
use crate::image::credentials::{CredentialsError, Keyring};
use crate::image::gc::InUse;
use crate::image::import::ImportError;
use crate::image::pull::{Progress, PullError, Puller};
use crate::image::registry::RegistryConfig;
use crate::image::store::{ImageRecord, Store, StoreError};

/// Why an image command failed.
#[derive(Debug, Error)]
pub enum ImageCliError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The pull.
    #[error(transparent)]
    Pull(#[from] PullError),
    /// The import.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// The depot, read for the images in use.
    #[error("reading the depot for the images in use: {0}")]
    Depot(#[from] DepotError),
    /// The node's credentials.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// A reference that does not parse.
    #[error("{reference:?}: {source}")]
    Reference {
        /// What was given.
        reference: String,
        /// Why it does not parse.
        source: ReferenceError,
    },
    /// Nothing of that name or id.
    #[error("no image {0} in the store")]
    NoSuchImage(String),
}

/// Run `rundmc image ...`.
pub async fn run(args: ImageArgs) -> Result<(), ImageCliError> {
    let store = Arc::new(Store::open(&args.store.image_store)?);
    match args.command {
        ImageCommand::Pull {
            reference,
            registry,
            quiet,
        } => pull(store, &reference, &registry, quiet).await,
        ImageCommand::Ls { quiet, json } => list(&store, quiet, json),
        ImageCommand::Rm { images } => {
            let depot = Depot::open(&args.store.depot)?;
            remove(&store, &images, &|| {
                depot.images_in_use().map_err(|e| e.to_string())
            })
        }
        ImageCommand::Prune => {
            let depot = Depot::open(&args.store.depot)?;
            let in_use = || depot.images_in_use().map_err(|e| e.to_string());
            let report = store.prune_in_use(&in_use)?;
            for id in &report.images {
                println!("Deleted: {id}");
            }
            println!(
                "Removed {} images and {} layers, {} reclaimed",
                report.images.len(),
                report.layers,
                mib(report.bytes)
            );
            Ok(())
        }
        ImageCommand::Import { path } => {
            for image in store.import(&path)? {
                println!("Imported {} {}", image.id, image.names.join(" "));
            }
            Ok(())
        }
    }
}

/// The registry settings and the node's credentials, as the flags say.
pub fn registry(args: &RegistryArgs) -> Result<(RegistryConfig, Keyring), CredentialsError> {
    let keyring = match &args.image_credentials {
        Some(path) => Keyring::from_file(path)?,
        None => Keyring::node_default()?,
    };
    let config = RegistryConfig {
        insecure: args.insecure_registry.clone(),
        ca_files: args.registry_ca.clone(),
    };
    Ok((config, keyring))
}

async fn pull(
    store: Arc<Store>,
    reference: &str,
    args: &RegistryArgs,
    quiet: bool,
) -> Result<(), ImageCliError> {
    let parsed = ImageReference::parse(reference).map_err(|source| ImageCliError::Reference {
        reference: reference.to_string(),
        source,
    })?;
    let (config, keyring) = registry(args)?;
    let puller = Puller::new(store, config, keyring)?;
    let progress = (!quiet && std::io::stderr().is_terminal())
        .then(|| Arc::new(Bar::new(parsed.to_string())) as Arc<dyn Progress>);
    let pulled = puller.pull(&parsed, None, progress.clone()).await;
    if progress.is_some() {
        eprintln!();
    }
    let pulled = pulled?;
    if quiet {
        println!("{}", pulled.image.id);
    } else {
        println!(
            "Pulled {parsed} {} ({} fetched in {:.1}s)",
            pulled.image.id,
            mib(pulled.bytes),
            pulled.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

fn list(store: &Store, quiet: bool, json: bool) -> Result<(), ImageCliError> {
    let mut images = store.list()?;
    images.sort_by(|a, b| a.names.cmp(&b.names).then(a.id.cmp(&b.id)));
    let mut out = std::io::stdout().lock();
    if !quiet && !json {
        let _ = writeln!(out, "{:<19} {:>10}  NAMES", "IMAGE ID", "SIZE");
    }
    for image in &images {
        let _ = match (quiet, json) {
            (true, _) => writeln!(out, "{}", image.id),
            (_, true) => writeln!(out, "{}", serde_json::json!(image)),
            _ => writeln!(out, "{}", row(image)),
        };
    }
    Ok(())
}

fn row(image: &ImageRecord) -> String {
    let short = image.id.trim_start_matches("sha256:");
    let short = short.get(..12).unwrap_or(short);
    let names = match image.names.is_empty() {
        true => "<none>".to_string(),
        false => image.names.join(", "),
    };
    format!("sha256:{short:<12} {:>10}  {names}", mib(image.size))
}

fn remove(store: &Store, images: &[String], in_use: InUse<'_>) -> Result<(), ImageCliError> {
    for given in images {
        let name = ImageReference::parse(given).map_or_else(|_| given.clone(), |r| r.to_string());
        let target = match store.resolve(&name)? {
            Some(_) => name,
            None if store.resolve(given)?.is_some() => given.clone(),
            None => return Err(ImageCliError::NoSuchImage(given.clone())),
        };
        for removed in store.remove_in_use(&target, in_use)? {
            println!("Deleted: {removed}");
        }
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Each layer's (done, total) bytes, and when the line was last drawn.
type Drawn = (HashMap<String, (u64, u64)>, Instant);

/// One line on a terminal, redrawn at most ten times a second.
struct Bar {
    name: String,
    layers: Mutex<Drawn>,
}

impl Bar {
    fn new(name: String) -> Self {
        let long_ago = Instant::now().checked_sub(Duration::from_secs(1));
        Self {
            name,
            layers: Mutex::new((HashMap::new(), long_ago.unwrap_or_else(Instant::now))),
        }
    }
}

impl Progress for Bar {
    fn update(&self, digest: &str, done: u64, total: u64) {
        let mut guard = crate::sync::lock(&self.layers);
        let (layers, drawn) = &mut *guard;
        layers.insert(digest.to_string(), (done, total));
        let finished = done >= total;
        if drawn.elapsed() < Duration::from_millis(100) && !finished {
            return;
        }
        *drawn = Instant::now();
        let (done, total) = layers
            .values()
            .fold((0, 0), |(d, t), (ld, lt)| (d + ld, t + lt));
        let complete = layers.values().filter(|(d, t)| d >= t).count();
        eprint!(
            "\r{}: {} of {} layers, {} of {}   ",
            self.name,
            complete,
            layers.len(),
            mib(done),
            mib(total)
        );
    }
}
