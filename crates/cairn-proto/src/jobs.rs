//! Conversions of the `Agents` service's wire types (hosts, environments, jobs) and of the
//! per-environment backup settings.

use cairn_core::job::{
    EnvRecord, HostRecord, Job, JobKind, JobLogLine, JobOptions, JobProgress, JobResult, JobState,
    JoinTokenRecord, LogLevel, Replace,
};
use cairn_core::retention::EnvConfig;
use cairn_core::{BackupType, Compression, EnvInfo};

use crate::{opt_backup_id, pb, WireError};

fn bad(field: &'static str, why: impl Into<String>) -> WireError {
    WireError {
        field,
        why: why.into(),
    }
}

fn opt_time(ms: i64) -> Option<i64> {
    (ms != 0).then_some(ms)
}

impl From<&EnvInfo> for pb::EnvInfo {
    fn from(i: &EnvInfo) -> Self {
        pb::EnvInfo {
            name: i.name.clone(),
            title: i.title.clone(),
            hostname: i.hostname.clone(),
            ip: i.ip.clone(),
            os: i.os.clone(),
            kind: i.kind.clone(),
        }
    }
}

impl From<pb::EnvInfo> for EnvInfo {
    fn from(i: pb::EnvInfo) -> Self {
        EnvInfo {
            name: i.name,
            title: i.title,
            hostname: i.hostname,
            ip: i.ip,
            os: i.os,
            kind: i.kind,
        }
    }
}

/// The wire form of an environment's settings.
pub fn env_config_to_wire(c: &EnvConfig) -> pb::EnvConfig {
    let hooks = |h: &Option<Vec<String>>| {
        h.as_ref().map(|c| pb::Hooks {
            commands: c.clone(),
        })
    };
    pb::EnvConfig {
        keep_max: c.keep_max,
        chain_length: c.chain_length,
        chain_days: c.chain_days,
        compression: c.compression,
        backup_type: c.backup_type,
        pre_hooks: hooks(&c.pre_hooks),
        post_hooks: hooks(&c.post_hooks),
        hook_timeout_secs: c.hook_timeout_secs,
        retention_grace_days: c.retention_grace_days,
    }
}

/// An environment's settings from the wire.
pub fn env_config_from_wire(c: pb::EnvConfig) -> EnvConfig {
    EnvConfig {
        keep_max: c.keep_max,
        chain_length: c.chain_length,
        chain_days: c.chain_days,
        compression: c.compression,
        backup_type: c.backup_type,
        pre_hooks: c.pre_hooks.map(|h| h.commands),
        post_hooks: c.post_hooks.map(|h| h.commands),
        hook_timeout_secs: c.hook_timeout_secs,
        retention_grace_days: c.retention_grace_days,
    }
}

/// A join token as listed: its hash stays in the catalog (`cairn_api::JoinTokenInfo` reads
/// this back).
impl From<&JoinTokenRecord> for pb::JoinTokenInfo {
    fn from(t: &JoinTokenRecord) -> Self {
        let (redeemed_ms, agent_token_id) = t.redeemed.clone().unwrap_or_default();
        pb::JoinTokenInfo {
            id: t.id.clone(),
            host: t.host.clone(),
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
            redeemed_ms,
            agent_token_id,
        }
    }
}

impl From<&HostRecord> for pb::Host {
    fn from(h: &HostRecord) -> Self {
        pb::Host {
            id: h.id.clone(),
            hostname: h.hostname.clone(),
            addrs: h.addrs.clone(),
            seen_ms: h.seen_ms,
            version: h.version.clone(),
            max_jobs: h.max_jobs,
            online: false,
            envs: h.envs.iter().map(|e| e.to_string()).collect(),
        }
    }
}

impl TryFrom<pb::Host> for HostRecord {
    type Error = WireError;
    fn try_from(h: pb::Host) -> Result<Self, WireError> {
        Ok(HostRecord {
            id: h.id,
            hostname: h.hostname,
            addrs: h.addrs,
            seen_ms: h.seen_ms,
            version: h.version,
            max_jobs: h.max_jobs,
            envs: h
                .envs
                .iter()
                .map(|e| e.parse().map_err(|e| bad("environment id", format!("{e}"))))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<&EnvRecord> for pb::Env {
    fn from(e: &EnvRecord) -> Self {
        pb::Env {
            eid: e.eid.to_string(),
            host: e.host.clone(),
            name: e.name.clone(),
            path: e.path.clone(),
            title: e.title.clone(),
            hostname: e.hostname.clone(),
            ip: e.ip.clone(),
            os: e.os.clone(),
            description: e.description.clone(),
            kind: e.kind.clone(),
            latest: None,
            host_online: false,
            backups: 0,
        }
    }
}

impl TryFrom<pb::Env> for EnvRecord {
    type Error = WireError;
    fn try_from(e: pb::Env) -> Result<Self, WireError> {
        Ok(EnvRecord {
            eid: e
                .eid
                .parse()
                .map_err(|x| bad("environment id", format!("{x}")))?,
            host: e.host,
            name: e.name,
            path: e.path,
            title: e.title,
            hostname: e.hostname,
            ip: e.ip,
            os: e.os,
            description: e.description,
            kind: e.kind,
        })
    }
}

impl From<&JobOptions> for pb::JobOptions {
    fn from(o: &JobOptions) -> Self {
        pb::JobOptions {
            backup_type: o.backup_type.map(|t| t.code()),
            compression: o.compression.map(|c| c.level()),
            name: o.name.clone(),
            description: o.description.clone(),
            tags: o.tags.clone(),
            includes: o.includes.clone(),
            excludes: o.excludes.clone(),
            backup: o.backup.map(|b| b.to_string()).unwrap_or_default(),
            force: o.force,
            target_path: o.target_path.clone(),
            paths: o.paths.clone(),
            prev: o.prev,
            edit: o.edit.as_ref().map(|e| pb::BackupEdit {
                name: e.name.clone(),
                description: e.description.clone(),
                set_tags: e.tags.is_some(),
                tags: e.tags.clone().unwrap_or_default(),
                protected: e.protected,
            }),
            allow_privileged: o.allow_privileged,
            privileged: o.privileged,
            replace_oldest: o.replace == Some(Replace::Oldest),
            replace_backup: match o.replace {
                Some(Replace::Backup(b)) => b.to_string(),
                _ => String::new(),
            },
        }
    }
}

impl TryFrom<pb::JobOptions> for JobOptions {
    type Error = WireError;
    fn try_from(o: pb::JobOptions) -> Result<Self, WireError> {
        Ok(JobOptions {
            backup_type: o
                .backup_type
                .map(|t| {
                    BackupType::from_code(t).ok_or_else(|| {
                        bad(
                            "backup type",
                            format!("{t} (use 0 full, 1 incremental, 2 differential)"),
                        )
                    })
                })
                .transpose()?,
            compression: o
                .compression
                .map(|c| {
                    Compression::from_level(c)
                        .ok_or_else(|| bad("compression", format!("level {c} (use 0-3)")))
                })
                .transpose()?,
            name: o.name,
            description: o.description,
            tags: o.tags,
            includes: o.includes,
            excludes: o.excludes,
            backup: opt_backup_id(&o.backup, "backup id")?,
            force: o.force,
            target_path: o.target_path,
            paths: o.paths,
            prev: o.prev,
            edit: o.edit.map(|e| cairn_core::job::BackupEdit {
                name: e.name,
                description: e.description,
                tags: e.set_tags.then_some(e.tags),
                protected: e.protected,
            }),
            allow_privileged: o.allow_privileged,
            privileged: o.privileged,
            replace: match opt_backup_id(&o.replace_backup, "replace backup id")? {
                Some(b) => Some(Replace::Backup(b)),
                None => o.replace_oldest.then_some(Replace::Oldest),
            },
        })
    }
}

impl From<&JobProgress> for pb::JobProgress {
    fn from(p: &JobProgress) -> Self {
        pb::JobProgress {
            phase: p.phase.clone(),
            percent: p.percent,
            files_done: p.files_done,
            files_total: p.files_total,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            bytes_per_sec: p.bytes_per_sec,
            updated_ms: p.updated_ms,
        }
    }
}

impl From<pb::JobProgress> for JobProgress {
    fn from(p: pb::JobProgress) -> Self {
        JobProgress {
            phase: p.phase,
            percent: p.percent.min(100),
            files_done: p.files_done,
            files_total: p.files_total,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            bytes_per_sec: p.bytes_per_sec,
            updated_ms: p.updated_ms,
        }
    }
}

impl From<&JobResult> for pb::JobResult {
    fn from(r: &JobResult) -> Self {
        pb::JobResult {
            backup: r.backup.map(|b| b.to_string()).unwrap_or_default(),
            message: r.message.clone(),
            details: r.details.clone(),
            replaced: r.replaced.map(|b| b.to_string()).unwrap_or_default(),
            replace_refused: code_to_wire(r.replace_refused),
            replace_reason: r.replace_reason.clone(),
        }
    }
}

impl TryFrom<pb::JobResult> for JobResult {
    type Error = WireError;
    fn try_from(r: pb::JobResult) -> Result<Self, WireError> {
        Ok(JobResult {
            backup: opt_backup_id(&r.backup, "result backup id")?,
            message: r.message,
            details: r.details,
            replaced: opt_backup_id(&r.replaced, "replaced backup id")?,
            replace_refused: opt_code(&r.replace_refused),
            replace_reason: r.replace_reason,
        })
    }
}

/// An optional stable error code on the wire: empty is none; a code this build does not know
/// (a newer node's) is read as none rather than refusing the whole record.
pub fn opt_code(s: &str) -> Option<cairn_core::ErrorCode> {
    cairn_core::ErrorCode::parse(s)
}

/// The wire form of an optional stable error code: empty is none.
pub fn code_to_wire(c: Option<cairn_core::ErrorCode>) -> String {
    c.map(|c| c.as_str().to_string()).unwrap_or_default()
}

/// Parses a job state name.
pub(crate) fn job_state(s: &str) -> Result<JobState, WireError> {
    JobState::parse(s).ok_or_else(|| {
        bad(
            "job state",
            format!("{s:?} (use queued, running, succeeded, failed or cancelled)"),
        )
    })
}

impl From<&Job> for pb::Job {
    fn from(j: &Job) -> Self {
        pb::Job {
            id: j.id.to_string(),
            kind: j.kind.as_str().to_string(),
            env: j.env.to_string(),
            host: j.host.clone(),
            requester: j.requester.clone(),
            options: Some((&j.options).into()),
            state: j.state.as_str().to_string(),
            reason: j.reason.clone(),
            created_ms: j.created_ms,
            started_ms: j.started_ms.unwrap_or(0),
            finished_ms: j.finished_ms.unwrap_or(0),
            lease_until_ms: j.lease_until_ms,
            cancel_requested: j.cancel_requested,
            progress: Some((&j.progress).into()),
            result: Some((&j.result).into()),
            queue_timeout_ms: j.queue_timeout_ms,
            waiting: String::new(),
            code: code_to_wire(j.code),
            reserved_backup: j.reserved_backup.map(|b| b.to_string()).unwrap_or_default(),
            log: j
                .log
                .iter()
                .map(|l| pb::JobLogLine {
                    at_ms: l.at_ms,
                    level: l.level.as_str().to_string(),
                    text: l.text.clone(),
                })
                .collect(),
            log_dropped: j.log_dropped,
        }
    }
}

impl TryFrom<pb::Job> for Job {
    type Error = WireError;
    fn try_from(j: pb::Job) -> Result<Self, WireError> {
        Ok(Job {
            id: j.id.parse().map_err(|e| bad("job id", format!("{e}")))?,
            kind: JobKind::parse(&j.kind).ok_or_else(|| {
                bad(
                    "job kind",
                    format!(
                        "{:?} (use backup, restore, selective_restore or delete)",
                        j.kind
                    ),
                )
            })?,
            env: j
                .env
                .parse()
                .map_err(|e| bad("environment id", format!("{e}")))?,
            host: j.host,
            requester: j.requester,
            options: j.options.unwrap_or_default().try_into()?,
            state: job_state(&j.state)?,
            reason: j.reason,
            code: opt_code(&j.code),
            created_ms: j.created_ms,
            started_ms: opt_time(j.started_ms),
            finished_ms: opt_time(j.finished_ms),
            lease_until_ms: j.lease_until_ms,
            queue_timeout_ms: j.queue_timeout_ms,
            cancel_requested: j.cancel_requested,
            progress: j.progress.unwrap_or_default().into(),
            result: j.result.unwrap_or_default().try_into()?,
            reserved_backup: opt_backup_id(&j.reserved_backup, "reserved backup id")?,
            log: j
                .log
                .into_iter()
                .map(|l| JobLogLine {
                    at_ms: l.at_ms,
                    level: LogLevel::parse(&l.level),
                    text: l.text,
                })
                .collect(),
            log_dropped: j.log_dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::{BackupId, EnvId};

    #[test]
    fn jobs_round_trip() {
        let env = EnvId::derive("h1/101");
        let mut job = Job::new(
            uuid::Uuid::from_u128(42),
            JobKind::SelectiveRestore,
            env,
            "h1".into(),
            "admin".into(),
            JobOptions {
                backup_type: Some(BackupType::Differential),
                compression: Some(Compression::High),
                name: "n".into(),
                description: "d".into(),
                tags: vec!["t".into()],
                includes: vec!["etc".into()],
                excludes: vec!["*.log".into()],
                backup: Some(BackupId::new(env, 1_700_000_000)),
                force: true,
                target_path: "/srv/x".into(),
                paths: vec!["etc/passwd".into()],
                prev: true,
                edit: Some(cairn_core::job::BackupEdit {
                    name: None,
                    description: Some(String::new()),
                    tags: Some(vec!["a".into()]),
                    protected: Some(false),
                }),
                allow_privileged: true,
                privileged: true,
                replace: Some(Replace::Backup(BackupId::new(env, 1_600_000_000))),
            },
            1_000,
            60_000,
        );
        job.claim("h1", 2_000, 9_000).unwrap();
        job.cancel_requested = true;
        job.progress = JobProgress {
            phase: "restoring".into(),
            percent: 50,
            files_done: 1,
            files_total: 2,
            bytes_done: 3,
            bytes_total: 4,
            bytes_per_sec: 5,
            updated_ms: 6,
        };
        job.finish(
            Some("h1"),
            JobState::Failed,
            "why".into(),
            Some(cairn_core::ErrorCode::TargetChanged),
            JobResult {
                backup: Some(BackupId::new(env, 1_700_000_001)),
                message: "m".into(),
                details: "{}".into(),
                ..JobResult::default()
            },
            3_000,
        )
        .unwrap();
        job.result.replaced = Some(BackupId::new(env, 1_600_000_000));
        job.result.replace_refused = Some(cairn_core::ErrorCode::Protected);
        job.result.replace_reason = "kept".into();
        job.reserved_backup = Some(BackupId::new(env, 1_700_000_001));
        job.cancel("ui:alice", 2_500).ok();
        job.log(2_600, cairn_core::job::LogLevel::Warn, "w");
        job.log_dropped = 3;
        assert!(job.log.len() >= 4, "{:?}", job.log);
        let wire = pb::Job::from(&job);
        assert_eq!(wire.log.len(), job.log.len());
        assert_eq!(wire.log.last().map(|l| l.level.as_str()), Some("warn"));
        assert_eq!(wire.reserved_backup, format!("{env}/20231114221321"));
        assert_eq!(
            wire.code, "E1018",
            "a failed job carries its code on the wire"
        );
        let back = Job::try_from(wire).unwrap();
        assert_eq!(back, job);
        let queued = Job::new(
            uuid::Uuid::from_u128(1),
            JobKind::Backup,
            env,
            "h".into(),
            "r".into(),
            JobOptions::default(),
            5,
            0,
        );
        assert_eq!(Job::try_from(pb::Job::from(&queued)).unwrap(), queued);
        let mut bad_state = pb::Job::from(&queued);
        bad_state.state = "sleeping".into();
        assert!(Job::try_from(bad_state).is_err());
    }

    #[test]
    fn hosts_envs_and_settings_round_trip() {
        let env = EnvRecord {
            eid: EnvId::derive("h1/101"),
            host: "h1".into(),
            name: "101".into(),
            path: "/vz/private/101".into(),
            title: "web".into(),
            hostname: "web.example".into(),
            ip: vec!["10.0.0.5".into(), "10.0.0.6/24".into()],
            os: "debian-12".into(),
            description: "d".into(),
            kind: "virtuozzo".into(),
        };
        assert_eq!(EnvRecord::try_from(pb::Env::from(&env)).unwrap(), env);
        let host = HostRecord {
            id: "h1".into(),
            hostname: "hn1".into(),
            addrs: vec!["10.0.0.1".into()],
            seen_ms: 7,
            version: "0.1.0".into(),
            max_jobs: 4,
            envs: vec![env.eid],
        };
        assert_eq!(HostRecord::try_from(pb::Host::from(&host)).unwrap(), host);
        let info = env.info();
        assert_eq!(EnvInfo::from(pb::EnvInfo::from(&info)), info);
        let cfg = EnvConfig {
            keep_max: Some(3),
            chain_length: Some(4),
            chain_days: Some(5),
            compression: Some(2),
            backup_type: Some(1),
            pre_hooks: Some(vec!["a".into(), "b".into()]),
            post_hooks: Some(vec![]),
            hook_timeout_secs: Some(9),
            retention_grace_days: Some(0),
        };
        assert_eq!(env_config_from_wire(env_config_to_wire(&cfg)), cfg);
        let unset = EnvConfig::default();
        assert_eq!(env_config_from_wire(env_config_to_wire(&unset)), unset);
    }
}
