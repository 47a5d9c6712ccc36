//! Hosts, the environments they report, the jobs the cluster hands them, and agent tokens.
//!
//! # Job lifecycle
//! ```text
//!            claim (the env's agent)          finish(succeeded | failed | cancelled)
//!  queued ───────────────────────────▶ running ─────────────────────────────────▶ done
//!    │  cancel / queue timeout            │  lease not renewed by `lease_until_ms`
//!    └──────────────▶ cancelled | failed  └──────────────▶ failed ("agent stopped …")
//! ```
//! Every transition is a method on [`Job`] that takes the time from its caller (the raft
//! command carries the leader's clock) and either changes the job or says why it may not: the
//! same log applied on every member reaches the same state. A running job is held by a lease
//! its agent renews with every progress report; cancelling a running job only sets
//! `cancel_requested`, which the agent reads in the answer to its next report, stops, and
//! finishes the job as cancelled.
//!
//! At most one backup or restore job per environment is active (queued or running) at a
//! time; the catalog keeps that index, and a second request is refused as a conflict.

use serde::{Deserialize, Serialize};

use crate::backup::{BackupType, Compression};
use crate::id::{BackupId, EnvId};

/// A hardware node running an agent, as it last registered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Stable id (the agent's `host_id`); agent tokens are bound to it.
    pub id: String,
    pub hostname: String,
    #[serde(default)]
    pub addrs: Vec<String>,
    /// When the host last registered (leader's clock, ms since the epoch).
    pub seen_ms: i64,
    #[serde(default)]
    pub version: String,
    /// Jobs the agent runs at once.
    #[serde(default)]
    pub max_jobs: u32,
    /// The environments the host reported last.
    #[serde(default)]
    pub envs: Vec<EnvId>,
}

/// A container (environment) as its host reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvRecord {
    pub eid: EnvId,
    /// The host that runs it.
    pub host: String,
    /// Its name on that host (CTID, LXC or machine name).
    pub name: String,
    /// The private area the agent backs up.
    pub path: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub ip: Vec<String>,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub description: String,
    /// Where it was discovered: virtuozzo, lxc, nspawn, dir, explicit.
    #[serde(default)]
    pub kind: String,
}

impl EnvRecord {
    /// The description a backup of this environment carries.
    pub fn info(&self) -> crate::backup::EnvInfo {
        crate::backup::EnvInfo {
            name: self.name.clone(),
            title: self.title.clone(),
            hostname: self.hostname.clone(),
            ip: self.ip.clone(),
            os: self.os.clone(),
            kind: self.kind.clone(),
        }
    }
}

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobKind {
    Backup,
    /// Restores a whole environment in place (or into `options.target_path`).
    Restore,
    /// Restores `options.paths` into the live tree.
    SelectiveRestore,
    /// Deletes backups; run by the cluster itself, not by an agent.
    Delete,
    /// Changes a backup's name, description or tags (`options.edit`); run by the cluster
    /// itself. A job so that the change has a status to read like every other operation.
    Update,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Restore => "restore",
            JobKind::SelectiveRestore => "selective_restore",
            JobKind::Delete => "delete",
            JobKind::Update => "update",
        }
    }

    pub fn parse(s: &str) -> Option<JobKind> {
        match s {
            "backup" => Some(JobKind::Backup),
            "restore" => Some(JobKind::Restore),
            "selective_restore" | "selective-restore" => Some(JobKind::SelectiveRestore),
            "delete" => Some(JobKind::Delete),
            "update" => Some(JobKind::Update),
            _ => None,
        }
    }

    /// Whether an agent runs the job (and so it takes the environment's active slot).
    pub fn needs_agent(self) -> bool {
        !matches!(self, JobKind::Delete | JobKind::Update)
    }

    /// What asking for such a job needs (see [`crate::auth::TABLE`]): backups and restores
    /// are operations, deleting and changing backups is administration.
    pub fn access(self) -> crate::auth::Access {
        match self {
            JobKind::Backup | JobKind::Restore | JobKind::SelectiveRestore => {
                crate::auth::Access::Operate
            }
            JobKind::Delete | JobKind::Update => crate::auth::Access::Administer,
        }
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    /// Every state, in the order a job moves through them.
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        match s {
            "queued" => Some(JobState::Queued),
            "running" => Some(JobState::Running),
            "succeeded" => Some(JobState::Succeeded),
            "failed" => Some(JobState::Failed),
            "cancelled" => Some(JobState::Cancelled),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// What the requester asked for; which fields matter depends on the kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobOptions {
    /// Backup: the requested type; `None` takes the environment's configured default.
    pub backup_type: Option<BackupType>,
    /// Backup: `None` takes the environment's configured default.
    pub compression: Option<Compression>,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub includes: Vec<String>,
    pub excludes: Vec<String>,
    /// Restore, selective restore, delete: the backup.
    pub backup: Option<BackupId>,
    /// Restore: replace the target even when it is in use or changed since the backup.
    pub force: bool,
    /// Restore: write here instead of the environment's own path (another host's directory,
    /// when the original host is gone).
    pub target_path: String,
    /// Selective restore: the paths (relative to the environment's root).
    pub paths: Vec<String>,
    /// Delete: also every older backup of the same environment.
    pub prev: bool,
    /// Update: the fields to change.
    pub edit: Option<BackupEdit>,
    /// Restore onto a host other than the backup's source: asked for device nodes,
    /// setuid/setgid bits and file capabilities to be restored too (an operator's choice).
    pub allow_privileged: bool,
    /// Restore: the agent restores device nodes, setuid/setgid bits and file capabilities.
    /// Decided by the catalog when the job is admitted (never taken from the request): true
    /// when the job runs on the backup's own host, or when `allow_privileged` was asked.
    pub privileged: bool,
    /// Backup: a backup of the same environment the commit of this job removes in the same
    /// decision (the catalog's, see `cairn_meta::catalog`), so a "replace" never leaves two
    /// backups where one was asked for, nor deletes one for a backup that was never made.
    pub replace: Option<Replace>,
}

/// Which backup a backup job replaces: removed by the same catalog decision that commits
/// the new one. A protected backup is never removed this way: the new backup is committed
/// and the old one kept, and the job's result says so ([`JobResult::replace_refused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Replace {
    /// The oldest backup of the environment (other than the new one).
    Oldest,
    /// This backup (of the job's environment).
    Backup(BackupId),
}

/// A change to the user-editable fields of a backup: `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupEdit {
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    /// Protects the backup (true) or lifts the protection (false).
    pub protected: Option<bool>,
}

/// How far a running job is, as its agent last reported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobProgress {
    pub phase: String,
    pub percent: u32,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Bytes per second over the job so far.
    pub bytes_per_sec: u64,
    /// When the agent sent this report (its clock).
    pub updated_ms: i64,
}

/// What a finished job produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobResult {
    /// The backup a backup job committed.
    pub backup: Option<BackupId>,
    /// Human-readable outcome.
    pub message: String,
    /// Engine counters as JSON (files read and reused, bytes and chunks sent, …).
    pub details: String,
    /// A backup job with [`JobOptions::replace`]: the backup its commit replaced (removed,
    /// unless `replace_refused` says why not). Written by the catalog's commit decision and
    /// kept when the agent finishes the job.
    pub replaced: Option<BackupId>,
    /// Why the commit kept `replaced` (e.g. `Protected`, `BackupNotFound`); `None` when it
    /// was removed.
    pub replace_refused: Option<crate::ErrorCode>,
    /// The catalog's text for `replace_refused`, for people.
    pub replace_reason: String,
}

/// One job, as the catalog keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: uuid::Uuid,
    pub kind: JobKind,
    /// The environment the job acts on.
    pub env: EnvId,
    /// The host whose agent runs it (empty for delete jobs).
    pub host: String,
    /// Who asked: "admin", `agent:<host>`, or an adapter's user.
    pub requester: String,
    pub options: JobOptions,
    pub state: JobState,
    /// Why the job failed or was cancelled, for people.
    #[serde(default)]
    pub reason: String,
    /// The stable code of a failed job's failure: what adapters decide on (never `reason`).
    /// `None` for a job that did not fail, and for failures recorded before jobs carried
    /// codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<crate::ErrorCode>,
    pub created_ms: i64,
    #[serde(default)]
    pub started_ms: Option<i64>,
    #[serde(default)]
    pub finished_ms: Option<i64>,
    /// A running job fails once this passes without a renewal.
    #[serde(default)]
    pub lease_until_ms: i64,
    /// A queued job fails once it waited this long for its agent.
    #[serde(default)]
    pub queue_timeout_ms: i64,
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(default)]
    pub progress: JobProgress,
    #[serde(default)]
    pub result: JobResult,
    /// A backup job's backup id, reserved by the catalog when it admitted the job: the first
    /// free second at or after the admission time and after every id the environment was
    /// given before (the environment's last id is moved to it in the same write). The job's
    /// commit takes exactly this id, so adapters can name the new backup from the first
    /// answer (REST `target_uri`). While the job is queued or running, the environment's
    /// other backups are refused at their commit (`JobRunning`), so the reserved id is still
    /// newer than every other one when the job commits and retention never mistakes it for an
    /// old backup. A job that fails or is cancelled leaves the id unused: ids are never
    /// given twice. `None` for other kinds and for jobs admitted before reservations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_backup: Option<BackupId>,
}

/// Why a transition is not allowed (a refusal, never a storage error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobRefusal {
    /// The job is not in a state that allows it (claimed twice, finished, …).
    State(String),
    /// The caller is not the host the job belongs to.
    WrongHost(String),
}

impl JobRefusal {
    pub fn message(&self) -> &str {
        match self {
            JobRefusal::State(m) | JobRefusal::WrongHost(m) => m,
        }
    }
}

impl Job {
    /// A new queued job.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: uuid::Uuid,
        kind: JobKind,
        env: EnvId,
        host: String,
        requester: String,
        options: JobOptions,
        now_ms: i64,
        queue_timeout_ms: i64,
    ) -> Job {
        Job {
            id,
            kind,
            env,
            host,
            requester,
            options,
            state: JobState::Queued,
            reason: String::new(),
            code: None,
            created_ms: now_ms,
            started_ms: None,
            finished_ms: None,
            lease_until_ms: 0,
            queue_timeout_ms,
            cancel_requested: false,
            progress: JobProgress::default(),
            result: JobResult::default(),
            reserved_backup: None,
        }
    }

    fn check_host(&self, host: &str) -> Result<(), JobRefusal> {
        if self.host != host {
            return Err(JobRefusal::WrongHost(format!(
                "job {} belongs to host {:?}, not {host:?}",
                self.id, self.host
            )));
        }
        Ok(())
    }

    /// The agent of `host` takes the queued job and holds it until `lease_until_ms`.
    pub fn claim(
        &mut self,
        host: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<(), JobRefusal> {
        self.check_host(host)?;
        if self.state != JobState::Queued {
            return Err(JobRefusal::State(format!(
                "job {} is {}, not queued",
                self.id,
                self.state.as_str()
            )));
        }
        self.state = JobState::Running;
        self.started_ms = Some(now_ms);
        self.lease_until_ms = lease_until_ms;
        Ok(())
    }

    /// Records progress and renews the lease of a running job.
    pub fn report(
        &mut self,
        host: &str,
        progress: JobProgress,
        lease_until_ms: i64,
    ) -> Result<(), JobRefusal> {
        self.check_host(host)?;
        if self.state != JobState::Running {
            return Err(JobRefusal::State(format!(
                "job {} is {}, not running",
                self.id,
                self.state.as_str()
            )));
        }
        self.progress = progress;
        self.lease_until_ms = self.lease_until_ms.max(lease_until_ms);
        Ok(())
    }

    /// Ends a running job (its agent's word), or a queued one when `host` is `None` (the
    /// cluster itself, e.g. a delete job it ran). `code` is kept for a failed job only.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        &mut self,
        host: Option<&str>,
        state: JobState,
        reason: String,
        code: Option<crate::ErrorCode>,
        result: JobResult,
        now_ms: i64,
    ) -> Result<(), JobRefusal> {
        if !state.is_final() {
            return Err(JobRefusal::State(format!(
                "{} is not a final state",
                state.as_str()
            )));
        }
        if let Some(h) = host {
            self.check_host(h)?;
            if self.state != JobState::Running {
                return Err(JobRefusal::State(format!(
                    "job {} is {}, not running",
                    self.id,
                    self.state.as_str()
                )));
            }
        } else if self.state.is_final() {
            return Err(JobRefusal::State(format!(
                "job {} already ended ({})",
                self.id,
                self.state.as_str()
            )));
        }
        self.state = state;
        self.reason = reason;
        // A failure an older agent recorded has no code; adapters answer it as internal.
        self.code = code.filter(|_| state == JobState::Failed);
        // What the commit decided about `replace` is the catalog's, never the reporter's.
        let replaced = self.result.replaced.take();
        let refused = self.result.replace_refused.take();
        let reason = std::mem::take(&mut self.result.replace_reason);
        self.result = JobResult {
            replaced,
            replace_refused: refused,
            replace_reason: reason,
            ..result
        };
        self.finished_ms = Some(now_ms);
        if state == JobState::Succeeded {
            self.progress.percent = 100;
        }
        Ok(())
    }

    /// Cancels a queued job at once; asks the agent of a running one to stop.
    pub fn cancel(&mut self, now_ms: i64) -> Result<(), JobRefusal> {
        match self.state {
            JobState::Queued => {
                self.state = JobState::Cancelled;
                self.reason = "cancelled before it started".into();
                self.finished_ms = Some(now_ms);
                Ok(())
            }
            JobState::Running => {
                self.cancel_requested = true;
                Ok(())
            }
            s => Err(JobRefusal::State(format!(
                "job {} already ended ({})",
                self.id,
                s.as_str()
            ))),
        }
    }

    /// If the job is past its lease (running) or its queue timeout (queued) at `now_ms`,
    /// fails it with the reason and returns true.
    pub fn expire(&mut self, now_ms: i64) -> bool {
        let (code, reason) = match self.state {
            JobState::Running if now_ms > self.lease_until_ms => (crate::ErrorCode::AgentLost, format!(
                "the agent of host {:?} stopped renewing its lease (last report in phase {:?} at {}%); the job was abandoned",
                self.host, self.progress.phase, self.progress.percent
            )),
            JobState::Queued
                if self.queue_timeout_ms > 0 && now_ms > self.created_ms + self.queue_timeout_ms =>
            {
                (crate::ErrorCode::HostOffline, format!(
                    "no agent of host {:?} took the job within {} s (is the host offline?)",
                    self.host,
                    self.queue_timeout_ms / 1000
                ))
            }
            _ => return false,
        };
        self.state = JobState::Failed;
        self.reason = reason;
        self.code = Some(code);
        self.finished_ms = Some(now_ms);
        true
    }
}

/// A token as the catalog keeps it: never the token itself, only its BLAKE3 hash.
///
/// An agent token reads `cairn-agent.<id>.<secret>` and is bound to one host; a user token
/// reads `cairn-user.<id>.<secret>` and carries a user's name and role. The id finds the
/// record, the hash of the whole token proves it, and the record says who the caller is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// The host an agent token is bound to (empty for a user token).
    pub host: String,
    /// Hex BLAKE3 of the whole token.
    pub hash: String,
    pub created_ms: i64,
    /// A user token's name (empty for an agent token).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// A user token's role; `None` for an agent token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::auth::Role>,
}

impl TokenRecord {
    /// Who a caller presenting this token is.
    pub fn principal(&self) -> crate::auth::Principal {
        match self.role {
            Some(role) => crate::auth::Principal::User {
                name: self.name.clone(),
                role,
            },
            None => crate::auth::Principal::Agent {
                host: self.host.clone(),
            },
        }
    }

    /// Whether this is a user token (else an agent token).
    pub fn is_user(&self) -> bool {
        self.role.is_some()
    }
}

/// The prefix of every join token (`cairn agent join-token create`).
pub const JOIN_TOKEN_PREFIX: &str = "cairn-join.";

/// A one-time, expiring join token: an admin issues it for a host, and a new agent redeems
/// it once for an agent token of that host. The catalog keeps only its hash, and keeps the
/// record after redemption so that a second redemption is refused as used, not unknown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub id: String,
    /// The host the agent token will be bound to.
    pub host: String,
    /// Hex BLAKE3 of the whole token.
    pub hash: String,
    pub created_ms: i64,
    /// Redemptions at or after this time are refused.
    pub expires_ms: i64,
    /// When it was redeemed, and the agent token it gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeemed: Option<(i64, String)>,
}

/// Returns the id part of a join token (`cairn-join.<id>.<secret>`).
pub fn join_token_id(token: &str) -> Option<&str> {
    let (id, secret) = token.strip_prefix(JOIN_TOKEN_PREFIX)?.split_once('.')?;
    (!id.is_empty()
        && !secret.is_empty()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    .then_some(id)
}

/// The prefix of every agent token.
pub const AGENT_TOKEN_PREFIX: &str = "cairn-agent.";
/// The prefix of every user token.
pub const USER_TOKEN_PREFIX: &str = "cairn-user.";

/// Returns the id part of an agent or user token, if `token` has one of their forms.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token
        .strip_prefix(AGENT_TOKEN_PREFIX)
        .or_else(|| token.strip_prefix(USER_TOKEN_PREFIX))?;
    let (id, secret) = rest.split_once('.')?;
    (!id.is_empty()
        && !secret.is_empty()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    .then_some(id)
}

/// Returns the hex hash a [`TokenRecord`] keeps for `token`.
pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Decides whether an incremental or differential request must become a full backup:
/// `chain` holds the environment's backups (any order) and the rules come from its config.
/// Returns the type to run and, when it changed, why.
pub fn chain_decision(
    requested: BackupType,
    chain: &[(BackupType, i64)],
    now_secs: i64,
    chain_length: Option<u32>,
    chain_days: Option<u32>,
) -> (BackupType, Option<String>) {
    if requested == BackupType::Full {
        return (BackupType::Full, None);
    }
    let mut sorted = chain.to_vec();
    sorted.sort_by_key(|(_, t)| *t);
    let Some(last_full) = sorted.iter().rposition(|(k, _)| *k == BackupType::Full) else {
        return (
            BackupType::Full,
            Some("the environment has no full backup yet".into()),
        );
    };
    let since_full = (sorted.len() - last_full - 1) as u32;
    if let Some(n) = chain_length {
        if since_full >= n {
            return (
                BackupType::Full,
                Some(format!(
                    "chain_length {n} reached ({since_full} backups since the last full)"
                )),
            );
        }
    }
    if let Some(d) = chain_days {
        let age = now_secs - sorted[last_full].1;
        if age >= i64::from(d) * 86_400 {
            return (
                BackupType::Full,
                Some(format!(
                    "chain_days {d} reached (the last full is {} days old)",
                    age / 86_400
                )),
            );
        }
    }
    (requested, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job::new(
            uuid::Uuid::from_u128(7),
            JobKind::Backup,
            EnvId::derive("h1/ct"),
            "h1".into(),
            "admin".into(),
            JobOptions::default(),
            1_000,
            60_000,
        )
    }

    #[test]
    fn a_job_runs_from_queued_to_succeeded() {
        let mut j = job();
        assert!(j.claim("h2", 2_000, 10_000).is_err(), "another host's job");
        j.claim("h1", 2_000, 10_000).unwrap();
        assert_eq!(j.state, JobState::Running);
        assert!(j.claim("h1", 2_000, 10_000).is_err(), "claimed twice");
        let p = JobProgress {
            percent: 40,
            ..Default::default()
        };
        j.report("h1", p.clone(), 12_000).unwrap();
        assert_eq!((j.progress.percent, j.lease_until_ms), (40, 12_000));
        // A late report never shortens the lease.
        j.report("h1", p, 11_000).unwrap();
        assert_eq!(j.lease_until_ms, 12_000);
        assert!(!j.expire(12_000));
        j.finish(
            Some("h1"),
            JobState::Succeeded,
            String::new(),
            None,
            JobResult::default(),
            13_000,
        )
        .unwrap();
        assert_eq!(
            (j.state, j.finished_ms, j.progress.percent),
            (JobState::Succeeded, Some(13_000), 100)
        );
        assert!(j.report("h1", JobProgress::default(), 20_000).is_err());
        assert!(j.cancel(14_000).is_err());
        assert!(!j.expire(1_000_000), "finished jobs never expire");
    }

    #[test]
    fn cancel_ends_a_queued_job_and_flags_a_running_one() {
        let mut q = job();
        q.cancel(1_500).unwrap();
        assert_eq!(q.state, JobState::Cancelled);
        assert!(q.claim("h1", 2_000, 3_000).is_err());

        let mut r = job();
        r.claim("h1", 2_000, 10_000).unwrap();
        r.cancel(3_000).unwrap();
        assert_eq!((r.state, r.cancel_requested), (JobState::Running, true));
        r.finish(
            Some("h1"),
            JobState::Cancelled,
            "cancelled".into(),
            None,
            JobResult::default(),
            4_000,
        )
        .unwrap();
        assert_eq!(r.state, JobState::Cancelled);
    }

    #[test]
    fn leases_and_queue_timeouts_expire() {
        let mut r = job();
        r.claim("h1", 2_000, 5_000).unwrap();
        assert!(!r.expire(5_000));
        assert!(r.expire(5_001));
        assert_eq!(r.state, JobState::Failed);
        assert!(
            r.reason.contains("stopped renewing its lease"),
            "{}",
            r.reason
        );

        let mut q = job();
        assert!(!q.expire(61_000));
        assert!(q.expire(61_001));
        assert!(q.reason.contains("no agent of host"), "{}", q.reason);
        // What adapters decide on is the code, never the sentence.
        assert_eq!(q.code, Some(crate::ErrorCode::HostOffline));
        assert_eq!(r.code, Some(crate::ErrorCode::AgentLost));

        let mut forever = job();
        forever.queue_timeout_ms = 0;
        assert!(!forever.expire(i64::MAX / 2));
    }

    #[test]
    fn only_final_states_finish_a_job() {
        let mut j = job();
        j.claim("h1", 2_000, 5_000).unwrap();
        assert!(j
            .finish(
                Some("h1"),
                JobState::Queued,
                String::new(),
                None,
                JobResult::default(),
                3_000
            )
            .is_err());
        // The cluster may end a queued job (a delete it ran, or a refusal).
        let mut d = job();
        d.finish(
            None,
            JobState::Failed,
            "x".into(),
            Some(crate::ErrorCode::DuplicateName),
            JobResult::default(),
            3_000,
        )
        .unwrap();
        assert_eq!(d.state, JobState::Failed);
        assert_eq!(d.code, Some(crate::ErrorCode::DuplicateName));
        // Only a failure keeps a code.
        let mut ok = job();
        ok.finish(
            None,
            JobState::Succeeded,
            String::new(),
            Some(crate::ErrorCode::Conflict),
            JobResult::default(),
            3_000,
        )
        .unwrap();
        assert_eq!(ok.code, None);
    }

    #[test]
    fn agent_tokens_parse() {
        assert_eq!(token_id("cairn-agent.ab-12.s3cr3t"), Some("ab-12"));
        assert_eq!(token_id("cairn-agent..s3cr3t"), None);
        assert_eq!(token_id("cairn-agent.ab"), None);
        assert_eq!(token_id("cairn-agent.a/b.x"), None);
        assert_eq!(token_id("cluster-token"), None);
        assert_eq!(token_id("cairn-user.u1.s3cr3t"), Some("u1"));
        assert_eq!(token_id("cairn-other.u1.s3cr3t"), None);
        assert_ne!(token_hash("a"), token_hash("b"));
        assert_eq!(token_hash("a").len(), 64);
    }

    #[test]
    fn chain_rules_turn_increments_into_fulls() {
        use BackupType::*;
        let day = 86_400;
        let chain = [(Full, 0), (Incremental, day), (Incremental, 2 * day)];
        assert_eq!(chain_decision(Full, &chain, 3 * day, Some(1), None).0, Full);
        assert_eq!(
            chain_decision(Incremental, &chain, 3 * day, None, None),
            (Incremental, None)
        );
        assert_eq!(
            chain_decision(Incremental, &chain, 3 * day, Some(3), None).0,
            Incremental
        );
        let (k, why) = chain_decision(Incremental, &chain, 3 * day, Some(2), None);
        assert_eq!(k, Full);
        assert!(why.unwrap().contains("chain_length 2"));
        let (k, why) = chain_decision(Differential, &chain, 3 * day, None, Some(3));
        assert_eq!(k, Full);
        assert!(why.unwrap().contains("chain_days 3"));
        assert_eq!(
            chain_decision(Differential, &chain, 3 * day - 1, None, Some(3)).0,
            Differential
        );
        assert_eq!(chain_decision(Incremental, &[], 0, None, None).0, Full);
        // Order of the input does not matter.
        let shuffled = [(Incremental, 2 * day), (Full, 0), (Incremental, day)];
        assert_eq!(
            chain_decision(Incremental, &shuffled, 3 * day, Some(2), None).0,
            Full
        );
    }
}
