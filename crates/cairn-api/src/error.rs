//! The one error of the cluster API.
//!
//! What a caller decides on is [`Error::code`], a stable [`ErrorCode`] a node put in the
//! status metadata (`cairn-code`, read by [`cairn_proto::stable_code`]) — never the wording
//! of a message. A status without a node's code comes from the transport and is
//! [`Error::Unreachable`]: the call may or may not have happened, and may be tried on another
//! node.

use cairn_core::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node did not answer, or the connection broke mid-call.
    #[error("cannot reach the cluster at {url}: {why}")]
    Unreachable { url: String, why: String },
    /// A node refused or failed the call, with its stable code.
    #[error("{message}")]
    Cluster { code: ErrorCode, message: String },
    /// A node refused the call for want of a right: `rule` names the rule it applied
    /// (`agent-own-host`, `access-table`, …; `None` from a node that does not name it).
    #[error("{message}")]
    PermissionDenied {
        rule: Option<cairn_core::auth::Rule>,
        message: String,
    },
    /// The request cannot be sent as it is (a bad address, a malformed value).
    #[error("{0}")]
    Invalid(String),
    /// A local file the client needs (e.g. the CA certificate) cannot be read.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A chunk a node served does not decode to its id.
    #[error("{0}")]
    Chunk(#[from] cairn_chunker::ChunkError),
    /// A stored manifest does not decode (bad magic, unknown version, a damaged or unsafe
    /// entry, entries out of walk order).
    #[error("{0}")]
    Manifest(#[from] cairn_core::manifest::ManifestError),
    /// A node answered something this client cannot read.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Unreachable { .. } => ErrorCode::Unavailable,
            Error::Cluster { code, .. } => *code,
            Error::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            Error::Invalid(_) => ErrorCode::InvalidArgument,
            Error::Chunk(_) | Error::Manifest(_) => ErrorCode::Corrupt,
            Error::Io { .. } | Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Whether a node decided this (refused or failed it with a stable code): the call
    /// reached a node, and "may have happened" does not apply.
    pub fn is_answer(&self) -> bool {
        matches!(self, Error::Cluster { .. } | Error::PermissionDenied { .. })
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        let code = cairn_proto::code_of(&s);
        let message = cairn_proto::message_of(&s).to_string();
        if code == ErrorCode::PermissionDenied {
            return Error::PermissionDenied {
                rule: cairn_proto::rule_of(&s),
                message,
            };
        }
        Error::Cluster { code, message }
    }
}

impl From<cairn_proto::WireError> for Error {
    fn from(e: cairn_proto::WireError) -> Self {
        Error::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_answer_is_read_by_its_code_not_its_words() {
        let s = cairn_proto::status(ErrorCode::DuplicateName, "whatever the words say");
        let e = Error::from(s);
        assert_eq!(e.code(), ErrorCode::DuplicateName);
        assert!(e.is_answer());
        assert_eq!(e.to_string(), "whatever the words say");
        // A permission refusal names its rule in the metadata, not in the words.
        let s = cairn_proto::refusal(
            ErrorCode::PermissionDenied,
            Some(cairn_core::auth::Rule::AgentOwnHost),
            "no",
        );
        match Error::from(s) {
            Error::PermissionDenied { rule, message } => {
                assert_eq!(rule, Some(cairn_core::auth::Rule::AgentOwnHost));
                assert_eq!(message, "no");
            }
            other => panic!("{other:?}"),
        }
        let s = tonic::Status::permission_denied("rule agent-own-host: no");
        assert!(matches!(
            Error::from(s),
            Error::PermissionDenied { rule: None, .. }
        ));
        // Prose that looks like a code is not one.
        let s = tonic::Status::not_found("[E1011] no backup");
        assert_eq!(Error::from(s).code(), ErrorCode::NotFound);
    }

    #[test]
    fn a_status_without_a_nodes_code_is_the_transport_and_may_be_retried() {
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::Unknown,
            tonic::Code::Cancelled,
            tonic::Code::Internal,
        ] {
            let e = crate::client::call_error("http://n1", tonic::Status::new(code, "broken"));
            assert!(matches!(e, Error::Unreachable { .. }), "{code:?}: {e:?}");
            assert!(!e.is_answer());
        }
        // The same gRPC code with a node's code is that node's answer.
        let e = crate::client::call_error(
            "http://n1",
            cairn_proto::status(ErrorCode::Internal, "the node failed"),
        );
        assert!(e.is_answer());
    }
}
