//! Scrub: re-hash every stored chunk and repair the bad copies from healthy replicas.
//!
//! # Never drop the last copy
//! A copy that fails its check is replaced only by a copy in hand, never dropped first:
//!
//! 1. **Verify** every local copy ([`ChunkStore::verify_all`]). It tells two failures apart:
//!    *corrupt* (the bytes were read and are wrong: framing, checksum or BLAKE3) and
//!    *unreadable* (the read itself failed, e.g. `EIO` from a failing disk). Nothing changes.
//! 2. **Decide** per copy ([`decide`], pure). Unreadable: keep the entry, report it, try again
//!    next scrub — the bytes may be fine, and a transient error must never cost a copy.
//!    Corrupt: look for a healthy copy on another node first.
//! 3. **Fetch** a copy from another node (owners first, then every node) and verify it: its
//!    id is the one asked for and its content re-hashes to it.
//! 4. **Replace** ([`ChunkStore::replace`]): the healthy copy is appended and synced, then the
//!    index entry is re-pointed to it in one transaction. A crash before that leaves the
//!    corrupt entry (the next scrub finds it again); after, the healthy one.
//! 5. **No healthy copy anywhere**: the corrupt entry is kept and reported as unrepaired.
//!    Reads already verify every copy and fall back to other nodes, so a kept bad copy is
//!    never served; and its bytes are still on disk for an operator to salvage. (Dropping it
//!    would make the next backup re-upload the chunk — but also make it look simply absent.)
//!
//! A replacement that fails (a full disk, say) leaves the corrupt copy in place and counts as
//! unrepaired.

use cairn_core::runs::ScrubRun;
use cairn_core::ChunkId;
use cairn_proto::pb;
use cairn_store::ChunkStore;
use std::sync::Arc;
use tonic::Status;

use crate::error::{join_status, store_status};
use crate::peers::ClusterChunks;

/// How a local copy failed its check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The bytes were read and are wrong; reading them again will not help.
    Corrupt,
    /// The read failed with an I/O error; the bytes may be fine.
    Unreadable,
}

/// What scrub does with one failed local copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Look for a healthy copy on another node before deciding.
    FetchReplica,
    /// Write the healthy copy in place of the local one.
    Replace,
    /// Keep the corrupt local copy and report it unrepaired (no healthy copy exists).
    KeepUnrepaired,
    /// Keep the entry and report it unreadable; the next scrub reads it again.
    KeepUnreadable,
}

/// Decides what to do with a failed local copy, given whether a verified healthy copy from
/// another node is in hand (`None`: not looked for yet).
pub fn decide(failure: Failure, healthy_copy: Option<bool>) -> Action {
    match (failure, healthy_copy) {
        (Failure::Unreadable, _) => Action::KeepUnreadable,
        (Failure::Corrupt, None) => Action::FetchReplica,
        (Failure::Corrupt, Some(true)) => Action::Replace,
        (Failure::Corrupt, Some(false)) => Action::KeepUnrepaired,
    }
}

/// Runs one scrub of this node's store (see the module notes), records its outcome in the
/// node's last runs (`crate::last_runs`) and reports it.
pub async fn run(
    store: &Arc<ChunkStore>,
    cluster: &ClusterChunks,
) -> Result<pb::ScrubResponse, Status> {
    let started = std::time::Instant::now();
    let result = scrub(store, cluster).await;
    let record = match &result {
        Ok(r) => ScrubRun {
            checked: r.checked,
            corrupt: r.corrupt,
            repaired: r.repaired,
            unrepaired: r.unrepaired.len() as u64,
            unreadable: r.unreadable.len() as u64,
            ..ScrubRun::default()
        },
        Err(e) => ScrubRun {
            error: Some(crate::last_runs::run_error(e)),
            ..ScrubRun::default()
        },
    };
    let record = ScrubRun {
        at_ms: crate::clock::now_ms(),
        duration_ms: started.elapsed().as_millis() as u64,
        ..record
    };
    cluster.runs.record(|r| r.scrub = Some(record)).await;
    result
}

async fn scrub(
    store: &Arc<ChunkStore>,
    cluster: &ClusterChunks,
) -> Result<pb::ScrubResponse, Status> {
    let s = store.clone();
    let report = tokio::task::spawn_blocking(move || s.verify_all())
        .await
        .map_err(join_status)?
        .map_err(store_status)?;
    let mut out = pb::ScrubResponse {
        checked: report.checked,
        corrupt: report.corrupt.len() as u64,
        ..Default::default()
    };
    let failed = report
        .corrupt
        .iter()
        .map(|id| (*id, Failure::Corrupt))
        .chain(
            report
                .unreadable
                .iter()
                .map(|id| (*id, Failure::Unreadable)),
        );
    for (id, failure) in failed {
        let mut healthy = None;
        let mut copy = None;
        loop {
            match decide(failure, healthy) {
                Action::FetchReplica => {
                    copy = cluster.peer_copy(id).await?;
                    healthy = Some(copy.is_some());
                }
                Action::Replace => {
                    let Some((chunk, _)) = copy.take() else {
                        healthy = Some(false);
                        continue;
                    };
                    match replace(store, chunk).await {
                        Replaced::Yes => out.repaired += 1,
                        Replaced::Moot => {}
                        Replaced::Failed => out.unrepaired.push(id.0.to_vec()),
                    }
                    break;
                }
                Action::KeepUnrepaired => {
                    tracing::error!(chunk = %id, "corrupt copy has no healthy replica; kept for salvage, never served");
                    out.unrepaired.push(id.0.to_vec());
                    break;
                }
                Action::KeepUnreadable => {
                    tracing::error!(chunk = %id, "stored copy unreadable (I/O error); kept, read again next scrub");
                    out.unreadable.push(id.0.to_vec());
                    break;
                }
            }
        }
    }
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.flush())
        .await
        .map_err(join_status)?
        .map_err(store_status)?;
    Ok(out)
}

enum Replaced {
    /// The healthy copy now stands in the index.
    Yes,
    /// The entry changed meanwhile (removed by a sweep, replaced by another scrub).
    Moot,
    /// The write failed; the corrupt copy stays.
    Failed,
}

/// Writes a verified healthy copy in place of a corrupt one.
async fn replace(store: &Arc<ChunkStore>, chunk: cairn_chunker::EncodedChunk) -> Replaced {
    let id: ChunkId = chunk.id;
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.replace(&chunk)).await {
        Ok(Ok(true)) => {
            tracing::warn!(chunk = %id, "corrupt copy replaced from a replica");
            Replaced::Yes
        }
        Ok(Ok(false)) => {
            tracing::info!(chunk = %id, "chunk changed during scrub; left as it now is");
            Replaced::Moot
        }
        Ok(Err(e)) => {
            tracing::error!(chunk = %id, error = %e, "replacing a corrupt copy failed; kept");
            Replaced::Failed
        }
        Err(e) => {
            tracing::error!(chunk = %id, error = %e, "replacing a corrupt copy panicked; kept");
            Replaced::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_copy_is_replaced_only_once_a_healthy_one_is_in_hand() {
        assert_eq!(decide(Failure::Corrupt, None), Action::FetchReplica);
        assert_eq!(decide(Failure::Corrupt, Some(true)), Action::Replace);
    }

    #[test]
    fn a_corrupt_copy_without_a_healthy_one_is_kept_and_reported() {
        assert_eq!(
            decide(Failure::Corrupt, Some(false)),
            Action::KeepUnrepaired
        );
    }

    #[test]
    fn an_unreadable_copy_is_kept_and_reported_whatever_the_replicas() {
        for healthy in [None, Some(true), Some(false)] {
            assert_eq!(decide(Failure::Unreadable, healthy), Action::KeepUnreadable);
        }
    }
}
