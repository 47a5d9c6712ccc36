//! A node's touches: which chunks it stored or reported present since it started, numbered
//! in order, and the marks garbage collection compares them with (see the design note in
//! `gc.rs`). Kept apart from GC because the chunk services record touches and GC only reads
//! them: `peers` depends on this module, `gc` on both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use cairn_core::ChunkId;

/// A mark whose sweep never came (its coordinator died) stops holding touches after this.
const MARK_TTL: Duration = Duration::from_secs(6 * 3600);

/// A node's touch mark: touches after it have a greater `seq` (same `boot`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub boot: String,
    pub seq: u64,
}

/// The chunks a node stored or reported present since it started, by touch sequence number.
pub struct Touches {
    pub(crate) boot: String,
    seq: AtomicU64,
    pub(crate) at: Mutex<HashMap<ChunkId, u64>>,
    /// Shared by check-and-touch (and store-and-touch), exclusive for a sweep's removal.
    pub(crate) gate: RwLock<()>,
    /// Marks handed out whose sweep has not come yet (their touches must be kept).
    open_marks: Mutex<Vec<(u64, Instant)>>,
}

impl Default for Touches {
    fn default() -> Self {
        Touches {
            boot: uuid::Uuid::new_v4().to_string(),
            seq: AtomicU64::new(0),
            at: Mutex::default(),
            gate: RwLock::default(),
            open_marks: Mutex::default(),
        }
    }
}

impl Touches {
    /// Begins a collection here: the mark its sweep will compare touches with.
    pub fn mark(&self) -> Mark {
        let seq = self.seq.load(Ordering::SeqCst);
        let mut open = self.open_marks.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|(_, at)| at.elapsed() < MARK_TTL);
        open.push((seq, Instant::now()));
        Mark {
            boot: self.boot.clone(),
            seq,
        }
    }

    /// Held while a chunk is found present or stored and then touched: a sweep cannot remove
    /// a copy between the two.
    pub fn gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `ids` were written or reported present now (call under [`Self::gate`]).
    pub fn touch(&self, ids: impl IntoIterator<Item = ChunkId>) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            at.insert(id, seq);
        }
    }

    pub(crate) fn touched_after(&self, id: &ChunkId, mark: u64) -> bool {
        self.at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|seq| *seq > mark)
    }

    /// The sweep of `mark` is done: touches no open mark needs any more are forgotten (a
    /// later mark is at least the sequence number now, so older touches cannot count for it).
    pub(crate) fn release(&self, mark: u64) {
        let floor = {
            let mut open = self.open_marks.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = open.iter().position(|(m, _)| *m == mark) {
                open.remove(i);
            }
            open.retain(|(_, at)| at.elapsed() < MARK_TTL);
            open.iter()
                .map(|(m, _)| *m)
                .min()
                .unwrap_or_else(|| self.seq.load(Ordering::SeqCst))
        };
        self.at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, seq| *seq > floor);
    }
}
