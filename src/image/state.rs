//! What the image room tells the controller about one container's image:
//! ready (its layers, held until the container's record names them), or
//! waiting (pulling, failed, backing off), with the events to announce.
//! Pure data; reasons stay [`Reason`]s.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::{ImageUse, Reason};

/// Where a container's image stands.
pub enum ImageState {
    /// On the node.
    Ready(ReadyImage),
    /// Not yet, or not at all.
    Waiting(ImageWait),
}

/// An image on the node, for one create.
pub struct ReadyImage {
    /// Which image, and its config's defaults.
    pub image: ImageUse,
    /// Its unpacked layers, top-most first.
    pub lowerdirs: Vec<PathBuf>,
    /// Keeps the store from removing the layers until dropped: hold it
    /// until the container's depot record names the image.
    pub lease: Option<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for ReadyImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyImage")
            .field("image", &self.image)
            .field("lowerdirs", &self.lowerdirs)
            .finish_non_exhaustive()
    }
}

/// Why a container waits for its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageWait {
    /// `Creating` while pulling, `ErrImagePull`, `ImagePullBackOff`,
    /// `ErrImageNeverPull`, `InvalidImageName`.
    pub reason: Reason,
    /// What a user reads in status.
    pub message: String,
    /// When to look again; `None` when the end of a pull wakes the handle.
    pub retry_in: Option<Duration>,
}

/// An event to announce on the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEvent {
    /// A warning, or normal.
    pub warning: bool,
    /// Pulling, Pulled, Failed or BackOff.
    pub reason: Reason,
    /// Its note.
    pub message: String,
}

/// Called once when a pull a handle waits on ends.
pub type Wake = Box<dyn FnOnce() + Send>;
