//! The manifest: a versioned, content-addressed description of one backup's tree.
//!
//! # Format (version 1)
//! A manifest is a stream of [`Entry`] records in walk order (see [`crate::path::walk_cmp`]).
//! The stream is cut into *manifest chunks* at entry boundaries; each manifest chunk is
//! `MANIFEST_CHUNK_MAGIC`, then records of `u32 length (LE) + bincode(Entry)`. Cuts are
//! content-defined (a hash of the entry decides, between a minimum and a maximum size), so an
//! unchanged stretch of a tree produces the same manifest chunks in the next backup and
//! deduplicates. Manifest chunks are stored like any other chunk.
//!
//! The [`ManifestRoot`] lists the manifest chunks in order plus totals; it is itself stored as
//! a chunk, and its id is what the catalog records as the backup's manifest.
//!
//! Nothing here needs the whole manifest in memory: writers emit chunks as they fill, readers
//! decode one chunk at a time. A million-file tree costs one chunk of entries at a time plus
//! the root (one 40-byte reference per ~1 MiB of entries).

use serde::{Deserialize, Serialize};

use crate::id::ChunkId;
use crate::path;

/// Magic at the start of every manifest chunk.
pub const MANIFEST_CHUNK_MAGIC: &[u8; 8] = b"CAIRNMC1";
/// Magic at the start of a manifest root.
pub const MANIFEST_ROOT_MAGIC: &[u8; 8] = b"CAIRNMR1";
/// Current manifest format version.
pub const MANIFEST_VERSION: u32 = 1;

/// Smallest manifest chunk before a content-defined cut may happen.
const MIN_CHUNK: usize = 256 * 1024;
/// Largest manifest chunk.
const MAX_CHUNK: usize = 4 * 1024 * 1024;
/// One entry in this many ends a chunk (after the minimum).
const CUT_MASK: u32 = 1023;

/// The kind of a tree entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A further name of a file seen earlier in the walk; `link_target` is the first name.
    /// It carries the same chunk list so that it can be restored alone.
    Hardlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// A reference to one chunk of a file: its id and its uncompressed length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// One file-system object of the tree, with everything needed to recreate it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path, raw bytes, `/`-separated; the tree's root is the empty path.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub atime_ns: i64,
    /// Change time and inode at backup time: used only to detect changes next time.
    pub ctime_ns: i64,
    pub ino: u64,
    /// Logical size (for files, the apparent size including holes).
    pub size: u64,
    /// Content chunks, in order; they cover the file's data regions (holes excluded).
    pub chunks: Vec<ChunkRef>,
    /// Sparse holes as (offset, length), sorted, non-overlapping.
    pub holes: Vec<(u64, u64)>,
    /// Symlink target, or for a hardlink the path of the first name.
    pub link_target: Vec<u8>,
    /// Device number for character and block devices.
    pub rdev: u64,
    /// Extended attributes (POSIX ACLs and file capabilities live here), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// An entry with the given path and kind and every other field empty.
    pub fn new(path: Vec<u8>, kind: EntryKind) -> Entry {
        Entry {
            path,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            atime_ns: 0,
            ctime_ns: 0,
            ino: 0,
            size: 0,
            chunks: Vec::new(),
            holes: Vec::new(),
            link_target: Vec::new(),
            rdev: 0,
            xattrs: Vec::new(),
        }
    }

    /// True for entries whose content lives in chunks.
    pub fn has_content(&self) -> bool {
        matches!(self.kind, EntryKind::File | EntryKind::Hardlink)
    }

    /// Bytes of data (size minus holes).
    pub fn data_len(&self) -> u64 {
        self.chunks.iter().map(|c| c.len as u64).sum()
    }

    /// Checks the entry's own consistency: a safe path, chunks that add up, sane holes.
    pub fn validate(&self) -> Result<(), ManifestError> {
        path::validate(&self.path).map_err(ManifestError::Path)?;
        if self.path.is_empty() && self.kind != EntryKind::Dir {
            return Err(ManifestError::Invalid(
                "the root entry must be a directory".into(),
            ));
        }
        let holes: u64 = self.holes.iter().map(|h| h.1).sum();
        if self.has_content() && self.data_len() + holes != self.size {
            return Err(ManifestError::Invalid(format!(
                "{}: chunks ({}) and holes ({holes}) do not add up to size {}",
                path::display(&self.path),
                self.data_len(),
                self.size
            )));
        }
        let mut end = 0u64;
        for &(off, len) in &self.holes {
            if off < end || off.checked_add(len).is_none_or(|e| e > self.size) {
                return Err(ManifestError::Invalid(format!(
                    "{}: holes overlap or run past the end",
                    path::display(&self.path)
                )));
            }
            end = off + len;
        }
        if self.kind == EntryKind::Hardlink {
            path::validate(&self.link_target).map_err(ManifestError::Path)?;
        }
        Ok(())
    }
}

/// The top of a manifest: its chunks and totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ManifestRoot {
    pub version: u32,
    pub chunks: Vec<ChunkRef>,
    pub entries: u64,
    pub files: u64,
    pub logical_size: u64,
    /// Distinct content chunks referenced (not counting manifest chunks).
    pub content_chunks: u64,
}

impl ManifestRoot {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MANIFEST_ROOT_MAGIC.to_vec();
        out.extend(bincode::serialize(self).expect("serializing to memory cannot fail"));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ManifestRoot, ManifestError> {
        let body = bytes
            .strip_prefix(MANIFEST_ROOT_MAGIC)
            .ok_or_else(|| ManifestError::Invalid("not a manifest root (bad magic)".into()))?;
        let root: ManifestRoot = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .allow_trailing_bytes()
            .with_limit(1 << 30)
            .deserialize(body)
            .map_err(|e| ManifestError::Invalid(format!("manifest root: {e}")))?;
        if root.version != MANIFEST_VERSION {
            return Err(ManifestError::Version(root.version));
        }
        Ok(root)
    }
}

use bincode::Options;

/// Errors reading a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is damaged: {0}")]
    Invalid(String),
    #[error("manifest format version {0} is not supported by this build")]
    Version(u32),
    #[error("unsafe path in manifest: {0}")]
    Path(path::PathError),
    #[error("manifest entries are out of order at {0:?}")]
    Order(String),
}

/// Builds manifest chunks from entries given in walk order.
pub struct ManifestWriter {
    buf: Vec<u8>,
    root: ManifestRoot,
    last_path: Option<Vec<u8>>,
}

impl Default for ManifestWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ManifestWriter {
    pub fn new() -> ManifestWriter {
        ManifestWriter {
            buf: MANIFEST_CHUNK_MAGIC.to_vec(),
            root: ManifestRoot {
                version: MANIFEST_VERSION,
                ..Default::default()
            },
            last_path: None,
        }
    }

    /// Appends an entry. Returns a finished manifest chunk when this entry closed one; the
    /// caller stores it and reports its id back with [`ManifestWriter::chunk_stored`].
    pub fn push(&mut self, entry: &Entry) -> Result<Option<Vec<u8>>, ManifestError> {
        if let Some(last) = &self.last_path {
            if path::walk_cmp(last, &entry.path) != std::cmp::Ordering::Less {
                return Err(ManifestError::Order(path::display(&entry.path)));
            }
        }
        self.last_path = Some(entry.path.clone());
        let rec = encode_entry(entry);
        self.buf
            .extend_from_slice(&(rec.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&rec);
        self.root.entries += 1;
        if entry.has_content() {
            self.root.files += 1;
            self.root.logical_size += entry.size;
        }
        let cut_here = {
            let h = blake3::hash(&rec);
            let v = u32::from_le_bytes(h.as_bytes()[..4].try_into().expect("4 bytes"));
            v & CUT_MASK == 0
        };
        if self.buf.len() >= MAX_CHUNK || (self.buf.len() >= MIN_CHUNK && cut_here) {
            return Ok(Some(self.take()));
        }
        Ok(None)
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.buf, MANIFEST_CHUNK_MAGIC.to_vec())
    }

    /// Records the id of a manifest chunk returned by `push` or `finish`, in order.
    pub fn chunk_stored(&mut self, id: ChunkId, len: usize) {
        self.root.chunks.push(ChunkRef {
            id,
            len: len as u32,
        });
    }

    /// Sets the number of distinct content chunks (counted by the caller).
    pub fn set_content_chunks(&mut self, n: u64) {
        self.root.content_chunks = n;
    }

    /// Returns the last, partial manifest chunk, if any entries are pending.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        if self.buf.len() > MANIFEST_CHUNK_MAGIC.len() {
            Some(self.take())
        } else {
            None
        }
    }

    /// The root, once every chunk has been reported with `chunk_stored`.
    pub fn root(&self) -> &ManifestRoot {
        &self.root
    }
}

/// Serializes one entry as a manifest record body (without its length prefix).
pub fn encode_entry(e: &Entry) -> Vec<u8> {
    bincode::serialize(e).expect("serializing to memory cannot fail")
}

/// Decodes one manifest chunk into its entries, validating each.
pub fn decode_chunk(bytes: &[u8]) -> Result<Vec<Entry>, ManifestError> {
    let mut rest = bytes
        .strip_prefix(MANIFEST_CHUNK_MAGIC)
        .ok_or_else(|| ManifestError::Invalid("not a manifest chunk (bad magic)".into()))?;
    let mut out = Vec::new();
    let opts = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
        .with_limit(64 << 20);
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(ManifestError::Invalid("truncated record header".into()));
        }
        let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        rest = &rest[4..];
        if rest.len() < n {
            return Err(ManifestError::Invalid("truncated record".into()));
        }
        let e: Entry = opts
            .deserialize(&rest[..n])
            .map_err(|e| ManifestError::Invalid(format!("record: {e}")))?;
        e.validate()?;
        out.push(e);
        rest = &rest[n..];
    }
    Ok(out)
}

/// Checks that entries decoded from consecutive chunks stay in walk order.
#[derive(Default)]
pub struct OrderCheck {
    last: Option<Vec<u8>>,
}

impl OrderCheck {
    pub fn check(&mut self, e: &Entry) -> Result<(), ManifestError> {
        if let Some(last) = &self.last {
            if path::walk_cmp(last, &e.path) != std::cmp::Ordering::Less {
                return Err(ManifestError::Order(path::display(&e.path)));
            }
        }
        self.last = Some(e.path.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str, size: u64) -> Entry {
        let mut e = Entry::new(p.as_bytes().to_vec(), EntryKind::File);
        e.size = size;
        e.chunks = vec![ChunkRef {
            id: ChunkId::of(p.as_bytes()),
            len: size as u32,
        }];
        e
    }

    fn write_all(entries: &[Entry]) -> (Vec<Vec<u8>>, ManifestRoot) {
        let mut w = ManifestWriter::new();
        let mut chunks = Vec::new();
        for e in entries {
            if let Some(c) = w.push(e).unwrap() {
                w.chunk_stored(ChunkId::of(&c), c.len());
                chunks.push(c);
            }
        }
        if let Some(c) = w.finish() {
            w.chunk_stored(ChunkId::of(&c), c.len());
            chunks.push(c);
        }
        (chunks, w.root().clone())
    }

    #[test]
    fn round_trips_entries_with_raw_names() {
        let mut entries = vec![Entry::new(vec![], EntryKind::Dir)];
        let mut odd = file("x", 3);
        odd.path = b"caf\xe9".to_vec();
        odd.xattrs = vec![(b"user.a".to_vec(), b"\x00\x01".to_vec())];
        entries.push(file("a", 10));
        entries.push(odd);
        let (chunks, root) = write_all(&entries);
        let back: Vec<Entry> = chunks
            .iter()
            .flat_map(|c| decode_chunk(c).unwrap())
            .collect();
        assert_eq!(back, entries);
        assert_eq!(root.entries, 3);
        assert_eq!(root.files, 2);
        let r2 = ManifestRoot::decode(&root.encode()).unwrap();
        assert_eq!(r2, root);
    }

    #[test]
    fn out_of_order_entries_are_refused() {
        let mut w = ManifestWriter::new();
        w.push(&file("b", 1)).unwrap();
        assert!(w.push(&file("a", 1)).is_err());
        assert!(w.push(&file("b", 1)).is_err());
    }

    #[test]
    fn big_manifests_cut_into_chunks_that_survive_an_early_change() {
        let entries: Vec<Entry> = (0..40_000)
            .map(|i| file(&format!("d/f{i:08}"), 1))
            .collect();
        let (a, _) = write_all(&entries);
        assert!(a.len() > 2, "expected several chunks, got {}", a.len());
        assert!(a.iter().all(|c| c.len() <= MAX_CHUNK + 1024));
        let mut changed = entries.clone();
        changed[10].size = 2;
        changed[10].chunks[0].len = 2;
        let (b, _) = write_all(&changed);
        let same = b.iter().filter(|c| a.contains(c)).count();
        assert!(
            same >= a.len() - 2,
            "only {same} of {} chunks reused",
            a.len()
        );
    }

    #[test]
    fn unsafe_paths_in_a_manifest_are_refused_on_decode() {
        for bad in ["../x", "/etc/passwd", "a/../../b"] {
            let mut chunk = MANIFEST_CHUNK_MAGIC.to_vec();
            let rec = bincode::serialize(&file(bad, 1)).unwrap();
            chunk.extend((rec.len() as u32).to_le_bytes());
            chunk.extend(rec);
            assert!(
                matches!(decode_chunk(&chunk), Err(ManifestError::Path(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_chunk(b"nonsense").is_err());
        let mut c = MANIFEST_CHUNK_MAGIC.to_vec();
        c.extend([255, 255, 255, 255, 1, 2]);
        assert!(decode_chunk(&c).is_err());
        assert!(ManifestRoot::decode(b"CAIRNMR1\xff").is_err());
    }

    #[test]
    fn sizes_must_add_up() {
        let mut e = file("a", 10);
        e.size = 11;
        assert!(e.validate().is_err());
        e.holes = vec![(10, 1)];
        assert!(e.validate().is_ok());
        e.holes = vec![(10, 5)];
        assert!(e.validate().is_err());
    }
}
