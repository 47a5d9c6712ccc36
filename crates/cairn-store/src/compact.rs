//! Compaction: rewrite segments that are mostly dead and delete them.
//!
//! For each chosen segment: scan it, and for every record the index still points at, verify
//! it (CRC and BLAKE3) and queue it; commit the queued records in rounds through the normal
//! append path (append to the active segment, sync, then re-point the index entry only if
//! it still points at the old place, all under the writer lock). When no live record is
//! left, mark the segment retired in the index, flush the index, delete the file, sync the
//! directory, and forget the segment. Recovery finishes a deletion interrupted after the
//! flush; before it the old file is still referenced and intact.

use std::fs;

use cairn_chunker::{check, EncodedChunk};
use tracing::{info, warn};

use crate::appender::AppendRequest;
use crate::error::StoreError;
use crate::format::{FILE_HEADER_LEN, RECORD_HEADER_LEN};
use crate::index::IndexUpdate;
use crate::pack::{sync_dir, Scanned, Scanner};
use crate::store::{lock, worth_compacting, ChunkStore, CompactReport};

/// Bytes of live records copied per commit while compacting.
const ROUND_BYTES: usize = 32 * 1024 * 1024;

impl ChunkStore {
    /// Rewrites every segment whose dead share (removed or duplicate bytes over data bytes)
    /// is at least `min_dead_ratio`: live chunks are copied to the active segment (durably)
    /// before the index points at the copies, and only then is the old file deleted.
    ///
    /// Reads and puts continue meanwhile; compactions run one at a time. A live chunk that
    /// fails verification is left where it is (listed in the report) with its segment.
    pub fn compact(&self, min_dead_ratio: f64) -> Result<CompactReport, StoreError> {
        let _one_at_a_time = lock(&self.compacting);
        let mut report = CompactReport::default();
        let candidates: Vec<u32> = {
            let mut w = self.lock_writer()?;
            let chosen: Vec<u32> = w
                .metas
                .iter()
                .filter(|(_, m)| worth_compacting(m, min_dead_ratio))
                .map(|(id, _)| *id)
                .collect();
            // Seal the active segment if it is chosen: its live records go to a new one.
            if w.active.as_ref().is_some_and(|a| chosen.contains(&a.id)) {
                w.active = None;
                w.active_len = 0;
            }
            chosen
        };
        for id in candidates {
            self.compact_segment(id, &mut report)?;
        }
        report.bytes_reclaimed = report.bytes_freed.saturating_sub(report.bytes_copied);
        info!(
            segments = report.segments_compacted,
            moved = report.chunks_moved,
            reclaimed = report.bytes_reclaimed,
            "chunk store compacted"
        );
        Ok(report)
    }

    fn compact_segment(&self, id: u32, report: &mut CompactReport) -> Result<(), StoreError> {
        let Some(seg) = self.segment(id) else {
            return Ok(());
        };
        let watermark = match self.lock_writer()?.metas.get(&id) {
            Some(m) => m.watermark,
            None => return Ok(()),
        };
        // A file cut below its watermark (damage, see recovery) is scanned as far as it goes.
        let size = seg
            .file
            .metadata()
            .map_err(|e| StoreError::io("inspecting", &seg.path, e))?
            .len();
        let end = watermark.min(size);
        let mut scan = Scanner::new(&seg.file, FILE_HEADER_LEN, end);
        let mut round = AppendRequest::for_compaction();
        loop {
            let (offset, header) = match scan
                .next()
                .map_err(|e| StoreError::io("reading", &seg.path, e))?
            {
                Scanned::End | Scanned::Torn { .. } => break,
                Scanned::Gap { .. } => continue,
                Scanned::Record { offset, header } => (offset, header),
            };
            let loc = header.loc(id, offset);
            if self.index()?.get(&header.id)? != Some(loc) {
                continue;
            }
            let bytes = scan
                .record_bytes(offset, &header)
                .map_err(|e| StoreError::io("reading", &seg.path, e))?;
            let payload = &bytes[RECORD_HEADER_LEN..];
            let chunk = EncodedChunk {
                id: header.id,
                raw_len: header.raw_len,
                codec: header.codec,
                data: bytes::Bytes::copy_from_slice(payload),
            };
            if let Err(e) = check(&chunk) {
                warn!(chunk = %header.id, error = %e, "corrupt chunk left in place by compaction");
                report.corrupt.push(header.id);
                continue;
            }
            round.push(header, &chunk.data, Some(loc));
            if round.len_bytes() >= ROUND_BYTES {
                let full = std::mem::replace(&mut round, AppendRequest::for_compaction());
                self.commit_moves(full, report)?;
            }
        }
        if !round.is_empty() {
            self.commit_moves(round, report)?;
        }

        let mut w = self.lock_writer()?;
        let Some(mut meta) = w.metas.get(&id).copied() else {
            return Ok(());
        };
        if meta.live_records != 0 {
            warn!(
                segment = format_args!("{id:08x}"),
                live = meta.live_records,
                "pack segment still holds chunks that could not be moved; kept"
            );
            report.segments_kept += 1;
            return Ok(());
        }
        if w.active.as_ref().is_some_and(|a| a.id == id) {
            w.active = None;
            w.active_len = 0;
        }
        // The index must durably stop pointing here before the file goes.
        meta.retired = true;
        self.index()?.apply(&IndexUpdate {
            segments: vec![(id, Some(meta))],
            ..IndexUpdate::default()
        })?;
        w.metas.insert(id, meta);
        self.index()?.flush()?;
        self.segments
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        fs::remove_file(&seg.path).map_err(|e| StoreError::io("deleting", &seg.path, e))?;
        sync_dir(&self.packs).map_err(|e| StoreError::io("syncing", &self.packs, e))?;
        self.index()?.apply(&IndexUpdate {
            segments: vec![(id, None)],
            ..IndexUpdate::default()
        })?;
        w.metas.remove(&id);
        report.segments_compacted += 1;
        report.bytes_freed += size;
        info!(path = %seg.path.display(), bytes = size, "deleted compacted pack file");
        Ok(())
    }

    fn commit_moves(
        &self,
        round: AppendRequest,
        report: &mut CompactReport,
    ) -> Result<(), StoreError> {
        let mut w = self.lock_writer()?;
        let outs = self.commit_locked(&mut w, std::slice::from_ref(&round))?;
        for o in outs {
            report.chunks_moved += o.stored;
            report.bytes_copied += o.bytes_written + o.new_file_bytes;
        }
        Ok(())
    }
}
