//! Stable error codes: the one vocabulary every interface maps its own error form from.
//!
//! A code never changes meaning once released. The coarse codes (`E1001`..`E1010`, `E1999`)
//! name a kind of failure; the fine ones (`E1011`..) name one refusal the cluster actually
//! makes, and each belongs to a coarse [`family`](ErrorCode::family), so an interface that
//! only cares about the kind maps the family and keeps its behaviour when a finer code is
//! added. A meaning travels as a code, never as prose: the gRPC layer carries the code in the
//! status's metadata (`cairn_proto::status`), a failed job carries it in its record, and the
//! REST, XML and CLI adapters each map it through one table. The text of a message is for
//! people and may be reworded at any time.
//!
//! | code | name | family | definite |
//! |---|---|---|---|
//! | E1001 | InvalidArgument | — | yes |
//! | E1002 | NotFound | — | yes |
//! | E1003 | Conflict | — | yes |
//! | E1004 | ChunksMissing | — | yes |
//! | E1005 | Corrupt | — | yes |
//! | E1006 | DiskFull | — | yes |
//! | E1007 | Unavailable | — | **no** |
//! | E1008 | Unauthenticated | — | yes |
//! | E1009 | PermissionDenied | — | yes |
//! | E1010 | Protected | — | yes |
//! | E1011 | DuplicateName | Conflict | yes |
//! | E1012 | BackupNotFound | NotFound | yes |
//! | E1013 | EnvNotFound | NotFound | yes |
//! | E1014 | HostNotFound | NotFound | yes |
//! | E1015 | JobNotFound | NotFound | yes |
//! | E1016 | JobRunning | Conflict | yes |
//! | E1017 | TargetInUse | Conflict | yes |
//! | E1018 | TargetChanged | Conflict | yes |
//! | E1019 | HostOffline | Unavailable | yes |
//! | E1020 | AgentLost | Unavailable | **no** |
//! | E1021 | SessionExpired | Conflict | yes |
//! | E1022 | PlacementChanged | Conflict | yes |
//! | E1023 | PathNotFound | NotFound | yes |
//! | E1024 | VersionMismatch | Unavailable | yes |
//! | E1999 | Internal | — | **no** |
//!
//! "Definite" ([`ErrorCode::is_definite`]): the answer is a refusal, nothing happened, and
//! the same call may be judged again; otherwise the call may have taken effect.

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
    /// Another backup of the environment already has the name.
    DuplicateName,
    /// The backup does not exist (never did, or was deleted).
    BackupNotFound,
    /// No host runs the environment and it has no backups.
    EnvNotFound,
    /// The host never registered.
    HostNotFound,
    /// The job does not exist (never did, or was pruned).
    JobNotFound,
    /// The environment already has an active (queued or running) job.
    JobRunning,
    /// A restore without force met a target that is in use (a running container).
    TargetInUse,
    /// A restore without force met a target changed since its last backup.
    TargetChanged,
    /// No agent of the job's host took the job in time: the host is offline.
    HostOffline,
    /// The agent running the job stopped renewing its lease: its work may be half done.
    AgentLost,
    /// The backup session is closed or expired: nothing was committed.
    SessionExpired,
    /// The placement changed since the change was computed: nothing was changed.
    PlacementChanged,
    /// The backup holds no object at the path asked for (browsing a backup's tree).
    PathNotFound,
    /// The caller speaks a wire protocol version this node cannot read (or the reverse):
    /// one side must be upgraded first.
    VersionMismatch,
    /// Anything else; details are in the node's log, never in the answer.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 25] = [
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
        ErrorCode::DuplicateName,
        ErrorCode::BackupNotFound,
        ErrorCode::EnvNotFound,
        ErrorCode::HostNotFound,
        ErrorCode::JobNotFound,
        ErrorCode::JobRunning,
        ErrorCode::TargetInUse,
        ErrorCode::TargetChanged,
        ErrorCode::HostOffline,
        ErrorCode::AgentLost,
        ErrorCode::SessionExpired,
        ErrorCode::PlacementChanged,
        ErrorCode::PathNotFound,
        ErrorCode::VersionMismatch,
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
            ErrorCode::DuplicateName => "E1011",
            ErrorCode::BackupNotFound => "E1012",
            ErrorCode::EnvNotFound => "E1013",
            ErrorCode::HostNotFound => "E1014",
            ErrorCode::JobNotFound => "E1015",
            ErrorCode::JobRunning => "E1016",
            ErrorCode::TargetInUse => "E1017",
            ErrorCode::TargetChanged => "E1018",
            ErrorCode::HostOffline => "E1019",
            ErrorCode::AgentLost => "E1020",
            ErrorCode::SessionExpired => "E1021",
            ErrorCode::PlacementChanged => "E1022",
            ErrorCode::PathNotFound => "E1023",
            ErrorCode::VersionMismatch => "E1024",
            ErrorCode::Internal => "E1999",
        }
    }

    /// The coarse code this one refines (a coarse code is its own family). Interfaces that
    /// distinguish only kinds of failure (a gRPC status code, an HTTP status, a retry rule)
    /// decide on the family.
    pub fn family(self) -> ErrorCode {
        match self {
            ErrorCode::DuplicateName
            | ErrorCode::JobRunning
            | ErrorCode::TargetInUse
            | ErrorCode::TargetChanged
            | ErrorCode::SessionExpired
            | ErrorCode::PlacementChanged => ErrorCode::Conflict,
            ErrorCode::BackupNotFound
            | ErrorCode::EnvNotFound
            | ErrorCode::HostNotFound
            | ErrorCode::JobNotFound
            | ErrorCode::PathNotFound => ErrorCode::NotFound,
            // A version mismatch is the cluster unable to serve this caller until an upgrade
            // is finished, not bad input; definite, and never retried (same code each time).
            ErrorCode::HostOffline | ErrorCode::AgentLost | ErrorCode::VersionMismatch => {
                ErrorCode::Unavailable
            }
            ErrorCode::InvalidArgument
            | ErrorCode::NotFound
            | ErrorCode::Conflict
            | ErrorCode::ChunksMissing
            | ErrorCode::Corrupt
            | ErrorCode::DiskFull
            | ErrorCode::Unavailable
            | ErrorCode::Unauthenticated
            | ErrorCode::PermissionDenied
            | ErrorCode::Protected
            | ErrorCode::Internal => self,
        }
    }

    /// Whether the answer is a definite refusal: nothing happened. Unavailable and Internal
    /// may come from a call that took effect (an answer lost, a failure after the write), and
    /// a job whose agent was lost may have done part of its work; every other code is a
    /// decision made before anything changed. (`HostOffline` is of the Unavailable family but
    /// definite: no agent ever took the job.)
    pub fn is_definite(self) -> bool {
        !matches!(
            self,
            ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::AgentLost
        )
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
            ErrorCode::DuplicateName => {
                "choose another name, or rename the backup that has it (cairn backups list)"
            }
            ErrorCode::BackupNotFound => {
                "list the backups (cairn backups list) and use one of those ids"
            }
            ErrorCode::EnvNotFound => {
                "list the environments (cairn envs list); start the agent of its host"
            }
            ErrorCode::HostNotFound => "start the host's agent once so that it registers",
            ErrorCode::JobNotFound => "list the jobs (cairn jobs list); finished jobs are pruned",
            ErrorCode::JobRunning => {
                "wait for the environment's job or cancel it (cairn jobs cancel)"
            }
            ErrorCode::TargetInUse => "stop the container, or restore with force",
            ErrorCode::TargetChanged => "back it up first, or restore with force to overwrite",
            ErrorCode::HostOffline => "start the host's agent (is the host up?), then retry",
            ErrorCode::AgentLost => {
                "check the host's agent and its log; run the job again (nothing half done is kept)"
            }
            ErrorCode::SessionExpired => "run the backup again; it uploads only what is missing",
            ErrorCode::PlacementChanged => "retry; the change is computed from the new placement",
            ErrorCode::PathNotFound => {
                "list the backup's tree (cairn backups ls BACKUP [PATH]) and use a path it shows"
            }
            ErrorCode::VersionMismatch => {
                "upgrade the older side: storage nodes first, then agents, gateways and the CLI"
            }
            ErrorCode::Internal => "see the node's log for details",
        }
    }

    /// The code whose stable string is `s` (`E1001`), if any.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Codes travel in serialized records (a failed job's) as their stable string.
impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ErrorCode::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {s:?}")))
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

    #[test]
    fn released_codes_keep_their_strings() {
        let coarse = [
            (ErrorCode::InvalidArgument, "E1001"),
            (ErrorCode::NotFound, "E1002"),
            (ErrorCode::Conflict, "E1003"),
            (ErrorCode::ChunksMissing, "E1004"),
            (ErrorCode::Corrupt, "E1005"),
            (ErrorCode::DiskFull, "E1006"),
            (ErrorCode::Unavailable, "E1007"),
            (ErrorCode::Unauthenticated, "E1008"),
            (ErrorCode::PermissionDenied, "E1009"),
            (ErrorCode::Protected, "E1010"),
            (ErrorCode::Internal, "E1999"),
        ];
        for (c, s) in coarse {
            assert_eq!(c.as_str(), s);
            assert_eq!(c.family(), c, "a coarse code is its own family");
        }
    }

    #[test]
    fn fine_codes_refine_a_coarse_one() {
        assert_eq!(ErrorCode::DuplicateName.family(), ErrorCode::Conflict);
        assert_eq!(ErrorCode::BackupNotFound.family(), ErrorCode::NotFound);
        assert_eq!(ErrorCode::HostOffline.family(), ErrorCode::Unavailable);
        for c in ErrorCode::ALL {
            // A family is coarse: families do not nest.
            assert_eq!(c.family().family(), c.family(), "{c:?}");
            assert!(!c.hint().is_empty());
        }
    }

    #[test]
    fn only_unavailable_internal_and_a_lost_agent_are_indefinite() {
        let indefinite: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|c| !c.is_definite())
            .collect();
        assert_eq!(
            indefinite,
            [
                ErrorCode::Unavailable,
                ErrorCode::AgentLost,
                ErrorCode::Internal
            ]
        );
        assert!(ErrorCode::HostOffline.is_definite());
    }

    #[test]
    fn codes_serialize_as_their_stable_string() {
        let json = serde_json::to_string(&ErrorCode::DuplicateName).unwrap();
        assert_eq!(json, "\"E1011\"");
        assert_eq!(
            serde_json::from_str::<ErrorCode>(&json).unwrap(),
            ErrorCode::DuplicateName
        );
        assert!(serde_json::from_str::<ErrorCode>("\"E0000\"").is_err());
    }
}
