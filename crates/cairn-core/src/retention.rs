//! Retention and backup sessions: which backups an environment keeps, and what garbage
//! collection must wait for.
//!
//! Both are decisions on data: [`excess`] takes an environment's backups and its config and
//! returns the ones to delete; [`blocking_sessions`] takes the open sessions and a GC start
//! time and returns the ones GC must wait for.

use serde::{Deserialize, Serialize};

use crate::id::{BackupId, EnvId};

/// How long an open backup session counts before GC stops waiting for it (its agent died
/// without closing it).
pub const SESSION_TTL_MS: i64 = 24 * 3600 * 1000;

/// Per-environment backup settings kept in the catalog (the `backupm_config` fields grow
/// here; absent fields keep their defaults, so old records stay readable).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvConfig {
    /// Backups kept per environment; after each commit the oldest beyond it are deleted.
    /// `None`: keep everything.
    #[serde(default)]
    pub keep_max: Option<u32>,
}

/// Returns the backups to delete so that at most `keep_max` remain: the oldest first.
/// `backups` may come in any order.
pub fn excess(backups: &[BackupId], config: &EnvConfig) -> Vec<BackupId> {
    let Some(keep) = config.keep_max else {
        return Vec::new();
    };
    let keep = keep.max(1) as usize;
    let mut sorted = backups.to_vec();
    sorted.sort_by_key(|b| b.time);
    let n = sorted.len().saturating_sub(keep);
    sorted.truncate(n);
    sorted
}

/// A backup in progress, registered before it uploads anything and closed after its commit
/// (or failure). Garbage collection waits for sessions that started before its mark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: uuid::Uuid,
    pub env: EnvId,
    /// When the session opened, milliseconds since the Unix epoch (the leader's clock).
    pub started_ms: i64,
    #[serde(default)]
    pub host: String,
}

/// Returns the sessions a GC that started at `gc_started_ms` must wait for: those opened
/// before it that have not expired by `now_ms`.
pub fn blocking_sessions(sessions: &[Session], gc_started_ms: i64, now_ms: i64) -> Vec<&Session> {
    sessions
        .iter()
        .filter(|s| s.started_ms < gc_started_ms && now_ms - s.started_ms < SESSION_TTL_MS)
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
    fn keep_max_deletes_the_oldest_beyond_it() {
        let all = ids(&[30, 10, 50, 20, 40]);
        let cfg = |k| EnvConfig { keep_max: k };
        assert_eq!(excess(&all, &cfg(None)), vec![]);
        assert_eq!(excess(&all, &cfg(Some(3))), ids(&[10, 20]));
        assert_eq!(excess(&all, &cfg(Some(5))), vec![]);
        assert_eq!(excess(&all, &cfg(Some(9))), vec![]);
        // Zero would delete the backup just committed; it means one.
        assert_eq!(excess(&all, &cfg(Some(0))), ids(&[10, 20, 30, 40]));
    }

    #[test]
    fn gc_waits_only_for_older_live_sessions() {
        let env = EnvId::derive("h/ct");
        let s = |ms| Session {
            id: uuid::Uuid::new_v4(),
            env,
            started_ms: ms,
            host: String::new(),
        };
        let sessions = vec![s(1_000), s(5_000), s(9_000)];
        let now = 10_000;
        let b = blocking_sessions(&sessions, 6_000, now);
        assert_eq!(b.len(), 2);
        // A day later the old ones have expired.
        assert!(blocking_sessions(&sessions, 6_000, now + SESSION_TTL_MS).is_empty());
    }
}
