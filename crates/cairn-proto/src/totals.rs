//! The wire form of backup totals ([`cairn_core::totals::BackupTotals`]), both ways, in one
//! place.

use cairn_core::totals::{BackupTotals, DayTotal};

use crate::pb;

impl From<&BackupTotals> for pb::BackupTotals {
    fn from(t: &BackupTotals) -> Self {
        pb::BackupTotals {
            count: t.count,
            logical_bytes: t.logical_bytes,
            stored_bytes: t.stored_bytes,
            days: t
                .days
                .iter()
                .map(|(day, d)| pb::DayTotal {
                    day: *day,
                    backups: d.backups,
                    logical_bytes: d.logical_bytes,
                })
                .collect(),
        }
    }
}

impl From<pb::BackupTotals> for BackupTotals {
    fn from(t: pb::BackupTotals) -> Self {
        BackupTotals {
            count: t.count,
            logical_bytes: t.logical_bytes,
            stored_bytes: t.stored_bytes,
            days: t
                .days
                .into_iter()
                .map(|d| {
                    (
                        d.day,
                        DayTotal {
                            backups: d.backups,
                            logical_bytes: d.logical_bytes,
                        },
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_round_trip() {
        let t = BackupTotals {
            count: 3,
            logical_bytes: 300,
            stored_bytes: 30,
            days: [
                (
                    -1,
                    DayTotal {
                        backups: 1,
                        logical_bytes: 100,
                    },
                ),
                (
                    20_000,
                    DayTotal {
                        backups: 2,
                        logical_bytes: 200,
                    },
                ),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(BackupTotals::from(pb::BackupTotals::from(&t)), t);
        assert_eq!(
            BackupTotals::from(pb::BackupTotals::from(&BackupTotals::default())),
            BackupTotals::default()
        );
    }
}
