//! The node-local chunk store: append-only pack segments plus a sled index.
//!
//! Chunk bodies live in pack files; sled holds only the map from chunk id to location and a
//! few counters per pack file. Every read re-hashes the content before it is served.
//!
//! # Files
//!
//! ```text
//! DIR/packs/0000002a.pack   segment 42 (ids are 8 hex digits, increasing, never reused
//!                           while their file or index entry exists)
//! DIR/index/                sled database (it holds the lock that keeps a second process out)
//! ```
//!
//! A pack file starts with a 16-byte header — magic `CAIRNPK\0`, format version u32 (1),
//! segment id u32 — followed by records, each a 49-byte header and a payload
//! (little-endian):
//!
//! ```text
//! magic "CKR1" | chunk id [32] | codec u8 | raw_len u32 | stored_len u32 | crc32 u32 | payload
//! ```
//!
//! The CRC (crc32fast) covers the header fields before it and the payload: it finds torn or
//! garbled records during recovery. The BLAKE3 re-hash on every read (via
//! `cairn_chunker::decode`) is what guarantees a reader never gets wrong bytes. Lengths are
//! checked against the 16 MiB limit before anything is allocated.
//!
//! The sled index has three trees:
//! * `chunks`: chunk id → segment u32, offset u64, stored_len u32, raw_len u32, codec u8,
//!   plus one marker key that says the tree is complete;
//! * `segments`: segment id → watermark u64 (every record before it is reflected in the
//!   index), live records, live bytes, live content bytes, and a "retired" flag;
//! * the default tree: the index format version.
//!
//! # Write order
//!
//! `put_batch`: verify every chunk → append the records to the active segment →
//! `fdatasync` the segment (and the `packs` directory when a segment file was created) →
//! one sled transaction with the index entries, the new watermark and the counters →
//! return. sled is not flushed on this path: the pack data is already durable, and recovery
//! re-indexes everything past the last durable watermark, so a crash loses no acknowledged
//! chunk. A write failure (full disk, I/O error) cuts the segment back to its length before
//! the batch and leaves the index untouched. The segment rolls over when the next record
//! would make it exceed `segment_max_bytes`.
//!
//! Concurrent `put_batch` calls verify their chunks on their own threads, then queue; the
//! caller that gets the writer lock commits every queued batch with one sync and one index
//! transaction (group commit).
//!
//! `remove` only deletes index entries and lowers counters; the bytes become dead space.
//!
//! `replace` (a scrub's repair of a corrupt copy): verify the healthy copy → append and sync
//! it as `put_batch` does → re-point the index entry to it, in one transaction with the
//! counters, only if the entry still points at the copy seen before (the old record becomes
//! dead space). The entry is never absent meanwhile: a crash leaves the old copy indexed,
//! and recovery never re-indexes an id the index already holds.
//!
//! `compact`: copy the live records of a mostly-dead segment to the active one (synced) →
//! re-point each index entry if it still points at the old place → mark the old segment
//! retired → **flush sled** → delete the file → sync the directory → forget the segment.
//! The flush makes sure the index can never point into a deleted file.
//!
//! # A broken index
//!
//! sled keeps the first I/O error it meets (a disk that another process filled to the last
//! byte while sled wrote its log) and answers every later call with it, even once space is
//! back. The store marks the index failed on such an error, and [`ChunkStore::heal`] reopens
//! it in place exactly as a restart would: close the handle, open the index from disk, run
//! recovery. That is safe for the same reason a crash is: pack data is synced before any
//! index entry points at it, so recovery re-indexes whatever the kept prefix of the index
//! lacks. The node calls `heal` every few seconds while the index is failed.
//!
//! `flush`, `close` and `Drop` call sled's blocking `flush()`, never `flush_async` (which can
//! deadlock in sled 0.34.7).
//!
//! # A full disk
//!
//! sled needs free space to open (it pads its current 512 KiB log segment and writes a
//! snapshot), so a store that filled its disk to the last byte could not restart. Appends
//! therefore leave a reserve free — 1/64 of the file system, between 1 MiB and 256 MiB
//! ([`ChunkStore::set_space_reserve`]) — and fail with [`StoreError::DiskFull`] before
//! touching it; compaction, which frees space in the end, may use half of it. When something
//! else fills the disk, the kernel's ENOSPC takes the rollback path above. Either way, the
//! chunks already stored stay readable.
//!
//! # Recovery (at open)
//!
//! If the `chunks` tree lacks its completeness marker (the index was deleted, the tree
//! dropped, or a rebuild interrupted), both trees are cleared and rebuilt from the pack
//! files. Segments marked retired have their file deleted. Every pack file is then scanned
//! from its watermark (from the start when it has none) to its end: each valid record
//! (magic, sane lengths, fully present, CRC) is indexed if its id is missing; damaged bytes
//! followed by a valid record are skipped as dead space; a tail with no valid record is a
//! torn write and is cut off, and the file synced. A new pack file whose header never
//! reached the disk is removed; one the index lists but the disk lacks has its entries
//! dropped (logged as an error: the cluster's repair re-replicates those chunks). Everything
//! is logged with `tracing` and summarised in [`RecoveryReport`].
//!
//! Known limit: a rebuild from the pack files cannot know which chunks had been removed, so
//! they come back (intact) until the next garbage collection removes them again.
//!
//! # What may run concurrently
//!
//! | operation            | runs beside                          | serialised by          |
//! |----------------------|--------------------------------------|------------------------|
//! | `get`, `contains`, `missing`, `for_each_id`, `stats`, `verify_all` | everything | nothing (positional reads on shared handles) |
//! | `put_batch`          | reads; other puts join one group commit | the writer lock     |
//! | `remove`             | reads                                | the writer lock        |
//! | `replace`            | reads; other puts join one group commit | the writer lock     |
//! | `compact`            | reads, puts, removes (between rounds) | its own lock, then the writer lock per round |
//! | `open`               | nothing: one store per directory     | sled's file lock       |
//!
//! A read racing a compaction may look up the old location after the old file is gone; it
//! then looks the chunk up again and finds the new one.

mod appender;
mod compact;
mod error;
mod format;
mod index;
mod pack;
mod recovery;
mod store;
mod write;

#[cfg(test)]
mod tests;

pub use error::StoreError;
pub use store::{
    ChunkStore, CompactReport, PutStats, RecoveryReport, ScrubReport, StoreConfig, StoreStats,
};
