//! The sled index: chunk id → record location, and per-segment bookkeeping.
//!
//! This is the only module that knows about sled, so swapping the index engine touches one
//! file. Every multi-key change goes through [`Index::apply`], which commits the chunk entries
//! and the segment entries they affect in one sled transaction: after a crash the index is
//! always some consistent prefix of the applied updates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_core::ChunkId;
use sled::transaction::TransactionError;
use sled::Transactional;

use crate::error::StoreError;
use crate::format::{Loc, SegMeta};

/// Index layout version, kept under [`FORMAT_KEY`] in the default tree.
const INDEX_FORMAT: u32 = 1;
const FORMAT_KEY: &[u8] = b"cairn-store-index-format";
/// A key in the `chunks` tree (never 32 bytes long, so never a chunk id) whose presence says
/// the tree is complete up to every segment's watermark. Losing the tree loses the marker,
/// which makes the next open rebuild the index from the pack files.
const COMPLETE_KEY: &[u8] = b"!complete";
/// Cache for sled's page cache. sled's own default (1 GiB) is too greedy for a node that also
/// serves chunk reads from the OS page cache.
const CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// How long to wait for sled's lock. A store closed a moment ago may still hold it while
/// sled's background threads finish.
const LOCK_WAIT: Duration = Duration::from_secs(2);

fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    // sled reports a held lock only in an error message: ask the lock itself first.
    let deadline = Instant::now() + LOCK_WAIT;
    while cairn_core::fslock::held(&path.join("db"))
        .map_err(|e| StoreError::index(path, sled::Error::Io(e)))?
    {
        if Instant::now() >= deadline {
            return Err(StoreError::Index(format!(
                "{} is locked: another process (or another store in this one) has \
                 this chunk store open",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sled::Config::new()
        .path(path)
        .cache_capacity(CACHE_BYTES)
        .open()
        .map_err(|e| StoreError::index(path, e))
}

/// A set of changes committed atomically by [`Index::apply`].
#[derive(Default)]
pub(crate) struct IndexUpdate {
    pub put: Vec<(ChunkId, Loc)>,
    pub remove: Vec<ChunkId>,
    /// New bookkeeping of a segment, or `None` to forget the segment.
    pub segments: Vec<(u32, Option<SegMeta>)>,
    pub mark_complete: bool,
}

impl IndexUpdate {
    fn is_empty(&self) -> bool {
        self.put.is_empty() && self.remove.is_empty() && self.segments.is_empty()
    }
}

pub(crate) struct Index {
    path: PathBuf,
    db: sled::Db,
    chunks: sled::Tree,
    segments: sled::Tree,
    /// Set by the first I/O error sled reports. sled keeps that error and answers every later
    /// call with it (a full disk while it wrote its log breaks the handle for good), so the
    /// store reopens the index instead of using this handle again (`ChunkStore::heal`).
    failed: AtomicBool,
}

impl Index {
    /// Opens (or creates) the index in `path`. sled locks the database, so a second process
    /// opening the same store fails here, before anything is changed.
    pub fn open(path: &Path) -> Result<Index, StoreError> {
        let err = |e| StoreError::index(path, e);
        let db = open_db(path)?;
        match db.get(FORMAT_KEY).map_err(err)? {
            None => {
                db.insert(FORMAT_KEY, &INDEX_FORMAT.to_le_bytes()[..])
                    .map_err(err)?;
            }
            Some(v) if v.as_ref() == INDEX_FORMAT.to_le_bytes() => {}
            Some(v) => {
                return Err(StoreError::Format(format!(
                    "index {} has format {:?}; this build reads format {INDEX_FORMAT}",
                    path.display(),
                    v.as_ref()
                )))
            }
        }
        let chunks = db.open_tree("chunks").map_err(err)?;
        let segments = db.open_tree("segments").map_err(err)?;
        Ok(Index {
            path: path.to_path_buf(),
            db,
            chunks,
            segments,
            failed: AtomicBool::new(false),
        })
    }

    fn err(&self, e: sled::Error) -> StoreError {
        if matches!(e, sled::Error::Io(_) | sled::Error::ReportableBug(_)) {
            self.failed.store(true, Ordering::Relaxed);
        }
        StoreError::index(&self.path, e)
    }

    /// Returns true once sled reported an I/O error through this handle: it will answer
    /// every later call with the same error, so it must be reopened.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Returns true when the chunk tree is known complete (see [`COMPLETE_KEY`]).
    pub fn is_complete(&self) -> Result<bool, StoreError> {
        self.chunks
            .contains_key(COMPLETE_KEY)
            .map_err(|e| self.err(e))
    }

    /// Forgets every chunk and segment entry, before a rebuild from the pack files.
    pub fn reset(&self) -> Result<(), StoreError> {
        self.chunks.clear().map_err(|e| self.err(e))?;
        self.segments.clear().map_err(|e| self.err(e))
    }

    /// Returns the location of a chunk.
    pub fn get(&self, id: &ChunkId) -> Result<Option<Loc>, StoreError> {
        match self.chunks.get(id.as_bytes()).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => Loc::decode(&v).map(Some).map_err(|why| {
                StoreError::Index(format!("malformed index entry for chunk {id}: {why}"))
            }),
        }
    }

    pub fn contains(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.chunks
            .contains_key(id.as_bytes())
            .map_err(|e| self.err(e))
    }

    /// Returns the bookkeeping of every segment.
    pub fn segments(&self) -> Result<BTreeMap<u32, SegMeta>, StoreError> {
        let mut out = BTreeMap::new();
        for kv in self.segments.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let id = <[u8; 4]>::try_from(k.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Index(format!("malformed segment key {k:?}")))?;
            let meta = SegMeta::decode(&v)
                .map_err(|why| StoreError::Index(format!("segment {id}: {why}")))?;
            out.insert(id, meta);
        }
        Ok(out)
    }

    /// Iterates over every chunk entry in id order.
    pub fn entries(&self) -> impl Iterator<Item = Result<(ChunkId, Loc), StoreError>> + '_ {
        self.chunks.iter().filter_map(move |kv| {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return Some(Err(self.err(e))),
            };
            let id = ChunkId(<[u8; 32]>::try_from(k.as_ref()).ok()?);
            Some(
                Loc::decode(&v)
                    .map(|loc| (id, loc))
                    .map_err(|why| StoreError::Index(format!("chunk {id}: {why}"))),
            )
        })
    }

    /// Iterates over every chunk id in id order.
    pub fn ids(&self) -> impl Iterator<Item = Result<ChunkId, StoreError>> + '_ {
        self.chunks.iter().keys().filter_map(move |k| match k {
            Ok(k) => <[u8; 32]>::try_from(k.as_ref())
                .ok()
                .map(|b| Ok(ChunkId(b))),
            Err(e) => Some(Err(self.err(e))),
        })
    }

    /// Commits `u` atomically.
    pub fn apply(&self, u: &IndexUpdate) -> Result<(), StoreError> {
        if u.is_empty() && !u.mark_complete {
            return Ok(());
        }
        let mut chunks = sled::Batch::default();
        for (id, loc) in &u.put {
            chunks.insert(&id.as_bytes()[..], &loc.encode()[..]);
        }
        for id in &u.remove {
            chunks.remove(&id.as_bytes()[..]);
        }
        if u.mark_complete {
            chunks.insert(COMPLETE_KEY, &[][..]);
        }
        let mut segments = sled::Batch::default();
        for (id, meta) in &u.segments {
            match meta {
                Some(m) => segments.insert(&id.to_be_bytes()[..], &m.encode()[..]),
                None => segments.remove(&id.to_be_bytes()[..]),
            }
        }
        (&self.chunks, &self.segments)
            .transaction(|(c, s)| {
                c.apply_batch(&chunks)?;
                s.apply_batch(&segments)?;
                Ok(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => self.err(e),
                TransactionError::Abort(()) => {
                    StoreError::Index("index transaction aborted".into())
                }
            })
    }

    /// Makes everything applied so far durable (sled's blocking flush; never `flush_async`,
    /// which can deadlock in sled 0.34.7).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_chunker::Codec;

    fn loc(segment: u32) -> Loc {
        Loc {
            segment,
            offset: 16,
            stored_len: 10,
            raw_len: 10,
            codec: Codec::Raw,
        }
    }

    #[test]
    fn updates_apply_atomically_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = ChunkId::of(b"a");
        let b = ChunkId::of(b"b");
        {
            let ix = Index::open(dir.path()).unwrap();
            assert!(!ix.is_complete().unwrap());
            let mut m = SegMeta::empty();
            m.add(&loc(1));
            ix.apply(&IndexUpdate {
                put: vec![(a, loc(1)), (b, loc(2))],
                segments: vec![(1, Some(m)), (2, Some(SegMeta::empty()))],
                mark_complete: true,
                ..IndexUpdate::default()
            })
            .unwrap();
            ix.apply(&IndexUpdate {
                remove: vec![b],
                segments: vec![(2, None)],
                ..IndexUpdate::default()
            })
            .unwrap();
            ix.flush().unwrap();
        }
        let ix = Index::open(dir.path()).unwrap();
        assert!(ix.is_complete().unwrap());
        assert_eq!(ix.get(&a).unwrap(), Some(loc(1)));
        assert_eq!(ix.get(&b).unwrap(), None);
        // The completeness marker is not a chunk.
        let ids: Vec<_> = ix.ids().collect::<Result<_, _>>().unwrap();
        assert_eq!(ids, vec![a]);
        assert_eq!(ix.entries().count(), 1);
        let segs = ix.segments().unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[&1].live_records, 1);

        ix.reset().unwrap();
        assert!(!ix.is_complete().unwrap());
        assert!(ix.segments().unwrap().is_empty());
    }
}
