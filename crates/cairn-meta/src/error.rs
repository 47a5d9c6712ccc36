//! The error of the metadata service, apart from the node that raises most of them: the
//! stores (`store/`) raise it too, and depend on this module rather than on `node.rs`.

use cairn_core::ErrorCode;

/// Errors of the metadata service.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Writes and linearizable reads go to the leader; this names it when known.
    #[error("{}", not_leader_message(.leader_id, .leader_addr))]
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    /// The group cannot serve now: no leader, no quorum, shutting down.
    #[error("metadata service unavailable: {0}")]
    Unavailable(String),
    /// The disk or the embedded database failed.
    #[error("metadata storage failed: {0}")]
    Storage(String),
    /// Stored metadata does not decode.
    #[error("stored metadata is corrupt: {0}")]
    Corrupt(String),
    /// Another process (or another node in this process) holds the metadata database.
    #[error("metadata database {0} is in use by another process; stop it or give this node its own directory")]
    InUse(String),
    /// The configuration cannot work.
    #[error("invalid metadata configuration: {0}")]
    Config(String),
    /// The database was written by a release whose layout this build cannot read.
    #[error("{0}")]
    Format(String),
    /// openraft refused a request for a reason not listed above.
    #[error("metadata raft error: {0}")]
    Raft(String),
}

fn not_leader_message(leader_id: &Option<u64>, leader_addr: &Option<String>) -> String {
    match (leader_id, leader_addr) {
        (Some(id), Some(addr)) => {
            format!("this node is not the metadata leader; the leader is node {id} at {addr}")
        }
        (Some(id), None) => {
            format!("this node is not the metadata leader; the leader is node {id}")
        }
        (None, _) => {
            "this node is not the metadata leader and no leader is known yet; retry shortly"
                .to_string()
        }
    }
}

impl MetaError {
    /// Returns the stable code a user sees for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            MetaError::NotLeader { .. } | MetaError::Unavailable(_) | MetaError::InUse(_) => {
                ErrorCode::Unavailable
            }
            MetaError::Corrupt(_) => ErrorCode::Corrupt,
            MetaError::Config(_) => ErrorCode::InvalidArgument,
            MetaError::Format(_) => ErrorCode::VersionMismatch,
            MetaError::Storage(_) | MetaError::Raft(_) => ErrorCode::Internal,
        }
    }
}
