//! Behaviour tests of the whole store: real files in temp directories, damage applied with
//! plain file operations, reopen to run recovery.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_chunker::{encode, Codec, EncodedChunk};
use cairn_core::{ChunkId, Compression};

use crate::format::{RecordHeader, FILE_HEADER_LEN, RECORD_HEADER_LEN};
use crate::*;

/// Pseudo-random (incompressible) bytes: `noise(seed, len)`, over the workspace's one
/// generator (which takes the length first).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    cairn_core::testing::noise(len, seed)
}

/// An incompressible chunk, stored raw.
fn raw(seed: u64, len: usize) -> EncodedChunk {
    encode(&noise(seed, len), Compression::None)
}

/// A compressible chunk, stored zstd.
fn zst(seed: u64, len: usize) -> EncodedChunk {
    let text = format!("chunk {seed} says hello; ").repeat(len / 20 + 1);
    let c = encode(&text.as_bytes()[..len], Compression::Normal);
    assert_eq!(c.codec, Codec::Zstd);
    c
}

fn small_segments(dir: &Path) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        segment_max_bytes: 64 * 1024,
    }
}

fn packs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

fn packs_size(dir: &Path) -> u64 {
    packs(dir).iter().map(|p| file_len(p)).sum()
}

fn content_of(c: &EncodedChunk) -> Vec<u8> {
    cairn_chunker::decode(c).unwrap().to_vec()
}

fn assert_readable(store: &ChunkStore, chunks: &[EncodedChunk]) {
    for c in chunks {
        assert_eq!(&store.get(&c.id).unwrap(), c, "chunk {}", c.id);
        assert_eq!(store.get_content(&c.id).unwrap(), content_of(c));
    }
}

/// Appends bytes to a file, as a crash between write and sync would leave them.
fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// The bytes of a record for `c`, exactly as the store writes them.
fn record_bytes(c: &EncodedChunk) -> Vec<u8> {
    let h = RecordHeader::new(c.id, c.codec, c.raw_len, &c.data);
    [h.encode().to_vec(), c.data.to_vec()].concat()
}

fn flip_byte(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, offset).unwrap();
}

fn assert_corrupt(r: Result<impl std::fmt::Debug, StoreError>, id: &ChunkId) {
    match r {
        Err(e @ StoreError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("chunk {id} is corrupt: ")),
                "{msg}"
            );
        }
        other => panic!("expected Corrupt for {id}, got {other:?}"),
    }
}

#[test]
fn put_get_round_trip_and_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    assert!(store.recovery().is_clean(), "{:?}", store.recovery());
    let chunks = vec![raw(1, 1000), zst(2, 50_000), raw(3, 0)];
    let st = store.put_batch(&chunks).unwrap();
    assert_eq!(st.stored, 3);
    assert_eq!(st.duplicate, 0);
    let expected: u64 = chunks
        .iter()
        .map(|c| (RECORD_HEADER_LEN + c.data.len()) as u64)
        .sum();
    assert_eq!(st.bytes_written, expected);
    assert_readable(&store, &chunks);
    // The stored form is the compressed one, ready to send on.
    assert_eq!(store.get(&chunks[1].id).unwrap().codec, Codec::Zstd);

    // Again, plus a repeat inside the batch and one new chunk.
    let mut again = chunks.clone();
    again.push(chunks[0].clone());
    again.push(raw(4, 10));
    let st = store.put_batch(&again).unwrap();
    assert_eq!((st.stored, st.duplicate), (1, 4));

    let s = store.stats();
    assert_eq!(s.chunks, 4);
    assert_eq!(s.segments, 1);
    assert_eq!(s.dead_bytes, 0);
    assert_eq!(s.logical_bytes, 1000 + 50_000 + 10);
    assert_eq!(s.stored_bytes, expected + (RECORD_HEADER_LEN + 10) as u64);
    // Exactly one record per chunk on disk.
    assert_eq!(packs_size(dir.path()), FILE_HEADER_LEN + s.stored_bytes);

    let unknown = ChunkId::of(b"never stored");
    assert!(matches!(store.get(&unknown), Err(StoreError::NotFound(id)) if id == unknown));
    assert!(store.contains(&chunks[0].id).unwrap());
    assert_eq!(
        store
            .missing(&[chunks[0].id, unknown, chunks[1].id])
            .unwrap(),
        vec![unknown]
    );
    assert_eq!(store.put_batch(&[]).unwrap(), PutStats::default());
}

#[test]
fn chunks_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let chunks: Vec<_> = (0..20).map(|i| zst(i, 3000 + i as usize)).collect();
    {
        let store = ChunkStore::open(dir.path()).unwrap();
        store.put_batch(&chunks[..10]).unwrap();
        store.put_batch(&chunks[10..]).unwrap();
    }
    let store = ChunkStore::open(dir.path()).unwrap();
    assert!(store.recovery().is_clean(), "{:?}", store.recovery());
    assert_eq!(store.recovery().reindexed_chunks, 0);
    assert_readable(&store, &chunks);
    assert_eq!(store.stats().chunks, 20);
    // New puts append to the same segment after reopen.
    store.put_batch(&[raw(99, 100)]).unwrap();
    assert_eq!(packs(dir.path()).len(), 1);
}

#[test]
fn garbage_after_the_last_record_is_cut_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = vec![raw(1, 5000), zst(2, 9000)];
    {
        let store = ChunkStore::open(dir.path()).unwrap();
        store.put_batch(&chunks).unwrap();
    }
    let pack = packs(dir.path()).remove(0);
    let good_len = file_len(&pack);
    append(&pack, &noise(7, 777));

    let store = ChunkStore::open(dir.path()).unwrap();
    let r = store.recovery();
    assert_eq!((r.truncated_bytes, r.torn_segments), (777, 1), "{r:?}");
    assert_eq!(file_len(&pack), good_len);
    assert_readable(&store, &chunks);
    let more = raw(3, 100);
    store.put_batch(std::slice::from_ref(&more)).unwrap();
    drop(store);

    let store = ChunkStore::open(dir.path()).unwrap();
    assert!(store.recovery().is_clean(), "{:?}", store.recovery());
    assert_readable(&store, &[chunks, vec![more]].concat());
}

#[test]
fn a_torn_record_is_cut_and_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let kept = vec![raw(1, 5000), raw(2, 5000)];
    {
        let store = ChunkStore::open(dir.path()).unwrap();
        store.put_batch(&kept).unwrap();
    }
    let pack = packs(dir.path()).remove(0);
    let good_len = file_len(&pack);
    // A crash in the middle of appending a batch: one whole record, then half of the next.
    // Neither was synced or indexed.
    let whole = zst(3, 20_000);
    let torn = raw(4, 8000);
    let torn_bytes = record_bytes(&torn);
    append(&pack, &record_bytes(&whole));
    append(&pack, &torn_bytes[..torn_bytes.len() / 2]);

    let store = ChunkStore::open(dir.path()).unwrap();
    let r = store.recovery().clone();
    assert_eq!(r.torn_segments, 1, "{r:?}");
    assert_eq!(r.truncated_bytes, (torn_bytes.len() / 2) as u64);
    assert_eq!(r.reindexed_chunks, 1);
    assert_eq!(
        file_len(&pack),
        good_len + record_bytes(&whole).len() as u64
    );
    assert!(!store.contains(&torn.id).unwrap());
    assert!(matches!(store.get(&torn.id), Err(StoreError::NotFound(_))));
    // The whole record was valid: it is indexed (it is a real chunk, never wrong bytes).
    assert_readable(&store, &[kept.clone(), vec![whole.clone()]].concat());

    // The torn chunk can be stored again, and everything survives another reopen.
    assert_eq!(
        store.put_batch(std::slice::from_ref(&torn)).unwrap().stored,
        1
    );
    drop(store);
    let store = ChunkStore::open(dir.path()).unwrap();
    assert!(store.recovery().is_clean(), "{:?}", store.recovery());
    assert_readable(&store, &[kept, vec![whole, torn]].concat());
    assert_eq!(store.stats().dead_bytes, 0);
}

#[test]
fn a_pack_cut_below_the_index_reports_corrupt_chunks_not_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (raw(1, 5000), raw(2, 5000));
    {
        let store = ChunkStore::open(dir.path()).unwrap();
        store.put_batch(&[a.clone(), b.clone()]).unwrap();
        store.flush().unwrap();
    }
    // Lose the last 100 bytes of an acknowledged record (a broken disk, not a crash).
    let pack = packs(dir.path()).remove(0);
    let f = OpenOptions::new().write(true).open(&pack).unwrap();
    f.set_len(file_len(&pack) - 100).unwrap();

    let store = ChunkStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery().short_segments, 1);
    assert_readable(&store, std::slice::from_ref(&a));
    assert_corrupt(store.get(&b.id), &b.id);
    assert_eq!(store.verify_all().unwrap().corrupt, vec![b.id]);
    // Writes go on, to a fresh segment.
    let c = raw(3, 100);
    store.put_batch(std::slice::from_ref(&c)).unwrap();
    assert_eq!(packs(dir.path()).len(), 2);
    assert_readable(&store, std::slice::from_ref(&c));
    // Compaction moves what it can and keeps the segment holding the damaged chunk.
    store.remove(&[c.id]).unwrap();
    store.put_batch(std::slice::from_ref(&c)).unwrap();
    store.remove(&[a.id]).unwrap();
    let r = store.compact(0.0).unwrap();
    assert_eq!(r.segments_kept, 1, "{r:?}");
    assert_corrupt(store.get(&b.id), &b.id);
    assert_readable(&store, &[c]);
}

fn index_rebuild_case(damage: impl FnOnce(&Path)) -> (tempfile::TempDir, Vec<EncodedChunk>) {
    let dir = tempfile::tempdir().unwrap();
    let chunks: Vec<_> = (0..40).map(|i| raw(i, 4000)).collect();
    {
        let store = ChunkStore::open_with(small_segments(dir.path())).unwrap();
        for part in chunks.chunks(7) {
            store.put_batch(part).unwrap();
        }
        store.flush().unwrap();
    }
    assert!(packs(dir.path()).len() > 2);
    damage(&dir.path().join("index"));
    (dir, chunks)
}

fn assert_rebuilt(dir: &Path, chunks: &[EncodedChunk]) -> StoreStats {
    let store = ChunkStore::open_with(small_segments(dir)).unwrap();
    assert_readable(&store, chunks);
    let s = store.stats();
    assert_eq!(s.chunks, chunks.len() as u64);
    assert_eq!(s.dead_bytes, 0);
    assert_eq!(s.segments as usize, packs(dir).len());
    drop(store);
    // And the rebuilt index is complete: nothing to redo at the next open.
    let store = ChunkStore::open_with(small_segments(dir)).unwrap();
    assert!(store.recovery().is_clean(), "{:?}", store.recovery());
    assert_eq!(store.recovery().reindexed_chunks, 0);
    s
}

#[test]
fn the_index_is_rebuilt_when_the_chunks_tree_is_dropped() {
    let (dir, chunks) = index_rebuild_case(|index| {
        let db = sled::open(index).unwrap();
        assert!(db.drop_tree("chunks").unwrap());
        db.flush().unwrap();
    });
    let store = ChunkStore::open_with(small_segments(dir.path())).unwrap();
    assert!(store.recovery().index_rebuilt);
    assert_eq!(store.recovery().reindexed_chunks, 40);
    drop(store);
    assert_rebuilt(dir.path(), &chunks);
}

#[test]
fn the_index_is_rebuilt_when_the_chunks_tree_is_emptied() {
    let (dir, chunks) = index_rebuild_case(|index| {
        let db = sled::open(index).unwrap();
        db.open_tree("chunks").unwrap().clear().unwrap();
        db.flush().unwrap();
    });
    assert_rebuilt(dir.path(), &chunks);
}

#[test]
fn segments_are_rescanned_when_their_watermarks_are_lost() {
    let (dir, chunks) = index_rebuild_case(|index| {
        let db = sled::open(index).unwrap();
        assert!(db.drop_tree("segments").unwrap());
        db.flush().unwrap();
    });
    let store = ChunkStore::open_with(small_segments(dir.path())).unwrap();
    // The entries were still there: only the counters had to be recomputed.
    assert!(!store.recovery().index_rebuilt);
    assert_eq!(store.recovery().reindexed_chunks, 0);
    drop(store);
    assert_rebuilt(dir.path(), &chunks);
}

#[test]
fn the_index_is_rebuilt_when_its_directory_is_deleted() {
    let (dir, chunks) = index_rebuild_case(|index| fs::remove_dir_all(index).unwrap());
    assert_rebuilt(dir.path(), &chunks);
}

#[test]
fn unindexed_records_past_the_watermark_are_reindexed() {
    let dir = tempfile::tempdir().unwrap();
    let first = vec![raw(1, 3000)];
    {
        let store = ChunkStore::open(dir.path()).unwrap();
        store.put_batch(&first).unwrap();
        store.flush().unwrap();
    }
    // A batch that was synced but whose index transaction never reached the disk: put it
    // through a second store on a copy, then graft its pack onto the original index.
    let later = vec![zst(2, 30_000), raw(3, 2000)];
    let copy = tempfile::tempdir().unwrap();
    fs::create_dir_all(copy.path().join("packs")).unwrap();
    let pack_name = packs(dir.path())[0].file_name().unwrap().to_owned();
    fs::copy(
        &packs(dir.path())[0],
        copy.path().join("packs").join(&pack_name),
    )
    .unwrap();
    {
        let other = ChunkStore::open(copy.path()).unwrap();
        other.put_batch(&later).unwrap();
    }
    fs::copy(
        copy.path().join("packs").join(&pack_name),
        &packs(dir.path())[0],
    )
    .unwrap();

    let store = ChunkStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery().reindexed_chunks, 2);
    assert!(store.recovery().is_clean());
    assert_readable(&store, &[first, later].concat());
    assert_eq!(store.stats().chunks, 3);
}

#[test]
fn a_flipped_byte_is_reported_as_corrupt_naming_the_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let chunks: Vec<_> = (0..5).map(|i| zst(i, 20_000)).collect();
    let store = ChunkStore::open(dir.path()).unwrap();
    store.put_batch(&chunks).unwrap();
    let victim = chunks[2].id;
    let loc = store.index().unwrap().get(&victim).unwrap().unwrap();
    let pack = packs(dir.path()).remove(0);
    flip_byte(
        &pack,
        loc.offset + RECORD_HEADER_LEN as u64 + u64::from(loc.stored_len) / 2,
    );

    assert_corrupt(store.get(&victim), &victim);
    assert_corrupt(store.get_content(&victim), &victim);
    let others: Vec<_> = chunks.iter().filter(|c| c.id != victim).cloned().collect();
    assert_readable(&store, &others);
    let report = store.verify_all().unwrap();
    assert_eq!(report.checked, 5);
    assert_eq!(report.corrupt, vec![victim]);

    // A flipped byte in a header is caught too (here: the stored id).
    let victim2 = chunks[4].id;
    let loc2 = store.index().unwrap().get(&victim2).unwrap().unwrap();
    flip_byte(&pack, loc2.offset + 10);
    assert_corrupt(store.get(&victim2), &victim2);
    let mut corrupt = store.verify_all().unwrap().corrupt;
    corrupt.sort();
    let mut want = vec![victim, victim2];
    want.sort();
    assert_eq!(corrupt, want);
}

#[test]
fn replace_supersedes_a_corrupt_copy_that_put_would_call_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let chunks: Vec<_> = (0..5).map(|i| zst(i, 20_000)).collect();
    let store = ChunkStore::open(dir.path()).unwrap();
    store.put_batch(&chunks).unwrap();
    let victim = &chunks[2];
    let loc = store.index().unwrap().get(&victim.id).unwrap().unwrap();
    let pack = packs(dir.path()).remove(0);
    flip_byte(&pack, loc.offset + RECORD_HEADER_LEN as u64 + 7);
    assert_eq!(store.verify_all().unwrap().corrupt, vec![victim.id]);

    // A put of the healthy copy is a duplicate: the corrupt copy would stay.
    let put = store.put_batch(std::slice::from_ref(victim)).unwrap();
    assert_eq!((put.stored, put.duplicate), (0, 1));
    assert_corrupt(store.get(&victim.id), &victim.id);

    // A bad "healthy" copy is refused and changes nothing.
    let forged = EncodedChunk {
        data: noise(99, 100).into(),
        ..victim.clone()
    };
    assert!(store.replace(&forged).is_err());
    assert_eq!(store.index().unwrap().get(&victim.id).unwrap(), Some(loc));

    let before = store.stats();
    assert!(store.replace(victim).unwrap());
    assert_readable(&store, &chunks);
    let report = store.verify_all().unwrap();
    assert!(
        report.corrupt.is_empty() && report.unreadable.is_empty(),
        "{report:?}"
    );
    let after = store.stats();
    assert_eq!(after.chunks, before.chunks);
    assert_eq!(after.stored_bytes, before.stored_bytes);
    assert!(after.dead_bytes > before.dead_bytes, "{after:?}");
    drop(store);
    let store = ChunkStore::open(dir.path()).unwrap();
    assert_readable(&store, &chunks);
}

#[test]
fn an_unreadable_copy_is_reported_apart_from_corrupt_ones_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let chunks: Vec<_> = (0..3).map(|i| zst(i, 20_000)).collect();
    let store = ChunkStore::open(dir.path()).unwrap();
    store.put_batch(&chunks).unwrap();
    // Every read of the pack now fails with an I/O error (EBADF from a write-only handle),
    // as reads from a failing disk fail with EIO; the bytes themselves are fine.
    let seg = store.segment(1).unwrap();
    let write_only = OpenOptions::new().write(true).open(&seg.path).unwrap();
    store.segments.write().unwrap().insert(
        1,
        Arc::new(crate::pack::Segment {
            id: 1,
            path: seg.path.clone(),
            file: write_only,
        }),
    );
    assert!(matches!(
        store.get(&chunks[0].id),
        Err(StoreError::Io { .. })
    ));
    let report = store.verify_all().unwrap();
    assert_eq!(report.checked, 3);
    assert!(report.corrupt.is_empty(), "{report:?}");
    let mut unreadable = report.unreadable.clone();
    unreadable.sort();
    let mut want: Vec<_> = chunks.iter().map(|c| c.id).collect();
    want.sort();
    assert_eq!(unreadable, want);
    for c in &chunks {
        assert!(store.contains(&c.id).unwrap());
    }
    // Once the disk reads again, so does every chunk.
    store.segments.write().unwrap().insert(1, seg);
    assert_readable(&store, &chunks);
}

#[test]
fn content_that_does_not_hash_to_its_id_is_refused_even_with_a_good_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let c = raw(1, 4000);
    let store = ChunkStore::open(dir.path()).unwrap();
    store.put_batch(std::slice::from_ref(&c)).unwrap();
    // Rewrite the record with other content and a matching CRC: only the BLAKE3 re-hash
    // can tell.
    let loc = store.index().unwrap().get(&c.id).unwrap().unwrap();
    let forged = EncodedChunk {
        data: noise(2, 4000).into(),
        ..c.clone()
    };
    let pack = packs(dir.path()).remove(0);
    let f = OpenOptions::new().write(true).open(&pack).unwrap();
    f.write_all_at(&record_bytes(&forged), loc.offset).unwrap();
    assert_corrupt(store.get(&c.id), &c.id);
    assert_eq!(store.verify_all().unwrap().corrupt, vec![c.id]);
}

#[test]
fn a_bad_chunk_fails_the_whole_batch_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let good = raw(1, 1000);
    let mut bad = zst(2, 5000);
    bad.id = ChunkId::of(b"something else");
    let err = store.put_batch(&[good.clone(), bad.clone()]).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { id, .. } if id == bad.id),
        "{err}"
    );
    assert!(err.to_string().contains(&bad.id.to_string()));

    let mut lying = raw(3, 1000);
    lying.raw_len = 999;
    assert!(matches!(
        store.put_batch(&[good.clone(), lying]),
        Err(StoreError::Corrupt { .. })
    ));
    let mut huge = raw(4, 10);
    huge.data = vec![0; crate::format::MAX_STORED_LEN as usize + 1].into();
    assert!(matches!(
        store.put_batch(&[huge]),
        Err(StoreError::TooLarge { .. })
    ));

    assert!(!store.contains(&good.id).unwrap());
    assert_eq!(store.stats(), StoreStats::default());
    assert!(packs(dir.path()).is_empty(), "no segment was even created");
}

#[test]
fn concurrent_puts_store_every_chunk_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ChunkStore::open_with(small_segments(dir.path())).unwrap());
    // 8 threads; each chunk is offered by two threads, in different batches.
    let all: Vec<EncodedChunk> = (0..400)
        .map(|i| raw(i, 500 + (i as usize % 7) * 300))
        .collect();
    let all = Arc::new(all);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let store = store.clone();
            let all = all.clone();
            std::thread::spawn(move || {
                let mine: Vec<EncodedChunk> = all
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| (*i as u64 % 4) == t % 4)
                    .map(|(_, c)| c.clone())
                    .collect();
                let mut stored = 0;
                for part in mine.chunks(5 + t as usize) {
                    let st = store.put_batch(part).unwrap();
                    assert_eq!(st.stored + st.duplicate, part.len() as u64);
                    stored += st.stored;
                }
                stored
            })
        })
        .collect();
    let stored: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(stored, 400);
    let s = store.stats();
    assert_eq!(s.chunks, 400);
    assert_eq!(s.dead_bytes, 0);
    assert_readable(&store, &all);
    let on_disk = packs_size(dir.path()) - FILE_HEADER_LEN * packs(dir.path()).len() as u64;
    assert_eq!(on_disk, s.stored_bytes, "a chunk was written twice");
    drop(store);

    let store = ChunkStore::open_with(small_segments(dir.path())).unwrap();
    assert!(store.recovery().is_clean());
    assert_readable(&store, &all);
}

#[test]
fn segments_roll_over_at_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_segments(dir.path());
    let store = ChunkStore::open_with(cfg.clone()).unwrap();
    let chunks: Vec<_> = (0..40).map(|i| raw(i, 8000)).collect();
    for c in &chunks {
        store.put_batch(std::slice::from_ref(c)).unwrap();
    }
    // One batch larger than a segment spreads over several.
    let big_batch: Vec<_> = (100..120).map(|i| raw(i, 8000)).collect();
    store.put_batch(&big_batch).unwrap();
    // A single chunk larger than a segment gets one of its own.
    let jumbo = raw(1000, 100_000);
    store.put_batch(std::slice::from_ref(&jumbo)).unwrap();

    let files = packs(dir.path());
    assert!(files.len() >= 8, "{} segments", files.len());
    for f in &files {
        let len = file_len(f);
        assert!(
            len <= cfg.segment_max_bytes
                || len == FILE_HEADER_LEN + record_bytes(&jumbo).len() as u64,
            "{} is {len} bytes",
            f.display()
        );
    }
    assert_eq!(store.stats().segments as usize, files.len());
    drop(store);
    let store = ChunkStore::open_with(cfg).unwrap();
    assert_readable(&store, &[chunks, big_batch, vec![jumbo]].concat());
}

#[test]
fn remove_then_compact_reclaims_space_and_keeps_live_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_segments(dir.path());
    let chunks: Vec<_> = (0..60).map(|i| raw(i, 6000)).collect();
    let (live, dead): (Vec<_>, Vec<_>) = chunks.iter().cloned().partition(|c| c.id.0[0] % 3 == 0);
    let before;
    {
        let store = ChunkStore::open_with(cfg.clone()).unwrap();
        for part in chunks.chunks(4) {
            store.put_batch(part).unwrap();
        }
        before = packs_size(dir.path());
        let ids: Vec<_> = dead.iter().map(|c| c.id).collect();
        assert_eq!(store.remove(&ids).unwrap(), dead.len() as u64);
        assert_eq!(store.remove(&ids).unwrap(), 0);
        let s = store.stats();
        assert_eq!(s.chunks, live.len() as u64);
        let dead_bytes: u64 = dead.iter().map(|c| record_bytes(c).len() as u64).sum();
        assert_eq!(s.dead_bytes, dead_bytes);
        for c in &dead {
            assert!(matches!(store.get(&c.id), Err(StoreError::NotFound(_))));
        }

        let r = store.compact(0.2).unwrap();
        assert!(r.segments_compacted >= 1, "{r:?}");
        assert!(r.bytes_reclaimed > 0);
        assert!(r.corrupt.is_empty());
        assert_eq!(r.bytes_reclaimed, r.bytes_freed - r.bytes_copied);
        let after = packs_size(dir.path());
        assert_eq!(before - after, r.bytes_reclaimed);
        let s = store.stats();
        assert_eq!(s.chunks, live.len() as u64);
        assert!(s.dead_bytes < dead_bytes / 2, "{s:?}");
        assert_readable(&store, &live);
        // Compacting everything that has any dead byte leaves none.
        store.compact(0.0).unwrap();
        assert_eq!(store.stats().dead_bytes, 0);
        assert_readable(&store, &live);
    }
    let store = ChunkStore::open_with(cfg).unwrap();
    assert!(store.recovery().is_clean(), "{:?}", store.recovery());
    assert_readable(&store, &live);
    for c in &dead {
        assert!(!store.contains(&c.id).unwrap(), "removed chunk came back");
    }
    let s = store.stats();
    assert_eq!(
        (s.chunks, s.dead_bytes, s.segments as usize),
        (live.len() as u64, 0, packs(dir.path()).len())
    );
    // Puts after compaction work and dedup against moved chunks.
    assert_eq!(store.put_batch(&live).unwrap().duplicate, live.len() as u64);
}

#[test]
fn reads_during_compaction_never_fail() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ChunkStore::open_with(small_segments(dir.path())).unwrap());
    let chunks: Vec<_> = (0..80).map(|i| raw(i, 3000)).collect();
    for part in chunks.chunks(5) {
        store.put_batch(part).unwrap();
    }
    let (live, dead): (Vec<_>, Vec<_>) = chunks.into_iter().partition(|c| c.id.0[0] % 2 == 0);
    store
        .remove(&dead.iter().map(|c| c.id).collect::<Vec<_>>())
        .unwrap();
    let live = Arc::new(live);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, live, stop) = (store.clone(), live.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads < live.len() {
                    let c = &live[reads % live.len()];
                    assert_eq!(store.get(&c.id).unwrap(), *c);
                    reads += 1;
                }
            })
        })
        .collect();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 1000..1040 {
                store.put_batch(&[raw(i, 2000)]).unwrap();
            }
        })
    };
    let r = store.compact(0.1).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    for t in readers {
        t.join().unwrap();
    }
    assert!(r.segments_compacted > 0);
    assert_readable(&store, &live);
}

#[test]
fn an_interrupted_compaction_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_segments(dir.path());
    let keep = raw(2, 40_000);
    {
        let store = ChunkStore::open_with(cfg.clone()).unwrap();
        let gone = raw(1, 40_000);
        store.put_batch(std::slice::from_ref(&gone)).unwrap();
        store.put_batch(std::slice::from_ref(&keep)).unwrap();
        assert_eq!(packs(dir.path()).len(), 2);
        store.remove(&[gone.id]).unwrap();
        // The state right after "mark retired, flush", before the file is deleted.
        let mut meta = store.lock_writer().unwrap().metas[&1];
        meta.retired = true;
        store
            .index()
            .unwrap()
            .apply(&crate::index::IndexUpdate {
                segments: vec![(1, Some(meta))],
                ..Default::default()
            })
            .unwrap();
    }
    let store = ChunkStore::open_with(cfg).unwrap();
    assert_eq!(store.recovery().finished_compactions, 1);
    assert_eq!(packs(dir.path()).len(), 1);
    assert_readable(&store, &[keep]);
    assert_eq!(store.stats().segments, 1);
}

#[test]
fn a_missing_pack_file_drops_its_chunks_but_not_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_segments(dir.path());
    let (a, b) = (raw(1, 40_000), raw(2, 40_000));
    {
        let store = ChunkStore::open_with(cfg.clone()).unwrap();
        store.put_batch(&[a.clone(), b.clone()]).unwrap();
    }
    fs::remove_file(&packs(dir.path())[0]).unwrap();
    let store = ChunkStore::open_with(cfg).unwrap();
    let r = store.recovery();
    assert_eq!((r.lost_segments, r.lost_chunks), (1, 1), "{r:?}");
    assert!(!store.contains(&a.id).unwrap());
    assert_readable(&store, &[b]);
    // The lost chunk can be stored again (repair from a replica).
    assert_eq!(store.put_batch(&[a]).unwrap().stored, 1);
}

#[test]
fn a_torn_new_segment_file_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let a = raw(1, 1000);
    {
        let store = ChunkStore::open(dir.path()).unwrap();
        store.put_batch(std::slice::from_ref(&a)).unwrap();
    }
    // A crash right after creating segment 2: its header never reached the disk.
    let torn = dir.path().join("packs").join("00000002.pack");
    fs::write(&torn, [0u8; 4000]).unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    assert_eq!(store.recovery().torn_segments, 1);
    assert!(!torn.exists());
    assert_readable(&store, &[a]);
}

#[test]
fn damage_in_the_middle_of_a_pack_is_not_mistaken_for_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let chunks: Vec<_> = (0..5).map(|i| raw(i, 3000)).collect();
    {
        let store = ChunkStore::open(dir.path()).unwrap();
        store.put_batch(&chunks).unwrap();
        let loc = store.index().unwrap().get(&chunks[1].id).unwrap().unwrap();
        flip_byte(&packs(dir.path())[0], loc.offset + 60);
    }
    // Force a full rescan: a torn-tail rule would cut chunks 1..5 off.
    fs::remove_dir_all(dir.path().join("index")).unwrap();
    let pack = packs(dir.path()).remove(0);
    let len = file_len(&pack);
    let store = ChunkStore::open(dir.path()).unwrap();
    let r = store.recovery();
    assert_eq!(r.truncated_bytes, 0, "{r:?}");
    assert_eq!(r.skipped_bytes, record_bytes(&chunks[1]).len() as u64);
    assert_eq!(file_len(&pack), len);
    let others: Vec<_> = chunks
        .iter()
        .filter(|c| c.id != chunks[1].id)
        .cloned()
        .collect();
    assert_readable(&store, &others);
    assert!(!store.contains(&chunks[1].id).unwrap());
    assert_eq!(store.stats().dead_bytes, r.skipped_bytes);
}

#[test]
fn a_second_open_of_the_same_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = ChunkStore::open(dir.path()).unwrap();
    let err = ChunkStore::open(dir.path()).err().unwrap();
    assert!(err.to_string().contains("is locked"), "{err}");
}

#[test]
fn for_each_id_visits_every_chunk_and_stops_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let chunks: Vec<_> = (0..10).map(|i| raw(i, 100)).collect();
    store.put_batch(&chunks).unwrap();
    let mut seen = HashSet::new();
    store.for_each_id(|id| seen.insert(id)).unwrap();
    assert_eq!(seen, chunks.iter().map(|c| c.id).collect());
    let mut n = 0;
    store
        .for_each_id(|_| {
            n += 1;
            n < 3
        })
        .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn bad_configurations_are_refused_with_the_field_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path());
    assert_eq!(cfg.segment_max_bytes, 128 * 1024 * 1024);
    cfg.segment_max_bytes = 10;
    let err = ChunkStore::open_with(cfg).err().unwrap();
    assert!(err.to_string().contains("segment_max_bytes"), "{err}");
}

#[test]
fn the_store_is_shareable_between_threads() {
    fn check<T: Send + Sync>() {}
    check::<ChunkStore>();
}

/// Fills a real 2 MiB tmpfs until the kernel says ENOSPC. Needs root (to mount) and fails
/// without it.
#[test]
fn a_full_disk_fails_the_batch_and_keeps_stored_chunks_intact() {
    let mnt = TmpfsMount::new("2m");
    let dir = mnt.path.join("store");
    // Space an operator frees at the end, so the index can reopen.
    let ballast = mnt.path.join("ballast");
    fs::write(&ballast, vec![1u8; 640 * 1024]).unwrap();
    let cfg = StoreConfig::new(&dir);
    let store = ChunkStore::open_with(cfg.clone()).unwrap();
    // Without the reserve, the packs run into the real end of the file system.
    store.set_space_reserve(Some(0));
    let (stored, err, failed) = fill(&store);
    assert!(
        matches!(&err, StoreError::DiskFull { path, .. }
            if path.extension().is_some_and(|x| x == "pack")),
        "{err:?}"
    );
    assert!(err.to_string().contains("no space left on device"), "{err}");
    for c in &failed {
        assert!(!store.contains(&c.id).unwrap());
    }
    // The failed batch left nothing behind: the packs hold exactly the stored records.
    let s = store.stats();
    let on_disk = packs_size(&dir) - FILE_HEADER_LEN * packs(&dir).len() as u64;
    assert_eq!(on_disk, s.stored_bytes);
    assert_eq!(s.chunks, stored.len() as u64);
    assert_readable(&store, &stored);

    // Compaction needs room for its copies: on a full disk it either fits or fails cleanly,
    // and loses nothing either way.
    let (gone, survivors) = stored.split_at(stored.len() / 2);
    store
        .remove(&gone.iter().map(|c| c.id).collect::<Vec<_>>())
        .unwrap();
    match store.compact(0.1) {
        Ok(_) | Err(StoreError::DiskFull { .. }) => {}
        Err(e) => panic!("compaction on a full disk: {e}"),
    }
    assert_readable(&store, survivors);
    // The space the failed batch had taken was given back: a small chunk fits.
    let one = raw(9999, 1000);
    store.put_batch(std::slice::from_ref(&one)).unwrap();
    drop(store);

    fs::remove_file(&ballast).unwrap();
    let store = ChunkStore::open_with(cfg).unwrap();
    assert!(store.recovery().is_clean(), "{:?}", store.recovery());
    assert_readable(&store, &[survivors.to_vec(), vec![one]].concat());
}

/// With the default space reserve, puts stop short of the end of the file system, so the
/// index can still reopen on the full disk (sled needs free space to open).
#[test]
fn the_space_reserve_keeps_a_full_store_able_to_reopen() {
    let mnt = TmpfsMount::new("4m");
    let dir = mnt.path.join("store");
    let store = ChunkStore::open(&dir).unwrap();
    let (stored, err, _) = fill(&store);
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");
    assert!(stored.len() > 10);
    drop(store);

    let store = ChunkStore::open(&dir).unwrap();
    assert!(store.recovery().is_clean(), "{:?}", store.recovery());
    assert_readable(&store, &stored);
}

/// sled keeps the first I/O error it meets and answers every later call with it: a disk that
/// something else filled up while sled wrote its log would leave the store broken until a
/// restart. `heal` reopens the index in place once space is back, nothing stored is lost,
/// and the store takes writes again. Needs root (it mounts a tmpfs).
#[test]
fn an_index_broken_by_a_full_disk_heals_without_a_restart() {
    let mnt = TmpfsMount::new("8m");
    let dir = mnt.path.join("store");
    let store = ChunkStore::open(&dir).unwrap();
    assert!(
        store.heal().unwrap().is_none(),
        "a healthy index is left alone"
    );
    let stored: Vec<_> = (0..400).map(|i| raw(i, 1000)).collect();
    store.put_batch(&stored).unwrap();
    store.flush().unwrap();

    // Another process takes the last byte; then sled has to write: removals, each flushed,
    // until sled's log needs a page the file system no longer has.
    let ballast = mnt.path.join("ballast");
    fill_to_the_last_byte(&ballast);
    let mut removed = 0;
    let err = loop {
        assert!(removed < 200, "sled never ran out of space");
        // The removal itself may be the write that meets the full disk, or the flush after.
        let r = store
            .remove(&[stored[removed].id])
            .and_then(|_| store.flush());
        removed += 1;
        if let Err(e) = r {
            break e;
        }
    };
    assert!(err.to_string().contains("No space left"), "{err}");
    assert!(store.index_failed());
    let kept = &stored[removed..];

    // The handle is broken for good: with space back, it still fails every write.
    fs::remove_file(&ballast).unwrap();
    let again = store.flush().unwrap_err();
    assert!(again.to_string().contains("No space left"), "{again}");
    let put = store.put_batch(&[raw(1000, 1000)]).unwrap_err();
    assert!(put.to_string().contains("No space left"), "{put}");

    // A reopen while the disk is full again may fail: calls then say why, until one works.
    fill_to_the_last_byte(&ballast);
    if let Err(e) = store.heal() {
        assert!(store.index_failed(), "{e}");
        let closed = store.contains(&kept[0].id).unwrap_err();
        assert!(
            closed.to_string().contains("could not be reopened"),
            "{closed}"
        );
    }
    fs::remove_file(&ballast).unwrap();
    if store.index_failed() {
        store
            .heal()
            .unwrap()
            .expect("the failed index was reopened");
    }
    assert!(!store.index_failed());
    assert_readable(&store, kept);
    let more = vec![raw(500, 20_000), raw(501, 20_000)];
    assert_eq!(store.put_batch(&more).unwrap().stored, 2);
    assert_readable(&store, &more);
    drop(store);

    let store = ChunkStore::open(&dir).unwrap();
    assert!(store.recovery().is_clean(), "{:?}", store.recovery());
    assert_readable(&store, &[kept.to_vec(), more].concat());
}

/// Writes `path` until the file system has not one byte left.
fn fill_to_the_last_byte(path: &Path) {
    let mut f = fs::File::create(path).unwrap();
    for size in [64 * 1024, 4096, 1] {
        let buf = vec![7u8; size];
        while f.write_all(&buf).is_ok() {}
    }
    let _ = f.sync_all();
}

/// Puts batches of two 40 KB chunks until one fails; returns what was stored, the error and
/// the failed batch.
fn fill(store: &ChunkStore) -> (Vec<EncodedChunk>, StoreError, Vec<EncodedChunk>) {
    let mut stored = Vec::new();
    for i in 0..1000 {
        let batch = vec![raw(i * 2, 40_000), raw(i * 2 + 1, 40_000)];
        match store.put_batch(&batch) {
            Ok(_) => stored.extend(batch),
            Err(e) => return (stored, e, batch),
        }
    }
    panic!("the file system never filled up");
}

/// A tmpfs mounted on a temp dir for the life of the value.
struct TmpfsMount {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TmpfsMount {
    /// Mounts it; panics "needs root" when not root (no test passes by skipping itself).
    fn new(size: &str) -> TmpfsMount {
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to the process's effective user.
        assert_eq!(
            fs::metadata("/proc/self").map(|m| m.uid()).ok(),
            Some(0),
            "needs root: the disk-full tests mount a tmpfs"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        fs::create_dir(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status();
        assert!(
            matches!(&status, Ok(s) if s.success()),
            "cannot mount a tmpfs: {status:?}"
        );
        TmpfsMount { path, _dir: dir }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}
