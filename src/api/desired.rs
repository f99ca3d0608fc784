//! Declarations: one container as a source declares it, tagged with where
//! it came from. Sources make them, the store keeps them, the controller and
//! the reporters read them.

use std::path::PathBuf;

use super::{ContainerSpec, Handle, Reason};

/// Which kind of source declared a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// The watched manifest directory.
    File,
    /// Container custom resources.
    Kube,
}

impl SourceKind {
    /// The value of the depot label that records it.
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Kube => "kube",
        }
    }

    /// The kind named by a depot label.
    pub fn from_label(s: &str) -> Option<Self> {
        match s {
            "file" => Some(SourceKind::File),
            "kube" => Some(SourceKind::Kube),
            _ => None,
        }
    }
}

/// Where exactly a declaration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A document of a manifest file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based document index.
        document: usize,
    },
    /// A custom resource.
    Kube {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its uid.
        uid: String,
    },
}

impl Origin {
    /// The kind of source.
    pub fn kind(&self) -> SourceKind {
        match self {
            Origin::File { .. } => SourceKind::File,
            Origin::Kube { .. } => SourceKind::Kube,
        }
    }
}

/// Why a declaration cannot be applied as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclReason {
    /// It is not a valid `Container`.
    InvalidManifest,
    /// The node's admission policy refuses it.
    Forbidden,
}

impl DeclReason {
    /// The reason reported for it (events, the Valid condition).
    pub fn reason(self) -> Reason {
        match self {
            DeclReason::InvalidManifest => Reason::InvalidManifest,
            DeclReason::Forbidden => Reason::Forbidden,
        }
    }

    /// The reported word.
    pub fn as_str(self) -> &'static str {
        self.reason().as_str()
    }
}

/// Why a declaration cannot be applied as it stands, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclError {
    /// Invalid or refused.
    pub reason: DeclReason,
    /// What is wrong, naming where and which field.
    pub message: String,
}

/// One declared container.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Its handle.
    pub handle: Handle,
    /// Where it was declared.
    pub origin: Origin,
    /// The last valid spec; `None` if the declaration was never valid.
    pub spec: Option<ContainerSpec>,
    /// Bumped on every spec change (`metadata.generation` for resources).
    pub generation: i64,
    /// Why the current declaration cannot be applied, if it cannot.
    pub error: Option<DeclError>,
    /// The declaration is being deleted (a resource with a deletion timestamp).
    pub deleting: bool,
    /// The resource carries rundmc's cleanup finalizer.
    pub finalizer: bool,
}
