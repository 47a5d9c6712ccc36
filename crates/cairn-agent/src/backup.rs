//! The backup engine.
//!
//! # Pipeline
//! ```text
//! walker ──files to read──▶ N readers (chunk + hash) ──raw chunks──▶ uploader (async)
//!    │                            │                                     │ missing? → compress
//!    └──slots, in walk order──▶ assembler ◀──entries──┘                 │ missing → put (durable)
//!                                 └──manifest chunks──────────────────▶─┘
//! ```
//! * The **walker** lists the tree in walk order, applies the rules, detects hardlinks, and
//!   merges against the parent manifest (streamed, never held whole): an unchanged file
//!   ([`cairn_core::change::unchanged`]) gets the parent's chunk list and is never opened —
//!   once the **reuse checker** has asked the cluster for those chunks in batches. Asking
//!   touches every copy, so a garbage collection running now spares them even when the
//!   parent is deleted meanwhile; a chunk the cluster no longer holds sends the file to the
//!   readers instead, so the backup never references a chunk it did not see stored.
//! * **Readers** (one per core) cut changed files with FastCDC and hash each chunk.
//! * The **uploader** batches chunk ids, asks the cluster which it lacks, compresses only those
//!   and uploads them; several batches are in flight so hashing, compression and network
//!   overlap. Chunks already seen in this run are dropped before they cost anything.
//! * The **assembler** writes entries into the manifest in walk order (a bounded queue of
//!   per-entry slots keeps order and memory bounded) and uploads the manifest chunks.
//!
//! Commit comes last: only after every upload has been acknowledged as durable does the
//! engine ask the cluster to commit, and the node re-checks every referenced chunk.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_chunker::{cdc, ChunkerParams, StreamChunker};
use cairn_core::manifest::{ChunkRef, ManifestWriter};
use cairn_core::{
    BackupId, BackupRecord, BackupState, BackupType, ChunkId, Compression, Entry, EntryKind, EnvId,
};
use crossbeam_channel as xch;
use tokio::sync::mpsc;

use crate::error::AgentError;
use crate::progress::Progress;
use crate::rules::Rules;
use cairn_api::manifest::{fetch_root, ManifestEntries};
use cairn_api::Client;

/// Files up to this size are read whole and cut in memory.
const READ_WHOLE: u64 = 32 * 1024 * 1024;
/// Most chunk bytes per upload batch.
const BATCH_BYTES: usize = 8 * 1024 * 1024;
const BATCH_CHUNKS: usize = 2048;
/// Upload batches in flight at once.
const BATCHES_IN_FLIGHT: usize = 6;
/// Entries the walker may run ahead of the assembler.
const SLOTS_AHEAD: usize = 8192;
/// Most per-file errors kept in the backup record.
const ERRORS_KEPT: usize = 100;

/// What to back up and how.
#[derive(Clone, Debug)]
pub struct BackupRequest {
    pub source: PathBuf,
    pub env: EnvId,
    pub kind: BackupType,
    pub compression: Compression,
    pub excludes: Vec<String>,
    pub includes: Vec<String>,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub host: String,
    /// What the environment's host reports about it (kept with the backup).
    pub env_info: cairn_core::EnvInfo,
    /// Upload bandwidth limit in bytes per second.
    pub upload_limit: Option<u64>,
    /// The backup job this backup runs for (an agent's commits must name it).
    pub job: Option<uuid::Uuid>,
}

/// What a backup did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackupSummary {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub parent: Option<String>,
    pub state: String,
    pub entries: u64,
    pub files_read: u64,
    pub files_reused: u64,
    pub files_skipped: u64,
    pub excluded: u64,
    pub bytes_read: u64,
    pub bytes_sent: u64,
    pub chunks_sent: u64,
    pub logical_size: u64,
    pub duration_secs: f64,
    pub errors: Vec<String>,
}

#[derive(Default)]
struct Counters {
    entries: AtomicU64,
    files_read: AtomicU64,
    files_reused: AtomicU64,
    excluded: AtomicU64,
    bytes_read: AtomicU64,
    bytes_sent: AtomicU64,
    chunks_sent: AtomicU64,
    errors: Mutex<Vec<String>>,
    error_count: AtomicU64,
    limiter: Limiter,
}

/// An upload bandwidth limit: each batch waits until the bytes sent so far fit the rate.
#[derive(Default)]
struct Limiter {
    /// Bytes per second; 0: no limit.
    rate: u64,
    /// When the first batch went out, and the bytes admitted since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Limiter {
    fn new(rate: Option<u64>) -> Limiter {
        Limiter {
            rate: rate.unwrap_or(0),
            state: Mutex::default(),
        }
    }

    /// Waits until `bytes` more may go out; a cancelled job stops waiting at once (within
    /// 100 ms) and gets `Cancelled`, so a throttled job does not hold up its cancellation.
    async fn admit(&self, bytes: u64, progress: &Progress) -> Result<(), AgentError> {
        if self.rate == 0 {
            return Ok(());
        }
        let due = {
            let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let start = *g.0.get_or_insert_with(Instant::now);
            let before = g.1;
            g.1 += bytes;
            start + Duration::from_secs_f64(before as f64 / self.rate as f64)
        };
        loop {
            if progress.is_cancelled() {
                return Err(AgentError::Cancelled);
            }
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
    }
}

impl Counters {
    fn error(&self, msg: String) {
        tracing::warn!(error = %msg, "entry skipped");
        self.error_count.fetch_add(1, Relaxed);
        if let Ok(mut g) = self.errors.lock() {
            if g.len() < ERRORS_KEPT {
                g.push(msg);
            }
        }
    }
}

struct RawChunk {
    id: ChunkId,
    data: Vec<u8>,
    /// File bytes this chunk holds that progress counts as read but not yet stored (0 for
    /// manifest chunks): released once the cluster holds the chunk.
    pending: u64,
}

type InodeKey = (u64, u64);

enum Slot {
    Ready(Entry, Option<InodeKey>),
    Pending(xch::Receiver<Option<Entry>>, Option<InodeKey>),
    /// A further name of an inode; the assembler copies the first name's chunks.
    Link(Entry, InodeKey),
}

struct FileJob {
    abs: PathBuf,
    entry: Entry,
    reply: xch::Sender<Option<Entry>>,
}

/// Runs one backup to commit.
///
/// The backup runs inside a session registered with the cluster before it reads or sends
/// anything, and closed when it ends either way: garbage collection waits for sessions that
/// started before it, so it never sweeps a chunk this backup is about to reference.
pub async fn backup(
    cluster: &Client,
    req: BackupRequest,
    progress: Arc<Progress>,
) -> Result<BackupSummary, AgentError> {
    let session = cluster.open_session(req.env, &req.host).await?;
    // Renewed while the backup runs: a session silent for the TTL expires (a killed client
    // does not hold garbage collection back for long).
    let renewer = {
        let cluster = cluster.clone();
        let id = session.clone();
        tokio::spawn(async move {
            let every = Duration::from_millis(cairn_core::retention::SESSION_RENEW_MS as u64);
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = cluster.renew_session(&id).await {
                    tracing::warn!(error = %e, "cannot renew the backup session");
                }
            }
        })
    };
    let result = backup_in_session(cluster, req, progress, &session).await;
    renewer.abort();
    if let Err(e) = cluster.close_session(&session).await {
        // It expires on its own; GC only waits longer for it meanwhile.
        tracing::warn!(error = %e, "cannot close the backup session");
    }
    result
}

async fn backup_in_session(
    cluster: &Client,
    req: BackupRequest,
    progress: Arc<Progress>,
    session: &str,
) -> Result<BackupSummary, AgentError> {
    let started = Instant::now();
    let md = std::fs::symlink_metadata(&req.source).map_err(|e| AgentError::Io {
        path: req.source.display().to_string(),
        source: e,
    })?;
    if !md.is_dir() {
        return Err(AgentError::Invalid(format!(
            "{} is not a directory",
            req.source.display()
        )));
    }
    std::fs::read_dir(&req.source).map_err(|e| AgentError::Io {
        path: req.source.display().to_string(),
        source: e,
    })?;
    let rules = Arc::new(Rules::new(&req.excludes, &req.includes)?);

    progress.set_phase("checking parameters");
    let parent = match req.kind {
        BackupType::Full => None,
        BackupType::Incremental => cluster.latest(req.env, false).await?,
        BackupType::Differential => cluster.latest(req.env, true).await?,
    };
    let kind = if parent.is_some() {
        req.kind
    } else {
        BackupType::Full
    };
    let parent_entries = match &parent {
        Some(p) => {
            let reader = cluster.reading(p.id);
            let root = fetch_root(&reader, p.manifest).await?;
            Some(ManifestEntries::start(reader, &root))
        }
        None => None,
    };

    cairn_api::failpoint::pause_async(cairn_api::failpoint::client_dir(), "backup-before-walk")
        .await;
    progress.set_phase("backing up private area");
    let counters = Arc::new(Counters {
        limiter: Limiter::new(req.upload_limit),
        ..Default::default()
    });
    let abort = Arc::new(AtomicBool::new(false));
    let (chunk_tx, chunk_rx) = mpsc::channel::<RawChunk>(64);
    let uploader = tokio::spawn(upload_loop(
        cluster.clone(),
        chunk_rx,
        req.compression,
        counters.clone(),
        progress.clone(),
    ));

    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 16);
    let (job_tx, job_rx) = xch::bounded::<FileJob>(workers * 4);
    let (slot_tx, slot_rx) = xch::bounded::<Slot>(SLOTS_AHEAD);
    let (reuse_tx, reuse_rx) = xch::bounded::<FileJob>(SLOTS_AHEAD);
    let checker = {
        let cluster = cluster.clone();
        let job_tx = job_tx.clone();
        let counters = counters.clone();
        let progress = progress.clone();
        let abort = abort.clone();
        let rt = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("cairn-reuse".into())
            .spawn(move || reuse_loop(rt, cluster, reuse_rx, job_tx, counters, progress, abort))
            .map_err(|e| AgentError::Internal(e.to_string()))?
    };

    let mut threads = Vec::new();
    for i in 0..workers {
        let job_rx = job_rx.clone();
        let chunk_tx = chunk_tx.clone();
        let counters = counters.clone();
        let progress = progress.clone();
        let abort = abort.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("cairn-read-{i}"))
                .spawn(move || reader_loop(job_rx, chunk_tx, counters, progress, abort))
                .map_err(|e| AgentError::Internal(e.to_string()))?,
        );
    }
    drop(job_rx);

    let walker = {
        let source = req.source.clone();
        let counters = counters.clone();
        let progress = progress.clone();
        let abort = abort.clone();
        std::thread::Builder::new()
            .name("cairn-walk".into())
            .spawn(move || {
                walk_loop(
                    source,
                    rules,
                    parent_entries,
                    job_tx,
                    reuse_tx,
                    slot_tx,
                    counters,
                    progress,
                    abort,
                )
            })
            .map_err(|e| AgentError::Internal(e.to_string()))?
    };

    let assembler = {
        let chunk_tx = chunk_tx.clone();
        let counters = counters.clone();
        std::thread::Builder::new()
            .name("cairn-manifest".into())
            .spawn(move || assemble_loop(slot_rx, chunk_tx, counters))
            .map_err(|e| AgentError::Internal(e.to_string()))?
    };
    drop(chunk_tx);

    // Wait for the threads without blocking the runtime.
    let joined = tokio::task::spawn_blocking(move || {
        let walk = walker.join();
        let reuse = checker.join();
        let asm = assembler.join();
        for t in threads {
            let _ = t.join();
        }
        (walk, asm, reuse)
    })
    .await
    .map_err(|e| AgentError::Internal(e.to_string()))?;
    let upload = uploader
        .await
        .map_err(|e| AgentError::Internal(e.to_string()))?;
    // An upload failure is the root cause when both fail (the threads stop on closed channels).
    upload?;
    let walk_result = joined
        .0
        .map_err(|_| AgentError::Internal("walker thread panicked".into()))?;
    walk_result?;
    joined
        .2
        .map_err(|_| AgentError::Internal("reuse checker thread panicked".into()))??;
    let (root_id, root) = joined
        .1
        .map_err(|_| AgentError::Internal("manifest thread panicked".into()))??;

    if progress.is_cancelled() {
        return Err(AgentError::Cancelled);
    }
    progress.set_phase("storing backup data");
    let errors = counters
        .errors
        .lock()
        .map(|g| g.clone())
        .unwrap_or_default();
    let error_count = counters.error_count.load(Relaxed);
    let record = BackupRecord {
        id: BackupId::new(req.env, chrono::Utc::now().timestamp()),
        kind,
        parent: parent.as_ref().map(|p| p.id),
        name: req.name.clone(),
        description: req.description.clone(),
        tags: req.tags.clone(),
        manifest: root_id,
        logical_size: root.logical_size,
        stored_size: counters.bytes_sent.load(Relaxed),
        file_count: root.files,
        chunk_count: 0,
        state: if error_count > 0 {
            BackupState::Incomplete
        } else {
            BackupState::Complete
        },
        errors: errors.clone(),
        error_count,
        compression: req.compression,
        host: req.host.clone(),
        source: req.source.display().to_string(),
        env_info: req.env_info.clone(),
        includes: req.includes.clone(),
        excludes: req.excludes.clone(),
        protected: false,
    };
    let committed = cluster.commit(&record, req.job, Some(session)).await?;
    progress.set_phase("done");
    Ok(BackupSummary {
        id: committed.id.to_string(),
        kind: kind.to_string(),
        parent: parent.map(|p| p.id.to_string()),
        state: committed.state.as_str().to_string(),
        entries: counters.entries.load(Relaxed),
        files_read: counters.files_read.load(Relaxed),
        files_reused: counters.files_reused.load(Relaxed),
        files_skipped: error_count,
        excluded: counters.excluded.load(Relaxed),
        bytes_read: counters.bytes_read.load(Relaxed),
        bytes_sent: counters.bytes_sent.load(Relaxed),
        chunks_sent: counters.chunks_sent.load(Relaxed),
        logical_size: committed.logical_size,
        duration_secs: started.elapsed().as_secs_f64(),
        errors,
    })
}

/// Streams the parent manifest alongside the walk (both in walk order).
struct ParentCursor {
    entries: Option<ManifestEntries>,
    peeked: Option<Entry>,
}

impl ParentCursor {
    /// Returns the parent's entry at `path`, if it has one.
    fn find(&mut self, path: &[u8]) -> Result<Option<Entry>, AgentError> {
        let Some(src) = self.entries.as_mut() else {
            return Ok(None);
        };
        loop {
            if self.peeked.is_none() {
                match src.blocking_next() {
                    Some(Ok(e)) => self.peeked = Some(e),
                    Some(Err(e)) => return Err(e.into()),
                    None => {
                        self.entries = None;
                        return Ok(None);
                    }
                }
            }
            let p = self.peeked.as_ref().expect("set above");
            match cairn_core::path::walk_cmp(&p.path, path) {
                std::cmp::Ordering::Less => self.peeked = None,
                std::cmp::Ordering::Equal => return Ok(self.peeked.take()),
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn walk_loop(
    source: PathBuf,
    rules: Arc<Rules>,
    parent: Option<ManifestEntries>,
    job_tx: xch::Sender<FileJob>,
    reuse_tx: xch::Sender<FileJob>,
    slot_tx: xch::Sender<Slot>,
    counters: Arc<Counters>,
    progress: Arc<Progress>,
    abort: Arc<AtomicBool>,
) -> Result<(), AgentError> {
    let mut parent = ParentCursor {
        entries: parent,
        peeked: None,
    };
    let excl_rules = rules.clone();
    let excl_counters = counters.clone();
    let walker = cairn_fs::Walker::new(&source, move |rel: &[u8], is_dir: bool| {
        let out = excl_rules.excluded(rel, is_dir);
        if out {
            excl_counters.excluded.fetch_add(1, Relaxed);
        }
        out
    });
    let mut first_names: HashSet<InodeKey> = HashSet::new();
    let mut first_path: HashMap<InodeKey, Vec<u8>> = HashMap::new();
    for item in walker {
        if abort.load(Relaxed) || progress.is_cancelled() {
            break;
        }
        let item = match item {
            Ok(i) => i,
            Err(e) => {
                counters.error(e.to_string());
                continue;
            }
        };
        let mut entry = match cairn_fs::read_entry(&item.abs, item.rel.clone(), &item.md) {
            Ok(e) => e,
            Err(e) => {
                counters.error(e.to_string());
                continue;
            }
        };
        counters.entries.fetch_add(1, Relaxed);
        use std::os::unix::fs::MetadataExt;
        let slot = if entry.kind == EntryKind::File {
            progress.add_total(1, entry.size);
            let key = (item.md.dev(), item.md.ino());
            let multi = item.md.nlink() > 1;
            if multi && first_names.contains(&key) {
                entry.kind = EntryKind::Hardlink;
                entry.link_target = first_path.get(&key).cloned().unwrap_or_default();
                progress.add_done(1, entry.size);
                Slot::Link(entry, key)
            } else {
                let key = if multi {
                    first_names.insert(key);
                    first_path.insert(key, entry.path.clone());
                    Some(key)
                } else {
                    None
                };
                let before = parent.find(&entry.path)?;
                match before {
                    Some(b) if cairn_core::change::unchanged(&b, &entry) => {
                        entry.chunks = b.chunks;
                        entry.holes = b.holes;
                        let (tx, rx) = xch::bounded(1);
                        let job = FileJob {
                            abs: item.abs,
                            entry,
                            reply: tx,
                        };
                        if reuse_tx.send(job).is_err() {
                            break;
                        }
                        Slot::Pending(rx, key)
                    }
                    _ => {
                        let (tx, rx) = xch::bounded(1);
                        let job = FileJob {
                            abs: item.abs,
                            entry,
                            reply: tx,
                        };
                        if job_tx.send(job).is_err() {
                            break;
                        }
                        Slot::Pending(rx, key)
                    }
                }
            }
        } else {
            Slot::Ready(entry, None)
        };
        if slot_tx.send(slot).is_err() {
            break;
        }
    }
    Ok(())
}

/// Confirms the chunks of unchanged files with the cluster before the manifest reuses them
/// (see the module note): batches of files are asked about at once; a file all of whose
/// chunks the cluster holds is reused, any other is read again.
fn reuse_loop(
    rt: tokio::runtime::Handle,
    cluster: Client,
    jobs: xch::Receiver<FileJob>,
    readers: xch::Sender<FileJob>,
    counters: Arc<Counters>,
    progress: Arc<Progress>,
    abort: Arc<AtomicBool>,
) -> Result<(), AgentError> {
    let mut batch: Vec<FileJob> = Vec::new();
    let mut ids = 0usize;
    let mut open = true;
    while open || !batch.is_empty() {
        let flush = match jobs.recv_timeout(Duration::from_millis(20)) {
            Ok(job) => {
                ids += job.entry.chunks.len();
                batch.push(job);
                ids >= BATCH_CHUNKS
            }
            Err(xch::RecvTimeoutError::Timeout) => true,
            Err(xch::RecvTimeoutError::Disconnected) => {
                open = false;
                true
            }
        };
        if !flush || batch.is_empty() {
            continue;
        }
        ids = 0;
        let files = std::mem::take(&mut batch);
        if abort.load(Relaxed) || progress.is_cancelled() {
            for f in files {
                let _ = f.reply.send(None);
            }
            continue;
        }
        let mut ask: Vec<ChunkId> = files
            .iter()
            .flat_map(|f| f.entry.chunks.iter().map(|c| c.id))
            .collect();
        ask.sort_unstable();
        ask.dedup();
        let lacking: HashSet<ChunkId> = match rt.block_on(cluster.missing(&ask)) {
            Ok(m) => m.into_iter().collect(),
            Err(e) => {
                abort.store(true, Relaxed);
                for f in files {
                    let _ = f.reply.send(None);
                }
                return Err(e.into());
            }
        };
        for mut f in files {
            if f.entry.chunks.iter().all(|c| !lacking.contains(&c.id)) {
                counters.files_reused.fetch_add(1, Relaxed);
                progress.add_done(1, f.entry.size);
                let _ = f.reply.send(Some(f.entry));
            } else {
                tracing::warn!(
                    path = %f.abs.display(),
                    "the cluster no longer holds every chunk of this unchanged file; reading it again"
                );
                f.entry.chunks.clear();
                f.entry.holes.clear();
                if let Err(xch::SendError(f)) = readers.send(f) {
                    let _ = f.reply.send(None);
                }
            }
        }
    }
    Ok(())
}

fn reader_loop(
    jobs: xch::Receiver<FileJob>,
    chunk_tx: mpsc::Sender<RawChunk>,
    counters: Arc<Counters>,
    progress: Arc<Progress>,
    abort: Arc<AtomicBool>,
) {
    for job in jobs {
        if abort.load(Relaxed) || progress.is_cancelled() {
            let _ = job.reply.send(None);
            continue;
        }
        let path = job.abs.display().to_string();
        match read_file(job.abs, job.entry, &chunk_tx, &counters, &progress) {
            Ok(Some(e)) => {
                counters.files_read.fetch_add(1, Relaxed);
                let _ = job.reply.send(Some(e));
            }
            Ok(None) => {
                // The uploader is gone: stop quietly; it reports the cause.
                abort.store(true, Relaxed);
                let _ = job.reply.send(None);
            }
            Err(e) => {
                counters.error(format!("{path}: {e}"));
                let _ = job.reply.send(None);
            }
        }
    }
}

fn open_noatime(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let base = libc::O_NOFOLLOW;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(base | libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(base)
            .open(path),
        r => r,
    }
}

/// Reads and chunks one file. `Ok(None)` means the uploader has gone away.
fn read_file(
    abs: PathBuf,
    mut entry: Entry,
    chunk_tx: &mpsc::Sender<RawChunk>,
    counters: &Counters,
    progress: &Progress,
) -> std::io::Result<Option<Entry>> {
    let file = open_noatime(&abs)?;
    let holes = cairn_fs::holes(&file, entry.size)?;
    let hole_bytes: u64 = holes.iter().map(|h| h.1).sum();
    let data_len = entry.size.saturating_sub(hole_bytes);
    let params = ChunkerParams::default();
    let mut chunks = Vec::new();
    let mut read_total = 0u64;
    let mut emit = |data: Vec<u8>| -> bool {
        let id = ChunkId::of(&data);
        let len = data.len() as u32;
        read_total += len as u64;
        counters.bytes_read.fetch_add(len as u64, Relaxed);
        progress.add_done(0, len as u64);
        progress.add_pending(len as u64);
        chunks.push(ChunkRef { id, len });
        chunk_tx
            .blocking_send(RawChunk {
                id,
                data,
                pending: len as u64,
            })
            .is_ok()
    };
    let mut reader = cairn_fs::DataReader::new(file, entry.size, &holes);
    if data_len <= READ_WHOLE {
        let mut buf = Vec::with_capacity(data_len as usize);
        reader.by_ref().take(READ_WHOLE + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 <= params.min as u64 {
            if !buf.is_empty() && !emit(buf) {
                return Ok(None);
            }
        } else {
            let mut off = 0usize;
            for len in cdc::cut_lengths(&buf, params) {
                if !emit(buf[off..off + len].to_vec()) {
                    return Ok(None);
                }
                off += len;
            }
        }
    } else {
        for c in StreamChunker::new(reader, params) {
            if !emit(c?) {
                return Ok(None);
            }
        }
    }
    if read_total != data_len {
        if !holes.is_empty() {
            return Err(std::io::Error::other(format!(
                "sparse file changed while being read ({data_len} data bytes expected, {read_total} read)"
            )));
        }
        // A file that grew or shrank under us: keep the consistent prefix we read.
        tracing::warn!(path = %abs.display(), expected = data_len, read = read_total, "file changed while being read");
        entry.size = read_total;
    }
    entry.holes = holes;
    entry.chunks = chunks;
    Ok(Some(entry))
}

/// What a hardlink's later names copy from its first name.
struct Content {
    chunks: Vec<ChunkRef>,
    holes: Vec<(u64, u64)>,
    size: u64,
}

impl Content {
    fn of(e: &Entry) -> Content {
        Content {
            chunks: e.chunks.clone(),
            holes: e.holes.clone(),
            size: e.size,
        }
    }
}

fn assemble_loop(
    slots: xch::Receiver<Slot>,
    chunk_tx: mpsc::Sender<RawChunk>,
    counters: Arc<Counters>,
) -> Result<(ChunkId, cairn_core::manifest::ManifestRoot), AgentError> {
    let mut w = ManifestWriter::new();
    // Content of the first name of each multiply-linked inode, for its later names.
    let mut inodes: HashMap<InodeKey, Content> = HashMap::new();
    let mut content: HashSet<ChunkId> = HashSet::new();
    let store = |bytes: Vec<u8>, w: &mut ManifestWriter| -> Result<(), AgentError> {
        let id = ChunkId::of(&bytes);
        w.chunk_stored(id, bytes.len());
        chunk_tx
            .blocking_send(RawChunk {
                id,
                data: bytes,
                pending: 0,
            })
            .map_err(|_| AgentError::Internal("upload stopped".into()))
    };
    for slot in slots {
        let entry = match slot {
            Slot::Ready(e, key) => {
                if let Some(k) = key {
                    inodes.insert(k, Content::of(&e));
                }
                Some(e)
            }
            Slot::Pending(rx, key) => match rx.recv() {
                Ok(Some(e)) => {
                    if let Some(k) = key {
                        inodes.insert(k, Content::of(&e));
                    }
                    Some(e)
                }
                Ok(None) => None,
                Err(_) => return Err(AgentError::Internal("reader stopped".into())),
            },
            Slot::Link(mut e, key) => match inodes.get(&key) {
                Some(c) => {
                    e.chunks = c.chunks.clone();
                    e.holes = c.holes.clone();
                    e.size = c.size;
                    Some(e)
                }
                None => {
                    counters.error(format!(
                        "{}: hardlink to a file that could not be read",
                        cairn_core::path::display(&e.path)
                    ));
                    None
                }
            },
        };
        let Some(e) = entry else { continue };
        for c in &e.chunks {
            if content.len() < 4 << 20 {
                content.insert(c.id);
            }
        }
        if let Some(bytes) = w.push(&e)? {
            store(bytes, &mut w)?;
        }
    }
    if let Some(bytes) = w.finish() {
        store(bytes, &mut w)?;
    }
    w.set_content_chunks(content.len() as u64);
    let root = w.root().clone();
    let bytes = root.encode();
    let id = ChunkId::of(&bytes);
    chunk_tx
        .blocking_send(RawChunk {
            id,
            data: bytes,
            pending: 0,
        })
        .map_err(|_| AgentError::Internal("upload stopped".into()))?;
    Ok((id, root))
}

async fn upload_loop(
    cluster: Client,
    mut rx: mpsc::Receiver<RawChunk>,
    compression: Compression,
    counters: Arc<Counters>,
    progress: Arc<Progress>,
) -> Result<(), AgentError> {
    let mut seen: HashSet<ChunkId> = HashSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let mut tasks: tokio::task::JoinSet<Result<(), AgentError>> = tokio::task::JoinSet::new();
    let mut batch: Vec<RawChunk> = Vec::new();
    let mut bytes = 0usize;
    // Sends the collected batch off (waiting for a slot when BATCHES_IN_FLIGHT are out).
    macro_rules! dispatch_batch {
        () => {
            dispatch(
                &cluster,
                &sem,
                &mut tasks,
                &mut batch,
                compression,
                &counters,
                &progress,
            )
            .await?
        };
    }
    let result: Result<(), AgentError> = async {
        loop {
            let msg = if batch.is_empty() {
                rx.recv().await
            } else {
                match tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => {
                        dispatch_batch!();
                        bytes = 0;
                        continue;
                    }
                }
            };
            let Some(c) = msg else { break };
            if !seen.insert(c.id) {
                progress.release_pending(c.pending);
                continue;
            }
            bytes += c.data.len();
            batch.push(c);
            if bytes >= BATCH_BYTES || batch.len() >= BATCH_CHUNKS {
                dispatch_batch!();
                bytes = 0;
            }
            while let Some(done) = tasks.try_join_next() {
                done.map_err(|e| AgentError::Internal(e.to_string()))??;
            }
        }
        if !batch.is_empty() {
            dispatch_batch!();
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| AgentError::Internal(e.to_string()))??;
        }
        Ok(())
    }
    .await;
    // Dropping the receiver makes readers and the assembler stop.
    drop(rx);
    result
}

async fn dispatch(
    cluster: &Client,
    sem: &Arc<tokio::sync::Semaphore>,
    tasks: &mut tokio::task::JoinSet<Result<(), AgentError>>,
    batch: &mut Vec<RawChunk>,
    compression: Compression,
    counters: &Arc<Counters>,
    progress: &Arc<Progress>,
) -> Result<(), AgentError> {
    let permit = sem
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| AgentError::Internal(e.to_string()))?;
    let chunks = std::mem::take(batch);
    let cluster = cluster.clone();
    let counters = counters.clone();
    let progress = progress.clone();
    tasks.spawn(async move {
        let _permit = permit;
        let ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
        let pending: u64 = chunks.iter().map(|c| c.pending).sum();
        let missing: HashSet<ChunkId> = cluster.missing(&ids).await?.into_iter().collect();
        if missing.is_empty() {
            progress.release_pending(pending);
            return Ok(());
        }
        let todo: Vec<RawChunk> = chunks
            .into_iter()
            .filter(|c| missing.contains(&c.id))
            .collect();
        let encoded = tokio::task::spawn_blocking(move || {
            todo.iter()
                .map(|c| cairn_chunker::codec::encode_with_id(c.id, &c.data, compression))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| AgentError::Internal(e.to_string()))?;
        let n = encoded.len() as u64;
        let sent: u64 = encoded.iter().map(|c| c.data.len() as u64).sum();
        counters.limiter.admit(sent, &progress).await?;
        cluster.put(encoded).await?;
        progress.release_pending(pending);
        counters.chunks_sent.fetch_add(n, Relaxed);
        counters.bytes_sent.fetch_add(sent, Relaxed);
        Ok(())
    });
    Ok(())
}
