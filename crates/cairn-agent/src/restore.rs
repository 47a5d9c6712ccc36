//! The restore engine.
//!
//! A planner thread streams the manifest (one chunk of entries at a time), creates each
//! selected entry through `cairn_fs::Restorer` — which confines every write to the target and
//! refuses unsafe paths — and groups file content into batches of about `BATCH_BYTES`. A file
//! larger than that is cut into pieces (runs of its chunks) that land in different batches, so
//! one large file is fetched, verified and written by several batches at once instead of by one
//! long batch that the whole restore waits for. Batches are fetched concurrently; every chunk
//! is verified (decompressed and re-hashed) before a byte of it is written (at its own offset,
//! `pwrite`), and a file's metadata is applied once all its pieces are written: each piece
//! and the planner hold a count on the file, and whoever drops it to zero finishes the entry.
//! Directory metadata is applied last, deepest first.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};
use std::sync::Arc;
use std::time::Instant;

use cairn_core::{BackupId, ChunkId, Entry, EntryKind};
use cairn_fs::{RestoreOptions, Restorer};
use futures::StreamExt;

use crate::error::AgentError;
use crate::progress::Progress;
use cairn_api::manifest::{fetch_root, ManifestEntries};
use cairn_api::Client;

/// Chunk bytes per fetch batch.
const BATCH_BYTES: u64 = 16 * 1024 * 1024;
const BATCH_FILES: usize = 1024;
/// Batches fetched at once.
const BATCHES_IN_FLIGHT: usize = 8;

/// What to restore and where.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub backup: BackupId,
    pub target: PathBuf,
    /// Relative paths to restore (with everything below them); empty = the whole tree.
    pub paths: Vec<String>,
    /// Restore owners (default: when running as root).
    pub owners: Option<bool>,
    /// Restore into an existing tree, replacing entries (selective restore into place).
    pub into_existing: bool,
    /// Restore device nodes, setuid/setgid bits and file capabilities (a restore job onto
    /// another host than the backup's runs without, unless an operator asked; see
    /// `cairn_fs::RestoreOptions::privileged`).
    pub privileged: bool,
}

/// What a restore did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreSummary {
    pub id: String,
    pub target: String,
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    pub duration_secs: f64,
    /// Things that could not be restored as they were, with why (e.g. devices when not root).
    pub notes: Vec<String>,
}

/// A file being restored: created, written by one or more pieces, then finished.
struct FileWork {
    entry: Entry,
    file: std::fs::File,
    place: Placement,
    /// Pieces not yet written, plus one while the planner is still cutting the file.
    holds: AtomicUsize,
}

impl FileWork {
    /// Drops one hold; the last one applies the file's metadata.
    fn release(&self, restorer: &Restorer, progress: &Progress) -> Result<(), AgentError> {
        if self.holds.fetch_sub(1, AcqRel) != 1 {
            return Ok(());
        }
        progress.add_done(1, self.entry.size - self.entry.data_len());
        let file = self.file.try_clone().map_err(|e| AgentError::Io {
            path: cairn_core::path::display(&self.entry.path),
            source: e,
        })?;
        restorer.finish_entry(&self.entry, Some(file))?;
        Ok(())
    }
}

/// A run of one file's chunks, `chunks` of its list, whose data starts at data offset `at`.
struct Piece {
    work: Arc<FileWork>,
    chunks: Range<usize>,
    at: u64,
}

struct Batch {
    pieces: Vec<Piece>,
}

impl Batch {
    fn ids(&self) -> Vec<ChunkId> {
        self.pieces
            .iter()
            .flat_map(|p| p.work.entry.chunks[p.chunks.clone()].iter().map(|c| c.id))
            .collect()
    }
}

/// Restores a backup (or selected paths of it) into `req.target`.
pub async fn restore(
    cluster: &Client,
    req: RestoreRequest,
    progress: Arc<Progress>,
) -> Result<RestoreSummary, AgentError> {
    let started = Instant::now();
    progress.set_phase("checking parameters");
    let record = cluster.show(&req.backup).await?;
    // Every chunk read below is for this backup (the cluster holds agents to it).
    let reader = cluster.reading(record.id);
    let cluster = &reader;
    let root = fetch_root(cluster, record.manifest).await?;
    let mut selected: Vec<Vec<u8>> = Vec::new();
    for p in &req.paths {
        let rel = p.trim_matches('/').as_bytes().to_vec();
        cairn_core::path::validate(&rel)
            .map_err(|e| AgentError::Invalid(format!("bad --path {p:?}: {e}")))?;
        selected.push(rel);
    }
    if selected.is_empty() {
        progress.add_total(root.files, root.logical_size);
    }
    let opts = RestoreOptions {
        owners: req
            .owners
            .unwrap_or_else(|| nix::unistd::geteuid().is_root()),
        privileged: req.privileged,
        into_existing: req.into_existing,
    };
    let target = req.target.clone();
    let restorer = tokio::task::spawn_blocking(move || Restorer::new(&target, opts))
        .await
        .map_err(|e| AgentError::Internal(e.to_string()))??;
    let restorer = Arc::new(restorer);

    progress.set_phase("restoring");
    let entries = ManifestEntries::start(cluster.clone(), &root);
    let (batch_tx, mut batch_rx) = tokio::sync::mpsc::channel::<Batch>(BATCHES_IN_FLIGHT);
    let planner = {
        let restorer = restorer.clone();
        let progress = progress.clone();
        let selected = selected.clone();
        tokio::task::spawn_blocking(move || {
            plan(entries, &restorer, &selected, batch_tx, &progress)
        })
    };

    let sem = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let mut tasks: tokio::task::JoinSet<Result<(), AgentError>> = tokio::task::JoinSet::new();
    let mut fetch_err: Option<AgentError> = None;
    while let Some(batch) = batch_rx.recv().await {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AgentError::Internal(e.to_string()))?;
        let cluster = cluster.clone();
        let restorer = restorer.clone();
        let progress = progress.clone();
        let handle = tokio::runtime::Handle::current();
        tasks.spawn_blocking(move || {
            let _permit = permit;
            write_batch(&handle, &cluster, batch, &restorer, &progress)
        });
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done.map_err(|e| AgentError::Internal(e.to_string()))? {
                fetch_err.get_or_insert(e);
            }
        }
        if fetch_err.is_some() {
            break;
        }
    }
    drop(batch_rx);
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done.map_err(|e| AgentError::Internal(e.to_string()))? {
            fetch_err.get_or_insert(e);
        }
    }
    let planned = planner
        .await
        .map_err(|e| AgentError::Internal(e.to_string()))?;
    if let Some(e) = fetch_err {
        return Err(e);
    }
    let (entries, matched) = planned?;
    for (p, hit) in req.paths.iter().zip(matched) {
        if !hit {
            return Err(AgentError::Invalid(format!(
                "path {p:?} is not in backup {}",
                req.backup
            )));
        }
    }
    progress.set_phase("applying directory metadata");
    let r2 = restorer.clone();
    let report = tokio::task::spawn_blocking(move || r2.finish())
        .await
        .map_err(|e| AgentError::Internal(e.to_string()))??;
    progress.set_phase("done");
    Ok(RestoreSummary {
        id: req.backup.to_string(),
        target: req.target.display().to_string(),
        entries,
        files: progress.files_done.load(Relaxed),
        bytes: progress.bytes_done.load(Relaxed),
        duration_secs: started.elapsed().as_secs_f64(),
        notes: report.skipped,
    })
}

fn is_selected(e: &Entry, selected: &[Vec<u8>], matched: &mut [bool]) -> bool {
    if selected.is_empty() {
        return true;
    }
    let mut keep = false;
    for (i, p) in selected.iter().enumerate() {
        if cairn_core::path::is_within(&e.path, p) {
            matched[i] = true;
            keep = true;
        } else if e.kind == EntryKind::Dir && cairn_core::path::is_within(p, &e.path) {
            keep = true;
        }
    }
    keep
}

/// Creates entries in manifest order and hands files with content to the fetchers.
fn plan(
    mut entries: ManifestEntries,
    restorer: &Restorer,
    selected: &[Vec<u8>],
    batch_tx: tokio::sync::mpsc::Sender<Batch>,
    progress: &Progress,
) -> Result<(u64, Vec<bool>), AgentError> {
    let mut matched = vec![false; selected.len()];
    let mut batch = Batch { pieces: Vec::new() };
    let mut batch_bytes = 0u64;
    let mut count = 0u64;
    while let Some(e) = entries.blocking_next() {
        let e = e?;
        if !is_selected(&e, selected, &mut matched) {
            continue;
        }
        count += 1;
        if !selected.is_empty() && e.has_content() {
            progress.add_total(1, e.size);
        }
        let file = restorer.create(&e)?;
        match file {
            Some(file) if !e.chunks.is_empty() => {
                let work = Arc::new(FileWork {
                    place: Placement::new(e.size, &e.holes),
                    entry: e,
                    file,
                    holds: AtomicUsize::new(1),
                });
                let n = work.entry.chunks.len();
                let (mut start, mut at, mut piece_len) = (0usize, 0u64, 0u64);
                for i in 0..n {
                    let len = u64::from(work.entry.chunks[i].len);
                    batch_bytes += len;
                    piece_len += len;
                    let full = batch_bytes >= BATCH_BYTES;
                    if !full && i + 1 < n {
                        continue;
                    }
                    work.holds.fetch_add(1, AcqRel);
                    batch.pieces.push(Piece {
                        work: work.clone(),
                        chunks: start..i + 1,
                        at,
                    });
                    (start, at, piece_len) = (i + 1, at + piece_len, 0);
                    if full || batch.pieces.len() >= BATCH_FILES {
                        let full = std::mem::replace(&mut batch, Batch { pieces: Vec::new() });
                        batch_bytes = 0;
                        if batch_tx.blocking_send(full).is_err() {
                            // A fetch failed; the caller reports it.
                            return Ok((count, matched));
                        }
                    }
                }
                work.release(restorer, progress)?;
            }
            file => {
                if e.has_content() {
                    progress.add_done(1, e.size);
                }
                restorer.finish_entry(&e, file)?;
            }
        }
    }
    if !batch.pieces.is_empty() {
        let _ = batch_tx.blocking_send(batch);
    }
    Ok((count, matched))
}

/// Maps positions in a file's data (holes removed) to file offsets.
struct Placement {
    /// (file offset, length) of each data region, and the data offset where it starts.
    regions: Vec<(u64, u64, u64)>,
}

impl Placement {
    fn new(size: u64, holes: &[(u64, u64)]) -> Placement {
        let mut data = 0;
        let regions = cairn_fs::data_regions(size, holes)
            .into_iter()
            .map(|(off, len)| {
                let r = (off, len, data);
                data += len;
                r
            })
            .collect();
        Placement { regions }
    }

    /// Writes `buf`, which starts at data offset `at`, into `file`.
    fn write(&self, file: &std::fs::File, at: u64, buf: &[u8]) -> std::io::Result<()> {
        let mut i = match self.regions.binary_search_by(|r| r.2.cmp(&at)) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let mut done = 0usize;
        while done < buf.len() {
            let Some(&(off, len, dstart)) = self.regions.get(i) else {
                return Err(std::io::Error::other("chunk data runs past the file's end"));
            };
            let pos = at + done as u64;
            let within = pos - dstart;
            let n = ((len - within) as usize).min(buf.len() - done);
            file.write_all_at(&buf[done..done + n], off + within)?;
            done += n;
            i += 1;
        }
        Ok(())
    }
}

fn write_batch(
    handle: &tokio::runtime::Handle,
    cluster: &Client,
    batch: Batch,
    restorer: &Restorer,
    progress: &Progress,
) -> Result<(), AgentError> {
    let ids = batch.ids();
    let mut stream = Box::pin(handle.block_on(cluster.get(&ids))?);
    for piece in batch.pieces {
        let fw = &piece.work;
        let mut at = piece.at;
        for c in &fw.entry.chunks[piece.chunks.clone()] {
            // Verified by the client: decoded and re-hashed against `c.id`.
            let data = match handle.block_on(stream.next()) {
                Some(r) => r?,
                None => {
                    return Err(AgentError::Cluster {
                        code: cairn_core::ErrorCode::NotFound,
                        message: format!("chunk {} was not delivered", c.id),
                    })
                }
            };
            if data.len() != c.len as usize {
                return Err(AgentError::Chunk(cairn_chunker::ChunkError::Corrupt {
                    id: c.id,
                    why: format!("{} bytes where the manifest says {}", data.len(), c.len),
                }));
            }
            fw.place
                .write(&fw.file, at, &data)
                .map_err(|e| AgentError::Io {
                    path: cairn_core::path::display(&fw.entry.path),
                    source: e,
                })?;
            at += data.len() as u64;
            progress.add_done(0, data.len() as u64);
        }
        fw.release(restorer, progress)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_skips_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(20).unwrap();
        // data: [0,5) and [10,15) ; holes [5,10) and [15,20)
        let p = Placement::new(20, &[(5, 5), (15, 5)]);
        p.write(&f, 0, b"abc").unwrap();
        p.write(&f, 3, b"defgh").unwrap();
        p.write(&f, 8, b"ij").unwrap();
        assert!(p.write(&f, 10, b"x").is_err());
        let got = std::fs::read(&path).unwrap();
        assert_eq!(&got[..], b"abcde\0\0\0\0\0fghij\0\0\0\0\0");
    }
}
