//! Garbage collection: reclaiming chunks no committed backup references.
//!
//! # Why it is safe beside running backups
//! A chunk may be referenced by a backup that is not committed yet. Such a backup got the
//! chunk in one of three ways, each covered:
//!
//! | how the backup uses the chunk             | what protects it                               |
//! |-------------------------------------------|------------------------------------------------|
//! | uploaded it                               | every owner that stores it records a *touch*   |
//! | asked `Missing` and heard "present"       | every owner that holds it records a *touch*    |
//! | reused it from its parent's manifest      | the agent asks `Missing` for it too (touches); a chunk the cluster lost meanwhile is read from the file again |
//!
//! `Missing` from a client is answered for the cluster: the node asks every owner of each
//! chunk, so a touch lands on every copy, not only on the primary's.
//!
//! The protocol (coordinated by the raft leader, [`collect`]), with no clock compared
//! between nodes:
//! 1. **Mark the nodes.** Each node answers its *touch mark* (`Mark`): a boot id and the
//!    sequence number of its last touch. Touches after it have greater numbers.
//! 2. **Wait for the sessions open now.** Every backup registers a session before it uploads
//!    or asks anything; the leader reads the open sessions (linearizable), closes those that
//!    expired (not renewed for 15 minutes: a commit in a closed session is refused) and waits until the others
//!    have closed. A session opened later was committed after step 1 ended, so every touch
//!    its backup makes comes after every node's mark.
//! 3. **Mark the catalog.** Read every committed backup (linearizable) and walk its
//!    manifest; the set `R` holds every chunk id referenced, manifest chunks included.
//! 4. **Sweep** on every node ([`sweep`]): remove each local chunk that is neither in `R`
//!    nor touched after the node's mark (`cairn_core::plan::gc::doomed`); then compact segments that are mostly
//!    dead. A backup of step 2 is committed (so in `R`) or failed; a later one touched all
//!    it uses after the mark.
//!
//! Checking a chunk present and touching it is one step against the sweep: both hold the
//! node's touch gate (shared), the sweep holds it alone while it decides and removes, so a
//! "present" answer is never followed by the removal of that copy.
//!
//! Touches are kept in memory. A node that restarted since its mark (another boot id) or
//! was not reachable for one skips the sweep (reported) rather than guess.
//!
//! | operation   | may run beside GC? |
//! |-------------|--------------------|
//! | backup      | yes (see above)    |
//! | restore     | yes: committed backups are marked |
//! | delete      | yes: its chunks go at the next GC |
//! | repair      | yes: copies are touched where they land |
//! | scrub       | yes |

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cairn_core::manifest::{decode_chunk, ManifestRoot};
use cairn_core::retention::{sessions_at_gc_start, still_waiting};
use cairn_core::runs::{GcRun, SweepRun};
use cairn_core::{ChunkId, ErrorCode};
use cairn_meta::MetaNode;
use cairn_proto::{pb, status};
use tonic::Status;

use crate::clock::now_ms;
use crate::error::{join_status, meta_status, store_status};
use crate::peers::ClusterChunks;
use crate::touch::Mark;
#[cfg(test)]
use crate::touch::Touches;

/// Dead share of a pack segment above which a sweep compacts it.
pub const COMPACT_DEAD_RATIO: f64 = 0.3;
/// Ids per sweep message.
const IDS_PER_MESSAGE: usize = 50_000;

/// Removes unreferenced, untouched chunks from this node and compacts (step 4); records
/// the outcome in the node's last runs (`crate::last_runs`).
pub async fn sweep(
    cluster: &ClusterChunks,
    mark: &Mark,
    referenced: HashSet<ChunkId>,
) -> Result<pb::SweepReport, Status> {
    let result = sweep_here(cluster, mark, referenced).await;
    let record = match &result {
        Ok(r) => SweepRun {
            removed: r.removed,
            bytes_reclaimed: r.bytes_reclaimed,
            segments_compacted: r.segments_compacted,
            skipped: r.skipped,
            ..SweepRun::default()
        },
        Err(e) => SweepRun {
            error: Some(crate::last_runs::run_error(e)),
            ..SweepRun::default()
        },
    };
    let record = SweepRun {
        at_ms: now_ms(),
        ..record
    };
    cluster.runs.record(|r| r.sweep = Some(record)).await;
    result
}

async fn sweep_here(
    cluster: &ClusterChunks,
    mark: &Mark,
    referenced: HashSet<ChunkId>,
) -> Result<pb::SweepReport, Status> {
    let touches = cluster.touches.clone();
    let mut report = pb::SweepReport::default();
    if mark.boot != touches.boot {
        tracing::warn!("node restarted after garbage collection began; not sweeping this time");
        report.skipped = true;
        return Ok(report);
    }
    // Listed outside the gate: a chunk stored after the listing is not in it, and one in it
    // that is touched before the removal below is spared by the decision.
    let ids = cluster.local_ids().await?;
    let store = cluster.store.clone();
    let seq = mark.seq;
    let (removed, compact) = tokio::task::spawn_blocking(move || {
        let removed = {
            let _alone = touches.gate.write().unwrap_or_else(|p| p.into_inner());
            let doomed =
                cairn_core::plan::gc::doomed(ids, &referenced, |id| touches.touched_after(id, seq));
            let removed = store.remove(&doomed)?;
            store.flush()?;
            removed
        };
        touches.release(seq);
        let compact = store.compact(COMPACT_DEAD_RATIO)?;
        Ok::<_, cairn_store::StoreError>((removed, compact))
    })
    .await
    .map_err(join_status)?
    .map_err(store_status)?;
    report.removed = removed;
    report.bytes_reclaimed = compact.bytes_reclaimed;
    report.segments_compacted = compact.segments_compacted as u64;
    tracing::info!(
        removed,
        bytes_reclaimed = report.bytes_reclaimed,
        segments = report.segments_compacted,
        "garbage swept"
    );
    Ok(report)
}

/// Runs a whole collection (steps 1 to 4); called on the leader. Its outcome (or why it
/// was refused) is recorded in this node's last runs (`crate::last_runs`).
pub async fn collect(
    meta: &MetaNode,
    cluster: &ClusterChunks,
    wait: Duration,
) -> Result<pb::GcReport, Status> {
    let started = std::time::Instant::now();
    let result = collect_here(meta, cluster, wait).await;
    let record = match &result {
        Ok(r) => GcRun {
            backups: r.backups,
            referenced: r.referenced,
            removed: r.removed,
            bytes_reclaimed: r.bytes_reclaimed,
            segments_compacted: r.segments_compacted,
            nodes_skipped: r.nodes_skipped.clone(),
            ..GcRun::default()
        },
        Err(e) => GcRun {
            error: Some(crate::last_runs::run_error(e)),
            ..GcRun::default()
        },
    };
    let record = GcRun {
        at_ms: now_ms(),
        duration_ms: started.elapsed().as_millis() as u64,
        ..record
    };
    cluster.runs.record(|r| r.gc = Some(record)).await;
    result
}

async fn collect_here(
    meta: &MetaNode,
    cluster: &ClusterChunks,
    wait: Duration,
) -> Result<pb::GcReport, Status> {
    // 1. Every node's touch mark.
    let nodes: Vec<(u64, String)> = match cluster.epoch() {
        Some(e) => e.nodes.iter().map(|n| (n.id, n.addr.clone())).collect(),
        None => vec![(cluster.node_id, String::new())],
    };
    let mut marks: HashMap<u64, Mark> = HashMap::new();
    for (id, addr) in &nodes {
        if *id == cluster.node_id {
            marks.insert(*id, cluster.touches.mark());
            continue;
        }
        let answer = match cluster.peers.chunks(addr) {
            Ok(mut c) => c.mark(pb::MarkRequest {}).await.map(|r| r.into_inner()),
            Err(e) => Err(e),
        };
        match answer {
            Ok(m) => {
                marks.insert(
                    *id,
                    Mark {
                        boot: m.boot,
                        seq: m.seq,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(node = id, error = %e, "node not marked; it will not be swept")
            }
        }
    }

    // 2. Wait for the backups open now; close the expired ones.
    meta.read_barrier().await.map_err(meta_status)?;
    let open = meta.sessions().map_err(meta_status)?;
    let (live, expired) = sessions_at_gc_start(&open, now_ms());
    for s in expired {
        tracing::warn!(session = %s.id, env = %s.env, "closing an expired backup session");
        meta.write_system(cairn_meta::Command::CloseSession { id: s.id })
            .await
            .map_err(meta_status)?;
    }
    let waiting: HashSet<uuid::Uuid> = live.iter().map(|s| s.id).collect();
    let deadline = tokio::time::Instant::now() + wait;
    while !waiting.is_empty() {
        meta.read_barrier().await.map_err(meta_status)?;
        let sessions = meta.sessions().map_err(meta_status)?;
        let blocking = still_waiting(&waiting, &sessions);
        let Some(oldest) = blocking.iter().min_by_key(|s| s.started_ms) else {
            break;
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(status(
                ErrorCode::Conflict,
                format!(
                    "{} backup(s) that were running when garbage collection began are still running (oldest: environment {} on {:?}, for {}s); nothing was collected — retry when they finish",
                    blocking.len(),
                    oldest.env,
                    oldest.host,
                    (now_ms() - oldest.started_ms) / 1000
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cairn_proto::failpoint::pause_async(Some(cluster.failpoints.clone()), "gc-before-mark").await;
    // 3. Mark the catalog.
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

    cairn_proto::failpoint::pause_async(Some(cluster.failpoints.clone()), "gc-before-sweep").await;
    // 4. Sweep everywhere.
    let mut report = pb::GcReport {
        backups: backups.len() as u64,
        referenced: referenced.len() as u64,
        ..Default::default()
    };
    let ids: Vec<Vec<u8>> = referenced.iter().map(|id| id.0.to_vec()).collect();
    for (id, addr) in nodes {
        let Some(mark) = marks.remove(&id) else {
            report.nodes_skipped.push(id);
            continue;
        };
        let r = if id == cluster.node_id {
            sweep(cluster, &mark, referenced.clone()).await
        } else {
            let msgs: Vec<pb::SweepRequest> = ids
                .chunks(IDS_PER_MESSAGE)
                .map(|c| pb::SweepRequest {
                    referenced: c.to_vec(),
                    boot: mark.boot.clone(),
                    seq: mark.seq,
                })
                .chain(std::iter::once(pb::SweepRequest {
                    referenced: Vec::new(),
                    boot: mark.boot.clone(),
                    seq: mark.seq,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId::of(&[n])
    }

    #[test]
    fn the_sweep_keeps_what_is_referenced_or_touched_after_the_mark() {
        let t = Touches::default();
        t.touch([id(1)]); // before the mark
        let mark = t.mark();
        t.touch([id(2)]); // after it: a running backup found it present
        let referenced = HashSet::from([id(3)]);
        let gone =
            cairn_core::plan::gc::doomed(vec![id(1), id(2), id(3), id(4)], &referenced, |c| {
                t.touched_after(c, mark.seq)
            });
        assert_eq!(gone, vec![id(1), id(4)]);
    }

    #[test]
    fn a_second_collection_keeps_the_touches_the_first_still_needs() {
        let t = Touches::default();
        let first = t.mark();
        t.touch([id(1)]);
        let second = t.mark();
        t.touch([id(2)]);
        // The second collection finishes first; the first one's touches must survive it.
        t.release(second.seq);
        assert!(t.touched_after(&id(1), first.seq));
        assert!(t.touched_after(&id(2), second.seq));
        t.release(first.seq);
        // No collection is open: every touch so far is older than any later mark.
        assert!(
            t.at.lock().unwrap().is_empty(),
            "forgotten once no mark needs them"
        );
    }
}
