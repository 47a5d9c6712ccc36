//! Running totals of committed backups: how many, how many bytes they protect and add, and
//! the same per UTC day. What a dashboard or a status call needs about the whole catalog (or
//! one environment) without listing its backups.
//!
//! # Invariants
//! - The totals of a set of backups are a function of the set alone: [`BackupTotals::of`]
//!   over the records equals any sequence of [`BackupTotals::change`] calls that built the
//!   same set (sums and counts commute; days are a `BTreeMap`, so their encoding is
//!   deterministic). That is what lets the catalog keep them in the same write as each
//!   commit, delete and update, and rebuild them from the records when it finds none
//!   (a database or snapshot written by a release that kept none) with the same result
//!   on every member.
//! - A change is told the record before and after (`None`: absent). An update that keeps
//!   the backup (protect, rename) replaces its old contribution by the new one.
//! - Removing more than was added saturates at zero instead of wrapping; a day left with
//!   no backups is dropped, so the days held are exactly those with backups.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::BackupRecord;

const SECS_PER_DAY: i64 = 86_400;

/// Backups and logical bytes of one UTC day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayTotal {
    pub backups: u64,
    pub logical_bytes: u64,
}

/// The totals of a set of backups (the whole catalog, or one environment's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupTotals {
    pub count: u64,
    /// Sum of the backups' logical sizes (bytes protected).
    pub logical_bytes: u64,
    /// Sum of the new data each backup stored (compressed bytes).
    pub stored_bytes: u64,
    /// Per day (days since 1970-01-01, UTC, of the backup's id time): only days with backups.
    #[serde(default)]
    pub days: BTreeMap<i64, DayTotal>,
}

/// The UTC day (days since 1970-01-01) of a backup id's time (seconds).
pub fn day_of(time_secs: i64) -> i64 {
    time_secs.div_euclid(SECS_PER_DAY)
}

impl BackupTotals {
    /// The totals of these backups.
    pub fn of<'a>(records: impl IntoIterator<Item = &'a BackupRecord>) -> BackupTotals {
        let mut t = BackupTotals::default();
        for r in records {
            t.add(r);
        }
        t
    }

    /// Counts one more backup.
    pub fn add(&mut self, r: &BackupRecord) {
        self.count += 1;
        self.logical_bytes = self.logical_bytes.saturating_add(r.logical_size);
        self.stored_bytes = self.stored_bytes.saturating_add(r.stored_size);
        let d = self.days.entry(day_of(r.id.time)).or_default();
        d.backups += 1;
        d.logical_bytes = d.logical_bytes.saturating_add(r.logical_size);
    }

    /// Counts one backup less.
    pub fn remove(&mut self, r: &BackupRecord) {
        self.count = self.count.saturating_sub(1);
        self.logical_bytes = self.logical_bytes.saturating_sub(r.logical_size);
        self.stored_bytes = self.stored_bytes.saturating_sub(r.stored_size);
        let day = day_of(r.id.time);
        if let Some(d) = self.days.get_mut(&day) {
            d.backups = d.backups.saturating_sub(1);
            d.logical_bytes = d.logical_bytes.saturating_sub(r.logical_size);
            if d.backups == 0 {
                self.days.remove(&day);
            }
        }
    }

    /// Accounts for one record changing from `before` to `after` (`None`: absent).
    pub fn change(&mut self, before: Option<&BackupRecord>, after: Option<&BackupRecord>) {
        if let Some(b) = before {
            self.remove(b);
        }
        if let Some(a) = after {
            self.add(a);
        }
    }

    /// The days from `first` to `last` (inclusive), each with its totals (zero when none).
    pub fn day_range(&self, first: i64, last: i64) -> Vec<(i64, DayTotal)> {
        (first..=last)
            .map(|d| (d, self.days.get(&d).copied().unwrap_or_default()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackupId, EnvId};

    fn rec(env: &str, time: i64, logical: u64, stored: u64) -> BackupRecord {
        BackupRecord {
            id: BackupId::new(EnvId::derive(env), time),
            kind: crate::BackupType::Full,
            parent: None,
            name: String::new(),
            description: String::new(),
            tags: Vec::new(),
            manifest: crate::ChunkId::of(b"m"),
            logical_size: logical,
            stored_size: stored,
            file_count: 1,
            chunk_count: 1,
            state: crate::BackupState::Complete,
            errors: Vec::new(),
            error_count: 0,
            compression: crate::Compression::Normal,
            host: "h".into(),
            source: "/s".into(),
            env_info: Default::default(),
            includes: Vec::new(),
            excludes: Vec::new(),
            protected: false,
        }
    }

    #[test]
    fn totals_count_bytes_and_days() {
        let a = rec("a", 10, 100, 10);
        let b = rec("a", 20, 50, 5);
        let c = rec("b", SECS_PER_DAY + 1, 7, 1);
        let t = BackupTotals::of([&a, &b, &c]);
        assert_eq!((t.count, t.logical_bytes, t.stored_bytes), (3, 157, 16));
        assert_eq!(
            t.days,
            BTreeMap::from([
                (
                    0,
                    DayTotal {
                        backups: 2,
                        logical_bytes: 150
                    }
                ),
                (
                    1,
                    DayTotal {
                        backups: 1,
                        logical_bytes: 7
                    }
                ),
            ])
        );
        assert_eq!(
            t.day_range(0, 2)
                .iter()
                .map(|(_, d)| d.backups)
                .collect::<Vec<_>>(),
            vec![2, 1, 0]
        );
    }

    #[test]
    fn removing_drops_empty_days_and_never_wraps() {
        let a = rec("a", 10, 100, 10);
        let c = rec("b", SECS_PER_DAY + 1, 7, 1);
        let mut t = BackupTotals::of([&a, &c]);
        t.remove(&c);
        assert_eq!(t, BackupTotals::of([&a]));
        t.remove(&a);
        assert_eq!(t, BackupTotals::default());
        // More removed than added: zero, not a wrapped count.
        t.remove(&a);
        assert_eq!(t, BackupTotals::default());
    }

    #[test]
    fn an_update_replaces_the_old_contribution() {
        let a = rec("a", 10, 100, 10);
        let mut a2 = a.clone();
        a2.logical_size = 120;
        let mut t = BackupTotals::of([&a]);
        t.change(Some(&a), Some(&a2));
        assert_eq!(t, BackupTotals::of([&a2]));
    }

    /// Whatever order the commits and deletes came in, the totals equal those of the set
    /// that remains (the catalog rebuilds them from the records and must agree).
    #[test]
    fn any_history_ends_at_the_totals_of_what_remains() {
        let records: Vec<BackupRecord> = (0..40)
            .map(|i| {
                rec(
                    if i % 3 == 0 { "a" } else { "b" },
                    i * 7_000,
                    i as u64 * 11,
                    3,
                )
            })
            .collect();
        let mut t = BackupTotals::default();
        let mut kept = Vec::new();
        for (i, r) in records.iter().enumerate() {
            t.change(None, Some(r));
            kept.push(r);
            if i % 4 == 1 {
                let gone = kept.remove(i % kept.len());
                t.change(Some(gone), None);
            }
        }
        assert_eq!(t, BackupTotals::of(kept.iter().copied()));
        let json = serde_json::to_vec(&t).unwrap();
        assert_eq!(serde_json::from_slice::<BackupTotals>(&json).unwrap(), t);
    }
}
