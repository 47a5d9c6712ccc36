//! What a catalog decision reads and writes: the read view ([`CatalogRead`]), the changes
//! ([`Write`]) and the outcome ([`Decision`]). A leaf under every module that decides
//! (`catalog`, `agents`, `authz`) and every store that applies (`store/`, `MemCatalog`).

use cairn_core::auth::Rule;
use cairn_core::job::{EnvRecord, HostRecord, Job, JoinTokenRecord, TokenRecord};
use cairn_core::placement::Epoch;
use cairn_core::retention::{EnvConfig, Session};
use cairn_core::{BackupId, BackupRecord, EnvId, ErrorCode};

use crate::command::Response;

/// Read access to the catalog as a decision needs it.
pub trait CatalogRead {
    /// The error of a failed read (a storage problem, never a refusal).
    type Error;

    /// Returns the backup with this exact id.
    fn backup(&self, id: &BackupId) -> Result<Option<BackupRecord>, Self::Error>;

    /// Returns the time of the backup of `env` named `name`, if one has that name.
    fn name_owner(&self, env: EnvId, name: &str) -> Result<Option<i64>, Self::Error>;

    /// Returns the placement epoch in force, if one was ever set.
    fn placement(&self) -> Result<Option<Epoch>, Self::Error>;

    /// Returns the cluster's id, once named.
    fn cluster_id(&self) -> Result<Option<uuid::Uuid>, Self::Error>;

    /// Returns a registered host.
    fn host(&self, id: &str) -> Result<Option<HostRecord>, Self::Error>;

    /// Returns a registered environment.
    fn env(&self, eid: EnvId) -> Result<Option<EnvRecord>, Self::Error>;

    /// Returns a job.
    fn job(&self, id: &uuid::Uuid) -> Result<Option<Job>, Self::Error>;

    /// Returns the environment's active (queued or running) agent job, if any.
    fn active_job(&self, env: EnvId) -> Result<Option<uuid::Uuid>, Self::Error>;

    /// Returns an agent or user token's record.
    fn token(&self, id: &str) -> Result<Option<TokenRecord>, Self::Error>;

    /// Returns a join token's record.
    fn join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>, Self::Error>;

    /// Returns every join token's record (used, unused and expired alike).
    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, Self::Error>;

    /// Returns the backups of one environment (or of all), as of the decision: including
    /// the changes of earlier entries of the same batch.
    fn backups(&self, env: Option<EnvId>) -> Result<Vec<BackupRecord>, Self::Error>;

    /// Returns an environment's own settings ([`EnvId::GLOBAL`]: the cluster-wide ones);
    /// defaults when none were set.
    fn env_config(&self, env: EnvId) -> Result<EnvConfig, Self::Error>;

    /// Returns an open backup session.
    fn session(&self, id: &uuid::Uuid) -> Result<Option<Session>, Self::Error>;

    /// Returns the time of the last backup id given to `env` (deleted or not), if recorded.
    fn last_id(&self, env: EnvId) -> Result<Option<i64>, Self::Error>;
}

/// One change to the catalog's data.
///
/// The name index (`PutName`/`DeleteName`) is written explicitly so that every store keeps
/// it in step with the records in the same atomic write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Inserts or replaces the record stored under `record.id`.
    PutBackup(Box<BackupRecord>),
    /// Removes the record with this id.
    DeleteBackup(BackupId),
    /// Records that the backup of `env` at `time` is named `name`.
    PutName { env: EnvId, name: String, time: i64 },
    /// Removes the name `name` of `env` from the index.
    DeleteName { env: EnvId, name: String },
    /// Replaces the placement epoch.
    PutPlacement(Epoch),
    /// Replaces an environment's settings.
    PutEnvConfig(EnvId, cairn_core::retention::EnvConfig),
    /// Records an open backup session.
    PutSession(cairn_core::retention::Session),
    /// Forgets a backup session.
    DeleteSession(uuid::Uuid),
    /// Records the time of the last backup id given to `env`.
    PutLastId { env: EnvId, time: i64 },
    /// Names the cluster.
    PutClusterId(uuid::Uuid),
    /// Inserts or replaces a host.
    PutHost(HostRecord),
    /// Inserts or replaces an environment.
    PutEnv(EnvRecord),
    /// Forgets an environment (its backups stay).
    DeleteEnv(EnvId),
    /// Inserts or replaces a job.
    PutJob(Box<Job>),
    /// Forgets a job.
    DeleteJob(uuid::Uuid),
    /// Marks the environment's active agent job.
    PutActive(EnvId, uuid::Uuid),
    /// Clears the environment's active agent job.
    DeleteActive(EnvId),
    /// Stores an agent token's record.
    PutToken(TokenRecord),
    /// Removes an agent token's record.
    DeleteToken(String),
    /// Stores a join token's record (new, or redeemed).
    PutJoinToken(JoinTokenRecord),
    /// Removes a join token's record (revoked, or pruned once expired).
    DeleteJoinToken(String),
}

/// The outcome of one command: the writes to make atomically, and the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub writes: Vec<Write>,
    pub response: Response,
}

impl Decision {
    pub(crate) fn refuse(code: ErrorCode, message: String) -> Decision {
        Decision {
            writes: Vec::new(),
            response: Response::Refused {
                code,
                message,
                rule: None,
            },
        }
    }

    /// A permission refusal by `rule`.
    pub(crate) fn deny(rule: cairn_core::auth::Rule, message: String) -> Decision {
        Decision::refused(Refusal::denied(rule, message))
    }

    pub(crate) fn refused(r: Refusal) -> Decision {
        Decision {
            writes: Vec::new(),
            response: Response::Refused {
                code: r.code,
                message: r.message,
                rule: r.rule,
            },
        }
    }
}

/// A refusal: its stable code, a message for people, and the rule it applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    pub rule: Option<Rule>,
}

impl Refusal {
    /// A permission refusal by `rule`.
    pub fn denied(rule: Rule, message: String) -> Refusal {
        Refusal {
            code: ErrorCode::PermissionDenied,
            message,
            rule: Some(rule),
        }
    }
}
