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
//!
//! # The job's log
//! Each transition appends a line to [`Job::log`] as it decides: admitted (who asked, what
//! for), claimed by the agent of host X, each new phase an agent reports, cancel asked (by
//! whom), succeeded (the result's summary), failed (code and reason), cancelled, lease lost,
//! queue timeout. The catalog adds the lines only it knows (the reserved backup id, the
//! commit). A line's time is the transition's time, which comes from the raft command, so
//! the log is as deterministic as the rest of the job. The log is bounded
//! ([`JOB_LOG_MAX`] lines of at most [`JOB_LOG_LINE_MAX`] bytes): when full, the oldest line
//! after the first is dropped and counted in [`Job::log_dropped`], so the first line (the
//! admission) and the newest lines are always kept. Logs are new fields with serde defaults
//! (older records read with an empty log, and an older member ignores them), so during a
//! rolling upgrade members of the previous release decide the same transitions without
//! lines: job logs, and so the catalog digests, differ between the two releases until every
//! member runs this one.

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

/// Lines a job's log keeps (see the module doc: the first and the newest ones).
pub const JOB_LOG_MAX: usize = 64;
/// Bytes a log line keeps of its text (an agent's reason may be long).
pub const JOB_LOG_LINE_MAX: usize = 1024;

/// How much a job's log line matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// Reads a level; an unknown one (a newer node's) reads as info.
    pub fn parse(s: &str) -> LogLevel {
        match s {
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => LogLevel::Info,
        }
    }
}

/// One line of a job's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLogLine {
    /// When the transition happened (the raft command's time, ms since the epoch).
    pub at_ms: i64,
    pub level: LogLevel,
    pub text: String,
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
    /// What happened to the job, oldest first (see the module doc; bounded, the first line
    /// always kept). Empty for jobs recorded before jobs had logs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<JobLogLine>,
    /// Lines dropped from the log (after its first line) to keep it within [`JOB_LOG_MAX`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub log_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Cuts `text` to at most `max` bytes at a character boundary, with control characters
/// turned into spaces (a line is one line, whatever an agent sent).
fn clean_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if out.len() + c.len_utf8() > max {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// A short list of items for a log line: the first few, then how many more.
fn some_of(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = items
        .iter()
        .take(SHOWN)
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    s
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
        let mut job = Job {
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
            log: Vec::new(),
            log_dropped: 0,
        };
        let admitted = job.admission_line();
        job.log(now_ms, LogLevel::Info, admitted);
        job
    }

    /// Appends a line to the job's log, keeping it bounded (see the module doc).
    pub fn log(&mut self, at_ms: i64, level: LogLevel, text: impl AsRef<str>) {
        if self.log.len() >= JOB_LOG_MAX {
            // The first line (the admission) stays; the oldest after it goes.
            let drop = self.log.len() + 1 - JOB_LOG_MAX;
            let from = 1.min(self.log.len());
            self.log.drain(from..from + drop);
            self.log_dropped += drop as u64;
        }
        self.log.push(JobLogLine {
            at_ms,
            level,
            text: clean_line(text.as_ref(), JOB_LOG_LINE_MAX),
        });
    }

    /// The first line of a job's log: what was asked, by whom, on which host.
    fn admission_line(&self) -> String {
        let o = &self.options;
        let on_host = if self.host.is_empty() {
            String::new()
        } else {
            format!(" for host {:?}", self.host)
        };
        let target = match o.backup {
            Some(b) => format!("backup {b}"),
            None => format!("environment {}", self.env),
        };
        let mut details: Vec<String> = Vec::new();
        match self.kind {
            JobKind::Backup => {
                details.push(match o.backup_type {
                    Some(t) => format!("type {}", t.as_str()),
                    None => "the environment's default type".into(),
                });
                if let Some(c) = o.compression {
                    details.push(format!("compression {}", format!("{c:?}").to_lowercase()));
                }
                if !o.name.is_empty() {
                    details.push(format!("name {:?}", o.name));
                }
                if !o.includes.is_empty() {
                    details.push(format!("includes {}", some_of(&o.includes)));
                }
                if !o.excludes.is_empty() {
                    details.push(format!("excludes {}", some_of(&o.excludes)));
                }
                match o.replace {
                    Some(Replace::Oldest) => details.push("replaces the oldest backup".into()),
                    Some(Replace::Backup(b)) => details.push(format!("replaces {b}")),
                    None => {}
                }
            }
            JobKind::Restore | JobKind::SelectiveRestore => {
                if self.kind == JobKind::SelectiveRestore {
                    details.push(format!("paths {}", some_of(&o.paths)));
                }
                details.push(if o.target_path.is_empty() {
                    "into the environment's own path".into()
                } else {
                    format!("into {:?}", o.target_path)
                });
                if o.force {
                    details.push("forced".into());
                }
                if o.privileged {
                    details.push("device nodes, setuid bits and capabilities restored".into());
                }
            }
            JobKind::Delete => {
                if o.prev {
                    details.push("and every older unprotected backup".into());
                }
            }
            JobKind::Update => {
                if let Some(e) = &o.edit {
                    let mut fields = Vec::new();
                    if e.name.is_some() {
                        fields.push("name");
                    }
                    if e.description.is_some() {
                        fields.push("description");
                    }
                    if e.tags.is_some() {
                        fields.push("tags");
                    }
                    match e.protected {
                        Some(true) => fields.push("protect"),
                        Some(false) => fields.push("unprotect"),
                        None => {}
                    }
                    details.push(format!("changes {}", fields.join(", ")));
                }
            }
        }
        let mut line = format!(
            "{} of {target}{on_host} asked by {}",
            self.kind.as_str(),
            self.requester
        );
        if !details.is_empty() {
            line.push_str(": ");
            line.push_str(&details.join("; "));
        }
        line
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
        self.log(
            now_ms,
            LogLevel::Info,
            format!("started: claimed by the agent of host {host:?}"),
        );
        Ok(())
    }

    /// Records progress and renews the lease of a running job; a new phase is logged at
    /// `now_ms` (the command's time; 0 for a command written before reports carried one,
    /// which logs at the agent's own time).
    pub fn report(
        &mut self,
        host: &str,
        progress: JobProgress,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<(), JobRefusal> {
        self.check_host(host)?;
        if self.state != JobState::Running {
            return Err(JobRefusal::State(format!(
                "job {} is {}, not running",
                self.id,
                self.state.as_str()
            )));
        }
        if !progress.phase.is_empty() && progress.phase != self.progress.phase {
            let at = if now_ms > 0 {
                now_ms
            } else {
                progress.updated_ms
            };
            let text = format!(
                "phase: {} ({} %, {} of {} files)",
                progress.phase, progress.percent, progress.files_done, progress.files_total
            );
            self.log(at, LogLevel::Info, text);
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
        self.log_end(now_ms);
        Ok(())
    }

    /// The last line of a job that just ended: its result, or why it failed or stopped.
    pub fn log_end(&mut self, now_ms: i64) {
        let (level, text) = match self.state {
            JobState::Succeeded => {
                let mut t = String::from("succeeded");
                if let Some(b) = self.result.backup {
                    t.push_str(&format!(" (backup {b})"));
                }
                if !self.result.message.is_empty() {
                    t.push_str(": ");
                    t.push_str(&self.result.message);
                }
                (LogLevel::Info, t)
            }
            JobState::Failed => (
                LogLevel::Error,
                match self.code {
                    Some(c) => format!("failed [{}]: {}", c.as_str(), self.reason),
                    None => format!("failed: {}", self.reason),
                },
            ),
            JobState::Cancelled => (
                LogLevel::Warn,
                if self.reason.is_empty() {
                    "cancelled".to_string()
                } else {
                    format!("cancelled: {}", self.reason)
                },
            ),
            JobState::Queued | JobState::Running => return,
        };
        self.log(now_ms, level, text);
    }

    /// Cancels a queued job at once; asks the agent of a running one to stop. `by` names
    /// who asked, for the log.
    pub fn cancel(&mut self, by: &str, now_ms: i64) -> Result<(), JobRefusal> {
        match self.state {
            JobState::Queued => {
                self.state = JobState::Cancelled;
                self.reason = format!("cancelled by {by} before it started");
                self.finished_ms = Some(now_ms);
                self.log_end(now_ms);
                Ok(())
            }
            JobState::Running => {
                if !self.cancel_requested {
                    self.cancel_requested = true;
                    self.log(
                        now_ms,
                        LogLevel::Warn,
                        format!("cancel requested by {by}; the agent stops at its next report"),
                    );
                }
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
        let (code, what, reason) = match self.state {
            JobState::Running if now_ms > self.lease_until_ms => (crate::ErrorCode::AgentLost, "lease expired", format!(
                "the agent of host {:?} stopped renewing its lease (last report in phase {:?} at {}%); the job was abandoned",
                self.host, self.progress.phase, self.progress.percent
            )),
            JobState::Queued
                if self.queue_timeout_ms > 0 && now_ms > self.created_ms + self.queue_timeout_ms =>
            {
                (crate::ErrorCode::HostOffline, "queue timeout", format!(
                    "no agent of host {:?} took the job within {} s (is the host offline?)",
                    self.host,
                    self.queue_timeout_ms / 1000
                ))
            }
            _ => return false,
        };
        self.state = JobState::Failed;
        self.log(
            now_ms,
            LogLevel::Error,
            format!("{what} [{}]: {reason}", code.as_str()),
        );
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
        j.report("h1", p.clone(), 12_000, 2_500).unwrap();
        assert_eq!((j.progress.percent, j.lease_until_ms), (40, 12_000));
        // A late report never shortens the lease.
        j.report("h1", p, 11_000, 2_600).unwrap();
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
        assert!(j
            .report("h1", JobProgress::default(), 20_000, 14_000)
            .is_err());
        assert!(j.cancel("admin", 14_000).is_err());
        assert!(!j.expire(1_000_000), "finished jobs never expire");
    }

    #[test]
    fn cancel_ends_a_queued_job_and_flags_a_running_one() {
        let mut q = job();
        q.cancel("admin", 1_500).unwrap();
        assert_eq!(q.state, JobState::Cancelled);
        assert!(q.claim("h1", 2_000, 3_000).is_err());

        let mut r = job();
        r.claim("h1", 2_000, 10_000).unwrap();
        r.cancel("admin", 3_000).unwrap();
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
    fn each_transition_logs_a_line_with_the_commands_time() {
        let mut j = job();
        assert_eq!(j.log.len(), 1);
        assert_eq!(j.log[0].at_ms, 1_000);
        assert!(
            j.log[0].text.starts_with("backup of environment ")
                && j.log[0].text.contains("for host \"h1\" asked by admin"),
            "{:?}",
            j.log[0]
        );
        j.claim("h1", 2_000, 10_000).unwrap();
        let p = |phase: &str, percent| JobProgress {
            phase: phase.into(),
            percent,
            updated_ms: 99,
            ..Default::default()
        };
        j.report("h1", p("reading", 10), 12_000, 2_100).unwrap();
        // The same phase again logs nothing; a new one does.
        j.report("h1", p("reading", 20), 12_000, 2_200).unwrap();
        j.report("h1", p("uploading", 60), 12_000, 2_300).unwrap();
        // A report recorded before reports carried a time logs at the agent's.
        j.report("h1", p("committing", 90), 12_000, 0).unwrap();
        j.cancel("ui:alice", 2_400).unwrap();
        j.cancel("ui:alice", 2_450).unwrap();
        j.finish(
            Some("h1"),
            JobState::Succeeded,
            String::new(),
            None,
            JobResult {
                backup: Some(BackupId::new(j.env, 1_700_000_000)),
                message: "3 files, 42 bytes".into(),
                ..JobResult::default()
            },
            2_500,
        )
        .unwrap();
        let lines: Vec<(i64, LogLevel, &str)> = j
            .log
            .iter()
            .map(|l| (l.at_ms, l.level, l.text.as_str()))
            .skip(1)
            .collect();
        let env = j.env;
        assert_eq!(
            lines,
            vec![
                (
                    2_000,
                    LogLevel::Info,
                    "started: claimed by the agent of host \"h1\""
                ),
                (2_100, LogLevel::Info, "phase: reading (10 %, 0 of 0 files)"),
                (
                    2_300,
                    LogLevel::Info,
                    "phase: uploading (60 %, 0 of 0 files)"
                ),
                (99, LogLevel::Info, "phase: committing (90 %, 0 of 0 files)"),
                (
                    2_400,
                    LogLevel::Warn,
                    "cancel requested by ui:alice; the agent stops at its next report"
                ),
                (
                    2_500,
                    LogLevel::Info,
                    &*format!("succeeded (backup {env}/20231114221320): 3 files, 42 bytes")
                ),
            ]
        );
    }

    #[test]
    fn failures_cancels_and_expiries_are_logged_with_their_codes() {
        let mut f = job();
        f.claim("h1", 2_000, 10_000).unwrap();
        f.finish(
            Some("h1"),
            JobState::Failed,
            "disk on fire".into(),
            Some(crate::ErrorCode::TargetChanged),
            JobResult::default(),
            3_000,
        )
        .unwrap();
        let last = f.log.last().unwrap();
        assert_eq!(
            (last.at_ms, last.level, last.text.as_str()),
            (3_000, LogLevel::Error, "failed [E1018]: disk on fire")
        );

        let mut q = job();
        q.cancel("admin", 1_500).unwrap();
        let last = q.log.last().unwrap();
        assert_eq!(last.level, LogLevel::Warn);
        assert_eq!(last.text, "cancelled: cancelled by admin before it started");

        let mut r = job();
        r.claim("h1", 2_000, 5_000).unwrap();
        r.expire(5_001);
        let last = r.log.last().unwrap();
        assert_eq!((last.at_ms, last.level), (5_001, LogLevel::Error));
        assert!(last.text.starts_with("lease expired [E1"), "{}", last.text);

        let mut t = job();
        t.expire(61_001);
        assert!(t.log.last().unwrap().text.starts_with("queue timeout [E1"));
        // A refused transition logs nothing.
        let before = t.log.clone();
        assert!(t.claim("h1", 62_000, 70_000).is_err());
        assert!(t.cancel("admin", 62_000).is_err());
        assert_eq!(t.log, before);
    }

    #[test]
    fn the_log_is_bounded_and_keeps_its_first_and_newest_lines() {
        let mut j = job();
        j.claim("h1", 2_000, 1_000_000).unwrap();
        for n in 0..200u32 {
            let p = JobProgress {
                phase: format!("step {n}"),
                ..Default::default()
            };
            j.report("h1", p, 1_000_000, 3_000 + i64::from(n)).unwrap();
        }
        assert_eq!(j.log.len(), JOB_LOG_MAX);
        // 1 admission + 1 claim + 200 phases, of which 64 are kept.
        assert_eq!(j.log_dropped, 202 - JOB_LOG_MAX as u64);
        assert!(j.log[0].text.starts_with("backup of environment"));
        assert!(j.log[JOB_LOG_MAX - 1].text.starts_with("phase: step 199 "));
        assert!(j.log[1]
            .text
            .starts_with(&format!("phase: step {} ", 200 - (JOB_LOG_MAX - 1))));
        // A long or multi-line text becomes one bounded line.
        j.log(9_000, LogLevel::Warn, format!("a\nb{}", "é".repeat(2_000)));
        let l = &j.log.last().unwrap().text;
        assert!(l.len() <= JOB_LOG_LINE_MAX + '…'.len_utf8());
        assert!(l.starts_with("a b") && l.ends_with('…'));
        // Old records without a log still read.
        let mut old = serde_json::to_value(job()).unwrap();
        old.as_object_mut().unwrap().remove("log");
        let back: Job = serde_json::from_value(old).unwrap();
        assert!(back.log.is_empty() && back.log_dropped == 0);
    }

    #[test]
    fn admission_lines_say_what_was_asked() {
        let env = EnvId::derive("h1/ct");
        let b = BackupId::new(env, 1_700_000_000);
        let restore = Job::new(
            uuid::Uuid::from_u128(8),
            JobKind::SelectiveRestore,
            env,
            "h2".into(),
            "ui:bob".into(),
            JobOptions {
                backup: Some(b),
                paths: (0..7).map(|i| format!("p{i}")).collect(),
                target_path: "/srv/x".into(),
                privileged: true,
                ..Default::default()
            },
            5,
            0,
        );
        assert_eq!(
            restore.log[0].text,
            format!("selective_restore of backup {b} for host \"h2\" asked by ui:bob: paths \"p0\", \"p1\", \"p2\", \"p3\", \"p4\" and 2 more; into \"/srv/x\"; device nodes, setuid bits and capabilities restored")
        );
        let backup = Job::new(
            uuid::Uuid::from_u128(9),
            JobKind::Backup,
            env,
            "h1".into(),
            "admin".into(),
            JobOptions {
                backup_type: Some(BackupType::Incremental),
                compression: Some(Compression::High),
                name: "nightly".into(),
                replace: Some(Replace::Oldest),
                ..Default::default()
            },
            5,
            0,
        );
        assert_eq!(
            backup.log[0].text,
            format!("backup of environment {env} for host \"h1\" asked by admin: type incremental; compression high; name \"nightly\"; replaces the oldest backup")
        );
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
