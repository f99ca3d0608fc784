//! Placeholder: image references, parsed and normalised (issue 13).
