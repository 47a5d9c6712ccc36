//! The wire form of a node's last maintenance runs ([`cairn_core::runs::LastRuns`]), both
//! ways, in one place. An error's code this build does not know reads as internal.

use cairn_core::runs::{GcRun, LastRuns, RepairRun, RunError, ScrubRun, SweepRun};
use cairn_core::ErrorCode;

use crate::pb;

fn error_to_wire(e: &Option<RunError>) -> Option<pb::RunError> {
    e.as_ref().map(|e| pb::RunError {
        code: e.code.as_str().to_string(),
        message: e.message.clone(),
    })
}

fn error_from_wire(e: Option<pb::RunError>) -> Option<RunError> {
    e.map(|e| RunError {
        code: ErrorCode::parse(&e.code).unwrap_or(ErrorCode::Internal),
        message: e.message,
    })
}

impl From<&LastRuns> for pb::LastRuns {
    fn from(r: &LastRuns) -> Self {
        pb::LastRuns {
            scrub: r.scrub.as_ref().map(|s| pb::ScrubRun {
                at_ms: s.at_ms,
                duration_ms: s.duration_ms,
                checked: s.checked,
                corrupt: s.corrupt,
                repaired: s.repaired,
                unrepaired: s.unrepaired,
                unreadable: s.unreadable,
                error: error_to_wire(&s.error),
            }),
            gc: r.gc.as_ref().map(|g| pb::GcRun {
                at_ms: g.at_ms,
                duration_ms: g.duration_ms,
                backups: g.backups,
                referenced: g.referenced,
                removed: g.removed,
                bytes_reclaimed: g.bytes_reclaimed,
                segments_compacted: g.segments_compacted,
                nodes_skipped: g.nodes_skipped.clone(),
                error: error_to_wire(&g.error),
            }),
            sweep: r.sweep.as_ref().map(|s| pb::SweepRun {
                at_ms: s.at_ms,
                removed: s.removed,
                bytes_reclaimed: s.bytes_reclaimed,
                segments_compacted: s.segments_compacted,
                skipped: s.skipped,
                error: error_to_wire(&s.error),
            }),
            repair: r.repair.as_ref().map(|p| pb::RepairRun {
                at_ms: p.at_ms,
                duration_ms: p.duration_ms,
                epoch: p.epoch,
                checked: p.checked,
                pushed: p.pushed,
                dropped: p.dropped,
                backlog: p.backlog,
                error: error_to_wire(&p.error),
            }),
        }
    }
}

impl From<pb::LastRuns> for LastRuns {
    fn from(r: pb::LastRuns) -> Self {
        LastRuns {
            scrub: r.scrub.map(|s| ScrubRun {
                at_ms: s.at_ms,
                duration_ms: s.duration_ms,
                checked: s.checked,
                corrupt: s.corrupt,
                repaired: s.repaired,
                unrepaired: s.unrepaired,
                unreadable: s.unreadable,
                error: error_from_wire(s.error),
            }),
            gc: r.gc.map(|g| GcRun {
                at_ms: g.at_ms,
                duration_ms: g.duration_ms,
                backups: g.backups,
                referenced: g.referenced,
                removed: g.removed,
                bytes_reclaimed: g.bytes_reclaimed,
                segments_compacted: g.segments_compacted,
                nodes_skipped: g.nodes_skipped,
                error: error_from_wire(g.error),
            }),
            sweep: r.sweep.map(|s| SweepRun {
                at_ms: s.at_ms,
                removed: s.removed,
                bytes_reclaimed: s.bytes_reclaimed,
                segments_compacted: s.segments_compacted,
                skipped: s.skipped,
                error: error_from_wire(s.error),
            }),
            repair: r.repair.map(|p| RepairRun {
                at_ms: p.at_ms,
                duration_ms: p.duration_ms,
                epoch: p.epoch,
                checked: p.checked,
                pushed: p.pushed,
                dropped: p.dropped,
                backlog: p.backlog,
                error: error_from_wire(p.error),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_runs_round_trip() {
        let err = |c: ErrorCode| {
            Some(RunError {
                code: c,
                message: format!("{c:?}"),
            })
        };
        let full = LastRuns {
            scrub: Some(ScrubRun {
                at_ms: 1,
                duration_ms: 2,
                checked: 3,
                corrupt: 4,
                repaired: 5,
                unrepaired: 6,
                unreadable: 7,
                error: err(ErrorCode::Corrupt),
            }),
            gc: Some(GcRun {
                at_ms: 8,
                duration_ms: 9,
                backups: 10,
                referenced: 11,
                removed: 12,
                bytes_reclaimed: 13,
                segments_compacted: 14,
                nodes_skipped: vec![15, 16],
                error: err(ErrorCode::Conflict),
            }),
            sweep: Some(SweepRun {
                at_ms: 17,
                removed: 18,
                bytes_reclaimed: 19,
                segments_compacted: 20,
                skipped: true,
                error: err(ErrorCode::Unavailable),
            }),
            repair: Some(RepairRun {
                at_ms: 21,
                duration_ms: 22,
                epoch: 23,
                checked: 24,
                pushed: 25,
                dropped: 26,
                backlog: 27,
                error: err(ErrorCode::Internal),
            }),
        };
        assert_eq!(LastRuns::from(pb::LastRuns::from(&full)), full);
        let none = LastRuns::default();
        assert_eq!(LastRuns::from(pb::LastRuns::from(&none)), none);
    }
}
