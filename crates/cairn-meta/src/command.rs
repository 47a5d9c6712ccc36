//! What the metadata group agrees on: commands in the raft log and the answers they produce.
//!
//! Commands are stored in the raft log as JSON (externally tagged), so new variants and new
//! `#[serde(default)]` fields can be added without breaking logs that are already written.
//! A node must not run older code than the newest command in its log: it would fail to decode
//! it, which openraft treats as a storage error.
//!
//! The catalog will grow here: nodes, placement epochs, hosts and their environments, jobs,
//! users, per-environment configuration. Every refusal, whatever the command, is
//! [`Response::Refused`] with a stable [`ErrorCode`].

use cairn_core::{BackupId, BackupRecord, ErrorCode};
use serde::{Deserialize, Serialize};

/// A change to the catalog, replicated through raft and applied by every member in log order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Records a finished backup. `record.id.time` is the requested second: if the
    /// environment already has a backup at that second, the record is stored at the first
    /// free later second. Refused with [`ErrorCode::Conflict`] when the record carries a name
    /// that another backup of the same environment already has.
    CommitBackup { record: BackupRecord },
    /// Removes a backup from the catalog (its chunks are reclaimed later by GC).
    DeleteBackup { id: BackupId },
    /// Changes the user-editable fields of a backup; `None` leaves a field as it is and an
    /// empty name removes the name.
    UpdateBackup {
        id: BackupId,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        tags: Option<Vec<String>>,
    },
    /// Sets the storage nodes and the replication factor chunks are placed over. A layout
    /// that differs from the current one becomes the next placement epoch; the same layout
    /// (addresses aside) keeps the epoch number.
    SetPlacement {
        nodes: Vec<cairn_core::placement::PlacementNode>,
        rf: u32,
        /// Refused with `Conflict` unless the epoch in force has this number: a change
        /// computed from an epoch that another change has since replaced would undo it.
        #[serde(default)]
        expect_epoch: Option<u64>,
    },
    /// Replaces an environment's backup settings.
    SetEnvConfig {
        env: cairn_core::EnvId,
        config: cairn_core::retention::EnvConfig,
    },
    /// Registers a backup in progress (garbage collection waits for it).
    OpenSession {
        session: cairn_core::retention::Session,
    },
    /// Ends a backup session; unknown ids are fine (already closed or expired).
    CloseSession { id: uuid::Uuid },
    /// Names the cluster, once: proposed by the node that formed it. Later proposals keep
    /// the first id.
    SetClusterId { id: uuid::Uuid },
}

impl Command {
    /// Returns a short constant name of the command, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CommitBackup { .. } => "commit_backup",
            Command::DeleteBackup { .. } => "delete_backup",
            Command::UpdateBackup { .. } => "update_backup",
            Command::SetPlacement { .. } => "set_placement",
            Command::SetEnvConfig { .. } => "set_env_config",
            Command::OpenSession { .. } => "open_session",
            Command::CloseSession { .. } => "close_session",
            Command::SetClusterId { .. } => "set_cluster_id",
        }
    }
}

/// The answer of the state machine to one applied log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The entry carried no command (a leader's blank entry or a membership change).
    Empty,
    /// The backup is committed under `id`, which may be later than the requested second.
    Committed { id: BackupId },
    /// The backup is gone from the catalog.
    Deleted,
    /// The backup's fields are changed.
    Updated,
    /// The placement epoch in force after the command.
    Placement { epoch: u64 },
    /// The command took effect and has nothing to report.
    Done,
    /// The command was refused; nothing changed. `code` is the stable error code a user sees.
    Refused {
        #[serde(with = "error_code_serde")]
        code: ErrorCode,
        message: String,
    },
}

impl Response {
    /// Builds a refusal.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Refused {
            code,
            message: message.into(),
        }
    }

    /// Returns the refusal's code and message, if this is a refusal.
    pub fn refusal(&self) -> Option<(ErrorCode, &str)> {
        match self {
            Response::Refused { code, message } => Some((*code, message)),
            _ => None,
        }
    }
}

/// Serializes an [`ErrorCode`] as its stable string (`E1003`), which never changes meaning.
mod error_code_serde {
    use cairn_core::ErrorCode;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(code: &ErrorCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(code.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        let s = String::deserialize(d)?;
        ErrorCode::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::EnvId;

    #[test]
    fn refusals_carry_the_stable_code_string() {
        let r = Response::refused(ErrorCode::Conflict, "duplicate name");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"Refused":{"code":"E1003","message":"duplicate name"}}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), r);
        assert!(
            serde_json::from_str::<Response>(r#"{"Refused":{"code":"E0000","message":"x"}}"#)
                .is_err()
        );
    }

    #[test]
    fn update_fields_default_to_unchanged() {
        let id = BackupId::new(EnvId::derive("h/ct"), 1_700_000_000);
        let json = format!(
            r#"{{"UpdateBackup":{{"id":{}}}}}"#,
            serde_json::to_string(&id).unwrap()
        );
        let cmd: Command = serde_json::from_str(&json).unwrap();
        assert_eq!(
            cmd,
            Command::UpdateBackup {
                id,
                name: None,
                description: None,
                tags: None
            }
        );
        assert_eq!(cmd.kind(), "update_backup");
    }
}
