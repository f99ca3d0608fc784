//! The one event type through which sources write the store, as kube-rs's
//! reflector has one writer: a source resolves and judges what it reads on
//! its own task, then sends [`Update`]s; one writer applies them in order.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::api::{ContainerStatus, Desired, Handle, SourceKind};

/// Errors of manifest files that name no container, by file.
pub type FileErrors = BTreeMap<PathBuf, Vec<String>>;

/// What a source saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A source's complete listing: what it no longer declares goes. The
    /// first one marks the source as listed.
    Listed {
        /// The source.
        kind: SourceKind,
        /// Everything it declares.
        declared: Vec<Desired>,
        /// The errors of its files that name no container (the directory's).
        file_errors: FileErrors,
        /// What the server shows of the objects listed.
        seen: Vec<Sighting>,
    },
    /// One declaration added or changed.
    Declared {
        /// The declaration.
        desired: Box<Desired>,
        /// What the server shows of its object.
        seen: Vec<Sighting>,
    },
    /// One declaration of `kind` is gone.
    Undeclared {
        /// The source.
        kind: SourceKind,
        /// Its handle.
        handle: Handle,
        /// What the server shows of its object.
        seen: Vec<Sighting>,
    },
    /// Nothing declared changed, but the server showed this.
    Seen(Vec<Sighting>),
}

impl Update {
    /// What the server showed, with this update.
    pub fn sightings(&self) -> &[Sighting] {
        match self {
            Update::Listed { seen, .. }
            | Update::Declared { seen, .. }
            | Update::Undeclared { seen, .. }
            | Update::Seen(seen) => seen,
        }
    }
}

/// What the API server shows of an object this agent reports to.
#[derive(Debug, Clone, PartialEq)]
pub enum Sighting {
    /// The status the object of `handle` holds (`None`: none, or gone).
    Status {
        /// The declaration or mirror it belongs to.
        handle: Handle,
        /// Its `.status`.
        status: Option<Box<ContainerStatus>>,
    },
    /// Mirror object `uid` of file-sourced `handle`, as shown.
    Mirror {
        /// The file-sourced container it mirrors.
        handle: Handle,
        /// The object's uid.
        uid: String,
        /// What it shows.
        sight: MirrorSight,
    },
}

/// A mirror object as the server shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorSight {
    /// It exists at this generation, with a spec of this hash.
    At {
        /// `metadata.generation`.
        generation: i64,
        /// The hash of its spec.
        spec_hash: String,
    },
    /// It was deleted.
    Deleted,
}
