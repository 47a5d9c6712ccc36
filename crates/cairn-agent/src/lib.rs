//! The engines a host runs against the cluster: backup (walk, chunk, hash, compress, upload,
//! commit) and restore (fetch, verify, write with full metadata).
//!
//! Both talk to the cluster only through [`cairn_api::Client`] (the typed cluster API) and to the file system only
//! through `cairn-fs`; the rules they apply (change detection, manifest format, path safety)
//! come from `cairn-core`.

pub mod backup;
pub mod daemon;
pub mod discovery;
pub mod error;
pub mod hooks;
pub mod inplace;
pub mod progress;
pub mod restore;
pub mod rules;

pub use backup::{backup, BackupRequest, BackupSummary};
pub use error::AgentError;
pub use progress::Progress;
pub use restore::{restore, RestoreRequest, RestoreSummary};
