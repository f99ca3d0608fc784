//! The `Container` resource: its spec and status types, quantities, handles
//! and validation, and the CRD generated from them. Pure data: this room never
//! touches containers, files or the network.

pub mod crd;
pub mod handle;
pub mod quantity;
pub mod types;
pub mod validate;

pub use handle::{Handle, HandleError, MAX_HANDLE_LEN};
pub use types::*;
pub use validate::{FieldError, Resources, ValidationErrors, validate};
