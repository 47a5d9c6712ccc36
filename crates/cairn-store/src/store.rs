//! [`ChunkStore`]: opening, reading, removing, statistics. Appends live in `write.rs`,
//! recovery in `recovery.rs`, compaction in `compact.rs`.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use cairn_chunker::{check, decode, EncodedChunk};
use cairn_core::ChunkId;
use tracing::{error, info, warn};

use crate::appender::{Ticket, Writer, AUTO_RESERVE};
use crate::error::StoreError;
use crate::format::{Loc, SegMeta, FILE_HEADER_LEN};
use crate::index::{Index, IndexUpdate};
use crate::pack::{sync_dir, Segment};
use crate::recovery;

/// Where a store lives and how it cuts its pack files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// The store's directory; it holds `packs/` and `index/`.
    pub dir: PathBuf,
    /// A segment that would grow past this size is closed and a new one started (a single
    /// record larger than this gets a segment of its own).
    pub segment_max_bytes: u64,
}

impl StoreConfig {
    /// The default segment size: large enough that a node holds few files, small enough that
    /// compacting one is quick.
    pub const DEFAULT_SEGMENT_MAX_BYTES: u64 = 128 * 1024 * 1024;
    /// The smallest accepted segment size.
    pub const MIN_SEGMENT_MAX_BYTES: u64 = 4096;

    /// Returns the default configuration for a store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            dir: dir.into(),
            segment_max_bytes: StoreConfig::DEFAULT_SEGMENT_MAX_BYTES,
        }
    }

    /// Checks the configuration, naming the field and the fix.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.dir.as_os_str().is_empty() {
            return Err(StoreError::Config(
                "dir is empty: set it to the directory that holds the chunk store".into(),
            ));
        }
        if self.segment_max_bytes < StoreConfig::MIN_SEGMENT_MAX_BYTES {
            return Err(StoreError::Config(format!(
                "segment_max_bytes is {}: use at least {} (default {})",
                self.segment_max_bytes,
                StoreConfig::MIN_SEGMENT_MAX_BYTES,
                StoreConfig::DEFAULT_SEGMENT_MAX_BYTES
            )));
        }
        Ok(())
    }
}

pub use crate::recovery::RecoveryReport;

impl RecoveryReport {
    /// Returns true when recovery found no damage. Re-indexing chunks past a watermark and
    /// finishing a compaction are routine after a crash and do not count.
    pub fn is_clean(&self) -> bool {
        self.truncated_bytes == 0
            && self.torn_segments == 0
            && !self.index_rebuilt
            && self.skipped_bytes == 0
            && self.short_segments == 0
            && self.lost_segments == 0
    }
}

/// The outcome of [`ChunkStore::put_batch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutStats {
    /// Chunks written.
    pub stored: u64,
    /// Chunks skipped because the store already held them (or the batch repeated them).
    pub duplicate: u64,
    /// Bytes appended to pack files, record headers included.
    pub bytes_written: u64,
}

/// A snapshot of the store's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Chunks stored.
    pub chunks: u64,
    /// Bytes of their records in pack files (compressed payloads plus headers).
    pub stored_bytes: u64,
    /// Their uncompressed content size.
    pub logical_bytes: u64,
    /// Pack files.
    pub segments: u32,
    /// Bytes in pack files that no chunk uses any more (removed, duplicate or damaged
    /// records), reclaimable by [`ChunkStore::compact`].
    pub dead_bytes: u64,
}

/// The outcome of [`ChunkStore::verify_all`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Chunks read and re-hashed (or that failed to read).
    pub checked: u64,
    /// Chunks whose bytes were read and are wrong: bad framing, a checksum or BLAKE3
    /// mismatch, a record past the end of its file. Such a copy stays wrong; replace it
    /// with [`ChunkStore::replace`].
    pub corrupt: Vec<ChunkId>,
    /// Chunks whose read failed with an I/O error (EIO from a failing disk, say). The bytes
    /// may well be fine: the entry is kept and the next scrub tries again.
    pub unreadable: Vec<ChunkId>,
}

/// The outcome of [`ChunkStore::compact`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Pack files rewritten and deleted.
    pub segments_compacted: u32,
    /// Pack files left in place because some live chunk in them could not be moved (it
    /// failed verification; see `corrupt`, and run [`ChunkStore::verify_all`]).
    pub segments_kept: u32,
    /// Live chunks copied to the active segment.
    pub chunks_moved: u64,
    /// Bytes those copies took (with the headers of the pack files created for them).
    pub bytes_copied: u64,
    /// Size of the deleted pack files.
    pub bytes_freed: u64,
    /// Net space given back: `bytes_freed - bytes_copied`.
    pub bytes_reclaimed: u64,
    /// Live chunks found corrupt while compacting (left where they were).
    pub corrupt: Vec<ChunkId>,
}

/// The node-local chunk store. See the crate documentation for the design.
///
/// All methods take `&self` and may be called from many threads at once. They block on disk
/// IO: call them from a blocking thread (`tokio::task::spawn_blocking`) in async code.
pub struct ChunkStore {
    pub(crate) cfg: StoreConfig,
    pub(crate) packs: PathBuf,
    /// The sled index, replaced by [`ChunkStore::heal`] after sled broke.
    index: RwLock<IndexSlot>,
    /// Every open pack file by segment id. Readers clone an `Arc` out and read without a lock.
    pub(crate) segments: RwLock<BTreeMap<u32, Arc<Segment>>>,
    /// The appender: held while appending, syncing and indexing, and by `remove`.
    pub(crate) writer: Mutex<Writer>,
    /// Batches waiting for the next group commit.
    pub(crate) queue: Mutex<Vec<Arc<Ticket>>>,
    /// One compaction at a time.
    pub(crate) compacting: Mutex<()>,
    /// Free space appends leave on the file system: 0 for none, [`AUTO_RESERVE`] to derive
    /// it from the file system's size.
    pub(crate) space_reserve: AtomicU64,
    recovery: RecoveryReport,
}

/// The current index handle. `None` only after a reopen failed (say, the disk was still
/// full): every call then fails with `why` until [`ChunkStore::heal`] succeeds.
struct IndexSlot {
    current: Option<Arc<Index>>,
    why: String,
}

/// How long `heal` waits for calls still holding the broken handle to let go of it.
const HEAL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How many index entries `verify_all` sorts by location before reading them.
const SCRUB_BATCH: usize = 16 * 1024;

impl ChunkStore {
    /// Opens (creating if needed) the store in `dir` with the default configuration.
    pub fn open(dir: &Path) -> Result<ChunkStore, StoreError> {
        ChunkStore::open_with(StoreConfig::new(dir))
    }

    /// Opens (creating if needed) the store described by `cfg` and runs recovery.
    pub fn open_with(cfg: StoreConfig) -> Result<ChunkStore, StoreError> {
        cfg.validate()?;
        let packs = cfg.dir.join("packs");
        fs::create_dir_all(&cfg.dir).map_err(|e| StoreError::io("creating", &cfg.dir, e))?;
        if !packs.is_dir() {
            fs::create_dir_all(&packs).map_err(|e| StoreError::io("creating", &packs, e))?;
            sync_dir(&cfg.dir).map_err(|e| StoreError::io("syncing", &cfg.dir, e))?;
        }
        // The index first: sled locks it, so a second process fails before touching packs.
        let index = Index::open(&cfg.dir.join("index"))?;
        let mut report = RecoveryReport::default();
        let rec = recovery::recover(&index, &packs, &mut report)?;
        let writer = Writer::resume(&rec, cfg.segment_max_bytes, 1);
        let chunks: u64 = rec.metas.values().map(|m| m.live_records).sum();
        info!(
            dir = %cfg.dir.display(),
            segments = rec.segments.len(),
            chunks,
            "chunk store opened"
        );
        if !report.is_clean() {
            warn!(dir = %cfg.dir.display(), report = ?report, "chunk store recovered from damage");
        }
        Ok(ChunkStore {
            cfg,
            packs,
            index: RwLock::new(IndexSlot {
                current: Some(Arc::new(index)),
                why: String::new(),
            }),
            segments: RwLock::new(rec.segments),
            writer: Mutex::new(writer),
            queue: Mutex::new(Vec::new()),
            compacting: Mutex::new(()),
            space_reserve: AtomicU64::new(AUTO_RESERVE),
            recovery: report,
        })
    }

    /// Returns the bytes available to the store and the size of the file system that holds
    /// its pack files (`statvfs`), or `None` when they cannot be read.
    pub fn disk_space(&self) -> Option<(u64, u64)> {
        let st = nix::sys::statvfs::statvfs(&self.packs).ok()?;
        let unit = st.fragment_size() as u64;
        Some((
            (st.blocks_available() as u64).saturating_mul(unit),
            (st.blocks() as u64).saturating_mul(unit),
        ))
    }

    /// Returns the store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Sets the free space appends must leave on the file system, so that the index can
    /// always grow and the store can always reopen: `None` derives it from the file system's
    /// size (the default), `Some(0)` turns the check off.
    pub fn set_space_reserve(&self, bytes: Option<u64>) {
        self.space_reserve
            .store(bytes.unwrap_or(AUTO_RESERVE), Ordering::Relaxed);
    }

    /// Returns the index handle to use for one call.
    pub(crate) fn index(&self) -> Result<Arc<Index>, StoreError> {
        let slot = self.index.read().unwrap_or_else(PoisonError::into_inner);
        slot.current.clone().ok_or_else(|| {
            StoreError::Index(format!(
                "the chunk index is closed after a failure and could not be reopened yet: {}",
                slot.why
            ))
        })
    }

    /// Returns true when the index must be reopened before it serves again: sled reported an
    /// I/O error (a full disk, say), after which it answers every call with that error.
    /// [`ChunkStore::heal`] reopens it.
    pub fn index_failed(&self) -> bool {
        let slot = self.index.read().unwrap_or_else(PoisonError::into_inner);
        slot.current.as_ref().is_none_or(|ix| ix.failed())
    }

    /// Reopens a failed index in place, as a restart of the store would: the broken sled
    /// handle is closed, the index opened again from disk, and recovery brings it back into
    /// agreement with the pack files (re-indexing every record past the last durable
    /// watermark). Returns `None` when the index had not failed.
    ///
    /// Safe because the pack files are the truth and recovery is the crash path: pack data
    /// was synced before any index entry pointed at it, so whatever prefix of the index sled
    /// kept, recovery re-indexes what it lost. A removal it lost comes back as an intact
    /// chunk (harmless: GC removes it again); compaction flushes the index before deleting a
    /// file, and a flush that failed left the file in place.
    ///
    /// Writers and compaction wait while it runs; readers wait for the new handle. When the
    /// reopen fails (the disk still full), every call fails with that reason until a later
    /// `heal` succeeds: call it again, e.g. every few seconds (the node does).
    pub fn heal(&self) -> Result<Option<RecoveryReport>, StoreError> {
        if !self.index_failed() {
            return Ok(None);
        }
        let _compacting = lock(&self.compacting);
        let mut w = self.lock_writer()?;
        let mut slot = self.index.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = slot.current.take() {
            if !old.failed() {
                slot.current = Some(old);
                return Ok(None);
            }
            // Calls that cloned the handle before we took the slot finish soon: theirs fail.
            let deadline = std::time::Instant::now() + HEAL_WAIT;
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if Arc::strong_count(&old) > 1 {
                slot.current = Some(old);
                return Err(StoreError::Index(
                    "the failed chunk index is still in use; reopening it later".into(),
                ));
            }
            drop(old);
        }
        let reopened = Index::open(&self.cfg.dir.join("index")).and_then(|index| {
            let mut report = RecoveryReport::default();
            let rec = recovery::recover(&index, &self.packs, &mut report)?;
            Ok((index, rec, report))
        });
        let (index, rec, report) = match reopened {
            Ok(r) => r,
            Err(e) => {
                slot.why = e.to_string();
                warn!(dir = %self.cfg.dir.display(), error = %e, "reopening the chunk index failed; will retry");
                return Err(e);
            }
        };
        *w = Writer::resume(&rec, self.cfg.segment_max_bytes, w.next_id);
        *self
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner) = rec.segments;
        slot.current = Some(Arc::new(index));
        slot.why.clear();
        warn!(dir = %self.cfg.dir.display(), report = ?report, "chunk index reopened after a failure");
        Ok(Some(report))
    }

    /// Returns what recovery found when the store was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Returns true when the chunk is stored.
    pub fn contains(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.index()?.contains(id)
    }

    /// Returns the ids among `ids` that are not stored, in their order.
    pub fn missing(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, StoreError> {
        let index = self.index()?;
        let mut out = Vec::new();
        for id in ids {
            if !index.contains(id)? {
                out.push(*id);
            }
        }
        Ok(out)
    }

    /// Returns the chunk as stored (still compressed, ready to send on) after checking its
    /// framing and re-hashing its content.
    pub fn get(&self, id: &ChunkId) -> Result<EncodedChunk, StoreError> {
        let chunk = self.read_record(id)?;
        check(&chunk)?;
        Ok(chunk)
    }

    /// Returns the chunk as stored after checking its framing and its record's CRC, without
    /// decompressing or re-hashing it: for a reader that verifies the content itself. The
    /// `Chunks.Get` RPC serves this: every client of it decodes and re-hashes what it gets
    /// (`cairn_api::Client::get`, the peers' repair fetch) and fetches a copy that fails from
    /// the next owner, so a second BLAKE3 pass here would only double a restore's CPU. The CRC
    /// still catches what the disk did to the bytes since they were verified and written.
    pub fn get_framed(&self, id: &ChunkId) -> Result<EncodedChunk, StoreError> {
        self.read_record(id)
    }

    /// Returns the chunk's content after checking its framing and re-hashing it.
    pub fn get_content(&self, id: &ChunkId) -> Result<bytes::Bytes, StoreError> {
        let chunk = self.read_record(id)?;
        Ok(decode(&chunk)?)
    }

    /// Reads a chunk's record (framing checked, content not yet verified).
    fn read_record(&self, id: &ChunkId) -> Result<EncodedChunk, StoreError> {
        // Compaction may move the chunk and delete its old segment between the index lookup
        // and the read; the second lookup then finds the new place.
        let mut missing_segment = 0;
        for _ in 0..3 {
            let loc = self.index()?.get(id)?.ok_or(StoreError::NotFound(*id))?;
            match self.segment(loc.segment) {
                Some(seg) => return seg.read_record(id, &loc),
                None => missing_segment = loc.segment,
            }
        }
        Err(StoreError::Corrupt {
            id: *id,
            why: format!(
                "the index points at pack segment {missing_segment:08x}, which does not exist"
            ),
        })
    }

    pub(crate) fn segment(&self, id: u32) -> Option<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// Returns a snapshot of the store's size, from the per-segment counters (cheap: no scan).
    pub fn stats(&self) -> StoreStats {
        let metas = match self.index().and_then(|ix| ix.segments()) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot read the chunk store's segment counters");
                return StoreStats::default();
            }
        };
        let mut s = StoreStats::default();
        for m in metas.values().filter(|m| !m.retired) {
            s.chunks += m.live_records;
            s.stored_bytes += m.live_bytes;
            s.logical_bytes += m.live_raw_bytes;
            s.segments += 1;
            s.dead_bytes += m.dead_bytes();
        }
        s
    }

    /// Calls `f` with every stored chunk id, in id order, until it returns false. Chunks put
    /// or removed meanwhile may or may not be seen.
    pub fn for_each_id(&self, mut f: impl FnMut(ChunkId) -> bool) -> Result<(), StoreError> {
        let index = self.index()?;
        for id in index.ids() {
            if !f(id?) {
                break;
            }
        }
        Ok(())
    }

    /// Reads and re-hashes every stored chunk and reports the ones that fail, telling
    /// corrupt copies (read, and wrong) from unreadable ones (an I/O error). Nothing is
    /// changed. Reads go in pack order, a batch at a time, so the disk mostly streams.
    pub fn verify_all(&self) -> Result<ScrubReport, StoreError> {
        let mut report = ScrubReport::default();
        let mut batch: Vec<(ChunkId, Loc)> = Vec::with_capacity(SCRUB_BATCH);
        let index = self.index()?;
        for entry in index.entries() {
            batch.push(entry?);
            if batch.len() == SCRUB_BATCH {
                self.scrub_batch(&mut batch, &mut report)?;
            }
        }
        self.scrub_batch(&mut batch, &mut report)?;
        info!(
            checked = report.checked,
            corrupt = report.corrupt.len(),
            unreadable = report.unreadable.len(),
            "chunk store verified"
        );
        Ok(report)
    }

    fn scrub_batch(
        &self,
        batch: &mut Vec<(ChunkId, Loc)>,
        report: &mut ScrubReport,
    ) -> Result<(), StoreError> {
        batch.sort_by_key(|(_, loc)| (loc.segment, loc.offset));
        for (id, _) in batch.drain(..) {
            match self.get_content(&id) {
                Ok(_) => report.checked += 1,
                // Removed while we were scanning.
                Err(StoreError::NotFound(_)) => {}
                Err(e @ StoreError::Corrupt { .. }) => {
                    error!(chunk = %id, error = %e, "stored chunk failed verification");
                    report.checked += 1;
                    report.corrupt.push(id);
                }
                Err(e @ StoreError::Io { .. }) => {
                    error!(chunk = %id, error = %e, "stored chunk could not be read");
                    report.checked += 1;
                    report.unreadable.push(id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Drops chunks from the index and returns how many were stored. Their space becomes
    /// dead (see [`StoreStats::dead_bytes`]) until [`ChunkStore::compact`] reclaims it.
    ///
    /// The removal is not flushed: after a crash a removed chunk may be back (intact), which
    /// is harmless; call [`ChunkStore::flush`] when it must stick.
    pub fn remove(&self, ids: &[ChunkId]) -> Result<u64, StoreError> {
        let mut w = self.lock_writer()?;
        let index = self.index()?;
        let mut update = IndexUpdate::default();
        let mut metas = BTreeMap::new();
        let mut seen = HashSet::new();
        for id in ids {
            if !seen.insert(*id) {
                continue;
            }
            if let Some(loc) = index.get(id)? {
                update.remove.push(*id);
                meta_mut(&mut metas, &w.metas, loc.segment).sub(&loc);
            }
        }
        if update.remove.is_empty() {
            return Ok(0);
        }
        update.segments = metas.iter().map(|(id, m)| (*id, Some(*m))).collect();
        index.apply(&update)?;
        w.metas.extend(metas);
        Ok(update.remove.len() as u64)
    }

    /// Makes every index change so far durable (sled's blocking flush). Pack data is already
    /// durable when `put_batch` returns; this matters for `remove` and for a quick restart.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.index()?.flush()
    }

    /// Flushes the index and closes the store, reporting a flush failure (which `Drop` can
    /// only log).
    pub fn close(self) -> Result<(), StoreError> {
        self.index()?.flush()
    }

    pub(crate) fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>, StoreError> {
        self.writer.lock().map_err(|_| {
            StoreError::WritesDisabled("a write panicked while holding the appender".into())
        })
    }
}

impl Drop for ChunkStore {
    fn drop(&mut self) {
        if let Err(e) = self.index().and_then(|ix| ix.flush()) {
            error!(dir = %self.cfg.dir.display(), error = %e, "flushing the chunk index at close failed");
        }
    }
}

/// Returns the working copy of a segment's counters, starting from the committed ones.
pub(crate) fn meta_mut<'a>(
    working: &'a mut BTreeMap<u32, SegMeta>,
    committed: &BTreeMap<u32, SegMeta>,
    id: u32,
) -> &'a mut SegMeta {
    working
        .entry(id)
        .or_insert_with(|| committed.get(&id).copied().unwrap_or_else(SegMeta::empty))
}

/// Returns true when a segment's dead share makes it worth compacting.
pub(crate) fn worth_compacting(m: &SegMeta, min_dead_ratio: f64) -> bool {
    if m.retired {
        return false;
    }
    let data = m.data_bytes();
    if data == 0 {
        // Only a header: nothing to copy, a file to delete.
        return m.watermark >= FILE_HEADER_LEN;
    }
    let dead = m.dead_bytes();
    dead > 0 && dead as f64 / data as f64 >= min_dead_ratio
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
