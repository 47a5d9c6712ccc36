//! Retention and backup sessions: which backups an environment keeps, and what garbage
//! collection must wait for.
//!
//! Both are decisions on data: [`excess`] takes an environment's backups and its config and
//! returns the ones to delete; [`sessions_at_gc_start`] splits the sessions open when a GC
//! begins into those it waits for and those it closes, and [`still_waiting`] tells which of
//! them are still open.
//!
//! # Retention and a compromised host
//! Retention runs inside the catalog's decision of the commit (or settings change) that
//! triggers it, atomically with it. An agent may commit backups of its own environments, so
//! retention triggered by a principal that may not delete (an agent, an operator) removes
//! nothing younger than the grace ([`EnvConfig::retention_grace_days`], default
//! [`DEFAULT_RETENTION_GRACE_DAYS`]) and nothing protected: a host that commits `keep_max`
//! junk backups cannot push out the history of the last week, nor any protected backup. An
//! admin's own change of `keep_max` applies at once.

use serde::{Deserialize, Serialize};

use crate::id::{BackupId, EnvId};

/// How long an open backup session counts before GC stops waiting for it (its agent died
/// without closing it).
pub const SESSION_TTL_MS: i64 = 15 * 60 * 1000;
/// How often a running backup renews its session (well inside [`SESSION_TTL_MS`]).
pub const SESSION_RENEW_MS: i64 = 60 * 1000;

/// Per-environment backup settings kept in the catalog (the `backupm_config` fields grow
/// here; absent fields keep their defaults, so old records stay readable).
///
/// Every field is optional: an environment's own setting wins, then the cluster-wide one
/// (kept under [`EnvId::GLOBAL`]), then the built-in default ([`EnvConfig::merged`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnvConfig {
    /// Backups kept per environment; after each commit the oldest beyond it are deleted.
    /// `None`: keep everything.
    pub keep_max: Option<u32>,
    /// Incremental or differential backups after a full before the next request becomes a
    /// full.
    pub chain_length: Option<u32>,
    /// Days after a full before the next request becomes a full.
    pub chain_days: Option<u32>,
    /// Default compression (0 none … 3 maximum).
    pub compression: Option<u32>,
    /// Default backup type (0 full, 1 incremental, 2 differential).
    pub backup_type: Option<u32>,
    /// Commands the agent runs before a backup (`sh -c`, in order; one failing fails the job).
    pub pre_hooks: Option<Vec<String>>,
    /// Commands the agent runs after a backup, whatever its outcome.
    pub post_hooks: Option<Vec<String>>,
    /// Seconds each hook may run before it is killed.
    pub hook_timeout_secs: Option<u32>,
    /// Days a backup is safe from retention triggered by an agent's or operator's commit
    /// (see the module note). `None`: [`DEFAULT_RETENTION_GRACE_DAYS`]; 0: no grace.
    pub retention_grace_days: Option<u32>,
}

/// The grace, in days, when none is configured.
pub const DEFAULT_RETENTION_GRACE_DAYS: u32 = 7;

/// Seconds a hook runs before it is killed when no timeout is configured.
pub const DEFAULT_HOOK_TIMEOUT_SECS: u32 = 300;

impl EnvConfig {
    /// This config with every unset field taken from `global`.
    pub fn merged(&self, global: &EnvConfig) -> EnvConfig {
        EnvConfig {
            keep_max: self.keep_max.or(global.keep_max),
            chain_length: self.chain_length.or(global.chain_length),
            chain_days: self.chain_days.or(global.chain_days),
            compression: self.compression.or(global.compression),
            backup_type: self.backup_type.or(global.backup_type),
            pre_hooks: self.pre_hooks.clone().or_else(|| global.pre_hooks.clone()),
            post_hooks: self
                .post_hooks
                .clone()
                .or_else(|| global.post_hooks.clone()),
            hook_timeout_secs: self.hook_timeout_secs.or(global.hook_timeout_secs),
            retention_grace_days: self.retention_grace_days.or(global.retention_grace_days),
        }
    }

    /// The grace in force, in seconds.
    pub fn grace_secs(&self) -> i64 {
        i64::from(
            self.retention_grace_days
                .unwrap_or(DEFAULT_RETENTION_GRACE_DAYS),
        ) * 86_400
    }

    /// Names the first invalid field and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.keep_max == Some(0) {
            return Err("keep_max must be 1 or more (or unset to keep every backup)".into());
        }
        if self.chain_length == Some(0) {
            return Err("chain_length must be 1 or more (or unset for no limit)".into());
        }
        if self.chain_days == Some(0) {
            return Err("chain_days must be 1 or more (or unset for no limit)".into());
        }
        if matches!(self.compression, Some(c) if c > 3) {
            return Err("compression must be 0 (none) to 3 (maximum)".into());
        }
        if matches!(self.backup_type, Some(t) if t > 2) {
            return Err("type must be 0 (full), 1 (incremental) or 2 (differential)".into());
        }
        if self.hook_timeout_secs == Some(0) {
            return Err("hook_timeout_secs must be 1 or more".into());
        }
        for h in self.pre_hooks.iter().chain(&self.post_hooks).flatten() {
            if h.trim().is_empty() {
                return Err("a hook command is empty".into());
            }
        }
        Ok(())
    }
}

/// What retention looks at in one backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: BackupId,
    pub protected: bool,
}

/// Returns the backups to delete so that at most `keep_max` unprotected ones remain, the
/// oldest first. Protected backups neither count nor go. With `young_from` (seconds since
/// the epoch), no backup taken at or after it goes (the grace). `backups` may come in any
/// order.
pub fn excess(backups: &[Candidate], config: &EnvConfig, young_from: Option<i64>) -> Vec<BackupId> {
    let Some(keep) = config.keep_max else {
        return Vec::new();
    };
    let keep = keep.max(1) as usize;
    let mut sorted: Vec<BackupId> = backups
        .iter()
        .filter(|c| !c.protected)
        .map(|c| c.id)
        .collect();
    sorted.sort_by_key(|b| b.time);
    let n = sorted.len().saturating_sub(keep);
    sorted.truncate(n);
    if let Some(from) = young_from {
        sorted.retain(|b| b.time < from);
    }
    sorted
}

/// A backup in progress, registered before it uploads anything and closed after its commit
/// (or failure). Garbage collection waits for the sessions open when it begins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: uuid::Uuid,
    pub env: EnvId,
    /// When the session opened, milliseconds since the Unix epoch (the leader's clock). Only
    /// its expiry is judged by it (see [`Session::expired`]); garbage collection itself
    /// compares no clocks.
    pub started_ms: i64,
    #[serde(default)]
    pub host: String,
    /// The backup this session committed: a repeated commit (a client retrying after a lost
    /// answer) answers it instead of committing twice.
    #[serde(default)]
    pub committed: Option<BackupId>,
    /// When the backup last renewed the session (the leader's clock; 0: never).
    #[serde(default)]
    pub renewed_ms: i64,
}

impl Session {
    /// Tells whether the session went [`SESSION_TTL_MS`] without being opened or renewed by
    /// `now_ms`. Leaders' clocks that disagree can only make a session expire early, and a
    /// commit in an expired (closed) session is refused: a backup fails, nothing is lost.
    pub fn expired(&self, now_ms: i64) -> bool {
        now_ms - self.started_ms.max(self.renewed_ms) >= SESSION_TTL_MS
    }
}

/// Splits the sessions open when a garbage collection begins into those it must wait for
/// (live) and those it closes first (expired: a commit in a closed session is refused, so
/// a client that was silent past the TTL cannot commit chunks the sweep has removed).
pub fn sessions_at_gc_start(sessions: &[Session], now_ms: i64) -> (Vec<&Session>, Vec<&Session>) {
    sessions.iter().partition(|s| !s.expired(now_ms))
}

/// The sessions among `waiting` (ids taken when the collection began) still open in
/// `sessions`. Sessions opened later are not waited for: every chunk they use is touched
/// after the nodes' marks.
pub fn still_waiting<'a>(
    waiting: &std::collections::HashSet<uuid::Uuid>,
    sessions: &'a [Session],
) -> Vec<&'a Session> {
    sessions
        .iter()
        .filter(|s| waiting.contains(&s.id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(times: &[i64]) -> Vec<BackupId> {
        let env = EnvId::derive("h/ct");
        times.iter().map(|t| BackupId::new(env, *t)).collect()
    }

    #[test]
    fn an_environment_setting_wins_over_the_global_one() {
        let global = EnvConfig {
            keep_max: Some(5),
            chain_length: Some(3),
            pre_hooks: Some(vec!["sync".into()]),
            ..Default::default()
        };
        let env = EnvConfig {
            keep_max: Some(2),
            pre_hooks: Some(vec![]),
            ..Default::default()
        };
        let m = env.merged(&global);
        assert_eq!(m.keep_max, Some(2));
        assert_eq!(m.chain_length, Some(3));
        assert_eq!(m.pre_hooks, Some(vec![]), "an empty list overrides");
        assert_eq!(m.chain_days, None);
        assert!(m.validate().is_ok());
        let bad = EnvConfig {
            compression: Some(4),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("compression"));
    }

    fn candidates(times: &[i64]) -> Vec<Candidate> {
        ids(times)
            .into_iter()
            .map(|id| Candidate {
                id,
                protected: false,
            })
            .collect()
    }

    fn cfg(k: Option<u32>) -> EnvConfig {
        EnvConfig {
            keep_max: k,
            ..Default::default()
        }
    }

    #[test]
    fn keep_max_deletes_the_oldest_beyond_it() {
        let all = candidates(&[30, 10, 50, 20, 40]);
        assert_eq!(excess(&all, &cfg(None), None), vec![]);
        assert_eq!(excess(&all, &cfg(Some(3)), None), ids(&[10, 20]));
        assert_eq!(excess(&all, &cfg(Some(5)), None), vec![]);
        assert_eq!(excess(&all, &cfg(Some(9)), None), vec![]);
        // Zero would delete the backup just committed; it means one.
        assert_eq!(excess(&all, &cfg(Some(0)), None), ids(&[10, 20, 30, 40]));
    }

    #[test]
    fn protected_backups_neither_count_nor_go_and_young_ones_stay() {
        let mut all = candidates(&[10, 20, 30, 40, 50]);
        all[0].protected = true;
        all[2].protected = true;
        // Unprotected: 20, 40, 50; keep 2 → only 20 goes.
        assert_eq!(excess(&all, &cfg(Some(2)), None), ids(&[20]));
        // Within the grace nothing goes, whatever keep_max says.
        let all = candidates(&[10, 20, 30, 40, 50]);
        assert_eq!(excess(&all, &cfg(Some(1)), Some(30)), ids(&[10, 20]));
        assert_eq!(excess(&all, &cfg(Some(1)), Some(0)), vec![]);
        assert_eq!(cfg(None).grace_secs(), 7 * 86_400);
        let none = EnvConfig {
            retention_grace_days: Some(0),
            ..Default::default()
        };
        assert_eq!(none.grace_secs(), 0);
    }

    #[test]
    fn gc_waits_only_for_sessions_open_at_its_start_and_closes_expired_ones() {
        let env = EnvId::derive("h/ct");
        let s = |ms| Session {
            id: uuid::Uuid::new_v4(),
            env,
            started_ms: ms,
            host: String::new(),
            committed: None,
            renewed_ms: 0,
        };
        let now = SESSION_TTL_MS + 10_000;
        let sessions = vec![s(1_000), s(20_000), s(now - 5)];
        let (live, expired) = sessions_at_gc_start(&sessions, now);
        assert_eq!(live.len(), 2);
        assert_eq!(expired, vec![&sessions[0]]);
        let waiting: std::collections::HashSet<_> = live.iter().map(|s| s.id).collect();
        // One of them closed, and a new one opened: only the other old one is waited for.
        let later = vec![sessions[2].clone(), s(now + 1)];
        assert_eq!(still_waiting(&waiting, &later), vec![&later[0]]);
        // A renewed session lives on.
        let renewed = Session {
            renewed_ms: now - 1,
            ..sessions[0].clone()
        };
        assert!(!renewed.expired(now));
    }
}
