//! The `Container` resource: its spec and status types, quantities, handles
//! and validation, and the CRD generated from them; and the vocabulary every
//! other room shares: declarations and their origins, reasons, and the marks
//! rundmc writes (finalizer, mirror annotation, spec hash). Pure data: this
//! room never touches containers, files or the network, and imports no other.

pub mod capability;
pub mod crd;
pub mod desired;
pub mod handle;
pub mod ident;
pub mod image;
pub mod pods;
pub mod probe;
pub mod quantity;
pub mod reason;
pub mod reference;
pub mod secctx;
pub mod security;
pub mod sysctl;
pub mod types;
pub mod validate;

pub use desired::{DeclError, DeclReason, Desired, Origin, SourceKind};
pub use handle::{Handle, HandleError, MAX_HANDLE_LEN};
pub use ident::{FINALIZER, MIRROR_OF, SOURCE_LABEL, spec_hash};
pub use image::{ImageDefaults, ImageUse};
pub use reason::Reason;
pub use types::*;
pub use validate::{FieldError, Resources, ValidationErrors, validate};
