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

impl From<cairn_api::Error> for AgentError {
    fn from(e: cairn_api::Error) -> Self {
        match e {
            cairn_api::Error::Unreachable { url, why } => AgentError::Unreachable { url, why },
            cairn_api::Error::Cluster { code, message } => AgentError::Cluster { code, message },
            cairn_api::Error::PermissionDenied { message, .. } => AgentError::Cluster {
                code: ErrorCode::PermissionDenied,
                message,
            },
            cairn_api::Error::Invalid(m) => AgentError::Invalid(m),
            cairn_api::Error::Io { path, source } => AgentError::Io { path, source },
            cairn_api::Error::Chunk(c) => AgentError::Chunk(c),
            cairn_api::Error::Manifest(m) => AgentError::Manifest(m),
            cairn_api::Error::Internal(m) => AgentError::Internal(m),
        }
    }
}
