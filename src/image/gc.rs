//! What removes images and layers from the store: `prune` (every image no
//! container uses), `gc` (least-recently-used unused images while the
//! store's filesystem is fuller than the high-water mark, until it is below
//! the low one: the kubelet's image GC, 85%/80% by default), and the sweep
//! both end with, which removes every layer and blob no remaining image
//! needs. All of it runs under the store's exclusive lock, so no pull or
//! container creation (holding the shared lock) sees a layer go. Which
//! images gc takes is a pure function, [`select`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::sys::statvfs::statvfs;

use super::store::{ImageRecord, Store, StoreError, digest_hex};
use crate::fsutil::FsError;

/// An unreferenced manifest or config younger than this is kept: a pull may
/// have stored it before taking the shared lock for its layers.
const BLOB_GRACE: Duration = Duration::from_secs(600);

/// What a prune or gc removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// The images removed (ids).
    pub images: Vec<String>,
    /// How many layers were removed.
    pub layers: usize,
    /// The bytes of the layers' files removed.
    pub bytes: u64,
}

/// The kubelet's image GC thresholds, in percent of the store's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcThresholds {
    /// Collect when usage is at or above this.
    pub high_percent: u8,
    /// Collect until usage is below this.
    pub low_percent: u8,
}

impl Default for GcThresholds {
    fn default() -> Self {
        GcThresholds {
            high_percent: 85,
            low_percent: 80,
        }
    }
}

/// A filesystem's size and what is free on it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Its size.
    pub capacity: u64,
    /// What an unprivileged writer may still use.
    pub available: u64,
}

impl Usage {
    /// The bytes to free to get below `low_percent`; 0 while usage is under
    /// `high_percent`.
    pub fn to_free(self, t: GcThresholds) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        let used = self.capacity.saturating_sub(self.available);
        let percent = u128::from(used) * 100 / u128::from(self.capacity);
        if percent < u128::from(t.high_percent) {
            return 0;
        }
        let target = u128::from(self.capacity) * u128::from(t.low_percent) / 100;
        u64::try_from(u128::from(used).saturating_sub(target)).unwrap_or(u64::MAX)
    }
}

/// The images gc removes, oldest use first, until removing them frees
/// `to_free` bytes: images in `in_use` never, and a layer's bytes count
/// only once no remaining image has it. `layer_bytes` is by digest.
pub fn select(
    images: &[ImageRecord],
    in_use: &BTreeSet<String>,
    layer_bytes: &BTreeMap<String, u64>,
    to_free: u64,
) -> Vec<String> {
    if to_free == 0 {
        return Vec::new();
    }
    let mut refs: BTreeMap<&str, usize> = BTreeMap::new();
    for layer in images.iter().flat_map(|i| &i.layers) {
        *refs.entry(layer).or_default() += 1;
    }
    let mut candidates: Vec<&ImageRecord> =
        images.iter().filter(|i| !in_use.contains(&i.id)).collect();
    candidates
        .sort_by(|a, b| (a.last_used, a.pulled_at, &a.id).cmp(&(b.last_used, b.pulled_at, &b.id)));
    let mut freed = 0u64;
    let mut chosen = Vec::new();
    for image in candidates {
        if freed >= to_free {
            break;
        }
        for layer in &image.layers {
            let count = refs.entry(layer).or_default();
            *count = count.saturating_sub(1);
            if *count == 0 {
                freed += layer_bytes.get(layer).copied().unwrap_or(0);
            }
        }
        chosen.push(image.id.clone());
    }
    chosen
}

/// What is in use, asked under the store's exclusive lock; an error (the
/// depot could not be read) removes nothing.
pub type InUse<'a> = &'a dyn Fn() -> Result<BTreeSet<String>, String>;

/// The usage of the filesystem holding `path`.
pub fn usage(path: &Path) -> Result<Usage, StoreError> {
    let st = statvfs(path).map_err(|e| FsError::new(path, e.into()))?;
    let frsize = st.fragment_size() as u64;
    Ok(Usage {
        capacity: st.blocks() as u64 * frsize,
        available: st.blocks_available() as u64 * frsize,
    })
}

impl Store {
    /// Removes every image not in `in_use`, then every layer and blob no
    /// remaining image needs.
    pub fn prune(&self, in_use: &BTreeSet<String>) -> Result<PruneReport, StoreError> {
        self.prune_in_use(&|| Ok(in_use.clone()))
    }

    /// [`Store::prune`], asking what is in use only once the store is
    /// locked: a container made in between (its create holds the shared
    /// lock until its record names the image) is then counted.
    pub fn prune_in_use(&self, in_use: InUse<'_>) -> Result<PruneReport, StoreError> {
        let _lock = self.exclusive_lock()?;
        let in_use = in_use().map_err(StoreError::InUseUnknown)?;
        let doomed: Vec<String> = self
            .list()?
            .into_iter()
            .map(|i| i.id)
            .filter(|id| !in_use.contains(id))
            .collect();
        self.remove_images(doomed)
    }

    /// While the store's filesystem is at or above `t.high_percent` full,
    /// removes the least recently used images not in `in_use` until it is
    /// expected below `t.low_percent`; then sweeps unneeded layers.
    pub fn gc(
        &self,
        in_use: &BTreeSet<String>,
        t: GcThresholds,
    ) -> Result<PruneReport, StoreError> {
        self.gc_in_use(&|| Ok(in_use.clone()), t)
    }

    /// [`Store::gc`], asking what is in use only once the store is locked
    /// (see [`Store::prune_in_use`]).
    pub fn gc_in_use(&self, in_use: InUse<'_>, t: GcThresholds) -> Result<PruneReport, StoreError> {
        let _lock = self.exclusive_lock()?;
        let to_free = usage(self.root())?.to_free(t);
        if to_free == 0 {
            return Ok(PruneReport::default());
        }
        let in_use = &in_use().map_err(StoreError::InUseUnknown)?;
        let images = self.list()?;
        let layer_bytes = images
            .iter()
            .flat_map(|i| &i.layers)
            .filter_map(|d| Some((d.clone(), self.layer_bytes(digest_hex(d).ok()?))))
            .collect();
        let doomed = select(&images, in_use, &layer_bytes, to_free);
        self.remove_images(doomed)
    }

    fn remove_images(&self, ids: Vec<String>) -> Result<PruneReport, StoreError> {
        for id in &ids {
            self.remove_record(id)?;
        }
        let (layers, bytes) = self.sweep()?;
        Ok(PruneReport {
            images: ids,
            layers,
            bytes,
        })
    }

    /// Removes every layer no image needs and every manifest or config no
    /// image needs (past [`BLOB_GRACE`]); (layers removed, their bytes).
    /// The caller holds the exclusive lock.
    pub(crate) fn sweep(&self) -> Result<(usize, u64), StoreError> {
        let images = self.list()?;
        let needed: BTreeSet<&str> = images
            .iter()
            .flat_map(|i| i.layers.iter().chain([&i.id, &i.config_digest]))
            .filter_map(|d| digest_hex(d).ok())
            .collect();
        let (mut layers, mut bytes) = (0, 0);
        for hex in self.layer_hexes()? {
            if !needed.contains(hex.as_str()) {
                bytes += self.layer_bytes(&hex);
                self.remove_layer(&hex)?;
                layers += 1;
            }
        }
        self.remove_stale_locks()?;
        for hex in self.blob_hexes()? {
            if !needed.contains(hex.as_str()) && self.blob_age(&hex) >= BLOB_GRACE {
                self.remove_blob(&hex)?;
            }
        }
        Ok((layers, bytes))
    }

    fn blob_age(&self, hex: &str) -> Duration {
        std::fs::metadata(self.root().join("blobs/sha256").join(hex))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ImageDefaults;

    fn image(id: &str, layers: &[&str], last_used: u64) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            names: Vec::new(),
            config_digest: String::new(),
            layers: layers.iter().map(|l| l.to_string()).collect(),
            defaults: ImageDefaults::default(),
            size: 0,
            pulled_at: 0,
            last_used,
        }
    }

    const T: GcThresholds = GcThresholds {
        high_percent: 85,
        low_percent: 80,
    };

    #[test]
    fn usage_frees_only_past_the_high_mark_down_to_the_low() {
        let u = |available| Usage {
            capacity: 1000,
            available,
        };
        assert_eq!(u(160).to_free(T), 0, "84% used");
        assert_eq!(u(150).to_free(T), 50, "85% used: down to 80%");
        assert_eq!(u(0).to_free(T), 200);
        assert_eq!(
            Usage {
                capacity: 0,
                available: 0
            }
            .to_free(T),
            0
        );
    }

    #[test]
    fn select_takes_least_recently_used_unused_images_until_enough_is_freed() {
        let images = [
            image("old", &["a", "shared"], 1),
            image("used", &["shared", "b"], 0),
            image("new", &["c"], 3),
            image("mid", &["d"], 2),
        ];
        let bytes: BTreeMap<String, u64> =
            [("a", 10), ("shared", 100), ("b", 10), ("c", 10), ("d", 10)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        let in_use: BTreeSet<String> = ["used".to_string()].into();
        // "old" frees only "a": "shared" stays with "used".
        assert_eq!(select(&images, &in_use, &bytes, 10), ["old"]);
        assert_eq!(select(&images, &in_use, &bytes, 11), ["old", "mid"]);
        assert_eq!(
            select(&images, &in_use, &bytes, 1000),
            ["old", "mid", "new"]
        );
        assert!(select(&images, &in_use, &bytes, 0).is_empty());
    }
}
