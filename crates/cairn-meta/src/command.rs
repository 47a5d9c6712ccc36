//! What the metadata group agrees on: commands in the raft log and the answers they produce.
//!
//! Commands are stored in the raft log as JSON (externally tagged), so new variants and new
//! `#[serde(default)]` fields can be added without breaking logs that are already written.
//! A node must not run older code than the newest command in its log: it would fail to decode
//! it, which openraft treats as a storage error.
//!
//! The catalog holds backups, the placement epoch, hosts and their environments, jobs,
//! agent and user tokens and per-environment configuration. Commands that depend on time
//! carry it (`now_ms`, the proposing leader's clock) so every member decides alike. Every
//! refusal, whatever the command, is [`Response::Refused`] with a stable [`ErrorCode`].
//!
//! # Who asked travels with the command
//! A log entry is a [`Proposal`]: the command and the [`Principal`] it is proposed for (the
//! caller a node authenticated, or the one a forwarding node vouched for; the cluster itself
//! for the leader's own work). The catalog's decision authorizes it
//! (`crate::authz`), so the leader, every follower and a replay reach the same answer.
//! Entries written before principals travelled hold a bare command; they were authorized by
//! the service that proposed them and decode as proposed by the cluster.

use cairn_core::auth::Principal;
use cairn_core::job::{
    EnvRecord, HostRecord, Job, JobOptions, JobProgress, JobResult, JobState, JoinTokenRecord,
    TokenRecord,
};
use cairn_core::{BackupId, BackupRecord, EnvId, ErrorCode};
use serde::{Deserialize, Deserializer, Serialize};

/// One entry of the log: a command and who it is proposed for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Proposal {
    pub by: Principal,
    pub cmd: Command,
}

impl Proposal {
    /// `cmd` proposed for `by`.
    pub fn new(by: Principal, cmd: Command) -> Proposal {
        Proposal { by, cmd }
    }

    /// `cmd` proposed by the cluster itself (sweeper, health watcher, bootstrap).
    pub fn system(cmd: Command) -> Proposal {
        Proposal {
            by: Principal::Cluster,
            cmd,
        }
    }
}

impl<'de> Deserialize<'de> for Proposal {
    /// Reads `{"by":…,"cmd":…}`, or a bare command of a log written before principals
    /// travelled (see the module note).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Proposal, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Current { by: Principal, cmd: Command },
            Legacy(Command),
        }
        Ok(match Wire::deserialize(d)? {
            Wire::Current { by, cmd } => Proposal { by, cmd },
            Wire::Legacy(cmd) => Proposal::system(cmd),
        })
    }
}

/// A request for a job, as the caller made it; the catalog resolves and authorizes it
/// (which environment, host and backup) when it decides [`Command::SubmitJob`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobRequest {
    /// `backup`, `restore`, `selective_restore`, `delete` or `update`.
    pub kind: String,
    /// The environment; `None`: the backup's.
    pub env: Option<EnvId>,
    /// Restore: run on this host instead of the environment's.
    pub host: Option<String>,
    pub options: JobOptions,
}

/// A change to the catalog, replicated through raft and applied by every member in log order.
// Commands live briefly between a request and the log (where they are JSON); their size in
// memory does not matter, and boxing the record would only add noise at every call site.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Records a finished backup. `record.id.time` is the requested second: if the
    /// environment already has a backup at that second, the record is stored at the first
    /// free later second. Refused with [`ErrorCode::Conflict`] when the record carries a name
    /// that another backup of the same environment already has ([`ErrorCode::DuplicateName`]).
    CommitBackup {
        record: BackupRecord,
        /// The backup job an agent commits for (agents commit only inside one).
        #[serde(default)]
        job: Option<uuid::Uuid>,
        /// The proposer's clock: retention's grace counts from it.
        #[serde(default)]
        now_ms: i64,
        /// The backup session the commit ends. It must be open (an expired session was
        /// closed by garbage collection, which may have swept its chunks); a second commit in
        /// the same session answers the first one's backup (a client's retry after a lost
        /// answer commits nothing twice).
        #[serde(default)]
        session: Option<uuid::Uuid>,
    },
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
        /// How many zones a chunk's copies span; `None` keeps the current epoch's setting
        /// (the maximum spread for a first epoch). Commands written before the setting
        /// existed read as `None`.
        #[serde(default)]
        zone_redundancy: Option<cairn_core::placement::ZoneRedundancy>,
        /// Refused with `Conflict` unless the epoch in force has this number: a change
        /// computed from an epoch that another change has since replaced would undo it.
        #[serde(default)]
        expect_epoch: Option<u64>,
    },
    /// Replaces an environment's backup settings (then applies its retention).
    SetEnvConfig {
        env: cairn_core::EnvId,
        config: cairn_core::retention::EnvConfig,
        #[serde(default)]
        now_ms: i64,
    },
    /// Protects a backup from every removal, or lifts the protection.
    ProtectBackup { id: BackupId, protected: bool },
    /// Assigns an environment to a host (an operator's decision: an agent never takes over
    /// an environment another host runs or took backups of).
    MoveEnv {
        eid: EnvId,
        host: String,
        now_ms: i64,
    },
    /// Queues a job: the catalog resolves the request (environment, host, backup), decides
    /// whether the proposer may run it, and stores it as `id`. Delete and update jobs are
    /// carried out in the same decision and stored finished.
    SubmitJob {
        id: uuid::Uuid,
        request: JobRequest,
        now_ms: i64,
        queue_timeout_ms: i64,
    },
    /// Registers a backup in progress (garbage collection waits for it).
    OpenSession {
        session: cairn_core::retention::Session,
    },
    /// Ends a backup session; unknown ids are fine (already closed or expired).
    CloseSession { id: uuid::Uuid },
    /// Keeps a running backup's session from expiring; refused when it is closed already.
    RenewSession { id: uuid::Uuid, now_ms: i64 },
    /// Names the cluster, once: proposed by the node that formed it. Later proposals keep
    /// the first id.
    SetClusterId { id: uuid::Uuid },
    /// Registers or refreshes a host and replaces the list of environments it runs. An
    /// environment another host runs or took backups of is never taken over (it is
    /// answered as a conflict; `MoveEnv` is the operator's way).
    RegisterHost {
        host: HostRecord,
        envs: Vec<EnvRecord>,
        now_ms: i64,
        /// Unused since environments are never taken over; kept so old entries decode.
        #[serde(default)]
        takeover_after_ms: i64,
    },
    /// Stores a job as it is (written by nodes before jobs were admitted by the catalog;
    /// only the cluster may propose it). Refused with `Conflict` while the environment has
    /// another active (queued or running) agent job.
    CreateJob { job: Box<Job> },
    /// The agent of `host` takes a queued job and holds it until `lease_until_ms`.
    ClaimJob {
        id: uuid::Uuid,
        host: String,
        now_ms: i64,
        lease_until_ms: i64,
    },
    /// Records a running job's progress and renews its lease.
    ReportProgress {
        id: uuid::Uuid,
        host: String,
        progress: JobProgress,
        lease_until_ms: i64,
        /// The proposer's clock: when a new phase is logged. 0 in commands written before
        /// reports carried it (the agent's time is logged then).
        #[serde(default)]
        now_ms: i64,
    },
    /// Ends a job: by its agent (`host`), or by the cluster (`None`).
    FinishJob {
        id: uuid::Uuid,
        host: Option<String>,
        state: JobState,
        reason: String,
        /// A failed job's stable code (absent in entries written before jobs had codes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<ErrorCode>,
        result: JobResult,
        now_ms: i64,
    },
    /// Cancels a queued job, or asks the agent of a running one to stop.
    CancelJob { id: uuid::Uuid, now_ms: i64 },
    /// Fails a job whose lease or queue timeout passed by `now_ms` (proposed by the leader's
    /// job sweeper; refused when a renewal got there first).
    ExpireJob { id: uuid::Uuid, now_ms: i64 },
    /// Forgets finished jobs (the sweeper prunes old ones).
    DeleteJobs { ids: Vec<uuid::Uuid> },
    /// Stores an agent or user token's record (its hash, never the token).
    PutToken { record: TokenRecord },
    /// Revokes agent or user tokens by id.
    RevokeTokens { ids: Vec<String> },
    /// Stores a new join token's record (its hash, never the token).
    PutJoinToken { record: JoinTokenRecord },
    /// Redeems the join token its proposer holds ([`cairn_core::auth::Principal::JoinToken`])
    /// for `agent`, an agent token of the join token's host, at `now_ms`.
    RedeemJoinToken {
        host: String,
        agent: TokenRecord,
        now_ms: i64,
    },
    /// Revokes join tokens by id (their records go: a revoked token is unknown).
    RevokeJoinTokens { ids: Vec<String> },
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
            Command::ProtectBackup { .. } => "protect_backup",
            Command::MoveEnv { .. } => "move_env",
            Command::SubmitJob { .. } => "submit_job",
            Command::OpenSession { .. } => "open_session",
            Command::CloseSession { .. } => "close_session",
            Command::RenewSession { .. } => "renew_session",
            Command::SetClusterId { .. } => "set_cluster_id",
            Command::RegisterHost { .. } => "register_host",
            Command::CreateJob { .. } => "create_job",
            Command::ClaimJob { .. } => "claim_job",
            Command::ReportProgress { .. } => "report_progress",
            Command::FinishJob { .. } => "finish_job",
            Command::CancelJob { .. } => "cancel_job",
            Command::ExpireJob { .. } => "expire_job",
            Command::DeleteJobs { .. } => "delete_jobs",
            Command::PutToken { .. } => "put_token",
            Command::RevokeTokens { .. } => "revoke_tokens",
            Command::PutJoinToken { .. } => "put_join_token",
            Command::RedeemJoinToken { .. } => "redeem_join_token",
            Command::RevokeJoinTokens { .. } => "revoke_join_tokens",
        }
    }
}

/// The answer of the state machine to one applied log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The entry carried no command (a leader's blank entry or a membership change).
    Empty,
    /// The backup is committed under `id`, which may be later than the requested second;
    /// `removed` are the backups its environment's retention removed in the same write.
    Committed {
        id: BackupId,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removed: Vec<BackupId>,
    },
    /// The backup is gone from the catalog.
    Deleted,
    /// The backup's fields are changed.
    Updated,
    /// The placement epoch in force after the command.
    Placement { epoch: u64 },
    /// The command took effect and has nothing to report.
    Done,
    /// The backup after the command.
    Backup { record: Box<BackupRecord> },
    /// Settings stored; retention removed these backups.
    Configured {
        #[serde(default)]
        removed: Vec<BackupId>,
    },
    /// A host is registered; these environments run on another host and were left there.
    Registered { conflicts: Vec<cairn_core::EnvId> },
    /// The job after the command.
    Job { job: Box<Job> },
    /// How many records the command removed.
    Removed { count: u32 },
    /// The command was refused; nothing changed. `code` is the stable error code a user sees.
    Refused {
        #[serde(with = "error_code_serde")]
        code: ErrorCode,
        message: String,
        /// For a permission refusal, the rule it applies (a stable name callers may match).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<cairn_core::auth::Rule>,
    },
}

impl Response {
    /// Builds a refusal.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Refused {
            code,
            message: message.into(),
            rule: None,
        }
    }

    /// The permission rule a refusal applies, if it is one.
    pub fn rule(&self) -> Option<cairn_core::auth::Rule> {
        match self {
            Response::Refused { rule, .. } => *rule,
            _ => None,
        }
    }

    /// Returns the refusal's code and message, if this is a refusal.
    pub fn refusal(&self) -> Option<(ErrorCode, &str)> {
        match self {
            Response::Refused { code, message, .. } => Some((*code, message)),
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

    #[test]
    fn proposals_carry_who_asked_and_old_entries_read_as_the_cluster() {
        let id = BackupId::new(EnvId::derive("h/ct"), 1_700_000_000);
        let p = Proposal::new(
            Principal::Agent { host: "hn1".into() },
            Command::DeleteBackup { id },
        );
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            json.starts_with(r#"{"by":{"Agent":{"host":"hn1"}},"cmd":"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Proposal>(&json).unwrap(), p);
        // A bare command, as logs before principals travelled hold it.
        let legacy = serde_json::to_string(&Command::DeleteBackup { id }).unwrap();
        assert_eq!(
            serde_json::from_str::<Proposal>(&legacy).unwrap(),
            Proposal::system(Command::DeleteBackup { id })
        );
        // An old commit (no job, no clock) still decodes.
        let old = format!(
            r#"{{"by":"Cluster","cmd":{{"DeleteBackup":{{"id":{}}}}}}}"#,
            serde_json::to_string(&id).unwrap()
        );
        assert_eq!(
            serde_json::from_str::<Proposal>(&old).unwrap().by,
            Principal::Cluster
        );
    }
}
