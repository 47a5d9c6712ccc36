//! What a storage node remembers of its last maintenance runs: scrub, garbage collection
//! (the collection it coordinated and its own sweep) and repair.
//!
//! # What is kept, and where
//! One record per kind of run, the newest only: when it ended, its counters, and the error's
//! stable code and text when it failed (a GC refused because backups were still running is
//! a failed run with its code). A run is recorded by the code that runs it, whoever started
//! it (an admin call, `remove-node`, or a background loop), so the record says what really
//! happened on the node, not what one caller saw.
//!
//! The node keeps them in a small versioned file in its data directory, written whole and
//! atomically (temp file, fsync, rename, fsync of the directory; `cairn_node::last_runs`),
//! so they survive a restart and a crash leaves the old or the new file, never a torn one.
//! The records are a report, not state anything depends on: a file that cannot be read is
//! ignored, and the next run writes a fresh one. Every field has a serde default, so a file
//! an older build wrote still reads.
//!
//! Times are the node's own clock (ms since the Unix epoch); nothing compares them across
//! nodes.

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// Why a run failed: the stable code (what callers decide on) and the text (for people).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    #[serde(with = "code_serde")]
    pub code: ErrorCode,
    pub message: String,
}

/// The last scrub of the node's store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScrubRun {
    /// When it ended.
    pub at_ms: i64,
    pub duration_ms: u64,
    pub checked: u64,
    pub corrupt: u64,
    /// Corrupt copies replaced from another node.
    pub repaired: u64,
    /// Corrupt copies no other node could replace (kept, never served).
    pub unrepaired: u64,
    /// Copies whose read failed with an I/O error (kept, read again next time).
    pub unreadable: u64,
    pub error: Option<RunError>,
}

/// The last garbage collection this node coordinated (it was the leader), for the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GcRun {
    pub at_ms: i64,
    pub duration_ms: u64,
    /// Committed backups marked.
    pub backups: u64,
    /// Chunk ids they reference.
    pub referenced: u64,
    /// Chunks removed on every node swept.
    pub removed: u64,
    pub bytes_reclaimed: u64,
    pub segments_compacted: u64,
    /// Nodes that were not marked or not swept.
    pub nodes_skipped: Vec<u64>,
    pub error: Option<RunError>,
}

/// This node's part in the last garbage collection: its own sweep.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SweepRun {
    pub at_ms: i64,
    pub removed: u64,
    pub bytes_reclaimed: u64,
    pub segments_compacted: u64,
    /// The node restarted after its mark, so it did not sweep this time.
    pub skipped: bool,
    pub error: Option<RunError>,
}

/// The last repair pass of the node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RepairRun {
    pub at_ms: i64,
    pub duration_ms: u64,
    /// The placement epoch the pass worked under.
    pub epoch: u64,
    pub checked: u64,
    /// Copies written on owners that lacked them.
    pub pushed: u64,
    /// Local copies dropped because their owners hold them.
    pub dropped: u64,
    /// Copies still to make.
    pub backlog: u64,
    pub error: Option<RunError>,
}

/// The newest run of each kind, as one node remembers them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LastRuns {
    pub scrub: Option<ScrubRun>,
    pub gc: Option<GcRun>,
    pub sweep: Option<SweepRun>,
    pub repair: Option<RepairRun>,
}

fn outcome(error: &Option<RunError>, counts: String) -> String {
    match error {
        Some(e) => format!("failed [{}]: {}", e.code.as_str(), e.message),
        None => counts,
    }
}

impl ScrubRun {
    /// One line for people: the counters, or why it failed.
    pub fn describe(&self) -> String {
        outcome(
            &self.error,
            format!(
                "{} checked, {} corrupt, {} repaired, {} unrepaired, {} unreadable",
                self.checked, self.corrupt, self.repaired, self.unrepaired, self.unreadable
            ),
        )
    }
}

impl GcRun {
    /// One line for people: the counters, or why it failed (or was refused).
    pub fn describe(&self) -> String {
        let mut counts = format!(
            "{} backups marked, {} chunks referenced, {} chunks removed, {} bytes reclaimed",
            self.backups, self.referenced, self.removed, self.bytes_reclaimed
        );
        if !self.nodes_skipped.is_empty() {
            let skipped: Vec<String> = self.nodes_skipped.iter().map(u64::to_string).collect();
            counts.push_str(&format!("; node(s) {} not swept", skipped.join(", ")));
        }
        outcome(&self.error, counts)
    }
}

impl SweepRun {
    /// One line for people.
    pub fn describe(&self) -> String {
        let counts = if self.skipped {
            "skipped (the node restarted after its mark)".to_string()
        } else {
            format!(
                "{} chunks removed, {} bytes reclaimed, {} segments compacted",
                self.removed, self.bytes_reclaimed, self.segments_compacted
            )
        };
        outcome(&self.error, counts)
    }
}

impl RepairRun {
    /// One line for people.
    pub fn describe(&self) -> String {
        outcome(
            &self.error,
            format!(
                "epoch {}: {} checked, {} pushed, {} dropped, backlog {}",
                self.epoch, self.checked, self.pushed, self.dropped, self.backlog
            ),
        )
    }
}

/// One run as a line for people (see [`LastRuns::lines`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunLine {
    /// `scrub`, `gc`, `sweep` or `repair`.
    pub kind: &'static str,
    /// When it ended.
    pub at_ms: i64,
    pub text: String,
    /// It failed, or left something for an operator to look at (unrepaired or unreadable
    /// copies, nodes not swept, a repair backlog).
    pub attention: bool,
}

impl LastRuns {
    /// Each run the node remembers, as a line for people.
    pub fn lines(&self) -> Vec<RunLine> {
        let mut out = Vec::new();
        if let Some(r) = &self.scrub {
            out.push(RunLine {
                kind: "scrub",
                at_ms: r.at_ms,
                text: r.describe(),
                attention: r.error.is_some() || r.unrepaired + r.unreadable > 0,
            });
        }
        if let Some(r) = &self.gc {
            out.push(RunLine {
                kind: "gc",
                at_ms: r.at_ms,
                text: r.describe(),
                attention: r.error.is_some() || !r.nodes_skipped.is_empty(),
            });
        }
        if let Some(r) = &self.sweep {
            out.push(RunLine {
                kind: "sweep",
                at_ms: r.at_ms,
                text: r.describe(),
                attention: r.error.is_some() || r.skipped,
            });
        }
        if let Some(r) = &self.repair {
            out.push(RunLine {
                kind: "repair",
                at_ms: r.at_ms,
                text: r.describe(),
                attention: r.error.is_some() || r.backlog > 0,
            });
        }
        out
    }
}

mod code_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::ErrorCode;

    pub fn serialize<S: Serializer>(c: &ErrorCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.as_str())
    }

    /// A code this build does not know (a newer node's) reads as internal.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ErrorCode::parse(&s).unwrap_or(ErrorCode::Internal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_with_defaults_and_unknown_codes() {
        let gc = GcRun {
            at_ms: 5,
            nodes_skipped: vec![2],
            error: Some(RunError {
                code: ErrorCode::Conflict,
                message: "backups still running".into(),
            }),
            ..Default::default()
        };
        let json = serde_json::to_value(&gc).unwrap();
        assert_eq!(json["error"]["code"], ErrorCode::Conflict.as_str());
        assert_eq!(serde_json::from_value::<GcRun>(json).unwrap(), gc);
        // Fields a newer build added are ignored; missing ones take their defaults.
        let r: LastRuns =
            serde_json::from_str(r#"{"scrub": {"at_ms": 7, "later": true}}"#).unwrap();
        assert_eq!(r.scrub.unwrap().at_ms, 7);
        let r: LastRuns =
            serde_json::from_str(r#"{"gc": {"error": {"code": "E9999", "message": "x"}}}"#)
                .unwrap();
        assert_eq!(r.gc.unwrap().error.unwrap().code, ErrorCode::Internal);
    }

    #[test]
    fn lines_say_the_counts_or_the_code() {
        let runs = LastRuns {
            scrub: Some(ScrubRun {
                at_ms: 3,
                checked: 10,
                corrupt: 1,
                repaired: 1,
                ..Default::default()
            }),
            gc: Some(GcRun {
                at_ms: 4,
                error: Some(RunError {
                    code: ErrorCode::Conflict,
                    message: "2 backups still running".into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let lines = runs.lines();
        assert_eq!(
            lines,
            vec![
                RunLine {
                    kind: "scrub",
                    at_ms: 3,
                    text: "10 checked, 1 corrupt, 1 repaired, 0 unrepaired, 0 unreadable".into(),
                    attention: false,
                },
                RunLine {
                    kind: "gc",
                    at_ms: 4,
                    text: format!(
                        "failed [{}]: 2 backups still running",
                        ErrorCode::Conflict.as_str()
                    ),
                    attention: true,
                },
            ]
        );
    }
}
