//! Cairn's domain model: the types every other crate speaks, and the decisions that need no IO.
//!
//! This crate sits at the bottom of the dependency ladder. It knows nothing about sled, raft,
//! gRPC or the file system: it takes data and returns data, so that its rules (path safety,
//! change detection, manifest encoding, id formats) can be tested exhaustively and fast.

pub mod auth;
pub mod backup;
pub mod change;
pub mod error;
pub mod fslock;
pub mod id;
pub mod job;
pub mod manifest;
pub mod path;
pub mod placement;
pub mod plan;
pub mod retention;
pub mod runs;
pub mod secret;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod totals;

pub use backup::{BackupRecord, BackupState, BackupType, Compression, EnvInfo};
pub use error::ErrorCode;
pub use id::{BackupId, ChunkId, EnvId, IdError};
pub use manifest::{ChunkRef, Entry, EntryKind};
