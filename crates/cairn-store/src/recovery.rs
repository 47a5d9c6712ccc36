//! Recovery at open: bring the index and the pack files back into agreement.
//!
//! Steps, in order:
//! 1. If the index's completeness marker is missing (index deleted, tree dropped, or a
//!    rebuild interrupted), clear it and rebuild everything from the pack files.
//! 2. Finish interrupted compactions: delete files of segments marked retired.
//! 3. Drop the entries of segments whose pack file has disappeared (logged as errors; the
//!    cluster's repair re-replicates those chunks).
//! 4. Scan every pack file from its watermark to its end, indexing valid records the index
//!    lacks, skipping damaged regions that are followed by valid records, and cutting a torn
//!    tail (nothing valid until the end) off the file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_core::ChunkId;
use tracing::{error, info, warn};

use crate::error::StoreError;
use crate::format::{FileHeader, Loc, SegMeta, FILE_HEADER_LEN, PACK_VERSION};
use crate::index::{Index, IndexUpdate};
use crate::pack::{parse_pack_name, sync_dir, Scanned, Scanner, Segment};

/// What recovery found and repaired when the store was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut from the ends of pack files (torn tails and torn new files).
    pub truncated_bytes: u64,
    /// Pack files that had a torn tail (or a torn header, and were removed).
    pub torn_segments: u32,
    /// Chunks found in pack files past the index's watermarks and added to the index.
    pub reindexed_chunks: u64,
    /// The index was missing or incomplete and was rebuilt from the pack files.
    pub index_rebuilt: bool,
    /// Damaged bytes in the middle of pack files, skipped (and left in place, as dead space).
    pub skipped_bytes: u64,
    /// Pack files shorter than the index says: chunks past their end read as corrupt.
    pub short_segments: u32,
    /// Pack files the index knew that no longer exist.
    pub lost_segments: u32,
    /// Index entries dropped because their pack file no longer exists.
    pub lost_chunks: u64,
    /// Compactions interrupted after the index was updated, whose old file was now deleted.
    pub finished_compactions: u32,
}

/// Index entries written per transaction while re-indexing.
const BATCH: usize = 1024;

/// The state recovery hands to the store.
#[derive(Default)]
pub(crate) struct Recovered {
    pub segments: BTreeMap<u32, Arc<Segment>>,
    pub metas: BTreeMap<u32, SegMeta>,
    /// File length of each segment after recovery.
    pub lens: BTreeMap<u32, u64>,
}

pub(crate) fn recover(
    index: &Index,
    packs: &Path,
    report: &mut RecoveryReport,
) -> Result<Recovered, StoreError> {
    let complete = index.is_complete()?;
    let mut files = list_packs(packs)?;
    if !complete {
        index.reset()?;
        // A new store has no index yet and nothing to rebuild it from.
        if !files.is_empty() {
            report.index_rebuilt = true;
            warn!(packs = %packs.display(), files = files.len(), "chunk index incomplete; rebuilding it from the pack files");
        }
    }
    let mut metas = index.segments()?;

    for (id, _) in metas.clone().into_iter().filter(|(_, m)| m.retired) {
        if let Some(path) = files.remove(&id) {
            fs::remove_file(&path).map_err(|e| StoreError::io("deleting", &path, e))?;
            sync_dir(packs).map_err(|e| StoreError::io("syncing", packs, e))?;
            report.finished_compactions += 1;
            info!(path = %path.display(), "deleted pack file left by an interrupted compaction");
        }
        index.apply(&IndexUpdate {
            segments: vec![(id, None)],
            ..IndexUpdate::default()
        })?;
        metas.remove(&id);
    }

    let lost: BTreeSet<u32> = metas
        .keys()
        .filter(|id| !files.contains_key(id))
        .copied()
        .collect();
    if !lost.is_empty() {
        purge_lost(index, &lost, report)?;
        metas.retain(|id, _| !lost.contains(id));
    }

    let mut out = Recovered::default();
    for (id, path) in files {
        if let Some((seg, meta, len)) = recover_segment(
            index,
            packs,
            id,
            path,
            metas.get(&id).copied(),
            complete,
            report,
        )? {
            out.segments.insert(id, Arc::new(seg));
            out.metas.insert(id, meta);
            out.lens.insert(id, len);
        }
    }
    if !complete {
        index.apply(&IndexUpdate {
            mark_complete: true,
            ..IndexUpdate::default()
        })?;
    }
    index.flush()?;
    Ok(out)
}

/// Lists the pack files in `packs` by segment id.
fn list_packs(packs: &Path) -> Result<BTreeMap<u32, PathBuf>, StoreError> {
    let mut out = BTreeMap::new();
    let entries = fs::read_dir(packs).map_err(|e| StoreError::io("listing", packs, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("listing", packs, e))?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_pack_name) {
            Some(id) => {
                out.insert(id, entry.path());
            }
            None => {
                warn!(path = %entry.path().display(), "ignoring unexpected file among pack files")
            }
        }
    }
    Ok(out)
}

/// Drops the index entries of segments whose pack file is gone.
fn purge_lost(
    index: &Index,
    lost: &BTreeSet<u32>,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    let mut doomed = Vec::new();
    for entry in index.entries() {
        let (id, loc) = entry?;
        if lost.contains(&loc.segment) {
            doomed.push(id);
        }
    }
    for segment in lost {
        error!(
            segment = format_args!("{segment:08x}"),
            "pack file missing; dropping its chunks from the index"
        );
    }
    report.lost_segments += lost.len() as u32;
    report.lost_chunks += doomed.len() as u64;
    for part in doomed.chunks(BATCH) {
        index.apply(&IndexUpdate {
            remove: part.to_vec(),
            ..IndexUpdate::default()
        })?;
    }
    index.apply(&IndexUpdate {
        segments: lost.iter().map(|id| (*id, None)).collect(),
        ..IndexUpdate::default()
    })
}

/// Checks one pack file's header and scans it from its watermark to its end. Returns `None`
/// when the file was a torn new segment and has been removed.
fn recover_segment(
    index: &Index,
    packs: &Path,
    id: u32,
    path: PathBuf,
    meta: Option<SegMeta>,
    index_complete: bool,
    report: &mut RecoveryReport,
) -> Result<Option<(Segment, SegMeta, u64)>, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io("opening", &path, e))?;
    let mut len = file
        .metadata()
        .map_err(|e| StoreError::io("inspecting", &path, e))?
        .len();
    let mut hb = [0u8; FILE_HEADER_LEN as usize];
    let header = if len >= FILE_HEADER_LEN {
        file.read_exact_at(&mut hb, 0)
            .map_err(|e| StoreError::io("reading", &path, e))?;
        FileHeader::parse(&hb)
    } else {
        Err(format!("only {len} bytes long"))
    };
    match header {
        Ok(h) if h.version != PACK_VERSION => {
            return Err(StoreError::Format(format!(
                "{} has pack format version {}; this build reads version {PACK_VERSION}",
                path.display(),
                h.version
            )))
        }
        Ok(h) if h.segment != id => {
            return Err(StoreError::Format(format!(
                "{} holds segment {:08x}, not the one its name says; \
                 move the file out of the packs directory to start without it",
                path.display(),
                h.segment
            )))
        }
        Ok(_) => {}
        // The header is written before a new segment's first sync, so a bad header on a
        // segment the (complete) index never heard of means no sync of it ever finished:
        // nothing in it was acknowledged. A crash while creating it leaves this.
        Err(why) if meta.is_none() && (index_complete || len <= FILE_HEADER_LEN) => {
            warn!(path = %path.display(), len, why, "removing a torn new pack file");
            fs::remove_file(&path).map_err(|e| StoreError::io("deleting", &path, e))?;
            sync_dir(packs).map_err(|e| StoreError::io("syncing", packs, e))?;
            report.torn_segments += 1;
            report.truncated_bytes += len;
            return Ok(None);
        }
        // Records are self-describing and reads go by the index, so a damaged header costs
        // nothing but this warning.
        Err(why) => {
            error!(path = %path.display(), why, "pack file header is damaged; using its records anyway");
            report.skipped_bytes += len.min(FILE_HEADER_LEN);
        }
    }
    let seg = Segment { id, path, file };
    let mut meta = meta.unwrap_or_else(SegMeta::empty);
    if meta.watermark > len {
        warn!(
            path = %seg.path.display(),
            len,
            watermark = meta.watermark,
            "pack file is shorter than the index says; chunks past its end will read as corrupt"
        );
        report.short_segments += 1;
        return Ok(Some((seg, meta, len)));
    }

    let mut scan = Scanner::new(&seg.file, meta.watermark.max(FILE_HEADER_LEN), len);
    let mut pending: HashMap<ChunkId, Loc> = HashMap::new();
    let mut update = IndexUpdate::default();
    loop {
        match scan
            .next()
            .map_err(|e| StoreError::io("reading", &seg.path, e))?
        {
            Scanned::End => break,
            Scanned::Record { offset, header } => {
                let loc = header.loc(id, offset);
                let known = match pending.get(&header.id) {
                    Some(l) => Some(*l),
                    None => index.get(&header.id)?,
                };
                match known {
                    None => {
                        pending.insert(header.id, loc);
                        update.put.push((header.id, loc));
                        meta.add(&loc);
                        report.reindexed_chunks += 1;
                    }
                    // Indexed, but the segment's counters were lost with its entry.
                    Some(l) if l == loc => meta.add(&loc),
                    // Another copy is indexed: this one is dead space.
                    Some(_) => {}
                }
                meta.watermark = offset + header.record_len();
            }
            Scanned::Gap { from, to } => {
                warn!(
                    path = %seg.path.display(),
                    offset = from,
                    bytes = to - from,
                    "skipping a damaged region in a pack file"
                );
                report.skipped_bytes += to - from;
                meta.watermark = to;
            }
            Scanned::Torn { from } => {
                seg.file
                    .set_len(from)
                    .map_err(|e| StoreError::io("truncating", &seg.path, e))?;
                seg.file
                    .sync_all()
                    .map_err(|e| StoreError::io("syncing", &seg.path, e))?;
                warn!(
                    path = %seg.path.display(),
                    offset = from,
                    cut_bytes = len - from,
                    "cut a torn tail off a pack file"
                );
                report.torn_segments += 1;
                report.truncated_bytes += len - from;
                len = from;
                meta.watermark = from;
                break;
            }
        }
        if update.put.len() >= BATCH {
            update.segments = vec![(id, Some(meta))];
            index.apply(&update)?;
            update = IndexUpdate::default();
            pending.clear();
        }
    }
    update.segments = vec![(id, Some(meta))];
    index.apply(&update)?;
    Ok(Some((seg, meta, len)))
}
