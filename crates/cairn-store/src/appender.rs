//! The appender's state, shared by the store's two halves: `store.rs` (open, read, heal)
//! creates and resumes it, `write.rs` (the append path and its group commit) runs it. It
//! holds no logic beyond building that state, so neither half depends on the other's code:
//! the fsync order and the rollback rules are stated in `write.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::error::StoreError;
use crate::format::{Loc, RecordHeader, SegMeta};
use crate::pack::Segment;
use crate::recovery::Recovered;

/// `ChunkStore::space_reserve` value that means "derive it from the file system size".
pub(crate) const AUTO_RESERVE: u64 = u64::MAX;

/// Returns the free space to keep on a file system of `total` bytes: 1/64 of it, at least
/// 1 MiB (sled needs a free 512 KiB segment and a snapshot to open) and at most 256 MiB.
pub(crate) fn auto_reserve(total: u64) -> u64 {
    (total / 64).clamp(1024 * 1024, 256 * 1024 * 1024)
}

/// The appender's state, behind `ChunkStore::writer`.
pub(crate) struct Writer {
    /// The segment appends go to; `None` until the next append creates one.
    pub active: Option<Arc<Segment>>,
    /// Length of the active segment: where the next record goes.
    pub active_len: u64,
    pub next_id: u32,
    /// Committed per-segment counters, identical to the index's `segments` tree. Every change
    /// to them happens under the writer lock.
    pub metas: BTreeMap<u32, SegMeta>,
    /// Set when a failed write could not be undone; refuses further writes.
    pub broken: Option<String>,
}

impl Writer {
    /// The appender's state after recovery: appends continue in the newest segment if it is
    /// whole and has room, and new segments get ids above every id recovery saw and above
    /// `min_next_id` (ids are never reused while their file or index entry may exist).
    pub(crate) fn resume(rec: &Recovered, segment_max_bytes: u64, min_next_id: u32) -> Writer {
        let next_id = rec
            .segments
            .keys()
            .chain(rec.metas.keys())
            .max()
            .map_or(1, |m| m.saturating_add(1))
            .max(min_next_id);
        let active = rec.segments.iter().next_back().and_then(|(id, seg)| {
            let len = rec.lens.get(id).copied()?;
            let whole = rec.metas.get(id).is_some_and(|m| m.watermark == len);
            (whole && len < segment_max_bytes).then(|| (seg.clone(), len))
        });
        Writer {
            active_len: active.as_ref().map_or(0, |(_, len)| *len),
            active: active.map(|(seg, _)| seg),
            next_id,
            metas: rec.metas.clone(),
            broken: None,
        }
    }
}

/// Serialised records waiting to be appended.
#[derive(Default)]
pub(crate) struct AppendRequest {
    pub(crate) buf: Vec<u8>,
    pub(crate) records: Vec<PendingRecord>,
    /// Moves of a compaction, which frees space in the end and may use half the reserve.
    pub compaction: bool,
}

pub(crate) struct PendingRecord {
    pub(crate) start: usize,
    pub(crate) header: RecordHeader,
    /// For a compaction move or a replacement: where the chunk is now. The new record takes
    /// its place only if the index still points there.
    pub(crate) origin: Option<Loc>,
}

impl AppendRequest {
    /// An empty request for the moves of a compaction.
    pub fn for_compaction() -> AppendRequest {
        AppendRequest {
            compaction: true,
            ..AppendRequest::default()
        }
    }

    pub fn push(&mut self, header: RecordHeader, payload: &[u8], origin: Option<Loc>) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&header.encode());
        self.buf.extend_from_slice(payload);
        self.records.push(PendingRecord {
            start,
            header,
            origin,
        });
    }

    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub(crate) fn bytes(&self, r: &PendingRecord) -> &[u8] {
        &self.buf[r.start..r.start + r.header.record_len() as usize]
    }
}

/// What happened to one request.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AppendOutcome {
    pub stored: u64,
    /// Already stored (put), or no longer where compaction found it (move).
    pub skipped: u64,
    pub bytes_written: u64,
    /// Header bytes of segment files created for this request's records.
    pub new_file_bytes: u64,
}

/// A queued request and, once committed, its result.
pub(crate) struct Ticket {
    pub(crate) request: Mutex<Option<AppendRequest>>,
    pub(crate) result: Mutex<Option<Result<AppendOutcome, StoreError>>>,
}
