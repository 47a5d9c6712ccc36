//! Errors of the backup and restore engines, phrased for the operator who ran them.

use cairn_core::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the cluster at {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("{message}")]
    Cluster { code: ErrorCode, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Fs(#[from] cairn_fs::FsError),
    #[error("{0}")]
    Manifest(#[from] cairn_core::manifest::ManifestError),
    #[error("{0}")]
    Chunk(#[from] cairn_chunker::ChunkError),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("cancelled; nothing was committed")]
    Cancelled,
}

impl AgentError {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            AgentError::Unreachable { .. } => ErrorCode::Unavailable,
            AgentError::Cluster { code, .. } => *code,
            AgentError::Invalid(_) | AgentError::Fs(_) => ErrorCode::InvalidArgument,
            AgentError::Manifest(_) | AgentError::Chunk(_) => ErrorCode::Corrupt,
            AgentError::Io { .. } | AgentError::Internal(_) => ErrorCode::Internal,
            AgentError::Cancelled => ErrorCode::Conflict,
        }
    }
}

impl From<tonic::Status> for AgentError {
    fn from(s: tonic::Status) -> Self {
        AgentError::Cluster {
            code: cairn_proto::code_of(&s),
            message: cairn_proto::message_of(&s).to_string(),
        }
    }
}
