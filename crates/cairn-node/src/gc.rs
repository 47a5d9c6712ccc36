//! Garbage collection: reclaiming chunks no committed backup references.
//!
//! # Why it is safe beside running backups
//! A chunk may be referenced by a backup that is not committed yet. Such a backup got the
//! chunk in one of three ways, each covered:
//!
//! | how the backup uses the chunk            | what protects it                                |
//! |------------------------------------------|-------------------------------------------------|
//! | uploaded it                              | the node records the chunk as *touched*         |
//! | asked `Missing` and heard "present"      | the node records the chunk as *touched*         |
//! | reused it from its parent's manifest     | the parent is committed, so the mark finds it   |
//!
//! The protocol (coordinated by the raft leader, [`collect`]):
//! 1. `T` = now. Wait until every backup session that opened before `T` has closed
//!    (committed or failed) or expired ([`cairn_core::retention::blocking_sessions`]).
//!    Backups that started before `T` may have touched their chunks before `T`; once they
//!    are committed, the mark sees their chunks.
//! 2. Mark: read every committed backup (linearizable) and walk its manifest; the set `R`
//!    holds every chunk id referenced, manifest chunks included.
//! 3. Sweep on every node ([`Gc::sweep`]): remove each local chunk that is not in `R` and was
//!    not touched at or after `T`. A backup that started after `T` touched every chunk it
//!    uploaded or found present after `T`, so nothing it uses is removed. Then compact the
//!    segments whose dead share is high.
//!
//! Touches are kept in memory. A node that restarted after `T` has lost the touches made
//! before its restart, so it skips the sweep (reported) rather than guess.
//!
//! One gap remains and fails safe: a backup that reuses chunks from a parent which is
//! deleted after the mark, while GC sweeps them. Its commit then finds chunks missing and is
//! refused (no partial backup becomes visible); re-running it uploads what is missing.
//!
//! | operation   | may run beside GC? |
//! |-------------|--------------------|
//! | backup      | yes (see above)    |
//! | restore     | yes: committed backups are marked |
//! | delete      | yes: its chunks go at the next GC |
//! | repair      | yes: copies are touched where they land |
//! | scrub       | yes |

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use cairn_core::manifest::{decode_chunk, ManifestRoot};
use cairn_core::retention::blocking_sessions;
use cairn_core::{ChunkId, ErrorCode};
use cairn_meta::MetaNode;
use cairn_proto::{pb, status};
use tonic::Status;

use crate::error::{join_status, meta_status, store_status};
use crate::peers::ClusterChunks;

/// Dead share of a pack segment above which a sweep compacts it.
pub const COMPACT_DEAD_RATIO: f64 = 0.3;
/// Ids per sweep message.
const IDS_PER_MESSAGE: usize = 50_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The chunks a node was asked about or given since it started, with the time.
pub struct Touches {
    started_ms: i64,
    at: Mutex<HashMap<ChunkId, i64>>,
}

impl Default for Touches {
    fn default() -> Self {
        Touches {
            started_ms: now_ms(),
            at: Mutex::default(),
        }
    }
}

impl Touches {
    /// Records that `ids` were written or reported present now.
    pub fn touch(&self, ids: impl IntoIterator<Item = ChunkId>) {
        let now = now_ms();
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            at.insert(id, now);
        }
    }

    fn since(&self, id: &ChunkId, t: i64) -> bool {
        self.at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|at| *at >= t)
    }

    /// Forgets touches older than `t` (they can no longer protect anything).
    fn prune(&self, t: i64) {
        self.at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, at| *at >= t);
    }
}

/// Removes unreferenced, untouched chunks from this node and compacts (step 3).
pub async fn sweep(
    cluster: &ClusterChunks,
    touches: &Touches,
    gc_started_ms: i64,
    referenced: HashSet<ChunkId>,
) -> Result<pb::SweepReport, Status> {
    let mut report = pb::SweepReport::default();
    if touches.started_ms > gc_started_ms {
        tracing::warn!("node restarted after garbage collection began; not sweeping this time");
        report.skipped = true;
        return Ok(report);
    }
    let ids = cluster.local_ids().await?;
    let doomed: Vec<ChunkId> = ids
        .into_iter()
        .filter(|id| !referenced.contains(id) && !touches.since(id, gc_started_ms))
        .collect();
    let store = cluster.store.clone();
    let (removed, compact) = tokio::task::spawn_blocking(move || {
        let removed = store.remove(&doomed)?;
        store.flush()?;
        let compact = store.compact(COMPACT_DEAD_RATIO)?;
        Ok::<_, cairn_store::StoreError>((removed, compact))
    })
    .await
    .map_err(join_status)?
    .map_err(store_status)?;
    report.removed = removed;
    report.bytes_reclaimed = compact.bytes_reclaimed;
    report.segments_compacted = compact.segments_compacted as u64;
    touches.prune(gc_started_ms - cairn_core::retention::SESSION_TTL_MS);
    tracing::info!(
        removed,
        bytes_reclaimed = report.bytes_reclaimed,
        segments = report.segments_compacted,
        "garbage swept"
    );
    Ok(report)
}

/// Runs a whole collection (steps 1 to 3); called on the leader.
pub async fn collect(
    meta: &MetaNode,
    cluster: &ClusterChunks,
    wait: Duration,
) -> Result<pb::GcReport, Status> {
    // 1. Wait for backups that started before us.
    let started = now_ms();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        meta.read_barrier().await.map_err(meta_status)?;
        let sessions = meta.sessions().map_err(meta_status)?;
        let blocking = blocking_sessions(&sessions, started, now_ms());
        let Some(oldest) = blocking.iter().min_by_key(|s| s.started_ms) else {
            break;
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(status(
                ErrorCode::Conflict,
                format!(
                    "{} backup(s) that started before garbage collection are still running (oldest: environment {} on {:?}, for {}s); nothing was collected — retry when they finish",
                    blocking.len(),
                    oldest.env,
                    oldest.host,
                    (now_ms() - oldest.started_ms) / 1000
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 2. Mark.
    meta.read_barrier().await.map_err(meta_status)?;
    let backups = meta.list_backups(None).map_err(meta_status)?;
    let mut referenced: HashSet<ChunkId> = HashSet::new();
    for b in &backups {
        referenced.insert(b.manifest);
        let root = ManifestRoot::decode(&cluster.content(b.manifest).await?).map_err(|e| {
            status(
                ErrorCode::Corrupt,
                format!("manifest of backup {}: {e}", b.id),
            )
        })?;
        for mc in &root.chunks {
            referenced.insert(mc.id);
            let bytes = cluster.content(mc.id).await?;
            let entries = decode_chunk(&bytes).map_err(|e| {
                status(
                    ErrorCode::Corrupt,
                    format!("manifest of backup {}: {e}", b.id),
                )
            })?;
            for e in entries {
                referenced.extend(e.chunks.iter().map(|c| c.id));
            }
        }
    }
    tracing::info!(
        backups = backups.len(),
        referenced = referenced.len(),
        "garbage collection marked"
    );

    // 3. Sweep everywhere.
    let mut report = pb::GcReport {
        backups: backups.len() as u64,
        referenced: referenced.len() as u64,
        ..Default::default()
    };
    let ids: Vec<Vec<u8>> = referenced.iter().map(|id| id.0.to_vec()).collect();
    let nodes = match cluster.epoch() {
        Some(e) => e.nodes.iter().map(|n| (n.id, n.addr.clone())).collect(),
        None => vec![(cluster.node_id, String::new())],
    };
    for (id, addr) in nodes {
        let r = if id == cluster.node_id {
            sweep(cluster, &cluster.touches, started, referenced.clone()).await
        } else {
            let msgs: Vec<pb::SweepRequest> = ids
                .chunks(IDS_PER_MESSAGE)
                .map(|c| pb::SweepRequest {
                    gc_started_ms: started,
                    referenced: c.to_vec(),
                })
                .chain(std::iter::once(pb::SweepRequest {
                    gc_started_ms: started,
                    referenced: Vec::new(),
                }))
                .collect();
            match cluster.peers.chunks(&addr) {
                Ok(mut c) => c
                    .sweep(futures::stream::iter(msgs))
                    .await
                    .map(|r| r.into_inner()),
                Err(e) => Err(e),
            }
        };
        match r {
            Ok(r) => {
                report.removed += r.removed;
                report.bytes_reclaimed += r.bytes_reclaimed;
                report.segments_compacted += r.segments_compacted;
                if r.skipped {
                    report.nodes_skipped.push(id);
                }
            }
            Err(e) => {
                tracing::warn!(node = id, error = %e, "node not swept");
                report.nodes_skipped.push(id);
            }
        }
    }
    Ok(report)
}
