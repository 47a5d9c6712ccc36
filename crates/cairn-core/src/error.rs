//! Stable error codes: the one vocabulary every interface maps its own error form from.
//!
//! A code never changes meaning once released. The gRPC layer carries it in the status
//! message prefix (`[E1003] …`); the REST and XML adapters map it to their own forms.

use std::fmt;

/// A stable, user-facing error code with its description and the usual fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Input that does not parse or breaks a rule.
    InvalidArgument,
    /// The named backup, environment or chunk does not exist.
    NotFound,
    /// The request conflicts with current state (duplicate name, running job).
    Conflict,
    /// A backup refers to chunks the cluster does not hold.
    ChunksMissing,
    /// Stored bytes failed verification.
    Corrupt,
    /// The node has no space left.
    DiskFull,
    /// The node cannot serve right now (no leader, shutting down).
    Unavailable,
    /// Missing or wrong credentials.
    Unauthenticated,
    /// Authenticated but not allowed.
    PermissionDenied,
    /// The backup is protected: nothing removes it until an admin unprotects it.
    Protected,
    /// Anything else; details are in the node's log, never in the answer.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::ChunksMissing,
        ErrorCode::Corrupt,
        ErrorCode::DiskFull,
        ErrorCode::Unavailable,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::Protected,
        ErrorCode::Internal,
    ];

    /// The code's stable string, e.g. `E1001`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "E1001",
            ErrorCode::NotFound => "E1002",
            ErrorCode::Conflict => "E1003",
            ErrorCode::ChunksMissing => "E1004",
            ErrorCode::Corrupt => "E1005",
            ErrorCode::DiskFull => "E1006",
            ErrorCode::Unavailable => "E1007",
            ErrorCode::Unauthenticated => "E1008",
            ErrorCode::PermissionDenied => "E1009",
            ErrorCode::Protected => "E1010",
            ErrorCode::Internal => "E1999",
        }
    }

    /// What an operator should try.
    pub fn hint(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "check the value named in the message",
            ErrorCode::NotFound => "list what exists (cairn backups list) and use one of those ids",
            ErrorCode::Conflict => "wait for the running operation or choose another name",
            ErrorCode::ChunksMissing => "re-run the backup; it uploads only what is missing",
            ErrorCode::Corrupt => "run cairn scrub; the copy will be replaced from a replica",
            ErrorCode::DiskFull => {
                "free space on the node or add a node; existing backups are intact"
            }
            ErrorCode::Unavailable => "retry shortly; check cairn cluster status",
            ErrorCode::Unauthenticated => "supply valid credentials",
            ErrorCode::PermissionDenied => "use an account with the needed role",
            ErrorCode::Protected => "an admin unprotects it first (cairn backups unprotect ID)",
            ErrorCode::Internal => "see the node's log for details",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()));
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
    }
}
