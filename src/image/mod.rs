//! Images: references resolved against OCI registries, pulled into a shared,
//! content-addressed layer store beside the depot, and mounted as overlay
//! lower layers. Owns the store's directory (`--image-store`, default
//! `/var/lib/rundmc/images`) and all registry traffic. It must not touch the
//! depot, containers or the controller: it is told which images are in use.
//!
//! - [`store`]: the on-disk store (image records, unpacked layers, names),
//!   its locks, and what removes from it ([`gc`]); [`unpack`] turns one layer
//!   blob into a directory; [`import`] reads OCI layouts and docker-archives.
//! - [`registry`], [`credentials`] and [`pull`]: the distribution protocol
//!   (through `oci-client`), the node's and a resource's credentials, and the
//!   puller that fetches an image once however many ask for it.
//! - [`state`]: what the controller is told of one container's image.

pub mod credentials;
pub mod gc;
pub mod import;
pub mod manager;
pub mod pull;
pub mod registry;
pub mod state;
pub mod store;
pub mod unpack;
