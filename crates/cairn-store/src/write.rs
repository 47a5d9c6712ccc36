//! The append path: verification, group commit, segment roll, rollback on failure.
//!
//! A caller verifies and serialises its batch on its own thread, queues it, then takes the
//! writer lock. Whoever holds the lock drains the whole queue and commits every queued batch
//! with one `fdatasync` per touched segment and one index transaction; a caller that finds
//! its batch already committed by another returns at once. Under load, concurrent uploads
//! thus share their syncs (group commit) with nothing but a mutex and a queue.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use cairn_chunker::{check, EncodedChunk};
use cairn_core::ChunkId;
use nix::sys::statvfs::statvfs;
use tracing::{error, warn};

use crate::appender::{
    auto_reserve, AppendOutcome, AppendRequest, PendingRecord, Ticket, Writer, AUTO_RESERVE,
};
use crate::error::StoreError;
use crate::format::{Loc, RecordHeader, SegMeta, FILE_HEADER_LEN, MAX_STORED_LEN};
use crate::index::IndexUpdate;
use crate::pack::{pack_path, sync_dir, Segment};
use crate::store::{lock, meta_mut, ChunkStore, PutStats};

/// A segment written to during one commit, for sync and rollback.
struct Touched {
    seg: Arc<Segment>,
    start: u64,
    end: u64,
    created: bool,
}

type SegMetas = BTreeMap<u32, SegMeta>;

/// The undo information of one commit.
struct Txn {
    saved_active: Option<Arc<Segment>>,
    saved_len: u64,
    touched: Vec<Touched>,
}

impl ChunkStore {
    /// Stores a batch of chunks durably.
    ///
    /// Every chunk is verified first (decompressed and re-hashed against its id); one bad
    /// chunk fails the whole batch with [`StoreError::Corrupt`] naming it, and nothing is
    /// written. Chunks already stored are skipped. The rest are appended to the active
    /// segment, the segment is `fdatasync`ed (and the directory, when a segment file was
    /// created), then the chunks are indexed. It returns once the data is durable.
    ///
    /// On a write failure (a full disk, an I/O error) the segment is cut back to where it
    /// was, the index is left untouched, and [`StoreError::DiskFull`] or
    /// [`StoreError::Io`] is returned: the chunks already stored stay intact and readable.
    ///
    /// Concurrent calls are serialised internally and share their syncs (group commit).
    pub fn put_batch(&self, chunks: &[EncodedChunk]) -> Result<PutStats, StoreError> {
        for c in chunks {
            if c.data.len() > MAX_STORED_LEN as usize {
                return Err(StoreError::TooLarge {
                    id: c.id,
                    len: c.data.len() as u64,
                    max: u64::from(MAX_STORED_LEN),
                });
            }
            check(c)?;
        }
        let mut stats = PutStats::default();
        let mut req = AppendRequest::default();
        let mut seen: HashSet<ChunkId> = HashSet::with_capacity(chunks.len());
        for c in chunks {
            // A cheap pre-check that saves copying chunks we already have; the commit checks
            // again under the lock.
            if !seen.insert(c.id) || self.index()?.contains(&c.id)? {
                stats.duplicate += 1;
                continue;
            }
            req.push(
                RecordHeader::new(c.id, c.codec, c.raw_len, &c.data),
                &c.data,
                None,
            );
        }
        if req.is_empty() {
            return Ok(stats);
        }
        let out = self.submit(req)?;
        stats.stored = out.stored;
        stats.duplicate += out.skipped;
        stats.bytes_written = out.bytes_written;
        Ok(stats)
    }

    /// Stores `chunk` in place of the copy the store holds now — a copy a scrub found
    /// corrupt — or as a new chunk when there is none. The chunk is verified first, as by
    /// [`ChunkStore::put_batch`]; then a new record is appended and synced, and the index
    /// entry is re-pointed to it in one index transaction, only if it still points at the
    /// copy seen at the start (the old record becomes dead space). Until then every read gets
    /// the old copy (and its error), never nothing. Returns false when the entry changed
    /// meanwhile (removed by a sweep, or replaced by another caller) and nothing was done.
    pub fn replace(&self, chunk: &EncodedChunk) -> Result<bool, StoreError> {
        if chunk.data.len() > MAX_STORED_LEN as usize {
            return Err(StoreError::TooLarge {
                id: chunk.id,
                len: chunk.data.len() as u64,
                max: u64::from(MAX_STORED_LEN),
            });
        }
        check(chunk)?;
        let origin = self.index()?.get(&chunk.id)?;
        let mut req = AppendRequest::default();
        req.push(
            RecordHeader::new(chunk.id, chunk.codec, chunk.raw_len, &chunk.data),
            &chunk.data,
            origin,
        );
        Ok(self.submit(req)?.stored == 1)
    }

    /// Queues `req` for the next group commit and waits for its result.
    fn submit(&self, req: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let ticket = Arc::new(Ticket {
            request: Mutex::new(Some(req)),
            result: Mutex::new(None),
        });
        lock(&self.queue).push(ticket.clone());
        let mut w = self.lock_writer()?;
        // Whoever drains the queue sets every drained ticket's result before releasing the
        // writer lock, so once we hold it our ticket is either done or still queued.
        if let Some(r) = lock(&ticket.result).take() {
            return r;
        }
        let group = std::mem::take(&mut *lock(&self.queue));
        let reqs: Vec<AppendRequest> = group
            .iter()
            .map(|t| lock(&t.request).take().unwrap_or_default())
            .collect();
        match self.commit_locked(&mut w, &reqs) {
            Ok(outs) => {
                for (t, out) in group.iter().zip(outs) {
                    *lock(&t.result) = Some(Ok(out));
                }
            }
            Err(e) => {
                for t in &group {
                    *lock(&t.result) = Some(Err(e.replicate()));
                }
            }
        }
        drop(w);
        let result = lock(&ticket.result).take();
        result.unwrap_or_else(|| Err(StoreError::Index("group commit lost a batch".into())))
    }

    /// Appends, syncs and indexes `reqs` as one unit; on failure undoes the appends.
    pub(crate) fn commit_locked(
        &self,
        w: &mut Writer,
        reqs: &[AppendRequest],
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        if let Some(why) = &w.broken {
            return Err(StoreError::WritesDisabled(why.clone()));
        }
        let mut txn = Txn {
            saved_active: w.active.clone(),
            saved_len: w.active_len,
            touched: Vec::new(),
        };
        match self.append_and_index(w, &mut txn, reqs) {
            Ok((outs, metas)) => {
                w.metas.extend(metas);
                Ok(outs)
            }
            Err(e) => {
                self.rollback(w, txn);
                Err(e)
            }
        }
    }

    /// Returns each request's outcome and the new counters of the segments it changed.
    fn append_and_index(
        &self,
        w: &mut Writer,
        txn: &mut Txn,
        reqs: &[AppendRequest],
    ) -> Result<(Vec<AppendOutcome>, SegMetas), StoreError> {
        // Decide first what to write, so that the space check counts only that.
        let mut outs = vec![AppendOutcome::default(); reqs.len()];
        let mut seen = HashSet::new();
        let mut todo: Vec<(usize, &PendingRecord)> = Vec::new();
        for (i, req) in reqs.iter().enumerate() {
            for r in &req.records {
                let now = self.index()?.get(&r.header.id)?;
                let wanted = match r.origin {
                    None => now.is_none(),
                    Some(origin) => now == Some(origin),
                };
                if wanted && seen.insert(r.header.id) {
                    todo.push((i, r));
                } else {
                    outs[i].skipped += 1;
                }
            }
        }
        let needed: u64 = todo.iter().map(|(_, r)| r.header.record_len()).sum();
        let moving = todo.iter().any(|(i, _)| reqs[*i].compaction);
        if needed > 0 {
            self.check_space(needed, moving)?;
        }

        let mut placed: Vec<(Loc, RecordHeader, Option<Loc>)> = Vec::with_capacity(todo.len());
        for (i, r) in todo {
            let (segment, offset, created) = self.append(w, txn, reqs[i].bytes(r), needed)?;
            placed.push((r.header.loc(segment, offset), r.header, r.origin));
            let out = &mut outs[i];
            out.stored += 1;
            out.bytes_written += r.header.record_len();
            if created {
                out.new_file_bytes += FILE_HEADER_LEN;
            }
        }
        if placed.is_empty() {
            return Ok((outs, BTreeMap::new()));
        }
        self.sync(txn)?;

        let mut metas = BTreeMap::new();
        for t in &txn.touched {
            meta_mut(&mut metas, &w.metas, t.seg.id).watermark = t.end;
        }
        let mut update = IndexUpdate::default();
        for (loc, header, origin) in &placed {
            meta_mut(&mut metas, &w.metas, loc.segment).add(loc);
            if let Some(o) = origin {
                meta_mut(&mut metas, &w.metas, o.segment).sub(o);
            }
            update.put.push((header.id, *loc));
        }
        update.segments = metas.iter().map(|(id, m)| (*id, Some(*m))).collect();
        self.index()?.apply(&update)?;
        Ok((outs, metas))
    }

    /// Refuses a write that would eat into the free space kept for the index (see the crate
    /// documentation). Compaction, which frees space in the end, may use half of it.
    fn check_space(&self, needed: u64, compaction: bool) -> Result<(), StoreError> {
        let configured = self.space_reserve.load(Ordering::Relaxed);
        if configured == 0 {
            return Ok(());
        }
        let st = match statvfs(&self.packs) {
            Ok(st) => st,
            Err(e) => {
                warn!(path = %self.packs.display(), error = %e, "cannot read free space; writing anyway");
                return Ok(());
            }
        };
        let unit = st.fragment_size() as u64;
        let avail = (st.blocks_available() as u64).saturating_mul(unit);
        let mut reserve = if configured == AUTO_RESERVE {
            auto_reserve((st.blocks() as u64).saturating_mul(unit))
        } else {
            configured
        };
        if compaction {
            reserve /= 2;
        }
        if avail < needed.saturating_add(reserve) {
            warn!(
                path = %self.packs.display(),
                available = avail,
                needed,
                reserve,
                "refusing a write that would leave too little space for the index"
            );
            return Err(StoreError::DiskFull {
                path: self.packs.clone(),
                needed,
            });
        }
        Ok(())
    }

    /// Appends one record to the active segment, rolling to a new one when it is full.
    /// Returns the record's segment and offset, and whether the segment was created for it.
    fn append(
        &self,
        w: &mut Writer,
        txn: &mut Txn,
        bytes: &[u8],
        needed: u64,
    ) -> Result<(u32, u64, bool), StoreError> {
        let len = bytes.len() as u64;
        let full = w.active_len > FILE_HEADER_LEN
            && w.active_len.saturating_add(len) > self.cfg.segment_max_bytes;
        let (seg, created) = match &w.active {
            Some(seg) if !full => (seg.clone(), false),
            _ => (self.roll(w, txn, needed)?, true),
        };
        let offset = w.active_len;
        let pos = match txn.touched.iter().position(|t| t.seg.id == seg.id) {
            Some(pos) => pos,
            None => {
                txn.touched.push(Touched {
                    seg: seg.clone(),
                    start: offset,
                    end: offset,
                    created: false,
                });
                txn.touched.len() - 1
            }
        };
        seg.file
            .write_all_at(bytes, offset)
            .map_err(|e| StoreError::write(&seg.path, needed, e))?;
        w.active_len = offset + len;
        txn.touched[pos].end = w.active_len;
        Ok((seg.id, offset, created))
    }

    /// Starts a new segment and makes it the active one.
    fn roll(&self, w: &mut Writer, txn: &mut Txn, needed: u64) -> Result<Arc<Segment>, StoreError> {
        let id = w.next_id;
        w.next_id = id.checked_add(1).ok_or_else(|| {
            StoreError::Format("segment ids are exhausted; compact the store".into())
        })?;
        let seg = Segment::create(&self.packs, id)
            .map_err(|e| StoreError::write(&pack_path(&self.packs, id), needed, e))?;
        let seg = Arc::new(seg);
        self.segments
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, seg.clone());
        txn.touched.push(Touched {
            seg: seg.clone(),
            start: 0,
            end: FILE_HEADER_LEN,
            created: true,
        });
        w.active = Some(seg.clone());
        w.active_len = FILE_HEADER_LEN;
        Ok(seg)
    }

    /// Makes a commit's appends durable: each touched segment, then the directory if a
    /// segment file was created.
    fn sync(&self, txn: &Txn) -> Result<(), StoreError> {
        for t in &txn.touched {
            t.seg
                .file
                .sync_data()
                .map_err(|e| StoreError::write(&t.seg.path, t.end - t.start, e))?;
        }
        if txn.touched.iter().any(|t| t.created) {
            sync_dir(&self.packs).map_err(|e| StoreError::io("syncing", &self.packs, e))?;
        }
        Ok(())
    }

    /// Undoes a failed commit's appends: new segment files are deleted, others cut back.
    fn rollback(&self, w: &mut Writer, txn: Txn) {
        for t in txn.touched.iter().rev() {
            if t.created {
                self.segments
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&t.seg.id);
                match fs::remove_file(&t.seg.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    // Harmless: recovery indexes or removes whatever is left in it.
                    Err(e) => {
                        warn!(path = %t.seg.path.display(), error = %e, "cannot remove pack file after a failed write")
                    }
                }
            } else if let Err(e) = t.seg.file.set_len(t.start) {
                error!(
                    path = %t.seg.path.display(),
                    error = %e,
                    "cannot cut pack file back after a failed write; refusing further writes"
                );
                w.broken = Some(format!(
                    "cutting {} back after a failed write: {e}",
                    t.seg.path.display()
                ));
            }
        }
        w.active = txn.saved_active;
        w.active_len = txn.saved_len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_space_reserve_scales_with_the_file_system_within_bounds() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(auto_reserve(2 * MIB), MIB);
        assert_eq!(auto_reserve(640 * MIB), 10 * MIB);
        assert_eq!(auto_reserve(10 * 1024 * 1024 * MIB), 256 * MIB);
    }
}
