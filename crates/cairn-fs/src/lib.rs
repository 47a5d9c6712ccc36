//! Reading and recreating file-system objects with full metadata, safely.
//!
//! The backup side walks a tree ([`Walker`]), turns each object into a manifest
//! [`Entry`](cairn_core::Entry) ([`read_entry`]) and reads a file's data regions without its
//! sparse holes ([`holes`], [`DataReader`]). The restore side ([`Restorer`]) recreates entries
//! inside a target directory and never writes outside it, whatever the manifest says.
//!
//! Content chunking and hashing are not done here: the agent crate owns them. This crate
//! hands out file handles and byte regions.
//!
//! [`compare`] compares two trees (what `cairn demo` checks a restore with). `testing`, only
//! with the `testing` feature that dev-dependencies enable, holds the helpers that build a
//! tree with every kind of object; integration tests elsewhere in the workspace use them too.

mod error;
mod read;
mod restore;
mod walk;

pub mod compare;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{show, FsError};
pub use read::{data_regions, holes, read_entry, read_xattrs, DataReader};
pub use restore::{RestoreOptions, RestoreReport, Restorer, Withheld};
pub use walk::{WalkError, WalkItem, Walker};
