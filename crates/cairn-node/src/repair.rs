//! Repair: moving chunks to where the placement says they belong.
//!
//! # Design
//! Chunk locations are computed from the placement epoch, never stored, so "where a chunk
//! should be" changes only with the epoch, and "where it is" is whatever the nodes hold.
//! Each node repairs what it holds, independently:
//!
//! 1. For every chunk in the local store, compute its owners under the epoch in force.
//! 2. Ask every other owner (batched) whether it lacks the chunk; copy it to those that do
//!    (replica puts: durable on the owner before it answers).
//! 3. If this node is not an owner (it was removed, is draining, or took an upload as a
//!    fallback) and every owner now confirmably holds the chunk, drop the local copy
//!    (the rule is `cairn_core::plan::repair::may_drop`).
//!
//! A copy is dropped only after all of its owners answered that they hold it, so a pass can
//! never reduce the number of copies below what the placement asks for; an owner that does
//! not answer leaves the chunk where it is and counts in the backlog. Passes are idempotent
//! and may be interrupted at any point (a crash mid-pass only leaves extra copies).
//!
//! # When passes run
//! A background loop runs a pass when the epoch changed since the last pass that ended with
//! an empty backlog, when the last pass left a backlog (an owner was down), and otherwise
//! every [`FULL_PASS_EVERY`]. `Chunks.Repair` runs one now (used by `remove-node` to drain a
//! node, and after `add-node`). Passes on one node never overlap.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_core::runs::RepairRun;
use cairn_core::ChunkId;
use cairn_proto::pb;
use tonic::Status;

use crate::error::{join_status, store_status};
use crate::peers::ClusterChunks;

/// Chunks handled per round of questions to the owners.
const BATCH: usize = 2048;
/// A pass runs at least this often even when nothing seems to need it.
pub const FULL_PASS_EVERY: Duration = Duration::from_secs(600);

/// Runs repair passes for one node.
pub struct Repairer {
    cluster: ClusterChunks,
    running: tokio::sync::Mutex<()>,
    last: Mutex<Option<(Instant, pb::RepairReport)>>,
    /// The epoch of the last pass that ended with an empty backlog (0: none yet).
    clean_epoch: AtomicU64,
}

impl Repairer {
    pub fn new(cluster: ClusterChunks) -> Repairer {
        Repairer {
            cluster,
            running: tokio::sync::Mutex::new(()),
            last: Mutex::new(None),
            clean_epoch: AtomicU64::new(0),
        }
    }

    /// The backlog of the last pass (copies it could not make).
    pub fn backlog(&self) -> u64 {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, r)| r.backlog)
            .unwrap_or(0)
    }

    /// Runs passes in the background, checking every `interval` whether one is due.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            if !self.due() {
                continue;
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "repair pass failed");
            }
        }
    }

    fn due(&self) -> bool {
        let Some(epoch) = self.cluster.epoch() else {
            return false;
        };
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last {
            None => true,
            Some((at, report)) => {
                report.backlog > 0
                    || epoch.number != self.clean_epoch.load(Ordering::Relaxed)
                    || at.elapsed() >= FULL_PASS_EVERY
            }
        }
    }

    /// Runs one pass now (waiting for a running one to end first) and records its outcome
    /// in the node's last runs (`crate::last_runs`); a node without a placement yet has
    /// nothing to repair and records nothing.
    pub async fn pass(&self) -> Result<pb::RepairReport, Status> {
        let _running = self.running.lock().await;
        if self.cluster.epoch().is_none() {
            return Ok(pb::RepairReport::default());
        }
        let started = Instant::now();
        let result = self.pass_alone().await;
        let record = match &result {
            Ok(r) => RepairRun {
                epoch: r.epoch,
                checked: r.checked,
                pushed: r.pushed,
                dropped: r.dropped,
                backlog: r.backlog,
                ..RepairRun::default()
            },
            Err(e) => RepairRun {
                error: Some(crate::last_runs::run_error(e)),
                ..RepairRun::default()
            },
        };
        let record = RepairRun {
            at_ms: crate::clock::now_ms(),
            duration_ms: started.elapsed().as_millis() as u64,
            ..record
        };
        self.cluster.runs.record(|r| r.repair = Some(record)).await;
        result
    }

    /// One pass; the caller holds `running`.
    async fn pass_alone(&self) -> Result<pb::RepairReport, Status> {
        let mut report = pb::RepairReport::default();
        let Some(epoch) = self.cluster.epoch() else {
            return Ok(report);
        };
        report.epoch = epoch.number;
        let me = self.cluster.node_id;
        let ids = self.cluster.local_ids().await?;

        for batch in ids.chunks(BATCH) {
            report.checked += batch.len() as u64;
            let owners: HashMap<ChunkId, Vec<u64>> =
                batch.iter().map(|id| (*id, epoch.owners(id))).collect();
            let mut per_owner: BTreeMap<u64, Vec<ChunkId>> = BTreeMap::new();
            for (id, os) in &owners {
                for o in os.iter().filter(|o| **o != me) {
                    per_owner.entry(*o).or_default().push(*id);
                }
            }
            let mut confirmed: HashMap<ChunkId, usize> = HashMap::new();
            for (owner, list) in per_owner {
                let Some(url) = epoch.node(owner).map(|n| n.addr.clone()) else {
                    continue;
                };
                let lacking = match self.cluster.peers.missing_at(&url, &list).await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(node = owner, error = %e, "owner unreachable; repair later");
                        report.backlog += list.len() as u64;
                        continue;
                    }
                };
                let lacking_set: HashSet<ChunkId> = lacking.iter().copied().collect();
                for id in list.iter().filter(|id| !lacking_set.contains(id)) {
                    *confirmed.entry(*id).or_default() += 1;
                }
                if lacking.is_empty() {
                    continue;
                }
                let store = self.cluster.store.clone();
                let wanted = lacking.clone();
                let copies = tokio::task::spawn_blocking(move || {
                    wanted
                        .iter()
                        .filter_map(|id| match store.get(id) {
                            Ok(c) => Some(c),
                            Err(e) => {
                                tracing::warn!(chunk = %id, error = %e, "cannot read a chunk to repair");
                                None
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(join_status)?;
                let sent: Vec<ChunkId> = copies.iter().map(|c| c.id).collect();
                report.backlog += (lacking.len() - sent.len()) as u64;
                match self.cluster.peers.put_replica(&url, copies).await {
                    Ok(()) => {
                        report.pushed += sent.len() as u64;
                        for id in sent {
                            *confirmed.entry(id).or_default() += 1;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(node = owner, error = %e, "copy to owner failed; repair later");
                        report.backlog += sent.len() as u64;
                    }
                }
            }
            let drop: Vec<ChunkId> = owners
                .iter()
                .filter(|(id, os)| {
                    cairn_core::plan::repair::may_drop(
                        me,
                        os,
                        confirmed.get(*id).copied().unwrap_or(0),
                    )
                })
                .map(|(id, _)| *id)
                .collect();
            if !drop.is_empty() {
                let store = self.cluster.store.clone();
                report.dropped += tokio::task::spawn_blocking(move || store.remove(&drop))
                    .await
                    .map_err(join_status)?
                    .map_err(store_status)?;
            }
        }
        let store = self.cluster.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(join_status)?
            .map_err(store_status)?;
        report.chunks = self.cluster.store.stats().chunks;
        if report.backlog == 0 {
            self.clean_epoch.store(epoch.number, Ordering::Relaxed);
        }
        if report.pushed > 0 || report.dropped > 0 || report.backlog > 0 {
            tracing::info!(
                epoch = report.epoch,
                checked = report.checked,
                pushed = report.pushed,
                dropped = report.dropped,
                backlog = report.backlog,
                "repair pass done"
            );
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), report));
        Ok(report)
    }
}
