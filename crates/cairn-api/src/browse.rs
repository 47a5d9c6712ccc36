//! The file browser of a backup: its tree, one directory page at a time, one file's content,
//! or a subtree as a tar archive, all read from the stored manifest and chunks.
//!
//! # Invariants
//! - **Bounded memory, whatever the tree.** A manifest is read one manifest chunk at a time
//!   ([`ManifestEntries`]); nothing here holds a whole manifest, a whole file or a whole
//!   archive. A listing keeps one page of [`Node`]s; a download holds two batches of at most
//!   [`BATCH`] content chunks (the one being sent and the next, fetched meanwhile) and a few
//!   [`BLOCK`]-sized blocks waiting in a channel; a tar is written by a blocking thread into
//!   that same bounded channel.
//! - **Stop early.** A manifest is in walk order ([`walk_cmp`]): a directory's entry comes
//!   before its subtree, its subtree is contiguous, and its children come in byte order of
//!   their names. A lookup stops at the first entry past the path it looks for; a listing stops
//!   at the first entry past the directory's subtree or once it knows the next page's first
//!   name. (Manifest chunks before the path must still be fetched: the root does not say which
//!   paths a chunk holds.)
//! - **Every byte verified.** Content chunks are fetched through the client, decoded and
//!   re-hashed ([`cairn_chunker::decode`]), and their length checked against the manifest's
//!   [`ChunkRef`]; holes become zeros; chunks and holes must add up to the entry's size. A
//!   chunk that no node serves intact ends the stream with an error (code `Corrupt` or
//!   `NotFound`), never with other bytes.
//! - **Paths are checked before anything is read.** A path is relative, `/`-separated, the
//!   empty path is the root (one trailing `/` is tolerated); an absolute path or one with
//!   `..`, `.` or empty components is refused as `InvalidArgument`
//!   ([`cairn_core::path::validate`]). A path the backup does not hold is `PathNotFound`; a
//!   directory asked for as a file, or anything else listed as a directory, is
//!   `InvalidArgument`.
//! - **The cluster decides who may read.** Every read goes through the caller's client (a
//!   gateway passes one already [`Client::acting_for`] its user) and names the backup it is for
//!   ([`Client::reading`]): the catalog lets operators and admins read backup content, not
//!   viewers, and an agent only its own host's backups.
//!
//! # Names
//! [`Node::path`] and [`Node::name`] are the raw names made UTF-8 (lossy). Pagination compares
//! the raw name bytes with `after`, so a directory whose names are all UTF-8 pages exactly; a
//! page boundary on a name that is not UTF-8 may repeat or skip entries around it.
//!
//! # The tar archive
//! GNU format (long names and link targets as GNU extensions), with paths relative to the
//! backup's root, as `tar -C ROOT -cf - PATH` would write them: the directory asked for comes
//! first (the root itself has no entry), then its subtree in walk order. Directories, regular
//! files (holes written as zeros), symlinks, fifos and devices keep their mode, owner and
//! mtime (seconds). A hardlink whose first name is inside the archive is a link entry; one
//! whose first name is outside it carries its content as a regular file. Sockets cannot be
//! archived and are left out.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{Read, Write};

use cairn_chunker::ChunkError;
use cairn_core::manifest::{EntryKind, ManifestError};
use cairn_core::path::{self as cpath, is_within, walk_cmp};
use cairn_core::{BackupId, ChunkRef, Entry, ErrorCode};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::error::Error;
use crate::manifest::{fetch_root, ManifestEntries};

/// Bytes per block of a download or an archive stream (at most).
pub const BLOCK: usize = 256 * 1024;
/// Content chunks fetched in one call (the client holds a batch in memory: at most 4 × 4 MiB).
pub const BATCH: usize = 4;
/// Blocks waiting between the producer and the reader of a stream.
const QUEUED_BLOCKS: usize = 4;

/// One object of a backup's tree, as a listing shows it (no chunk list).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// Relative to the backup root, `/`-separated, `""` = root (lossy UTF-8).
    pub path: String,
    /// Last component (`""` for the root).
    pub name: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    /// Symlinks: the target; hardlinks: the first name, relative to the backup root.
    pub link_target: Option<String>,
}

impl Node {
    /// The listing's view of a manifest entry.
    pub fn of(e: &Entry) -> Node {
        let link = matches!(e.kind, EntryKind::Symlink | EntryKind::Hardlink);
        Node {
            path: cpath::display(&e.path),
            name: cpath::display(name_of(&e.path)),
            kind: e.kind,
            size: e.size,
            mode: e.mode & 0o7777,
            uid: e.uid,
            gid: e.gid,
            mtime_ns: e.mtime_ns,
            link_target: link.then(|| cpath::display(&e.link_target)),
        }
    }
}

/// One page of a directory's children, sorted by name.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Listing {
    pub dir: Node,
    pub entries: Vec<Node>,
    /// The name to pass as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Lists one page of the directory at `path`: at most `limit` children whose names sort after
/// `after` (all of them without it), by name.
pub async fn list(
    client: &Client,
    backup: &BackupId,
    path: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Listing, Error> {
    let rel = parse_path(path)?;
    if limit == 0 {
        return Err(Error::Invalid(
            "a listing's limit must be at least 1".into(),
        ));
    }
    let (_, mut entries) = open(client, backup).await?;
    let mut lister = Lister::new(rel, after.map(|a| a.as_bytes().to_vec()), limit);
    while let Some(e) = entries.next().await {
        if lister.feed(&e?)? == Step::Done {
            break;
        }
    }
    lister.finish()
}

/// The object at `path`.
pub async fn stat(client: &Client, backup: &BackupId, path: &str) -> Result<Node, Error> {
    let rel = parse_path(path)?;
    let (_, mut entries) = open(client, backup).await?;
    Ok(Node::of(&find(&mut entries, &rel).await?))
}

/// A regular file's (or hardlink's) content, chunk by chunk, every chunk verified (decoded and
/// re-hashed), holes as zeros; the stream's total length equals `stat(..).size`. An error
/// ends the stream: a reader that got one has not got the file.
pub fn file_stream(
    client: Client,
    backup: BackupId,
    path: String,
) -> impl Stream<Item = Result<Vec<u8>, Error>> + Send + 'static {
    produced(move |tx| async move {
        let sent = async {
            let rel = parse_path(&path)?;
            let (reader, mut entries) = open(&client, &backup).await?;
            let entry = find(&mut entries, &rel).await?;
            drop(entries);
            if !entry.has_content() {
                return Err(not_a(&entry, "a file"));
            }
            let mut content = Content::new(reader, &entry);
            while let Some(block) = content.next_block().await? {
                if tx.send(Ok(block)).await.is_err() {
                    break; // The reader is gone.
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = sent {
            let _ = tx.send(Err(e)).await;
        }
    })
}

/// A ustar/GNU tar archive of the subtree at `path` (a directory), streamed.
pub fn tar_stream(
    client: Client,
    backup: BackupId,
    path: String,
) -> impl Stream<Item = Result<Vec<u8>, Error>> + Send + 'static {
    produced(move |tx| async move {
        let sent = async {
            let rel = parse_path(&path)?;
            let (reader, mut entries) = open(&client, &backup).await?;
            let dir = find(&mut entries, &rel).await?;
            if dir.kind != EntryKind::Dir {
                return Err(not_a(&dir, "a directory"));
            }
            let handle = tokio::runtime::Handle::current();
            let tx = tx.clone();
            tokio::task::spawn_blocking(move || {
                let source = ClusterFiles { handle, reader };
                let mut rest = std::iter::from_fn(|| entries.blocking_next());
                write_tar(ChannelWriter::new(tx), &source, &dir, &mut rest)
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
        }
        .await;
        if let Err(e) = sent {
            let _ = tx.send(Err(e)).await;
        }
    })
}

/// Parses a browser path: `""` is the root, `a/b` a path below it, one trailing `/` is
/// tolerated; absolute paths and `..`, `.` or empty components are refused.
pub fn parse_path(path: &str) -> Result<Vec<u8>, Error> {
    let trimmed = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let raw = trimmed.as_bytes();
    if raw.first() == Some(&b'/') {
        return Err(Error::Invalid(format!(
            "path {path:?} is absolute; paths are relative to the backup's root"
        )));
    }
    cpath::validate(raw).map_err(|e| Error::Invalid(format!("bad path: {e}")))?;
    Ok(raw.to_vec())
}

/// The last component of a relative path (`""` for the root).
fn name_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

fn not_found(path: &[u8]) -> Error {
    Error::Cluster {
        code: ErrorCode::PathNotFound,
        message: format!("the backup holds nothing at {:?}", cpath::display(path)),
    }
}

fn not_a(e: &Entry, what: &str) -> Error {
    Error::Invalid(format!(
        "{:?} is a {}, not {what}",
        if e.path.is_empty() {
            "/".to_string()
        } else {
            cpath::display(&e.path)
        },
        kind_name(e.kind)
    ))
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "directory",
        EntryKind::Symlink => "symlink",
        EntryKind::Hardlink => "hardlink",
        EntryKind::Fifo => "fifo",
        EntryKind::CharDevice => "character device",
        EntryKind::BlockDevice => "block device",
        EntryKind::Socket => "socket",
    }
}

/// Reads the backup's record and starts streaming its manifest; the client returned reads
/// chunks for that backup.
async fn open(client: &Client, backup: &BackupId) -> Result<(Client, ManifestEntries), Error> {
    let reader = client.reading(*backup);
    let record = reader.show(backup).await?;
    let root = fetch_root(&reader, record.manifest).await?;
    let entries = ManifestEntries::start(reader.clone(), &root);
    Ok((reader, entries))
}

/// Reads entries up to the one at `path`, stopping at the first entry past it.
async fn find(entries: &mut ManifestEntries, path: &[u8]) -> Result<Entry, Error> {
    while let Some(e) = entries.next().await {
        let e = e?;
        match walk_cmp(&e.path, path) {
            Ordering::Less => continue,
            Ordering::Equal => return Ok(e),
            Ordering::Greater => break,
        }
    }
    Err(not_found(path))
}

/// Whether a listing needs more entries.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    More,
    Done,
}

/// Builds one page of a directory from manifest entries given in walk order.
struct Lister {
    dir: Vec<u8>,
    after: Option<Vec<u8>>,
    limit: usize,
    found: Option<Node>,
    entries: Vec<Node>,
    next: Option<String>,
}

impl Lister {
    fn new(dir: Vec<u8>, after: Option<Vec<u8>>, limit: usize) -> Lister {
        Lister {
            dir,
            after,
            limit,
            found: None,
            entries: Vec::new(),
            next: None,
        }
    }

    /// Takes the next entry of the manifest.
    fn feed(&mut self, e: &Entry) -> Result<Step, Error> {
        match walk_cmp(&e.path, &self.dir) {
            Ordering::Less => return Ok(Step::More),
            Ordering::Equal => {
                if e.kind != EntryKind::Dir {
                    return Err(not_a(e, "a directory"));
                }
                self.found = Some(Node::of(e));
                return Ok(Step::More);
            }
            Ordering::Greater => {}
        }
        if self.found.is_none() || !is_within(&e.path, &self.dir) {
            return Ok(Step::Done); // Past the directory, or past its subtree.
        }
        if cpath::parent(&e.path) != self.dir.as_slice() {
            return Ok(Step::More); // Deeper in the subtree.
        }
        let name = name_of(&e.path);
        if self.after.as_deref().is_some_and(|a| name <= a) {
            return Ok(Step::More);
        }
        if self.entries.len() == self.limit {
            // One more child exists: the page ends at the last one taken.
            self.next = self.entries.last().map(|n| n.name.clone());
            return Ok(Step::Done);
        }
        self.entries.push(Node::of(e));
        Ok(Step::More)
    }

    fn finish(self) -> Result<Listing, Error> {
        let dir = self.found.ok_or_else(|| not_found(&self.dir))?;
        Ok(Listing {
            dir,
            entries: self.entries,
            next: self.next,
        })
    }
}

/// A part of a file's logical content: zeros of a hole, or a range of the current chunk.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Zeros(u64),
    Data(std::ops::Range<usize>),
}

/// Lays a file's data bytes (its chunks' content, in order) out between its holes.
struct Filler {
    holes: Vec<(u64, u64)>,
    next_hole: usize,
    pos: u64,
    size: u64,
}

impl Filler {
    fn new(size: u64, holes: &[(u64, u64)]) -> Filler {
        Filler {
            holes: holes.to_vec(),
            next_hole: 0,
            pos: 0,
            size,
        }
    }

    /// Holes that start where the content is now.
    fn holes_here(&mut self, out: &mut Vec<Piece>) {
        while let Some(&(off, len)) = self.holes.get(self.next_hole) {
            if off > self.pos {
                break;
            }
            if len > 0 {
                out.push(Piece::Zeros(len));
            }
            self.pos = off.max(self.pos) + len;
            self.next_hole += 1;
        }
    }

    /// The pieces for the next `n` data bytes, holes before and among them included.
    fn place(&mut self, n: usize) -> Result<Vec<Piece>, ManifestError> {
        let mut out = Vec::new();
        let mut start = 0usize;
        loop {
            self.holes_here(&mut out);
            if start == n {
                return Ok(out);
            }
            let end = self
                .holes
                .get(self.next_hole)
                .map_or(self.size, |h| h.0)
                .max(self.pos);
            let room = end - self.pos;
            if room == 0 {
                return Err(ManifestError::Invalid(
                    "a file's chunks run past its size".into(),
                ));
            }
            let take = room.min((n - start) as u64) as usize;
            out.push(Piece::Data(start..start + take));
            start += take;
            self.pos += take as u64;
        }
    }

    /// The trailing holes, once every chunk is placed.
    fn finish(&mut self) -> Result<Vec<Piece>, ManifestError> {
        let mut out = Vec::new();
        self.holes_here(&mut out);
        if self.pos != self.size || self.next_hole != self.holes.len() {
            return Err(ManifestError::Invalid(format!(
                "a file's chunks and holes cover {} bytes of its {}",
                self.pos, self.size
            )));
        }
        Ok(out)
    }
}

/// A batch of chunks as fetched and verified: each with the reference it was asked for.
type Fetched = Vec<(ChunkRef, bytes::Bytes)>;

/// Fetches one batch of chunks, each decoded and re-hashed by the client
/// ([`Client::get`]).
async fn fetch_batch(client: Client, batch: Vec<ChunkRef>) -> Result<Fetched, Error> {
    let ids: Vec<_> = batch.iter().map(|c| c.id).collect();
    let mut got = Box::pin(client.get(&ids).await?);
    let mut out = Vec::with_capacity(batch.len());
    for c in batch {
        match got.next().await {
            Some(enc) => out.push((c, enc?)),
            None => {
                return Err(Error::Cluster {
                    code: ErrorCode::NotFound,
                    message: format!("chunk {} was not delivered", c.id),
                })
            }
        }
    }
    Ok(out)
}

/// One file's logical content, fetched a batch of chunks at a time (the next batch in the
/// background) and verified.
struct Content {
    client: Client,
    chunks: std::vec::IntoIter<ChunkRef>,
    fetched: VecDeque<(ChunkRef, bytes::Bytes)>,
    /// The next batch, fetched in the background (at most one batch ahead).
    next_batch: Option<tokio::task::JoinHandle<Result<Fetched, Error>>>,
    started: bool,
    filler: Filler,
    current: bytes::Bytes,
    pieces: VecDeque<Piece>,
    finished: bool,
}

impl Content {
    fn new(client: Client, entry: &Entry) -> Content {
        Content {
            client,
            chunks: entry.chunks.clone().into_iter(),
            fetched: VecDeque::new(),
            next_batch: None,
            started: false,
            filler: Filler::new(entry.size, &entry.holes),
            current: bytes::Bytes::new(),
            pieces: VecDeque::new(),
            finished: false,
        }
    }

    /// The next block of content (at most [`BLOCK`] bytes), `None` at the end.
    async fn next_block(&mut self) -> Result<Option<Vec<u8>>, Error> {
        loop {
            match self.pieces.pop_front() {
                Some(Piece::Zeros(n)) => {
                    let take = n.min(BLOCK as u64);
                    if n > take {
                        self.pieces.push_front(Piece::Zeros(n - take));
                    }
                    return Ok(Some(vec![0; take as usize]));
                }
                Some(Piece::Data(r)) => {
                    let end = r.end.min(r.start + BLOCK);
                    if end < r.end {
                        self.pieces.push_front(Piece::Data(end..r.end));
                    }
                    return Ok(Some(self.current[r.start..end].to_vec()));
                }
                None => {}
            }
            if let Some(data) = self.next_chunk().await? {
                self.pieces = self.filler.place(data.len())?.into();
                self.current = data;
            } else if !self.finished {
                self.finished = true;
                self.current = bytes::Bytes::new();
                self.pieces = self.filler.finish()?.into();
            } else {
                return Ok(None);
            }
        }
    }

    /// Starts fetching the next batch, if chunks remain.
    fn prefetch(&mut self) {
        let batch: Vec<ChunkRef> = self.chunks.by_ref().take(BATCH).collect();
        if !batch.is_empty() {
            self.next_batch = Some(tokio::spawn(fetch_batch(self.client.clone(), batch)));
        }
    }

    /// The next chunk's verified content.
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, Error> {
        if self.fetched.is_empty() {
            if !self.started {
                self.started = true;
                self.prefetch();
            }
            let Some(batch) = self.next_batch.take() else {
                return Ok(None);
            };
            let got = batch.await.map_err(|e| Error::Internal(e.to_string()))??;
            self.fetched = got.into();
            // The following batch travels while this one is sent.
            self.prefetch();
        }
        let Some((c, data)) = self.fetched.pop_front() else {
            return Ok(None);
        };
        if data.len() != c.len as usize {
            return Err(Error::Chunk(ChunkError::Corrupt {
                id: c.id,
                why: format!("{} bytes where the manifest says {}", data.len(), c.len),
            }));
        }
        Ok(Some(data))
    }
}

impl Drop for Content {
    /// A reader that stops early stops the fetch ahead of it too.
    fn drop(&mut self) {
        if let Some(batch) = self.next_batch.take() {
            batch.abort();
        }
    }
}

/// Where an archive's file content comes from (the cluster; memory in tests).
trait FileSource {
    /// A reader of the entry's logical content (`size` bytes).
    fn open<'a>(&'a self, entry: &Entry) -> Box<dyn Read + 'a>;
}

/// File content from the cluster, read from a blocking thread.
struct ClusterFiles {
    handle: tokio::runtime::Handle,
    reader: Client,
}

impl FileSource for ClusterFiles {
    fn open<'a>(&'a self, entry: &Entry) -> Box<dyn Read + 'a> {
        Box::new(ContentReader {
            handle: &self.handle,
            content: Content::new(self.reader.clone(), entry),
            block: Vec::new(),
            at: 0,
        })
    }
}

/// [`Content`] as a blocking reader; its errors carry the [`Error`] (see [`from_io`]).
struct ContentReader<'a> {
    handle: &'a tokio::runtime::Handle,
    content: Content,
    block: Vec<u8>,
    at: usize,
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.block.len() {
            match self.handle.block_on(self.content.next_block()) {
                Ok(Some(b)) => {
                    self.block = b;
                    self.at = 0;
                }
                Ok(None) => return Ok(0),
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The [`Error`] an IO error carries, or the IO error made one.
fn from_io(e: std::io::Error, what: &str) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(err) = inner.downcast::<Error>() {
                return *err;
            }
        }
        return Error::Internal(format!("{what}: lost error"));
    }
    Error::Internal(format!("{what}: {e}"))
}

/// Writes the archive of `dir` and the entries of its subtree that follow it in `rest`
/// (stopping at the first one outside it) into `out`.
fn write_tar<W: Write>(
    out: W,
    files: &dyn FileSource,
    dir: &Entry,
    rest: &mut dyn Iterator<Item = Result<Entry, Error>>,
) -> Result<(), Error> {
    let mut tar = tar::Builder::new(out);
    if !dir.path.is_empty() {
        append(&mut tar, files, dir, &dir.path)?;
    }
    for e in rest {
        let e = e?;
        if !is_within(&e.path, &dir.path) {
            break;
        }
        append(&mut tar, files, &e, &dir.path)?;
    }
    let mut out = tar.into_inner().map_err(|e| from_io(e, "tar"))?;
    out.flush().map_err(|e| from_io(e, "tar"))
}

/// Appends one entry; `top` is the archived directory's path.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    files: &dyn FileSource,
    e: &Entry,
    top: &[u8],
) -> Result<(), Error> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(&e.path));
    let mut h = tar::Header::new_gnu();
    h.set_mode(e.mode & 0o7777);
    h.set_uid(e.uid.into());
    h.set_gid(e.gid.into());
    h.set_mtime((e.mtime_ns.max(0) / 1_000_000_000) as u64);
    h.set_size(0);
    let link = |t: &[u8]| std::path::Path::new(std::ffi::OsStr::from_bytes(t)).to_path_buf();
    let r = match e.kind {
        EntryKind::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut h, path, std::io::empty())
        }
        // The first name is in the archive already: it is inside it and came earlier.
        EntryKind::Hardlink if is_within(&e.link_target, top) => {
            h.set_entry_type(tar::EntryType::Link);
            tar.append_link(&mut h, path, link(&e.link_target))
        }
        EntryKind::File | EntryKind::Hardlink => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(e.size);
            tar.append_data(&mut h, path, files.open(e))
        }
        EntryKind::Symlink => {
            h.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut h, path, link(&e.link_target))
        }
        EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice => {
            h.set_entry_type(match e.kind {
                EntryKind::Fifo => tar::EntryType::Fifo,
                EntryKind::CharDevice => tar::EntryType::Char,
                _ => tar::EntryType::Block,
            });
            let (major, minor) = device_numbers(e.rdev);
            h.set_device_major(major)
                .and_then(|()| h.set_device_minor(minor))
                .and_then(|()| tar.append_data(&mut h, path, std::io::empty()))
        }
        EntryKind::Socket => Ok(()),
    };
    r.map_err(|err| from_io(err, &cpath::display(&e.path)))
}

/// Linux's `major()` and `minor()` of a device number.
fn device_numbers(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// Blocks of a stream sent through a bounded channel from a blocking thread.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Vec<u8>, Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<Result<Vec<u8>, Error>>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(BLOCK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        self.tx.blocking_send(Ok(block)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the archive's reader is gone",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A stream of the blocks `work` sends; `work` is spawned on the first poll (so the stream
/// may be made outside a runtime) and stops when the stream is dropped (its sends fail).
fn produced<F, Fut>(work: F) -> impl Stream<Item = Result<Vec<u8>, Error>> + Send + 'static
where
    F: FnOnce(mpsc::Sender<Result<Vec<u8>, Error>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    enum State<F> {
        Start(F),
        Running(mpsc::Receiver<Result<Vec<u8>, Error>>),
    }
    futures::stream::unfold(State::Start(work), |state| async move {
        let mut rx = match state {
            State::Start(work) => {
                let (tx, rx) = mpsc::channel(QUEUED_BLOCKS);
                tokio::spawn(work(tx));
                rx
            }
            State::Running(rx) => rx,
        };
        let item = rx.recv().await?;
        Some((item, State::Running(rx)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::ChunkId;

    fn entry(p: &str, kind: EntryKind) -> Entry {
        let mut e = Entry::new(p.as_bytes().to_vec(), kind);
        e.mode = if kind == EntryKind::Dir { 0o755 } else { 0o644 };
        e
    }

    fn file(p: &str, content: &[u8]) -> Entry {
        let mut e = entry(p, EntryKind::File);
        e.size = content.len() as u64;
        e.chunks = vec![ChunkRef {
            id: ChunkId::of(content),
            len: content.len() as u32,
        }];
        e
    }

    /// A tree in walk order: root, a/, a/b/, a/b/deep, a/x, a/y, a.c, c -> a/x (symlink).
    fn tree() -> Vec<Entry> {
        let mut v = vec![
            entry("", EntryKind::Dir),
            entry("a", EntryKind::Dir),
            entry("a/b", EntryKind::Dir),
            file("a/b/deep", b"deep"),
            file("a/x", b"xx"),
            file("a/y", b"yyy"),
            file("a.c", b"c"),
        ];
        let mut l = entry("c", EntryKind::Symlink);
        l.link_target = b"a/x".to_vec();
        v.push(l);
        v.sort_by(|a, b| walk_cmp(&a.path, &b.path));
        v
    }

    /// Runs a listing over `entries`; also returns how many entries it read.
    fn run(
        entries: &[Entry],
        dir: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Result<Listing, Error>, usize) {
        let mut l = Lister::new(
            dir.as_bytes().to_vec(),
            after.map(|a| a.as_bytes().to_vec()),
            limit,
        );
        let mut read = 0;
        for e in entries {
            read += 1;
            match l.feed(e) {
                Ok(Step::More) => {}
                Ok(Step::Done) => break,
                Err(err) => return (Err(err), read),
            }
        }
        (l.finish(), read)
    }

    fn names(l: &Listing) -> Vec<&str> {
        l.entries.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn a_listing_holds_the_directorys_children_only_and_stops_past_its_subtree() {
        let t = tree();
        let (l, read) = run(&t, "a", None, 100);
        let l = l.unwrap();
        assert_eq!(l.dir.path, "a");
        assert_eq!(l.dir.kind, EntryKind::Dir);
        assert_eq!(names(&l), ["b", "x", "y"]);
        assert_eq!(l.entries[1].path, "a/x");
        assert_eq!(l.entries[1].size, 2);
        assert_eq!(l.next, None);
        // Read up to `a.c`, the first entry past the subtree, and no further.
        assert_eq!(read, 7);
        let (root, _) = run(&t, "", None, 100);
        let root = root.unwrap();
        assert_eq!(names(&root), ["a", "a.c", "c"]);
        assert_eq!(root.dir.name, "");
        assert_eq!(root.entries[2].link_target.as_deref(), Some("a/x"));
        assert_eq!(root.entries[0].link_target, None);
        let (empty, _) = run(&t, "a/b", None, 100);
        assert_eq!(names(&empty.unwrap()), ["deep"]);
    }

    #[test]
    fn pages_of_two_walk_every_child_once() {
        let t = tree();
        let mut after: Option<String> = None;
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let (l, _) = run(&t, "a", after.as_deref(), 2);
            let l = l.unwrap();
            pages += 1;
            assert!(l.entries.len() <= 2);
            seen.extend(l.entries.iter().map(|n| n.name.clone()));
            match l.next {
                Some(n) => {
                    assert_eq!(Some(&n), seen.last(), "next names the page's last entry");
                    after = Some(n);
                }
                None => break,
            }
        }
        assert_eq!(seen, ["b", "x", "y"]);
        assert_eq!(pages, 2);
        // A page that ends exactly at the last child says there is no next page.
        let (l, _) = run(&t, "a", None, 3);
        assert_eq!(l.unwrap().next, None);
        // `after` past every name: an empty last page.
        let (l, _) = run(&t, "a", Some("zzz"), 2);
        let l = l.unwrap();
        assert!(l.entries.is_empty());
        assert_eq!(l.next, None);
    }

    #[test]
    fn unknown_paths_and_non_directories_are_refused_by_code() {
        let t = tree();
        for missing in ["nope", "a/zz", "a/b/deep/x", "b"] {
            let (l, _) = run(&t, missing, None, 10);
            assert_eq!(l.unwrap_err().code(), ErrorCode::PathNotFound, "{missing}");
        }
        for not_dir in ["a/x", "c"] {
            let (l, _) = run(&t, not_dir, None, 10);
            assert_eq!(
                l.unwrap_err().code(),
                ErrorCode::InvalidArgument,
                "{not_dir}"
            );
        }
        // A missing path is known at the first entry past where it would be.
        let (_, read) = run(&t, "a/aa", None, 10);
        assert_eq!(read, 3, "stopped at a/b");
    }

    #[test]
    fn paths_are_relative_and_never_escape() {
        assert_eq!(parse_path("").unwrap(), b"");
        assert_eq!(parse_path("etc/nginx").unwrap(), b"etc/nginx");
        assert_eq!(parse_path("etc/").unwrap(), b"etc");
        for bad in [
            "/",
            "/etc/passwd",
            "../etc/passwd",
            "a/../../b",
            "a/./b",
            "a//b",
            "a//",
            ".",
            "a\0b",
        ] {
            let e = parse_path(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{bad:?}");
        }
    }

    /// Lays `data` (cut into `cuts`) out between `holes`, as bytes.
    fn fill(
        size: u64,
        holes: &[(u64, u64)],
        data: &[u8],
        cuts: &[usize],
    ) -> Result<Vec<u8>, ManifestError> {
        let mut f = Filler::new(size, holes);
        let mut out = Vec::new();
        fn emit(pieces: Vec<Piece>, chunk: &[u8], out: &mut Vec<u8>) {
            for p in pieces {
                match p {
                    Piece::Zeros(n) => out.extend(vec![0u8; n as usize]),
                    Piece::Data(r) => out.extend_from_slice(&chunk[r]),
                }
            }
        }
        let mut at = 0;
        for &n in cuts {
            let chunk = &data[at..at + n];
            emit(f.place(n)?, chunk, &mut out);
            at += n;
        }
        emit(f.finish()?, &[], &mut out);
        Ok(out)
    }

    #[test]
    fn holes_become_zeros_around_and_inside_chunks() {
        // Data "abcdef" with holes at 0..2, 4..7 and 9..10: file "\0\0ab\0\0\0cdef\0"?
        // Regions: data 2..4 ("ab"), data 7..9 ("cd"), data 10..12 ("ef").
        let holes = [(0, 2), (4, 3), (9, 1)];
        let want = b"\0\0ab\0\0\0cd\0ef".to_vec();
        for cuts in [&[6][..], &[1, 5], &[3, 3], &[2, 2, 2], &[1, 1, 1, 1, 1, 1]] {
            assert_eq!(fill(12, &holes, b"abcdef", cuts).unwrap(), want, "{cuts:?}");
        }
        // A trailing hole, an all-hole file, an empty file, a file without holes.
        assert_eq!(fill(5, &[(2, 3)], b"ab", &[2]).unwrap(), b"ab\0\0\0");
        assert_eq!(fill(4, &[(0, 4)], b"", &[]).unwrap(), b"\0\0\0\0");
        assert_eq!(fill(0, &[], b"", &[]).unwrap(), b"");
        assert_eq!(fill(3, &[], b"abc", &[1, 2]).unwrap(), b"abc");
        // Chunks past the size, or short of it, are damage, not bytes.
        assert!(fill(2, &[], b"abc", &[3]).is_err());
        assert!(fill(4, &[], b"abc", &[3]).is_err());
        assert!(fill(4, &[(1, 2)], b"ab", &[2]).is_ok());
        assert!(fill(4, &[(1, 2)], b"abc", &[3]).is_err());
    }

    /// File content from memory, keyed by the first chunk id.
    struct Memory(Vec<(ChunkId, Vec<u8>)>);

    impl FileSource for Memory {
        fn open<'a>(&'a self, e: &Entry) -> Box<dyn Read + 'a> {
            let id = e.chunks[0].id;
            let data = &self.0.iter().find(|(i, _)| *i == id).unwrap().1;
            Box::new(&data[..])
        }
    }

    /// An archive member: path, type, mode, link target, content.
    type Archived = (String, tar::EntryType, u32, Option<String>, Vec<u8>);

    #[test]
    fn an_archive_holds_the_subtree_with_metadata_and_links() {
        let mut t = tree();
        let mut hard = file("a/z", b"xx");
        hard.kind = EntryKind::Hardlink;
        hard.link_target = b"a/x".to_vec();
        let mut outside = file("a/w", b"c");
        outside.kind = EntryKind::Hardlink;
        outside.link_target = b"a.c".to_vec();
        t.push(hard);
        t.push(outside);
        for e in &mut t {
            e.uid = 1000;
            e.gid = 100;
            e.mtime_ns = 1_700_000_000_123_456_789;
        }
        t.iter_mut().find(|e| e.path == b"a/y").unwrap().mode = 0o4750;
        t.sort_by(|a, b| walk_cmp(&a.path, &b.path));
        let memory = Memory(
            [&b"deep"[..], b"xx", b"yyy", b"c"]
                .iter()
                .map(|c| (ChunkId::of(c), c.to_vec()))
                .collect(),
        );
        let at = t.iter().position(|e| e.path == b"a").unwrap();
        let mut rest = t[at + 1..].iter().cloned().map(Ok);
        let mut out = Vec::new();
        write_tar(&mut out, &memory, &t[at], &mut rest).unwrap();

        let mut archive = tar::Archive::new(&out[..]);
        let mut got = Vec::new();
        for f in archive.entries().unwrap() {
            let mut f = f.unwrap();
            let h = f.header().clone();
            let path = f.path().unwrap().to_string_lossy().into_owned();
            let link = f
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut body = Vec::new();
            f.read_to_end(&mut body).unwrap();
            assert_eq!(h.uid().unwrap(), 1000);
            assert_eq!(h.gid().unwrap(), 100);
            assert_eq!(h.mtime().unwrap(), 1_700_000_000);
            got.push((path, h.entry_type(), h.mode().unwrap(), link, body));
        }
        use tar::EntryType as T;
        let want: Vec<Archived> = vec![
            ("a".into(), T::Directory, 0o755, None, vec![]),
            ("a/b".into(), T::Directory, 0o755, None, vec![]),
            ("a/b/deep".into(), T::Regular, 0o644, None, b"deep".to_vec()),
            // A hardlink to a name outside the archive carries its content.
            ("a/w".into(), T::Regular, 0o644, None, b"c".to_vec()),
            ("a/x".into(), T::Regular, 0o644, None, b"xx".to_vec()),
            ("a/y".into(), T::Regular, 0o4750, None, b"yyy".to_vec()),
            ("a/z".into(), T::Link, 0o644, Some("a/x".into()), vec![]),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn an_archive_of_the_root_has_no_entry_for_the_root() {
        let t = tree();
        let memory = Memory(
            [&b"deep"[..], b"xx", b"yyy", b"c"]
                .iter()
                .map(|c| (ChunkId::of(c), c.to_vec()))
                .collect(),
        );
        let mut rest = t[1..].iter().cloned().map(Ok);
        let mut out = Vec::new();
        write_tar(&mut out, &memory, &t[0], &mut rest).unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let paths: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|f| f.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(paths, ["a", "a/b", "a/b/deep", "a/x", "a/y", "a.c", "c"]);
    }

    #[test]
    fn an_error_mid_archive_is_the_error_not_a_short_archive() {
        let t = tree();
        let memory = Memory(vec![]);
        let mut rest =
            t[1..3]
                .iter()
                .cloned()
                .map(Ok)
                .chain(std::iter::once(Err(Error::Cluster {
                    code: ErrorCode::Corrupt,
                    message: "bad chunk".into(),
                })));
        let e = write_tar(Vec::new(), &memory, &t[0], &mut rest).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Corrupt);
        // An error inside a file's reader comes out with its code too.
        let broken = std::io::Error::other(Error::Cluster {
            code: ErrorCode::ChunksMissing,
            message: "gone".into(),
        });
        assert_eq!(from_io(broken, "x").code(), ErrorCode::ChunksMissing);
    }

    #[tokio::test]
    async fn a_stream_whose_reader_is_gone_stops_its_producer() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
        use std::sync::Arc;
        let stopped = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let (s2, n2) = (stopped.clone(), sent.clone());
        let stream = produced(move |tx| async move {
            loop {
                if tx.send(Ok(vec![0; 16])).await.is_err() {
                    s2.store(true, SeqCst);
                    return;
                }
                n2.fetch_add(1, SeqCst);
            }
        });
        let mut stream = Box::pin(stream);
        for _ in 0..3 {
            assert_eq!(stream.next().await.unwrap().unwrap().len(), 16);
        }
        drop(stream);
        for _ in 0..1000 {
            if stopped.load(SeqCst) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(stopped.load(SeqCst), "the producer saw the reader go");
        // Bounded: it ran at most the queue's length ahead of the reader.
        assert!(sent.load(SeqCst) <= 3 + QUEUED_BLOCKS + 1, "{sent:?}");
    }

    #[test]
    fn an_archive_is_sent_in_bounded_blocks() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut w = ChannelWriter::new(tx);
        w.write_all(&vec![7u8; BLOCK * 2 + 100]).unwrap();
        w.flush().unwrap();
        drop(w);
        let mut sizes = Vec::new();
        while let Ok(b) = rx.try_recv() {
            sizes.push(b.unwrap().len());
        }
        assert_eq!(sizes, [BLOCK, BLOCK, 100]);
        // A writer whose reader is gone fails instead of buffering without end.
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut w = ChannelWriter::new(tx);
        assert!(w.write_all(&vec![0u8; BLOCK]).is_err());
    }

    #[test]
    fn device_numbers_split_like_linux() {
        // makedev(8, 1), and makedev(major, minor) for numbers past the old 8-bit split.
        assert_eq!(device_numbers(0x801), (8, 1));
        let (major, minor) = (259u64, 65537u64);
        let dev = ((major & 0xfff) << 8)
            | ((major & !0xfff) << 32)
            | (minor & 0xff)
            | ((minor & !0xff) << 12);
        assert_eq!(device_numbers(dev), (259, 65537));
    }
}
